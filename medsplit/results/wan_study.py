"""The emulated-link files (``benchmarks/wan.py``: ``"benchmark": "wan"``) as one leaderboard table:
each shaped epoch beside the link-time model's prediction (as written and corrected) and, where
the run timed it, the in-process epoch of the same settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsplit.results.study import Study

__all__ = ["is_wan", "wan_study"]

_ONE_MIB = 1 << 20


def is_wan(data: dict) -> bool:
    return data.get("benchmark") == "wan" and isinstance(data.get("rows"), list)


def _error(predicted: Any, error: Any) -> str:
    return f"{predicted:.2f} ({error:+.0f} %)" if isinstance(predicted, (int, float)) else ""


def wan_study(files: list[tuple[Path, dict]]) -> Study:
    rows = []
    for path, data in files:
        chunk = data.get("chunk_bytes") or _ONE_MIB  # files from before it was recorded used 1 MiB
        chunk_label = f"{chunk >> 20} MiB" + (f" + {(chunk % _ONE_MIB) >> 10} KiB" if chunk % _ONE_MIB else "")
        slow_start = "off" if (data.get("party_sysctls") or {}).get("net.ipv4.tcp_slow_start_after_idle") == "0" else "on"
        for r in data["rows"]:
            mb = sum(link.get("bytes", 0) for link in r.get("links") or []) / 1e6
            rows.append({
                "file": path.name,
                "px": r.get("size"), "protocol": r.get("protocol"), "codec": r.get("codec"),
                "micro-batches": data.get("microbatches", 1) if r.get("profile") != "in-process" else 1,
                "link": r.get("profile"), "method": r.get("method"),
                "gloo chunk": chunk_label if r.get("profile") != "in-process" else "",
                "TCP slow start after idle": slow_start if r.get("rate_bps") else "",
                "epoch s": f"{r['epoch_s']:.2f}" if isinstance(r.get("epoch_s"), (int, float)) else "",
                "model s (error)": _error(r.get("predicted_epoch_s"), r.get("error_pct")),
                "corrected model s (error)": _error(r.get("predicted_corrected_epoch_s"), r.get("corrected_error_pct")),
                "x in-process": f"{r['vs_inprocess']:.2f}" if isinstance(r.get("vs_inprocess"), (int, float)) else "",
                "MB/epoch": f"{mb:.1f}" if mb else "",
                "load": f"{r['load_before'][0]:.1f}" if r.get("load_before") else "",
            })
    # the model with gloo's rendezvous (three one-way delays per message, an upper bound) stays in
    # the files and in docs/studies/wan.md: one column fewer keeps the table within the page
    columns = ["px", "protocol", "codec", "micro-batches", "gloo chunk", "link", "TCP slow start after idle", "epoch s",
               "model s (error)", "corrected model s (error)", "x in-process", "MB/epoch", "load"]
    first = files[0][1]
    facts = {"set-up": f"{first.get('model')}, CUT {first.get('cut')}, {first.get('hospitals')} hospitals, batch "
                       f"{first.get('batch')}, {first.get('steps_per_hospital')} timed batches per hospital, one thread "
                       f"per party, {first.get('cores')} cores",
             "formula": str(first.get("formula", "")),
             "command": "sudo env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/wan.py --sizes 64 "
                        "(see docs/studies/wan.md for every file's command)"}
    notes = ["model: the direct (unshaped) epoch of the same run plus link_time.epoch_seconds per directed link; "
             "corrected: two one-way delays per message instead of one where a step's message took two gloo chunks (1 MiB), "
             "one where it takes one (4 MiB + 64 KiB) or micro-batches pipeline the sends; fitted to the first quiet runs "
             "(between the model as written and the rendezvous bound); the runs measured after the fit (int8-gradients "
             "and 4mib-chunks files) were not used to choose it; "
             "codec ACT/GRAD: activations / gradients (int8 alone: gradients in fp32); "
             "(the files also hold the model with three one-way delays per message, gloo's rendezvous: an upper bound). "
             "x in-process: the shaped epoch over the same epoch with every party in one process (one thread). "
             "load: the 1-minute load average before the row; rows at load 6-13 are noise-limited."]
    return Study(", ".join(p.name for p, _ in files), "Emulated hospital links (network namespaces)", "benchmark",
                 columns, rows, facts, [], notes, "studies/wan.md")
