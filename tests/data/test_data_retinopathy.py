"""Retinopathy data layer: real EyePACS / Kaggle layout / RetinaMNIST loading, every
DataError the loader promises, the decode cache, and the synthetic fundus generator.

Real data lives outside the repository at ../shared/data; these tests read it whenever it
is present (CI has it) and use small images and subsets to stay fast."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsplit.data import images as images_module
from medsplit.data.images import DataError, ImageSet, decode_images
from medsplit.data.partition import patient_split
from medsplit.data.retinopathy import TARGETS, load_retinopathy, resolve_source
from medsplit.data.synthetic_fundus import GRADE_MIX, _render, fundus_sites, make_synthetic_fundus

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
EYEPACS = SHARED / "retinopathy" / "eyepacs256"
RETINAMNIST = SHARED / "retinopathy" / "retinamnist" / "retinamnist.npz"
needs_eyepacs = pytest.mark.skipif(not (EYEPACS / "labels.csv").is_file(), reason=f"real EyePACS data not at {EYEPACS}")


def _csv_rows() -> list[dict[str, str]]:
    with (EYEPACS / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_folder(folder: Path, header: str, rows: list[str], images: dict[str, Path] | None = None) -> Path:
    """A tiny folder source: a CSV plus copies of real JPEGs under ``images/``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    for name, src in (images or {}).items():
        (folder / "images").mkdir(exist_ok=True)
        shutil.copy(src, folder / "images" / f"{name}.jpeg")
    return folder


def _patients_by_grade() -> dict[int, list[str]]:
    """Real patients with both eyes of the same grade, per grade."""
    eyes: dict[str, list[dict[str, str]]] = {}
    for row in _csv_rows():
        eyes.setdefault(row["patient"], []).append(row)
    out: dict[int, list[str]] = {}
    for patient, rows in sorted(eyes.items()):
        if len(rows) == 2 and rows[0]["level"] == rows[1]["level"]:
            out.setdefault(int(rows[0]["level"]), []).append(patient)
    return out


# ---------------------------------------------------------------------------- EyePACS


