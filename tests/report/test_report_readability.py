"""The run report reads without a glossary (issue 29, item 6): a degenerate classifier is flagged
in the headline, one epoch of learning curves is readable, HD95 states its unit, the cut and
quadratic kappa are explained, and the artifacts listed are the ones the run leaves."""

from __future__ import annotations

import re
from html import unescape

import pytest

from medsplit.metrics import ClassificationMetrics
from medsplit.report import build_run_report, figures
from medsplit.report.explain import cut_list, cut_words, degenerate_classifier, hd95_unit


def binary_test(predict_positive: list[bool], labels: list[int]) -> dict:
    import torch

    metric = ClassificationMetrics(2, ["non-referable", "referable"])
    # scores rank positives higher (AUC above chance) while the argmax decision is set by predict_positive
    scores = torch.tensor([[0.0, (1.0 if p else -1.0) + 0.1 * y] for p, y in zip(predict_positive, labels)])
    metric.update(scores, torch.tensor(labels))
    return metric.aggregate()


def _summary(html: str) -> str:
    html = unescape(html)
    return html[html.index('id="summary"'):html.index('id="data"') if 'id="data"' in html else None]


def test_a_classifier_that_predicts_negative_for_every_image_is_flagged_in_the_headline():
    labels = [0] * 80 + [1] * 10
    test = binary_test([False] * 90, labels)
    assert test["sensitivity"] == 0 and test["auc"] > 0.9  # a good ranking, a constant decision
    flag = degenerate_classifier(test)
    assert "predicts negative (non-referable) for every one of the 90 test images" in flag
    html = build_run_report({"task": "retinopathy", "test": test}).render()
    summary = _summary(html)
    assert "Degenerate classifier" in summary
    assert summary.index("Degenerate classifier") < summary.index("test AUC")  # above the numbers it puts in doubt


def test_sensitivity_zero_with_two_predicted_classes_and_a_healthy_classifier():
    labels = [0] * 20 + [1] * 5
    test = binary_test([True] * 3 + [False] * 17 + [False] * 5, labels)  # flags 3 negatives, no positive
    assert "sensitivity 0" in degenerate_classifier(test)
    assert degenerate_classifier(binary_test([False] * 20 + [True] * 5, labels)) is None


def test_one_epoch_learning_curves_have_an_epoch_wide_axis_and_written_values():
    history = [{"epoch": 1, "client": "all", "val_loss": 0.61, "val_auc": 0.6}]
    fig = figures.learning_curves(history, ["val_loss", "val_auc"], selected_epoch=1)
    loss, auc = fig.axes[:2]
    assert loss.get_xlim() == pytest.approx((0.5, 1.5))  # matplotlib alone: 0.96-1.04
    assert [t.get_text() for t in auc.texts] == ["0.6"] and auc.get_ylim() == pytest.approx((0, 1))
    assert loss.get_ylim()[0] == 0 and loss.get_ylim()[1] > 0.61
    html = build_run_report({"task": "retinopathy", "history": history, "selected_epoch": 1}).render()
    assert "One epoch: each panel holds one point per line" in html


def test_hd95_is_in_mm_where_the_spacing_is_known_and_says_pixels_otherwise():
    assert hd95_unit({"spacing": 0.7})[0] == "mm" and "0.7 mm per pixel" in hd95_unit({"spacing": 0.7})[1]
    unit, words = hd95_unit({"spacing": None})
    assert unit == "pixels" and "not in millimetres" in words
    test = {"dice": {"mean": 0.9, "std": 0.01, "n": 2}, "hd95": {"mean": 3.0, "n": 2}, "n": 2, "spacing": None,
            "per_image": [{"id": "a", "dice": 0.9, "jaccard": 0.8, "hd95": 3.0}]}
    html = build_run_report({"task": "lungs", "test": test}).render()
    assert "HD95 (pixels)" in html and "hd95 (pixels)" in html and "not in millimetres" in html
    html = build_run_report({"task": "lungs", "test": {**test, "spacing": 0.5}}).render()
    assert "HD95 (mm)" in html and "physical units" not in html


def test_the_cut_is_explained_with_the_model_s_own_layers():
    record = {"task": "retinopathy", "cut": 3, "config": {"model": {"name": "resnet34"}}}
    words = cut_words(record)
    assert words.startswith("CUT=3 says where the model is split")
    assert "the hospital runs conv1 to maxpool; then the server runs layer1 to fc" in words
    unet = cut_words({"task": "lungs", "cut": 1, "config": {"model": {"name": "unet-classic"}}})
    assert "U-shaped" in unet and "the hospital runs enc1; then the server runs enc2 to dec2; then the hospital runs dec1" in unet
    assert cut_words({"task": "retinopathy", "cut": None}) is None
    assert cut_words({"task": "retinopathy", "cut": 3, "config": {"model": {"name": "no-such-model"}}}).startswith("CUT=3")
    lines = cut_list("retinopathy", {"model": {"name": "resnet18"}}, [1, 3])
    assert lines[1].startswith("CUT=1 (resnet18") and lines[2].startswith("CUT=3 (resnet18")
    html = build_run_report(record).render()
    assert "CUT=3 says where" in html


def test_quadratic_kappa_is_explained_where_it_is_shown():
    import torch

    metric = ClassificationMetrics(5)
    labels = torch.arange(25) % 5
    metric.update(torch.nn.functional.one_hot(labels, 5).float(), labels)
    html = build_run_report({"task": "retinopathy", "test": metric.aggregate()}).render()
    summary = _summary(html)
    assert "test quadratic kappa" in summary and "0 = chance, 1 = perfect" in summary
    assert "Quadratic kappa (Cohen's kappa with quadratic weights) measures" in summary


def test_run_artifacts_leave_out_the_checkpoint_the_run_deletes(tmp_path):
    from medsplit.train.outputs import run_artifacts

    for name in ("checkpoint.pt", "model.safetensors", "config.yaml"):
        (tmp_path / name).write_bytes(b"x" * 10)
    files = run_artifacts(tmp_path, tmp_path / "copy.json", removed=("checkpoint.pt",))["files"]
    assert set(files) == {"model.safetensors", "config.yaml"}
    assert "checkpoint.pt" in run_artifacts(tmp_path, tmp_path / "copy.json")["files"]


@pytest.mark.slow
def test_a_finished_run_s_report_lists_only_files_that_exist(tmp_path):
    """The old report listed checkpoint.pt, which the run deleted right after writing it."""
    import json

    from medsplit.config import load_config
    from medsplit.train.loop import train

    cfg = load_config(None, [
        "task=lungs", "data.source=synthetic", "data.synthetic_size=40", "data.img_size=32", "model.name=unet-classic",
        "model.base_channels=4", "train.epochs=1", "train.batch_size=8", "split.cut=1", "split.clients=1",
        f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache"])
    run_dir = train(cfg, quiet=True)
    html = (tmp_path / "reports" / f"{cfg.run_name()}.html").read_text()
    artifacts = html[html.index('id="artifacts"'):]
    listed = re.findall(r"<td[^>]*>\s*([\w.]+/?)\s*</td>", artifacts)
    assert "model.safetensors" in listed and "checkpoint.pt" not in listed
    for name in listed:
        if name in ("model.safetensors", "config.yaml", "metrics.json", "tb/"):
            assert (run_dir / name).exists(), name
    assert not (run_dir / "checkpoint.pt").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["spacing"] is None
    assert "HD95 (pixels)" in html and "CUT=1 says where" in html and "One epoch: each panel" in html
