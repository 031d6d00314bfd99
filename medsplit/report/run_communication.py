"""The traffic sections of a run report: bytes per link (with what each link carries) and the transport."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from medsplit.report import figures
from medsplit.report.html import Report

__all__ = ["communication_section", "transport_section"]

_MB = 1e6  # reports use decimal megabytes, as network links are rated


def _role(party: str) -> str:
    """``"client3"`` -> ``"client"``: the kind of party at one end of a link."""
    return re.sub(r"\d+$", "", party.strip()) or party



#: Party roles as a reader knows them.
_PARTY = {"client": "hospital", "server": "server"}

#: Kinds sent on every training step; the others (weights, optimiser state) are hand-overs.
_PER_STEP_KINDS = ("activation", "gradient", "label")


def _link_name(link: str) -> str:
    """``"client_encoder->server_encoder"`` -> ``"client_encoder → server_encoder"``."""
    return link.replace("->", " → ")


def _steps_per_epoch(record: dict) -> int | None:
    """Training steps (batches, over all clients) per epoch, as the loop draws them: a last
    batch of one image is dropped (BatchNorm cannot train on it)."""
    batch = ((record.get("config") or {}).get("train") or {}).get("batch_size")
    clients = (record.get("data") or {}).get("clients") or []
    if not batch or not clients or not all(isinstance(c.get("n"), int) for c in clients):
        return None
    steps = 0
    for c in clients:
        n = c["n"]
        k = -(-n // batch)
        if k > 1 and n % batch == 1:
            k -= 1
        steps += k
    return steps or None


def _link_explanations(links: set[str]) -> list[str]:
    notes = []
    if any("encoder" in l or "decoder" in l for l in links):
        notes.append("The U-shaped split has four parts: the hospital keeps the first layers (client_encoder) and the "
                     "last ones (client_decoder), so both the X-ray and its mask stay at the hospital; the server runs "
                     "the middle (server_encoder, server_decoder). A link is named after the parts at its two ends: "
                     "client_encoder → server_encoder carries the hospital's encoder features to the server, "
                     "server_decoder → client_decoder returns the server's decoder output; the reverse links carry "
                     "gradients back.")
    elif any("->" in l for l in links):
        notes.append("client → server carries the activations of the hospital's layers up to the cut; "
                     "server → client returns their gradients.")
    if "labels" in links:
        notes.append("labels: the diagnosis labels of each batch, sent to the server, which computes the loss.")
    if "weights" in links or "optimizer state" in links:
        notes.append("weights and optimizer state: a hospital's model part (and its Adam moments) handed to the next "
                     "hospital (relay) or averaged through the server (SplitFed, FedAvg), once per epoch and client.")
    if "server weights" in links or "server optimizer state" in links:
        notes.append("server weights and server optimizer state (SplitFed V1): the server's per-hospital copies "
                     "averaged at the end of each round. In the paper the copies live on the main server, so these "
                     "bytes cross a network only if the copies run on separate machines; they are counted on their "
                     "own links so that they can be left out of a comparison.")
    return notes


def communication_section(report: Report, rows: list[dict], record: dict | None = None) -> None:
    """Bytes per link and kind of tensor, per epoch and per training step, with link times.

    Args:
        report: the report to add the section to.
        rows: the record's ``bytes`` rows.
        record: the run record, for the steps per epoch (batch size, client sizes).
    """
    record = record or {}
    report.section("Communication")
    links = {str(r.get("link", "?")) for r in rows}
    microbatches = ((record.get("config") or {}).get("split") or {}).get("microbatches", 1)
    pipelined = ([f"Each batch crossed as {microbatches} micro-batches, pipelined (split.microbatches): one message "
                  "per micro-batch and link; the gradients of the micro-batches were summed, weighted by their rows, "
                  "and each party stepped once per batch, so a step is the whole batch's except that BatchNorm "
                  "normalised each micro-batch with its own statistics."] if microbatches > 1 else [])
    report.text(
        "Bytes counted by the channel for everything that crossed between parties during training (encoded size, "
        "as a real transport would send it). 1 MB = 10^6 bytes. " + " ".join(_link_explanations(links) + pipelined)
    )
    per_epoch: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    epochs: set[int] = set()
    for r in rows:
        key = (str(r.get("link", "?")), str(r.get("kind", "")))
        epoch = int(r.get("epoch", 0))
        per_epoch[key][epoch] += float(r.get("bytes", 0))
        epochs.add(epoch)
    n_epochs = max(len(epochs), 1)
    total = sum(sum(v.values()) for v in per_epoch.values())
    steps = _steps_per_epoch(record)

    cards = {"total": f"{total / _MB:,.1f} MB", "per epoch": f"{total / _MB / n_epochs:,.1f} MB"}
    notes = {"total": f"{n_epochs} epoch(s)", "per epoch": "mean over epochs"}
    if steps:
        step_bytes = sum(sum(v.values()) for (link, kind), v in per_epoch.items() if kind in _PER_STEP_KINDS) / n_epochs / steps
        cards["per training step"] = f"{step_bytes / _MB:,.2f} MB"
        notes["per training step"] = f"{steps} steps per epoch"
    report.cards(cards, notes=notes)

    # The figure's bars are directions between kinds of party (what one physical link carries
    # both ways), its segments the logical links.
    direction_of: dict[tuple[str, str], str] = {}
    for r in rows:
        link = str(r.get("link", "?"))
        if "sender" in r and "receiver" in r:
            sender, receiver = _role(str(r["sender"])), _role(str(r["receiver"]))
        else:  # older records: the link names its ends
            sender, _, receiver = (_role(p) for p in link.partition("->")) if "->" in link else ("?", "", "?")
        direction_of[(link, str(r.get("kind", "")))] = \
            f"{_PARTY.get(sender, sender)} \u2192 {_PARTY.get(receiver, receiver)}"
    table, step_traffic, handover = [], defaultdict(dict), defaultdict(dict)
    for (link, kind), by_epoch in sorted(per_epoch.items()):
        values = [by_epoch.get(e, 0.0) for e in sorted(epochs)]
        mean = sum(values) / n_epochs
        constant = max(values) - min(values) <= 1e-9 * max(1.0, max(values))
        name = _link_name(link)
        row: dict[str, Any] = {"link": name, "kind": kind,
                               "MB per epoch": f"{mean / _MB:,.2f}" if constant else
                               f"{mean / _MB:,.2f} (mean; {min(values) / _MB:,.2f}–{max(values) / _MB:,.2f})",
                               "MB, all epochs": sum(values) / _MB}
        segment = name if not kind or kind[:4] in link else f"{name} ({kind})"
        direction = direction_of.get((link, kind), "?")
        if steps and kind in _PER_STEP_KINDS:
            row["kB per step"] = mean / steps / 1e3
            step_traffic[direction][segment] = step_traffic[direction].get(segment, 0.0) + mean / steps
        else:
            row["kB per step"] = None
            handover[direction][segment] = handover[direction].get(segment, 0.0) + mean
        for speed, bps in figures.LINK_SPEEDS.items():
            row[f"s per epoch at {speed}"] = mean * 8 / bps
        table.append(row)
    report.table(table, caption="Traffic per link and kind of tensor. Seconds: bytes × 8 / link speed, "
                                "bandwidth only (no latency, no protocol overhead)." +
                                ("" if all(not str(r["MB per epoch"]).endswith(")") for r in table)
                                 else " Where epochs differ, the mean and the range are given."),
                 float_fmt="{:,.3f}")
    if step_traffic:
        report.figure(figures.step_traffic_figure(step_traffic),
                      caption=f"Bytes per training step in each direction, stacked by link and kind of tensor "
                              f"({steps} steps per epoch), and the time one step's bytes take on a 100 Mbit/s and a "
                              "1 Gbit/s link (bandwidth only).")
    if handover:
        report.figure(figures.step_traffic_figure(handover, unit="per epoch"),
                      caption="Hand-overs per epoch (all clients together), and their time at 100 Mbit/s and 1 Gbit/s.")



def transport_section(report: Report, info: dict) -> None:
    """Parties as processes: which transport, one line per party, measured wall time per link.

    Args:
        report: the report to add the section to.
        info: the record's ``transport`` entry.
    """
    report.section("Transport")
    report.text(
        f"Transport {info.get('name')}: every party ran in its own process (protocol version "
        f"{info.get('protocol_version')}, config hash {info.get('config_hash')}). Payload bytes are the Channel's "
        "counts; framing (32 bytes per message, 64 with split.secret_file) and control messages (batch sizes, losses, best-epoch flags: "
        "protocol metadata, no tensors) are listed separately."
    )
    report.table([{"rank": p.get("rank"), "party": p.get("name"), "host": p.get("host"), "pid": p.get("pid"),
                   "CPU threads": p.get("threads"), "opened data": "yes" if p.get("data_loaded") else "no"} for p in info.get("parties", [])],
                 caption="Parties")
    report.table([{"link": f"{r['party']}->{r['peer']}", "messages": r.get("messages"),
                   "payload MB": r.get("payload_bytes", 0) / _MB, "framing bytes": r.get("framing_bytes"),
                   "wall s in send": r.get("seconds")}
                  for r in info.get("links", []) if r.get("direction") == "send"],
                 caption="Measured per link (sender side; the wall time in send includes waiting until the receiver takes the message)",
                 float_fmt="{:,.3f}")
