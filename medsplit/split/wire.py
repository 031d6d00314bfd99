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


class WireFormatError(ValueError):
    """A message that does not decode: truncated, wrong header, unknown dtype."""


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


def decode(payload: bytes, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    if len(payload) < _LEN.size:
        raise WireFormatError(f"message of {len(payload)} bytes is shorter than its length prefix")
    (hlen,) = _LEN.unpack_from(payload)
    try:
        header = json.loads(payload[_LEN.size : _LEN.size + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireFormatError(f"message header is not valid JSON: {e}") from e
    base = _LEN.size + hlen
    out = {}
    for e in header["tensors"]:
        if e["dtype"] not in _DTYPES:
            raise WireFormatError(f"tensor {e['name']!r} has unknown dtype {e['dtype']!r}")
        start, stop = base + e["offset"], base + e["offset"] + e["nbytes"]
        if stop > len(payload):
            raise WireFormatError(f"message truncated inside tensor {e['name']!r}")
        dtype = _DTYPES[e["dtype"]]
        np_dtype = np.int16 if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype
        arr = np.frombuffer(payload, dtype=np_dtype, count=e["nbytes"] // np.dtype(np_dtype).itemsize, offset=start)
        t = torch.from_numpy(arr.copy())
        if dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        out[e["name"]] = t.reshape(e["shape"]).to(device)
    return out, header.get("meta", {})
