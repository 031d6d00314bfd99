"""Codecs on the channel: bounded reconstruction error, fewer counted bytes, training still works."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsplit.config import CHOICES
from medsplit.models.stages import PartSpec, Stage, StageTable
from medsplit.split import Channel, SplitModel, cut, wire, two_party
from medsplit.split.codecs import CODECS, HalfCodec, Int8Codec, NoCodec, TopKCodec, codecs_for, make_codec


def _tiny_table() -> StageTable:
    """conv -> relu on the client, pool -> linear on the server: a split model in milliseconds."""
    stages = [
        Stage("conv", nn.Conv2d(3, 8, 3, padding=1), ("x",), "conv"),
        Stage("relu", nn.ReLU(), ("conv",), "relu"),
        Stage("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), ("relu",), "pool"),
        Stage("fc", nn.Linear(8, 3), ("pool",), "logits"),
    ]
    plans = {2: [PartSpec("client", "client", 2), PartSpec("server", "server", 4)]}
    return StageTable(stages, plans=plans, meta={"name": "tiny"})


def _split(table: StageTable, channel: Channel, lr: float = 0.05) -> SplitModel:
    make = lambda params: torch.optim.Adam(params, lr=lr)  # noqa: E731
    return two_party(cut(table, 2), F.cross_entropy, channel, make)


def test_int8_error_is_at_most_half_a_step_per_sample_and_channel():
    # Channels with very different ranges, and samples too (a batch's gradients do that).
    x = torch.randn(4, 6, 5, 5) * torch.logspace(-3, 2, 6).reshape(1, 6, 1, 1) * torch.logspace(-2, 1, 4).reshape(4, 1, 1, 1)
    x[:, 2] = 0.0  # an all-zero channel must survive exactly (no 0/0 scale)
    x[1] = 0.0  # and an all-zero sample
    codec = Int8Codec()
    payload = codec.encode({"a": x})
    row, col = payload["a/row"], payload["a/scale"]
    assert payload["a/q"].dtype == torch.int8 and col.dtype == row.dtype == torch.float32
    assert col.shape == (6,) and row.shape == (4,)
    back = codec.decode(payload)["a"]
    assert back.shape == x.shape and back.dtype == torch.float32
    step = row.reshape(4, 1) * col.reshape(1, 6)
    err = (back - x).abs().amax(dim=(2, 3))
    assert torch.all(err <= step / 2 * (1 + 1e-5)), (err, step)
    assert torch.equal(back[:, 2], torch.zeros_like(back[:, 2])) and torch.equal(back[1], torch.zeros_like(back[1]))
    # Every sample keeps its own relative precision, however small it is next to the others.
    rel = (back - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-30)
    assert rel[[0, 2, 3]].max() < 0.02, rel
    # 1-D tensors get one scale for the whole tensor.
    v = torch.randn(50)
    p1 = codec.encode({"v": v})
    assert p1["v/scale"].shape == (1,)
    assert (codec.decode(p1)["v"] - v).abs().max() <= p1["v/scale"][0] / 2 * (1 + 1e-5)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 1e-3), (torch.bfloat16, 8e-3)])
def test_half_codecs_are_close(dtype, rtol):
    x = torch.randn(3, 4, 7, 7)
    codec = HalfCodec(dtype)
    payload = codec.encode({"a": x})
    assert payload["a/half"].dtype == dtype
    back = codec.decode(payload)["a"]
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, x, rtol=rtol, atol=1e-6)


def test_topk_keeps_exactly_k_largest_per_sample_and_zeros_the_rest():
    x = torch.randn(5, 4, 6, 6)  # continuous values: ties have probability zero
    codec = TopKCodec(0.1)
    n = 4 * 6 * 6
    k = codec.k_for(n)
    assert k == round(0.1 * n)
    payload = codec.encode({"a": x})
    assert payload["a/idx"].dtype == torch.int32 and payload["a/idx"].shape == (5, k)
    back = codec.decode(payload)["a"]
    assert back.shape == x.shape
    rows, back_rows = x.reshape(5, -1), back.reshape(5, -1)
    for r in range(5):
        kept = back_rows[r] != 0
        assert int(kept.sum()) == k
        top = rows[r].abs().topk(k).indices
        assert set(torch.nonzero(kept).flatten().tolist()) == set(top.tolist())
        assert torch.equal(back_rows[r][kept], rows[r][kept])  # kept values are exact


def test_payload_survives_the_wire_and_restores_names_dtypes_and_passthrough():
    tensors = {"act": torch.randn(2, 3, 4, 4), "mask": torch.ones(2, 4, dtype=torch.bool), "half": torch.randn(2, 5).bfloat16()}
    for name in CODECS:
        codec = make_codec(name)
        payload = codec.encode(tensors)
        blob = wire.encode(payload)
        assert len(blob) == wire.encoded_size(payload)
        back = codec.decode(wire.decode(blob)[0])
        direct = codec.decode(payload)
        assert set(back) == set(tensors)
        for k, t in tensors.items():
            assert back[k].shape == t.shape and back[k].dtype == t.dtype, (name, k)
            assert torch.equal(back[k], direct[k]), (name, k)
        assert torch.equal(back["mask"], tensors["mask"])  # non-float tensors are never touched


def test_int8_activation_costs_at_least_3_9x_fewer_counted_bytes():
    act = {"maxpool": torch.randn(32, 64, 56, 56)}
    plain, int8 = Channel(), Channel(codecs={"activation": Int8Codec()})
    plain.send("client0", "server", "activation", act)
    received = int8.send("client0", "server", "activation", act)["maxpool"]
    ratio = plain.total_bytes() / int8.total_bytes()
    assert ratio >= 3.9, ratio
    assert int8.total_bytes() == wire.encoded_size(Int8Codec().encode(act))
    # The receiver gets a fresh, lossy leaf it can differentiate with respect to.
    assert received.is_leaf and received.requires_grad and received.dtype == torch.float32
    assert not torch.equal(received, act["maxpool"])
    assert torch.allclose(received, act["maxpool"], atol=float(act["maxpool"].abs().max()) / 127)


def test_serialising_channel_counts_and_delivers_the_same_as_in_process():
    act = {"a": torch.randn(4, 8, 6, 6)}
    out = []
    for serialise in (False, True):
        ch = Channel(serialise=serialise, codecs={"activation": TopKCodec(0.1)})
        out.append((ch.send("c", "s", "activation", act)["a"], ch.total_bytes()))
    assert torch.equal(out[0][0], out[1][0]) and out[0][1] == out[1][1]


def test_observers_see_the_decoded_tensors_and_the_compressed_size():
    seen = []
    ch = Channel(codecs={"activation": make_codec("fp16")})
    ch.tap(seen.append)
    x = {"a": torch.randn(2, 3, 8, 8)}
    got = ch.send("c", "s", "activation", x)
    assert torch.equal(seen[0].tensors["a"], got["a"])
    assert seen[0].nbytes == ch.total_bytes() < wire.encoded_size(x)


def test_int8_on_both_kinds_still_trains_and_gradients_reach_the_client():
    torch.manual_seed(0)
    table = _tiny_table()
    reference = _tiny_table()
    reference.load_state_dict(table.state_dict())
    x, y = torch.randn(16, 3, 12, 12), torch.arange(16) % 3
    # One backward: the client's gradient through int8 both ways points where the exact one does.
    grads = []
    for codecs in ({}, {"activation": Int8Codec(), "gradient": Int8Codec()}):
        t = table if codecs else reference
        _split(t, Channel(codecs=codecs)).forward_backward(x, y)
        grads.append(t.modules_by_stage["conv"].weight.grad.flatten().clone())
    assert grads[1].abs().sum() > 0
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
    # And several steps on a fixed batch reduce the loss.
    table.zero_grad()
    model = _split(table, Channel(codecs=codecs_for("int8", "int8")))
    losses = [model.train_step(x, y)[0] for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_registry_errors_name_the_choices_and_match_the_config_schema():
    with pytest.raises(ValueError, match=r"valid codecs are \['none', 'fp16', 'bf16', 'int8', 'topk0.1', 'topk0.01'\]"):
        make_codec("int4")
    assert CHOICES["split.compress_activations"] == tuple(CODECS) == CHOICES["split.compress_gradients"]
    assert codecs_for("none", "none") == {}
    assert set(codecs_for("int8", "none")) == {"activation"} and isinstance(make_codec("none"), NoCodec)
    with pytest.raises(ValueError, match="valid kinds are"):
        Channel(codecs={"activations": Int8Codec()})
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        TopKCodec(0.0)
