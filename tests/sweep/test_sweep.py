"""Sweeps run every point once, resume what was interrupted, survive a failing point and
write their report; the index links every report present.

Training is mostly replaced by a fake that writes what ``medsplit.train.loop.train`` writes
(config.yaml, metrics.json), so these tests check the sweep's bookkeeping in milliseconds;
one test runs the real loop on a tiny synthetic set.
"""

import json
from pathlib import Path

import pytest
import yaml

import medsplit.train.loop
from medsplit.cli import CommandParser, add_sweep_parser, main, run_sweep_command
from medsplit.report.index import main as index_main
from medsplit.report.index import run_headline, write_index
from medsplit.sweep import plan_points, run_sweep

BASE_YAML = """\
task: retinopathy
data: {source: synthetic, synthetic_size: 60, img_size: 32}
model: {name: resnet18}
split: {protocol: sequential, cut: 3, clients: 2}
train: {epochs: 1, batch_size: 8, device: cpu}
output: {reports_dir: REPORTS, tensorboard: false}
"""


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(BASE_YAML.replace("REPORTS", str(tmp_path / "reports")))
    return path


class FakeTrain:
    """Stands in for ``train``: records calls and writes a plausible run's files."""

    def __init__(self, fail_on=None):
        self.calls: list[tuple[str, bool]] = []
        self.fail_on = fail_on

    def __call__(self, cfg, resume=None, quiet=False, overwrite=False) -> Path:
        self.calls.append((cfg.run_name(), resume is not None))
        run_dir = Path(resume) if resume else Path(cfg.output.runs_dir) / cfg.run_name()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        if self.fail_on is not None and self.fail_on(cfg):
            raise RuntimeError("simulated out of memory")
        split = cfg.split.protocol not in ("centralised", "fedavg")
        cut = cfg.split.cut if split else None
        record = {
            "task": cfg.task, "protocol": cfg.split.protocol, "cut": cut, "clients": cfg.split.clients,
            "device": "cpu (fake)", "wall_time_s": 2.0, "selected_epoch": 1,
            "test": {"auc": 0.6 + 0.02 * (cut or 5) + 0.01 * cfg.train.seed, "accuracy": 0.7},
            "bytes": [{"phase": "train", "epoch": 0, "sender": "client0", "receiver": "server", "kind": "activation",
                       "link": "client->server", "bytes": 1000 * (8 - cut) if split else 0}],
            "data": {"source": "synthetic", "synthetic": True}, "config": cfg.to_dict(),
        }
        (run_dir / "checkpoint.pt").write_bytes(b"weights and optimiser state")
        (run_dir / "metrics.json").write_text(json.dumps(record))
        return run_dir


def _sweep(base: Path, tmp_path: Path, train, **kw):
    args = dict(axis="cut", values=[1, 3], seeds=[0], protocols=["sequential"], partitions=["iid"], baselines=True,
                out_dir=tmp_path / "sweep", overrides=[])
    args.update(kw)
    html = run_sweep(base, train_fn=train, **args)
    return html, json.loads(html.with_suffix(".json").read_text())


def test_plan_covers_the_grid_and_the_baselines():
    names = [p.name for p in plan_points("lungs", "clients", [2, 4], [0, 1], ["sequential"], ["iid"], True)]
    assert names == [
        "lungs-sequential-clients2-iid-seed0", "lungs-sequential-clients2-iid-seed1",
        "lungs-sequential-clients4-iid-seed0", "lungs-sequential-clients4-iid-seed1",
        "lungs-centralised-seed0", "lungs-centralised-seed1",  # pools all clients: once per seed
        "lungs-fedavg-clients2-iid-seed0", "lungs-fedavg-clients2-iid-seed1",
        "lungs-fedavg-clients4-iid-seed0", "lungs-fedavg-clients4-iid-seed1",
    ]
    assert len(plan_points("lungs", "cut", [1, 2, 3], [0], ["sequential", "splitfed"], ["iid", "dirichlet"], True)) == 12 + 1 + 2


