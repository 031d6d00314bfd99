"""The Transport seam and the Channel across it, without processes (fast).

Two Channels that each host one party and share an in-process hub behave like two processes:
the sender's Channel ships, the receiver's receives and validates. What crosses is checked
against the receiver's expectation and the declared plan.
"""

import pytest
import torch
import torch.nn.functional as F

from medsplit.config import load_config
from medsplit.models import build_model
from medsplit.split import Channel, cut, wire
from medsplit.split.channel import MessageError, NonFiniteError
from medsplit.split.crossings import CrossingError
from medsplit.split.codecs import codecs_for
from medsplit.split.split_model import SplitModel
from medsplit.split.party import Party
from medsplit.train.party_plan import config_hash
from medsplit.transport import TRANSPORTS, InProcessHub, TransportError


def _pair(**kw):
    hub = InProcessHub()
    sender = Channel(transport=hub.transport("client0"), local={"client0"}, **kw)
    receiver = Channel(transport=hub.transport("server"), local={"server"}, **kw)
    return hub, sender, receiver


def test_registry_names_both_transports():
    assert set(TRANSPORTS) >= {"inprocess", "gloo"}


def test_bytes_counted_equal_bytes_that_crossed():
    _, a, b = _pair()
    act = {"h": torch.randn(4, 8, 5, 5)}
    a.send("client0", "server", "activation", act, link="c->s")
    got = b.send("client0", "server", "activation", {"h": torch.empty(4, 8, 5, 5, device="meta")}, link="c->s")
    assert torch.equal(got["h"], act["h"]) and got["h"].requires_grad
    sent = a.transport.stats[("send", "server")]
    received = b.transport.stats[("recv", "client0")]
    assert a.total_bytes() == b.total_bytes() == sent.payload_bytes == received.payload_bytes == wire.encoded_size(act)


def test_in_process_transport_checks_the_size_limit():
    hub = InProcessHub()
    hub.transport("a").send("b", b"x" * 100)
    with pytest.raises(TransportError, match="100 bytes from a exceeds the limit of 10"):
        hub.transport("b").recv("a", 10)


def test_wrong_shape_names_peer_link_and_step():
    _, a, b = _pair()
    b.step = 7
    a.send("client0", "server", "activation", {"h": torch.randn(4, 8)}, link="enc->srv")
    with pytest.raises(MessageError, match=r"from client0 to server on link 'enc->srv' \(epoch 0, step 7.*shape \(4, 8\) \(expected \(4, 9\)\)"):
        b.send("client0", "server", "activation", {"h": torch.empty(4, 9, device="meta")}, link="enc->srv")


@pytest.mark.parametrize("sent,compute_dtype,accepted", [(torch.bfloat16, torch.bfloat16, True),
                                                         (torch.bfloat16, None, False),  # no autocast: float32 only
                                                         (torch.float16, torch.bfloat16, False),
                                                         (torch.float64, torch.bfloat16, False)])
def test_a_float32_slot_takes_the_autocast_dtype_only_when_the_parties_compute_in_it(sent, compute_dtype, accepted):
    """The receiver infers what it expects on the meta device, where autocast does not apply (float32)."""
    _, a, b = _pair(compute_dtype=compute_dtype)
    a.send("client0", "server", "activation", {"h": torch.randn(4, 8).to(sent)}, link="enc->srv")
    expected = {"h": torch.empty(4, 8, device="meta")}
    if accepted:
        assert b.send("client0", "server", "activation", expected, link="enc->srv")["h"].dtype == sent
    else:
        with pytest.raises(MessageError, match=rf"tensor 'h' has dtype {sent} \(expected torch.float32\)"):
            b.send("client0", "server", "activation", expected, link="enc->srv")


