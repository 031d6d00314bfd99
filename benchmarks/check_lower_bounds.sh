#!/usr/bin/env bash
# Test every lower bound in pyproject.toml: each dependency at exactly the lowest version it admits.
#
# Two groups, because monai 1.4, scipy 1.10, scikit-learn 1.3 and matplotlib 3.7 need numpy 1 while
# current MONAI / Lightning environments have numpy 2:
#   oldest  every lower bound together (numpy 1.24.4), with the companions their binaries need
#   numpy2  the lower bounds that admit numpy 2, beside this venv's numpy 2, scipy, scikit-learn,
#           matplotlib and monai
# torch 2.11 + torchvision 0.26 (the site-managed PyTorch of the air-gapped GPU host of
# benchmarks/gpu_suite.sh, using the venv's CUDA 13 libraries) are in both.
#
# For each group: pip's resolver must accept the pins together with pyproject's ranges (a dry run);
# the wheels go into a temporary --target ahead of the venv on PYTHONPATH (the venv supplies
# everything else, nothing installed is changed, the target is removed on exit); every pinned
# package must import from there at its pinned version; then the tests run. Prints a table and
# saves benchmarks/results/lower_bounds.json (--slow: lower_bounds-slow.json). Needs PyPI; the
# downloads are kept in $LOWER_BOUNDS_CACHE (the torch wheel is 531 MB), so a rerun fetches nothing,
# and each group's test output in its logs/. Takes 8 minutes (--slow: 23) on 2 busy CPU cores.
#
#   bash benchmarks/check_lower_bounds.sh [--slow]     # --slow adds trainings, resume, gloo parties
#   PY=.venv/bin/python (default)   LOWER_BOUNDS_CACHE=/tmp/medsplit-lower-bounds-wheels (default)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$repo/.venv/bin/python}"
cache="${LOWER_BOUNDS_CACHE:-/tmp/medsplit-lower-bounds-wheels}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$repo"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" NO_ALBUMENTATIONS_UPDATE=1  # no update check over the network
tier=fast; [[ ${1:-} == --slow ]] && tier=slow

# name==lower bound, exactly as pyproject.toml admits it (tests/test_packaging.py checks that every
# bound there is pinned here); "companion" pins are not medsplit's bounds but what those need.
torch_stack=(torch==2.11.0 torchvision==0.26.0)
admit_numpy2=(segmentation-models-pytorch==0.5.0 opacus==1.5.4 nibabel==5.2.1 albumentations==1.4.22
              torchmetrics==1.4.2 pillow==10.0.0 pyyaml==6.0 jinja2==3.1.0 tensorboard==2.17.1 tqdm==4.66.0
              safetensors==0.4.0 kaggle==1.6.0)
need_numpy1=(numpy==1.24.4 scipy==1.10.0 scikit-learn==1.3.0 monai==1.4.0 matplotlib==3.7.0)
extras=(pytest==8.0.0 pytest-timeout==2.3.1 pytest-xdist==3.5.0 hypothesis==6.100.0 mlflow-skinny==3.1.3)   # [dev], [mlflow]
companions_both=(albucore==0.0.21)        # albumentations 1.4.22 pins it
companions_numpy1=(opencv-python-headless==4.9.0.80 contourpy==1.0.7  # this venv's builds need numpy 2
                   protobuf==6.31.1 packaging==25.0 cachetools==5.5.2 importlib-metadata==8.7.0)  # mlflow-skinny 3.1 caps
declare -A group_pins=(
  [oldest]="${admit_numpy2[*]} ${need_numpy1[*]} ${extras[*]} ${companions_both[*]} ${companions_numpy1[*]}"
  [numpy2]="${admit_numpy2[*]} ${companions_both[*]}"
)
declare -A group_constraint=([oldest]="" [numpy2]="numpy>=2")
groups=(oldest numpy2)

tests=(tests/split/test_split_core.py tests/split/test_codecs.py tests/split/test_wire.py tests/split/test_unet_split.py
       tests/metrics/test_metrics.py tests/metrics/test_hd95_spacing.py tests/metrics/test_uncertainty.py
       tests/defences/test_defences.py tests/defences/test_dp_across_steps.py tests/train/test_protocols.py
       tests/train/test_training.py tests/train/test_resume_exact.py tests/package/test_api.py tests/data/test_data_lungs.py
       tests/data/test_data_retinopathy.py tests/data/test_data_inputs.py tests/attacks/test_attacks.py
       tests/config/test_config.py tests/tracking/test_tracking.py tests/report/test_report.py)
