"""External validation as users do it: a plain lung folder (images/ + masks/, no manifest), a plain
fundus image folder with its labels CSV elsewhere, and a report stating how far the external metric
falls from the run's own test metric."""

import csv
import json

import pytest

from medsplit.cli import main
from medsplit.config import load_config
from medsplit.evaluate import compare_to_internal, evaluate_run
from medsplit.train.loop import train


def _run(tmp_path, *overrides):
    cfg = load_config(None, [*overrides, "train.epochs=1", "output.tensorboard=false", f"output.runs_dir={tmp_path}/runs",
                             f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache"])
    return train(cfg, quiet=True)


@pytest.mark.slow
def test_plain_lung_folder_without_manifest_is_scored_against_the_internal_dice(shared_data, tmp_path):
    run = _run(tmp_path, "task=lungs", "data.source=synthetic", "data.synthetic_size=40", "data.img_size=32",
               "model.name=unet-classic", "model.base_channels=4", "train.batch_size=4", "split.cut=1", "split.clients=1")
    src = shared_data / "lungs" / "shenzhen"
    folder = tmp_path / "my-hospital"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    stems = sorted(p.stem for p in (src / "images").glob("*.png"))[:5]
    for stem in stems:  # no manifest.csv: stems alone pair an image with its mask
        (folder / "images" / f"{stem}.png").write_bytes((src / "images" / f"{stem}.png").read_bytes())
        (folder / "masks" / f"{stem}.png").write_bytes((src / "masks" / f"{stem}.png").read_bytes())
    out, report = tmp_path / "ext.json", tmp_path / "ext.md"
    assert main(["evaluate", str(run), "--data", str(folder), "--out", str(out), "--report", str(report)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 5 and sorted(r["id"] for r in result["metrics"]["per_image"]) == stems
    internal = json.loads((run / "metrics.json").read_text())["test"]["dice"]["mean"]
    c = result["comparison"]
    assert c["metric"] == "mean Dice" and c["internal"] == pytest.approx(internal)
    assert c["external"] == pytest.approx(result["metrics"]["dice"]["mean"])
    assert c["drop"] == pytest.approx(internal - c["external"])
    text = report.read_text()
    assert c["statement"] in text and f"{c['internal']:.4f}" in text and f"{c['external']:.4f}" in text


@pytest.mark.slow
def test_plain_fundus_folder_with_a_csv_elsewhere(shared_data, tmp_path):
    run = _run(tmp_path, "task=retinopathy", "data.source=synthetic", "data.synthetic_size=96", "data.img_size=32",
               "model.name=resnet18", "train.batch_size=16")
    src = shared_data / "retinopathy" / "eyepacs256"
    rows = list(csv.DictReader((src / "labels.csv").open()))
    chosen = [r for r in rows if int(r["level"]) >= 2][:4] + [r for r in rows if int(r["level"]) < 2][:4]
    folder = tmp_path / "photos"  # only images: the site's label export lives elsewhere
    folder.mkdir()
    for r in chosen:
        (folder / f"{r['image']}.jpeg").write_bytes((src / r["file"]).read_bytes())
    labels = tmp_path / "exports" / "grades.csv"
    labels.parent.mkdir()
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "level"])
        w.writerows([r["image"], r["level"]] for r in chosen)
    out = tmp_path / "ext.json"
    assert main(["evaluate", str(run), "--data", str(folder), "--labels", str(labels), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 8 and sum(map(sum, result["metrics"]["confusion"])) == 8
    assert result["comparison"]["metric"] == "AUC"
    assert result["comparison"]["drop"] == pytest.approx(result["comparison"]["internal"] - result["metrics"]["auc"])
    # a CSV without a level column is named
    bad = tmp_path / "bad.csv"
    bad.write_text("image,grade\nx,1\n")
    with pytest.raises(ValueError, match="bad.csv is missing required column.*level"):
        evaluate_run(run, str(folder), tmp_path / "x.json", labels=str(bad))


def test_the_statement_says_which_way_the_metric_moved():
    fell = compare_to_internal("lungs", {"dice": {"mean": 0.9}}, {"dice": {"mean": 0.8}})
    assert fell["drop"] == pytest.approx(0.1) and "falls 0.100 below" in fell["statement"]
    rose = compare_to_internal("retinopathy", {"auc": 0.7}, {"auc": 0.75})
    assert rose["drop"] == pytest.approx(-0.05) and "above (not below)" in rose["statement"]
    none = compare_to_internal("retinopathy", None, {"auc": 0.75})
    assert none["drop"] is None and "no internal" in none["statement"]
