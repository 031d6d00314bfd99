"""What a training run prints for the person who started it: which data it found (or the
synthetic-data banner, saying why the data is synthetic) once the run is known to be able to
start, the run's size and an estimate of its total time after its first batches, and a final
line with the test metrics, their 95% intervals and the epoch whose model produced them."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from medsplit.uncertainty import format_interval

_RULE = "=" * 78


def synthetic_banner(source: str, data_root: Any = None) -> str:
    """The synthetic-data banner, saying why: chosen (``data.source=synthetic``) or none found.

    Args:
        source: the run's ``data.source`` setting.
        data_root: the folder ``data.source=auto`` searched (``$MEDSPLIT_DATA`` or ``datasets/``).
    """
    if source == "synthetic":
        why = ("  SYNTHETIC DATA, as chosen (data.source=synthetic, make DATA=synthetic): this run uses\n"
               "  the built-in generator even if real images are present.")
    else:
        where = f" under {data_root}" if data_root is not None else ""
        why = (f"  SYNTHETIC DATA: no real images were found{where} (data.source={source}),\n"
               "  so this run uses the built-in generator. Get data with `make data` or set\n"
               "  MEDSPLIT_DATA (datasets/README.md).")
    return f"\n{_RULE}\n{why}\n  Its numbers say nothing about patients.\n{_RULE}\n"


#: The banner of a run that found no real images (kept for callers that print it without a config).
SYNTHETIC_BANNER = synthetic_banner("auto")


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
        settings = task.settings  # data.source and the folder data.source=auto searched
        print(synthetic_banner(settings.source, settings.root))
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
        unit = "images" if intervals.get("unit") == "image" else "patients"
        count = intervals["n_images"] if unit == "images" else intervals["n_patients"]
        tail = f" (CI: {intervals['n_resamples']} bootstrap resamples of {count} test {unit})"
    return f"test ({which}): " + ", ".join(parts) + tail


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 15 s``, ``2 h 05 min``."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


#: An estimate above this many seconds also says how to shorten the run.
LONG_RUN_S = 10 * 60


def estimate_line(seconds_per_batch: float, batches_per_epoch: int, epochs_left: int, batch_size: int, img_size: int,
                  data: str) -> str:
    """The run's size and its estimated training time, with how to shorten a long one.

    ``size: 20 epochs x 68 batches of 16 images at 64 px (synthetic fundus ...); ~0.42 s per batch:
    about 9 min 31 s of training steps, plus validation each epoch``.

    Args:
        seconds_per_batch: measured over the first batches (after a warm-up batch).
        batches_per_epoch: training batches per epoch, all hospitals together.
        epochs_left: epochs still to train in this run.
        batch_size: training batch size.
        img_size: image side in pixels.
        data: the data the run found (its source, as the data summary names it).
    """
    total = seconds_per_batch * batches_per_epoch * epochs_left
    line = (f"size: {epochs_left} epochs x {batches_per_epoch} batches of {batch_size} images at {img_size} px ({data}); "
            f"~{seconds_per_batch:.2f} s per batch: about {format_duration(total)} of training steps, plus validation each epoch")
    if total > LONG_RUN_S:
        line += ("\n  a long run: shorten it with EPOCHS= (train.epochs), SIZE= (data.img_size) or DATA=synthetic, "
                 "e.g. make ... EPOCHS=5 SIZE=64; stop it with Ctrl-C and continue later with --resume")
    return line


class RunEstimate:
    """Times a run's first training batches and prints :func:`estimate_line` once.

    Call :meth:`batch_done` after every training step: the first ``warmup`` batches (data
    decoding, allocator warm-up) are not timed, the next ``sample`` are, then the line is printed
    and later calls cost one comparison.

    Args:
        batches_per_epoch: see :func:`estimate_line`, as are ``epochs_left``, ``batch_size``, ``img_size`` and ``data``.
        out: where the line goes (``tqdm.write`` keeps progress bars intact); ``None`` prints nothing.
        clock: the time source (a test passes a fake one).
    """

    def __init__(self, batches_per_epoch: int, epochs_left: int, batch_size: int, img_size: int, data: str,
                 out: Callable[[str], Any] | None = print, warmup: int = 1, sample: int = 5,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.shape = (batches_per_epoch, epochs_left, batch_size, img_size, data)
        self.out, self.clock = out, clock
        self.warmup, self.sample = warmup, max(1, min(sample, max(batches_per_epoch - warmup, 1)))
        self.done, self.started = 0, math.nan
        self.line: str | None = None

    def batch_done(self) -> None:
        if self.line is not None or self.out is None:
            return
        self.done += 1
        if self.done == self.warmup:
            self.started = self.clock()
        elif self.done == self.warmup + self.sample:
            self.line = estimate_line((self.clock() - self.started) / self.sample, *self.shape)
            self.out(self.line)
