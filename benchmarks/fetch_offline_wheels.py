"""Wheels for an air-gapped GPU host: what medsplit needs beyond the host's own PyTorch stack.

A typical hospital GPU machine has a site-managed PyTorch (2.11, CUDA 13), torchvision 0.26,
timm, torchmetrics, scikit-learn, scipy, tensorboard, safetensors and Pillow (with their own
dependencies), no MONAI, segmentation-models-pytorch, opacus, albumentations or nibabel, and no
network. Run this here (it needs PyPI) to download the missing wheels into a git-ignored folder,
carry that folder to the host, and ``benchmarks/gpu_suite.sh`` installs whichever of them the
host lacks with ``pip install --no-index --no-deps --target`` before its first step.

    python benchmarks/fetch_offline_wheels.py                      # CPython 3.12, manylinux x86-64
    python benchmarks/fetch_offline_wheels.py --python-version 3.11 --with-albumentations
    python benchmarks/fetch_offline_wheels.py --list-missing offline-wheels/cp312   # (the suite's)

What is fetched: every package in the closure of medsplit's runtime requirements that is not in
the closure of the host's packages above, at the versions of requirements.lock (read from this
environment), pure-Python or manylinux x86-64 wheels only, without dependencies of their own
(``--no-deps``: the closure is computed here). Left out:

* kaggle and what only it needs: downloading data is impossible offline anyway;
* albumentations (with albucore, pydantic, simsimd, stringzilla and opencv-python-headless,
  57 MB alone) unless ``--with-albumentations``: it is only ``data.aug_backend=albumentations``,
  an alternative to the default MONAI augmentation, and with OpenCV the folder no longer fits
  the device's 64 MiB carry.

The folder gets a ``manifest.json`` (python version, platforms, every wheel with its size, the
total) and the script prints the total in MiB.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What the site-managed host has (the issue's survey of such hosts); their dependencies come along.
HOST_PACKAGES = ("torch", "torchvision", "timm", "torchmetrics", "scikit-learn", "scipy", "tensorboard",
                 "safetensors", "pillow")
#: Needed only to download data (``medsplit data``), which an offline host cannot do.
DOWNLOAD_ONLY = ("kaggle",)
#: The optional augmentation backend and what only it needs (OpenCV is most of the size).
ALBUMENTATIONS = ("albumentations",)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")


def canonicalize_name(name: str) -> str:
    """PEP 503's normal form (``Segmentation_Models.PyTorch`` -> ``segmentation-models-pytorch``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_project(filename: str) -> str:
    """The canonical project name of a wheel file (the part before the first ``-``, PEP 427)."""
    return canonicalize_name(filename.split("-", 1)[0])


def closure(roots: list[str], python_version: str) -> set[str]:
    """Canonical names of ``roots`` and everything they require (no extras), from the installed
    distributions' metadata, with markers evaluated for ``python_version`` on Linux."""
    from packaging.requirements import Requirement  # here only: --list-missing runs on the bare host

    env = {"python_version": python_version, "python_full_version": f"{python_version}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    seen: set[str] = set()
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"fetch_offline_wheels: {name} is not installed here; run this from the project venv "
                             "(make setup), whose versions are requirements.lock's") from None
        seen.add(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))
    return seen


def wanted(python_version: str, with_albumentations: bool) -> dict[str, str]:
    """``{name: version}`` of the packages the host lacks, at this environment's versions."""
    from packaging.requirements import Requirement

    needs = [Requirement(r).name for r in metadata.requires("medsplit") or [] if "extra ==" not in r]
    leave_out = closure(list(DOWNLOAD_ONLY), python_version)
    if not with_albumentations:
        leave_out |= closure(list(ALBUMENTATIONS), python_version)
    host = closure(list(HOST_PACKAGES), python_version)
    own = closure([n for n in needs if canonicalize_name(n) not in leave_out], python_version)
    missing = own - host - {"medsplit"}
    return {name: metadata.version(name) for name in sorted(missing)}


def fetch(dest: Path, python_version: str, with_albumentations: bool) -> dict:
    packages = wanted(python_version, with_albumentations)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):  # a folder holds one set: a version bump must not leave two
        old.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "--dest", str(dest),
           *(f"--platform={p}" for p in PLATFORMS), *(f"{n}=={v}" for n, v in packages.items())]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"))
    got = {wheel_project(w.name) for w in wheels}
    if got != set(packages):
        raise SystemExit(f"fetch_offline_wheels: expected {sorted(packages)}, got {sorted(got)}")
    total = sum(w.stat().st_size for w in wheels)
    manifest = {"python_version": python_version, "platforms": list(PLATFORMS), "host_packages": list(HOST_PACKAGES),
                "with_albumentations": with_albumentations,
                "wheels": {w.name: w.stat().st_size for w in wheels}, "total_bytes": total,
                "total_MiB": round(total / 2**20, 1)}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def list_missing(folder: Path) -> list[Path]:
    """The wheels of ``folder`` whose distribution this interpreter does not have (what the GPU
    suite installs; a package the host already has is left as the site installed it)."""
    missing = []
    for wheel in sorted(folder.glob("*.whl")):
        try:
            metadata.distribution(wheel_project(wheel.name))
        except metadata.PackageNotFoundError:
            missing.append(wheel)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-version", default="3.12", help="the host's CPython, MAJOR.MINOR (default 3.12)")
    parser.add_argument("--dest", type=Path, default=None,
                        help="folder for the wheels (default offline-wheels/cpXY at the top of the checkout, git-ignored)")
    parser.add_argument("--with-albumentations", action="store_true",
                        help="also fetch albumentations and OpenCV (about 65 MB more; see the module docstring)")
    parser.add_argument("--list-missing", type=Path, metavar="FOLDER",
                        help="print the wheels of FOLDER this interpreter lacks, one path a line, and exit")
    args = parser.parse_args(argv)
    if args.list_missing:
        print("\n".join(str(w) for w in list_missing(args.list_missing)))
        return 0
    dest = args.dest or REPO / "offline-wheels" / f"cp{args.python_version.replace('.', '')}"
    manifest = fetch(dest, args.python_version, args.with_albumentations)
    for name, size in manifest["wheels"].items():
        print(f"  {size / 2**20:6.2f} MiB  {name}")
    print(f"{len(manifest['wheels'])} wheels, {manifest['total_MiB']} MiB in all, in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
