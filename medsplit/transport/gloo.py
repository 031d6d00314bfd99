"""torch.distributed point-to-point transport (gloo over TCP).

Each message is two gloo sends to the peer's rank: a fixed 8-byte length (an int64 tensor, the
framing) and the wire-format payload as a uint8 tensor. Nothing is pickled: torch RPC and the
object collectives (``send_object_list`` ...) are never used.

Security: torch.distributed has no authentication and no encryption, and gloo's TLS transport
is not compiled into the torch wheel this project installs. Use it on a trusted network only
(one site's cluster, or hospitals joined by a VPN / SSH tunnel); see README "Parties as processes".
The rank-0 store binds only the address it is given (loopback by default): the listening socket
is created here and handed to torch, because ``TCPStore`` on its own listens on every interface.
"""

from __future__ import annotations

import datetime
import socket
import warnings

import torch
import torch.distributed as dist

from medsplit.transport.base import Transport, TransportError

LENGTH_BYTES = 8  # one int64: the framing in front of every payload


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``[v6]:PORT`` too) to ``(host, port)``, with a clear error."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} must look like HOST:PORT (e.g. 127.0.0.1:29500)")
    return host.strip("[]"), int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (tests and the local launcher)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _local_address_towards(host: str, port: int) -> str:
    """The local IP a connection to ``host`` leaves from: where this party's gloo sockets listen."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1" if host != "::1" else "::1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))  # UDP: no packet is sent, only the route is looked up
        return s.getsockname()[0]


class GlooTransport(Transport):
    """Moves wire-format messages between parties in separate processes with gloo send/recv.

    Args:
        name: this party's name.
        ranks: every party's rank, ``{"server": 0, "client0": 1, ...}`` (rank 0 hosts the store);
            several names may share a rank (a process hosting two parties, e.g. the server and
            SplitFed's aggregator).
        address: ``HOST:PORT`` of the rank-0 store; rank 0 binds exactly this address.
        timeout_s: how long a receive waits for its peer before naming it as not answering
            (``split.timeout_s``); also bounds start-up.
        local_host: address this party's gloo sockets listen on; default: the loopback for a
            loopback ``address``, else the local IP that routes to the server.
    """

    framing_bytes_per_message = LENGTH_BYTES

    def __init__(self, name: str, ranks: dict[str, int], address: str, timeout_s: float = 120.0, local_host: str | None = None):
        super().__init__(name)
        if name not in ranks:
            raise ValueError(f"party {name!r} has no rank; ranks are {ranks}")
        self.ranks = dict(ranks)
        self.rank = ranks[name]
        self.world_size = len(set(ranks.values()))
        if sorted(set(ranks.values())) != list(range(self.world_size)):
            raise ValueError(f"ranks {ranks} must cover 0..N-1")
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.timeout_s = timeout_s
        self.peers_by_rank = {r: n for n, r in ranks.items()}
        host, port = parse_address(address)
        self._listener = None
        try:
            if self.rank == 0:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                self._listener = socket.socket(family, socket.SOCK_STREAM)
                self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._listener.bind((host, port))
                self._listener.listen(64)
                self.store = dist.TCPStore(host, port, self.world_size, is_master=True, timeout=self.timeout,
                                           wait_for_workers=False, master_listen_fd=self._listener.fileno(), use_libuv=False)
            else:
                self.store = dist.TCPStore(host, port, self.world_size, is_master=False, timeout=self.timeout, use_libuv=False)
            opts = dist.ProcessGroupGloo._Options()
            opts._timeout = self.timeout
            opts._devices = [dist.ProcessGroupGloo.create_device(hostname=local_host or _local_address_towards(host, port))]
            self.pg = dist.ProcessGroupGloo(self.store, self.rank, self.world_size, opts)
        except Exception as e:  # noqa: BLE001 - start-up errors come from C++ as several types
            self.close()
            raise TransportError(f"{name} (rank {self.rank}) could not join the gloo group at {address} "
                                 f"within {timeout_s:g} s: {e}") from e

    def _peer_rank(self, peer: str) -> int:
        if peer not in self.ranks:
            raise TransportError(f"{self.name}: unknown party {peer!r}; parties are {sorted(self.ranks)}")
        return self.ranks[peer]

    def _wait(self, work, what: str, peer: str) -> None:
        try:
            work.wait(self.timeout)
        except Exception as e:  # noqa: BLE001 - gloo raises RuntimeError/DistBackendError
            raise TransportError(f"{self.name}: {what} {peer} (rank {self.ranks[peer]}) failed or timed out "
                                 f"after {self.timeout_s:g} s (split.timeout_s): {e}") from e

    def _send(self, receiver: str, payload: bytes) -> None:
        dst = self._peer_rank(receiver)
        length = torch.tensor([len(payload)], dtype=torch.int64)
        with warnings.catch_warnings():  # read-only buffer: gloo only reads it
            warnings.simplefilter("ignore", UserWarning)
            data = torch.frombuffer(payload, dtype=torch.uint8) if payload else torch.empty(0, dtype=torch.uint8)
        # Both posted before waiting: the payload does not wait for the length's round trip.
        works = [self.pg.send([length], dst, 0)] + ([self.pg.send([data], dst, 1)] if len(payload) else [])
        for work in works:
            self._wait(work, "sending a message to", receiver)

    def _recv(self, sender: str, max_bytes: int) -> bytes:
        src = self._peer_rank(sender)
        length = torch.zeros(1, dtype=torch.int64)
        self._wait(self.pg.recv([length], src, 0), "waiting for a message from", sender)
        n = int(length.item())
        if n < 0 or n > max_bytes:
            raise TransportError(f"{self.name}: {sender} announced a message of {n} bytes, over the limit of "
                                 f"{max_bytes} bytes for what is expected next")
        if n == 0:
            return b""
        data = torch.empty(n, dtype=torch.uint8)
        self._wait(self.pg.recv([data], src, 1), "waiting for a message from", sender)
        return data.numpy().tobytes()

    def close(self) -> None:
        pg = getattr(self, "pg", None)
        if pg is not None:
            try:
                pg.shutdown()  # releases gloo's sockets and threads promptly
            except Exception:  # noqa: BLE001 - already broken by a dead peer
                pass
            self.pg = None
        # The store's daemon polls the listening socket: stop it (drop the store) before the
        # socket is closed, or the daemon aborts the process.
        self.store = None
        if self._listener is not None:
            self._listener.detach()  # the daemon's fd now; the OS closes it at exit
            self._listener = None
