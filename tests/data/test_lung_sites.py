"""A lung federation of two real sites: ``data.source=covid-cxr-v7+shenzhen`` pools the folders,
each split by patient on its own, with the site as every image's group, and a run scores the
test split per site as well as pooled."""

import json

import pytest

from medsplit.config import load_config
from medsplit.data.lungs import DataError, combined_sites, load_lungs
from medsplit.data.partition import partition
from medsplit.train.loop import train

SITES = "covid-cxr-v7+shenzhen"


@pytest.mark.slow
def test_combined_source_keeps_each_sites_own_split_and_names_the_site(shared_data, tmp_path) -> None:
    both = load_lungs(SITES, shared_data, img_size=32, seed=3, cache_dir=tmp_path)
    assert both.source == SITES and not both.synthetic
    for name in ("train", "val", "test"):
        assert set(getattr(both, name).groups) == {"covid-cxr-v7", "shenzhen"}
    for site in ("covid-cxr-v7", "shenzhen"):
        alone = load_lungs(site, shared_data, img_size=32, seed=3, cache_dir=tmp_path)
        for name in ("train", "val", "test"):
            pooled = getattr(both, name)
            rows = [i for i, g in enumerate(pooled.groups) if g == site]
            # the same patient-level, seeded split as the site loaded alone, image for image
            assert [pooled.ids[i] for i in rows] == getattr(alone, name).ids
            assert bool((pooled.images[rows] == getattr(alone, name).images).all())
    patients = {name: set(getattr(both, name).patients) for name in ("train", "val", "test")}
    assert not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])
    # another seed gives another split within each site
    other = load_lungs(SITES, shared_data, img_size=32, seed=4, cache_dir=tmp_path)
    assert other.test.ids != both.test.ids


@pytest.mark.slow
def test_group_partition_makes_one_hospital_per_site(shared_data, tmp_path) -> None:
    train_set = load_lungs(SITES, shared_data, img_size=32, seed=0, cache_dir=tmp_path).train
    import numpy as np

    parts = partition(np.zeros(len(train_set), dtype=np.int64), 2, scheme="group", seed=0,
                      groups=train_set.groups, patients=train_set.patients)
    held = sorted(sorted({train_set.groups[i] for i in p}) for p in parts)
    assert held == [["covid-cxr-v7"], ["shenzhen"]]


@pytest.mark.parametrize("bad, message", [("covid-cxr-v7++shenzhen", "empty"), ("shenzhen+shenzhen", "twice"),
                                          ("synthetic+shenzhen", "cannot be part"), ("covid-cxr-v7+nowhere", "nowhere")])
def test_bad_combined_sources_are_named(shared_data, bad, message) -> None:
    with pytest.raises(DataError, match=message):
        load_lungs(bad, shared_data, img_size=32)


def test_one_set_is_not_a_combination(shared_data) -> None:
    assert combined_sites("shenzhen", shared_data) == []
    assert combined_sites(SITES, shared_data) == ["covid-cxr-v7", "shenzhen"]


@pytest.mark.slow
def test_a_two_site_run_reports_test_dice_per_site_and_pooled(shared_data, tmp_path) -> None:
    cfg = load_config(None, [
        "task=lungs", f"data.source={SITES}", f"data.root={shared_data}", "data.img_size=32", "data.max_images=96",
        "data.partition=group", "model.name=unet-classic", "model.base_channels=4", "train.epochs=1",
        "train.batch_size=8", "output.tensorboard=false", f"output.runs_dir={tmp_path}/runs",
        f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache",
    ])
    m = json.loads((train(cfg, quiet=True) / "metrics.json").read_text())
    by_site = m["test_by_group"]
    assert set(by_site) == {"covid-cxr-v7", "shenzhen"}
    assert sum(s["n"] for s in by_site.values()) == m["test"]["n"]
    # the pooled mean Dice is the image-weighted mean of the per-site ones
    pooled = sum(s["dice"]["mean"] * s["n"] for s in by_site.values()) / m["test"]["n"]
    assert m["test"]["dice"]["mean"] == pytest.approx(pooled, abs=1e-9)
    # one hospital holds covid-cxr-v7 only, the other shenzhen only
    assert sorted(sorted(c["groups"]) for c in m["data"]["clients"]) == [["covid-cxr-v7"], ["shenzhen"]]
