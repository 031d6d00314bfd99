"""Local-contrast preprocessing of fundus photographs (``data.preprocess: local-contrast``)."""

import pytest
import torch

from medsplit.config import CHOICES, ConfigError, load_config
from medsplit.data.errors import DataError
from medsplit.data.fundus_contrast import PREPROCESSING, local_contrast
from medsplit.tasks import TASKS, TaskSettings


def _disc(side=64, level=150):
    """A flat-coloured fundus disc on a black surround, with one small dark lesion inside."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    inside = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2) < (0.4 * side) ** 2
    img = torch.zeros(1, 3, side, side, dtype=torch.uint8)
    img[:, :, inside] = level
    img[:, :, side // 2 - 1:side // 2 + 1, side // 2 - 1:side // 2 + 1] = level - 60  # a 2x2 haemorrhage
    return img, inside


def test_flat_illumination_goes_to_neutral_and_a_small_lesion_stays_dark():
    img, inside = _disc()
    brighter = img.clone()
    brighter[img > 0] = (img[img > 0].int() + 60).to(torch.uint8)  # the same eye, a brighter camera
    a, b = local_contrast(img), local_contrast(brighter)
    c = img.shape[-1] // 2
    assert (a.int() - b.int()).abs().max() <= 1  # the illumination level is gone (up to rounding)
    assert a[0, :, c - 8, c - 8].tolist() == [128, 128, 128]  # flat fundus -> neutral grey
    assert (a[0, :, c, c] < 60).all()  # the lesion is far darker than its surround
    assert (a[0, :, ~inside] == 128).all()  # the black surround (and the ringing rim) -> neutral
    assert a.dtype == torch.uint8 and a.shape == img.shape


def test_local_contrast_refuses_what_is_not_a_uint8_rgb_batch():
    with pytest.raises(DataError, match="uint8 \\(N, 3, H, W\\)"):
        local_contrast(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match="torch.float32"):
        local_contrast(torch.zeros(1, 3, 8, 8))


def test_the_config_choice_lists_the_preprocessing_there_is():
    assert CHOICES["data.preprocess"] == PREPROCESSING
    assert load_config(None, ["data.preprocess=local-contrast"]).data.preprocess == "local-contrast"
    with pytest.raises(ConfigError, match="data.preprocess"):
        load_config(None, ["data.preprocess=graham"])
    assert {"data.preprocess", "data.rotation"} <= set(TASKS["lungs"].unused_settings)


def test_training_and_external_images_are_filtered_alike(tmp_path):
    base = ["task=retinopathy", "data.source=synthetic", "data.synthetic_size=40", "data.img_size=32",
            f"data.cache_dir={tmp_path}"]
    task = TASKS["retinopathy"]
    plain = task.load_data(TaskSettings.from_config(load_config(None, base)))
    settings = TaskSettings.from_config(load_config(None, [*base, "data.preprocess=local-contrast"]))
    filtered = task.load_data(settings)
    assert torch.equal(filtered.test.images, local_contrast(plain.test.images))
    assert filtered.summary()["preprocess"] == "local-contrast"


def test_filtered_images_are_cached_by_content_and_a_bad_cache_file_is_recomputed(tmp_path, monkeypatch):
    import medsplit.data.fundus_contrast as fc

    img, _ = _disc()
    first = fc.local_contrast_cached(img, tmp_path)
    assert torch.equal(first, local_contrast(img))
    (cached,) = tmp_path.glob("local-contrast-*.safetensors")

    def refuse(images):
        raise AssertionError("filtered again although the cache holds these images")

    monkeypatch.setattr(fc, "local_contrast", refuse)
    assert torch.equal(fc.local_contrast_cached(img, tmp_path), first)  # read back, not recomputed
    other = img.clone()
    other[0, 0, 5, 5] = 7  # one pixel differs: another key
    with pytest.raises(AssertionError, match="filtered again"):
        fc.local_contrast_cached(other, tmp_path)
    monkeypatch.undo()
    cached.write_bytes(b"half-written")
    assert torch.equal(fc.local_contrast_cached(img, tmp_path), first)  # unreadable: filtered and rewritten
    assert len(list(tmp_path.glob("local-contrast-*.safetensors"))) == 1
