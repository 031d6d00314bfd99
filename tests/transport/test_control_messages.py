"""Control messages as a hostile peer would send them (issue 30, finding 3): every kind is checked
by type and bound on receipt, and whatever a peer sends is either a value of the declared shape
or a ControlMessageError naming the peer, the kind and the field, never an 80 TB allocation, a
bare ValueError from int(), or a KeyError."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsplit.config import load_config
from medsplit.split import wire
from medsplit.split.channel import MessageError
from medsplit.train import control_messages as cm
from medsplit.train.party_control import Control
from medsplit.transport import InProcessHub

SCHEMAS = cm.schemas()


def _strategy(check):
    """Valid values of a schema checker (small lists, so examples stay quick)."""
    if isinstance(check, cm.Int):
        return st.integers(check.lo, check.hi)
    if isinstance(check, cm.Float):
        lo = None if math.isinf(check.lo) else check.lo
        return st.floats(min_value=lo, allow_nan=False, allow_infinity=False)
    if isinstance(check, cm.Maybe):
        return st.none() | _strategy(check.item)
    if isinstance(check, cm.Bool):
        return st.booleans()
    if isinstance(check, cm.Str):
        return st.sampled_from(check.choices) if check.choices else st.text(max_size=min(check.max_len, 20))
    if isinstance(check, cm.List):
        return st.lists(_strategy(check.item), max_size=3)
    if isinstance(check, cm.Record):
        return st.fixed_dictionaries({k: _strategy(v) for k, v in check.fields.items()})
    if isinstance(check, cm.IndexMap):
        return st.dictionaries(st.integers(0, check.max_index - 1).map(str), _strategy(check.value), max_size=3)
    raise AssertionError(f"no strategy for {check!r}")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                    max_leaves=12)
HOSTILE_LEAVES = st.sampled_from([10**13, -1, "abc", None, 1.5, True, [], {}, "x" * 100_000, 2**70])


def _pair(cfg=None):
    hub = InProcessHub()
    return Control(hub.transport("client1")), Control(hub.transport("server"), cfg)


def _leaves(value, path=()):
    """Paths of every leaf and container in a JSON value."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    out = list(value)
    out[head] = _replace(out[head], rest, new)
    return out


def test_every_kind_party_run_uses_has_a_schema():
    assert set(cm.KINDS) == {"hello", "welcome", "sizes", "batches", "losses", "best", "forward", "report", "roster", "turn",
                            "rejoins", "rejoined"}


@pytest.mark.parametrize("kind", cm.KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_valid_message_of_every_kind_crosses_unchanged(kind, data):
    value = data.draw(_strategy(SCHEMAS[kind]))
    sender, receiver = _pair()
    sender.send("server", **{kind: value})
    assert receiver.recv("client1", kind) == {kind: value}


@pytest.mark.parametrize("kind", cm.KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_json_is_a_value_or_an_error_naming_peer_and_kind(kind, data):
    value = data.draw(JSON)
    sender, receiver = _pair()
    sender.send("server", **{kind: value})
    try:
        got = receiver.recv("client1", kind)
    except cm.ControlMessageError as e:
        assert "client1" in str(e) and repr(kind) in str(e)
    else:  # what passes is of the declared shape: checking it again changes nothing
        assert cm.validate(kind, got, "client1") == got


@pytest.mark.parametrize("kind", cm.KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_hostile_field_in_a_valid_message_is_named(kind, data):
    value = data.draw(_strategy(SCHEMAS[kind]))
    path = data.draw(st.sampled_from(list(_leaves(value))))
    bad = data.draw(HOSTILE_LEAVES)
    hostile = _replace(value, path, bad)
    try:
        got = cm.validate(kind, {kind: hostile}, "client1")
    except cm.ControlMessageError as e:
        text = str(e)
        assert "client1" in text and repr(kind) in text
        # the field at fault is named by its path from the message kind
        shown = kind + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        assert f"is refused: {shown} " in text, (shown, text)
    else:  # the hostile leaf happened to fit where it landed (e.g. True for a bool, -1 for a float)
        assert cm.validate(kind, got, "client1") == got


@pytest.mark.parametrize("kind,value,message", [
    ("sizes", {"val": 10**13, "test": 5}, r"sizes\.val = 10000000000000 must be in 0\.\.100000000"),
    ("sizes", {"val": "abc", "test": 5}, r"sizes\.val must be an integer, got str 'abc'"),
    ("sizes", {"val": 5}, r"sizes must have exactly the keys \['test', 'val'\]; missing \['test'\]"),
    ("batches", [8, 0], r"batches\[1\] = 0 must be in 1\.\.65536"),
    ("forward", 10**13, r"forward = 10000000000000 must be in 0\.\.65536"),
    ("forward", "abc", r"forward must be an integer, got str 'abc'"),
    ("losses", {"0": [0.5, "abc"]}, r"losses\.0\[1\] must be a number, got str"),
    ("losses", {"99999": [0.5]}, r"losses has key '99999'; keys must be hospital indices"),
    ("best", 1, r"best must be true or false, got int 1"),
    ("report", {"party": {}}, r"report must have exactly the keys"),
    ("hello", {"name": "x"}, r"hello must have exactly the keys"),
])
def test_the_red_team_trials_are_refused_naming_peer_and_field(kind, value, message):
    """Each was accepted (or failed with a bare int() error) before issue 30."""
    sender, receiver = _pair()
    sender.send("server", **{kind: value})
    with pytest.raises(MessageError, match=rf"control message '{kind}' from client1 is refused: {message}"):
        receiver.recv("client1", kind)


def test_the_config_bounds_batch_sizes_and_hospital_indices():
    cfg = load_config(None, ["train.batch_size=16", "split.clients=2"])
    sender, receiver = _pair(cfg)
    sender.send("server", batches=[16, 17])
    with pytest.raises(cm.ControlMessageError, match=r"batches\[1\] = 17 must be in 1\.\.16"):
        receiver.recv("client1", "batches")
    sender.send("server", losses={"2": [0.1]})
    with pytest.raises(cm.ControlMessageError, match=r"keys must be hospital indices 0\.\.1"):
        receiver.recv("client1", "losses")


def test_another_kind_or_extra_keys_or_tensors_are_refused():
    sender, receiver = _pair()
    sender.send("server", best=True, extra=1)
    with pytest.raises(cm.ControlMessageError, match=r"from client1: expected 'best', got keys \['best', 'extra'\]"):
        receiver.recv("client1", "best")
    receiver.transport.hub.queues[("client1", "server")].append(wire.encode({"t": __import__("torch").zeros(1)}, meta={"best": True}))
    with pytest.raises(MessageError, match=r"from client1: expected 'best', got tensors \['t'\]"):
        receiver.recv("client1", "best")
    with pytest.raises(cm.ControlMessageError, match="no schema for control message 'unknown'"):
        cm.validate("unknown", {"unknown": 1}, "client1")
