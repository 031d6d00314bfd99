"""``split.dropout``: hospitals that leave a run (and come back) on a schedule, so that a sweep can
measure what losing a site costs without killing processes.

Written like the fault injection of the party processes: ``client1:epoch=2:after=3`` means
hospital 1 trains 3 batches of epoch 2 (epochs count from 1, as in the history) and is then gone;
``:rejoin=4`` brings it back at the start of epoch 4 with the current weights. Several hospitals:
separate the entries with commas. Torch-free: the config checks it when it loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from medsplit.config.schema import ConfigError

KEY = "split.dropout"


@dataclass(frozen=True)
class ScheduledDropout:
    """Hospital ``hospital`` leaves epoch ``epoch`` (from 0) after ``after`` of its own batches;
    it takes part again from epoch ``rejoin`` (from 0; ``None``: never)."""

    hospital: int
    epoch: int
    after: int
    rejoin: int | None = None


def parse_dropout(text: str | None, clients: int) -> list[ScheduledDropout]:
    """The schedule written in ``split.dropout`` (empty or ``None``: nobody leaves)."""
    if not text or not str(text).strip():
        return []
    out = []
    for entry in str(text).split(","):
        entry = entry.strip()
        who, *fields = entry.split(":")
        example = "e.g. client1:epoch=2:after=3 or client1:epoch=2:after=0:rejoin=4"
        if not (who.startswith("client") and who[6:].isdigit()):
            raise ConfigError(f"config key {KEY!r}: entry {entry!r} must start with a hospital (client0..client{clients - 1}), {example}")
        k = int(who[6:])
        if k >= clients:
            raise ConfigError(f"config key {KEY!r}: {who} does not exist; split.clients = {clients} (client0..client{clients - 1})")
        values = {}
        for field in fields:
            name, eq, value = field.partition("=")
            if name not in ("epoch", "after", "rejoin") or not eq or not value.isdigit():
                raise ConfigError(f"config key {KEY!r}: {field!r} in {entry!r} must be epoch=N, after=N or rejoin=N, {example}")
            values[name] = int(value)
        if "epoch" not in values or "after" not in values:
            raise ConfigError(f"config key {KEY!r}: {entry!r} needs epoch= and after=, {example}")
        if values["epoch"] < 1:
            raise ConfigError(f"config key {KEY!r}: {entry!r}: epochs count from 1")
        rejoin = values.get("rejoin")
        if rejoin is not None and rejoin <= values["epoch"]:
            raise ConfigError(f"config key {KEY!r}: {entry!r}: rejoin={rejoin} must come after epoch={values['epoch']}")
        out.append(ScheduledDropout(k, values["epoch"] - 1, values["after"], None if rejoin is None else rejoin - 1))
    hospitals = [d.hospital for d in out]
    if len(set(hospitals)) != len(hospitals):
        raise ConfigError(f"config key {KEY!r}: a hospital is named twice in {text!r}; one entry per hospital")
    return out


def most_absent(schedule: list[ScheduledDropout], epochs: int) -> int:
    """The most hospitals absent at once under ``schedule`` (over ``epochs`` epochs)."""
    worst = 0
    for epoch in range(epochs):
        gone = sum(1 for d in schedule if d.epoch <= epoch and (d.rejoin is None or epoch < d.rejoin))
        worst = max(worst, gone)
    return worst
