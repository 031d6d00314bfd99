"""torch.distributed point-to-point transport (gloo over TCP).

Each message crosses as one frame (:mod:`~medsplit.transport.framing`): a prefix with a sequence
number and the payload's length, the wire-format payload, a trailer with the length again and a
CRC32 (and, with ``split.secret_file``, an HMAC-SHA256), cut into gloo messages that each fit the
zero-filled buffer the receiver posts for them. A peer that lies about a length is named
(:class:`~medsplit.transport.framing.FrameError`), never able to abort its receiver nor to make it
decode memory it did not send. Nothing is pickled: torch RPC and the object collectives
(``send_object_list`` ...) are never used.

Start-up happens under ``split.timeout_s`` as a whole: every party checks in (rank, number of
parties, config hash per key) in the rendezvous store and the server answers with one verdict
(:mod:`~medsplit.transport.checkin`) before the gloo group forms, so a duplicated rank, another
``split.clients`` or another config is named instead of hanging inside gloo; forming the group
itself is bounded too. While the run goes, every party shows signs of life in the store
(:mod:`~medsplit.transport.liveness`), so a frozen party is named by every peer that waits on it.

Security: torch.distributed has no encryption, and gloo's TLS transport is not compiled into the
torch wheel this project installs. ``split.secret_file`` authenticates every frame (and the
check-in) with a shared secret; it does not hide the bytes. Use it on a trusted network, or join
the hospitals by a VPN / SSH tunnel; see docs/parties.md and docs/security.md.
The rank-0 store binds only the address it is given (loopback by default): the listening socket
is created here and handed to torch, because ``TCPStore`` on its own listens on every interface.
"""

from __future__ import annotations

import datetime
import os
import socket
import time

import torch.distributed as dist

from medsplit.transport import framing
from medsplit.transport.auth import RunKey
from medsplit.transport.base import Transport, TransportError
from medsplit.transport.checkin import answer_rejoin, client_check_in, rejoin_requests, request_rejoin, server_check_in
from medsplit.transport.links import Link, form_link, party_id
from medsplit.transport.liveness import Liveness

