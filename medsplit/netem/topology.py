"""Emulated hospital links: every party in its own network namespace, all joined through a
router namespace by veth pairs whose rate the kernel shapes (``tbf``), with delay and loss
from ``netem`` where the kernel has it and from :mod:`medsplit.netem.delayer` where it has not.

::

    party ns  medsplit-<pid>-p0 (server)   eth0 10.77.0.2 --- p0 10.77.0.1 \\
    party ns  medsplit-<pid>-p1 (client0)  eth0 10.77.1.2 --- p1 10.77.1.1 -- router ns medsplit-<pid>-r
    party ns  medsplit-<pid>-p2 (client1)  eth0 10.77.2.2 --- p2 10.77.2.1 /

Each party's veth pair is its access link. A shaped link is shaped in both directions: ``tbf``
on the party's ``eth0`` (upload) and on the router's ``pN`` (download); its one-way delay and
loss apply to every packet that enters or leaves the party. So two parties with links (d1, p1)
and (d2, p2) see a round trip of 2 (d1 + d2); a hospital on a link of RTT r talks to an
unshaped server with a round trip of r, to another such hospital with 2 r.

Only namespaces named ``medsplit-<pid>-*`` are created or removed: :meth:`Topology.close`
(also run at exit) kills the processes started in them and deletes them, and
:func:`remove_stale` deletes those whose creating process is gone (a run that was killed).
Needs root (CAP_NET_ADMIN) and the ``ip`` and ``tc`` commands; :func:`unavailable` says why
not when they are missing.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field

PREFIX = "medsplit-"
ROUTER_TABLE = 100  # policy-routing table that sends forwarded packets through the delayer
TUN = "wan0"


@dataclass(frozen=True)
class Link:
    """One party's access link: rate in bit/s (``None``: not shaped), one-way delay in seconds,
    loss probability per packet (per segment through the delayer, see its module)."""

    rate_bps: float | None = None
    delay_s: float = 0.0
    loss: float = 0.0

    @property
    def shaped(self) -> bool:
        return self.rate_bps is not None or self.delay_s > 0 or self.loss > 0


def run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; a failure names the command and what it printed."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
    return done


def namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(name: str) -> None:
    """Kill what still runs in the project's namespace ``name`` (it was started there by this
    module), then delete it; its veth ends go with it."""
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to delete namespace {name!r}: only {PREFIX}* namespaces are the project's")
    pids = [int(p) for p in run(["ip", "netns", "pids", name], check=False).stdout.split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run(["ip", "netns", "del", name], check=False)


def remove_stale() -> list[str]:
    """Delete ``medsplit-<pid>-*`` namespaces whose creating process no longer exists."""
    removed = []
    for name in namespaces():
        m = re.fullmatch(rf"{PREFIX}(\d+)-\w+", name)
        if m and not _pid_alive(int(m.group(1))):
            delete_namespace(name)
            removed.append(name)
    return removed


def unavailable() -> str | None:
    """Why emulated links cannot be built here (``None``: they can): not root, no ``ip``/``tc``,
    or the kernel refuses a namespace, a veth pair or ``tbf``."""
    if os.geteuid() != 0:
        return "emulated links need root (network namespaces, veth pairs and tc qdiscs need CAP_NET_ADMIN)"
    for tool in ("ip", "tc"):
        if run(["which", tool], check=False).returncode != 0:
            return f"emulated links need the `{tool}` command (iproute2)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        run(["ip", "netns", "add", probe])
        run(["ip", "-n", probe, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb"])
        run(["tc", "-n", probe, "qdisc", "add", "dev", "va", "root", "tbf", "rate", "10mbit", "burst", "16kb", "limit", "64kb"])
    except RuntimeError as e:
        return f"this machine does not allow emulated links: {e}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def kernel_has_netem() -> bool:
    """Whether the kernel accepts a ``netem`` qdisc (tried on a veth in a scratch namespace)."""
    probe = f"{PREFIX}{os.getpid()}-netem"
    try:
        run(["ip", "netns", "add", probe])
        run(["ip", "-n", probe, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb"])
        return run(["tc", "-n", probe, "qdisc", "add", "dev", "va", "root", "netem", "delay", "1ms"], check=False).returncode == 0
    finally:
        run(["ip", "netns", "del", probe], check=False)


def congestion_control(topology: "Topology", rank: int) -> str:
    """The TCP congestion control party ``rank``'s connections use."""
    return run([*topology.exec_prefix(rank), "cat", "/proc/sys/net/ipv4/tcp_congestion_control"]).stdout.strip()


