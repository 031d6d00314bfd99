"""Micro-batches pipelined across the cut (``split.microbatches``, issue 31 item 2).

What must hold: one micro-batch is exactly the step of the whole batch; M > 1 accumulates the
row-weighted gradients of the micro-batches (so it differs from the whole batch only through
BatchNorm's per-micro-batch statistics: with BatchNorm frozen it is the same gradient); the
messages follow the wavefront schedule; sends inside a pipelined step are started, not waited
for, and all waited for at its end; and the same M gives identical numbers in one process and
with every party in its own process (slow tests, gloo, both tasks, relay and SplitFed, int8).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medsplit.config import ConfigError, load_config
from medsplit.models import build_model
from medsplit.models.unet_classic import unet_classic_table
from medsplit.split import Channel, Transfer, cut, two_party
from medsplit.split.split_model import microbatch_sizes, wavefront
from medsplit.transport.base import Transport
from party_processes import party_pids


def _resnet(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("resnet18", num_classes=3)


def _unet(seed: int = 0):
    torch.manual_seed(seed)
    return unet_classic_table(num_classes=1, in_channels=1, base_channels=4)


def _classification_batch(n: int = 8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)


def _mask_batch(n: int = 6):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 1, 32, 32, generator=g), (torch.rand(n, 1, 32, 32, generator=g) > 0.5).float()


def _grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _split_grads(table, cut_at, loss_fn, x, y, microbatches):
    """Gradients (on the table's parameters), output and loss of one split step with ``microbatches``."""
    table.zero_grad(set_to_none=True)
    model = two_party(cut(table, cut_at), loss_fn)
    model.microbatches = microbatches
    out, loss = model.forward_backward(x, y)
    return _grads(table), out, loss


def _running_stats(module) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in module.named_buffers() if "running" in n or "num_batches" in n}


def _weighted_reference(table, loss_fn, x, y, sizes):
    """The whole (unsplit) model, each micro-batch's loss weighted by its share of the rows."""
    table.zero_grad(set_to_none=True)
    outs, total = [], 0.0
    for xk, yk in zip(x.split(sizes), y.split(sizes)):
        out = table(xk)
        loss = loss_fn(out, yk) * (len(xk) / len(x))
        loss.backward()
        outs.append(out.detach())
        total += float(loss.detach())
    return _grads(table), torch.cat(outs), total


def test_microbatch_sizes_are_even_and_keep_two_rows_each():
    assert microbatch_sizes(16, 1) == [16]
    assert microbatch_sizes(16, 4) == [4, 4, 4, 4]
    assert microbatch_sizes(10, 4) == [3, 3, 2, 2]
    assert microbatch_sizes(5, 4) == [3, 2]  # a small last batch gets fewer micro-batches
    assert microbatch_sizes(3, 2) == [3]
    assert all(min(microbatch_sizes(n, m)) >= 2 for n in range(2, 40) for m in range(1, 9))
    assert all(sum(microbatch_sizes(n, m)) == n for n in range(2, 40) for m in range(1, 9))


def test_wavefront_runs_every_stage_of_every_microbatch_once_after_its_inputs():
    assert wavefront(1, 3) == [(0, 0), (0, 1), (0, 2)]  # one micro-batch: stage after stage, as before
    assert wavefront(3, 3) == [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0), (1, 2), (2, 1), (2, 2)]
    order = wavefront(4, 5)
    assert sorted(order) == [(m, s) for m in range(4) for s in range(5)]
    position = {ms: i for i, ms in enumerate(order)}
    assert all(position[(m, s - 1)] < position[(m, s)] for m in range(4) for s in range(1, 5))
    # what stage s produced for micro-batch m is handed on (stage s+1 receives it) before stage s
    # computes micro-batch m+1: the hospital's send of k comes before its compute of k+1 ...
    assert all(position[(m, s + 1)] < position[(m + 1, s)] for m in range(3) for s in range(4))
    # ... and the server's compute of k (tick k+1) before the hospital's compute of k+2
    assert all(position[(m, 1)] < position[(m + 2, 0)] for m in range(2))