@pytest.mark.slow
def test_sweep_runs_every_point_once_then_skips_finished_ones(base, tmp_path):
    train = FakeTrain()
    html, summary = _sweep(base, tmp_path, train)
    assert sorted(n for n, _ in train.calls) == sorted([
        "retinopathy-sequential-cut1-iid-seed0", "retinopathy-sequential-cut3-iid-seed0",
        "retinopathy-centralised-seed0", "retinopathy-fedavg-iid-seed0"])
    assert html == tmp_path / "reports" / "sweep-cut-retinopathy.html"
    assert [p["status"] for p in summary["points"]] == ["ran"] * 4
    assert summary["metric"] == "AUC" and summary["headline"]["failed"] == 0
    by_cut = {g["value"]: g for g in summary["groups"] if g["protocol"] == "sequential"}
    assert by_cut[1]["metric"] == pytest.approx(0.62) and by_cut[3]["bytes_per_epoch"] == 5000
    page = html.read_text()
    # The study's retinopathy cut sweep is filled in: its printout and source, under its own metric's name.
    assert "The original study" in page and "Cut_Graph_ResNet_S.ipynb" in page and "[69.4, 69.45]" in page
    assert "Different metrics" in page and "Synthetic data" in page
    assert page.count("data:image/png;base64,") == 3  # metric, bytes and wall-time figures
    # Each point trained under the sweep's folder with its own name.
    assert (tmp_path / "sweep" / "runs" / "retinopathy-sequential-cut3-iid-seed0" / "metrics.json").exists()

    again = FakeTrain()
    _, summary = _sweep(base, tmp_path, again)
    assert again.calls == []
    assert [p["status"] for p in summary["points"]] == ["skipped"] * 4


@pytest.mark.slow
def test_unreadable_metrics_is_named_and_its_point_retrained(base, tmp_path, capsys):
    """A kill mid-write once left metrics.json empty: the sweep took the point for finished and
    later died with 'Expecting value: line 1 column 1', naming no file."""
    _sweep(base, tmp_path, FakeTrain())
    broken = tmp_path / "sweep" / "runs" / "retinopathy-sequential-cut3-iid-seed0" / "metrics.json"
    broken.write_text("")
    capsys.readouterr()
    again = FakeTrain()
    _, summary = _sweep(base, tmp_path, again)
    assert again.calls == [("retinopathy-sequential-cut3-iid-seed0", False)]
    assert f"{broken} is unreadable" in capsys.readouterr().err
    assert sorted(p["status"] for p in summary["points"]) == ["ran", "skipped", "skipped", "skipped"]
    assert json.loads(broken.read_text())["cut"] == 3


def test_malformed_config_in_a_point_folder_is_named(base, tmp_path):
    train = FakeTrain()
    _sweep(base, tmp_path, train, values=[3], baselines=False)
    saved = tmp_path / "sweep" / "runs" / "retinopathy-sequential-cut3-iid-seed0" / "config.yaml"
    saved.write_text("task: [retinopathy\n")
    _, summary = _sweep(base, tmp_path, FakeTrain(), values=[3], baselines=False)
    assert summary["points"][0]["status"] == "failed"
    assert summary["points"][0]["error"].startswith(f"RuntimeError: {saved} is not a readable config")


def test_a_point_killed_before_its_first_checkpoint_starts_afresh(base, tmp_path):
    """The real loop refuses an occupied folder; the sweep passes overwrite for its own leftovers."""
    train = FakeTrain()
    _sweep(base, tmp_path, train, values=[3], baselines=False)
    run = tmp_path / "sweep" / "runs" / "retinopathy-sequential-cut3-iid-seed0"
    (run / "metrics.json").unlink()
    (run / "checkpoint.pt").unlink(missing_ok=True)
    seen = []

    def strict(cfg, resume=None, quiet=False, overwrite=False):
        seen.append(overwrite)
        assert overwrite, "a leftover folder must be overwritten explicitly"
        return train(cfg, resume=resume, quiet=quiet)

    _, summary = _sweep(base, tmp_path, strict, values=[3], baselines=False)
    assert seen == [True] and [p["status"] for p in summary["points"]] == ["ran"]