def gso_bytes(rate_bps: float | None) -> int:
    """Largest offload packet on a link: about 1 ms at its rate (what TCP's autosizing aims at),
    from 4 KiB to 64 KiB, so that ``tbf`` never has to split one and its burst stays short."""
    if rate_bps is None:
        return 65536
    return int(min(65536, max(4096, 2 ** round(math.log2(rate_bps / 8 / 1000)))))


def tbf_args(rate_bps: float, rtt_s: float) -> list[str]:
    """``tbf`` for ``rate_bps``: a bucket of two offload packets (so none is split), a queue of
    at least one bandwidth-delay product (a real access router's buffer; less drops packets
    TCP would not lose on the path being emulated)."""
    burst = 2 * gso_bytes(rate_bps)
    limit = max(4 * burst, int(rate_bps / 8 * max(rtt_s, 0.02)))
    return ["tbf", "rate", f"{int(rate_bps)}bit", "burst", str(burst), "limit", str(limit)]


def netem_args(link: Link) -> list[str]:
    """``netem`` delay and loss for ``link`` (the rate stays with ``tbf`` below it)."""
    args = ["netem", "delay", f"{link.delay_s * 1e6:.0f}us"]
    return args + (["loss", f"{link.loss * 100:g}%"] if link.loss else [])


