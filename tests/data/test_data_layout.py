"""The data layer's architecture rules: one module touches the network, one image-size bound for
the config and every loader, one data-root default, one base for both kinds of image set."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import medsplit.data
from medsplit.config import Config, ConfigError, validate
from medsplit.data.images import DataError, ImageSet
from medsplit.data.lungs import SegmentationSet, load_lungs
from medsplit.data.retinopathy import load_retinopathy

DATA_PACKAGE = Path(medsplit.data.__file__).parent
NETWORK_MODULES = ("urllib", "http", "socket", "requests", "kaggle", "ftplib")


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_only_the_download_module_imports_network_code() -> None:
    # The package docstring promises it: loading data never touches the network.
    offenders = {}
    for path in sorted(DATA_PACKAGE.glob("*.py")):
        network = {m for m in _imported_modules(path) if m.split(".")[0] in NETWORK_MODULES}
        if network and path.name != "download.py":
            offenders[path.name] = sorted(network)
    assert offenders == {}
    assert "kaggle.api.kaggle_api_extended" in _imported_modules(DATA_PACKAGE / "download.py")


@pytest.mark.parametrize("loader", ["lungs", "retinopathy"])
def test_every_loader_refuses_an_image_size_below_the_config_bound(tmp_path, loader: str) -> None:
    cfg = Config()
    cfg.data.img_size = 15
    with pytest.raises(ConfigError, match=r"'data.img_size' = 15 must be >= 16"):
        validate(cfg)
    # Loaders called directly (tests, the attack harness) apply the same bound, before any work.
    load = {"lungs": lambda: load_lungs("synthetic", tmp_path, img_size=15, synthetic_size=20),
            "retinopathy": lambda: load_retinopathy("synthetic", tmp_path, img_size=15, synthetic_size=20)}[loader]
    with pytest.raises(DataError, match=r"img_size must be at least 16 pixels, got 15"):
        load()


def test_the_data_root_defaults_to_medsplit_data(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MEDSPLIT_DATA", str(tmp_path))
    assert Config().data_root() == tmp_path
    monkeypatch.delenv("MEDSPLIT_DATA")
    assert Config().data_root() == Path("datasets")
    cfg = Config()
    cfg.data.root = "elsewhere"
    assert cfg.data_root() == Path("elsewhere")


def _classification_set(n: int) -> ImageSet:
    ids = [f"img{i}" for i in range(n)]
    return ImageSet(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(),
                    torch.arange(n) % 2, ids, [f"p{i // 2}" for i in range(n)], None, [f"g{i % 3}" for i in range(n)])


def _segmentation_set(n: int) -> SegmentationSet:
    base = _classification_set(n)
    return SegmentationSet(base.images, (base.images > 2).to(torch.uint8), base.ids, base.groups, base.patients)


@pytest.mark.parametrize("make", [_classification_set, _segmentation_set])
def test_both_image_sets_subset_rows_the_same_way(make) -> None:
    full = make(6)
    by_position = full.subset([4, 1])
    by_mask = full.subset(torch.tensor([False, True, False, False, True, False]))
    assert type(by_position) is type(full) and len(by_position) == 2
    assert by_position.ids == ["img4", "img1"] and by_mask.ids == ["img1", "img4"]
    assert by_position.patients == ["p2", "p0"] and by_position.groups == ["g1", "g1"]
    assert by_position.images[:, 0, 0, 0].tolist() == [4, 1]
    with pytest.raises(DataError, match="subset index out of range"):
        full.subset([6])
    with pytest.raises(DataError, match="boolean mask of shape"):
        full.subset(torch.ones(5, dtype=torch.bool))