# An argument an old release silently ignores ("Argument 'fill' is not valid and will be ignored",
# albumentations < 1.4.22) fails the test instead of passing on a default that happens to match.
pytest_args=(-q -p no:cacheprovider -W "error:Argument:UserWarning")
if [[ $tier == slow ]]; then tests+=(tests/transport/test_transport_processes.py); else pytest_args+=(-m "not slow"); fi

pip() { "$PY" -m pip --disable-pip-version-check "$@"; }
# Runs a step with its output in a log; shows the log's tail only when the step fails.
logged() {
  local log="$work/$1.log"; shift
  if "$@" >"$log" 2>&1; then return 0; fi
  echo "  failed: $*" >&2; tail -n 25 "$log" >&2; return 1
}
# pyproject's ranges: the dependencies and the [dev] and [mlflow] extras.
ranges() {
  "$PY" -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"] + p["optional-dependencies"]["mlflow"]))'
}

# Download into the cache once (pip skips files already there); sdists (kaggle 1.6) are built into
# wheels there, so the installs below need no index.
mkdir -p "$cache"
mapfile -t all_pins < <(printf '%s\n' "${torch_stack[@]}" ${group_pins[oldest]} ${group_pins[numpy2]} | sort -u)
echo "downloading ${#all_pins[@]} pinned packages into $cache"
logged download pip download --no-deps --prefer-binary --dest "$cache" "${all_pins[@]}"
for sdist in "$cache"/*.tar.gz; do
  [[ -e $sdist ]] && ! compgen -G "${sdist%.tar.gz}-*.whl" >/dev/null || continue
  logged build-"$(basename "$sdist")" pip wheel --no-deps --wheel-dir "$cache" "$sdist"
done
install_into() { local target=$1; shift
  logged install-"$(basename "$target")" pip install --no-deps --no-index --only-binary=:all: --find-links "$cache" --target "$target" "$@"
}
install_into "$work/torch" "${torch_stack[@]}"
ranges >"$work/ranges.txt"

for group in "${groups[@]}"; do
  read -ra pins <<<"${group_pins[$group]}"
  echo "== group $group: ${#pins[@]} pins + torch stack"
  printf '%s\n' "${torch_stack[@]}" "${pins[@]}" ${group_constraint[$group]} >"$work/$group.constraints"
  resolves=true
  logged resolve-"$group" pip install --dry-run --ignore-installed --prefer-binary -c "$work/$group.constraints" \
    -r "$work/ranges.txt" || resolves=false
  install_into "$work/$group" "${pins[@]}"
  site="$work/$group:$work/torch"
  # kaggle authenticates when imported: dummy credentials are read, nothing is sent.
  KAGGLE_USERNAME=lower-bounds KAGGLE_KEY=unused PYTHONPATH="$repo:$site" "$PY" - "$group" "$site" "$work/$group.json" \
    "$resolves" "${torch_stack[@]}" "${pins[@]}" <<'EOF'
import importlib, importlib.metadata as md, json, re, sys, tomllib
group, site, out, resolves, *pins = sys.argv[1:]
targets = site.split(":")
IMPORT_NAME = {"scikit-learn": "sklearn", "pillow": "PIL", "pyyaml": "yaml", "opencv-python-headless": "cv2",
               "mlflow-skinny": "mlflow", "protobuf": "google.protobuf", "pytest-xdist": "xdist"}
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
ranges = project["dependencies"] + project["optional-dependencies"]["dev"] + project["optional-dependencies"]["mlflow"]
names = [norm(re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0]) for r in ranges]
pinned = dict(p.split("==") for p in pins)
record = {"resolves": resolves == "true", "packages": {}}
for name in dict.fromkeys(names + [norm(n) for n in pinned]):
    entry = record["packages"][name] = {"pinned": pinned.get(name)}
    try:
        dist = md.distribution(name)
        where = str(dist.locate_file(""))
        entry.update(version=dist.version, from_target=any(where.startswith(t) for t in targets))
        module = importlib.import_module(IMPORT_NAME.get(name, name.replace("-", "_")))
        if entry["pinned"]:
            assert entry["from_target"] and dist.version.split("+")[0] == entry["pinned"], f"{dist.version} from {where}"
            assert any(module.__file__.startswith(t) for t in targets), f"imported from {module.__file__}"
        entry["import"] = "ok"
    except Exception as error:  # any failure to import is the finding
        entry["import"] = f"{type(error).__name__}: {error}"[:200]
bad = {n: e["import"] for n, e in record["packages"].items() if e["import"] != "ok"}
print(f"  imports: {'ok' if not bad else bad}; pip resolves the pins with pyproject's ranges: {record['resolves']}")
json.dump(record, open(out, "w"))
EOF
  start=$SECONDS
  PYTHONPATH="$repo:$site" "$PY" -m pytest "${pytest_args[@]}" "${tests[@]}" >"$work/$group.pytest" 2>&1 && rc=0 || rc=$?
  echo "$rc $((SECONDS - start))" >"$work/$group.rc"
  mkdir -p "$cache/logs"; cp "$work/$group.pytest" "$cache/logs/$group-$tier.log"  # kept for a failure's details
  echo "  tests ($tier): $(tail -n 1 "$work/$group.pytest")"
  [[ $rc == 0 ]] || { grep -E '^(FAILED|ERROR) ' "$work/$group.pytest"; echo "  full output: $cache/logs/$group-$tier.log"; }
done

# The table: one row per bound in pyproject.toml, the version each group imported, the result.
"$PY" - "$work" "$tier" "${groups[@]}" <<'EOF'
import json, platform, re, sys, time, tomllib
from pathlib import Path
work, tier, *groups = sys.argv[1:]
work = Path(work)
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
ranges = project["dependencies"] + project["optional-dependencies"]["dev"] + project["optional-dependencies"]["mlflow"]
record = {"python": platform.python_version(), "tier": tier, "date": time.strftime("%Y-%m-%d"), "groups": {}, "bounds": []}
for g in groups:
    rc, seconds = map(int, (work / f"{g}.rc").read_text().split())
    log = (work / f"{g}.pytest").read_text().splitlines()
    tests = {"rc": rc, "seconds": seconds, "summary": log[-1].strip(" =") if log else "",
             "failed": [line.split(" - ")[0] for line in log if line.startswith(("FAILED ", "ERROR "))]}
    record["groups"][g] = {**json.loads((work / f"{g}.json").read_text()), "tests": tests}
def group_failure(g, entry):
    r = record["groups"][g]
    return ("import" if entry["import"] != "ok" else "pip resolve" if not r["resolves"]
            else "tests" if r["tests"]["rc"] else None)
rows = [("package", "lower bound", *(f"{g} imported" for g in groups), "result")]
for spec in ranges:
    m = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)", spec)
    if not m:
        continue  # no lower bound (six)
    name, bound = norm(m[1]), m[2]
    cells, failures, tested = [], [], False
    for g in groups:
        e = record["groups"][g]["packages"].get(name, {})
        cells.append(f"{e.get('version', '-')}{'' if e.get('pinned') else ' (venv)'}")
        if e.get("pinned"):
            tested = True
            if group_failure(g, e):
                failures.append(f"{group_failure(g, e)} in {g}")
    result = "FAIL: " + ", ".join(failures) if failures else "ok" if tested else "NOT TESTED"
    rows.append((name, bound, *cells, result))
    record["bounds"].append({"package": name, "lower_bound": bound, "result": result,
                             **{g: record["groups"][g]["packages"].get(name, {}) for g in groups}})
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
for g in groups:
    r = record["groups"][g]
    companions = [f"{n} {e['version']}" for n, e in r["packages"].items()
                  if e.get("pinned") and n not in {norm(re.split(r'[<>=!~ ;\[]', s, maxsplit=1)[0]) for s in ranges}]
    print(f"{g}: pip resolves: {r['resolves']}; tests ({tier}): {r['tests']['summary']}; "
          f"companions: {', '.join(companions) or 'none'}")
out = Path("benchmarks/results/lower_bounds.json" if tier == "fast" else "benchmarks/results/lower_bounds-slow.json")
out.write_text(json.dumps(record, indent=1) + "\n")
print(f"saved {out}")
sys.exit(0 if all(b["result"] == "ok" for b in record["bounds"]) else 1)
EOF
