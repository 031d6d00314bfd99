"""What a multi-process run adds to its run record: every party's byte counts, link timings and
host/pid (gathered by the evaluating hospital), the report's forwards mirrored by the server, and
the console's transport summary."""

from __future__ import annotations

import torch

from medsplit.config import Config
from medsplit.train.party_control import Control
from medsplit.train.party_plan import PROTOCOL_VERSION, SERVER, config_hash


def transport_record(cfg: Config, reports: list[dict]) -> dict:
    """The run record's ``transport`` block from every party's accounting (the reporter's first)."""
    links = [row for r in reports for row in r["links"]]
    by_rank = sorted(reports, key=lambda r: r["party"]["rank"])
    return {
        "name": cfg.split.transport, "protocol_version": PROTOCOL_VERSION, "config_hash": config_hash(cfg),
        "parties": [dict(r["party"], data_loaded=r["data_loaded"], data_modules=r["data_modules"]) for r in by_rank],
        "link_seconds": {f"{row['party']}->{row['peer']}" if row["direction"] == "send" else f"{row['peer']}->{row['party']}":
                         row["seconds"] for row in links},
        "links": links,
        "payload_bytes_sent": sum(row["payload_bytes"] for row in links if row["direction"] == "send"),
        "framing_bytes_sent": sum(row["framing_bytes"] for row in links if row["direction"] == "send"),
        "control_bytes_sent": sum(r["control_bytes_sent"] for r in reports),
    }


class MirroredModel:
    """The evaluation model as the report uses it: each forward is announced to the server first,
    which runs its part of the same forward (segmentation examples)."""

    def __init__(self, model, control: Control):
        self.model, self.control = model, control

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.control.send(SERVER, forward=int(len(x)))
        return self.model(x)

    def done(self) -> None:
        self.control.send(SERVER, forward=0)


def transport_summary(info: dict) -> str:
    """Console lines: the transport, one line per party, the measured wall time per link."""
    lines = [f"transport: {info['name']} (protocol version {info['protocol_version']}, config {info['config_hash']})"]
    for p in info["parties"]:
        lines.append(f"  rank {p['rank']}: {p['name']:<8} host {p['host']} pid {p['pid']} threads {p.get('threads', '?')}"
                     + ("" if p["data_loaded"] else "  (no data opened)"))
    seen = {}
    for row in info["links"]:
        if row["direction"] == "send":  # one direction per link: the sender's measurement
            seen[f"{row['party']}->{row['peer']}"] = row
    for link, row in sorted(seen.items()):
        lines.append(f"  link {link:<20} {row['messages']:>6} messages {row['payload_bytes'] / 1e6:>10.2f} MB "
                     f"{row['seconds']:>8.2f} s in send")
    lines.append(f"  payload {info['payload_bytes_sent'] / 1e6:.2f} MB + framing {info['framing_bytes_sent']} B; "
                 f"control messages {info['control_bytes_sent']} B")
    return "\n".join(lines)