def test_failing_point_is_reported_and_the_others_finish(base, tmp_path):
    train = FakeTrain(fail_on=lambda cfg: cfg.split.protocol == "sequential" and cfg.split.cut == 3)
    html, summary = _sweep(base, tmp_path, train)
    status = {p["name"]: p for p in summary["points"]}
    bad = status["retinopathy-sequential-cut3-iid-seed0"]
    assert bad["status"] == "failed" and "RuntimeError: simulated out of memory" in bad["error"]
    assert all(p["status"] == "ran" for n, p in status.items() if n != bad["name"])
    page = html.read_text()
    assert "Failed runs" in page and "simulated out of memory" in page
    # The next invocation retries only the failed point (its checkpoint-less folder is not "finished").
    retry = FakeTrain()
    _, summary = _sweep(base, tmp_path, retry)
    assert retry.calls == [(bad["name"], False)]
    assert summary["headline"]["failed"] == 0


def test_report_only_trains_nothing_and_marks_unfinished_points(base, tmp_path):
    _sweep(base, tmp_path, FakeTrain())  # seed 0 finished
    none = FakeTrain()
    html, summary = _sweep(base, tmp_path, none, seeds=[0, 1], report_only=True)
    assert none.calls == []
    status = {p["name"]: p["status"] for p in summary["points"]}
    assert status["retinopathy-sequential-cut1-iid-seed0"] == "skipped"
    assert status["retinopathy-sequential-cut1-iid-seed1"] == "not run"
    assert summary["headline"]["not run"] == 4 and summary["headline"]["failed"] == 0
    by_cut = {g["value"]: g for g in summary["groups"] if g["protocol"] == "sequential"}
    assert by_cut[1]["finished"] == 1 and by_cut[1]["metric"] == pytest.approx(0.62)  # seed 0 only
    assert "have not been run" in html.read_text()


def test_one_client_points_are_trained_once_for_all_partitions(base, tmp_path):
    train = FakeTrain()
    _, summary = _sweep(base, tmp_path, train, axis="clients", values=[1, 2], partitions=["iid", "dirichlet"])
    trained = [n for n, _ in train.calls]
    # One client holds the whole training set under any partition: trained once, under iid.
    assert "retinopathy-sequential-clients1-iid-seed0" in trained and "retinopathy-fedavg-clients1-iid-seed0" in trained
    assert not any("clients1-dirichlet" in n for n in trained)
    assert "retinopathy-sequential-clients2-dirichlet-seed0" in trained  # more clients: a different run
    status = {p["name"]: p for p in summary["points"]}
    twin = status["retinopathy-sequential-clients1-dirichlet-seed0"]
    assert twin["status"] == "same as retinopathy-sequential-clients1-iid-seed0"
    assert twin["metric"] == status["retinopathy-sequential-clients1-iid-seed0"]["metric"]
    group = next(g for g in summary["groups"] if g["protocol"] == "sequential" and g["partition"] == "dirichlet"
                 and g["value"] == 1)
    assert group["finished"] == 1 and group["metric"] == pytest.approx(twin["metric"])


def test_interrupted_point_is_resumed_from_its_checkpoint(base, tmp_path):
    _, first = _sweep(base, tmp_path, FakeTrain(), values=[1], baselines=False)
    run_dir = Path(first["points"][0]["run_dir"])
    (run_dir / "metrics.json").unlink()
    (run_dir / "checkpoint.pt").write_bytes(b"")  # an epoch was checkpointed, the run never finished
    train = FakeTrain()
    _, summary = _sweep(base, tmp_path, train, values=[1], baselines=False)
    assert train.calls == [("retinopathy-sequential-cut1-iid-seed0", True)]
    assert summary["points"][0]["status"] == "resumed"
    # Finished, so its checkpoint is gone (disk); its metrics remain.
    assert not (run_dir / "checkpoint.pt").exists() and (run_dir / "metrics.json").exists()


