"""A relay hospital that dies after its own turn (issue 31, item 3): the run goes on without it.

Its turn is over: its training is in the weights it handed on, and its losses reached the server
when the turn ended. Only the server decides that it left, at its next exchange with it: the next
epoch's batch counts. So it leaves the next epoch after 0 of its batches, which is the in-process
schedule ``client1:epoch=<next>:after=0``, to the last digit and byte.
"""

import pytest

from medsplit.train.launch import launch_local
from medsplit.train.loop import train
from party_processes import party_pids
from tiny_runs import history_rows as _history, run_metrics as _metrics, tiny_federation as _tiny


@pytest.mark.slow
@pytest.mark.parametrize("task,roster", [
    # killed right after the meeting point that closes the relay's epoch (client2's turn took the
    # weights client1 handed on): the server cannot tell it the roster the epoch ends with
    ("retinopathy", 3),
    # killed after that last roster of the epoch: its losses, the tested epoch and the checkpoint
    # follow; segmentation: the hospital computes its own losses, which went with its turn's end
    ("lungs", 4),
])
def test_a_relay_hospital_killed_after_its_turn_leaves_the_next_epoch(tmp_path, task, roster):
    # MEDSPLIT_FAULT counts from 0: epoch=1 is epoch 2. The relay sends client1 five rosters an
    # epoch: before each of the three turns, after the last turn, and when the epoch ends.
    ref = _metrics(train(_tiny(tmp_path, task, "sequential", "output.name=inprocess", "split.min_hospitals=2",
                               "split.dropout=client1:epoch=3:after=0"), quiet=True))
    cfg = _tiny(tmp_path, task, "sequential", "output.name=gloo", "split.min_hospitals=2", "split.transport=gloo")
    run_dir = tmp_path / "runs" / "gloo"
    try:
        codes = launch_local(cfg, run_dir, quiet=True, env={"MEDSPLIT_FAULT": f"client1:epoch=1:roster={roster}"}, grace_s=60)
        got = _metrics(run_dir)
    finally:
        assert not party_pids(run_dir)
    assert codes == [0, 0, -9, 0]  # server, client0, client1 killed, client2
    (dep,) = got["dropouts"]
    assert (dep["hospital"], dep["epoch"], dep["after"]) == ("client1", 3, 0)
    assert "client1" in dep["why"]  # the server names the link that failed
    assert "client1 dropped out in epoch 3 after 0 of its batches" in (run_dir / "parties" / "server.log").read_text()
    assert _history(got) == _history(ref)
    assert [r["train_loss"] is not None for r in got["history"] if r["epoch"] == 2 and r["client"] == "client1"] == [True]
    headline = "auc" if task == "retinopathy" else "dice"
    assert got["test"][headline] == ref["test"][headline] and got["test_loss"] == ref["test_loss"]
    assert got["bytes"] == ref["bytes"]
    assert [p["name"] for p in got["transport"]["parties"]] == ["server", "client0", "client2"]
