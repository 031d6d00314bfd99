"""The wire decoder as a hostile peer would feed it: every malformed message is a
WireFormatError naming the field at fault, never a raw TypeError/KeyError/RecursionError,
and never a tensor built from bytes outside its slot."""

import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsplit.split import wire
from medsplit.split.wire import WireFormatError

_LEN = struct.Struct("<Q")


def _message(header, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return _LEN.pack(len(raw)) + raw + data


def _entry(name="a", dtype="float32", shape=(2,), offset=0, nbytes=8):
    return {"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": nbytes}


GOOD = {"tensors": [_entry()], "meta": {}}

HOSTILE = [
    ("header is a list", _message([1, 2]), r"must be a JSON object, got list"),
    ("header is null", _message(None), r"must be a JSON object, got NoneType"),
    ("no tensors key", _message({"meta": {}}), r"'tensors' must be a list"),
    ("tensors not a list", _message({"tensors": {"a": 1}}), r"'tensors' must be a list, got dict"),
    ("unknown header key", _message({"tensors": [], "extra": 1}), r"unknown key\(s\) \['extra'\]"),
    ("meta not an object", _message({"tensors": [], "meta": [1]}), r"'meta' must be an object"),
    ("entry missing keys", _message({"tensors": [{"name": "a"}]}, bytes(8)), r"tensors\[0\] must have exactly the keys"),
    ("entry not an object", _message({"tensors": ["a"]}), r"tensors\[0\] must be an object"),
    ("name not a string", _message({"tensors": [_entry(name=3)]}, bytes(8)), r"tensors\[0\]\.name must be a string"),
    ("dtype as a list", _message({"tensors": [_entry(dtype=["float32"])]}, bytes(8)), r"\.dtype: .*unknown dtype \['float32'\]"),
    ("unknown dtype", _message({"tensors": [_entry(dtype="complex64")]}, bytes(8)), r"\.dtype: .*unknown dtype 'complex64'"),
    ("shape not a list", _message({"tensors": [_entry() | {"shape": 2}]}, bytes(8)), r"\.shape must be a list of integers"),
    ("shape of floats", _message({"tensors": [_entry(shape=(2.0,))]}, bytes(8)), r"\.shape must be a list of integers"),
    ("negative shape", _message({"tensors": [_entry(shape=(-2,), nbytes=8)]}, bytes(8)), r"\.shape \[-2\] must have at most 16 non-negative"),
    ("huge shape", _message({"tensors": [_entry(shape=(10**6, 10**6), nbytes=8)]}, bytes(8)), r"\.nbytes is 8, but shape .* takes 4000000000000 bytes"),
    ("huge dimension of an empty tensor", _message({"tensors": [_entry(shape=(0, 10**30), nbytes=0)]}), r"\.shape \[0, 10+\] has a dimension above the message limit"),
    ("too many dims", _message({"tensors": [_entry(shape=(1,) * 40, nbytes=4)]}, bytes(4)), r"at most 16 non-negative dimensions"),
    ("negative nbytes", _message({"tensors": [_entry(nbytes=-8)]}, bytes(8)), r"\.nbytes must be a non-negative integer, got -8"),
    ("nbytes inconsistent with shape", _message({"tensors": [_entry(nbytes=4)]}, bytes(4)), r"\.nbytes is 4, but shape \[2\] of float32 takes 8 bytes"),
    ("negative offset reads the header", _message({"tensors": [_entry(offset=-40)]}, bytes(8)), r"\.offset must be a non-negative integer, got -40"),
    ("gap between tensors", _message({"tensors": [_entry(offset=4)]}, bytes(12)), r"\.offset is 4; tensors must lie back to back, so it must be 0"),
    ("overlapping tensors", _message({"tensors": [_entry("a"), _entry("b", offset=0)]}, bytes(16)), r"tensors\[1\] \('b'\)\.offset is 0; .* must be 8"),
    ("duplicate names", _message({"tensors": [_entry("a"), _entry("a", offset=8)]}, bytes(16)), r"tensor name 'a' appears twice"),
    ("duplicate JSON key", _message(b'{"tensors": [], "tensors": []}'), r"repeats the key 'tensors'"),
    ("trailing bytes", _message(GOOD, bytes(8) + b"extra"), r"5 trailing bytes after its last tensor"),
    ("truncated data", _message(GOOD, bytes(5)), r"truncated inside tensor 'a'"),
    ("truncated header", _LEN.pack(1000) + b"{}", r"truncated inside its header"),
    ("huge header length", _LEN.pack(2**63) + b"{}", r"header length .* exceeds the limit"),
    ("short prefix", b"\x01\x02", r"shorter than its length prefix"),
    ("not JSON", _message(b"\xff\xfe{"), r"not valid JSON"),
    ("NaN constant", _message(b'{"tensors": [], "meta": {"x": NaN}}'), r"holds NaN"),
    ("deep nesting", _message(b'{"tensors": [], "meta": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"), r"nests deeper than 32"),
    ("moderate nesting", _message(b'{"tensors": [], "meta": {"x": ' + b"[" * 100 + b"]" * 100 + b"}}"), r"nests deeper than 32"),
    ("bool tensor holding 2", _message({"tensors": [_entry(dtype="bool", shape=(2,), nbytes=2)]}, b"\x01\x02"), r"tensor 'a' is bool but holds bytes other than 0 and 1"),
    ("bool as nbytes", _message({"tensors": [_entry(nbytes=True)]}, bytes(8)), r"\.nbytes must be a non-negative integer, got True"),
]


@pytest.mark.parametrize("what,payload,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_message_is_a_wire_format_error_naming_the_field(what, payload, message):
    with pytest.raises(WireFormatError, match=message):
        wire.decode(payload)


def test_a_payload_that_is_not_bytes_is_refused():
    with pytest.raises(WireFormatError, match="must be bytes, got str"):
        wire.decode("not bytes")


def test_message_size_limit_is_a_parameter():
    payload = wire.encode({"a": torch.zeros(100)})
    assert wire.decode(payload, max_bytes=len(payload))[0]["a"].shape == (100,)
    with pytest.raises(WireFormatError, match=r"exceeds the limit of 100 bytes \(max_bytes\)"):
        wire.decode(payload, max_bytes=100)


def test_empty_and_zero_sized_tensors_round_trip():
    tensors = {"empty": torch.zeros(0, 3), "meta_like": torch.zeros(0, 5, 7, dtype=torch.bfloat16), "x": torch.arange(3)}
    back, meta = wire.decode(wire.encode(tensors, meta={"k": [1, {"a": None}]}))
    assert meta == {"k": [1, {"a": None}]}
    assert all(back[k].shape == t.shape and back[k].dtype == t.dtype for k, t in tensors.items())


# --- property-based fuzzing ---------------------------------------------------------------

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
           torch.int8, torch.uint8, torch.bool]


@st.composite
def tensor_dicts(draw):
    n = draw(st.integers(0, 4))
    names = draw(st.lists(st.text(max_size=6), min_size=n, max_size=n, unique=True))
    out = {}
    for name in names:
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        dtype = draw(st.sampled_from(_DTYPES))
        numel = 1
        for d in shape:
            numel *= d
        values = draw(st.lists(st.integers(-100, 100), min_size=numel, max_size=numel))
        t = torch.tensor(values, dtype=torch.int64).reshape(shape)
        out[name] = (t != 0) if dtype == torch.bool else t.to(dtype)
    return out


_json_meta = st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                          max_leaves=8)


def _check(payload: bytes, original: dict[str, torch.Tensor] | None = None) -> None:
    """Accept only a WireFormatError or a decode whose tensors fill the data section exactly."""
    try:
        back, meta = wire.decode(payload)
    except WireFormatError:
        return
    assert isinstance(meta, dict)
    (hlen,) = _LEN.unpack_from(payload)
    data = sum(t.numel() * t.element_size() for t in back.values())
    assert _LEN.size + hlen + data == len(payload)
    if original is not None:
        assert list(back) == list(original)
        for k, t in original.items():
            assert back[k].dtype == t.dtype and torch.equal(back[k], t)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensor_dicts(), st.dictionaries(st.text(max_size=4), _json_meta, max_size=3))
def test_fuzz_round_trip(tensors, meta):
    payload = wire.encode(tensors, meta=meta)
    assert len(payload) == wire.encoded_size(tensors, meta=meta)
    back, got_meta = wire.decode(payload)
    assert got_meta == meta
    _check(payload, tensors)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensor_dicts(), st.data())
def test_fuzz_mutated_messages_decode_correctly_or_raise_wire_format_error(tensors, data):
    payload = bytearray(wire.encode(tensors))
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "header"]))
    if how == "flip" and payload:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(payload) - 1))
            payload[i] = data.draw(st.integers(0, 255))
    elif how == "truncate":
        payload = payload[: data.draw(st.integers(0, len(payload)))]
    elif how == "append":
        payload += data.draw(st.binary(min_size=1, max_size=8))
    else:  # rewrite a header field with a random JSON value
        (hlen,) = _LEN.unpack_from(payload)
        header = json.loads(payload[_LEN.size: _LEN.size + hlen])
        value = data.draw(_json_meta | st.integers() | st.lists(st.integers(), max_size=4))
        if header["tensors"]:
            entry = data.draw(st.sampled_from(header["tensors"]))
            entry[data.draw(st.sampled_from(["name", "dtype", "shape", "offset", "nbytes", "extra"]))] = value
        else:
            header[data.draw(st.sampled_from(["tensors", "meta", "extra"]))] = value
        raw = json.dumps(header).encode()
        payload = bytearray(_LEN.pack(len(raw)) + raw + payload[_LEN.size + hlen:])
    _check(bytes(payload))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(payload):
    _check(payload)
