"""Following a run's config through the code: which of medsplit's files a training run's config
passes through, in order, and how often that path climbs back up the import layers or returns to
a file it has already left (issue 26: "following a run's config visits clearly fewer files with
fewer climbs back up").

How it is measured: a tiny training run (``python -m medsplit train`` on synthetic data) runs with
a ``sitecustomize`` on its path that installs ``sys.setprofile`` in every Python process it
starts (so the party processes of ``--placement gloo`` are traced too). Every call into a
medsplit function that holds the run's config, or one of its sections (an object of
``medsplit.config``), among its arguments at entry is recorded with the file of its nearest
medsplit caller. Per process, consecutive calls in one file are one visit. Then:

* ``files``: distinct files on the path;
* ``returns``: visits to a file the path had already left;
* ``climbs``: calls from a function in one file into a function in a file that imports the
  caller's (directly or through others, module-level imports only): lower-layer code calling back
  up into a higher layer (a callback).

Nothing of medsplit is imported here, so the same script measures any commit with one method:

    python benchmarks/config_path.py                                  # this checkout, in one process
    python benchmarks/config_path.py --placement gloo                 # launcher + server + 2 hospitals
    python benchmarks/config_path.py --repo /path/to/old/checkout --out old.json

Prints each process's counts and writes JSON (``benchmarks/results/config_path[-gloo].json``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_ARGS = ["data.source=synthetic", "data.synthetic_size=32", "data.img_size=32", "model.name=resnet18",
              "train.epochs=1", "train.batch_size=16", "train.eval_batch_size=32", "train.threads=1",
              "split.clients=2", "split.cut=3", "output.tensorboard=false"]

# Installed in every traced process; appends one JSON line per call (a party ends with os._exit,
# which skips atexit, so nothing is kept in memory).
SITECUSTOMIZE = '''
import json, os, sys
_prefix = os.environ["CONFIG_PATH_PACKAGE"] + os.sep
_root = os.path.dirname(os.environ["CONFIG_PATH_PACKAGE"])
_log = open(os.path.join(os.environ["CONFIG_PATH_OUT"], f"{os.getpid()}.jsonl"), "a", buffering=1)
_log.write(json.dumps({"argv": sys.argv}) + "\\n")

def _file(code):
    return os.path.relpath(code.co_filename, _root).replace(os.sep, "/")

def _holds_config(frame):
    for value in frame.f_locals.values():
        if (getattr(type(value), "__module__", "") or "").startswith("medsplit.config"):
            return True
    return False

def _profile(frame, event, arg):
    if event == "call" and frame.f_code.co_filename.startswith(_prefix) and _holds_config(frame):
        caller = frame.f_back
        while caller is not None and not caller.f_code.co_filename.startswith(_prefix):
            caller = caller.f_back
        _log.write(json.dumps([_file(caller.f_code) if caller is not None else None, _file(frame.f_code)]) + "\\n")

sys.setprofile(_profile)
'''


def module_imports(package_dir: Path) -> dict[str, set[str]]:
    """``file -> files it imports`` at module level (relative paths), from the source alone."""
    root = package_dir.parent
    files = {p.relative_to(root).as_posix(): p for p in package_dir.rglob("*.py")}
    by_module = {f[:-3].replace("/", ".").removesuffix(".__init__"): f for f in files}
    graph: dict[str, set[str]] = {}
    for rel, path in files.items():
        targets = set()
        for node in ast.parse(path.read_text()).body:  # module level only: function-level imports are lazy
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            targets |= {by_module[n] for n in names if n in by_module}
        graph[rel] = targets - {rel}
    return graph


def importers_closure(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``file -> every file that imports it``, directly or through others."""
    importers: dict[str, set[str]] = {f: set() for f in graph}
    for f, deps in graph.items():
        for d in deps:
            importers.setdefault(d, set()).add(f)
    above: dict[str, set[str]] = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for g in importers.get(todo.pop(), ()):
                if g not in seen:
                    seen.add(g)
                    todo.append(g)
        above[start] = seen - {start}
    return above


def traced_run(repo: Path, placement: str, work: Path) -> dict[str, list[tuple[str | None, str]]]:
    """Run the tiny training under the tracer; ``process (its argv) -> [(caller's file, callee's file)]``."""
    config = next(p for p in (repo / "configs" / "retinopathy.yaml", repo / "medsplit" / "configs" / "retinopathy.yaml")
                  if p.exists())
    site, out = work / "site", work / "trace"
    site.mkdir()
    out.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(repo)]), OMP_NUM_THREADS="1",
               CONFIG_PATH_PACKAGE=str((repo / "medsplit").resolve()), CONFIG_PATH_OUT=str(out))
    args = [*TRAIN_ARGS, f"split.transport={placement}", f"output.runs_dir={work}/runs",
            f"output.reports_dir={work}/reports", f"data.cache_dir={work}/cache"]
    if placement == "inprocess":
        args.remove("split.transport=inprocess")  # commits before split.transport existed
    subprocess.run([sys.executable, "-m", "medsplit", "train", str(config), *args], env=env, cwd=work, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    processes = {}
    for log in sorted(out.glob("*.jsonl")):
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        calls = [tuple(x) for x in lines[1:]]
        name = _process_name(lines[0]["argv"])
        if calls:
            processes[name if name not in processes else f"{name} (pid {log.stem})"] = calls
    return processes


def _process_name(argv: list[str]) -> str:
    """``launcher`` for the command a user typed, ``party rank N`` for the processes it starts."""
    if "--rank" in argv:
        return f"party rank {argv[argv.index('--rank') + 1]}"
    return "launcher" if "train" in argv else " ".join(argv)[:80]


def path_counts(calls: list[tuple[str | None, str]], above: dict[str, set[str]]) -> dict:
    """Visits (consecutive calls in one file merged), distinct files, returns and climbs."""
    files = [callee for _, callee in calls]
    visits = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    seen, returns = set(), 0
    for f in visits:
        returns += f in seen
        seen.add(f)
    climbs = [f"{caller} -> {callee}" for caller, callee in calls
              if caller is not None and callee != caller and callee in above.get(caller, set())]
    return {"files": len(seen), "visits": len(visits), "returns": returns, "climbs": len(climbs),
            "climb_steps": climbs, "path": visits}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the checkout to measure (default: this one)")
    ap.add_argument("--placement", default="inprocess", choices=["inprocess", "gloo"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    repo = args.repo.resolve()
    out = args.out or RESULTS / ("config_path.json" if args.placement == "inprocess" else f"config_path-{args.placement}.json")
    above = importers_closure(module_imports(repo / "medsplit"))
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        processes = traced_run(repo, args.placement, Path(tmp))
    counts = {name: path_counts(calls, above) for name, calls in processes.items()}
    every_file = sorted({f for c in counts.values() for f in c["path"]})
    result = {"benchmark": "config_path", "repo": str(repo), "placement": args.placement, "train_args": TRAIN_ARGS,
              "files_all_processes": len(every_file),
              "climbs_all_processes": sum(c["climbs"] for c in counts.values()),
              "returns_all_processes": sum(c["returns"] for c in counts.values()),
              "processes": counts, "seconds": time.time() - started}
    for name, c in counts.items():
        print(f"{name:>14}: {c['files']} files, {c['visits']} visits, {c['returns']} returns, {c['climbs']} climbs")
    print(f"{'all':>14}: {len(every_file)} files, {result['returns_all_processes']} returns, "
          f"{result['climbs_all_processes']} climbs")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
