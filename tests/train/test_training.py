"""End to end on tiny synthetic data: protocols run, curves agree, resume is exact."""

import json
import math

import pytest

from medsplit.config import load_config
from medsplit.report.run_report import SYNTHETIC_NOTICE
from medsplit.train.loop import train

TINY = [
    "task=retinopathy", "data.source=synthetic", "data.synthetic_size=96", "data.img_size=32",
    "model.name=resnet18", "train.epochs=2", "train.batch_size=16", "train.eval_batch_size=64",
    "output.tensorboard=false",
]


def _cfg(tmp_path, *extra):
    return load_config(None, TINY + [f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports",
                                     f"data.cache_dir={tmp_path}/cache", *extra])


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_one_client_split_equals_centralised(tmp_path):
    """Same seed, one client, same data: split and centralised curves agree to rounding."""
    split = _metrics(train(_cfg(tmp_path, "split.protocol=sequential", "split.clients=1", "split.cut=3"), quiet=True))
    # The centralised baseline of a sweep keeps the sweep's client count; it pools the rows in
    # row order, so it still sees the one-client run's batches.
    central = _metrics(train(_cfg(tmp_path, "split.protocol=centralised", "split.clients=3"), quiet=True))
    loss = lambda m: [r["train_loss"] for r in m["history"] if "train_loss" in r]  # noqa: E731
    val = lambda m: [r["val_loss"] for r in m["history"] if "val_loss" in r]  # noqa: E731
    assert loss(split) == pytest.approx(loss(central), rel=1e-4, abs=1e-5)
    assert val(split) == pytest.approx(val(central), rel=1e-4, abs=1e-5)
    assert split["test"]["auc"] == pytest.approx(central["test"]["auc"], abs=1e-4)
    # The split run sent activations and labels up and gradients down; centralised sent nothing.
    kinds = {(r["sender"], r["kind"]) for r in split["bytes"]}
    assert kinds == {("client0", "activation"), ("client0", "label"), ("server", "gradient")}
    assert central["bytes"] == []


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["sequential", "splitfed", "fedavg"])
def test_multi_client_protocols_run_and_report(tmp_path, protocol):
    run = train(_cfg(tmp_path, f"split.protocol={protocol}", "split.clients=2", "split.cut=2"), quiet=True)
    m = _metrics(run)
    assert {r["client"] for r in m["history"] if "train_loss" in r} == {"client0", "client1"}
    # the tested model is the epoch with the best validation AUC (the first of equals)
    val_auc = {r["epoch"]: r["val_auc"] for r in m["history"] if r["client"] == "all"}
    assert m["selected_epoch"] == max(val_auc, key=lambda e: (val_auc[e], -e))
    assert math.isfinite(m["test_loss"]) and m["test"]["n"] == m["data"]["splits"]["test"]["n"]
    assert sum(c["n"] for c in m["data"]["clients"]) == m["data"]["splits"]["train"]["n"]
    kinds = {r["kind"] for r in m["bytes"]}
    # Relay hands client weights on; SplitFed and FedAvg average them every round.
    assert "weights" in kinds
    assert ("activation" in kinds) == (protocol != "fedavg")
    html = (tmp_path / "reports" / f"{m['run']}.html").read_text()
    assert SYNTHETIC_NOTICE.replace("'", "&#x27;") in html  # the warning banner, not just the word in the config


@pytest.mark.slow
def test_resume_reaches_same_result_under_a_cosine_schedule(tmp_path):
    cosine = ("train.epochs=3", "train.schedule=cosine")
    full = _metrics(train(_cfg(tmp_path, *cosine, "output.name=full"), quiet=True))
    run_dir = train(_cfg(tmp_path, *cosine, "output.name=interrupted"), stop_after_epoch=1, quiet=True)
    assert not (run_dir / "metrics.json").exists()
    resumed = _metrics(train(_cfg(tmp_path, *cosine, "output.name=interrupted"), resume=run_dir, quiet=True))
    assert resumed["test"]["auc"] == pytest.approx(full["test"]["auc"], abs=1e-6)
    assert [r.get("val_loss") for r in resumed["history"]] == pytest.approx([r.get("val_loss") for r in full["history"]], abs=1e-6)
    assert sum(r["bytes"] for r in resumed["bytes"]) == sum(r["bytes"] for r in full["bytes"])
    lrs = [r["lr"] for r in full["history"] if "lr" in r]
    assert lrs == pytest.approx([1e-3, 0.75e-3, 0.25e-3]) and [r["lr"] for r in resumed["history"] if "lr" in r] == lrs
    # the schedule reaches the optimisers: the first epoch (same lr) matches a constant run, the second does not
    constant = _metrics(train(_cfg(tmp_path, "train.epochs=2", "output.name=constant"), quiet=True))
    val = lambda m: [r["val_loss"] for r in m["history"] if "val_loss" in r]  # noqa: E731
    assert val(constant)[0] == pytest.approx(val(full)[0], abs=1e-6) and val(constant)[1] != pytest.approx(val(full)[1], abs=1e-6)


def test_cut_out_of_range_stops_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"CUT=9 is not a legal cut for resnet18; valid cuts are \[0, 1, 2, 3, 4, 5, 6, 7\]"):
        train(_cfg(tmp_path, "split.cut=9"), quiet=True)
    assert not list((tmp_path / "runs").glob("*/checkpoint.pt"))


