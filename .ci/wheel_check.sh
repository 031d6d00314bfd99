#!/usr/bin/env bash
# The built wheel, installed into a fresh venv outside the checkout, trains, evaluates and writes a
# report using only the installed package (issue 29): no file of the checkout is on the path, the
# configs come from the wheel (`medsplit train retinopathy`), and everything runs from a temp dir.
#
# The new venv gets medsplit from the wheel and nothing else; its dependencies (PyTorch, MONAI ...,
# several GB) are the project venv's, reached through a .pth file that lists that venv's
# site-packages. `pip check` then proves the wheel's dependency ranges admit those versions.
#
#   PY=.venv/bin/python bash .ci/wheel_check.sh      (make wheel-check; .ci/run calls it)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$repo/.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MPLBACKEND=Agg
unset PYTHONPATH  # nothing of the checkout may leak in

echo ">>> building the wheel"
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$repo"
wheel="$(ls "$work"/dist/medsplit-*.whl)"
"$PY" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
configs = sorted(n for n in names if n.startswith("medsplit/configs/") and n.endswith(".yaml"))
templates = [n for n in names if n.startswith("medsplit/report/templates/")]
assert "medsplit/configs/retinopathy.yaml" in configs and templates, (configs, templates)
print(f"    {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, {len(configs)} configs, {len(templates)} templates")
PY

echo ">>> installing it into a fresh venv in $work"
# Without pip (and, on Python < 3.12, without the old setuptools venv bundles, which would shadow
# the project venv's): the project venv's pip installs into it and checks it (pip --python).
"$PY" -m venv --without-pip "$work/venv"
VPY="$work/venv/bin/python"
deps="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$deps" > "$site/project-venv-dependencies.pth"
"$PY" -m pip --python "$VPY" install --quiet --no-deps --no-index "$wheel"
"$PY" -m pip --python "$VPY" check

mkdir "$work/run"
cd "$work/run"  # outside the checkout
"$VPY" - "$repo" <<'PY'
import sys
from pathlib import Path
import medsplit
repo = Path(sys.argv[1])
where = Path(medsplit.__file__).resolve()
assert not where.is_relative_to(repo), f"medsplit imported from the checkout: {where}"
assert (where.parent / "configs" / "retinopathy.yaml").is_file()
print(f"    medsplit {medsplit.__version__} from {where.parent}")
PY

echo ">>> a tiny training from the installed package (a shipped config by name)"
"$work/venv/bin/medsplit" train retinopathy data.source=synthetic data.synthetic_size=96 data.img_size=32 \
  model.name=resnet18 train.epochs=1 train.batch_size=16 train.threads=1 output.tensorboard=false \
  output.name=wheel-check data.cache_dir=cache > train.log 2>&1 || { tail -n 30 train.log; exit 1; }
tail -n 1 train.log

echo ">>> external validation of that run on a small labelled image folder"
"$VPY" - <<'PY'
import csv
from pathlib import Path
import numpy as np
from PIL import Image
folder = Path("external")
folder.mkdir()
rng = np.random.default_rng(0)
with open(folder / "labels.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image", "level"])
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"eye{i}.png")
        w.writerow([f"eye{i}", i % 4])
PY
"$work/venv/bin/medsplit" evaluate runs/wheel-check --data external --out external.json --report external.md \
  > evaluate.log 2>&1 || { cat evaluate.log; exit 1; }

echo ">>> and through the Python API"
"$VPY" - <<'PY'
import json
from pathlib import Path
import medsplit
run = medsplit.RunResult.load("runs/wheel-check")
assert run.paths["report"].is_file() and run.paths["report"].stat().st_size > 10_000, run.paths
assert 0.0 <= run.metrics["auc"] <= 1.0
ext = json.loads(Path("external.json").read_text())
assert ext["n"] == 8 and ext["comparison"]["metric"] == "AUC"
again = medsplit.evaluate(run, "external", out="external2.json")
assert again["n"] == 8
print(f"    report {run.paths['report']} ({run.paths['report'].stat().st_size // 1024} KB), "
      f"test AUC {run.metrics['auc']:.3f}, external AUC {ext['metrics']['auc']}")
PY
echo ">>> wheel check passed"
