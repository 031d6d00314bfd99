"""The results file of a benchmark study (a set of runs read back by ``benchmarks/*.py``).

Every study script ends the same way: stamp the record with the machine and the wall time,
write it atomically under ``benchmarks/results/``, say where, and exit non-zero when some runs
did not finish (so a cut-short study is not mistaken for a complete one).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from medsplit.atomic import write_atomic


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
