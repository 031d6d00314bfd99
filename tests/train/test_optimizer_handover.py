"""What a hospital's optimiser state does at a handover (``split.optimizer_handover``).

With ``carry`` the relay is one client model trained in turn: two hospitals taking turns
reach exactly the weights of one hospital training on the same batches in the same order.
With ``reset`` or ``local`` the second hospital starts from fresh Adam moments, so they differ.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from medsplit.models import build_model
from medsplit.split import Channel
from medsplit.train.protocols import SequentialRelay, SplitFed


def _relay(table, n_clients, handover):
    make = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
    return SequentialRelay(copy.deepcopy(table), 3, n_clients, make, F.cross_entropy, Channel(), optimizer_handover=handover)


def _train(protocol, data, batches_per_client):
    x, y = data
    protocol.run_epoch(batches_per_client, lambda model, k, idx: model.train_step(x[idx], y[idx]))
    return protocol


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    table = build_model("resnet18", num_classes=2)
    data = (torch.randn(12, 3, 32, 32), torch.randint(0, 2, (12,)))
    batches = [torch.arange(0, 4), torch.arange(4, 8), torch.arange(8, 12)]
    return table, data, batches


def _client_weights(protocol):
    return protocol.clients[protocol.last].parts.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("handover, same", [("carry", True), ("reset", False), ("local", False)])
def test_relay_with_carried_state_equals_one_hospital(setting, handover, same):
    table, data, b = setting
    one = _train(_relay(table, 1, handover), data, [[b[0], b[1], b[2]]])
    two = _train(_relay(table, 2, handover), data, [[b[0], b[1]], [b[2]]])
    w1, w2 = _client_weights(one), _client_weights(two)
    equal = all(torch.allclose(w1[k].float(), w2[k].float(), atol=1e-6) for k in w1)
    assert equal is same
    # The server keeps one optimiser throughout, and the hand-over weights are the same in all
    # three modes (only the second hospital's own update differs), so the server agrees in all.
    s1, s2 = one.server.parts.state_dict(), two.server.parts.state_dict()
    assert all(torch.allclose(s1[k].float(), s2[k].float(), atol=1e-6) for k in s1)


def test_carried_state_is_counted_and_not_shared(setting):
    table, data, b = setting
    relay = _train(_relay(table, 2, "carry"), data, [[b[0]], [b[1]]])
    rows = [r for r in relay.channel.byte_rows() if r["link"] == "optimizer state"]
    assert rows and rows[0]["sender"] == "client0" and rows[0]["receiver"] == "client1" and rows[0]["kind"] == "weights"
    s0, s1 = relay.clients[0].optimizer_tensors(), relay.clients[1].optimizer_tensors()
    # client1 stepped after receiving, so its moments moved away from client0's copy.
    assert set(s0) == set(s1)
    assert any(not torch.equal(s0[k], s1[k]) for k in s0)


@pytest.mark.parametrize("handover", ["carry", "reset", "local"])
def test_splitfed_rounds_leave_consistent_state(setting, handover):
    table, data, b = setting
    make = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
    sf = SplitFed(copy.deepcopy(table), 3, 2, make, F.cross_entropy, Channel(), optimizer_handover=handover)
    _train(sf, data, [[b[0]], [b[1]]])
    s0, s1 = sf.clients[0].optimizer_tensors(), sf.clients[1].optimizer_tensors()
    if handover == "reset":
        assert s0 == {} and s1 == {}
    elif handover == "carry":  # both hold the same averaged moments
        assert set(s0) == set(s1) and all(torch.allclose(s0[k], s1[k]) for k in s0)
    else:  # each keeps its own
        assert any(not torch.equal(s0[k], s1[k]) for k in s0)


def test_unknown_handover_names_choices(setting):
    with pytest.raises(ValueError, match="carry"):
        _relay(setting[0], 2, "share")