TAG = 0  # every frame's chunks, in order, on one tag per pair of ranks


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
            (``split.timeout_s``); also the hard deadline of the whole start-up.
        local_host: address this party's gloo sockets listen on; default: the loopback for a
            loopback ``address``, else the local IP that routes to the server.
        checkin: what this party announces at check-in besides its name, rank, host, pid and the
            number of parties: ``config_hash`` and ``config_keys`` (a hash per config key), which
            the server compares with its own.
        secret: the shared secret of ``split.secret_file`` (authenticates check-in and frames), or None.
        rejoin_wait_s: this hospital restarted while the run goes on: it checks in again and waits
            up to this long for the server to admit it (:meth:`admit`, at an epoch boundary).

    Each pair of parties talks over its own two-rank gloo group (:mod:`~medsplit.transport.links`),
    formed at start-up; :meth:`relink` forms one anew when its peer restarted.
    """

    def __init__(self, name: str, ranks: dict[str, int], address: str, timeout_s: float = 120.0, local_host: str | None = None,
                 checkin: dict | None = None, secret: bytes | None = None, rejoin_wait_s: float | None = None):
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
        self.names_by_rank = {r: "/".join(n for n, rr in ranks.items() if rr == r) for r in range(self.world_size)}
        self.run_key: RunKey | None = None
        self.framing_bytes_per_message = framing.overhead(secret is not None)
        self.incarnations = dict.fromkeys(range(self.world_size), 0)  # how often each rank has (re)joined
        self.links: dict[int, Link] = {}  # peer rank -> this party's end of the link
        self.device = self.store = self.liveness = None
        self._secret, self._rejoins_seen = secret, 0
        self._rejoins_pending: dict[int, tuple[dict, list[str]]] = {}  # request -> (record, problems), unanswered
        host, port = parse_address(address)
        self._listener = None
        deadline = time.monotonic() + timeout_s
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
            mine = {"name": name, "rank": self.rank, "world_size": self.world_size, "host": socket.gethostname(),
                    "pid": os.getpid(), "authenticated": secret is not None, **(checkin or {})}
            self._mine = mine  # the server judges rejoin requests against its own check-in
            peers = [r for r in range(self.world_size) if r != self.rank]
            if self.rank == 0:
                names = {r: n for r, n in self.names_by_rank.items() if r}
                verdict = server_check_in(self.store, mine, names, timeout_s, secret, deadline)
            elif rejoin_wait_s is not None:
                verdict = request_rejoin(self.store, mine, rejoin_wait_s, secret)
                self.incarnations.update({int(r): int(i) for r, i in verdict["incarnations"].items()})
                peers = sorted(int(r) for r in verdict["present"] if int(r) != self.rank)
                deadline = time.monotonic() + timeout_s  # the wait for admission is not start-up
            else:
                verdict = client_check_in(self.store, mine, timeout_s, secret, deadline)
            self.nonce = verdict["nonce"]
            if secret is not None:
                self.run_key = RunKey(secret, verdict["nonce"], str(mine.get("config_hash")))
            self.liveness = Liveness(host, port, self.rank, self.names_by_rank)
            self.device = dist.ProcessGroupGloo.create_device(hostname=local_host or _local_address_towards(host, port))
            for peer in peers:  # in the same order everywhere: each pair's two ends meet
                self.links[peer] = self._form_link(peer, deadline)
        except Exception as e:  # noqa: BLE001 - start-up errors come from C++ as several types
            self.close()
            if isinstance(e, TransportError):
                raise
            raise TransportError(f"{name} (rank {self.rank}) could not join the gloo group at {address} "
                                 f"within {timeout_s:g} s: {e}") from e

    def _form_link(self, peer: int, deadline: float) -> Link:
        """The link to rank ``peer`` in both parties' current incarnations, formed under ``deadline``."""
        try:
            return form_link(self.store, self.rank, peer, self.incarnations, self.device, self.timeout, deadline)
        except (RuntimeError, TimeoutError) as e:
            alive = self.liveness.report() if self.liveness else ""
            raise TransportError(f"{self.name} (rank {self.rank}): the link to {self.names_by_rank[peer]} (rank {peer}) "
                                 f"{'failed: ' if isinstance(e, RuntimeError) else ''}{e}" + (f"; {alive}" if alive else "")) from e

    def relink(self, peer: str, incarnation: int) -> None:
        """Form the link to ``peer`` anew: it restarted and joins again as ``incarnation`` (its
        frames count from 0 again, under new authentication codes). Both ends call this; it waits
        for the other end under ``split.timeout_s``."""
        rank = self._peer_rank(peer)
        old = self.links.pop(rank, None)
        if old is not None:
            old.close()
        self.incarnations[rank] = incarnation
        self.links[rank] = self._form_link(rank, time.monotonic() + self.timeout_s)

    # ---- the server: restarted hospitals asking to rejoin ----------------------------------
    def rejoin_requests(self) -> list[tuple[int, dict, list[str]]]:
        """Restarted hospitals that asked to join again and have no answer yet: ``(request, record,
        problems)``, each judged as at check-in (rank, number of parties, config keys, secret)."""
        names = {r: n for r, n in self.names_by_rank.items() if r}
        for n, record, problems in rejoin_requests(self.store, self._rejoins_seen, self._mine, names, self._secret):
            self._rejoins_pending[n], self._rejoins_seen = (record, problems), n
        return [(n, record, problems) for n, (record, problems) in sorted(self._rejoins_pending.items())]

    def admit(self, request: int, rank: int, present: list[int]) -> int:
        """Admit rejoin request ``request`` as ``rank``'s next incarnation, which forms links with
        the ranks ``present`` (the server's first: formed here, before this returns; every other
        one must :meth:`relink` it). Returns the incarnation."""
        incarnation = self.incarnations[rank] + 1
        answer = {"ok": True, "reason": "", "nonce": self.nonce, "present": sorted(present),
                  "incarnations": {str(r): i for r, i in (self.incarnations | {rank: incarnation}).items()}}
        answer_rejoin(self.store, request, answer, self._secret)
        self._rejoins_pending.pop(request, None)
        self.relink(self.names_by_rank[rank], incarnation)
        return incarnation

    def refuse(self, request: int, reason: str) -> None:
        """Refuse rejoin request ``request``; the restarted party stops, naming ``reason``."""
        answer_rejoin(self.store, request, {"ok": False, "reason": reason}, self._secret)
        self._rejoins_pending.pop(request, None)

    def _peer_rank(self, peer: str) -> int:
        if peer not in self.ranks:
            raise TransportError(f"{self.name}: unknown party {peer!r}; parties are {sorted(self.ranks)}")
        return self.ranks[peer]

    def _failed(self, e: Exception, what: str, peer: str) -> TransportError:
        alive = self.liveness.report() if self.liveness else ""
        return TransportError(f"{self.name}: {what} {peer} (rank {self.ranks[peer]}) failed, or got no answer "
                              f"within {self.timeout_s:g} s (split.timeout_s): {e}" + (f"; {alive}" if alive else ""))

    def _wait(self, work, what: str, peer: str) -> None:
        try:
            work.wait(self.timeout)
        except Exception as e:  # noqa: BLE001 - gloo raises RuntimeError/DistBackendError
            raise self._failed(e, what, peer) from e

    def _send(self, receiver: str, payload: bytes) -> None:
        self._start_send(receiver, payload)()

    def _start_send(self, receiver: str, payload: bytes):
        """Post every chunk of ``payload``'s frame and return the function that waits for them
        (pipelined micro-batches compute on while the link carries the frame)."""
        dst = self._peer_rank(receiver)
        link = self.links[dst]
        mac = None
        if self.run_key is not None:
            mac = lambda *parts: self.run_key.mac(self._id(self.rank), self._id(dst), *parts)  # noqa: E731
        frame = framing.encode_frame(bytes(payload), link.sent, mac)
        chunks = framing.chunks(frame)
        # Every chunk posted before waiting: the payload does not wait for a round trip per chunk.
        # Posting fails at once on a connection the peer has closed: name the peer then too.
        try:
            works = [link.pg.send([chunk], link.other, TAG) for chunk in chunks]
        except Exception as e:  # noqa: BLE001
            raise self._failed(e, "sending a message to", receiver) from e
        link.sent += 1  # frames are numbered in posting order, which is the order they arrive in

        def wait(keep_alive=(frame, chunks)) -> None:  # the buffers must live until gloo has sent them
            for work in works:
                self._wait(work, "sending a message to", receiver)

        return wait

    def _recv(self, sender: str, max_bytes: int) -> bytes:
        src = self._peer_rank(sender)
        link = self.links[src]

        def receive(buffers):
            try:
                works = [link.pg.recv([b], link.other, TAG) for b in buffers]
            except Exception as e:  # noqa: BLE001 - fails at once on a connection the peer has closed
                raise self._failed(e, "waiting for a message from", sender) from e
            for work in works:
                self._wait(work, "waiting for a message from", sender)

        verify = None
        if self.run_key is not None:
            verify = lambda *parts_then_code: self.run_key.verify(self._id(src), self._id(self.rank), *parts_then_code)  # noqa: E731
        where = f"{self.name}: frame {link.received} from {sender} (rank {src})"
        payload = framing.receive_frame(receive, max_bytes, link.received, where, verify)
        link.received += 1
        return payload

    def _id(self, rank: int) -> str:
        return party_id(rank, self.incarnations[rank])

    def close(self) -> None:
        if self.liveness is not None:
            self.liveness.close()
            self.liveness = None
        links, self.links = self.links, {}
        for link in links.values():
            link.close()
        # The store's daemon polls the listening socket: stop it (drop the store) before the
        # socket is closed, or the daemon aborts the process.
        self.store = None
        if self._listener is not None:
            self._listener.detach()  # the daemon's fd now; the OS closes it at exit
            self._listener = None
