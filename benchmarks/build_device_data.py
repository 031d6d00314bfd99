"""Build the small data folder that travels with the repository to a lent GPU machine.

    python benchmarks/build_device_data.py                     # ../shared/data -> device-data/ (git-ignored)
    python benchmarks/build_device_data.py --images 32 --out /tmp/dd   # what the suite's --dry-run uses

A lent machine receives the working tree plus at most 64 MiB of extra files and can reach
nothing else, so the GPU suite's data is re-encoded here: a seeded, patient-level subset of
EyePACS (``retinopathy/eyepacs256``: whole patients, both eyes, graded images of every level
kept in proportion) as 256 px JPEG at ``--quality``, and the lung set ``covid-cxr-v7`` copied
as is (5.5 MB). The layout is the one ``data.root`` expects, so the suite points
``data.root`` / ``--data-root`` at the folder. Stops with an error when the result exceeds
``--max-mib``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LUNG_SET = "covid-cxr-v7"


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def build(source: Path, out: Path, images: int, quality: int, seed: int = 0) -> dict:
    """Write the subset into ``out`` (replacing what a previous build left) and describe it.

    Args:
        source: the shared data folder (holding ``retinopathy/eyepacs256`` and ``lungs/``).
        out: the folder to fill.
        images: about how many EyePACS images to keep (whole patients, so a few more or less).
        quality: JPEG quality of the re-encoded fundus images.
        seed: which patients are drawn.
    """
    from PIL import Image

    src = source / "retinopathy" / "eyepacs256"
    labels = src / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels} not found: pass --source, the folder holding retinopathy/eyepacs256")
    rows = list(csv.DictReader(labels.open(newline="")))
    patients: dict[str, list[dict]] = {}
    for r in rows:
        patients.setdefault(r["patient"], []).append(r)
    order = np.random.default_rng(seed).permutation(sorted(patients))
    kept: list[dict] = []
    for p in order:
        if len(kept) >= images:
            break
        kept.extend(patients[str(p)])
    if out.exists():
        shutil.rmtree(out)
    dst = out / "retinopathy" / "eyepacs256"
    (dst / "images").mkdir(parents=True)
    with (dst / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in kept:
            name = Path(r["file"]).with_suffix(".jpeg").name
            with Image.open(src / r["file"]) as im:
                im.convert("RGB").save(dst / "images" / name, "JPEG", quality=quality)
            w.writerow({**r, "file": f"images/{name}"})
    shutil.copytree(source / "lungs" / LUNG_SET, out / "lungs" / LUNG_SET)
    grades = np.bincount([int(r["level"]) for r in kept], minlength=5).tolist()
    return {"out": str(out), "eyepacs_images": len(kept), "eyepacs_grades": grades, "lung_set": LUNG_SET,
            "mib": round(folder_mib(out), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "device-data"))
    ap.add_argument("--images", type=int, default=1500, help="EyePACS images to keep (whole patients)")
    ap.add_argument("--quality", type=int, default=85)
    ap.add_argument("--max-mib", type=float, default=60.0, help="fail above this size (the device carry is 64 MiB in all)")
    args = ap.parse_args(argv)
    info = build(Path(args.source), Path(args.out), args.images, args.quality)
    print(f"{info['out']}: {info['eyepacs_images']} EyePACS images (grades {info['eyepacs_grades']}) + lungs/{LUNG_SET}, "
          f"{info['mib']} MiB")
    if info["mib"] > args.max_mib:
        print(f"build_device_data: {info['mib']} MiB exceeds --max-mib {args.max_mib}; pass fewer --images or a lower --quality",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
