"""A safe wire format for named tensors: length-prefixed JSON header + raw bytes.

Nothing received from another party is ever unpickled. The size of an encoded
message is computable from shapes and dtypes alone (:func:`encoded_size`), so the
in-process channel counts exactly the bytes a real transport would send without
paying for a copy.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_LEN = struct.Struct("<Q")


# Limits a receiver applies before trusting a header. A message is at most ``max_bytes`` (a
# parameter of :func:`decode`); the largest message medsplit sends is a whole model's weights and
# optimiser state (ResNet-50: ~300 MB), so 2 GiB leaves room without letting a peer make us
# allocate unbounded memory.
MAX_MESSAGE_BYTES = 2 * 1024**3
MAX_HEADER_BYTES = 4 * 1024**2
MAX_NESTING = 32  # JSON nesting of the header (meta included); deeper is refused, never recursed into
MAX_DIMS = 16
_ENTRY_KEYS = ("name", "dtype", "shape", "offset", "nbytes")


class WireFormatError(ValueError):
    """A message that does not decode: truncated, malformed header, unknown dtype, sizes that do
    not add up. The message names the field at fault."""


def _header(tensors: dict[str, torch.Tensor], meta: dict | None) -> tuple[bytes, int]:
    entries, offset = [], 0
    for name, t in tensors.items():
        if t.dtype not in _NAMES:
            raise TypeError(f"tensor {name!r} has dtype {t.dtype}, which the wire format does not carry")
        nbytes = t.numel() * t.element_size()
        entries.append({"name": name, "dtype": _NAMES[t.dtype], "shape": list(t.shape), "offset": offset, "nbytes": nbytes})
        offset += nbytes
    header = json.dumps({"tensors": entries, "meta": meta or {}}, separators=(",", ":")).encode()
    return header, offset


def encoded_size(tensors: dict[str, torch.Tensor], meta: dict | None = None) -> int:
    """Exact length of ``encode(tensors, meta)``, computed without copying any data."""
    header, data_bytes = _header(tensors, meta)
    return _LEN.size + len(header) + data_bytes


def encode(tensors: dict[str, torch.Tensor], meta: dict | None = None) -> bytes:
    header, _ = _header(tensors, meta)
    chunks = [_LEN.pack(len(header)), header]
    for t in tensors.values():
        flat = t.detach().contiguous().cpu().reshape(-1)
        # bfloat16 has no numpy dtype: ship its bit pattern as int16.
        view = flat.view(torch.int16) if t.dtype == torch.bfloat16 else flat
        chunks.append(view.numpy().tobytes())
    return b"".join(chunks)


def decode(payload: bytes, device: torch.device | str = "cpu", *, max_bytes: int = MAX_MESSAGE_BYTES
           ) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and meta of a message made by :func:`encode`, validated before any data is read.

    Args:
        payload: the received bytes (``bytes``, ``bytearray`` or ``memoryview``).
        device: where the decoded tensors are put.
        max_bytes: largest message accepted; a longer one is refused before its header is parsed.

    Raises:
        WireFormatError: anything malformed (naming the field): not bytes, too long, truncated,
            trailing bytes, a header that is not a JSON object of the expected shape, unknown
            keys, wrong types, duplicate names, unknown dtypes, negative or inconsistent shapes
            and sizes, tensors that are not laid out back to back from offset 0.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"message must be bytes, got {type(payload).__name__}")
    payload = bytes(payload) if not isinstance(payload, bytes) else payload
    if len(payload) > max_bytes:
        raise WireFormatError(f"message of {len(payload)} bytes exceeds the limit of {max_bytes} bytes (max_bytes)")
    if len(payload) < _LEN.size:
        raise WireFormatError(f"message of {len(payload)} bytes is shorter than its length prefix")
    (hlen,) = _LEN.unpack_from(payload)
    if hlen > MAX_HEADER_BYTES:
        raise WireFormatError(f"header length {hlen} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    if _LEN.size + hlen > len(payload):
        raise WireFormatError(f"message truncated inside its header (header length {hlen}, {len(payload) - _LEN.size} bytes follow the prefix)")
    header = _parse_header(payload[_LEN.size : _LEN.size + hlen])
    base = _LEN.size + hlen
    entries = _check_entries(header["tensors"], data_bytes=len(payload) - base, max_dim=max_bytes)
    out = {}
    for name, dtype, shape, offset, nbytes in entries:
        np_dtype = np.int16 if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype
        arr = np.frombuffer(payload, dtype=np_dtype, count=nbytes // np.dtype(np_dtype).itemsize, offset=base + offset)
        if dtype == torch.bool and arr.size and arr.view(np.uint8).max() > 1:
            # torch would keep the raw byte: a "bool" of 2 that is neither True nor False
            raise WireFormatError(f"tensor {name!r} is bool but holds bytes other than 0 and 1")
        t = torch.from_numpy(arr.copy())
        if dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        out[name] = t.reshape(shape).to(device)
    return out, header["meta"]


def _reject_constant(name: str):
    raise WireFormatError(f"message header holds {name}, which is not JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise WireFormatError(f"message header repeats the key {dup!r}")
    return dict(pairs)


def _parse_header(raw: bytes) -> dict:
    try:
        header = json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError as e:  # the C parser stops at the interpreter's recursion limit
        raise WireFormatError(f"message header nests deeper than {MAX_NESTING} levels") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireFormatError(f"message header is not valid JSON: {e}") from e
    if _depth(header) > MAX_NESTING:
        raise WireFormatError(f"message header nests deeper than {MAX_NESTING} levels")
    if not isinstance(header, dict):
        raise WireFormatError(f"message header must be a JSON object, got {type(header).__name__}")
    unknown = sorted(set(header) - {"tensors", "meta"})
    if unknown:
        raise WireFormatError(f"message header has unknown key(s) {unknown}; expected 'tensors' and 'meta'")
    if not isinstance(header.get("tensors"), list):
        raise WireFormatError(f"header field 'tensors' must be a list, got {type(header.get('tensors')).__name__}")
    header.setdefault("meta", {})
    if not isinstance(header["meta"], dict):
        raise WireFormatError(f"header field 'meta' must be an object, got {type(header['meta']).__name__}")
    return header


def _depth(value) -> int:
    """Nesting depth of a parsed header, walked with an explicit stack (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entries(entries: list, data_bytes: int, max_dim: int) -> list[tuple[str, torch.dtype, tuple[int, ...], int, int]]:
    """Every tensor entry well typed, uniquely named, sized as its shape and dtype say, and laid
    out back to back from offset 0 so that together they fill the data section exactly."""
    checked, names, expected_offset = [], set(), 0
    for i, e in enumerate(entries):
        where = f"tensors[{i}]"
        if not isinstance(e, dict):
            raise WireFormatError(f"header field {where} must be an object, got {type(e).__name__}")
        if sorted(e) != sorted(_ENTRY_KEYS):
            raise WireFormatError(f"header field {where} must have exactly the keys {list(_ENTRY_KEYS)}, got {sorted(e)}")
        name = e["name"]
        if not isinstance(name, str):
            raise WireFormatError(f"header field {where}.name must be a string, got {type(name).__name__}")
        where = f"tensors[{i}] ({name!r})"
        if name in names:
            raise WireFormatError(f"header field {where}.name: tensor name {name!r} appears twice")
        names.add(name)
        if not isinstance(e["dtype"], str) or e["dtype"] not in _DTYPES:
            raise WireFormatError(f"header field {where}.dtype: tensor {name!r} has unknown dtype {e['dtype']!r}; "
                                  f"valid dtypes are {sorted(_DTYPES)}")
        shape = e["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise WireFormatError(f"header field {where}.shape must be a list of integers, got {shape!r}")
        if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
            raise WireFormatError(f"header field {where}.shape {shape} must have at most {MAX_DIMS} non-negative dimensions")
        if any(d > max_dim for d in shape):
            # only an empty tensor could have one (another dimension 0), and torch cannot even
            # hold a dimension past 2**63
            raise WireFormatError(f"header field {where}.shape {shape} has a dimension above the message limit {max_dim}")
        for key in ("offset", "nbytes"):
            if not _is_int(e[key]) or e[key] < 0:
                raise WireFormatError(f"header field {where}.{key} must be a non-negative integer, got {e[key]!r}")
        dtype = _DTYPES[e["dtype"]]
        numel = 1
        for d in shape:
            numel *= d  # Python integers: a hostile shape cannot overflow
        if e["nbytes"] != numel * _itemsize(dtype):
            raise WireFormatError(f"header field {where}.nbytes is {e['nbytes']}, but shape {shape} of {e['dtype']} "
                                  f"takes {numel * _itemsize(dtype)} bytes")
        if e["offset"] != expected_offset:
            raise WireFormatError(f"header field {where}.offset is {e['offset']}; tensors must lie back to back, "
                                  f"so it must be {expected_offset}")
        if expected_offset + e["nbytes"] > data_bytes:
            raise WireFormatError(f"message truncated inside tensor {name!r} (needs bytes {expected_offset}..{expected_offset + e['nbytes']} "
                                  f"of a {data_bytes}-byte data section)")
        checked.append((name, dtype, tuple(shape), e["offset"], e["nbytes"]))
        expected_offset += e["nbytes"]
    if expected_offset != data_bytes:
        raise WireFormatError(f"message has {data_bytes - expected_offset} trailing bytes after its last tensor")
    return checked


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()