def _eyepacs_folder(shared_data, tmp_path, n=24):
    """A small folder in the Kaggle layout (image,level only) built from real EyePACS files."""
    import csv

    src = shared_data / "retinopathy" / "eyepacs256"
    rows = list(csv.DictReader((src / "labels.csv").open()))
    # Take both classes of the referable target so the AUC is defined.
    pos = [r for r in rows if int(r["level"]) >= 2][: n // 2]
    neg = [r for r in rows if int(r["level"]) < 2][: n // 2]
    folder = tmp_path / "external"
    (folder / "resized_train").mkdir(parents=True)
    with (folder / "trainLabels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "level"])
        for r in pos + neg:
            (folder / "resized_train" / f"{r['image']}.jpeg").write_bytes((src / r["file"]).read_bytes())
            w.writerow([r["image"], r["level"]])
    return folder, len(pos + neg)


@pytest.mark.slow
def test_evaluate_scores_a_run_on_an_external_folder(tmp_path, shared_data):
    from medsplit.cli import main

    run = train(_cfg(tmp_path, "train.epochs=1"), quiet=True)
    folder, n = _eyepacs_folder(shared_data, tmp_path)
    out = tmp_path / "external.json"
    assert main(["evaluate", str(run), "--data", str(folder), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == n
    assert 0.0 <= result["metrics"]["auc"] <= 1.0
    assert sum(map(sum, result["metrics"]["confusion"])) == n


@pytest.mark.slow
def test_evaluate_segmentation_run(tmp_path, shared_data):
    from medsplit.evaluate import evaluate_run

    cfg = load_config(None, [
        "task=lungs", "data.source=synthetic", "data.synthetic_size=40", "data.img_size=32", "model.name=unet-classic",
        "model.base_channels=4", "train.epochs=1", "train.batch_size=4", "output.tensorboard=false", "split.cut=1", "split.clients=1",
        f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache",
    ])
    run = train(cfg, quiet=True)
    result = evaluate_run(run, str(shared_data / "lungs" / "covid-cxr-v7"), tmp_path / "lungs.json")
    assert result["n"] == 159
    assert 0.0 <= result["metrics"]["dice"]["mean"] <= 1.0
    assert len(result["metrics"]["per_image"]) == 159
    dice = result["intervals"]["dice"]  # patient-level bootstrap interval of the mean Dice
    assert dice["low"] <= result["metrics"]["dice"]["mean"] <= dice["high"]
    html = (tmp_path / "reports" / f"{cfg.run_name()}.html").read_text()
    assert "client_encoder" in html  # bytes are reported per cut of the U-shape


def test_more_clients_than_the_data_allows_stops_before_training(tmp_path):
    from medsplit.data.images import DataError

    from medsplit.config import ConfigError

    # impossible from the config alone (96 images cannot give 40 hospitals 8 each): refused at load
    with pytest.raises(ConfigError, match=r"'split.clients' = 40 is impossible: data.synthetic_size = 96 images"):
        _cfg(tmp_path, "split.clients=40")
    # impossible only once the training split is known: refused by the partition, before training
    with pytest.raises(DataError, match=r"12 clients need at least 96 samples.*at most \d+ client\(s\) fit: use split.clients=\d+ or fewer"):
        train(_cfg(tmp_path, "split.clients=12"), quiet=True)
    assert not (tmp_path / "runs").exists()  # and no run folder is left behind


def test_class_balanced_batches_draw_each_class_equally_and_repeat():
    import numpy as np

    from medsplit.train.schedule import epoch_batches

    rows = np.arange(100, 1100)
    labels = (np.arange(1000) < 100).astype(np.int64)  # 10% positives, as in referable DR
    batches = epoch_batches(rows, 32, 0, 3, 1, labels)
    drawn = np.concatenate([b.numpy() for b in batches])
    assert len(drawn) == 1000 and set(drawn) <= set(rows)
    share = (drawn < 200).mean()  # rows 100..199 carry the positives
    assert 0.45 < share < 0.55  # each class half of the draws, not 10%
    again = np.concatenate([b.numpy() for b in epoch_batches(rows, 32, 0, 3, 1, labels)])
    assert np.array_equal(drawn, again)  # a function of (seed, epoch, hospital): resumable
    shuffled = np.concatenate([b.numpy() for b in epoch_batches(rows, 32, 0, 3, 1)])
    assert sorted(shuffled) == list(rows)  # the default still visits every row once


def test_class_balanced_sampling_needs_class_labels():
    from medsplit.config import ConfigError
    from medsplit.config.validation import CLASSIFICATION_TASKS
    from medsplit.tasks import TASKS

    assert load_config(None, ["train.sampling=class-balanced"]).train.sampling == "class-balanced"
    with pytest.raises(ConfigError, match="'train.sampling'.*needs class labels"):
        load_config(None, ["task=lungs", "model.name=unet-smp", "train.sampling=class-balanced"])
    assert set(CLASSIFICATION_TASKS) == {n for n, t in TASKS.items() if not t.per_image_metric}


@pytest.mark.slow
def test_cpu_amp_trains_under_bf16_and_sends_half_the_activation_bytes(tmp_path):
    """train.cpu_amp puts the forward passes under bf16 autocast on CPU: the cut's activations travel
    as bf16 (half of float32's bytes) and the curve moves off float32's; the default stays float32."""
    common = ("split.protocol=sequential", "split.clients=1", "split.cut=3", "train.epochs=1")
    fp32 = _metrics(train(_cfg(tmp_path, *common, "output.name=fp32"), quiet=True))
    bf16 = _metrics(train(_cfg(tmp_path, *common, "train.cpu_amp=true", "output.name=bf16"), quiet=True))
    sent = lambda m: sum(r["bytes"] for r in m["bytes"] if r["kind"] == "activation")  # noqa: E731
    assert 0.45 < sent(bf16) / sent(fp32) < 0.55
    loss = lambda m: [r["train_loss"] for r in m["history"] if "train_loss" in r]  # noqa: E731
    assert all(0.0 < v < 10.0 for v in loss(bf16))
    assert loss(bf16) != pytest.approx(loss(fp32), rel=1e-6)
