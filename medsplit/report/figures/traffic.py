"""Communication figures: bytes per epoch per link, and bytes (and link time) per training step."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from medsplit.report.figures.axes import mark_empty

__all__ = ["LINK_SPEEDS", "bytes_figure", "step_traffic_figure"]


def bytes_figure(bytes_rows: list[dict]) -> Figure:
    """Megabytes (10^6 bytes) per epoch for every ``link`` + ``kind`` pair.

    Grouped bars for up to 12 epochs, lines (one per link+kind) beyond that.

    Args:
        bytes_rows: the run record's ``bytes`` rows (``epoch``, ``link``, ``kind``, ``bytes``).
    """
    totals: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for row in bytes_rows:
        link, kind = str(row.get("link", "?")), str(row.get("kind", ""))
        name = link if not kind or kind[:4] in link else f"{link} ({kind})"  # not "weights weights"
        totals[name][int(row.get("epoch", 0))] += float(row.get("bytes", 0)) / 1e6
    series = sorted(totals)
    epochs = sorted({e for s in totals.values() for e in s})
    width = min(12.0, max(6.5, 4.0 + 0.3 * len(epochs) * max(1, len(series)))) if len(epochs) <= 12 else 9.0
    fig = Figure(figsize=(width, 4.0), layout="constrained")
    ax = fig.add_subplot()
    if not series:
        mark_empty(ax)
        return fig
    if len(epochs) <= 12:
        width = 0.8 / len(series)
        x = np.arange(len(epochs))
        for i, name in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [totals[name].get(e, 0.0) for e in epochs], width, label=name)
        ax.set_xticks(x, [str(e) for e in epochs])
    else:
        for name in series:
            ax.plot(epochs, [totals[name].get(e, 0.0) for e in epochs], marker=".", label=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MB (10^6 bytes)")
    ax.set_title("Traffic across the cut per epoch", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncols=2 if len(series) > 16 else 1)
    return fig


#: Link speeds the traffic figure converts bytes into seconds for (bits per second).
LINK_SPEEDS = {"100 Mbit/s": 100e6, "1 Gbit/s": 1e9}

def step_traffic_figure(per_bar: Mapping[str, Mapping[str, float]], unit: str = "per training step") -> Figure:
    """Bytes per training step as horizontal stacked bars, one bar per direction (e.g. hospital
    -> server), one segment per link and kind of tensor, with the time the bar's bytes take on
    a 100 Mbit/s and a 1 Gbit/s link written beside it (bandwidth only: no latency, no
    protocol overhead).

    Args:
        per_bar: ``{bar: {segment: bytes}}``, e.g.
            ``{"hospital → server": {"client → server (activation)": 6.4e5, "labels": 256}}``.
        unit: what one bar stands for, for the axis label.
    """
    bars = list(per_bar)
    segments = list(dict.fromkeys(seg for v in per_bar.values() for seg in v))
    fig = Figure(figsize=(10.5, 0.7 * max(len(bars), 2) + 1.2 + 0.22 * ((len(segments) + 2) // 3)), layout="constrained")
    ax = fig.add_subplot()
    if not bars:
        mark_empty(ax)
        return fig
    totals = [sum(per_bar[bar].values()) for bar in bars]
    scale, scale_name = (1e6, "MB") if max(totals) >= 1e6 else (1e3, "kB")
    y = np.arange(len(bars))[::-1]
    left = np.zeros(len(bars))
    for i, seg in enumerate(segments):
        widths = np.array([per_bar[bar].get(seg, 0.0) for bar in bars]) / scale
        ax.barh(y, widths, left=left, height=0.55, color=f"C{i % 10}", label=seg)
        left += widths
    for yi, total in zip(y, totals):
        times = ", ".join(f"{_seconds(total * 8 / bps)} at {name}" for name, bps in LINK_SPEEDS.items())
        ax.text(total / scale, yi, f"  {total / scale:,.2f} {scale_name}: {times}", va="center", fontsize=9)
    ax.set_yticks(y, bars)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_xlim(0, max(totals) / scale * 1.9)  # room for the text beside the longest bar
    ax.set_xlabel(f"{scale_name} {unit} (1 {scale_name} = 10^{6 if scale_name == 'MB' else 3} bytes)")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(len(segments), 3), fontsize=8.5, frameon=False)
    return fig


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:,.1f} s"
    return f"{s * 1e3:,.1f} ms" if s >= 1e-3 else f"{s * 1e6:,.0f} \u00b5s"
