"""Lung segmentation data: the real covid-cxr-v7 set, Kaggle and NIfTI layouts built from its
PNGs, synthetic phantoms, every validation error, and paired augmentation."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medsplit.data.download import download_kaggle_lungs
from medsplit.data.images import DataError
from medsplit.data.lungs import SegmentationData, load_lungs, resolve_lung_source, split_by_patient
from medsplit.data.partition import patient_split
from medsplit.data.seg_augment import SegAugment
from medsplit.data.synthetic_cxr import make_synthetic_cxr

COVID = Path(__file__).resolve().parents[3] / "shared" / "data" / "lungs" / "covid-cxr-v7"
needs_covid = pytest.mark.skipif(not COVID.is_dir(), reason=f"real lung set not present at {COVID}")


def _stems(n: int) -> list[str]:
    return sorted(p.stem for p in (COVID / "images").glob("*.png"))[:n]


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _by_id(data: SegmentationData) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {i: (s.images[k], s.masks[k]) for s in (data.train, data.val, data.test) for k, i in enumerate(s.ids)}


def _pair_folder(root: Path, stems: list[str]) -> Path:
    """A small images/ + masks/ set copied from the real one."""
    for stem in stems:
        _save(root / "images" / f"{stem}.png", _png(COVID / "images" / f"{stem}.png"))
        _save(root / "masks" / f"{stem}.png", _png(COVID / "masks" / f"{stem}.png"))
    return root


# ---- the real set ---------------------------------------------------------------------------


@needs_covid
def test_covid_set_loads_splits_by_patient_and_has_binary_masks(tmp_path) -> None:
    data = load_lungs("covid-cxr-v7", COVID.parents[1], img_size=64, seed=0, cache_dir=tmp_path / "cache")
    splits = (data.train, data.val, data.test)
    assert sum(len(s) for s in splits) == 159 and not data.synthetic and data.source == "covid-cxr-v7"
    # 70/10/20 of 159 by patient (a patient's images stay together, so within a few images of 32 / 16)
    assert abs(len(data.test) - 32) <= 2 and abs(len(data.val) - 16) <= 2 and len(data.train) >= 108
    ids = [set(s.ids) for s in splits]
    patients = [set(s.patients) for s in splits]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not ids[a] & ids[b] and not patients[a] & patients[b]
    for s in splits:
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 64, 64)
        assert set(s.masks.unique().tolist()) == {0, 1}
    summary = data.summary()
    json.dumps(summary)
    assert set(summary["splits"]["train"]["groups"]) <= {"PA", "AP", "AP Supine"}  # manifest views
    assert 0.2 < summary["splits"]["test"]["lung_fraction"] < 0.5
    again = load_lungs("covid-cxr-v7", COVID.parents[1], img_size=64, seed=0, cache_dir=tmp_path / "cache")
    assert again.test.ids == data.test.ids and torch.equal(again.test.masks, data.test.masks)
    other = load_lungs("covid-cxr-v7", COVID.parents[1], img_size=64, seed=1, cache_dir=tmp_path / "cache")
    assert other.test.ids != data.test.ids


@needs_covid
def test_images_and_masks_keep_their_pairing_at_native_size() -> None:
    data = load_lungs("covid-cxr-v7", COVID.parents[1], img_size=256, max_images=6, seed=3)
    assert data.info["image_size"] == 256
    for stem, (image, mask) in _by_id(data).items():
        assert torch.equal(image[0], torch.from_numpy(_png(COVID / "images" / f"{stem}.png").copy()))
        assert torch.equal(mask[0], torch.from_numpy((_png(COVID / "masks" / f"{stem}.png") > 0).astype(np.uint8)))


# ---- other layouts --------------------------------------------------------------------------


@needs_covid
def test_kaggle_layout_merges_montgomery_masks_and_reads_shenzhen_names(tmp_path) -> None:
    root = tmp_path / "lungs" / "kaggle-lungs" / "Lung Segmentation"  # nested, as Kaggle unzips it
    stems = _stems(6)
    originals = {}
    for k, stem in enumerate(stems):
        image, mask = _png(COVID / "images" / f"{stem}.png"), _png(COVID / "masks" / f"{stem}.png")
        if k < 2:  # Montgomery: left and right halves in separate files, merged by OR
            name = f"MCUCXR_{k:04d}_0"
            left, right = mask.copy(), mask.copy()
            left[:, 128:], right[:, :128] = 0, 0
            _save(root / "ManualMask" / "leftMask" / f"{name}.png", left)
            _save(root / "ManualMask" / "rightMask" / f"{name}.png", right)
        else:  # Shenzhen: <stem>_mask.png
            name = f"CHNCXR_{k:04d}_1"
            if k < 5:
                _save(root / "masks" / f"{name}_mask.png", mask)
        _save(root / "CXR_png" / f"{name}.png", image)
        originals[name] = mask
    assert resolve_lung_source("auto", tmp_path) == ("kaggle-lungs", tmp_path / "lungs" / "kaggle-lungs")
    data = load_lungs("montgomery-shenzhen", tmp_path, img_size=256)
    loaded = _by_id(data)
    assert data.info["skipped_unmasked"] == 1 and "CHNCXR_0005_1" not in loaded  # the public set has unannotated images
    assert sorted(loaded) == sorted(set(originals) - {"CHNCXR_0005_1"})
    for name, (_, mask) in loaded.items():
        assert torch.equal(mask[0], torch.from_numpy((originals[name] > 0).astype(np.uint8))), name
    groups = sorted(g for s in (data.train, data.val, data.test) for g in s.groups)
    assert groups == ["montgomery"] * 2 + ["shenzhen"] * 3
    with pytest.raises(DataError, match="CHNCXR_0005_1.png has no mask"):
        load_lungs("kaggle", tmp_path, img_size=64, missing_masks="error")
    # half a Montgomery mask is an error, not a silently half-empty mask
    (root / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png").unlink()
    with pytest.raises(DataError, match="MCUCXR_0001_0.png has only half"):
        load_lungs("kaggle", tmp_path, img_size=64)


@needs_covid
def test_nifti_set_matches_the_png_set(tmp_path) -> None:
    stems = _stems(5)
    png_set = _pair_folder(tmp_path / "lungs" / "png-set", stems)
    nifti = tmp_path / "lungs" / "nifti-set"
    for k, stem in enumerate(stems):
        image, mask = _png(COVID / "images" / f"{stem}.png"), (_png(COVID / "masks" / f"{stem}.png") > 0).astype(np.uint8)
        if k == 0:  # a 3-D volume holding a single slice
            image, mask = image[..., None], mask[..., None]
        for folder, array in (("images", image), ("masks", mask)):
            (nifti / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(nifti / folder / f"{stem}.nii.gz"))
    from_nifti = _by_id(load_lungs(str(nifti), tmp_path, img_size=64, test_fraction=0.2, val_fraction=0.2))
    from_png = _by_id(load_lungs("png-set", tmp_path, img_size=64, test_fraction=0.2, val_fraction=0.2))
    assert sorted(from_nifti) == sorted(from_png) == stems
    for stem in stems:
        assert torch.equal(from_nifti[stem][1], from_png[stem][1])
        assert (from_nifti[stem][0].int() - from_png[stem][0].int()).abs().max() <= 1  # same resize pipeline
    assert png_set.is_dir()


def test_synthetic_phantoms_are_deterministic_and_lung_shaped(tmp_path) -> None:
    a_img, a_mask = make_synthetic_cxr(6, 64, seed=7)
    b_img, b_mask = make_synthetic_cxr(6, 64, seed=7)
    c_img, _ = make_synthetic_cxr(6, 64, seed=8)
    assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask) and not torch.equal(a_img, c_img)
    assert a_img.dtype == a_mask.dtype == torch.uint8 and a_img.shape == (6, 1, 64, 64)
    assert set(a_mask.unique().tolist()) == {0, 1}
    fractions = a_mask.float().mean(dim=(1, 2, 3))
    assert (fractions > 0.05).all() and (fractions < 0.5).all()
    lung = a_img[a_mask.bool()].float().mean()
    body = a_img[(~a_mask.bool()) & (a_img > 60)].float().mean()
    assert lung < body - 20  # air-filled lungs are dark
    # both lungs: the mask has pixels on each side of the midline
    assert (a_mask[..., :32].sum(dim=(1, 2, 3)) > 0).all() and (a_mask[..., 32:].sum(dim=(1, 2, 3)) > 0).all()

    data = load_lungs("auto", tmp_path / "nothing-here", img_size=32, synthetic_size=20, seed=2)
    assert data.synthetic and data.source == "synthetic"
    assert [len(s) for s in (data.train, data.val, data.test)] == [14, 2, 4]
    json.dumps(data.summary())


# ---- validation errors ----------------------------------------------------------------------


@needs_covid
@pytest.mark.parametrize("fault", ["missing mask", "size mismatch", "non-binary mask", "unreadable image", "unreadable mask"])
def test_each_data_error_names_the_file(tmp_path, fault: str) -> None:
    root = _pair_folder(tmp_path / "lungs" / "bad-set", _stems(2))
    stem = _stems(3)[2]
    image, mask = _png(COVID / "images" / f"{stem}.png"), _png(COVID / "masks" / f"{stem}.png")
    _save(root / "images" / f"{stem}.png", image)
    bad = root / "masks" / f"{stem}.png"
    if fault == "missing mask":
        bad = root / "images" / f"{stem}.png"
    elif fault == "size mismatch":
        _save(bad, np.asarray(Image.fromarray(mask).resize((200, 256), Image.NEAREST)))
    elif fault == "non-binary mask":
        soft = mask.copy()
        soft[:10] = 128
        _save(bad, soft)
    elif fault == "unreadable image":
        _save(bad, mask)
        bad = root / "images" / f"{stem}.png"
        bad.write_bytes(b"not a png at all")
    else:
        bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    expected = {"missing mask": "has no mask", "size mismatch": "200x256 px but its image", "non-binary mask": "is not binary",
                "unreadable image": "cannot read image", "unreadable mask": "cannot read mask"}[fault]
    with pytest.raises(DataError, match=expected) as info:
        load_lungs("bad-set", tmp_path, img_size=32)
    assert str(bad) in str(info.value)


def test_zero_split_shares_leave_those_splits_empty() -> None:
    # External validation (medsplit evaluate) scores a lung folder whole: test = val = 0.
    patients = [f"p{i // 2}" for i in range(20)]
    groups = ["a"] * 10 + ["b"] * 10
    train, val, test = split_by_patient(patients, groups, seed=0, test_fraction=0.0, val_fraction=0.0)
    assert train.tolist() == list(range(20)) and len(val) == 0 and len(test) == 0
    train, val, test = split_by_patient(patients, groups, seed=0, test_fraction=0.2, val_fraction=0.0)
    assert len(val) == 0 and len(test) == 4 and sorted(train.tolist() + test.tolist()) == list(range(20))
    assert not {patients[i] for i in train} & {patients[i] for i in test}
    # positive shares are the plain patient_split, stratified by group (the zero-share path changes nothing there)
    three = split_by_patient(patients, groups, seed=3, test_fraction=0.2, val_fraction=0.1)
    plain = patient_split(np.array([0] * 10 + [1] * 10), patients, (1 - 0.2 - 0.1, 0.1, 0.2), 3)
    assert [p.tolist() for p in three] == [p.tolist() for p in plain]
    with pytest.raises(DataError, match="test_fraction"):
        split_by_patient(patients, groups, seed=0, test_fraction=-0.1, val_fraction=0.0)


def test_missing_sets_say_where_they_looked_and_how_to_get_them(tmp_path) -> None:
    with pytest.raises(DataError, match=r"kaggle-lungs.*make data"):
        resolve_lung_source("kaggle", tmp_path)
    with pytest.raises(DataError, match=r"no-such-set.*auto, synthetic"):
        load_lungs("no-such-set", tmp_path)
    assert resolve_lung_source("synthetic", tmp_path) == ("synthetic", None)


def _fake_kaggle(monkeypatch, authenticate, download) -> None:
    """Stand-in ``kaggle`` modules: the tests never touch the network or real credentials."""
    api_module = types.ModuleType("kaggle.api.kaggle_api_extended")
    api_module.KaggleApi = type("KaggleApi", (), {"authenticate": authenticate, "dataset_download_files": download})
    monkeypatch.setitem(sys.modules, "kaggle", types.ModuleType("kaggle"))
    monkeypatch.setitem(sys.modules, "kaggle.api", types.ModuleType("kaggle.api"))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", api_module)


def test_kaggle_download_without_credentials_or_network_is_a_clear_error(tmp_path, monkeypatch) -> None:
    def no_credentials(self):
        raise SystemExit(1)  # what the kaggle package does without kaggle.json

    def offline(self, *args, **kwargs):
        raise ConnectionError("no route to host")

    def unzip_layout(self, dataset, path, **kwargs):
        root = Path(path) / "Lung Segmentation"
        (root / "CXR_png").mkdir(parents=True)
        (root / "masks").mkdir()

    _fake_kaggle(monkeypatch, no_credentials, offline)
    with pytest.raises(DataError, match="Kaggle credentials not found"):
        download_kaggle_lungs(tmp_path)
    _fake_kaggle(monkeypatch, lambda self: None, offline)
    with pytest.raises(DataError, match="check the network"):
        download_kaggle_lungs(tmp_path)
    _fake_kaggle(monkeypatch, lambda self: None, unzip_layout)
    assert download_kaggle_lungs(tmp_path) == tmp_path / "lungs" / "kaggle-lungs"
    for name in ("kaggle", "kaggle.api", "kaggle.api.kaggle_api_extended"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(DataError, match="pip install kaggle"):
        download_kaggle_lungs(tmp_path / "elsewhere")


# ---- paired augmentation --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["monai", "albumentations"])
def test_seg_augment_keeps_image_and_mask_aligned(backend: str) -> None:
    _, masks = make_synthetic_cxr(8, 64, seed=0)
    masks = masks.float()
    aug = SegAugment(backend, rotate_degrees=15, scale=(0.85, 1.15), intensity=0.0, seed=5)
    images, out_masks = aug(masks.clone(), masks.clone())  # the image *is* the mask
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert (out_masks != masks).float().mean() > 0.01, "the augmentation should move the masks"
    # bilinear image vs nearest mask differ only along edges
    assert ((images > 0.5).float() != out_masks).float().mean() < 0.01
    # same seed, same batches; another seed, other batches
    again = SegAugment(backend, rotate_degrees=15, scale=(0.85, 1.15), intensity=0.0, seed=5)(masks.clone(), masks.clone())
    other = SegAugment(backend, rotate_degrees=15, scale=(0.85, 1.15), intensity=0.0, seed=6)(masks.clone(), masks.clone())
    assert torch.equal(again[1], out_masks) and not torch.equal(other[1], out_masks)


@pytest.mark.parametrize("backend", ["monai", "albumentations"])
def test_seg_augment_defaults_keep_ranges(backend: str) -> None:
    images, masks = make_synthetic_cxr(4, 48, seed=1)
    out_images, out_masks = SegAugment(backend, seed=0)(images.float() / 255, masks.float())
    assert out_images.shape == (4, 1, 48, 48) and out_images.dtype == torch.float32
    assert out_images.min() >= 0 and out_images.max() <= 1
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}


def test_seg_augment_rejects_unknown_backend() -> None:
    with pytest.raises(ValueError, match=r"valid backends are \['monai', 'albumentations'\]"):
        SegAugment("torchio")
