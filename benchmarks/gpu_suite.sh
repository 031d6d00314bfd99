#!/usr/bin/env bash
# The measurements that need a GPU, in one command for a lent device (under 10 minutes on one GPU):
#   1. throughput, split against whole, end to end: ResNet-34 224 px (cuts 1,3,5) and U-Net 256 px (cuts 1,2,3);
#   2. one EyePACS epoch at 256 px (referable DR, split CUT 3, 2 hospitals): the epoch time;
#   3. FSHA on lungs at 64 px for the paper's 10,000 iterations (no defence);
#   4. the server and 2 hospitals as separate processes (gloo) for one EyePACS epoch at 128 px under
#      bf16 autocast: the party path on a GPU (the dry run takes it under train.cpu_amp on CPU).
# Every step's JSON lands under --out (default benchmarks/results/gpu-suite/), with gpu_suite.json
# listing each step, its command, exit status and seconds.
#
#   python benchmarks/build_device_data.py     # once, here: re-encodes the data into device-data/ (< 64 MiB)
#   bash benchmarks/gpu_suite.sh               # on the device (the run tool carries device-data/)
#   bash benchmarks/gpu_suite.sh --dry-run     # every step for a few iterations on CPU, tiny data (CI)
#
# Options: --dry-run, --out DIR, --data DIR (default device-data; the dry run builds a tiny one in
# --out from ../shared/data), --device auto|cuda|cpu. $PYTHON picks the interpreter (default python).
# Offline host (no MONAI, smp, opacus, nibabel, matplotlib; no network): here, once,
#   python benchmarks/fetch_offline_wheels.py [--python-version 3.12]   # offline-wheels/cp312, 23 MiB
# and carry offline-wheels/ with device-data/: the suite installs the wheels the host lacks first.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
PYTHON="${PYTHON:-python}"
dry=0
out=""
data=""
device="auto"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $dry == 1 ]]; then
  out="${out:-$(mktemp -d)}"
  [[ $device == auto ]] && device=cpu
else
  out="${out:-$repo/benchmarks/results/gpu-suite}"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg

