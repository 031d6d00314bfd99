#!/usr/bin/env bash
# Run the tests that exercise each dependency at the *lowest* version pyproject.toml admits.
#
# The lower-bound wheels go into a temporary --target placed ahead of the venv on PYTHONPATH (the
# venv supplies everything else), so nothing installed is changed. torch 2.11 + torchvision 0.26
# is the site-managed PyTorch of an air-gapped GPU host (benchmarks/gpu_suite.sh); the torch wheel
# is 531 MB and uses the venv's CUDA 13 libraries. Needs PyPI; takes minutes.
#
#   bash benchmarks/check_lower_bounds.sh [--slow]     # --slow adds trainings, resume, gloo parties
#   PY=.venv/bin/python (default)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$repo/.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$repo"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

lower=(torch==2.11.0 torchvision==0.26.0 segmentation-models-pytorch==0.5.0 opacus==1.5.4 nibabel==5.2.1)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work/wheels" "${lower[@]}"
"$PY" -m pip install --quiet --no-deps --no-index --target "$work/site" "$work"/wheels/*.whl
PYTHONPATH="$work/site:$repo" "$PY" -c '
import sys, torch, torchvision, segmentation_models_pytorch as smp, opacus, nibabel
for m in (torch, torchvision, smp, opacus, nibabel):
    assert m.__file__.startswith(sys.argv[1]), m.__file__
    print(f"  {m.__name__} {m.__version__}")' "$work/site"

tests=(tests/split/test_split_core.py tests/split/test_codecs.py tests/split/test_wire.py tests/split/test_unet_split.py tests/metrics/test_metrics.py
       tests/defences/test_defences.py tests/train/test_protocols.py tests/train/test_training.py tests/package/test_api.py tests/train/test_resume_exact.py
       tests/data/test_data_lungs.py)
if [[ ${1:-} == --slow ]]; then
  PYTHONPATH="$work/site:$repo" "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" tests/transport/test_transport_processes.py
else
  PYTHONPATH="$work/site:$repo" "$PY" -m pytest -q -p no:cacheprovider -m "not slow" "${tests[@]}"
fi
