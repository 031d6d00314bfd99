"""What a training run prints for the person who started it: which data it found (or the
synthetic-data banner) once the run is known to be able to start, and a final line with the
test metrics, their 95% intervals and the epoch whose model produced them."""

from __future__ import annotations

from typing import Any

from medsplit.uncertainty import format_interval

SYNTHETIC_BANNER = (
    "\n" + "=" * 78 + "\n  SYNTHETIC DATA: no real images were found, so this run uses the built-in\n"
    "  generator. Its numbers say nothing about patients. See datasets/README.md.\n" + "=" * 78 + "\n"
)


def data_line(summary: dict, clients: list) -> str:
    """``data: covid-cxr-v7 (...): 159 images (train 111 / val 16 / test 32), 2 clients of 56/55``."""
    splits = summary.get("splits") or {}
    sizes = {name: (splits.get(name) or {}).get("n") for name in ("train", "val", "test")}
    total = sum(v for v in sizes.values() if isinstance(v, int))
    split_text = " / ".join(f"{name} {n}" for name, n in sizes.items() if n is not None)
    held = "/".join(str(len(c)) for c in clients)
    return (f"data: {summary.get('source', '?')}: {total} images ({split_text}); "
            f"training images per client: {held}")


def announce_data(task: Any, clients: list, quiet: bool = False) -> None:
    """Name the dataset the run found; for synthetic data, the banner. Called after the data
    was partitioned, so a setting that cannot work (too many clients) fails before any banner."""
    if quiet:
        return
    if task.data.synthetic:
        print(SYNTHETIC_BANNER)
    print(data_line(task.data.summary(), clients))


def final_line(result: dict, headline: dict[str, float], intervals: dict | None, select_metric: str) -> str:
    """``test (epoch 15 of 25, best validation auc): auc 0.893 [95% CI 0.83-0.95], ...``.

    Args:
        result: the run's metrics record (``selected_epoch``, ``config``).
        headline: the task's scalar test metrics (``Task.summarise``).
        intervals: :func:`medsplit.uncertainty.test_intervals` output, or ``None``.
        select_metric: the validation metric that chose the epoch.
    """
    epochs = ((result.get("config") or {}).get("train") or {}).get("epochs")
    selected = result.get("selected_epoch")
    if isinstance(selected, int) and selected > 0:
        which = f"model of epoch {selected}" + (f" of {epochs}" if epochs else "") + f", best validation {select_metric}"
    else:
        which = "model of the last epoch"
    parts = []
    for name, value in headline.items():
        text = f"{name} {value:.3f}"
        if intervals and isinstance(intervals.get(name), dict):
            text += f" [95% CI {format_interval(intervals[name])}]"
        parts.append(text)
    tail = ""
    if intervals:
        tail = f" (CI: {intervals['n_resamples']} bootstrap resamples of {intervals['n_patients']} test patients)"
    return f"test ({which}): " + ", ".join(parts) + tail
