"""Inputs users really have (issue 15, items 8-11): 16-bit X-rays, the same image under two
names, greyscale or RGBA photographs among RGB ones, a Latin-1 CSV. Fixtures are tiny images
generated in tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsplit.data.images import DataError, decode_images
from medsplit.data.lungs import load_lungs
from medsplit.data.retinopathy import load_retinopathy


def _lung_folder(root: Path, n: int = 12, bits: int = 8) -> Path:
    """images/ + masks/ of ``n`` random 32x32 chest-X-ray stand-ins (16-bit: values 1000..4000)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        if bits == 16:
            image = rng.integers(1000, 4001, (32, 32)).astype(np.uint16)
        else:
            image = rng.integers(0, 256, (32, 32)).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"cxr{i:02d}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 4 + i % 4: 14 + i % 4] = 255
        Image.fromarray(mask).save(root / "masks" / f"cxr{i:02d}.png")
    return root


def _fundus_folder(root: Path, n_patients: int = 20, modes: dict[str, str] | None = None) -> Path:
    """labels.csv + images/: two eyes per patient, grade 0 or 2 by patient; ``modes`` saves some
    images (by name) greyscale or RGBA, as PNG."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    rows = ["image,level"]
    for p in range(n_patients):
        for eye in ("left", "right"):
            name = f"{p}_{eye}"
            rows.append(f"{name},{2 * (p % 2)}")
            pixels = rng.integers(0, 256, (24, 24, 3)).astype(np.uint8)
            mode = (modes or {}).get(name, "RGB")
            image = Image.fromarray(pixels).convert(mode)
            image.save(root / "images" / f"{name}.{'png' if mode != 'RGB' else 'jpeg'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


# --- item 8: 16-bit images -----------------------------------------------------------------

def test_16bit_png_is_stretched_not_clipped_white(tmp_path):
    """PIL's convert('L') clipped 16-bit values at 255: lung images became all white and the run exited 0."""
    folder = _lung_folder(tmp_path / "set16", bits=16)
    data = load_lungs(str(folder), tmp_path, img_size=32, seed=0, cache_dir=None)
    images = np.concatenate([s.images.numpy() for s in (data.train, data.val, data.test)])
    assert not (images == 255).all(axis=(1, 2, 3)).any(), "an image decoded all white"
    assert images.min() == 0 and images.max() == 255 and 100 < images.mean() < 155  # min..max stretched
    # the decoded pixels are the file's own min..max mapped onto 0..255
    raw = np.asarray(Image.open(folder / "images" / "cxr00.png"), dtype=np.float64)
    expected = np.round((raw - raw.min()) / (raw.max() - raw.min()) * 255)
    got = decode_images([folder / "images" / "cxr00.png"], 32, 1, None)[0, 0].numpy()
    assert np.array_equal(got, expected.astype(np.uint8))
    assert data.summary()["converted_images"] == {"to": "L", "from_modes": {Image.open(folder / "images" / "cxr00.png").mode: 12}}


# --- item 9: duplicates --------------------------------------------------------------------

def test_duplicate_lung_image_stops_naming_both_files_or_is_dropped(tmp_path):
    folder = _lung_folder(tmp_path / "dup")
    shutil.copy(folder / "images" / "cxr03.png", folder / "images" / "zz_copy.png")
    shutil.copy(folder / "masks" / "cxr03.png", folder / "masks" / "zz_copy.png")
    with pytest.raises(DataError, match=rf"images {folder / 'images' / 'cxr03.png'} and {folder / 'images' / 'zz_copy.png'} "
                                        r"have identical content.*data.duplicates=drop"):
        load_lungs(str(folder), tmp_path, img_size=32, seed=0)
    data = load_lungs(str(folder), tmp_path, img_size=32, seed=0, duplicates="drop")
    ids = [i for s in (data.train, data.val, data.test) for i in s.ids]
    assert sorted(ids) == [f"cxr{i:02d}" for i in range(12)]
    assert data.summary()["duplicates_dropped"] == [{"kept": str(folder / "images" / "cxr03.png"),
                                                     "dropped": str(folder / "images" / "zz_copy.png")}]


def test_duplicate_fundus_photograph_stops_naming_both_files(tmp_path):
    folder = _fundus_folder(tmp_path / "f")
    shutil.copy(folder / "images" / "3_left.jpeg", folder / "images" / "8_right.jpeg")  # same photo, two patients
    with pytest.raises(DataError, match=r"images .*3_left.jpeg and .*8_right.jpeg have identical content"):
        load_retinopathy(str(folder), tmp_path, img_size=16)
    data = load_retinopathy(str(folder), tmp_path, img_size=16, duplicates="drop")
    assert sum(len(s) for s in (data.train, data.val, data.test)) == 39
    assert [d["dropped"] for d in data.summary()["duplicates_dropped"]] == [str(folder / "images" / "8_right.jpeg")]


# --- item 10: greyscale / RGBA among RGB ---------------------------------------------------------

def test_greyscale_and_rgba_fundus_images_are_converted_and_counted(tmp_path):
    folder = _fundus_folder(tmp_path / "f", modes={"1_left": "L", "2_right": "L", "5_left": "RGBA"})
    data = load_retinopathy(str(folder), tmp_path, img_size=16, cache_dir=tmp_path / "cache")
    assert data.summary()["converted_images"] == {"to": "RGB", "from_modes": {"L": 2, "RGBA": 1}}
    assert data.train.images.shape[1] == 3
    again = load_retinopathy(str(folder), tmp_path, img_size=16, cache_dir=tmp_path / "cache")  # from the cache
    assert again.summary()["converted_images"] == data.summary()["converted_images"]
    plain = load_retinopathy(str(_fundus_folder(tmp_path / "g")), tmp_path, img_size=16)
    assert "converted_images" not in plain.summary()


# --- item 11: CSV encoding ---------------------------------------------------------------------

def test_latin1_csv_names_the_file_and_the_encoding(tmp_path):
    folder = _fundus_folder(tmp_path / "f")
    text = (folder / "labels.csv").read_text().replace("image,level", "image,level,clinic")
    lines = text.splitlines()
    lines = [lines[0]] + [line + ",Hôpital Saint-Éloi" for line in lines[1:]]
    (folder / "labels.csv").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=rf"{folder / 'labels.csv'} is not UTF-8 text \(byte 0xf4 at position \d+ cannot be decoded\); "
                                        r"save it as UTF-8"):
        load_retinopathy(str(folder), tmp_path, img_size=16)


def test_latin1_lung_manifest_names_the_file(tmp_path):
    folder = _lung_folder(tmp_path / "set")
    rows = ["stem,source"] + [f"cxr{i:02d},Clínica" for i in range(12)]
    (folder / "manifest.csv").write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=rf"{folder / 'manifest.csv'} is not UTF-8 text"):
        load_lungs(str(folder), tmp_path, img_size=32, seed=0)
