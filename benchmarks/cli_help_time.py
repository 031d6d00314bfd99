"""Wall time of ``python -m medsplit [COMMAND] --help`` for every command (issue 29: each under 1 s).

Each command runs ``--repeats`` times in a fresh interpreter; the median is reported, with the
interpreter's own start-up (``python -c pass``) beside it for scale. The test suite checks the
cause instead (tests/package/test_cli.py: no --help imports torch); this measures the effect.

    python benchmarks/cli_help_time.py [--repeats 5] [--out benchmarks/results/cli_help_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["", "train", "serve", "join", "evaluate", "data", "sweep", "attack", "flare", "flare simulate"]


def seconds(argv: list[str], repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per command; the median is reported (default 5)")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()
    result = {"python_startup_s": round(seconds([sys.executable, "-c", "pass"], args.repeats), 3), "help_s": {}}
    for command in COMMANDS:
        argv = [sys.executable, "-m", "medsplit", *command.split(), "--help"]
        result["help_s"][command or "(none)"] = round(seconds(argv, args.repeats), 3)
        print(f"medsplit {command + ' ' if command else ''}--help: {result['help_s'][command or '(none)']:.3f} s")
    result["slowest_s"] = max(result["help_s"].values())
    print(f"python -c pass: {result['python_startup_s']:.3f} s; slowest --help: {result['slowest_s']:.3f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if result["slowest_s"] < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