@pytest.mark.parametrize("microbatches", [2, 3])
def test_classification_step_is_the_row_weighted_sum_of_microbatch_gradients(microbatches):
    x, y = _classification_batch(8)
    table = _resnet()
    sizes = microbatch_sizes(8, microbatches)
    want, want_out, want_loss = _weighted_reference(table, F.cross_entropy, x, y, sizes)
    stats_ref = _running_stats(table)
    assert stats_ref
    table = _resnet()  # fresh BatchNorm running statistics
    got, out, loss = _split_grads(table, 3, F.cross_entropy, x, y, microbatches)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    assert float(loss) == pytest.approx(want_loss, rel=1e-6)
    # BatchNorm's running statistics moved once per micro-batch, as in the reference
    got_stats = _running_stats(table)
    assert got_stats.keys() == stats_ref.keys()
    for name in stats_ref:
        torch.testing.assert_close(got_stats[name], stats_ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_unet_step_with_loss_at_the_hospital_is_the_row_weighted_sum():
    """The U-shape: four parts, the client's skips and the loss stay at the hospital."""
    from medsplit.tasks import LungSegmentationTask, TaskSettings

    loss_fn = LungSegmentationTask.loss_function(TaskSettings(task="lungs", model="unet-classic"))
    x, y = _mask_batch(6)
    table = _unet()
    want, want_out, want_loss = _weighted_reference(table, loss_fn, x, y, microbatch_sizes(6, 3))
    table = _unet()
    got, out, loss = _split_grads(table, 1, loss_fn, x, y, 3)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    assert float(loss) == pytest.approx(want_loss, rel=1e-6)


def test_microbatches_differ_from_the_whole_batch_only_through_batchnorm():
    x, y = _classification_batch(8)
    table = _resnet()
    one, out_one, loss_one = _split_grads(table, 3, F.cross_entropy, x, y, 1)
    two, out_two, loss_two = _split_grads(_resnet(), 3, F.cross_entropy, x, y, 2)
    # BatchNorm in training mode normalises each micro-batch on its own: the steps differ
    assert not all(torch.allclose(one[n], two[n], rtol=1e-3, atol=1e-5) for n in one)
    # BatchNorm frozen (running statistics): the same gradient, output and loss up to rounding
    frozen = []
    for m in (1, 2):
        t = _resnet()
        t.eval()  # eval mode freezes BatchNorm; the gradients still flow
        frozen.append(_split_grads(t, 3, F.cross_entropy, x, y, m))
    (g1, o1, l1), (g2, o2, l2) = frozen
    for n in g1:
        torch.testing.assert_close(g2[n], g1[n], rtol=1e-4, atol=1e-6, msg=n)
    torch.testing.assert_close(o2, o1, rtol=1e-5, atol=1e-6)
    assert float(l2) == pytest.approx(float(l1), rel=1e-6)


def test_one_microbatch_is_exactly_the_unpipelined_step():
    """M=1 goes through the same single pass (bit for bit: the same tensors, the same messages)."""
    x, y = _classification_batch(8)
    runs = []
    for m in (1, 1):
        table = _resnet()
        channel = Channel(serialise=True)
        seen: list[Transfer] = []
        channel.tap(seen.append)
        table.zero_grad(set_to_none=True)
        model = two_party(cut(table, 3), F.cross_entropy, channel)
        model.microbatches = m
        out, loss = model.forward_backward(x, y)
        runs.append((_grads(table), out, loss, [(t.kind, t.link, t.nbytes) for t in seen]))
    (g1, o1, l1, s1), (g2, o2, l2, s2) = runs
    assert all(torch.equal(g1[n], g2[n]) for n in g1) and torch.equal(o1, o2) and torch.equal(l1, l2)
    assert [k for k, _, _ in s1] == ["activation", "label", "gradient"]
    # and the whole-model invariant holds for it (the split step is the unsplit one)
    table = _resnet()
    table.zero_grad(set_to_none=True)
    F.cross_entropy(table(x), y).backward()
    for n, g in _grads(table).items():
        torch.testing.assert_close(g1[n], g, rtol=1e-5, atol=1e-6, msg=n)


def test_messages_follow_the_wavefront_and_cost_only_their_headers():
    x, y = _classification_batch(8)
    counted = {}
    for m in (1, 2):
        channel = Channel()
        seen: list[Transfer] = []
        channel.tap(seen.append)
        model = two_party(cut(_resnet(), 3), F.cross_entropy, channel)
        model.microbatches = m
        model.train_step(x, y)
        counted[m] = (channel.total_bytes(), [(t.kind, int(next(iter(t.tensors.values())).shape[0])) for t in seen])
    assert counted[1][1] == [("activation", 8), ("label", 8), ("gradient", 8)]
    # forward: micro-batch 0's activations and labels leave before micro-batch 1's; backward: the
    # last micro-batch's gradient first
    assert counted[2][1] == [("activation", 4), ("label", 4), ("activation", 4), ("label", 4),
                             ("gradient", 4), ("gradient", 4)]
    extra = counted[2][0] - counted[1][0]
    assert 0 < extra < 3 * 512  # three more message headers; the tensors' bytes are the same


class _RecordingTransport(Transport):
    """Records whether each message was sent (waited for) or started (waited for later)."""

    def __init__(self, name):
        super().__init__(name)
        self.log: list[str] = []

    def _send(self, receiver, payload):
        self.log.append("send")

    def _start_send(self, receiver, payload):
        self.log.append("start")
        return lambda: self.log.append("waited")


def test_sends_inside_a_pipelined_step_are_started_and_all_waited_for_at_its_end():
    transport = _RecordingTransport("client0")
    channel = Channel(transport=transport, local={"client0"})
    channel.declare("a->b", "activation", None)
    t = {"h": torch.ones(2, 3)}
    channel.send("client0", "server", "activation", t, link="a->b")
    with channel.overlapping():
        channel.send("client0", "server", "activation", t, link="a->b")
        channel.send("client0", "server", "activation", t, link="a->b")
        assert transport.log == ["send", "start", "start"]
    assert transport.log == ["send", "start", "start", "waited", "waited"]
    assert transport.stats[("send", "server")].messages == 3


def test_the_default_transport_sends_at_once_when_started():
    transport = _RecordingTransport("client0")
    transport._start_send = Transport._start_send.__get__(transport)  # the base class's default
    transport.start_send("server", b"abc")
    assert transport.log == ["send"] and transport._in_flight == []
    assert transport.stats[("send", "server")].payload_bytes == 3


def test_config_key_is_checked():
    assert load_config(None, []).split.microbatches == 1
    assert load_config(None, ["split.microbatches=4", "train.batch_size=8"]).split.microbatches == 4
    with pytest.raises(ConfigError, match="split.microbatches"):
        load_config(None, ["split.microbatches=0"])
    with pytest.raises(ConfigError, match=r"split.microbatches.*at most train.batch_size / 2 = 4"):
        load_config(None, ["split.microbatches=5", "train.batch_size=8"])


# ---- the same numbers in one process and across processes (slow) ---------------------------------

def _tiny(tmp_path, task, protocol, *extra):
    if task == "retinopathy":
        base = ["task=retinopathy", "data.synthetic_size=48", "model.name=resnet18", "split.cut=3",
                "train.batch_size=16", "train.eval_batch_size=32"]
    else:
        base = ["task=lungs", "data.synthetic_size=32", "model.name=unet-classic", "model.base_channels=4",
                "split.cut=1", "train.batch_size=8", "train.eval_batch_size=16"]
    return base + ["data.source=synthetic", "data.img_size=32", "data.augment=true", "train.epochs=2",
                   "train.threads=1", "output.tensorboard=false", f"output.runs_dir={tmp_path}/runs",
                   f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache",
                   f"split.protocol={protocol}", "split.clients=2", "split.timeout_s=60", *extra]


def _metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def _numbers(m):
    return ([(r["epoch"], r["client"], r.get("train_loss"), r.get("val_loss")) for r in m["history"]],
            m["test_loss"], m["test"], m["bytes"])


@pytest.mark.slow
@pytest.mark.parametrize("task,protocol", [("retinopathy", "sequential"), ("retinopathy", "splitfed"),
                                           ("lungs", "sequential"), ("lungs", "splitfed")])
def test_same_microbatches_give_the_same_numbers_in_one_process_and_over_gloo(tmp_path, task, protocol):
    from medsplit.train.launch import launch_local
    from medsplit.train.loop import train

    base = _tiny(tmp_path, task, protocol, "split.microbatches=2", "split.compress_activations=int8")
    ref = _metrics(train(load_config(None, base + ["output.name=inprocess"]), quiet=True))
    run_dir = tmp_path / "runs" / "gloo"
    launch_local(load_config(None, base + ["output.name=gloo", "split.transport=gloo"]), run_dir, quiet=True)
    assert _numbers(_metrics(run_dir)) == _numbers(ref)
    assert not party_pids(run_dir)  # every party process has exited


@pytest.mark.slow
def test_microbatched_run_trains_and_differs_from_the_whole_batch_run(tmp_path):
    from medsplit.train.loop import train

    base = _tiny(tmp_path, "retinopathy", "sequential")
    one = _metrics(train(load_config(None, base + ["output.name=m1"]), quiet=True))
    four = _metrics(train(load_config(None, base + ["output.name=m4", "split.microbatches=4"]), quiet=True))
    assert four["config"]["split"]["microbatches"] == 4
    # the report states the BatchNorm semantics where it describes what crossed; not for M=1
    assert "BatchNorm normalised each micro-batch" in (tmp_path / "reports" / "m4.html").read_text()
    assert "micro-batch" not in (tmp_path / "reports" / "m1.html").read_text()
    assert _numbers(four)[0] != _numbers(one)[0]  # BatchNorm sees micro-batches: other losses
    train_losses = [r["train_loss"] for r in four["history"] if r.get("train_loss") is not None]
    assert len(train_losses) == 4 and all(math.isfinite(v) for v in train_losses)  # 2 epochs x 2 hospitals
    bytes_of = {m: {(r["epoch"], r["kind"], r["link"]): r["bytes"] for r in rec["bytes"]} for m, rec in ((1, one), (4, four))}
    assert bytes_of[1].keys() == bytes_of[4].keys()
    for key, b in bytes_of[1].items():
        if key[1] == "weights":
            assert bytes_of[4][key] == b
        else:  # the same tensors in more messages: only the extra headers (a few hundred bytes each)
            assert b < bytes_of[4][key] < b * 1.05 + 4096, key


@pytest.mark.slow
def test_same_microbatches_give_the_same_numbers_at_flare_sites(tmp_path):
    """FLARE's simulator (sites in threads, messages through FLARE): the same numbers as one process."""
    pytest.importorskip("nvflare")
    from medsplit.train.loop import train

    base = _tiny(tmp_path, "retinopathy", "sequential", "split.microbatches=2", "split.compress_activations=int8")
    ref = _metrics(train(load_config(None, base + ["output.name=inprocess"]), quiet=True))
    got = _metrics(train(load_config(None, base + ["output.name=flare", "split.transport=flare"]), quiet=True))
    assert _numbers(got) == _numbers(ref)
