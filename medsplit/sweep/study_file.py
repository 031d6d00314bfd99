"""A benchmark study (``benchmarks/codec_accuracy.py``, ``optimizer_handover.py``,
``results_protocols.py``): a set of ordinary runs that differ in one setting and the seed.

Every study plans its runs the same way (one config per (setting, seed), refused if its run
folder holds another config), trains them with the sweeps' runner (an interrupted run resumes,
a finished one is read back, ``--jobs`` run side by side), and ends the same way: stamp the
record with the machine and the wall time, write it atomically under ``benchmarks/results/``,
say where, and exit non-zero when some runs did not finish (so a cut-short study is not
mistaken for a complete one).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from medsplit.atomic import write_atomic
from medsplit.config import Config, load_config
from medsplit.sweep.run import check_run_matches, train_points


@dataclass(frozen=True)
class StudyRun:
    """One planned run of a study.

    Args:
        setting: the value the study varies (a codec, a hand-over mode, a protocol).
        seed: its seed.
        run_dir: its run folder.
        cfg: its config.
    """

    setting: str
    seed: int
    run_dir: Path
    cfg: Config


def plan_run(config: str, overrides: list[str], setting: str, seed: int, name: str, runs_dir: str,
             threads: int) -> StudyRun:
    """The run ``name`` of ``config`` with ``overrides`` (the study's setting among them), seeded.

    Raises:
        RuntimeError: its run folder already holds a run of another config (the message names
            the differing keys and says to pass another ``--runs-dir``).
    """
    cfg = load_config(config, [*overrides, f"train.seed={seed}", f"output.name={name}", f"output.runs_dir={runs_dir}",
                               f"train.threads={threads}"])
    run_dir = Path(runs_dir) / name
    check_run_matches(run_dir, cfg, remedy="pass another --runs-dir")
    return StudyRun(setting, seed, run_dir, cfg)


def train_study(plan: list[StudyRun], jobs: int, threads: int) -> list[tuple[StudyRun, dict]]:
    """Train (or resume, or read back) every planned run, a line per run as it ends; returns the
    finished runs with their ``metrics.json``."""
    width = max((len(r.setting) for r in plan), default=0)
    for k, (status, _, error) in train_points([r.cfg for r in plan], jobs=jobs, threads=threads):
        r = plan[k]
        print(f"{r.setting:>{width}} seed {r.seed}: {'FAILED ' + error[0] if error else status} ({r.run_dir})", flush=True)
    return finished_runs(plan)


def finished_runs(plan: list[StudyRun]) -> list[tuple[StudyRun, dict]]:
    """The planned runs that have finished (their ``metrics.json`` exists), with it; trains nothing."""
    finished = []
    for r in plan:
        path = r.run_dir / "metrics.json"
        if path.exists():
            finished.append((r, json.loads(path.read_text())))
    return finished


def write_study(path: Path, record: dict, start: float) -> Path:
    """Write ``record`` plus ``machine`` and ``wall_time_s`` (since ``start``, a ``time.time()``)
    to ``path`` as JSON and print where it went.

    Args:
        path: the results file (its folder is created).
        record: the study's JSON-able summary.
        start: when the study started.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {**record, "machine": platform.machine(), "wall_time_s": time.time() - start}
    write_atomic(path, json.dumps(out, indent=1))
    print(f"\nwrote {path}")
    return path


def exit_code(finished: int, planned: int) -> int:
    """0 when every planned run finished, else 1."""
    return 0 if finished == planned else 1
