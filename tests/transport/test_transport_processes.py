"""Hospitals and the server as real processes on loopback (gloo): the guarantees of issue 12.

Every test starts real ``python -m medsplit`` processes and kills whatever is left of them in a
``finally``, even when an assertion fails. Tiny synthetic images, one thread per process.
"""

import time

import pytest

from medsplit.config import load_config
from medsplit.train.launch import launch_local
from medsplit.train.loop import train
from medsplit.transport import framing
from medsplit.transport.gloo import free_port
from party_processes import party_pids, run_all
from tiny_runs import run_metrics as _metrics, tiny_federation_overrides

pytestmark = pytest.mark.slow


# Two hospitals, two epochs, and fewer, larger batches than the dropout tests' runs.
_SIZES = {"retinopathy": ["data.synthetic_size=64", "train.batch_size=16"],
          "lungs": ["data.synthetic_size=32", "train.batch_size=8"]}


def _tiny(tmp_path, task, protocol, *extra):
    return tiny_federation_overrides(tmp_path, task, protocol, *_SIZES[task], *extra, clients=2, epochs=2)


def _history(m):
    return [(r["epoch"], r["client"], r.get("train_loss"), r.get("val_loss")) for r in m["history"]]


@pytest.mark.parametrize("task,protocol,extra", [("retinopathy", "sequential", ()), ("retinopathy", "splitfed", ()),
                                                  ("lungs", "sequential", ()),
                                                  # each hospital balances its own labels in its own process
                                                  ("retinopathy", "splitfed", ("train.sampling=class-balanced",)),
                                                  # bf16 activations and gradients cross the real wire
                                                  ("retinopathy", "sequential", ("train.cpu_amp=true",))])
def test_processes_equal_the_in_process_run(tmp_path, task, protocol, extra):
    base = _tiny(tmp_path, task, protocol, *extra)
    ref = _metrics(train(load_config(None, base + ["output.name=inprocess"]), quiet=True))
    cfg = load_config(None, base + ["output.name=gloo", "split.transport=gloo"])
    launch_local(cfg, tmp_path / "runs" / "gloo", quiet=True)
    got = _metrics(tmp_path / "runs" / "gloo")
    # Same seed, same data, CPU: every per-epoch loss and the test metrics are identical.
    assert _history(got) == _history(ref)
    assert got["test_loss"] == ref["test_loss"]
    headline = "auc" if task == "retinopathy" else "dice"
    assert got["test"][headline] == ref["test"][headline]
    assert got["bytes"] == ref["bytes"]
    info = got["transport"]
    assert [p["name"] for p in info["parties"]] == ["server", "client0", "client1"]
    assert len({p["pid"] for p in info["parties"]}) == 3
    # The server never loaded data (it ran with MEDSPLIT_DATA pointing nowhere).
    assert info["parties"][0]["data_loaded"] is False and all(p["data_loaded"] for p in info["parties"][1:])
    # The bytes the Channels counted are the bytes that crossed the transport (plus control messages).
    counted = sum(r["bytes"] for r in got["bytes"] + got["bytes_eval"])
    assert info["payload_bytes_sent"] == counted + info["control_bytes_sent"]
    assert info["framing_bytes_sent"] == framing.overhead(False) * sum(r["messages"] for r in info["links"] if r["direction"] == "send")
    assert (tmp_path / "reports" / "gloo.html").exists()
    assert not party_pids(tmp_path / "runs" / "gloo")


def test_killed_hospital_stops_the_rest_and_resume_reaches_the_same_result(tmp_path):
    base = _tiny(tmp_path, "lungs", "splitfed")
    ref = _metrics(train(load_config(None, base + ["output.name=inprocess"]), quiet=True))
    cfg = load_config(None, base + ["output.name=gloo", "split.transport=gloo"])
    run_dir = tmp_path / "runs" / "gloo"
    t0 = time.time()
    with pytest.raises(RuntimeError, match=r"client1 \(exit -9\)"):
        launch_local(cfg, run_dir, quiet=True, env={"MEDSPLIT_FAULT": "client1:epoch=1:step=1"}, grace_s=90)
    assert time.time() - t0 < 150  # the others stopped on their own (connection closed), not by the grace kill
    assert not party_pids(run_dir)
    logs = {n: (run_dir / "parties" / f"{n}.log").read_text() for n in ("server", "client0")}
    assert "client1" in logs["server"]
    assert not (run_dir / "metrics.json").exists()
    launch_local(cfg, run_dir, resume=True, quiet=True)
    got = _metrics(run_dir)
    assert _history(got) == _history(ref)
    assert got["test"]["dice"] == ref["test"]["dice"] and got["test_loss"] == ref["test_loss"]
    assert got["bytes"] == ref["bytes"]


