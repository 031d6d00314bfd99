"""What every leaderboard study is made of: the :class:`Study` a results file becomes, the docs
page telling its story, and how a recorded command or duration is shown."""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsplit.train.console import format_duration

__all__ = ["MACHINE_OVERRIDES", "STUDY_PAGES", "Study", "clean_command", "format_seconds", "history", "portable", "study_page"]

#: File-name prefix -> the docs page holding that study's narrative (relative to docs/).
STUDY_PAGES = {
    "results-retinamnist": "studies/retinamnist.md", "reproduce-retinamnist": "studies/retinamnist.md",
    "results-lungs-sites": "studies/lungs-sites.md", "reproduce-lungs-sites": "studies/lungs-sites.md",
    "results-eyepacs": "studies/eyepacs.md", "reproduce-eyepacs": "studies/eyepacs.md",
    "eyepacs-signal-probe": "studies/eyepacs.md",
    "fsha": "studies/fsha.md", "reproduce-fsha": "studies/fsha.md",
    "codec_accuracy": "studies/synthetic.md", "optimizer_handover": "studies/synthetic.md",
    "transport": "studies/transport.md", "link_time": "studies/transport.md",
    "throughput": "studies/transport.md", "cpu-bf16": "studies/transport.md",
    "dropout": "studies/dropout.md",
}


@dataclass
class Study:
    """One results file as the leaderboard shows it."""

    file: str
    title: str
    kind: str
    columns: list[str]
    rows: list[dict[str, Any]]
    facts: dict[str, str] = field(default_factory=dict)
    baselines: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    page: str | None = None


def study_page(file_name: str) -> str | None:
    """The docs page (relative to docs/) that tells a results file's story, longest prefix first."""
    stem = Path(file_name).stem
    for prefix in sorted(STUDY_PAGES, key=len, reverse=True):
        if stem.startswith(prefix):
            return STUDY_PAGES[prefix]
    return None


def format_seconds(seconds: Any) -> str:
    """:func:`medsplit.train.console.format_duration`, or an em dash for a missing value."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    return format_duration(seconds)


MACHINE_OVERRIDES = ("output.runs_dir=", "output.reports_dir=", "data.root=", "data.cache_dir=")


def portable(text: str) -> str:
    """A path into the author's data folder written as the user's: ``$MEDSPLIT_DATA/...``."""
    return re.sub(r"(?:/[\w.-]+)*/shared/data", "$MEDSPLIT_DATA", text)


def clean_command(command: str | None) -> str | None:
    """The recorded command as a user reruns it: the project's venv, no machine-specific folders."""
    if not command:
        return None
    words = shlex.split(command)
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in ("--runs-dir", "--results-dir", "--data-root"):
            skip = True
            continue
        if word in ("--finished-only",) or word.startswith(("--runs-dir=", "--results-dir=", "--data-root=", *MACHINE_OVERRIDES)):
            continue  # where the author's machine kept its files
        out.append(word)
    program = next((i for i, w in enumerate(out) if "=" not in w), None)  # after any VAR=value prefix
    if program is not None and out[program] in ("python", "python3"):
        out[program] = ".venv/bin/python"
    return " ".join(shlex.quote(w) for w in out)


def history(data: dict) -> list[dict]:
    histories = data.get("histories") or {}
    return next(iter(histories.values()), []) if isinstance(histories, dict) else []


