import os
import sys
from pathlib import Path

import pytest
import torch

# The tests live in a folder per package; their shared helpers (party_processes.py) live here.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Real data lives beside the checkout (../shared/data); tests read it there, never copy it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs its workers on the machine's cores: one thread each, as each party process
    # gets its share (tests that compare placements set train.threads themselves).
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    # Under pytest-xdist the workers take the tests in collection order. The process-level tests
    # (marked slow, 15-95 s each) sit in the folders collected last (transport/, train/), and one of
    # them started last keeps a worker busy while the other has nothing left: they go first
    # (a stable sort, so each group keeps its order and every worker collects the same list).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_sessionstart(session):
    # In CI the real-data tests must run: a missing data folder fails the run instead of
    # letting those tests skip quietly and pass.
    if os.environ.get("CI") and not SHARED_DATA.exists():
        raise pytest.UsageError(f"CI expects the real data at {SHARED_DATA}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def nvflare():
    """The nvflare module; tests that need it skip where the ``flare`` extra is not installed."""
    return pytest.importorskip("nvflare")
