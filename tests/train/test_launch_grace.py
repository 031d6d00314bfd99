"""The launcher's grace period after a party fails: the others get ``grace`` seconds to stop on
their own, but a party left alone (every other one has exited) has nobody to exchange with and is
killed after LONE_PARTY_GRACE_S, so a stuck party does not hold a failed run for the whole grace."""

import subprocess
import sys
import time

import pytest

from medsplit.train import launch
from medsplit.train.launch import _wait_all


@pytest.fixture(autouse=True)
def _short_lone_grace(monkeypatch):
    monkeypatch.setattr(launch, "LONE_PARTY_GRACE_S", 1.0)


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_stuck_party_left_alone_is_killed_long_before_the_grace_period():
    procs = [_spawn("raise SystemExit(3)"), _spawn("raise SystemExit(3)"), _spawn("import time; time.sleep(120)")]
    try:
        start = time.monotonic()
        codes = _wait_all(procs, grace=100.0)
        elapsed = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes[:2] == [3, 3] and codes[2] == -9  # the lone one was killed, not left to finish its sleep
    assert elapsed < 50, elapsed  # the lone party's grace (1 s here), not the 100 s one


def test_two_parties_still_running_keep_the_whole_grace_period():
    procs = [_spawn("raise SystemExit(3)"), _spawn("import time; time.sleep(3)"), _spawn("import time; time.sleep(3)")]
    try:
        codes = _wait_all(procs, grace=100.0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [3, 0, 0]  # both finished on their own: neither was alone, so neither was cut short
