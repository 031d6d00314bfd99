"""Following a run's config through the code: which of medsplit's files a training run's config
passes through, in order, and how often that path climbs back up the import layers or returns to
a file it has already left (issue 26: "following a run's config visits clearly fewer files with
fewer climbs back up").

How it is measured: a tiny in-process training run (``python -m medsplit train`` on synthetic
data) runs under ``sys.setprofile``; every call into a medsplit function that holds the run's
config, or one of its sections (an object of ``medsplit.config``), among its arguments or locals
at entry is recorded as its file. Consecutive calls in the same file are one visit. Then:

* ``files``: distinct files on the path;
* ``returns``: visits to a file the path had already left;
* ``climbs``: calls on the path from a function in one file into a function in a file that imports
  the caller's (directly or through others, module-level imports only): lower-layer code calling
  back up into a higher layer (a callback). The caller is the nearest medsplit frame below.

The same script runs on any commit (it imports nothing of medsplit itself before the run starts),
so a before/after comparison uses one method:

    python benchmarks/config_path.py                         # this checkout
    python benchmarks/config_path.py --repo /path/to/old/checkout --out old.json

Prints the path and the counts, and writes JSON (``benchmarks/results/config_path.json`` by default).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import runpy
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_ARGS = ["data.source=synthetic", "data.synthetic_size=32", "data.img_size=32", "model.name=resnet18",
              "train.epochs=1", "train.batch_size=16", "train.eval_batch_size=32", "train.threads=1",
              "split.clients=2", "split.cut=3", "output.tensorboard=false"]


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
            for name in names:
                if name in by_module:
                    targets.add(by_module[name])
        graph[rel] = targets - {rel}
    return graph


def importers_closure(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``file -> every file that imports it``, directly or through others."""
    above: dict[str, set[str]] = {f: set() for f in graph}
    for start in graph:  # a depth-first walk from each file over "is imported by"
        seen, todo = set(), [start]
        while todo:
            f = todo.pop()
            for g, deps in graph.items():
                if f in deps and g not in seen:
                    seen.add(g)
                    todo.append(g)
        above[start] = seen - {start}
    return above


def trace_run(repo: Path, run_dir: Path) -> list[tuple[str | None, str]]:
    """``(caller's file, callee's file)``, in call order, of the calls into medsplit functions that
    hold the config while a tiny run trains (the caller: the nearest medsplit frame, or None)."""
    package = (repo / "medsplit").resolve()
    prefix = str(package) + os.sep
    calls: list[tuple[str | None, str]] = []

    def file_of(code) -> str:
        return Path(code.co_filename).resolve().relative_to(package.parent).as_posix()

    def holds_config(frame) -> bool:
        for value in frame.f_locals.values():
            module = getattr(type(value), "__module__", "") or ""
            if module.startswith("medsplit.config"):
                return True
        return False

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(prefix) and holds_config(frame):
            caller = frame.f_back
            while caller is not None and not caller.f_code.co_filename.startswith(prefix):
                caller = caller.f_back
            calls.append((file_of(caller.f_code) if caller is not None else None, file_of(frame.f_code)))

    config = next(p for p in (repo / "configs" / "retinopathy.yaml", repo / "medsplit" / "configs" / "retinopathy.yaml")
                  if p.exists())
    argv = ["medsplit", "train", str(config), *TRAIN_ARGS, f"output.runs_dir={run_dir}/runs",
            f"output.reports_dir={run_dir}/reports", f"data.cache_dir={run_dir}/cache"]
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = argv, [str(repo)]
    sys.setprofile(profiler)
    try:
        runpy.run_module("medsplit", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        sys.setprofile(None)
        sys.argv, sys.path[:] = old_argv, old_path
    return calls


def path_counts(calls: list[tuple[str | None, str]], above: dict[str, set[str]]) -> dict:
    """Visits (consecutive calls in one file merged), distinct files, returns and climbs."""
    files = [callee for _, callee in calls]
    visits = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    seen, returns = set(), 0
    for f in visits:
        if f in seen:
            returns += 1
        seen.add(f)
    climbs = [f"{caller} -> {callee}" for caller, callee in calls
              if caller is not None and callee != caller and callee in above.get(caller, set())]
    return {"files": len(seen), "visits": len(visits), "returns": returns, "climbs": len(climbs),
            "climb_steps": climbs, "path": visits}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the checkout to measure (default: this one)")
    ap.add_argument("--out", type=Path, default=RESULTS / "config_path.json")
    args = ap.parse_args(argv)
    repo = args.repo.resolve()
    graph = module_imports(repo / "medsplit")
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        calls = trace_run(repo, Path(tmp))
    counts = path_counts(calls, importers_closure(graph))
    result = {"benchmark": "config_path", "repo": str(repo), "train_args": TRAIN_ARGS, **counts,
              "seconds": time.time() - started}
    for i, f in enumerate(counts["path"], 1):
        print(f"{i:3d} {f}")
    print(f"\n{counts['files']} files, {counts['visits']} visits, {counts['returns']} returns to a file already left, "
          f"{counts['climbs']} climbs back up the imports")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
