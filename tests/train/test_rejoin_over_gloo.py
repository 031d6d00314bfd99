"""A restarted hospital rejoins a gloo run (issue 31, item 3): killed mid-epoch, started again with
``party --rejoin``, admitted by the server at an epoch's start with the current weights; the run
equals the in-process schedule with the same departure and return, to the last digit and byte."""

import pytest

from medsplit.train.launch import launch_local
from medsplit.train.loop import train
from medsplit.transport.gloo import free_port
from tiny_runs import history_rows as _history, run_metrics as _metrics, tiny_federation as _tiny, tiny_federation_overrides
from party_processes import party_pids, run_all


@pytest.mark.slow
@pytest.mark.parametrize("task,protocol,handover", [
    ("retinopathy", "splitfed", "carry"),  # the aggregator's averaged optimiser state reaches the restart
    ("lungs", "sequential", "local"),  # each hospital keeps its own Adam moments: the restarted one's start afresh
])
def test_a_restarted_hospital_rejoins_with_the_current_weights_and_equals_the_schedule(tmp_path, task, protocol, handover):
    # it leaves in epoch 1; its restart is admitted at the start of epoch 2, 3 or 4
    settings = f"train.epochs=4 split.optimizer_handover={handover}".split()
    cfg = _tiny(tmp_path, task, protocol, "output.name=gloo", "split.min_hospitals=2", "split.transport=gloo", *settings)
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
    ref = _metrics(train(_tiny(tmp_path, task, protocol, "output.name=inprocess", "split.min_hospitals=2", *settings,
                               f"split.dropout=client1:epoch=1:after=1:rejoin={dep['rejoined']}"), quiet=True))
    assert [{k: v for k, v in d.items() if k != "why"} for d in ref["dropouts"]] == \
        [{k: v for k, v in d.items() if k != "why"} for d in got["dropouts"]]
    assert _history(got) == _history(ref)
    headline = "auc" if task == "retinopathy" else "dice"
    assert got["test"][headline] == ref["test"][headline] and got["test_loss"] == ref["test_loss"]
    assert got["bytes"] == ref["bytes"]
    assert [p["name"] for p in got["transport"]["parties"]] == ["server", "client0", "client1", "client2"]


@pytest.mark.slow
def test_a_hospital_restarted_with_join_rejoin_trains_again_in_a_served_run(tmp_path):
    # The operators' commands: `serve` and three `join`s, each hospital on its own data folder;
    # hospital 2 (client1) is killed in epoch 1 and its operator starts `join --rejoin`.
    address = f"127.0.0.1:{free_port()}"
    common = tiny_federation_overrides(tmp_path, "retinopathy", "splitfed", "split.min_hospitals=2",
                                       clients=3, epochs=4)
    config = tmp_path / "cfg.yaml"
    config.write_text("task: retinopathy\n")
    server = (["serve", str(config), *common, "--address", address, "--run-dir", str(tmp_path / "server")], None)

    def join(rank, *flags):
        return ["join", str(config), *common, "--address", address, "--rank", str(rank), "--data", "synthetic",
                "--run-dir", str(tmp_path / f"h{rank}"), *flags]

    hospitals = [(join(r), {"MEDSPLIT_FAULT": "client1:epoch=0:step=1"} if r == 2 else None) for r in (1, 2, 3)]
    codes, logs = run_all([server, *hospitals], tmp_path, timeout=400, restart={2: (join(2, "--rejoin"), None)})
    assert codes == [0, 0, -9, 0, 0], "\n".join(log[-2000:] for log in logs)
    got = _metrics(tmp_path / "h1")  # SplitFed: the first hospital evaluates and reports
    (dep,) = got["dropouts"]
    assert (dep["hospital"], dep["epoch"], dep["after"]) == ("client1", 1, 1) and dep["rejoined"] in (2, 3, 4)
    assert "client1 restarted" in logs[0] and f"rejoins at epoch {dep['rejoined']}" in logs[0]
    # every epoch's row says how many hospitals trained: two from its departure until it is back
    present = {r["epoch"]: r["hospitals"] for r in got["history"] if r["client"] == "all"}
    assert present == {e: 2 if e < dep["rejoined"] else 3 for e in (1, 2, 3, 4)}, present
    # the restarted hospital trains again from the epoch it rejoined (its epoch-1 losses left with it)
    trained = {r["epoch"] for r in got["history"] if r["client"] == "client1" and r["train_loss"] is not None}
    assert trained == set(range(dep["rejoined"], 5)), got["history"]
