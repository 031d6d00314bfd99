"""Packaging (issue 29 items 2 and 3): dependency ranges with an exact lock, configs shipped in the
package, `make setup` keyed on content, and the GPU suite's offline wheels installing into a clean
--target from which medsplit's dependencies import beside this environment's torch.

The wheel itself is built, installed outside the checkout and run by .ci/wheel_check.sh (CI)."""

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ROOT / "offline-wheels" / f"cp{sys.version_info[0]}{sys.version_info[1]}"


def _fetcher():
    spec = importlib.util.spec_from_file_location("fetch_offline_wheels", ROOT / "benchmarks" / "fetch_offline_wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_dependencies_are_ranges_and_the_lock_pins_each_of_them():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower(): d for d in project["dependencies"]}
    assert deps["torch"] == "torch>=2.11" and deps["torchvision"] == "torchvision>=0.26"
    assert deps["segmentation-models-pytorch"] == "segmentation-models-pytorch>=0.5"  # the decoder API medsplit cuts
    assert not [d for d in deps.values() if "==" in d], "a pinned dependency keeps medsplit out of other environments"
    pins = _lock()
    assert not [n for n in deps if re.sub(r"[-_.]+", "-", n) not in pins], "every dependency has an exact version"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # what CI's wheel cache holds
    assert "medsplit" not in pins


def test_the_environment_matches_the_lock():
    """The lock is this environment's `pip freeze`: a dependency bumped without `make lock` fails."""
    from importlib.metadata import version

    stale = {name: (pin, version(name)) for name, pin in _lock().items()
             if name in {"torch", "torchvision", "monai", "segmentation-models-pytorch", "opacus", "numpy"}
             and version(name).split("+")[0] != pin}
    assert not stale, f"requirements.lock differs from the installed versions: {stale}; run make lock"


def test_configs_are_package_data_and_the_top_level_folder_links_there():
    from medsplit.config import load_config
    from medsplit.config.loading import SHIPPED_CONFIGS, shipped_config_names

    assert SHIPPED_CONFIGS == ROOT / "medsplit" / "configs"
    assert (ROOT / "configs").is_symlink() and (ROOT / "configs").resolve() == SHIPPED_CONFIGS
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "configs/*.yaml" in data["medsplit"]
    names = shipped_config_names()
    assert {"retinopathy", "unet-seg", "eyepacs", "sweep-cut-unet"} <= set(names)
    for name in names:  # every shipped config loads by its name
        load_config(name)


def _make(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "MAKEFLAGS": ""}
    done = subprocess.run(["make", "-n", "--no-print-directory", *args, "VENV=venv", f"PYTHON={sys.executable}"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_setup_is_keyed_on_content_not_mtime(tmp_path):
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").write_text("#!/bin/sh\n")
    (tmp_path / "venv" / "bin" / "python").chmod(0o755)
    digest = hashlib.sha256((tmp_path / "pyproject.toml").read_bytes() + (tmp_path / "requirements.lock").read_bytes())
    (tmp_path / "venv" / ".installed").write_text(digest.hexdigest() + "\n")
    assert "venv matches" in _make(tmp_path, "setup")
    # a fresh clone: the files are newer than the venv, their content is the same
    later = (tmp_path / "venv" / ".installed").stat().st_mtime + 3600
    for name in ("pyproject.toml", "requirements.lock"):
        os.utime(tmp_path / name, (later, later))
    out = _make(tmp_path, "setup")
    assert "venv matches" in out and "-m venv" not in out
    # an edited dependency list reinstalls, under the lock's constraints
    with open(tmp_path / "requirements.lock", "a") as f:
        f.write("extra-package==1.0\n")
    out = _make(tmp_path, "setup")
    assert "-m venv venv" in out and '-c requirements.lock -e ".[dev' in out


def test_offline_wheels_cover_what_the_host_lacks_and_no_more():
    fetch = _fetcher()
    wanted = fetch.wanted("3.12", with_albumentations=False)
    assert {"monai", "segmentation-models-pytorch", "opacus", "nibabel", "matplotlib"} <= set(wanted)
    assert not set(wanted) & {"torch", "torchvision", "timm", "numpy", "scipy", "pillow", "kaggle", "albumentations",
                              "opencv-python-headless"}
    assert "importlib-resources" not in wanted  # nibabel needs it below Python 3.12 only
    with_alb = fetch.wanted("3.12", with_albumentations=True)
    assert {"albumentations", "albucore", "opencv-python-headless"} <= set(with_alb)


def test_the_suite_installs_only_the_wheels_this_python_lacks(tmp_path):
    fetch = _fetcher()
    for name in ("monai-1.6.1-py3-none-any.whl", "not_installed_anywhere-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    assert [w.name for w in fetch.list_missing(tmp_path)] == ["not_installed_anywhere-1.0-py3-none-any.whl"]


def test_offline_wheels_install_into_a_clean_target_and_import_beside_this_torch(tmp_path):
    """The GPU suite's install path, dry: every fetched wheel into an empty --target, then
    medsplit's dependencies imported from there (ahead of this venv's copies) and used with this
    venv's torch. CI fetches the folder first (.ci/run)."""
    if not OFFLINE.is_dir():
        pytest.skip(f"{OFFLINE} not fetched: python benchmarks/fetch_offline_wheels.py --python-version "
                    f"{sys.version_info[0]}.{sys.version_info[1]} (CI does)")
    target = tmp_path / "site"
    wheels = sorted(str(w) for w in OFFLINE.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
                    str(target), *wheels], check=True, timeout=300)
    code = """
import sys
from pathlib import Path
target = Path(sys.argv[1])
import matplotlib, monai, nibabel, opacus, segmentation_models_pytorch, torch
for module in (matplotlib, monai, nibabel, opacus, segmentation_models_pytorch):
    assert Path(module.__file__).is_relative_to(target), module.__file__
assert not Path(torch.__file__).is_relative_to(target)
from monai.metrics import compute_dice
from medsplit.models import build_model
table = build_model("unet-smp", num_classes=1, in_channels=1)
out = table(torch.zeros(1, 1, 64, 64))
mask = torch.ones(1, 1, 8, 8)
assert float(compute_dice(mask, mask)) == 1.0
print("ok", tuple(out.shape), torch.__version__.split("+")[0])
"""
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{ROOT}", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:5] == ["ok", "(1,", "1,", "64,", "64)"], done.stdout


def _tiny_wheel(folder: Path, name: str = "offline_probe") -> Path:
    """A minimal valid wheel (one module) that no environment has installed."""
    import base64
    import zipfile

    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    files = {f"{name}.py": b"VALUE = 42\n",
             f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{name}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in {**files, f"{name}-1.0.dist-info/RECORD": record.encode()}.items():
            z.writestr(path, data)
    return wheel


def test_gpu_suite_installs_the_missing_wheels_before_its_first_step(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _tiny_wheel(wheels)
    env = {**os.environ, "PYTHON": sys.executable, "OFFLINE_WHEELS": str(wheels), "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--dry-run", "--data", str(tmp_path / "no-data"),
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)
    assert f"== installing 1 offline wheel(s) from {wheels}" in done.stdout, done.stdout + done.stderr
    # then the suite goes on to its own checks (here: the missing data folder stops it) ...
    assert done.returncode == 2 and "lacks retinopathy/eyepacs256" in done.stderr, done.stderr
    # ... and leaves no installed copy behind
    assert not list(tmp_path.glob("medsplit-offline-site.*"))


def _bounded_ranges() -> list:
    """pyproject's dependencies and the [dev] and [mlflow] extras, as packaging Requirements."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(spec) for spec in project["dependencies"] + extras["dev"] + extras["mlflow"]]


def test_every_lower_bound_is_pinned_by_the_lower_bounds_check():
    """benchmarks/check_lower_bounds.sh installs each bound at exactly that version: a bound added or
    raised in pyproject.toml without the script testing it fails here."""
    from packaging.version import Version

    script = (ROOT / "benchmarks" / "check_lower_bounds.sh").read_text()
    pins = {re.sub(r"[-_.]+", "-", name).lower(): Version(version)
            for name, version in re.findall(r"(?<![\w.-])([A-Za-z][\w.-]*)==(\d[\w.]*)", script)}
    untested = {}
    for req in _bounded_ranges():
        lowest = [Version(s.version) for s in req.specifier if s.operator == ">="]
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if lowest and pins.get(name) != lowest[0]:
            untested[name] = (str(lowest[0]), str(pins.get(name)))
    assert not untested, f"lower bound in pyproject.toml, pin in check_lower_bounds.sh: {untested}"
    assert len(pins) >= 20 and pins["monai"] == Version("1.4") and pins["numpy"] < Version("2")


def test_the_lock_satisfies_every_range():
    pins = _lock()
    outside = {str(req): pins[re.sub(r"[-_.]+", "-", req.name).lower()] for req in _bounded_ranges()
               if re.sub(r"[-_.]+", "-", req.name).lower() in pins
               and not req.specifier.contains(pins[re.sub(r"[-_.]+", "-", req.name).lower()], prereleases=True)}
    assert not outside, f"requirements.lock pins a version its pyproject range excludes: {outside}"