def test_a_party_that_stops_answering_is_named_within_the_timeout(tmp_path):
    base = _tiny(tmp_path, "retinopathy", "sequential", "train.epochs=1", "split.timeout_s=5")
    cfg = load_config(None, base + ["output.name=hang", "split.transport=gloo"])
    run_dir = tmp_path / "runs" / "hang"
    with pytest.raises(RuntimeError) as err:
        launch_local(cfg, run_dir, quiet=True, env={"MEDSPLIT_FAULT": "client1:epoch=0:step=1:mode=hang"}, grace_s=25)
    server_log = (run_dir / "parties" / "server.log").read_text()
    assert "client1" in server_log and "5 s (split.timeout_s)" in server_log, server_log[-2000:]
    assert "server (exit 3)" in str(err.value)
    assert not party_pids(run_dir)  # the hung one was killed after the grace period, the rest exited


def test_a_non_finite_message_stops_the_receiver_naming_peer_link_and_step(tmp_path):
    base = _tiny(tmp_path, "retinopathy", "sequential", "train.epochs=1", "split.timeout_s=20")
    cfg = load_config(None, base + ["output.name=nan", "split.transport=gloo"])
    run_dir = tmp_path / "runs" / "nan"
    with pytest.raises(RuntimeError, match=r"server \(exit 3\)"):
        launch_local(cfg, run_dir, quiet=True, env={"MEDSPLIT_FAULT": "client1:epoch=0:step=1:mode=nan"}, grace_s=30)
    server_log = (run_dir / "parties" / "server.log").read_text()
    assert "client1 sent a non-finite activation" in server_log and "link 'client->server'" in server_log, server_log[-2000:]
    assert not party_pids(run_dir)


def test_serve_and_join_with_own_data_and_a_server_without_data(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    common = _tiny(tmp_path, "retinopathy", "sequential", "train.epochs=1")
    config = tmp_path / "cfg.yaml"
    config.write_text("task: retinopathy\n")
    no_data = {"MEDSPLIT_DATA": str(tmp_path / "does-not-exist")}
    server = (["serve", str(config), *common, "data.source=/nowhere/images", "--address", address, "--clients", "2",
               "--run-dir", str(tmp_path / "server")], no_data)
    hospitals = [(["join", str(config), *common, "--address", address, "--rank", str(r), "--data", "synthetic",
                   "--run-dir", str(tmp_path / f"h{r}")], None) for r in (1, 2)]
    codes, logs = run_all([server, *hospitals], tmp_path)
    assert codes == [0, 0, 0], "\n".join(logs)
    m = _metrics(tmp_path / "h2")  # the relay's last hospital evaluates and reports
    assert m["transport"]["parties"][0]["data_loaded"] is False
    assert 0.0 <= m["test"]["auc"] <= 1.0


def test_join_with_another_config_is_refused(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    common = _tiny(tmp_path, "retinopathy", "sequential", "train.epochs=1", "split.clients=1")
    config = tmp_path / "cfg.yaml"
    config.write_text("task: retinopathy\n")
    server = (["serve", str(config), *common, "--address", address, "--run-dir", str(tmp_path / "s")], None)
    hospital = (["join", str(config), *common, "train.lr=0.5", "--address", address, "--rank", "1", "--data", "synthetic",
                 "--run-dir", str(tmp_path / "h")], None)
    codes, logs = run_all([server, hospital], tmp_path, timeout=120)
    assert codes == [3, 3]
    assert "client0 (rank 1" in logs[0] and "config hash" in logs[0]
    assert "the server refused this run" in logs[1] and "config hash" in logs[1]