def test_finished_run_of_another_config_is_not_reused(base, tmp_path):
    _sweep(base, tmp_path, FakeTrain(), values=[1], baselines=False)
    train = FakeTrain()
    _, summary = _sweep(base, tmp_path, train, values=[1], baselines=False, overrides=["train.lr=0.01"])
    assert train.calls == []
    assert "different config" in summary["points"][0]["error"] and "train.lr" in summary["points"][0]["error"]


@pytest.mark.parametrize("kw,match", [
    ({"axis": "depth"}, r"valid axes are \['cut', 'clients'\]"),
    ({"protocols": ["fedavg"]}, r"valid protocols are \['sequential', 'splitfed', 'splitfed-v1'\] \(baselines run by default"),
    ({"partitions": ["skewed"]}, r"valid partitions are \['iid', 'dirichlet', 'label_skew', 'group'\]"),
    ({"overrides": ["split.cut=5"]}, r"sets a key the sweep sets per point; use --values"),
    ({"overrides": ["train.seed=5"]}, r"use --seeds"),
])
def test_bad_sweeps_are_rejected_before_training_with_the_valid_choices(base, tmp_path, kw, match):
    train = FakeTrain()
    with pytest.raises(ValueError, match=match):
        _sweep(base, tmp_path, train, **kw)
    assert train.calls == []


def test_command_line_takes_overrides_after_options(base, tmp_path, monkeypatch):
    parser = CommandParser(prog="medsplit")
    add_sweep_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sweep", str(base), "--axis", "clients", "--values", "1,2", "--seeds", "0,1",
                              "--protocols", "sequential,splitfed", "--partitions", "iid,dirichlet",
                              "--out", str(tmp_path / "cli"), "train.epochs=1", "data.img_size=32"])
    assert (args.axis, args.values, args.seeds) == ("clients", [1, 2], [0, 1])
    assert args.protocols == ["sequential", "splitfed"] and args.partitions == ["iid", "dirichlet"]
    assert args.overrides == ["train.epochs=1", "data.img_size=32"] and args.baselines
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", str(base), "--axis", "cut", "--values", "1", "--protocols", "ushape"])
    # overrides between options, and an unknown option still refused (not taken for an override)
    args = parser.parse_args(["sweep", str(base), "--values", "1,2", "train.epochs=1", "--seeds", "0", "--axis", "cut"])
    assert (args.config, args.overrides, args.values, args.seeds) == (str(base), ["train.epochs=1"], [1, 2], [0])
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", str(base), "--axis", "cut", "--values", "1", "train.epochs=1", "--bogus"])
    # End to end through the command with training faked where the sweep looks it up.
    train = FakeTrain(fail_on=lambda cfg: cfg.split.clients == 2 and cfg.split.protocol == "fedavg")
    monkeypatch.setattr(medsplit.train.loop, "train", train)
    args = parser.parse_args(["sweep", str(base), "--axis", "clients", "--values", "1,2", "--no-baselines",
                              "--out", str(tmp_path / "cli")])
    assert run_sweep_command(args) == 0 and len(train.calls) == 2
    args = parser.parse_args(["sweep", str(base), "--axis", "clients", "--values", "2", "--out", str(tmp_path / "cli")])
    assert run_sweep_command(args) == 1  # the FedAvg point failed