# Air-gapped hosts: the wheels benchmarks/fetch_offline_wheels.py fetched (offline-wheels/cpXY, or
# $OFFLINE_WHEELS) that this Python lacks go into a temporary --target on PYTHONPATH, for every
# step and every party process; what the site installed (its PyTorch above all) is left alone.
pyver="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
wheels="${OFFLINE_WHEELS:-$repo/offline-wheels/$pyver}"
if [[ -d $wheels ]]; then
  mapfile -t missing < <("$PYTHON" "$here/fetch_offline_wheels.py" --list-missing "$wheels")
  if (( ${#missing[@]} )); then
    site="$(mktemp -d "${TMPDIR:-/tmp}/medsplit-offline-site.XXXXXX")"
    trap 'rm -rf "$site"' EXIT
    echo "== installing ${#missing[@]} offline wheel(s) from $wheels into $site"
    if "$PYTHON" -m pip --version > /dev/null 2>&1; then
      "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$site" "${missing[@]}"
    else  # no pip on the host: a wheel is a zip of its import tree
      for w in "${missing[@]}"; do "$PYTHON" -m zipfile -e "$w" "$site"; done
    fi
    export PYTHONPATH="$PYTHONPATH:$site"
  fi
fi
if ! "$PYTHON" -c 'import monai, segmentation_models_pytorch, opacus, nibabel, matplotlib' 2> "$out/imports.log"; then
  echo "gpu_suite.sh: medsplit's dependencies do not import with $PYTHON ($(tail -n 1 "$out/imports.log")); on an" \
       "offline host fetch them first, here: python benchmarks/fetch_offline_wheels.py --python-version X.Y," \
       "and carry offline-wheels/" >&2
  exit 2
fi

if [[ -z $data ]]; then
  if [[ $dry == 1 ]]; then
    data="$out/data"
    "$PYTHON" "$here/build_device_data.py" --images 64 --out "$data"
  else
    data="$repo/device-data"
  fi
fi
if [[ ! -d $data/retinopathy/eyepacs256 || ! -d $data/lungs/covid-cxr-v7 ]]; then
  echo "gpu_suite.sh: $data lacks retinopathy/eyepacs256 or lungs/covid-cxr-v7; build it with python benchmarks/build_device_data.py" >&2
  exit 2
fi

# The benchmark scripts write to results/ beside themselves; running copies placed in $out keeps
# a suite's JSON (a dry run's above all) from overwriting the results committed in benchmarks/results/.
mkdir -p "$out/scripts"
cp "$here/throughput.py" "$out/scripts/"

if [[ $dry == 1 ]]; then
  tp_resnet=(--model resnet34 --size 32 --batch 4 --steps 1 --warmup 1 --cuts 3 --cache-images 8)
  tp_unet=(--model unet-smp --size 32 --batch 2 --steps 1 --warmup 1 --cuts 1 --cache-images 4)
  eyepacs=(data.img_size=32 train.batch_size=8 train.eval_batch_size=16 train.threads=1)
  fsha=(--profile tiny --set fsha.iterations=3 --set img_size=16)
  parties=(data.img_size=32 train.batch_size=8 train.eval_batch_size=16 train.threads=1 train.cpu_amp=true)
else
  tp_resnet=(--model resnet34 --size 224 --batch 64 --steps 30 --warmup 5 --cuts 1,3,5)
  tp_unet=(--model unet-smp --size 256 --batch 16 --steps 30 --warmup 5 --cuts 1,2,3)
  eyepacs=(data.img_size=256 train.batch_size=64)
  fsha=(--profile full --set fsha.iterations=10000 --set img_size=64)
  parties=(data.img_size=128 train.batch_size=64 train.amp=true)
fi

steps_json="$out/steps.jsonl"
: > "$steps_json"
status=0
step() {  # step NAME COMMAND...: run it, log it, record (name, command, rc, seconds); keep going on failure
  local name="$1"; shift
  local t0 rc
  t0=$(date +%s.%N)
  echo "== $name: $*"
  set +e
  "$@" > "$out/$name.log" 2>&1
  rc=$?
  set -e
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  echo "   rc=$rc, ${secs}s (log: $out/$name.log)"
  [[ $rc == 0 ]] || { tail -n 20 "$out/$name.log" >&2; status=1; }
  "$PYTHON" -c 'import json,sys; print(json.dumps({"step": sys.argv[1], "rc": int(sys.argv[2]), "seconds": float(sys.argv[3]), "command": sys.argv[4:]}))' \
    "$name" "$rc" "$secs" "$@" >> "$steps_json"
}

step throughput-resnet34 "$PYTHON" "$out/scripts/throughput.py" --device "$device" "${tp_resnet[@]}"
step throughput-unet "$PYTHON" "$out/scripts/throughput.py" --device "$device" "${tp_unet[@]}"
step eyepacs-epoch "$PYTHON" -m medsplit train "$repo/configs/eyepacs.yaml" "data.root=$data" "${eyepacs[@]}" \
  train.epochs=1 "train.device=$device" output.tensorboard=false "output.runs_dir=$out/runs" \
  "output.reports_dir=$out/reports" "data.cache_dir=$out/cache" output.name=eyepacs-epoch
step fsha-lungs "$PYTHON" -m medsplit attack --task lungs --attacks fsha --defences none "${fsha[@]}" \
  --device "$device" --data-root "$data" --out "$out/fsha"
step parties-gloo "$PYTHON" -m medsplit train "$repo/configs/eyepacs.yaml" "data.root=$data" "${parties[@]}" \
  split.transport=gloo train.epochs=1 "train.device=$device" output.tensorboard=false "output.runs_dir=$out/runs" \
  "output.reports_dir=$out/reports" "data.cache_dir=$out/cache" output.name=parties-gloo

"$PYTHON" - "$out" "$dry" <<'PY'
import json, sys
from pathlib import Path
out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
record = {"dry_run": dry, "steps": steps, "total_seconds": round(sum(s["seconds"] for s in steps), 1),
          "results": sorted(str(p.relative_to(out)) for p in out.rglob("*.json") if p.name != "gpu_suite.json")}
epoch = out / "runs" / "eyepacs-epoch" / "metrics.json"
if epoch.exists():
    m = json.loads(epoch.read_text())
    record["eyepacs_epoch_seconds"] = [r["seconds"] for r in m["history"] if "seconds" in r]
    record["eyepacs_device"] = m["device"]
parties = out / "runs" / "parties-gloo" / "metrics.json"
if parties.exists():
    m = json.loads(parties.read_text())
    record["parties_epoch_seconds"] = [r["seconds"] for r in m["history"] if "seconds" in r]
    record["parties"] = [{k: p.get(k) for k in ("name", "pid", "data_loaded")} for p in m.get("transport", {}).get("parties", [])]
(out / "gpu_suite.json").write_text(json.dumps(record, indent=1))
print(f"wrote {out / 'gpu_suite.json'} ({record['total_seconds']} s in all)")
PY
exit $status
