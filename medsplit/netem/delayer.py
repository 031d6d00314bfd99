"""A userspace stand-in for ``netem``: a TUN device in the router namespace that holds every
packet crossing the router for its link's one-way delay, and drops packets with the link's
loss probability.

Used only where the kernel has no ``netem`` qdisc (``CONFIG_NET_SCH_NETEM`` unset). The router
namespace sends every packet that arrives from a party into the TUN device (policy routing,
see :mod:`medsplit.netem.topology`); this process reads it, waits, and writes it back, after
which the kernel routes it on to its destination, where ``tbf`` shapes the rate. So TCP sees
real delay and real losses, as through netem: retransmissions, congestion windows and the
ACK clock all behave as on a real path, for every connection the parties open (the TCPStore
and gloo's pairs alike), without any party being configured for it.

What it emulates exactly:

* delay: a packet from address A to address B waits ``delay[A] + delay[B]`` (each party's
  access link contributes its one-way delay; a party not listed contributes 0). Packets of
  one (A, B) pair leave in the order they came (the delay per pair is constant). No jitter.
* loss: each packet is dropped with probability 1 - (1 - p)^n, n being the number of TCP
  segments it carries. The kernel hands over TCP's segmentation-offload packets unsplit (to
  keep the packet rate Python has to move low); on a lossy network the topology limits them
  to one segment each (``gso_max_segs 1``), so there n = 1 and every segment, data or ACK, is
  lost with probability p, as with netem. (Were n > 1, the expected number of loss events
  would still be that of per-segment loss, each event losing its whole packet.)
* cost: each packet crosses into this process and back (two copies and a Python loop
  iteration); ``benchmarks/wan.py`` measures what that costs against kernel forwarding.

Run as ``python -m medsplit.netem.delayer --tun wan0 --link 10.77.1.2=0.01,0.001 ...``
inside the router namespace; it prints ``ready`` once the device exists and runs until killed
(SIGTERM/SIGINT), printing its packet counts on the way out.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
VNET_HDR = 10  # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
GSO_NONE = 0


def open_tun(name: str) -> int:
    """A TUN device ``name`` (no packet-info header, with virtio-net headers so that the kernel
    may hand over segmentation-offload packets whole); returns its file descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    return fd


def segments(packet: bytes) -> int:
    """How many MSS-sized segments an (offload) packet stands for."""
    gso_type, hdr_len, gso_size = packet[1], *struct.unpack_from("<HH", packet, 2)
    if gso_type == GSO_NONE or gso_size == 0:
        return 1
    payload = len(packet) - VNET_HDR - hdr_len
    return max(1, -(-payload // gso_size))


def parse_link(text: str) -> tuple[bytes, float, float]:
    """``ADDR=DELAY_S,LOSS`` to (packed IPv4 address, one-way delay in seconds, loss probability)."""
    addr, _, values = text.partition("=")
    delay, _, loss = values.partition(",")
    parts = addr.split(".")
    if len(parts) != 4 or not values:
        raise ValueError(f"--link {text!r} must look like 10.77.1.2=0.010,0.001 (IPv4=one-way delay s,loss probability)")
    return bytes(int(p) for p in parts), float(delay), float(loss or 0)


class Delayer:
    """Holds packets read from the TUN device until their release time, then writes them back."""

    def __init__(self, fd: int, links: dict[bytes, tuple[float, float]], seed: int = 0):
        self.fd = fd
        self.links = links
        self.rng = random.Random(seed)
        self.queue: list[tuple[float, int, bytes]] = []
        self.seq = 0
        self.counts = {"packets": 0, "bytes": 0, "dropped_packets": 0, "dropped_segments": 0, "max_queue": 0}

    def _admit(self, packet: bytes, now: float) -> None:
        self.counts["packets"] += 1
        self.counts["bytes"] += len(packet) - VNET_HDR
        delay, keep = 0.0, 1.0
        if len(packet) >= VNET_HDR + 20 and packet[VNET_HDR] >> 4 == 4:
            for addr in (packet[VNET_HDR + 12:VNET_HDR + 16], packet[VNET_HDR + 16:VNET_HDR + 20]):
                d, p = self.links.get(addr, (0.0, 0.0))
                delay += d
                keep *= 1.0 - p
        if keep < 1.0:
            n = segments(packet)
            if self.rng.random() >= keep ** n:
                self.counts["dropped_packets"] += 1
                self.counts["dropped_segments"] += n
                return
        if delay <= 0 and not self.queue:
            os.write(self.fd, packet)
            return
        heapq.heappush(self.queue, (now + delay, self.seq, packet))
        self.seq += 1
        self.counts["max_queue"] = max(self.counts["max_queue"], len(self.queue))

    def run(self, stop) -> None:
        while not stop():
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                os.write(self.fd, heapq.heappop(self.queue)[2])
            # select() takes the timeout in microseconds (poll and epoll round it up to 1 ms)
            timeout = 0.2 if not self.queue else max(0.0, self.queue[0][0] - now)
            if select.select([self.fd], [], [], timeout)[0]:
                now = time.monotonic()
                while True:
                    try:
                        packet = os.read(self.fd, 65536 + VNET_HDR + 100)
                    except BlockingIOError:
                        break
                    self._admit(packet, now)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tun", default="wan0", help="TUN device to create")
    ap.add_argument("--link", action="append", default=[], help="ADDR=ONE_WAY_DELAY_S,LOSS (repeat per party)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the loss draws")
    args = ap.parse_args(argv)
    links = {}
    for text in args.link:
        addr, delay, loss = parse_link(text)
        links[addr] = (delay, loss)
    fd = open_tun(args.tun)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))
    print("ready", flush=True)
    delayer = Delayer(fd, links, args.seed)
    try:
        delayer.run(lambda: bool(stopping))
    finally:
        print(" ".join(f"{k}={v}" for k, v in delayer.counts.items()), flush=True)
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