def test_malformed_message_names_peer_and_link():
    hub, _, b = _pair()
    hub.transport("client0").send("server", b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(MessageError, match=r"malformed activation message from client0 to server on link 'enc->srv'"):
        b.send("client0", "server", "activation", {"h": torch.empty(2, device="meta")}, link="enc->srv")


def test_oversized_message_is_refused_before_it_is_read():
    hub, _, b = _pair()
    hub.transport("client0").send("server", wire.encode({"h": torch.zeros(2_000_000)}))
    with pytest.raises(TransportError, match=r"server: receiving activation from client0 to server on link 'enc->srv' .*exceeds the limit"):
        b.send("client0", "server", "activation", {"h": torch.empty(4, device="meta")}, link="enc->srv")


def test_non_finite_message_stops_the_receiver_naming_the_sender():
    hub, _, b = _pair()
    hub.transport("client0").send("server", wire.encode({"h": torch.tensor([1.0, float("nan")])}))
    with pytest.raises(NonFiniteError, match=r"client0 sent a non-finite activation 'h' to server \(epoch 0, step 0.*link 'enc->srv'"):
        b.send("client0", "server", "activation", {"h": torch.empty(2, device="meta")}, link="enc->srv")


def test_finite_check_sees_what_the_receiver_gets_after_the_codec():
    """fp16 turns a finite 1e6 into inf: the old check (before the codec) let it through."""
    channel = Channel(codecs=codecs_for("fp16", "none"))
    with pytest.raises(NonFiniteError, match="non-finite activation 'h'"):
        channel.send("client0", "server", "activation", {"h": torch.tensor([1e6, 1.0])})


def test_neither_end_here_moves_nothing():
    hub, a, _ = _pair()
    out = a.send("server", "client1", "gradient", {"g": torch.empty(3, 2, device="meta")})
    assert out["g"].device.type == "meta" and tuple(out["g"].shape) == (3, 2)
    assert not hub.queues and a.total_bytes() == 0


def _resnet_parts(cut_at=3):
    torch.manual_seed(0)
    return cut(build_model("resnet18", num_classes=2), cut_at)


def _model(parts, channel):
    client = Party("client0", {p.name: p for p in parts if p.role == "client"})
    server = Party("server", {p.name: p for p in parts if p.role == "server"})
    return SplitModel.from_roles(parts, {"client": client, "server": server}, channel, F.cross_entropy)


def test_labels_cross_only_where_the_plan_gives_the_server_the_labels():
    channel = Channel()
    model = _model(_resnet_parts(), channel)
    model.declare_crossings(("x",), labels_may_cross=True)
    model.train_step(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), step=False)
    # a task whose targets stay at the hospital (segmentation masks) refuses this chain up front
    with pytest.raises(CrossingError, match="targets never leave the hospital"):
        _model(_resnet_parts(), Channel()).declare_crossings(("x",), labels_may_cross=False)


def test_undeclared_tensor_or_link_never_crosses():
    channel = Channel()
    model = _model(_resnet_parts(), channel)
    model.declare_crossings(("x",), labels_may_cross=True)
    with pytest.raises(CrossingError, match=r"tensor\(s\) \['x'\] may not cross link 'client->server'"):
        channel.send("client0", "server", "activation", {"x": torch.randn(1)}, link="client->server")
    with pytest.raises(CrossingError, match="link 'secret' is not in the plan"):
        channel.send("client0", "server", "activation", {"h": torch.randn(1)}, link="secret")
    assert channel.total_bytes() == 0


def test_a_server_part_reading_the_input_is_refused_before_any_send():
    parts = _resnet_parts()
    parts[1].reads = ("x",) + tuple(parts[1].reads)  # a table whose server stage reads the raw image
    with pytest.raises(CrossingError, match=r"reads the model input\(s\) \['x'\].*inputs never cross"):
        _model(parts, Channel()).declare_crossings(("x",))


def test_config_hash_ignores_only_per_party_keys(tmp_path):
    base = load_config(None, ["split.transport=gloo"])
    same = load_config(None, ["split.transport=gloo", "data.source=/elsewhere", "train.device=cpu", "split.address=10.0.0.1:1"])
    other = load_config(None, ["split.transport=gloo", "train.lr=0.5"])
    assert config_hash(base) == config_hash(same) != config_hash(other)


def test_gloo_needs_a_split_protocol():
    from medsplit.config import ConfigError

    with pytest.raises(ConfigError, match=r"split.protocol.*gloo supports sequential and splitfed"):
        load_config(None, ["split.transport=gloo", "split.protocol=fedavg"])
