"""Does a rerun reproduce a committed result? Compare two results files, number by number.

Reads two records of the same study, the committed one and a rerun's, either
``results_protocols.py`` records (``runs``: protocol, seed, test scores, selected epoch) or attack
harness records (``rows`` of final scores, ``histories`` of SSIM/MSE per logged iteration). Only what
both hold is compared: the rerun's runs (a rerun of seed 0 alone is fine) and, for attacks, the
iterations both logged (a rerun cut to 1,000 iterations is compared on its first 1,000; its final
row is not, since the committed one comes from a longer run). Wall-clock times are never compared.

Prints one line per compared number and a verdict, and saves the comparison as JSON. Exit status 0
when every compared number agrees within ``--tolerance`` (0: to every digit), 1 otherwise, 2 when
the files share nothing to compare.

    python benchmarks/reproduce_check.py benchmarks/results/results-retinamnist-20ep.json RERUN.json
    python benchmarks/reproduce_check.py benchmarks/results/fsha-paper-cpu-lungs.json \\
        reports/attack-lungs-paper-cpu-first1000.json --out benchmarks/results/reproduce-fsha.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# history fields that are measurements (not the clock)
HISTORY_METRICS = ("mse", "psnr", "ssim")


def _protocol_numbers(record: dict) -> dict[str, float]:
    """``protocol/seed/<score>`` -> value for every run of a results_protocols record."""
    out = {}
    for run in record.get("runs", []):
        key = f"{run['protocol']}/seed{run['seed']}"
        for name, value in (run.get("scores") or {}).items():
            out[f"{key}/test {name}"] = value
        for name, value in (run.get("validation") or {}).items():
            out[f"{key}/validation {name}"] = value
        if run.get("selected_epoch") is not None:
            out[f"{key}/selected epoch"] = run["selected_epoch"]
    return out


def _attack_numbers(record: dict) -> dict[str, float]:
    """``run/iteration N/<metric>`` -> value for every logged point of an attack record."""
    out = {}
    for run, history in (record.get("histories") or {}).items():
        for point in history:
            for name in HISTORY_METRICS:
                if name in point:
                    out[f"{run}/iteration {point['iteration']}/{name}"] = point[name]
    return out


def numbers(record: dict) -> dict[str, float]:
    """Every comparable number of a record, by a key that names its run and metric."""
    if "runs" in record:
        return _protocol_numbers(record)
    if "histories" in record:
        return _attack_numbers(record)
    raise ValueError("not a results_protocols record ('runs') nor an attack record ('histories')")


def _agree(a, b, tolerance: float) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if a is None or b is None:
        return a is b
    return abs(float(a) - float(b)) <= tolerance


def compare(committed: dict, rerun: dict, tolerance: float = 0.0) -> dict:
    """The numbers both records hold, side by side, with whether each pair agrees."""
    a, b = numbers(committed), numbers(rerun)
    shared = [k for k in b if k in a]
    rows = [{"number": k, "committed": a[k], "rerun": b[k], "agrees": _agree(a[k], b[k], tolerance)} for k in shared]
    return {"tolerance": tolerance, "compared": len(rows), "agree": sum(r["agrees"] for r in rows),
            "only_in_rerun": [k for k in b if k not in a], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("committed", type=Path, help="the committed results JSON")
    p.add_argument("rerun", type=Path, help="the rerun's results JSON")
    p.add_argument("--tolerance", type=float, default=0.0, help="largest absolute difference that agrees (default 0)")
    p.add_argument("--out", type=Path, default=None, help="where to save the comparison (JSON)")
    args = p.parse_args(argv)
    try:
        result = compare(json.loads(args.committed.read_text()), json.loads(args.rerun.read_text()), args.tolerance)
    except ValueError as e:
        print(f"reproduce_check: {e}", file=sys.stderr)
        return 2
    result.update(committed=str(args.committed), rerun=str(args.rerun))
    for r in result["rows"]:
        mark = "same" if r["agrees"] else "DIFFERS"
        print(f"{mark:8s} {r['number']:55s} committed {r['committed']!s:22s} rerun {r['rerun']!s}")
    print(f"{result['agree']} of {result['compared']} numbers agree (tolerance {args.tolerance:g})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"saved {args.out}")
    if not result["compared"]:
        print("reproduce_check: the two records share no run or logged point", file=sys.stderr)
        return 2
    return 0 if result["agree"] == result["compared"] else 1


if __name__ == "__main__":
    sys.exit(main())
