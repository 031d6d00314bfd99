"""Start the server and every hospital as local processes (``split.transport=gloo`` on one machine).

What ``make retinopathy TRANSPORT=gloo`` runs: one ``python -m medsplit party`` process per
party on loopback, each logging to ``RUN_DIR/parties/<name>.log``. The server process gets no
data root at all (``MEDSPLIT_DATA`` points to a folder that does not exist). If any party fails,
the others stop on their own (their next receive from it fails, or times out after
``split.timeout_s``); whatever is still running after that grace period is killed, so no
process outlives the launcher. A party left running alone, after every other one has exited, has
nobody to exchange with: it is killed after a few seconds instead.

Nor when the launcher itself is stopped: SIGTERM (or SIGHUP) makes it kill its parties before it
exits, and on Linux every party asks the kernel for SIGKILL the moment its parent dies
(``PR_SET_PDEATHSIG``), which covers a launcher killed with SIGKILL too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from medsplit.config import Config
from medsplit.train.party_plan import party_names
from medsplit.transport.gloo import free_port, parse_address


def local_address(cfg: Config) -> str:
    """``split.address`` with port 0 replaced by a free loopback port."""
    host, port = parse_address(cfg.split.address)
    return f"{host}:{port or free_port(host)}"


def party_command(config_path: Path, rank: int, address: str, run_dir: Path, resume: bool, rejoin: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "medsplit", "party", str(config_path), "--rank", str(rank),
           "--address", address, "--run-dir", str(run_dir)]
    return cmd + (["--resume"] if resume else []) + (["--rejoin"] if rejoin else [])


def launch_local(cfg: Config, run_dir: Path, resume: bool = False, env: dict | None = None,
                 party_env: dict[str, dict] | None = None, quiet: bool = False, grace_s: float | None = None,
                 restart: tuple[str, ...] = ()) -> list[int]:
    """Run every party of ``cfg`` as a child process; returns their exit codes (server first).

    Args:
        cfg: the run's config (``split.transport=gloo``).
        run_dir: the run folder (its ``config.yaml`` is what every party loads).
        resume: every party continues from its last checkpoint.
        env: extra environment for every party (tests: fault injection).
        party_env: extra environment per party name.
        quiet: do not echo the evaluating hospital's log.
        grace_s: how long the others may take to stop after one failed (default
            ``split.timeout_s`` + 30 s); then they are killed.
        restart: hospitals restarted once (``party --rejoin``, without ``env``) when their process
            ends abnormally, as an operator would: they rejoin the run at an epoch's start. Their
            exit codes stay the first process's; a restarted process that fails is an error.

    Raises:
        RuntimeError: a party failed; the message names it with its exit code and log tail.
    """
    run_dir = Path(run_dir)
    (run_dir / "parties").mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(cfg.to_yaml())
    address = local_address(cfg)
    names = party_names(cfg.split.clients)
    grace = cfg.split.timeout_s + 30 if grace_s is None else grace_s
    procs, logs, restarted = [], [], []

    def start(rank: int, name: str, rejoin: bool = False) -> subprocess.Popen:
        child_env = dict(os.environ, **({} if rejoin else env or {}), **((party_env or {}).get(name, {})))
        # The parties share this machine's cores (train.threads overrides the even share).
        child_env.setdefault("OMP_NUM_THREADS", str(cfg.train.threads or max(1, (os.cpu_count() or 1) // len(names))))
        if rank == 0:  # the server never needs images: give it none to find
            child_env["MEDSPLIT_DATA"] = str(run_dir / "parties" / "server" / "no-data-here")
        log = open(run_dir / "parties" / f"{name}.log", "a")
        logs.append(log)
        return subprocess.Popen(party_command(config_path, rank, address, run_dir, resume, rejoin),
                                stdout=log, stderr=subprocess.STDOUT, env=child_env, preexec_fn=_die_with_parent(os.getpid()))

    def restart_failed(i: int) -> None:
        if names[i] in restart and names[i] not in [n for n, _ in restarted]:
            restarted.append((names[i], start(i, names[i], rejoin=True)))

    try:
        for rank, name in enumerate(names):
            procs.append(start(rank, name))
        # With split.min_hospitals below the hospitals, a hospital that fails is a dropout the
        # others go on without: only the server failing starts the others' grace period.
        tolerant = cfg.split.min_hospitals is not None and cfg.split.min_hospitals < cfg.split.clients
        with _stopped_by_signals():
            codes = _wait_all(procs, grace, critical=procs[:1] if tolerant else procs, failed=restart_failed,
                              also=lambda: [p for _, p in restarted])
    finally:
        for p in procs + [p for _, p in restarted]:  # never leave a child behind, even on KeyboardInterrupt
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    failed = [(n, c) for n, c in zip(names, codes) if c != 0]
    if any(p.returncode != 0 for _, p in restarted):
        raise RuntimeError("restarted party process(es) failed: " + ", ".join(f"{n} (exit {p.returncode})" for n, p in restarted
                                                                               if p.returncode != 0))
    if failed and tolerant and codes[0] == 0 and (run_dir / "metrics.json").exists():
        if not quiet:  # the run finished without them (metrics.json lists who left, when and why)
            print("dropped out: " + ", ".join(f"{n} (exit {c})" for n, c in failed))
        failed = []
    if failed:
        tails = []
        for n, c in failed:
            text = (run_dir / "parties" / f"{n}.log").read_text(errors="replace").strip().splitlines()
            tails.append(f"--- {n} (exit {c}) ---\n" + "\n".join(text[-8:]))
        raise RuntimeError("party process(es) failed: " + ", ".join(f"{n} (exit {c})" for n, c in failed)
                           + "\n" + "\n".join(tails))
    if not quiet:
        for n in names[1:]:
            text = (run_dir / "parties" / f"{n}.log").read_text(errors="replace")
            if "transport:" in text:  # the evaluating hospital wrote the report
                print(text.strip())
    return codes


# A party still running once every other has exited, after a failure, has nobody left to
# exchange with: it can only be finishing local work (its checkpoints are written atomically) or
# be stuck, so it gets this long rather than the whole grace period.
LONE_PARTY_GRACE_S = 5.0


def _wait_all(procs: list[subprocess.Popen], grace: float, critical: list[subprocess.Popen] | None = None,
              failed=lambda i: None, also=lambda: []) -> list[int]:
    """Wait for every process (and those ``also()`` lists: restarted parties); once one of
    ``critical`` (default: all) fails, give the rest ``grace`` seconds (a party left alone:
    :data:`LONE_PARTY_GRACE_S`), then kill them. ``failed(i)`` is called once when ``procs[i]``
    ends abnormally."""
    deadline = None
    critical = procs if critical is None else critical
    seen: set[int] = set()
    while True:
        codes = [p.poll() for p in procs]
        for i, c in enumerate(codes):
            if c not in (None, 0) and i not in seen:
                seen.add(i)
                failed(i)
        if all(c is not None for c in codes) and all(p.poll() is not None for p in also()):
            return codes
        if deadline is None and any(p.poll() not in (None, 0) for p in critical):
            deadline = time.time() + grace
        running = sum(c is None for c in codes) + sum(p.poll() is None for p in also())
        if deadline is not None and len(procs) > 1 and running == 1:
            deadline = min(deadline, time.time() + LONE_PARTY_GRACE_S)
        if deadline is not None and time.time() > deadline:
            for p in procs + also():
                if p.poll() is None:
                    p.kill()
            return [p.wait() for p in procs]
        time.sleep(0.1)


class LauncherStopped(RuntimeError):
    """The launcher got SIGTERM or SIGHUP; its parties are killed on the way out."""


@contextmanager
def _stopped_by_signals():
    """SIGTERM / SIGHUP raise :class:`LauncherStopped` in the launcher, so that its ``finally``
    kills every party (Python's default for SIGTERM would end the launcher without it)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum, frame):
        raise LauncherStopped(f"the launcher got {signal.Signals(signum).name}: its parties were stopped")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _die_with_parent(parent_pid: int):
    """A ``preexec_fn`` that makes the child get SIGKILL when the launcher dies (Linux; elsewhere
    nothing: the launcher's own ``finally`` and signal handlers still stop its parties)."""
    if not sys.platform.startswith("linux"):
        return None

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    PR_SET_PDEATHSIG = 1

    def arrange():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the launcher died before the request took effect
            os._exit(1)

    return arrange
