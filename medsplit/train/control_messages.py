"""What each control message between parties may hold: one schema per message kind, checked on
receipt, before any value is used.

A control message is JSON a peer chose; the party that receives it allocates from its numbers
(the server sizes its evaluation loop from ``sizes``, its receive buffers from ``forward``) and
writes its strings into the report. Every field is therefore checked by type and bound, and a
message that does not fit is a :class:`ControlMessageError` naming the peer, the message kind and
the field (``sizes.val = 10000000000000 from client1 ...``), never an allocation of 80 TB or a
bare "invalid literal for int()".

A new control message (or a new field) needs its schema here: an unknown kind is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medsplit.split.channel import MessageError

MAX_PARTIES = 1024  # hospitals + server; far above any consortium this runs for
MAX_ROWS = 10**8  # images in one hospital's val or test split
MAX_BATCH = 1 << 16  # images in one batch (training, evaluation, a mirrored forward)
MAX_STEPS = 10**7  # batches of one hospital in one epoch (and losses it reports)
MAX_EPOCH = 10**6
MAX_COUNT = 1 << 62  # bytes, messages
MAX_NAME = 256  # party names, hosts, links, kinds, module names
MAX_TEXT = 1 << 16  # a refusal's reason


class ControlMessageError(MessageError):
    """A control message that does not fit its schema; names the peer, kind and field."""


class _Invalid(Exception):
    def __init__(self, path: str, why: str):
        super().__init__(path, why)
        self.path, self.why = path, why


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---- field checkers: each returns the value (as the receiver uses it) or raises _Invalid ----
@dataclass(frozen=True)
class Int:
    lo: int
    hi: int

    def __call__(self, value, path):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(path, f"must be an integer, got {type(value).__name__} {_show(value)}")
        if not self.lo <= value <= self.hi:
            raise _Invalid(path, f"= {_show(value)} must be in {self.lo}..{self.hi}")
        return value


@dataclass(frozen=True)
class Float:
    lo: float = -math.inf

    def __call__(self, value, path):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Invalid(path, f"must be a number, got {type(value).__name__} {_show(value)}")
        if not math.isfinite(value) or value < self.lo:
            raise _Invalid(path, f"= {_show(value)} must be a finite number >= {self.lo}")
        return float(value)


@dataclass(frozen=True)
class Bool:
    def __call__(self, value, path):
        if not isinstance(value, bool):
            raise _Invalid(path, f"must be true or false, got {type(value).__name__} {_show(value)}")
        return value


@dataclass(frozen=True)
class Str:
    max_len: int = MAX_NAME
    choices: tuple = ()

    def __call__(self, value, path):
        if not isinstance(value, str):
            raise _Invalid(path, f"must be a string, got {type(value).__name__} {_show(value)}")
        if len(value) > self.max_len:
            raise _Invalid(path, f"is a string of {len(value)} characters, over the limit of {self.max_len}")
        if self.choices and value not in self.choices:
            raise _Invalid(path, f"= {_show(value)} must be one of {list(self.choices)}")
        return value


@dataclass(frozen=True)
class Maybe:
    """``null`` or what ``item`` accepts."""

    item: object

    def __call__(self, value, path):
        return None if value is None else self.item(value, path)


@dataclass(frozen=True)
class List:
    item: object
    max_len: int

    def __call__(self, value, path):
        if not isinstance(value, list):
            raise _Invalid(path, f"must be a list, got {type(value).__name__} {_show(value)}")
        if len(value) > self.max_len:
            raise _Invalid(path, f"holds {len(value)} items, over the limit of {self.max_len}")
        return [self.item(v, f"{path}[{i}]") for i, v in enumerate(value)]


@dataclass(frozen=True)
class Record:
    """A JSON object with exactly these keys."""

    fields: dict

    def __call__(self, value, path):
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be an object, got {type(value).__name__} {_show(value)}")
        if set(value) != set(self.fields):
            missing, extra = sorted(set(self.fields) - set(value)), sorted(set(value) - set(self.fields))
            raise _Invalid(path, "must have exactly the keys " + str(sorted(self.fields))
                           + (f"; missing {missing}" if missing else "") + (f"; unexpected {[_show(k) for k in extra][:5]}" if extra else ""))
        return {k: check(value[k], f"{path}.{k}") for k, check in self.fields.items()}


@dataclass(frozen=True)
class IndexMap:
    """A JSON object keyed by decimal indices ``"0"``..``"n-1"`` (JSON keys are strings)."""

    value: object
    max_index: int

    def __call__(self, value, path):
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be an object, got {type(value).__name__} {_show(value)}")
        out = {}
        for k, v in value.items():
            if not (isinstance(k, str) and k.isdigit() and k.isascii() and len(k) <= 6 and int(k) < self.max_index and str(int(k)) == k):
                raise _Invalid(path, f"has key {_show(k)}; keys must be hospital indices 0..{self.max_index - 1}")
            out[k] = self.value(v, f"{path}.{k}")
        return out


# ---- the schemas -------------------------------------------------------------------------
PARTY = {"name": Str(), "rank": Int(0, MAX_PARTIES), "host": Str(), "pid": Int(0, 1 << 32), "threads": Int(1, 1 << 16)}
HELLO = Record({**PARTY, "version": Int(0, 1 << 31), "config_hash": Str(64), "start_epoch": Int(0, MAX_EPOCH)})
BYTE_ROW = Record({"phase": Str(16), "epoch": Int(0, MAX_EPOCH), "sender": Str(), "receiver": Str(), "kind": Str(),
                   "link": Str(), "bytes": Int(0, MAX_COUNT)})
LINK_ROW = Record({"party": Str(), "direction": Str(8, ("send", "recv")), "peer": Str(), "messages": Int(0, MAX_COUNT),
                   "payload_bytes": Int(0, MAX_COUNT), "framing_bytes": Int(0, MAX_COUNT), "seconds": Float(0.0)})


def schemas(batch_size: int = MAX_BATCH, clients: int = MAX_PARTIES - 1) -> dict:
    """Every control message kind's schema.

    Args:
        batch_size: the largest training batch a hospital may announce (``train.batch_size``
            where the receiver knows the config).
        clients: the number of hospitals (``split.clients``), bounding hospital indices.
    """
    return {
        "hello": HELLO,
        "welcome": Record({"ok": Bool(), "reason": Str(MAX_TEXT), "start_epoch": Int(0, MAX_EPOCH),
                           "parties": List(HELLO, clients + 1)}),
        "sizes": Record({"val": Int(0, MAX_ROWS), "test": Int(0, MAX_ROWS)}),
        "batches": List(Int(1, batch_size), MAX_STEPS),
        "losses": IndexMap(List(Float(), MAX_STEPS), clients),
        # a relay turn's end (split.min_hospitals): the hospital's training losses of that turn
        "turn": List(Float(), MAX_STEPS),
        "best": Bool(),
        "forward": Int(0, MAX_BATCH),
        # split.min_hospitals: who has dropped out so far (the server's view, sent to those present)
        "roster": List(Record({"hospital": Int(0, max(0, clients - 1)), "epoch": Int(1, MAX_EPOCH), "after": Int(0, MAX_STEPS),
                               "why": Str(MAX_TEXT)}), clients),
        # a restarted hospital (gloo): the server tells those present whom to link with again ...
        "rejoins": List(Record({"hospital": Int(0, max(0, clients - 1)), "incarnation": Int(1, MAX_EPOCH)}), clients),
        # ... and the restarted one where the run stands: the epoch it joins at, who left, every party's hello
        "rejoined": Record({"epoch": Int(0, MAX_EPOCH), "absent": List(Int(0, max(0, clients - 1)), clients),
                            "departures": List(Record({"hospital": Int(0, max(0, clients - 1)), "epoch": Int(1, MAX_EPOCH),
                                                       "after": Int(0, MAX_STEPS), "why": Str(MAX_TEXT),
                                                       "rejoined": Maybe(Int(1, MAX_EPOCH))}), 16 * clients),
                            "parties": List(HELLO, clients + 1)}),
        "report": Record({"party": Record(PARTY), "bytes": List(BYTE_ROW, MAX_STEPS), "links": List(LINK_ROW, 4 * MAX_PARTIES),
                          "control_bytes_sent": Int(0, MAX_COUNT), "data_loaded": Bool(),
                          "data_modules": List(Str(), 4096)}),
    }


KINDS = tuple(schemas())


def validate(kind: str, meta: object, peer: str, schema: dict | None = None) -> dict:
    """``meta`` (a received control message, expected to be of ``kind``) checked against its schema.

    Returns:
        ``{kind: value}``, the value as checked (integers stay integers, numbers become floats).

    Raises:
        ControlMessageError: naming ``peer``, the kind and the field at fault.
    """
    schema = schema or schemas()
    if kind not in schema:
        raise ControlMessageError(f"no schema for control message {kind!r} (known: {sorted(schema)}); "
                                  "add one to medsplit/train/control_messages.py")
    if not isinstance(meta, dict) or set(meta) != {kind}:
        got = sorted(map(str, meta))[:10] if isinstance(meta, dict) else type(meta).__name__
        raise ControlMessageError(f"unexpected control message from {peer}: expected {kind!r}, got keys {got}")
    try:
        return {kind: schema[kind](meta[kind], kind)}
    except _Invalid as e:
        raise ControlMessageError(f"control message {kind!r} from {peer} is refused: {e.path} {e.why}") from None
    except RecursionError:  # the wire decoder bounds nesting already; belt and braces
        raise ControlMessageError(f"control message {kind!r} from {peer} nests too deeply") from None