def test_sweep_help_lists_the_registered_protocols(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    assert e.value.code == 0 and "split protocols from sequential,splitfed" in out
    assert "skip the baselines (centralised, fedavg)" in out and "key=value" in out


def test_a_newly_registered_protocol_is_swept_by_its_registry_flags(monkeypatch):
    """Planning asks the registry, not a list of names: a new split protocol is accepted and a
    new unpooled baseline is planned like FedAvg (per partition, and per client count)."""
    from medsplit.sweep.plan import check_grid
    from medsplit.train.protocols import PROTOCOLS

    relay = type("Relay2", (PROTOCOLS["sequential"],), {"name": "relay2"})
    prox = type("FedProx", (PROTOCOLS["fedavg"],), {"name": "fedprox", "split": False, "baseline": True,
                                                      "pooled": False})
    monkeypatch.setitem(PROTOCOLS, "relay2", relay)
    monkeypatch.setitem(PROTOCOLS, "fedprox", prox)
    check_grid("clients", [2], [0], ["relay2"], ["iid"], [])
    with pytest.raises(ValueError, match=r"'fedprox'.*baselines run by default"):
        check_grid("clients", [2], [0], ["fedprox"], ["iid"], [])
    points = plan_points("lungs", "clients", [2, 3], [0], ["relay2"], ["iid", "group"], True)
    names = [p.name for p in points]
    assert names[:4] == ["lungs-relay2-clients2-iid-seed0", "lungs-relay2-clients2-group-seed0",
                         "lungs-relay2-clients3-iid-seed0", "lungs-relay2-clients3-group-seed0"]
    assert "lungs-centralised-seed0" in names and "lungs-fedavg-clients3-group-seed0" in names
    prox_points = [p for p in points if p.protocol == "fedprox"]
    assert [p.name for p in prox_points] == ["lungs-fedprox-clients2-iid-seed0", "lungs-fedprox-clients2-group-seed0",
                                             "lungs-fedprox-clients3-iid-seed0", "lungs-fedprox-clients3-group-seed0"]
    assert all(p.baseline for p in prox_points) and not any(p.baseline for p in points[:4])
    assert prox_points[0].overrides == ["split.protocol=fedprox", "split.clients=2", "data.partition=iid", "train.seed=0"]


def test_index_links_every_report_grouped_with_headline_numbers(base, tmp_path):
    reports = tmp_path / "reports"
    _sweep(base, tmp_path, FakeTrain())
    run = {"task": "lungs", "protocol": "sequential", "cut": 1, "clients": 2, "device": "cpu", "wall_time_s": 12.5,
           "test": {"dice": {"mean": 0.9512}, "jaccard": {"mean": 0.9071}}, "data": {"synthetic": True}}
    (reports / "lungs-run.json").write_text(json.dumps(run))
    (reports / "lungs-run.html").write_text("<html></html>")
    (reports / "attack-inversion.json").write_text(json.dumps({"kind": "attack", "headline": {"SSIM": 0.4321}}))
    (reports / "attack-inversion.html").write_text("<html></html>")
    (reports / "notes.html").write_text("<html></html>")  # no JSON beside it: listed, not dropped
    assert run_headline(run) == {"Dice": 0.9512, "Jaccard": 0.9071}
    assert run_headline({"test": {"auc": 0.71, "accuracy": None}}) == {"AUC": 0.71, "accuracy": None}

    index = write_index(reports)
    page = index.read_text()
    for name in ("sweep-cut-retinopathy.html", "lungs-run.html", "attack-inversion.html", "notes.html"):
        assert f'href="{name}"' in page
    assert 'href="index.html"' not in page
    order = [page.index(h) for h in ("Training runs", "Sweeps", "Attacks and defences", "Other reports")]
    assert order == sorted(order)
    assert "0.9512" in page and "0.4321" in page and "SYNTHETIC" in page
    assert index_main([str(reports)]) == 0 and index_main([str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_real_tiny_sweep_trains_each_point_and_reads_back_its_metrics(base, tmp_path):
    """The real training loop, 2 points of 1 epoch on 60 synthetic 32 px images: the sweep reads
    what ``train`` really writes, and a finished real run is recognised as the same config."""
    html, summary = _sweep(base, tmp_path, None, values=[1, 3], baselines=False, overrides=["train.threads=1"])
    points = summary["points"]
    assert [p["status"] for p in points] == ["ran", "ran"], [p.get("error") for p in points]
    for p in points:
        assert p["metric_name"] == "AUC" and p["synthetic"] and p["wall_time_s"] > 0
        assert p["bytes_per_epoch_by_kind"]["activation"] == p["bytes_per_epoch_by_kind"]["gradient"] > 0
    # Cutting later sends smaller activations (after conv1 vs after maxpool: 4x fewer values).
    assert points[0]["bytes_per_epoch_by_kind"]["activation"] > 3 * points[1]["bytes_per_epoch_by_kind"]["activation"]
    _, again = _sweep(base, tmp_path, None, values=[1, 3], baselines=False, overrides=["train.threads=1"])
    assert [p["status"] for p in again["points"]] == ["skipped", "skipped"]


@pytest.mark.slow
def test_run_saved_before_a_config_key_existed_still_counts_as_finished(base, tmp_path):
    _, first = _sweep(base, tmp_path, FakeTrain(), values=[1], baselines=False)
    saved = Path(first["points"][0]["run_dir"]) / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["split"]["compress_activations"]  # as written before codecs existed (default "none")
    saved.write_text(yaml.safe_dump(old))
    train = FakeTrain()
    _, summary = _sweep(base, tmp_path, train, values=[1], baselines=False)
    assert train.calls == [] and summary["points"][0]["status"] == "skipped"
    # ... but not when the planned value is not the default.
    _, summary = _sweep(base, tmp_path, train, values=[1], baselines=False,
                        overrides=["split.compress_activations=int8"])
    assert "split.compress_activations" in summary["points"][0]["error"]


@pytest.mark.slow
def test_parallel_jobs_give_the_serial_results_and_report_a_worker_failure(base, tmp_path):
    """--jobs 2 trains real points in two spawned workers: the numbers equal a serial sweep's
    (same seeds, one thread each), and a point that raises inside a worker is reported failed."""
    kw = dict(values=[3, 4], baselines=False, overrides=["train.threads=1"])
    _, serial = _sweep(base, tmp_path, None, out_dir=tmp_path / "serial", **kw)
    kw["values"] = [3, 4, 99]  # resnet18 has no cut 99: the worker raises
    _, parallel = _sweep(base, tmp_path, None, out_dir=tmp_path / "parallel", jobs=2, **kw)
    by_name = {p["name"]: p for p in parallel["points"]}
    for p in serial["points"]:
        q = by_name[p["name"]]
        assert q["status"] == "ran" and q["metric"] == p["metric"] and q["bytes_per_epoch"] == p["bytes_per_epoch"]
    bad = by_name["retinopathy-sequential-cut99-iid-seed0"]
    assert bad["status"] == "failed" and "99" in bad["error"]
    assert [p["name"] for p in parallel["points"]][:2] == [p["name"] for p in serial["points"]]  # plan order kept


def test_client_mix_shows_how_skewed_each_hospital_was():
    from medsplit.sweep import client_mix

    clients = [{"name": "client0", "n": 100, "class_counts": [90, 10], "groups": {"PA": 60, "AP": 40}},
               {"name": "client1", "n": 50, "class_counts": [20, 30], "groups": {"AP": 50}}]
    record = {"data": {"clients": clients}, "config": {"data": {"partition": "dirichlet"}}}
    assert client_mix(record) == "100 (10% pos) | 50 (60% pos)"
    record["config"]["data"]["partition"] = "group"
    assert client_mix(record) == "PA 60+AP 40 | AP 50"
    assert client_mix({"data": {"clients": clients[:1]}}) is None  # one hospital: nothing to compare
