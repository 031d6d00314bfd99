"""Control messages between parties: protocol metadata as JSON in the wire format's header, never
tensors, counted apart from the Channel's payload; and the start-up handshake built on them
(protocol version, config hash, resume epoch)."""

from __future__ import annotations

from medsplit.config import Config
from medsplit.split import wire
from medsplit.split.channel import MessageError
from medsplit.train import control_messages
from medsplit.transport.base import TransportError
from medsplit.train.party_plan import PROTOCOL_VERSION, SERVER, PartyError, config_hash

CONTROL_MAX_BYTES = 1 << 24


class Control:
    """Protocol metadata between parties: JSON in the wire format's header, no tensors.

    Every received message is checked against its kind's schema
    (:mod:`medsplit.train.control_messages`) before any value is used: type and bound of every
    field, with the peer named.

    Args:
        transport: the transport the Channel also uses (messages stay in order per pair).
        cfg: the run's config, when known: bounds announced batch sizes by ``train.batch_size``
            and hospital indices by ``split.clients`` (without it, generous fixed bounds apply).
    """

    def __init__(self, transport, cfg: Config | None = None):
        self.transport = transport
        self.bytes_sent = 0
        self.bytes_received = 0
        self.schemas = control_messages.schemas(**({"batch_size": cfg.train.batch_size, "clients": cfg.split.clients}
                                                    if cfg is not None else {}))

    def send(self, peer: str, **message) -> None:
        payload = wire.encode({}, meta=message)
        self.transport.send(peer, payload)
        self.bytes_sent += len(payload)

    def recv(self, peer: str, expect: str) -> dict:
        """The next control message from ``peer``, which must be an ``expect`` message that fits
        its schema; raises :class:`~medsplit.train.control_messages.ControlMessageError` (a
        MessageError) naming the peer otherwise."""
        try:
            payload = self.transport.recv(peer, CONTROL_MAX_BYTES)
        except TransportError as e:  # name what was awaited, keeping the error's class
            raise type(e)(f"receiving control message {expect!r} from {peer}: {e}") from e
        self.bytes_received += len(payload)
        try:
            tensors, meta = wire.decode(payload, max_bytes=CONTROL_MAX_BYTES)
        except Exception as e:  # noqa: BLE001 - any malformed control message is the peer's fault
            raise MessageError(f"malformed control message from {peer} (expected {expect!r}): {e}") from e
        if tensors:
            raise MessageError(f"unexpected control message from {peer}: expected {expect!r}, got tensors {sorted(tensors)[:10]}")
        return control_messages.validate(expect, meta, peer, self.schemas)


def handshake(control: Control, cfg: Config, name: str, info: dict, hospitals: list[str],
              start_epoch: int) -> tuple[int, list[dict]]:
    """Check every hospital runs the same protocol version and config; agree on the epoch.

    The server collects each hospital's hello and answers all of them with one verdict, so a
    refused run names every party at fault at once.

    Args:
        control: this party's control messages.
        cfg: the run's config (compared by :func:`~medsplit.train.party_plan.config_hash`).
        name: this party's name (``server`` or ``client<k>``).
        info: this party's name, rank, host and pid, sent with the hello.
        hospitals: the hospitals' names, in rank order.
        start_epoch: the epoch this party starts from (its last checkpoint's + 1, or 0).

    Returns:
        The agreed start epoch and every party's hello (the server's first), for the report.
    """
    mine = {"version": PROTOCOL_VERSION, "config_hash": config_hash(cfg), "start_epoch": start_epoch, **info}
    if name != SERVER:
        control.send(SERVER, hello=mine)
        answer = control.recv(SERVER, "welcome")["welcome"]
        if not answer["ok"]:
            raise PartyError(f"{name}: the server refused this run: {answer['reason']}")
        return int(answer["start_epoch"]), answer["parties"]
    hellos = {h: control.recv(h, "hello")["hello"] for h in hospitals}
    problems = []
    for h, hello in hellos.items():
        if hello.get("version") != PROTOCOL_VERSION:
            problems.append(f"{h} (rank {hello.get('rank')}, {hello.get('host')}) speaks protocol version "
                            f"{hello.get('version')}, the server {PROTOCOL_VERSION}")
        elif hello.get("config_hash") != mine["config_hash"]:
            problems.append(f"{h} (rank {hello.get('rank')}, {hello.get('host')}) has config hash "
                            f"{hello.get('config_hash')}, the server {mine['config_hash']}: the configs differ "
                            "in a setting every party must share (only data paths, device and outputs may differ)")
    epochs = {h: hello.get("start_epoch") for h, hello in hellos.items()} | {name: start_epoch}
    if not problems and len(set(epochs.values())) > 1:
        problems.append(f"the parties' last checkpoints are from different epochs {epochs}; resume needs all of them")
    parties = [mine] + [hellos[h] for h in hospitals]
    reason = "; ".join(problems)
    for h in hospitals:
        control.send(h, welcome={"ok": not problems, "reason": reason, "start_epoch": start_epoch, "parties": parties})
    if problems:
        raise PartyError(f"server: refused the run: {reason}")
    return start_epoch, parties