@pytest.fixture(scope="module")
def eyepacs_by_target(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("decode-cache")  # the three targets decode the images once
    return {t: load_retinopathy("eyepacs", SHARED, target=t, img_size=32, max_images=300, seed=0, cache_dir=cache) for t in TARGETS}


@needs_eyepacs
def test_eyepacs_splits_are_patient_disjoint_and_labels_match_csv(eyepacs_by_target):
    truth = {row["image"]: row for row in _csv_rows()}
    for target, data in eyepacs_by_target.items():
        assert not data.synthetic and "labels.csv" in data.source
        splits = (data.train, data.val, data.test)
        assert sum(len(s) for s in splits) <= 300 and sum(len(s) for s in splits) > 250
        patients = [set(s.patients) for s in splits]
        assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
        for part in splits:
            assert part.images.dtype == torch.uint8 and part.images.shape[1:] == (3, 32, 32)
            for i, image_id in enumerate(part.ids):
                level = int(truth[image_id]["level"])
                expected = {"any": int(level > 0), "referable": int(level >= 2), "grade": level}[target]
                assert int(part.labels[i]) == expected, (target, image_id)
                assert int(part.grades[i]) == level
                assert part.patients[i] == truth[image_id]["patient"]
            assert min(part.class_counts(data.num_classes)) > 0
        # any patient in the subset brings all of its eyes that the CSV lists
        chosen = {i for s in splits for i in s.ids}
        eyes: dict[str, set[str]] = {}
        for row in truth.values():
            eyes.setdefault(row["patient"], set()).add(row["image"])
        assert all(eyes[truth[image_id]["patient"]] <= chosen for image_id in chosen)
    assert eyepacs_by_target["referable"].num_classes == 2 and eyepacs_by_target["grade"].num_classes == 5
    # the same seed gives the same split whatever the target
    assert eyepacs_by_target["any"].test.ids == eyepacs_by_target["grade"].test.ids


@needs_eyepacs
def test_eyepacs_decoded_pixels_match_pil(eyepacs_by_target):
    from PIL import Image

    data = eyepacs_by_target["referable"]
    image_id = data.train.ids[0]
    reference = np.asarray(Image.open(EYEPACS / "images" / f"{image_id}.jpeg").convert("RGB").resize((32, 32), Image.BOX))
    ours = data.train.images[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ours - reference).mean() < 2.0  # area resampling, up to rounding


@needs_eyepacs
def test_full_eyepacs_patient_split_proportions_and_strata():
    rows = _csv_rows()
    grades = np.array([int(r["level"]) for r in rows])
    patients = [r["patient"] for r in rows]
    parts = patient_split(grades, patients, (0.65, 0.15, 0.2), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(rows)))
    for part, share in zip(parts, (0.65, 0.15, 0.2)):
        assert abs(len(part) / len(rows) - share) < 0.01
        counts = np.bincount(grades[part], minlength=5)
        assert (counts > 0).all()
        assert abs(counts[2] / len(part) - 447 / 3000) < 0.02  # stratified
    sets = [{patients[i] for i in part} for part in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


@needs_eyepacs
def test_summary_is_json(eyepacs_by_target):
    import json

    summary = json.loads(json.dumps(eyepacs_by_target["grade"].summary()))
    assert summary["num_classes"] == 5 and summary["synthetic"] is False
    assert sum(s["n"] for s in summary["splits"].values()) == sum(sum(s["class_counts"]) for s in summary["splits"].values())


@needs_eyepacs
def test_kaggle_layout_loads(tmp_path):
    """trainLabels.csv with only image,level; images in resized_train/resized_train/, and a
    second (different) copy of some in resized_train_cropped/ that must not be picked."""
    by_grade = _patients_by_grade()
    patients = by_grade[0][:4] + by_grade[2][:2] + by_grade[1][:1] + by_grade[3][:1]
    root = tmp_path / "data" / "retinopathy" / "kaggle"
    primary = root / "resized_train" / "resized_train"
    cropped = root / "resized_train_cropped" / "resized_train_cropped"
    primary.mkdir(parents=True)
    cropped.mkdir(parents=True)
    truth = {row["image"]: int(row["level"]) for row in _csv_rows()}
    lines = ["image,level"]
    for patient in patients:
        for eye in ("left", "right"):
            name = f"{patient}_{eye}"
            lines.append(f"{name},{truth[name]}")
            shutil.copy(EYEPACS / "images" / f"{name}.jpeg", primary / f"{name}.jpeg")
    decoy = next(iter(truth))  # any real JPEG, different from the listed ones
    for name in lines[1:4]:
        shutil.copy(EYEPACS / "images" / f"{decoy}.jpeg", cropped / f"{name.split(',')[0]}.jpeg")
    (root / "trainLabels.csv").write_text("\n".join(lines) + "\n")

    assert resolve_source("kaggle", tmp_path / "data") == ("folder", root)
    assert resolve_source("auto", tmp_path / "data") == ("folder", root)
    data = load_retinopathy("kaggle", tmp_path / "data", target="any", img_size=32, seed=1)
    assert "trainLabels.csv" in data.source
    everything = [
        (image_id, patient, int(label), part.images[k])
        for part in (data.train, data.val, data.test)
        for k, (image_id, patient, label) in enumerate(zip(part.ids, part.patients, part.labels))
    ]
    assert len(everything) == 16
    for image_id, patient, label, pixels in everything:
        assert patient == image_id.rsplit("_", 1)[0]  # patient from the name
        assert label == int(truth[image_id] > 0)
        expected = decode_images([primary / f"{image_id}.jpeg"], 32, 3, None)[0]
        assert torch.equal(pixels, expected)  # the resized_train copy, not the decoy
    assert set(data.test.patients).isdisjoint(data.train.patients)


# ---------------------------------------------------------------------------- RetinaMNIST


@pytest.fixture(scope="module")
def retinamnist_file(tmp_path_factory) -> Path:
    """The real file when present, else a stand-in with the same keys, dtypes and sizes."""
    if RETINAMNIST.is_file():
        return RETINAMNIST
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 1080), ("val", 120), ("test", 400)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).reshape(n, 1).astype(np.uint8)
    path = tmp_path_factory.mktemp("retinamnist") / "retinamnist.npz"
    np.savez(path, **arrays)
    return path


