"""The run record of a multi-process run, written by the evaluating hospital: every party's byte
counts, link timings and host/pid gathered into ``metrics.json`` and the report (whose extra
forwards the server mirrors), and the console's transport summary."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import torch

from medsplit.atomic import write_atomic
from medsplit.split import Channel
from medsplit.train.checkpoint import save_weights
from medsplit.train.party_control import Control
from medsplit.train.party_plan import PROTOCOL_VERSION, SERVER, config_hash

if TYPE_CHECKING:
    from medsplit.train.party_run import PartyRun


def write_party_report(run: PartyRun, final, test, reports: list[dict]) -> dict:
    """Save the evaluating hospital's selected weights, write ``metrics.json`` and the report.

    Args:
        run: the evaluating hospital's run (its config, channel, history, best epoch, task, data).
        final: the protocol's evaluation model with the selected weights loaded.
        test: ``(test metrics, test loss)`` on this hospital's test split.
        reports: every party's accounting (bytes, links, control bytes, host/pid), this one's first.

    Returns:
        The run record written to ``metrics.json``.
    """
    from medsplit.train.loop import _data_summary, _json_default
    from medsplit.train.device import device_label
    from medsplit.train.outputs import write_outputs

    cfg = run.cfg
    test_metrics, test_loss = test
    counted = Channel()
    counted.load_byte_rows([row for r in reports for row in r["bytes"]])
    links = [row for r in reports for row in r["links"]]
    by_rank = sorted(reports, key=lambda r: r["party"]["rank"])
    selected_state = {}
    for part, owner in final.chain:
        if run.channel.hosts(owner.name):
            selected_state.update(part.state_dict())
    save_weights(run.run_dir, selected_state)  # the evaluating hospital's parts; the server keeps its own
    clients = run.all_parts if run.all_parts is not None else [run.indices]
    result = {
        "task": cfg.task, "run": cfg.run_name(), "protocol": cfg.split.protocol, "cut": cfg.split.cut,
        "clients": cfg.split.clients, "device": device_label(run.device), "wall_time_s": time.time() - run.t0,
        "selected_epoch": run.best["epoch"], "test": test_metrics, "test_loss": test_loss, "history": run.history,
        "bytes": counted.byte_rows("train"), "bytes_eval": counted.byte_rows("eval"),
        "data": _data_summary(run.task, clients, clients), "normalisation": run.task.normalisation(),
        "config": cfg.to_dict(),
        "transport": {
            "name": cfg.split.transport, "protocol_version": PROTOCOL_VERSION, "config_hash": config_hash(cfg),
            "parties": [dict(r["party"], data_loaded=r["data_loaded"], data_modules=r["data_modules"]) for r in by_rank],
            "link_seconds": {f"{row['party']}->{row['peer']}" if row["direction"] == "send" else f"{row['peer']}->{row['party']}":
                             row["seconds"] for row in links},
            "links": links,
            "payload_bytes_sent": sum(row["payload_bytes"] for row in links if row["direction"] == "send"),
            "framing_bytes_sent": sum(row["framing_bytes"] for row in links if row["direction"] == "send"),
            "control_bytes_sent": sum(r["control_bytes_sent"] for r in reports),
        },
    }
    write_atomic(run.run_dir / "metrics.json", json.dumps(result, indent=2, default=_json_default))
    model = _MirroredModel(final, run.control)
    try:
        write_outputs(cfg, run.run_dir, result, run.task, model, quiet=run.quiet)
    finally:
        model.done()
    if not run.quiet:
        print(transport_summary(result["transport"]), flush=True)
    return result


class _MirroredModel:
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
        lines.append(f"  rank {p['rank']}: {p['name']:<8} host {p['host']} pid {p['pid']}"
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
