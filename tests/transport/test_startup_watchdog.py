"""Start-up and liveness of a gloo run (issue 30, findings 4-5): the check-in names a duplicated
rank, another number of parties, the config keys that differ and a party without the shared
secret, all before the gloo group forms and within ``split.timeout_s``; forming the group is
bounded; the launcher's parties die with it; a frozen party is named by every peer that waits on it.

The fast tests run every party's transport in a thread of this process (real TCPStore and gloo
on loopback); the slow ones start real ``python -m medsplit`` processes and kill whatever is left
of them in a ``finally``.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medsplit.config import load_config
from medsplit.train.parties import config_key_hashes
from medsplit.train.party_plan import config_hash
from medsplit.transport import liveness
from medsplit.transport.base import TransportError
from medsplit.transport.gloo import GlooTransport, free_port
from party_processes import party_pids, run_all

ROOT = Path(__file__).resolve().parents[2]
RANKS = {"server": 0, "client0": 1, "client1": 2, "aggregator": 0}
CFG = load_config(None, ["split.transport=gloo"])
CHECKIN = {"config_hash": config_hash(CFG), "config_keys": config_key_hashes(CFG)}


def _open_all(parties, timeout_s=20.0, stagger_s=0.0):
    """Open each ``(name, ranks, checkin, secret)`` in its own thread; returns ``{i: transport or
    error}`` and the seconds it took; closes every transport that opened."""
    address = f"127.0.0.1:{free_port()}"
    out, threads = {}, []

    def open_one(i, name, ranks, checkin, secret):
        try:
            out[i] = GlooTransport(name, ranks, address, timeout_s, checkin=checkin, secret=secret)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out[i] = e

    t0 = time.monotonic()
    try:
        for i, party in enumerate(parties):
            threads.append(threading.Thread(target=open_one, args=(i, *party), daemon=True))
            threads[-1].start()
            time.sleep(stagger_s if i == 0 else 0)  # the server's store first
        for t in threads:
            t.join(timeout_s + 30)
        return dict(out), time.monotonic() - t0
    finally:
        for t in out.values():
            if isinstance(t, GlooTransport):
                t.close()


def _party(name, ranks=RANKS, checkin=CHECKIN, secret=None):
    return (name, ranks, checkin, secret)


def test_a_duplicated_rank_is_named_at_once_with_both_claimants():
    """Finding 4: everyone used to wait for the timeout and print "wait timeout ... keys: /0/2"."""
    out, seconds = _open_all([_party("server"), _party("client0"), _party("client0")], timeout_s=60, stagger_s=0.3)
    assert seconds < 20, seconds
    server = str(out[0])
    assert "rank 1 is claimed by 2 processes: client0 (rank 1, host" in server and "(a duplicated --rank)" in server, server
    assert "client1 (rank 2) had not checked in yet" in server
    assert all("the server refused this run: rank 1 is claimed by 2 processes" in str(out[i]) for i in (1, 2))


def test_a_party_expecting_another_number_of_hospitals_is_named():
    """Finding 4: a join with another split.clients hung inside ProcessGroupGloo for 70-150 s."""
    cfg = load_config(None, ["split.transport=gloo", "split.clients=1"])
    other = {"config_hash": config_hash(cfg), "config_keys": config_key_hashes(cfg)}
    out, seconds = _open_all([_party("server"), _party("client0", {"server": 0, "client0": 1}, other), _party("client1")],
                             timeout_s=60, stagger_s=0.3)
    assert seconds < 20, seconds
    server = str(out[0])
    assert "client0 (rank 1, host" in server and "expects 2 parties (split.clients=1), the server 3 (split.clients=2)" in server
    assert "the configs differ in split.clients" in server
    assert "the server refused this run" in str(out[1])


def test_a_config_mismatch_names_the_keys_that_differ():
    cfg = load_config(None, ["split.transport=gloo", "train.lr=0.5", "split.cut=2", "data.source=/elsewhere"])
    other = {"config_hash": config_hash(cfg), "config_keys": config_key_hashes(cfg)}
    out, _ = _open_all([_party("server"), _party("client0", checkin=other), _party("client1")], stagger_s=0.3)
    server = str(out[0])
    assert "client0 (rank 1, host" in server and f"has config hash {other['config_hash']}, the server {CHECKIN['config_hash']}" in server
    assert "the configs differ in split.cut, train.lr" in server  # data.source is a site's own: not compared
    assert "the server refused this run" in str(out[1]) and "train.lr" in str(out[1])


def test_a_party_that_never_checks_in_is_named_at_the_deadline():
    out, seconds = _open_all([_party("server"), _party("client0")], timeout_s=3)
    assert "client1 (rank 2) did not check in within 3 s (split.timeout_s)" in str(out[0])
    assert seconds < 15


def test_a_rank_claimed_after_the_run_formed_names_its_holder():
    ranks = {"server": 0, "client0": 1}
    address = f"127.0.0.1:{free_port()}"
    ends = {}
    threads = [threading.Thread(target=lambda n=n: ends.__setitem__(n, GlooTransport(n, ranks, address, 20, checkin=CHECKIN)), daemon=True)
               for n in ranks]
    try:
        [t.start() for t in threads]
        [t.join(40) for t in threads]
        with pytest.raises(TransportError, match=r"client0: rank 1 is already taken by client0 \(rank 1, host .*\(a duplicated --rank\)"):
            GlooTransport("client0", ranks, address, 5, checkin=CHECKIN)
    finally:
        for t in ends.values():
            t.close()


@pytest.mark.parametrize("server_secret,client_secret,server_says,client_says", [
    (b"s" * 32, None, "client0 (rank 1, host", "the server refused this run"),
    (b"s" * 32, b"t" * 32, "is not authenticated: its check-in does not carry the proof of split.secret_file's secret",
     "not authenticated by split.secret_file's secret"),
    (None, b"s" * 32, "client0 (rank 1, host", "not authenticated by split.secret_file's secret"),
])
def test_a_party_without_the_shared_secret_is_refused_and_named(server_secret, client_secret, server_says, client_says):
    ranks = {"server": 0, "client0": 1}
    out, _ = _open_all([_party("server", ranks, secret=server_secret), _party("client0", ranks, secret=client_secret)], stagger_s=0.3)
    assert server_says in str(out[0]) and "refused the run at check-in" in str(out[0]), out[0]
    assert client_says in str(out[1]), out[1]


def test_parties_with_the_same_secret_form_the_group_and_authenticate_every_frame():
    ranks = {"server": 0, "client0": 1}
    address = f"127.0.0.1:{free_port()}"
    ends = {}
    threads = [threading.Thread(target=lambda n=n: ends.__setitem__(n, GlooTransport(n, ranks, address, 20, checkin=CHECKIN, secret=b"s" * 32)),
                                daemon=True) for n in ranks]
    try:
        [t.start() for t in threads]
        [t.join(40) for t in threads]
        assert ends["server"].run_key is not None and ends["server"].framing_bytes_per_message == 64
        sender = threading.Thread(target=ends["client0"].send, args=("server", b"x" * 5000))
        sender.start()
        assert ends["server"].recv("client0", 10_000) == b"x" * 5000
        sender.join(10)
    finally:
        for t in ends.values():
            t.close()


def test_forming_the_group_is_bounded_by_the_timeout(monkeypatch):
    import medsplit.transport.gloo as gloo_module

    real = gloo_module.dist.ProcessGroupGloo
    release = threading.Event()

    class Stuck:  # what gloo did for 70-150 s with a 30 s timeout
        _Options = real._Options
        create_device = staticmethod(real.create_device)

        def __init__(self, *args):
            release.wait(60)
            raise RuntimeError("released")

    monkeypatch.setattr(gloo_module.dist, "ProcessGroupGloo", Stuck)
    address, errors = f"127.0.0.1:{free_port()}", {}

    def start(name):
        try:
            GlooTransport(name, {"server": 0, "client0": 1}, address, 2, checkin=CHECKIN)
        except TransportError as e:
            errors[name] = str(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=start, args=(n,), daemon=True) for n in ("server", "client0")]
    try:
        [t.start() for t in threads]
        [t.join(15) for t in threads]
        assert time.monotonic() - t0 < 10
        # each pair of parties forms its own two-rank group (medsplit/transport/links.py)
        assert "server (rank 0): the link to client0 (rank 1) did not form within 2 s (split.timeout_s)" in errors["server"]
        assert "client0 (rank 1): the link to server (rank 0) did not form within 2 s (split.timeout_s)" in errors["client0"]
    finally:
        release.set()


def test_a_party_that_stops_beating_is_named_by_every_other():
    """The heartbeat a frozen party stops: named by a peer that never waited on it."""
    import datetime

    import torch.distributed as dist

    port = free_port()
    store = dist.TCPStore("127.0.0.1", port, 1, is_master=True, timeout=datetime.timedelta(seconds=10), wait_for_workers=False,
                          use_libuv=False)
    names = {0: "server", 1: "client0", 2: "client1"}
    beats = {r: liveness.Liveness("127.0.0.1", port, r, names) for r in names}
    try:
        time.sleep(2 * liveness.BEAT_S + 0.5)
        assert beats[2].report() == ""
        beats[1].close()  # client0 freezes
        time.sleep(liveness.STALL_S + 2)
        for r in (0, 2):
            assert "client0 (rank 1) showed no sign of life for the last" in beats[r].report()
        assert "client1" not in beats[0].report()
    finally:
        for b in beats.values():
            b.close()
        del store


# ---- real processes ----------------------------------------------------------------------
def _tiny(tmp_path, *extra):
    return ["task=retinopathy", "data.synthetic_size=64", "data.img_size=32", "model.name=resnet18", "train.batch_size=16",
            "train.eval_batch_size=64", "split.cut=3", "data.source=synthetic", "train.threads=1", "output.tensorboard=false",
            f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache",
            "split.protocol=sequential", "split.clients=2", "split.transport=gloo", *extra]


def _kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for(predicate, timeout_s, what):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _launcher(tmp_path, name, *extra):
    log = open(tmp_path / f"{name}.log", "w")
    cmd = [sys.executable, "-m", "medsplit", "train", *_tiny(tmp_path, f"output.name={name}", *extra)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1")), log


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_launchers_parties_die_with_it(tmp_path, sig):
    """Finding 5: SIGTERM to `train` orphaned the three parties, which finished the run alone."""
    marker = str(tmp_path / "runs" / "watched")
    launcher, log = _launcher(tmp_path, "watched", "train.epochs=50", "split.timeout_s=60")
    try:
        _wait_for(lambda: len(party_pids(marker)) == 3, 300, "three parties")
        time.sleep(2)  # past their start-up
        launcher.send_signal(sig)
        launcher.wait(30)
        _wait_for(lambda: not party_pids(marker), 20, "the parties to die with the launcher")
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        _kill_all(party_pids(marker))
        log.close()


@pytest.mark.slow
def test_a_frozen_hospital_is_named_by_every_peer_that_waits(tmp_path):
    """Finding 5: a SIGSTOPped hospital was named only by the party waiting on it directly."""
    run_dir = tmp_path / "runs" / "frozen"
    launcher, log = _launcher(tmp_path, "frozen", "train.epochs=50", "split.timeout_s=6")
    try:
        pids = _wait_for(lambda: (p := party_pids(str(run_dir))) and len(p) == 3 and p, 300, "three parties")
        frozen = next(pid for pid, cmd in pids.items() if b"--rank" in cmd and cmd[cmd.index(b"--rank") + 1] == b"1")
        _wait_for(lambda: any((run_dir / "parties" / "client0").glob("*")), 400, "client0's first checkpoint")
        os.kill(frozen, signal.SIGSTOP)
        launcher.wait(240)
        for peer in ("server", "client1"):
            text = (run_dir / "parties" / f"{peer}.log").read_text()
            assert "client0 (rank 1) showed no sign of life" in text, f"{peer}: {text[-3000:]}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        _kill_all(party_pids(str(run_dir)))
        log.close()


@pytest.mark.slow
def test_join_with_another_number_of_hospitals_is_refused_quickly_naming_the_key(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "cfg.yaml"
    config.write_text("task: retinopathy\n")
    common = _tiny(tmp_path, "train.epochs=1", "split.timeout_s=60")
    cmds = [["serve", str(config), *common, "--address", address, "--run-dir", str(tmp_path / "s")],
            ["join", str(config), *common, "split.clients=1", "--address", address, "--rank", "1", "--data", "synthetic",
             "--run-dir", str(tmp_path / "h")]]
    t0 = time.time()
    codes, texts = run_all([(args, None) for args in cmds], tmp_path, timeout=120)
    elapsed = time.time() - t0
    assert codes == [3, 3], texts
    assert elapsed < 50, elapsed  # not the timeout (60 s), nor gloo's hang
    assert "expects 2 parties (split.clients=1), the server 3 (split.clients=2)" in texts[0], texts[0]
    assert "the configs differ in split.clients" in texts[1], texts[1]