@dataclass
class Topology:
    """The namespaces of one emulated network; build with :meth:`up`, always :meth:`close`.

    Args:
        links: one :class:`Link` per party, in rank order (the server first).
        method: ``"netem"``, ``"delayer"`` or ``"auto"`` (netem when the kernel has it) for the
            delay and loss; with no delay and no loss anywhere nothing but ``tbf`` is used and
            :attr:`method` is ``"tbf"`` (``"none"`` when no link is shaped either), unless
            ``method="delayer"`` forces the delayer in (to measure what it costs).
        congestion: TCP congestion control in every party namespace (``None``: what a new
            namespace inherits from the host, :func:`congestion_control` says which).
        sysctls: more settings for every party namespace (``{"net.ipv4.tcp_slow_start_after_idle": "0"}``).
    """

    links: list[Link]
    method: str = "auto"
    congestion: str | None = None
    sysctls: dict = field(default_factory=dict)
    tag: str = field(default_factory=lambda: str(os.getpid()))
    created: list[str] = field(default_factory=list)
    delayer: subprocess.Popen | None = None
    delayer_counts: dict = field(default_factory=dict)

    def name(self, what: str) -> str:
        return f"{PREFIX}{self.tag}-{what}"

    @property
    def router(self) -> str:
        return self.name("r")

    def party(self, rank: int) -> str:
        return self.name(f"p{rank}")

    @staticmethod
    def address(rank: int) -> str:
        return f"10.77.{rank}.2"

    def exec_prefix(self, rank: int) -> list[str]:
        """Command prefix that runs a program in party ``rank``'s namespace."""
        return ["ip", "netns", "exec", self.party(rank)]

    def up(self) -> "Topology":
        if self.method not in ("auto", "netem", "delayer"):
            raise ValueError(f"method={self.method!r}; choose auto, netem or delayer")
        needs_delay = any(l.delay_s > 0 or l.loss > 0 for l in self.links)
        if self.method == "auto":
            shaped = any(l.rate_bps for l in self.links)
            self.method = ("netem" if kernel_has_netem() else "delayer") if needs_delay else ("tbf" if shaped else "none")
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.created.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _sysctl(self, ns: str, key: str, value: str) -> None:
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])

    def _build(self) -> None:
        r = self.router
        self._ns(r)
        self._sysctl(r, "net.ipv4.ip_forward", "1")
        for rank, link in enumerate(self.links):
            ns, port = self.party(rank), f"p{rank}"
            self._ns(ns)
            for key, value in (({"net.ipv4.tcp_congestion_control": self.congestion} if self.congestion else {}) | self.sysctls).items():
                self._sysctl(ns, key, str(value))
            run(["ip", "link", "add", "name", port, "netns", r, "type", "veth", "peer", "name", "eth0", "netns", ns])
            for where, dev, addr in ((r, port, f"10.77.{rank}.1/24"), (ns, "eth0", f"10.77.{rank}.2/24")):
                run(["ip", "-n", where, "addr", "add", addr, "dev", dev])
                run(["ip", "-n", where, "link", "set", dev, *self.offload_args(), "up"])
            run(["ip", "-n", ns, "route", "add", "default", "via", f"10.77.{rank}.1"])
            for where, dev in ((ns, "eth0"), (r, port)):
                self._shape(where, dev, link)
        if self.method == "delayer":
            self._start_delayer()

    def offload_args(self) -> list[str]:
        """Offload packet limits for every veth end (senders and forwarded traffic alike): the
        smallest any shaped link wants, and on a lossy network one segment per packet, so that
        the delayer drops single segments exactly as netem would."""
        args = ["gso_max_size", str(min(gso_bytes(l.rate_bps) for l in self.links))]
        return args + (["gso_max_segs", "1"] if any(l.loss > 0 for l in self.links) else [])

    def _shape(self, ns: str, dev: str, link: Link) -> None:
        rtt = 4 * link.delay_s  # what a path through two such links takes: a generous queue
        if self.method == "netem" and (link.delay_s > 0 or link.loss > 0):
            # netem holds the delay on both ends (each direction pays it once), tbf under it the rate
            run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem_args(link)])
            if link.rate_bps:
                run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", *tbf_args(link.rate_bps, rtt)])
        elif link.rate_bps:
            run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", *tbf_args(link.rate_bps, rtt)])

    def _start_delayer(self) -> None:
        r = self.router
        cmd = [*(["ip", "netns", "exec", r]), sys.executable, "-m", "medsplit.netem.delayer", "--tun", TUN]
        for rank, link in enumerate(self.links):
            if link.delay_s > 0 or link.loss > 0:
                cmd += ["--link", f"{self.address(rank)}={link.delay_s},{link.loss}"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [_package_root(), os.environ.get("PYTHONPATH", "")] if p))
        self.delayer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.delayer.stdout.readline().strip()
        if line != "ready":
            self.delayer.kill()
            raise RuntimeError(f"the delayer in {r} did not start: {line} {self.delayer.stderr.read()[-2000:]}")
        # rp_filter would drop packets coming back from the TUN device with a source routed elsewhere
        for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", f"net.ipv4.conf.{TUN}.rp_filter"):
            self._sysctl(r, key, "0")
        run(["ip", "-n", r, "link", "set", TUN, "up"])
        run(["ip", "-n", r, "route", "add", "default", "dev", TUN, "table", str(ROUTER_TABLE)])
        for rank in range(len(self.links)):
            run(["ip", "-n", r, "rule", "add", "iif", f"p{rank}", "lookup", str(ROUTER_TABLE)])

    def close(self) -> None:
        """Stop the delayer, kill what runs in the namespaces and delete them; safe to call twice."""
        if self.delayer is not None:
            if self.delayer.poll() is None:
                self.delayer.send_signal(signal.SIGTERM)
                try:
                    out, _ = self.delayer.communicate(timeout=5)
                    self.delayer_counts = _counts(out)
                except subprocess.TimeoutExpired:
                    self.delayer.kill()
                    self.delayer.wait()
            self.delayer = None
        for name in reversed(self.created):
            delete_namespace(name)
        self.created.clear()

    def __enter__(self) -> "Topology":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.close()


def _counts(text: str) -> dict:
    last = (text or "").strip().splitlines()[-1:] or [""]
    return {k: int(v) for k, v in (kv.split("=") for kv in last[0].split() if "=" in kv)}


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
