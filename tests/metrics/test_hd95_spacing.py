"""HD95 in millimetres where the pixel spacing is known (NIfTI headers), in pixels otherwise
(PNG/JPEG), stated in the report (issue 29, item 6)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medsplit.config import load_config
from medsplit.data.lungs import load_lungs
from medsplit.metrics import SegmentationMetrics
from medsplit.report.explain import hd95_unit
from medsplit.tasks import TaskSettings, make_task

SIZE = 32  # data.img_size of every load here


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return mask.float() * 20 - 10


def _pixel(row: int, column: int, size: int = 8) -> torch.Tensor:
    t = torch.zeros(1, 1, size, size)
    t[0, 0, row, column] = 1
    return t


def _lung_pair(shape: tuple[int, int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """An image and its binary mask: two lung-like rectangles, placed a little differently per image."""
    rows, cols = shape
    rng = np.random.default_rng(k)
    image = rng.integers(120, 200, size=shape).astype(np.uint8)
    mask = np.zeros(shape, dtype=np.uint8)
    top, bottom = rows // 5 + k % 3, rows - rows // 6
    mask[top:bottom, cols // 8 : cols // 2 - 2 - k % 2] = 1
    mask[top:bottom, cols // 2 + 2 : cols - cols // 8 + k % 2] = 1
    image[mask > 0] //= 3  # air-filled lungs are dark
    return image, mask


def _nifti(path: Path, array: np.ndarray, zooms: tuple[float, ...], unit: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, np.diag([*zooms, *[1.0] * (3 - len(zooms)), 1.0]))
    image.header.set_zooms(zooms[: array.ndim] + (1.0,) * (array.ndim - len(zooms)))
    if unit is not None:
        image.header.set_xyzt_units(unit)
    nib.save(image, str(path))


def _nifti_folder(root: Path, n: int, shape: tuple[int, int], zooms: tuple[float, float], unit: str | None = "mm",
                  first: int = 0) -> Path:
    """``images/`` + ``masks/`` of ``n`` NIfTI files whose headers say ``zooms`` in ``unit``."""
    for k in range(first, first + n):
        image, mask = _lung_pair(shape, k)
        _nifti(root / "images" / f"case{k:02d}.nii.gz", image, zooms, unit)
        _nifti(root / "masks" / f"case{k:02d}.nii.gz", mask, zooms, unit)
    return root


def _png_folder(root: Path, n: int, shape: tuple[int, int]) -> Path:
    for k in range(n):
        image, mask = _lung_pair(shape, k)
        for folder, array in (("images", image), ("masks", mask * 255)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / f"case{k:02d}.png")
    return root


def _cfg(tmp_path: Path, folder: Path, *more: str):
    return load_config(None, [
        "task=lungs", f"data.source={folder}", f"data.img_size={SIZE}", "data.test_fraction=0.25", "data.val_fraction=0.125",
        "model.name=unet-classic", "model.base_channels=4", "train.epochs=1", "train.batch_size=4", "split.cut=1",
        "split.clients=1", f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports",
        f"data.cache_dir={tmp_path}/cache", *more])


# ---- the metric: one spacing per image ------------------------------------------------------


def test_hd95_in_mm_is_hd95_in_pixels_times_each_image_s_spacing_also_anisotropic():
    pred = torch.cat([_pixel(1, 1), _pixel(1, 1)])
    true = torch.cat([_pixel(1, 6), _pixel(5, 1)])  # 5 columns apart; 4 rows apart
    pixels = SegmentationMetrics()
    pixels.update(_logits(pred), true, ids=["across", "down"])
    assert [r["hd95"] for r in pixels.aggregate()["per_image"]] == pytest.approx([5.0, 4.0])
    assert pixels.aggregate()["spacing"] is None

    # rows 0.5 mm apart, columns 2 mm: the column distance is scaled by 2, the row distance by 0.5
    mm = SegmentationMetrics(spacing_by_id={"across": (0.5, 2.0), "down": (0.5, 2.0)})
    mm.update(_logits(pred), true, ids=["across", "down"])
    result = mm.aggregate()
    assert [r["hd95"] for r in result["per_image"]] == pytest.approx([5 * 2.0, 4 * 0.5])
    assert result["spacing"] == {"min": 0.5, "max": 2.0}

    # each image its own spacing, in one batch
    own = SegmentationMetrics(spacing_by_id={"across": (0.3, 0.3), "down": (0.7, 0.7)})
    own.update(_logits(pred), true, ids=["across", "down"])
    assert [r["hd95"] for r in own.aggregate()["per_image"]] == pytest.approx([5 * 0.3, 4 * 0.7])


def test_one_isotropic_spacing_is_reported_as_a_number_and_a_missing_image_is_an_error():
    blob = torch.zeros(1, 1, 16, 16)
    blob[..., 3:11, 4:9] = 1
    shifted = torch.roll(blob, shifts=(2, 3), dims=(2, 3))
    pixels, mm = SegmentationMetrics(), SegmentationMetrics(spacing_by_id={"a": (0.25, 0.25)})
    pixels.update(_logits(shifted), blob, ids=["a"])
    mm.update(_logits(shifted), blob, ids=["a"])
    assert pixels.aggregate()["hd95"]["mean"] > 0
    assert mm.aggregate()["hd95"]["mean"] == pytest.approx(pixels.aggregate()["hd95"]["mean"] * 0.25)
    assert mm.aggregate()["spacing"] == 0.25
    with pytest.raises(ValueError, match="no pixel spacing for image"):
        mm.update(_logits(blob), blob, ids=["b"])
    with pytest.raises(ValueError, match="not both"):
        SegmentationMetrics(spacing=1.0, spacing_by_id={})
    with pytest.raises(ValueError, match="positive"):
        SegmentationMetrics(spacing_by_id={"a": (0.5, 0.0)})


# ---- the data: spacing from NIfTI headers, scaled to the model's input ----------------------


def test_nifti_header_spacing_is_read_and_scaled_to_the_input_size(tmp_path):
    folder = _nifti_folder(tmp_path / "lungs" / "nifti", 6, (40, 60), (0.5, 0.8))
    # a 3-D volume holding one slice, and a header in metres: the same spacing in the end
    image, mask = _lung_pair((40, 60), 6)
    _nifti(folder / "images" / "case06.nii.gz", image[..., None], (0.5, 0.8, 2.5), "mm")
    _nifti(folder / "masks" / "case06.nii.gz", mask[..., None], (0.5, 0.8, 2.5), "mm")
    image, mask = _lung_pair((40, 60), 7)
    _nifti(folder / "images" / "case07.nii.gz", image, (0.0005, 0.0008), "meter")
    _nifti(folder / "masks" / "case07.nii.gz", mask, (0.0005, 0.0008), "meter")
    data = load_lungs(str(folder), tmp_path, img_size=SIZE, test_fraction=0.25, val_fraction=0.125)
    # padded to 60 x 60 (padding keeps the spacing), resized to 32 x 32: each axis x 60/32
    expected = (0.5 * 60 / SIZE, 0.8 * 60 / SIZE)
    ids = [i for s in (data.train, data.val, data.test) for i in s.ids]
    assert sorted(data.spacing) == sorted(ids) and len(ids) == 8
    for i in ids:
        assert data.spacing[i] == pytest.approx(expected)
    assert data.summary()["pixel_spacing_mm"] == pytest.approx({"min": expected[0], "max": expected[1]})
    json.dumps(data.summary())


def test_png_sets_and_nifti_without_a_unit_stay_in_pixels(tmp_path):
    png = load_lungs(str(_png_folder(tmp_path / "lungs" / "png", 6, (40, 60))), tmp_path, img_size=SIZE)
    assert png.spacing is None and "pixel_spacing_mm" not in png.summary()
    # nibabel writes 1.0 with the unit "unknown" when nobody set it: not a spacing to trust
    no_unit = load_lungs(str(_nifti_folder(tmp_path / "lungs" / "no-unit", 6, (40, 60), (0.5, 0.5), unit=None)),
                         tmp_path, img_size=SIZE)
    assert no_unit.spacing is None
    # one image without a spacing leaves the whole set in pixels: never a mix of mm and pixels
    mixed = _nifti_folder(tmp_path / "lungs" / "mixed", 6, (40, 60), (0.5, 0.5))
    image, mask = _lung_pair((40, 60), 9)
    Image.fromarray(image).save(mixed / "images" / "case09.png")
    Image.fromarray(mask * 255).save(mixed / "masks" / "case09.png")
    assert load_lungs(str(mixed), tmp_path, img_size=SIZE).spacing is None
    # combined sites: mm only where every site knows its spacing
    _nifti_folder(tmp_path / "lungs" / "other", 6, (50, 40), (0.4, 0.4), first=20)
    both = load_lungs("mixed+other", tmp_path, img_size=SIZE)
    assert both.spacing is None
    _nifti_folder(tmp_path / "lungs" / "third", 6, (40, 60), (0.5, 0.5), first=40)
    both = load_lungs("third+other", tmp_path, img_size=SIZE)
    assert both.spacing["case40"] == pytest.approx((0.5 * 60 / SIZE,) * 2)
    assert both.spacing["case20"] == pytest.approx((0.4 * 50 / SIZE,) * 2)


# ---- the task: its metrics carry each image's spacing --------------------------------------


def _score_shifted_masks(task, split: str, metrics) -> dict:
    """Metrics of predictions that are each test mask shifted by two rows and one column."""
    part = task.split(split)
    masks = part.masks.float()
    metrics.update(_logits(torch.roll(masks, shifts=(2, 1), dims=(2, 3))), masks, list(part.ids))
    return metrics.aggregate()


def test_the_lung_task_scores_hd95_in_mm_for_nifti_and_in_pixels_for_png(tmp_path):
    nifti = _nifti_folder(tmp_path / "nifti", 8, (40, 60), (0.6, 0.6))
    task = make_task(TaskSettings.from_config(_cfg(tmp_path, nifti)), torch.device("cpu"))
    spacing = 0.6 * 60 / SIZE
    in_mm = _score_shifted_masks(task, "test", task.new_metrics())
    in_pixels = _score_shifted_masks(task, "test", SegmentationMetrics())
    assert in_mm["spacing"] == pytest.approx(spacing)
    assert in_pixels["hd95"]["mean"] > 0
    assert in_mm["hd95"]["mean"] == pytest.approx(in_pixels["hd95"]["mean"] * spacing)
    for a, b in zip(in_mm["per_image"], in_pixels["per_image"]):
        assert a["hd95"] == pytest.approx(b["hd95"] * spacing) and a["dice"] == b["dice"]
    assert hd95_unit(in_mm)[0] == "mm"
    # external validation on a NIfTI folder: the same per-image spacing
    external = task.load_external(task.settings, str(nifti))
    assert external.metrics.spacing_by_id == task.data.spacing

    png = make_task(TaskSettings.from_config(_cfg(tmp_path, _png_folder(tmp_path / "png", 8, (40, 60)))), torch.device("cpu"))
    from_png = _score_shifted_masks(png, "test", png.new_metrics())
    assert from_png["spacing"] is None and hd95_unit(from_png)[0] == "pixels"
    assert from_png["hd95"]["mean"] == pytest.approx(_score_shifted_masks(png, "test", SegmentationMetrics())["hd95"]["mean"])


def test_the_report_states_a_range_of_spacings_in_mm():
    unit, words = hd95_unit({"spacing": {"min": 0.5, "max": 0.8}})
    assert unit == "mm" and "0.5 to 0.8 mm per pixel" in words
    assert hd95_unit({"spacing": {"min": None, "max": 0.8}})[0] == "pixels"


@pytest.mark.slow
def test_a_run_on_nifti_lungs_reports_hd95_in_mm(tmp_path):
    from medsplit.train.loop import train

    cfg = _cfg(tmp_path, _nifti_folder(tmp_path / "nifti", 16, (40, 60), (0.6, 0.6)))
    run_dir = train(cfg, quiet=True)
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert test["spacing"] == pytest.approx(0.6 * 60 / SIZE)
    html = (tmp_path / "reports" / f"{cfg.run_name()}.html").read_text()
    assert "HD95 (mm)" in html and "HD95 (pixels)" not in html
