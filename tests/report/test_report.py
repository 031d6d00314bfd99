"""Self-contained HTML reports: structure, escaping, and the run report on synthetic records."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from medsplit.metrics import ClassificationMetrics, SegmentationMetrics
from medsplit.report import Report, figures, write_run_report
from medsplit.report.figures import tradeoffs

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def assert_self_contained(html: str) -> None:
    assert not EXTERNAL.search(html), "report references something on the network"
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html


def history(clients: list[str], epochs: int, keys: list[str]) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"epoch": e, "client": c, "seconds": 1.5, **{k: float(rng.uniform(0.3, 0.9)) for k in keys}}
        for e in range(1, epochs + 1)
        for c in clients
    ]


def bytes_rows(clients: list[str], epochs: int) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        for c in clients:
            rows.append({"epoch": e, "link": f"{c}->server", "kind": "activation", "bytes": 12_800_000})
            rows.append({"epoch": e, "link": f"server->{c}", "kind": "gradient", "bytes": 12_800_000})
            rows.append({"epoch": e, "link": f"{c}->server", "kind": "label", "bytes": 8_000})
    return rows


def classification_record() -> dict:
    g = torch.Generator().manual_seed(0)
    metric = ClassificationMetrics(2, ["non-referable", "referable"])
    labels = torch.randint(0, 2, (80,), generator=g)
    metric.update(torch.randn(80, 2, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, 2), labels)
    clients = ["client0", "client1"]
    return {
        "title": "Split ResNet-34 <cut 3> & friends",
        "task": "retinopathy",
        "created": "2025-01-01T12:00:00",
        "medsplit_version": "0.1.0",
        "protocol": "sequential",
        "cut": 3,
        "clients": 2,
        "device": "cpu",
        "wall_time_s": 3725.4,
        "config": {"data": {"source": "auto", "target": "referable", "aug_backend": "monai"},
                   "model": {"name": "resnet34", "cut": 3},
                   "train": {"lr": 1e-3, "epochs": 3, "batch_size": 16, "device": "auto", "select_on": "auto"}, "note": "<not a tag>"},
        "selected_epoch": 2,
        "config_yaml": "model:\n  name: resnet34\n  cut: 3\nnote: <not a tag>\n",
        "data": {
            "source": "synthetic <script>alert(1)</script>",
            "synthetic": True,
            "num_classes": 2,
            "class_names": ["non-referable", "referable"],
            "splits": {
                "train": {"n": 160, "patients": 80, "class_counts": [100, 60]},
                "val": {"n": 40, "patients": 20, "class_counts": [25, 15]},
                "test": {"n": 80, "patients": 40, "class_counts": [45, 35]},
            },
            "clients": [{"name": c, "n": 80, "class_counts": [50, 30]} for c in clients],
        },
        "history": history(clients, 3, ["train_loss", "val_loss", "val_auc", "val_accuracy"]),
        "test": metric.aggregate(),
        "bytes": bytes_rows(clients, 3),
        "artifacts": {"run_dir": "runs/r1", "metrics_copy": "reports/r1.json",
                      "files": {"model.safetensors": {"what": "weights", "MB": 85.2},
                                "checkpoint.pt": {"what": "for --resume", "MB": 326.0},
                                "config.yaml": {"what": "config", "MB": 0.0012}}},
    }


def segmentation_record() -> dict:
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(14, 1, 32, 32)
    masks[:, :, 8:24, 6:16] = 1
    masks[:, :, 8:24, 18:28] = 1
    logits = 4 * (masks * 2 - 1) + 3 * torch.randn(14, 1, 32, 32, generator=g)
    ids = [f"case{i:03d}" for i in range(14)]
    metric = SegmentationMetrics()
    metric.update(logits, masks, ids=ids)
    images = (0.5 * masks[:, 0] + 0.3 * torch.rand(14, 32, 32, generator=g)).numpy()
    return {
        "task": "lungs",
        "protocol": "splitfed",
        "cut": 1,
        "clients": 3,
        "data": {"source": "synthetic", "synthetic": True, "splits": {"train": {"n": 40}, "test": {"n": 14}}},
        "history": history(["client0", "client1", "client2"], 4, ["train_loss", "val_dice", "val_jaccard"]),
        "test": metric.aggregate(),
        "bytes": bytes_rows(["client0", "client1", "client2"], 4),
        "examples": {
            "images": images[:6],
            "pred": (torch.sigmoid(logits[:6, 0]) >= 0.5).numpy(),
            "true": masks[:6, 0].bool().numpy(),
            "titles": ids[:6],
        },
        "config": {"data": {"source": "auto", "target": "referable"}, "model": {"name": "unet", "cut": 1},
                   "train": {"epochs": 4, "batch_size": 16}},
        "selected_epoch": 4,
    }


@pytest.mark.slow
def test_classification_run_report(tmp_path):
    path = write_run_report(classification_record(), tmp_path / "nested" / "run.html")
    assert path.exists()
    html = path.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert "Synthetic data" in html  # the banner
    assert html.count('src="data:image/png;base64,') >= 4  # curves, ROC, confusion, bytes
    # escaping: data from the record never becomes markup
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;cut 3&gt; &amp; friends" in html and "&lt;not a tag&gt;" in html
    for heading in ("Summary", "Data", "Learning curves", "Test metrics", "Communication", "Resolved configuration"):
        assert f">{heading}<" in html
    assert "1 h 02 min 05 s" in html
    assert "client0 \u2192 server" in html  # links named with an arrow
    assert "model.safetensors" in html and "checkpoint.pt" in html and "326.0 MB" in html
    assert "Run directory: runs/r1" in html


@pytest.mark.slow
def test_run_report_says_which_epoch_was_tested_with_intervals(tmp_path):
    """Issue 18: the selected epoch is named and marked; intervals shown; auto settings resolved."""
    from medsplit.uncertainty import format_interval, test_intervals

    record = classification_record()
    record["test_intervals"] = test_intervals(record["test"], n_resamples=200)
    record["device"] = "cpu (x86_64, 2 threads)"
    html = write_run_report(record, tmp_path / "r.html").read_text()
    assert "model of epoch 2 of 3, the epoch with the highest validation AUC" in html
    assert "epoch 2 (selected, tested)" in html and "epoch 3 (last)" in html
    assert "Last recorded epoch" not in html
    assert f"95% CI {format_interval(record['test_intervals']['auc'])}" in html
    # no patient map: each image its own unit, and the report says images, not patients (issue 27)
    assert "200 bootstrap resamples of the 80 test images" in html and "test patients" not in html
    assert "source: auto  # resolved: synthetic &lt;script&gt;" in html
    assert "device: auto  # resolved: cpu (x86_64, 2 threads)" in html
    assert "select_on: auto  # resolved: auc (validation)" in html
    assert "aug_backend: monai" not in html and "target: referable" in html  # retinopathy does not use aug_backend
    assert "chance that a random positive image scores above" in html  # jargon explained
    assert "per training step" in html and "100 Mbit/s" in html
    assert "label label" not in html and "weights weights" not in html


@pytest.mark.slow
def test_segmentation_report_words(tmp_path):
    record = segmentation_record()
    record["history"] = [dict(r, client="all") for r in record["history"] if r["client"] == "client0"]
    html = write_run_report(record, tmp_path / "seg.html").read_text()
    assert "target: referable" not in html and "data.target" in html  # named as not used by lungs
    assert "One line per client" not in html and "one line per client" not in html  # a single curve per panel
    assert "by class" not in html
    assert "test HD95 (pixels)" in html
    assert figures.metric_label("val_hd95") == "validation HD95 (pixels)"
    assert figures.metric_label("val_new_thing") == "validation new thing"


@pytest.mark.slow
def test_segmentation_run_report(tmp_path):
    html = write_run_report(segmentation_record(), tmp_path / "seg.html").read_text(encoding="utf-8")
    assert_self_contained(html)
    assert "Synthetic data" in html
    assert "lowest Dice" in html and "highest Dice" in html  # 14 images: top / bottom tables
    assert "ground-truth outline in green" in html  # overlay grid
    assert "case000" in html and "HD95" in html
    assert "HD95 miss rate: 0.0% of the test images" in html  # stated beside the HD95 mean
    assert html.count('src="data:image/png;base64,') >= 3


def test_partial_and_empty_records_render(tmp_path):
    html = write_run_report({}, tmp_path / "empty.html").read_text()
    assert "medsplit run" in html and "Synthetic data" not in html
    record = classification_record()
    for key in ("history", "bytes", "config_yaml", "artifacts"):
        record.pop(key)
    record["data"]["synthetic"] = False
    html = write_run_report(record, tmp_path / "partial.html").read_text()
    assert "Synthetic data" not in html and "Communication" not in html
    assert "name: resnet34" in html  # the config dict, as YAML


def test_report_builder_escapes_and_structures(tmp_path):
    report = Report("T <1>", subtitle="s & t")
    report.banner("<b>careful</b>", level="danger")
    report.section("Numbers", intro="intro <i>")
    report.text("a < b")
    report.html("<em>trusted</em>")
    report.table([{"x": 0.123456, "n": 3, "s": "<td>"}, {"x": None}], caption="cap")
    report.kv({"model": {"cut": 3, "name": "resnet34"}, "lr": 0.001})
    report.code("key: <value>")
    report.section("Numbers")  # duplicate heading gets a unique anchor
    report.figure(figures.line_plot([1, 2, 3], {"a": [1, 2, None]}, "x", "y", yerr={"a": [0.1, 0.1, 0.1]}))
    html = report.render()
    assert_self_contained(html)
    assert "T &lt;1&gt;" in html and "s &amp; t" in html and "&lt;b&gt;careful&lt;/b&gt;" in html
    assert "a &lt; b" in html and "intro &lt;i&gt;" in html and "&lt;td&gt;" in html
    assert "<em>trusted</em>" in html
    assert "0.1235" in html and "\u2014" in html  # float_fmt, None
    assert "model.cut" in html and "model.name" in html
    assert 'href="#numbers"' in html and 'href="#numbers-2"' in html
    assert "data:image/png;base64," in html
    out = report.write(tmp_path / "a" / "b" / "r.html")
    # the folders were created and the page written whole (the write renders again: its "generated"
    # time may be a second later)
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
    assert stamp.sub("TIME", out.read_text(encoding="utf-8")) == stamp.sub("TIME", html)


def test_report_rejects_bad_input():
    report = Report("x")
    with pytest.raises(ValueError, match="warning"):
        report.banner("x", level="loud")
    with pytest.raises(ValueError, match="data:image"):
        report.figure("https://example.com/a.png")
    with pytest.raises(TypeError):
        report.figure(42)


def test_figures_return_figures():
    rng = np.random.default_rng(0)
    made = [
        figures.reconstruction_grid(rng.random((3, 3, 8, 8)), {"attack": rng.random((3, 3, 8, 8))}, ["a", "b", "c"]),
        figures.reconstruction_grid(rng.random((2, 1, 8, 8)), {}, None),
        figures.scatter_frontier(
            [{"leak": 0.9, "auc": 0.8, "defence": "none"}, {"leak": 0.5, "auc": 0.75, "defence": "noise", "sigma": 1},
             {"leak": 0.3, "auc": 0.6, "defence": "noise", "sigma": 2}, {"leak": 0.6, "auc": 0.5, "defence": "dcor"}],
            "leak", "auc", "defence", annotate_key="sigma",
        ),
        figures.confusion_figure([[5, 1, 0], [2, 3, 1], [0, 0, 0]], ["a", "b", "c"]),
        figures.roc_figure({}, None),
        figures.bytes_figure(bytes_rows(["client0"], 20)),
        figures.overlay_grid(np.zeros((1, 8, 8)), np.zeros((1, 8, 8), bool), np.ones((1, 8, 8), bool), ["x"]),
    ]
    assert all(isinstance(f, Figure) for f in made)
    assert tradeoffs._pareto([(0.9, 0.8), (0.5, 0.75), (0.3, 0.6), (0.6, 0.5)], "lower", "higher") == [
        (0.3, 0.6), (0.5, 0.75), (0.9, 0.8)
    ]


def test_attack_summary_averages_seeds_and_states_the_targets_numbers():
    from medsplit.report.attack_findings import defence_table, findings

    inv = lambda d, s, seed, ssim, util, **kw: {"attack": "inversion", "defence": d, "strength": s, "seed": seed,  # noqa: E731
                                                "ssim": ssim, "mse": 0.01, "utility": util, "baseline_ssim": 0.45, **kw}
    rows = [inv("none", 0, 0, 0.80, 0.90), inv("none", 0, 1, 0.90, 0.92),
            inv("proxy", 2.0, 0, 0.70, 0.88, **{"privacy.proxy_mse": 0.2}),
            {"attack": "fsha", "defence": "none", "strength": 0, "seed": 0, "ssim": 0.55, "mse": 0.02, "iterations": 400},
            {"attack": "fsha", "defence": "nopeek", "strength": 1.0, "seed": 0, "ssim": 0.5, "mse": 0.03, "iterations": 400}]
    table = {r["defence"]: r for r in defence_table(rows)}
    assert table["none"]["seeds"] == 2 and table["none"]["ADRA SSIM"] == pytest.approx(0.85)
    assert table["proxy"]["ADRA SSIM change"] == pytest.approx(-0.15) and table["proxy"]["utility change"] == pytest.approx(-0.03)
    assert table["proxy"]["SDAR SSIM"] is None  # no SDAR row at that setting
    history = {"fsha/none/0/0": [{"iteration": 0, "ssim": 0.2}, {"iteration": 500, "ssim": 0.6}, {"iteration": 900, "ssim": 0.55}]}
    text = " ".join(findings(rows, {"fsha/none/0/0": {"flagged": True, "flagged_at_step": 60, "probes": 40, "probe_every": 10}},
                             histories=history))
    assert "at iteration 500" not in text and "0.600" not in text  # no best logged point: that is selection on test
    assert "SSIM 0.550, MSE 0.0200 after 400 iterations, the final value" in text
    assert "SSIM 0.850" in text and "0.450 for the mean auxiliary image" in text
    assert "MSE 0.0300 vs 0.0200 without (1.50x)" in text and "0.0267 vs 0.0193" in text
    assert "alarm at step 60" in text and "proxy ended at MSE 0.2000" in text
