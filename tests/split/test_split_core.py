"""The split invariant: for every legal cut, the chained parts compute the same outputs
and parameter gradients as the whole model; what crosses is exactly what is counted."""

import copy

import pytest
import torch
import torch.nn.functional as F

from medsplit.models import build_model
from medsplit.split import Channel, cut, two_party
from medsplit.split import wire
from medsplit.split.channel import NonFiniteError


def _two_party(table, cut_at, channel=None, make_opt=None):
    model = two_party(cut(table, cut_at), F.cross_entropy, channel, make_opt)
    client, server = model.parties
    return model, client, server


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_model("resnet34", num_classes=3)


@pytest.mark.parametrize("cut_at", range(0, 8))
def test_every_resnet_cut_matches_whole_model(resnet, cut_at):
    x = torch.randn(3, 3, 48, 48)
    y = torch.tensor([0, 2, 1])
    resnet.zero_grad()
    ref = resnet(x)
    F.cross_entropy(ref, y).backward()
    ref_grads = {n: p.grad.clone() for n, p in resnet.named_parameters()}
    resnet.zero_grad()
    model, client, server = _two_party(resnet, cut_at)
    out, loss = model.forward_backward(x, y)
    assert torch.allclose(out, ref, atol=1e-6)
    for n, p in resnet.named_parameters():
        assert p.grad is not None, n
        assert torch.allclose(p.grad, ref_grads[n], atol=1e-6, rtol=1e-5), n
    # The parties really hold disjoint parameter sets covering the model.
    n_client = sum(p.numel() for p in client.parameters())
    n_server = sum(p.numel() for p in server.parameters())
    assert n_client + n_server == sum(p.numel() for p in resnet.parameters())


def test_illegal_cut_names_valid_choices(resnet):
    with pytest.raises(ValueError, match=r"valid cuts are \[0, 1, 2, 3, 4, 5, 6, 7\]"):
        cut(resnet, 9)


def test_one_step_split_equals_unsplit_training():
    torch.manual_seed(1)
    whole = build_model("resnet18", num_classes=2)
    split_table = copy.deepcopy(whole)
    make = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
    x, y = torch.randn(4, 3, 40, 40), torch.tensor([0, 1, 1, 0])
    opt = make(whole.parameters())
    opt.zero_grad()
    F.cross_entropy(whole(x), y).backward()
    opt.step()
    model, _, _ = _two_party(split_table, 5, make_opt=make)
    model.train_step(x, y)
    for (n, a), (_, b) in zip(whole.named_parameters(), split_table.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), n
    # And the step moved the weights (so the comparison above means something).
    assert not torch.allclose(next(whole.parameters()), next(build_model("resnet18", num_classes=2).parameters()))


def test_eval_reaches_every_part(resnet):
    model, client, server = _two_party(resnet, 4)
    layers = [m for p in (client, server) for part in p.parts.values() for m in part.modules()]
    leaves = {id(m) for m in resnet.modules() if not list(m.children())}
    assert leaves <= {id(m) for m in layers}  # every layer of the model is in some part
    model.eval()
    assert all(not m.training for m in layers)
    model.train()
    assert all(m.training for m in layers)


def test_bytes_counted_equal_serialised_size(resnet):
    sizes = []
    channel = Channel()
    channel.tap(lambda t: sizes.append((t.kind, t.nbytes, len(wire.encode(t.tensors)))))
    model, _, _ = _two_party(resnet, 3, channel)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    model.forward_backward(x, y)
    kinds = [k for k, _, _ in sizes]
    assert kinds == ["activation", "label", "gradient"]
    assert all(counted == serialised for _, counted, serialised in sizes)
    assert channel.total_bytes() == sum(s for _, s, _ in sizes)
    # After maxpool at 32 px: 64 x 8 x 8 float32 per sample, plus a small header.
    act = [s for k, s, _ in sizes if k == "activation"][0]
    assert 2 * 64 * 8 * 8 * 4 < act < 2 * 64 * 8 * 8 * 4 + 200


def test_serialising_channel_gives_identical_training(resnet):
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 0])
    grads = []
    for serialise in (False, True):
        resnet.zero_grad()
        model, _, _ = _two_party(resnet, 2, Channel(serialise=serialise))
        model.forward_backward(x, y)
        grads.append(torch.cat([p.grad.flatten() for p in resnet.parameters()]))
    assert torch.equal(grads[0], grads[1])


def test_receiver_cannot_reach_sender_graph(resnet):
    seen = []
    channel = Channel()
    channel.tap(lambda t: seen.append(t))
    model, _, _ = _two_party(resnet, 3, channel)
    model.forward_backward(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    act = [t for t in seen if t.kind == "activation"][0].tensors["maxpool"]
    assert act.is_leaf and act.grad_fn is None


def test_non_finite_activation_names_party_and_step(resnet):
    model, _, _ = _two_party(resnet, 3)
    model.send_transforms["client"] = lambda t: {k: v * float("nan") for k, v in t.items()}
    with pytest.raises(NonFiniteError, match=r"client0 sent a non-finite activation 'maxpool' to server \(epoch 0, step 0"):
        model.forward_backward(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))


def test_wire_roundtrip_and_truncation():
    tensors = {"a": torch.randn(2, 3), "b": torch.arange(5), "c": torch.randn(4).bfloat16(), "m": torch.ones(2, dtype=torch.bool)}
    payload = wire.encode(tensors, meta={"step": 3})
    assert len(payload) == wire.encoded_size(tensors, meta={"step": 3})
    back, meta = wire.decode(payload)
    assert meta == {"step": 3}
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and torch.equal(back[k], tensors[k])
    with pytest.raises(wire.WireFormatError, match="truncated inside tensor"):
        wire.decode(payload[:-3])
