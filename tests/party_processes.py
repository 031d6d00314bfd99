"""What the tests that start ``python -m medsplit`` party processes share: finding the party
processes of a run, and running several commands to the end with every child killed afterwards,
also when an assertion fails."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def party_pids(marker) -> dict[int, list[bytes]]:
    """Party processes (pid -> command line) whose command line holds ``marker`` (their run folder)."""
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"party" in cmd and any(str(marker).encode() in c for c in cmd):
                found[int(d.name)] = cmd
    return found


def spawn(args, log, env=None) -> subprocess.Popen:
    """``python -m medsplit ARGS`` from the checkout, one thread, its output into ``log``."""
    return subprocess.Popen([sys.executable, "-m", "medsplit", *args], stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def run_all(cmds, tmp_path, timeout=300, restart=None) -> tuple[list[int], list[str]]:
    """Run every ``(args, env)`` of ``cmds`` at once until all exit (at most ``timeout`` s in all);
    returns their exit codes and logs. ``restart`` (index -> ``(args, env)``): started once when
    command ``index`` has exited, as an operator restarts a hospital; its code and log come last.
    Whatever is still running afterwards is killed."""
    procs, logs = [], []
    pending = dict(restart or {})

    def start(args, env):
        log = open(tmp_path / f"p{len(procs)}.log", "w")
        logs.append(log)
        procs.append(spawn(args, log, env))

    try:
        for args, env in cmds:
            start(args, env)
        deadline = time.time() + timeout
        while any(p.poll() is None for p in procs) or pending:
            for i in [i for i in pending if procs[i].poll() is not None]:
                start(*pending.pop(i))
            if time.time() > deadline:
                raise TimeoutError(f"commands still running after {timeout} s: "
                                   f"{[i for i, p in enumerate(procs) if p.poll() is None]}")
            time.sleep(0.2)
        return [p.returncode for p in procs], [(tmp_path / f"p{i}.log").read_text() for i in range(len(procs))]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
