"""Combined lung sources such as ``covid-cxr-v7+shenzhen``: several sets, one per site, pooled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from medsplit.data.errors import DataError
from medsplit.data.sets import SegmentationData, SegmentationSet

__all__ = ["combined_sites", "combine_sites"]


def combined_sites(data: str, data_root: Path) -> list[str]:
    """The set names in a combined source such as ``covid-cxr-v7+shenzhen``; ``[]`` for one set.

    A folder that exists under that exact name (``+`` in a path) is one set, not a combination.

    Args:
        data: the ``data.source`` value.
        data_root: the data folder holding ``lungs/``.

    Raises:
        DataError: an empty name (``a++b``), a repeated set, or ``auto``/``synthetic`` inside a combination.
    """
    if "+" not in data or (Path(data_root) / "lungs" / data).is_dir() or Path(data).expanduser().is_dir():
        return []
    sites = [s.strip() for s in data.split("+")]
    if any(not s for s in sites):
        raise DataError(f"lung data {data!r}: a combined source names sets joined by '+', e.g. covid-cxr-v7+shenzhen; one name is empty")
    if len(set(sites)) != len(sites):
        raise DataError(f"lung data {data!r} names the same set twice")
    for s in sites:
        if s in ("auto", "synthetic"):
            raise DataError(f"lung data {data!r}: {s!r} cannot be part of a combined source; name real sets (folders under {Path(data_root) / 'lungs'})")
    return sites


def combine_sites(parts: list[SegmentationData], seed: int, max_images: int | None) -> SegmentationData:
    """Pool sets split one by one: each site keeps its own patient-level train/val/test split
    (so each site's test split can be scored on its own) and every image's group is its set name,
    which ``data.partition=group`` turns into one hospital per site.

    Args:
        parts: each site's loaded and split set.
        seed: seeds the ``max_images`` subset.
        max_images: keep about this many images in all, the same share of every split.
    """
    def site_rows(name: str) -> list[SegmentationSet]:
        out = []
        for d in parts:
            s = getattr(d, name)
            out.append(SegmentationSet(s.images, s.masks, list(s.ids), [d.source] * len(s),
                                       [f"{d.source}/{p}" for p in (s.patients or s.ids)]))
        return out

    def concat(sets: list[SegmentationSet]) -> SegmentationSet:
        return SegmentationSet(torch.cat([s.images for s in sets]), torch.cat([s.masks for s in sets]),
                               [i for s in sets for i in s.ids], [g for s in sets for g in s.groups],
                               [p for s in sets for p in (s.patients or [])])

    splits = {name: concat(site_rows(name)) for name in ("train", "val", "test")}
    all_ids = [i for s in splits.values() for i in s.ids]
    clash = [i for i, n in Counter(all_ids).items() if n > 1]
    if clash:
        raise DataError(f"sets {[d.source for d in parts]} share image stems (e.g. {clash[0]!r}); rename the files of one set")
    if max_images is not None:
        # the same seeded share of every split, so a quick run keeps every site in every split
        total = sum(len(s) for s in splits.values())
        rng = np.random.default_rng(seed)
        for name, s in splits.items():
            keep = max(2, round(len(s) * max_images / total)) if max_images < total else len(s)
            if keep < len(s):
                splits[name] = s.subset(np.sort(rng.choice(len(s), size=keep, replace=False)))
    source = "+".join(d.source for d in parts)
    info = {"image_size": parts[0].info.get("image_size"), "sites": {d.source: {k: v for k, v in d.info.items() if k != "image_size"} for d in parts}}
    # millimetres only where every site knows its spacing: one run never mixes mm and pixels
    known = [d.spacing for d in parts]
    spacing = None if any(s is None for s in known) else {i: v for s in known for i, v in s.items()}
    return SegmentationData(splits["train"], splits["val"], splits["test"], source, False, info, spacing)