def test_retinamnist_keeps_official_splits(retinamnist_file):
    data = load_retinopathy(str(retinamnist_file), SHARED, target="grade", img_size=32)
    assert (len(data.train), len(data.val), len(data.test)) == (1080, 120, 400)
    assert "official splits" in data.source and not data.synthetic
    with np.load(retinamnist_file) as raw:
        labels = raw["test_labels"][:, 0].astype(np.int64)
        first = torch.from_numpy(raw["test_images"][:4]).permute(0, 3, 1, 2).float()
    assert torch.equal(data.test.labels, torch.from_numpy(labels)) and torch.equal(data.test.grades, data.test.labels)
    assert data.test.images.shape == (400, 3, 32, 32) and data.test.images.dtype == torch.uint8
    expected = F.interpolate(first, size=(32, 32), mode="bilinear", align_corners=False).round()
    assert (data.test.images[:4].float() - expected).abs().max() <= 1
    assert len(set(data.train.patients)) == 1080  # each image its own patient
    referable = load_retinopathy(str(retinamnist_file), SHARED, target="referable", img_size=28)
    assert torch.equal(referable.test.labels, torch.from_numpy((labels >= 2).astype(np.int64)))


def test_retinamnist_named_source_and_subset(retinamnist_file, tmp_path):
    root = tmp_path / "data"
    (root / "retinopathy" / "retinamnist").mkdir(parents=True)
    shutil.copy(retinamnist_file, root / "retinopathy" / "retinamnist" / "retinamnist.npz")
    assert resolve_source("retinamnist", root)[0] == "npz"
    data = load_retinopathy("retinamnist", root, target="any", img_size=28, max_images=160, seed=2)
    assert (len(data.train), len(data.val), len(data.test)) == (108, 12, 40)


# ---------------------------------------------------------------------------- errors


def test_named_source_missing_says_where_and_how(tmp_path):
    for name in ("eyepacs", "kaggle", "retinamnist"):
        with pytest.raises(DataError, match="make data|labels.csv") as info:
            resolve_source(name, tmp_path)
        assert str(tmp_path / "retinopathy") in str(info.value)
    assert resolve_source("auto", tmp_path) == ("synthetic", None)
    with pytest.raises(DataError, match="auto, synthetic, eyepacs, kaggle, retinamnist"):
        resolve_source("no-such-thing", tmp_path)
    with pytest.raises(DataError, match="valid targets: any, referable, grade"):
        load_retinopathy("synthetic", tmp_path, target="severity")


def test_csv_missing_columns(tmp_path):
    folder = _write_folder(tmp_path / "f", "image,grade,patient", ["10_left,0,10"])
    with pytest.raises(DataError, match=r"labels.csv is missing required column\(s\) level"):
        load_retinopathy(str(folder), tmp_path, img_size=16)


@needs_eyepacs
def test_unknown_images_are_named(tmp_path):
    real = sorted((EYEPACS / "images").glob("*.jpeg"))[:2]
    rows = [f"{p.stem},0" for p in real] + [f"ghost{i}_left,0" for i in range(7)]
    folder = _write_folder(tmp_path / "f", "image,level", rows, {p.stem: p for p in real})
    with pytest.raises(DataError) as info:
        load_retinopathy(str(folder), tmp_path, img_size=16)
    message = str(info.value)
    assert "7 image(s) listed in" in message and "'ghost0_left'" in message and "'ghost4_left'" in message
    assert "ghost5_left" not in message and "..." in message  # at most five names


