"""A restarted hospital rejoins a gloo run (issue 31, item 3): killed mid-epoch, started again with
``party --rejoin``, admitted by the server at an epoch's start with the current weights; the run
equals the in-process schedule with the same departure and return, to the last digit and byte."""

import pytest

from medsplit.train.launch import launch_local
from medsplit.train.loop import train
from party_processes import party_pids
from dropout_runs import history_rows as _history, run_metrics as _metrics, tiny_federation as _tiny


@pytest.mark.slow
@pytest.mark.parametrize("task,protocol", [("retinopathy", "splitfed"), ("lungs", "sequential")])
def test_a_restarted_hospital_rejoins_with_the_current_weights_and_equals_the_schedule(tmp_path, task, protocol):
    four = "train.epochs=4"  # it leaves in epoch 1; its restart is admitted at the start of epoch 2, 3 or 4
    cfg = _tiny(tmp_path, task, protocol, "output.name=gloo", "split.min_hospitals=2", "split.transport=gloo", four)
    run_dir = tmp_path / "runs" / "gloo"
    try:
        codes = launch_local(cfg, run_dir, quiet=True, env={"MEDSPLIT_FAULT": "client1:epoch=0:step=1"}, grace_s=60,
                             restart=("client1",))
        got = _metrics(run_dir)
    finally:
        assert not party_pids(run_dir)
    assert codes == [0, 0, -9, 0]  # the first client1 was killed; its restart finished the run (else an error)
    (dep,) = got["dropouts"]
    assert (dep["hospital"], dep["epoch"], dep["after"]) == ("client1", 1, 1) and dep["rejoined"] in (2, 3, 4)
    server_log = (run_dir / "parties" / "server.log").read_text()
    assert "client1 restarted" in server_log and f"rejoins at epoch {dep['rejoined']}" in server_log
    ref = _metrics(train(_tiny(tmp_path, task, protocol, "output.name=inprocess", "split.min_hospitals=2", four,
                               f"split.dropout=client1:epoch=1:after=1:rejoin={dep['rejoined']}"), quiet=True))
    assert [{k: v for k, v in d.items() if k != "why"} for d in ref["dropouts"]] == \
        [{k: v for k, v in d.items() if k != "why"} for d in got["dropouts"]]
    assert _history(got) == _history(ref)
    headline = "auc" if task == "retinopathy" else "dice"
    assert got["test"][headline] == ref["test"][headline] and got["test_loss"] == ref["test_loss"]
    assert got["bytes"] == ref["bytes"]
    assert [p["name"] for p in got["transport"]["parties"]] == ["server", "client0", "client1", "client2"]
