"""Hospitals that drop out (issue 31, item 3): split.min_hospitals and the split.dropout schedule.

A run goes on with the hospitals that remain; the in-process schedule and a hospital killed over
gloo give the same numbers. Tiny synthetic images, one thread per process; process tests kill
what is left of their parties in a ``finally`` (launch_local's own) and check none is left.
"""

import pytest

from medsplit.config import ConfigError
from medsplit.train.launch import launch_local
from medsplit.train.loop import train
from medsplit.train.roster import DropoutError
from tiny_runs import history_rows as _history, run_metrics as _metrics, tiny_federation as _tiny
from party_processes import party_pids


def _weights_bytes(m, epoch):
    """Weights (and optimiser state) bytes of ``epoch`` (from 1; byte rows count epochs from 0)."""
    return sum(r["bytes"] for r in m["bytes"] if r["epoch"] == epoch - 1 and r["kind"] == "weights")


# ---- the config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,match", [
    (["split.dropout=client1:epoch=2:after=1"], r"leaves 2 of 3 hospitals, fewer than split.min_hospitals = 3 \(null: all\)"),
    (["split.min_hospitals=4"], r"'split.min_hospitals' = 4 must be in 1..3"),
    (["split.min_hospitals=2", "split.dropout=client3:epoch=1:after=0"], r"client3 does not exist"),
    (["split.min_hospitals=2", "split.dropout=client1:epoch=0:after=0"], r"epochs count from 1"),
    (["split.min_hospitals=2", "split.dropout=client1:epoch=2:after=1:rejoin=2"], r"rejoin=2 must come after epoch=2"),
    (["split.min_hospitals=2", "split.dropout=client1:epoch=2"], r"needs epoch= and after="),
    (["split.min_hospitals=2", "split.dropout=client1:epoch=2:after=1:when=3"], r"'when=3'"),
    (["split.min_hospitals=2", "split.dropout=client1:epoch=1:after=0,client2:epoch=2:after=0"], r"leaves 1 of 3"),
    (["split.protocol=centralised", "split.min_hospitals=2"], r"pools every hospital's images"),
    (["split.min_hospitals=2", "split.transport=gloo", "split.dropout=client1:epoch=1:after=0"], r"over gloo a hospital drops out by failing"),
    (["split.min_hospitals=2", "split.transport=flare", "split.dropout=client1:epoch=1:after=0"], r"over flare a hospital drops out by failing"),
])
def test_a_dropout_setting_that_cannot_work_is_refused_naming_the_key(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        _tiny(tmp_path, "retinopathy", "splitfed", *extra)


def test_hospitals_that_rejoin_free_a_place_for_a_later_dropout(tmp_path):
    cfg = _tiny(tmp_path, "retinopathy", "splitfed", "split.min_hospitals=2",
                "split.dropout=client1:epoch=1:after=0:rejoin=2,client2:epoch=2:after=0")
    assert cfg.split.dropout.startswith("client1")


# ---- in one process: the schedule --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["splitfed", "fedavg", "splitfed-v1"])
def test_averaging_goes_on_with_the_hospitals_present_and_a_rejoined_one_trains_again(tmp_path, protocol):
    full = _metrics(train(_tiny(tmp_path, "retinopathy", protocol, "output.name=full"), quiet=True))
    cfg = _tiny(tmp_path, "retinopathy", protocol, "output.name=drop", "split.min_hospitals=2",
                "split.dropout=client1:epoch=2:after=1:rejoin=3")
    got = _metrics(train(cfg, quiet=True))
    assert got["dropouts"] == [{"hospital": "client1", "epoch": 2, "after": 1, "why": "split.dropout schedule", "rejoined": 3}]
    assert got["min_hospitals"] == 2
    report = (tmp_path / "reports" / "drop.html").read_text()
    assert "Hospitals that dropped out" in report and "split.dropout schedule" in report
    rows = {(r["epoch"], r["client"]): r for r in got["history"]}
    assert [rows[(e, "all")]["hospitals"] for e in (1, 2, 3)] == [3, 2, 3]
    assert rows[(2, "client1")]["train_loss"] is None  # its losses of the epoch it left are not reported
    assert rows[(3, "client1")]["train_loss"] is not None  # back, with the current weights
    # Epoch 1 is the full federation's to the last digit; from the dropout on the runs part.
    losses = lambda m: [h[:4] for h in _history(m)]  # noqa: E731
    assert losses(got)[:4] == losses(full)[:4]
    assert losses(got)[4:] != losses(full)[4:]
    if protocol != "fedavg":  # split protocols: the round's averaging leaves the absent hospital out
        per_round = _weights_bytes(full, 2) / 3  # upload + download of one hospital's weights (and moments)
        assert _weights_bytes(got, 2) == pytest.approx(2 * per_round)
        # epoch 3: everyone again, plus the weights (and moments) the rejoining hospital was sent
        assert _weights_bytes(got, 3) == pytest.approx(3 * per_round + per_round / 2)


@pytest.mark.slow
def test_the_relay_hands_the_weights_past_a_hospital_that_left(tmp_path):
    cfg = _tiny(tmp_path, "retinopathy", "sequential", "output.name=drop", "split.min_hospitals=2",
                "split.dropout=client1:epoch=2:after=0")
    got = _metrics(train(cfg, quiet=True))
    rows = {(r["epoch"], r["client"]): r for r in got["history"]}
    assert [rows[(e, "all")]["hospitals"] for e in (1, 2, 3)] == [3, 2, 2]
    assert rows[(2, "client1")]["train_loss"] is None and rows[(3, "client1")]["train_loss"] is None
    handed = lambda epoch: {(r["sender"], r["receiver"]) for r in got["bytes"]  # noqa: E731
                            if r["epoch"] == epoch - 1 and r["link"] == "weights"}
    assert handed(1) == {("client0", "client1"), ("client1", "client2")}
    # from epoch 2 (after=0: it takes no part in it) the weights pass client1 by
    assert handed(2) == handed(3) == {("client2", "client0"), ("client0", "client2")}


@pytest.mark.slow
def test_the_hospital_that_keeps_the_history_cannot_leave(tmp_path):
    cfg = _tiny(tmp_path, "retinopathy", "splitfed", "output.name=keeper", "split.min_hospitals=2",
                "split.dropout=client0:epoch=2:after=1")
    with pytest.raises(DropoutError, match=r"client0 left in epoch 2 .* keeps the run's history"):
        train(cfg, quiet=True)


# ---- over gloo: a hospital killed mid-epoch equals the schedule --------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("task,protocol", [("retinopathy", "splitfed"), ("lungs", "sequential")])
def test_a_hospital_killed_over_gloo_equals_the_in_process_schedule(tmp_path, task, protocol):
    # client1 is killed as it starts its second batch of epoch 2 (MEDSPLIT_FAULT counts from 0):
    # the schedule's "epoch 2, after 1 batch"
    two_epochs = "train.epochs=2"  # the dropout happens in the last epoch: the test and the report run without client1
    ref = _metrics(train(_tiny(tmp_path, task, protocol, "output.name=inprocess", "split.min_hospitals=2", two_epochs,
                               "split.dropout=client1:epoch=2:after=1"), quiet=True))
    cfg = _tiny(tmp_path, task, protocol, "output.name=gloo", "split.min_hospitals=2", "split.transport=gloo", two_epochs)
    run_dir = tmp_path / "runs" / "gloo"
    try:
        launch_local(cfg, run_dir, quiet=True, env={"MEDSPLIT_FAULT": "client1:epoch=1:step=1"}, grace_s=60)
        got = _metrics(run_dir)
    finally:
        assert not party_pids(run_dir)
    (dep,) = got["dropouts"]
    assert (dep["hospital"], dep["epoch"], dep["after"]) == ("client1", 2, 1)
    assert "client1" in dep["why"]  # the server names the link that failed
    assert _history(got) == _history(ref)
    headline = "auc" if task == "retinopathy" else "dice"
    assert got["test"][headline] == ref["test"][headline] and got["test_loss"] == ref["test_loss"]
    assert got["bytes"] == ref["bytes"]
    assert [p["name"] for p in got["transport"]["parties"]] == ["server", "client0", "client2"]


@pytest.mark.slow
def test_a_relay_hospital_killed_between_its_turns_is_the_only_one_to_leave(tmp_path):
    # client1 is killed while client0 trains its turn of epoch 2 (right after the meeting point
    # before client0's turn; MEDSPLIT_FAULT counts from 0), so client0 finds it first: its hand-over
    # fails. client0 goes on; client1 alone leaves, after 0 of its batches of epoch 2, and the
    # weights go from client0 to client2: the in-process schedule "epoch 2, after 0".
    two_epochs = "train.epochs=2"
    ref = _metrics(train(_tiny(tmp_path, "retinopathy", "sequential", "output.name=inprocess", "split.min_hospitals=2", two_epochs,
                               "split.dropout=client1:epoch=2:after=0"), quiet=True))
    cfg = _tiny(tmp_path, "retinopathy", "sequential", "output.name=gloo", "split.min_hospitals=2", "split.transport=gloo", two_epochs)
    run_dir = tmp_path / "runs" / "gloo"
    try:
        codes = launch_local(cfg, run_dir, quiet=True, env={"MEDSPLIT_FAULT": "client1:epoch=1:roster=0"}, grace_s=60)
        got = _metrics(run_dir)
    finally:
        assert not party_pids(run_dir)
    assert codes == [0, 0, -9, 0]  # server, client0 (whose hand-over failed: it finished the run), client1 killed, client2
    assert "client0: handing the weights to client1 failed" in (run_dir / "parties" / "client0.log").read_text()
    (dep,) = got["dropouts"]
    assert (dep["hospital"], dep["epoch"], dep["after"]) == ("client1", 2, 0)
    assert "client1" in dep["why"]  # the server names the link that failed
    assert _history(got) == _history(ref)
    assert got["test"]["auc"] == ref["test"]["auc"] and got["test_loss"] == ref["test_loss"]
    assert got["bytes"] == ref["bytes"]  # the hand-over that failed is not counted
    handed = {(r["sender"], r["receiver"]) for r in got["bytes"] if r["epoch"] == 1 and r["kind"] == "weights"}
    assert handed == {("client2", "client0"), ("client0", "client2")}
    assert [p["name"] for p in got["transport"]["parties"]] == ["server", "client0", "client2"]