def test_bad_level_names_row_and_value(tmp_path):
    folder = _write_folder(tmp_path / "f", "image,level", ["1_left,0", "1_right,7", "2_left,x"])
    with pytest.raises(DataError, match=r"labels.csv row 2 \(line 3\): level '7' of image '1_right'"):
        load_retinopathy(str(folder), tmp_path, img_size=16)
    folder = _write_folder(tmp_path / "g", "image,level", ["1_left,0", "1_right,1.5"])
    with pytest.raises(DataError, match=r"row 2 .*level '1.5'.*0..4"):
        load_retinopathy(str(folder), tmp_path, img_size=16)


@needs_eyepacs
def test_truncated_jpeg_names_the_file(tmp_path):
    real = sorted((EYEPACS / "images").glob("*.jpeg"))[:4]
    folder = _write_folder(tmp_path / "f", "image,level", [f"{p.stem},0" for p in real], {p.stem: p for p in real})
    broken = folder / "images" / f"{real[2].stem}.jpeg"
    broken.write_bytes(real[2].read_bytes()[: real[2].stat().st_size // 2])
    with pytest.raises(DataError, match=rf"cannot decode image .*{real[2].stem}\.jpeg.*truncated"):
        load_retinopathy(str(folder), tmp_path, img_size=16)
    with pytest.raises(DataError, match=rf"{real[2].stem}\.jpeg"):
        decode_images([folder / "images" / f"{p.stem}.jpeg" for p in real], 16, 3, None)


@needs_eyepacs
def test_class_missing_from_a_split_is_named(tmp_path):
    by_grade = _patients_by_grade()
    patients = by_grade[0][:8] + by_grade[2][:1]  # one referable patient: two splits lack class 1
    rows, files = [], {}
    for patient in patients:
        for eye in ("left", "right"):
            name = f"{patient}_{eye}"
            rows.append(f"{name},{2 if patient in by_grade[2] else 0}")
            files[name] = EYEPACS / "images" / f"{name}.jpeg"
    folder = _write_folder(tmp_path / "f", "image,level", rows, files)
    with pytest.raises(DataError, match=r"the (val|test) split \(\d+ images\) has no images of class 1 \('referable'\)"):
        load_retinopathy(str(folder), tmp_path, target="referable", img_size=16)


# ---------------------------------------------------------------------------- decode cache


@needs_eyepacs
def test_decode_cache_hit_returns_identical_tensor(tmp_path, monkeypatch):
    files = sorted((EYEPACS / "images").glob("*.jpeg"))[:12]
    first = decode_images(files, 24, 3, tmp_path)
    cached = list(tmp_path.glob("*.safetensors"))
    assert len(cached) == 1 and not list(tmp_path.glob("*.pkl"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("cache miss: images decoded again")

    monkeypatch.setattr(images_module, "_decode_all", no_decoding)
    assert torch.equal(decode_images(files, 24, 3, tmp_path), first)
    with pytest.raises(AssertionError, match="cache miss"):  # another size is another key
        decode_images(files, 20, 3, tmp_path)
    monkeypatch.undo()
    grey = decode_images(files[:2], 24, 1, None)
    assert grey.shape == (2, 1, 24, 24) and grey.dtype == torch.uint8


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_fundus_is_deterministic_and_paired():
    a_images, a_grades, a_patients = make_synthetic_fundus(40, 48, seed=5)
    b_images, b_grades, b_patients = make_synthetic_fundus(40, 48, seed=5)
    assert torch.equal(a_images, b_images) and torch.equal(a_grades, b_grades) and a_patients == b_patients
    assert not torch.equal(make_synthetic_fundus(40, 48, seed=6)[0], a_images)
    assert a_images.shape == (40, 3, 48, 48) and a_images.dtype == torch.uint8 and a_grades.dtype == torch.int64
    assert all(a_patients.count(p) == 2 for p in a_patients)  # two eyes per patient
    assert int(a_images[:, :, 0, 0].max()) < 40  # black corners: a fundus on a black background
    centre = a_images[:, :, 18:30, 18:30].float().mean(dim=(0, 2, 3))
    assert centre[0] > centre[1] > centre[2]  # orange-red
    assert set(fundus_sites(a_patients)) <= {"site-a", "site-b", "site-c"}


def test_synthetic_fundus_lesions_increase_with_grade():
    _, grades, _ = make_synthetic_fundus(400, 16, seed=3)
    counts = torch.bincount(grades, minlength=5).numpy() / 400
    assert np.abs(counts - np.asarray(GRADE_MIX)).max() < 0.01  # roughly the EyePACS mix
    # The same eyes (same seed) rendered at every grade differ only in their lesions.
    n = 40
    healthy = _render(np.zeros(n, dtype=np.int64), 64, seed=11).astype(np.int16)
    lesion_pixels = []
    for grade in range(5):
        eyes = _render(np.full(n, grade), 64, seed=11).astype(np.int16)
        lesion_pixels.append(float((np.abs(eyes - healthy).max(axis=1) > 25).sum() / n))
    assert lesion_pixels[0] == 0.0
    assert all(a < b for a, b in zip(lesion_pixels, lesion_pixels[1:])), lesion_pixels
    assert lesion_pixels[4] > 30  # visible at 64 px, yet a small part of the 3,000-pixel fundus


def test_synthetic_referable_dr_is_visible_at_64px_but_not_trivial():
    # The default `make retinopathy` trains at 64 px in minutes, so referable lesions must show
    # at that size (the first generator's did not: this score was 0.56 and nothing was learned),
    # while look-alikes keep a one-feature rule from solving the task.
    from sklearn.metrics import roc_auc_score

    images, grades, _ = make_synthetic_fundus(600, 64, seed=0)
    r, g, b = (images.float() / 255).unbind(1)
    yellow_pixels = ((r > 0.7) & (g > 0.55) & (b < 0.35)).sum(dim=(1, 2)).numpy()
    auc = roc_auc_score((grades >= 2).numpy(), yellow_pixels)
    assert 0.65 < auc < 0.95, auc


def test_synthetic_source_is_the_default(tmp_path):
    data = load_retinopathy("auto", tmp_path, target="grade", img_size=32, synthetic_size=200, seed=4)
    assert data.synthetic and "synthetic" in data.source
    assert len(data.train) + len(data.val) + len(data.test) == 200
    assert set(data.train.patients).isdisjoint(data.test.patients) and set(data.val.patients).isdisjoint(data.test.patients)
    assert data.train.groups is not None and len(data.train.groups) == len(data.train)
    again = load_retinopathy("synthetic", tmp_path, target="grade", img_size=32, synthetic_size=200, seed=4)
    assert torch.equal(again.test.images, data.test.images)


def test_imageset_subset_and_counts():
    images, grades, patients = make_synthetic_fundus(10, 16, seed=0)
    full = ImageSet(images, grades.clone(), [f"i{k}" for k in range(10)], patients, grades)
    part = full.subset(np.array([1, 3, 5]))
    assert len(part) == 3 and part.ids == ["i1", "i3", "i5"] and torch.equal(part.images[1], images[3])
    assert full.subset(torch.arange(10) < 2).ids == ["i0", "i1"]
    assert sum(full.class_counts(5)) == 10
    with pytest.raises(DataError, match="num_classes=2"):
        ImageSet(images, grades + 2, full.ids, patients).class_counts(2)
    with pytest.raises(DataError, match="uint8"):
        ImageSet(images.float(), grades, full.ids, patients)


def test_kaggle_download_without_credentials_says_what_to_do(tmp_path, monkeypatch):
    from medsplit.data.download import download_kaggle_retinopathy

    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    with pytest.raises(DataError, match=r"no Kaggle credentials: .*kaggle.json.*KAGGLE_USERNAME and KAGGLE_KEY.*make data"):
        download_kaggle_retinopathy(tmp_path / "data")
