"""What each child process of ``benchmarks/wan.py`` runs (``wan.py --party``, ``--pingpong``,
``--inprocess``): one party of a timed epoch in its network namespace, every party of the same
epoch in one process (the in-process baseline), or one side of a gloo ping-pong. Torch and
medsplit are imported inside these functions: the benchmark's own process only starts children.
"""

from __future__ import annotations

import time

NAMES = ("server", "client0", "client1")  # rank 0 the server, rank k + 1 hospital k


def channel_codecs(codec: str):
    """The channel's codecs for a benchmark codec spec: ``ACT`` compresses the activations only
    (gradients go back in fp32), ``ACT/GRAD`` both (``split.compress_activations`` /
    ``split.compress_gradients``), e.g. ``int8/int8``."""
    from medsplit.split.codecs import codecs_for

    activations, _, gradients = codec.partition("/")
    return codecs_for(activations, gradients or "none")


def timed_epoch(channel, ranks: set[int], protocol: str, codec: str, size: int, steps: int, batch: int,
                model: str, cut_at: int, microbatches: int = 1, after_warm_up=None) -> float:
    """The parties of ``ranks`` (0 the server, k + 1 hospital k) on ``channel``: a warm-up epoch (1
    batch per hospital), then the seconds of one epoch of ``steps`` batches per hospital. Each
    hospital's images come from its own generator, so one process holding every party draws what
    the party processes draw. ``microbatches``: ``split.microbatches`` (pipelined across the cut).
    ``after_warm_up()`` runs between the two (the transport's counts)."""
    import torch
    import torch.nn.functional as F

    from medsplit.models import build_model
    from medsplit.train.protocols import PROTOCOLS

    torch.manual_seed(0)
    table = build_model(model, num_classes=2)
    proto = PROTOCOLS[protocol](table, cut_at, len(NAMES) - 1,
                                lambda params: torch.optim.Adam(params, lr=1e-3, fused=True), F.cross_entropy, channel,
                                microbatches=microbatches)
    data = {}
    for rank in ranks - {0}:
        g = torch.Generator().manual_seed(1000 + rank)
        data[rank] = (torch.randint(0, 256, (steps * batch, 3, size, size), dtype=torch.uint8, generator=g),
                      torch.randint(0, 2, (steps * batch,), generator=g))

    def step(split_model, k, idx):
        if k + 1 not in ranks:  # the server alone: it only needs shapes for what it receives
            x = torch.empty(len(idx), 3, size, size, device="meta")
            y = torch.empty(len(idx), dtype=torch.int64, device="meta")
        else:
            images, labels = data[k + 1]
            x, y = images[idx].float() / 127.5 - 1.0, labels[idx]
        split_model.train_step(x, y)

    def epoch(n: int) -> float:
        batches = [[torch.arange(s * batch, (s + 1) * batch) for s in range(n)] if ranks & {0, k + 1} else []
                   for k in range(len(NAMES) - 1)]
        t = time.perf_counter()
        proto.run_epoch(batches, step)
        return time.perf_counter() - t

    epoch(1)
    if after_warm_up is not None:
        after_warm_up()
    return epoch(steps)


def run_party(rank: int, address: str, protocol: str, codec: str, size: int, steps: int, batch: int,
              model: str, cut_at: int, microbatches: int = 1) -> dict:
    """Party ``rank`` of one measurement (see :func:`timed_epoch`); returns its epoch time and what
    crossed each link in the timed epoch."""
    from medsplit.split import Channel
    from medsplit.transport import framing
    from medsplit.transport.gloo import GlooTransport

    name = NAMES[rank]
    ranks = {n: r for r, n in enumerate(NAMES)} | {"aggregator": 0}
    transport = GlooTransport(name, ranks, address, timeout_s=300)
    hosts = {"server", "aggregator"} if rank == 0 else {name}
    channel = Channel(serialise=True, codecs=channel_codecs(codec), transport=transport, local=frozenset(hosts))
    try:
        before = {}
        seconds = timed_epoch(channel, {rank}, protocol, codec, size, steps, batch, model, cut_at, microbatches,
                              after_warm_up=lambda: before.update({k: s.as_dict() for k, s in transport.stats.items()}))
        links = []
        for (direction, peer), s in sorted(transport.stats.items()):
            was = before.get((direction, peer), {"messages": 0, "payload_bytes": 0, "framing_bytes": 0, "seconds": 0.0})
            links.append({"direction": direction, "peer": peer, **{k: v - was[k] for k, v in s.as_dict().items()}})
        return {"party": name, "epoch_s": seconds, "links": links, "chunk_bytes": framing.CHUNK_BYTES}
    finally:
        transport.close()


def run_inprocess(protocol: str, codec: str, size: int, steps: int, batch: int, model: str, cut_at: int) -> dict:
    """The same epoch with every party in this one process (one thread, as each party process
    has): the in-process run a shaped epoch is compared with. Messages are still encoded and
    decoded (``serialise``), with the codec, as across processes."""
    from medsplit.split import Channel

    channel = Channel(serialise=True, codecs=channel_codecs(codec))
    return {"epoch_s": timed_epoch(channel, set(range(len(NAMES))), protocol, codec, size, steps, batch, model, cut_at)}


def run_pingpong(rank: int, address: str, exchanges: int) -> dict:
    """Party ``rank`` (0 or 1) of a ping-pong of 8-byte messages over the gloo transport:
    what one framed message costs on a link, beside the raw TCP round trip of the probe."""
    import statistics

    from medsplit.transport.gloo import GlooTransport

    me, peer = NAMES[rank], NAMES[1 - rank]
    transport = GlooTransport(me, {"server": 0, "client0": 1}, address, timeout_s=120)
    try:
        times = []
        for i in range(exchanges + 2):  # two warm-ups: gloo connects its pair lazily
            t = time.perf_counter()
            if rank == 1:
                transport.send(peer, i.to_bytes(8, "big"))
                transport.recv(peer, 8)
            else:
                transport.send(peer, transport.recv(peer, 8))
            times.append(time.perf_counter() - t)
        return {"party": me, "round_trip_ms_median": 1e3 * statistics.median(times[2:]), "round_trip_ms_min": 1e3 * min(times[2:])}
    finally:
        transport.close()
