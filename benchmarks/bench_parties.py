"""Running a benchmark's parties as processes (transport.py, microbatch.py, wan.py): start every
command at once, wait for all, kill whatever is left (also on failure), and name the one that failed."""

from __future__ import annotations

import json
import subprocess


def run_parties(cmds: list[list[str]], env: dict, timeout: float, names: list[str]) -> list[str]:
    """Run every command of ``cmds`` at once (``names[i]`` says which party ``cmds[i]`` is in an
    error); returns their standard outputs once all have exited 0. Nothing outlives the call."""
    procs = []
    try:
        for cmd in cmds:
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, p, (_, err) in zip(names, procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {p.returncode}): {err[-3000:]}")
    return [out for out, _ in outs]


def last_json(out: str) -> dict:
    """The JSON object a party printed last."""
    return json.loads(out.strip().splitlines()[-1])
