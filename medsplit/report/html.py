"""A small builder for self-contained HTML reports.

Every report in medsplit (single runs, sweeps, attacks, the index page) is a
:class:`Report`: a title, optional banners, and a list of sections holding paragraphs,
tables, figures and code blocks. :meth:`Report.render` passes that structure to one
Jinja2 template (``templates/report.html``, autoescaping on), so the page has a single
look and is safe against stray ``<`` in names, notes or configs.

The output is one file that opens offline: CSS is inline, figures are PNG ``data:`` URIs,
and nothing is fetched from a network (no scripts, fonts or stylesheets).
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

import medsplit

__all__ = ["Report", "figure_to_data_uri", "format_value", "flatten", "medsplit_version", "BANNER_LEVELS"]

BANNER_LEVELS = ("info", "warning", "danger", "success")

_env: Environment | None = None


def _environment() -> Environment:
    """The Jinja2 environment, loading templates from the installed package (created once)."""
    global _env
    if _env is None:
        _env = Environment(
            loader=PackageLoader("medsplit.report", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _env


def medsplit_version() -> str:
    """The installed medsplit version, or ``"unknown"`` when running from an uninstalled tree."""
    try:
        return version("medsplit")
    except PackageNotFoundError:
        return str(getattr(medsplit, "__version__", "unknown"))


def figure_to_data_uri(fig: Any, dpi: int = 110) -> str:
    """Render a matplotlib Figure to a ``data:image/png;base64,...`` URI and close it.

    Works for figures made with ``matplotlib.figure.Figure()`` (no pyplot state) and for
    pyplot figures, which are closed afterwards so long report loops do not leak memory.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    if getattr(fig.canvas, "manager", None) is not None:  # registered with pyplot
        import matplotlib.pyplot as plt  # pyplot picks a backend on import: only when the caller used it

        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def format_value(value: Any, float_fmt: str = "{:.4f}") -> str:
    """How a table cell shows a value: floats through ``float_fmt``, ``None`` as an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float_fmt.format(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalar
        return format_value(value.item(), float_fmt)
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": 2}`` -> ``{"a.b": 1, "c": 2}`` (lists are kept as values)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any, float_fmt: str) -> dict[str, Any]:
    """A table cell; ``long`` marks text with a word too long to fit a column (a path, a run
    name), which may then break anywhere instead of widening the table past the page."""
    text = format_value(value, float_fmt)
    # an interval such as "0.714-0.837" is set like a number: right-aligned, never broken at its dash
    numeric = _is_number(value) or bool(_INTERVAL.fullmatch(text))
    return {"text": text, "num": numeric, "long": max((len(w) for w in text.split()), default=0) > 22}


_INTERVAL = re.compile(r"-?\d[\d.,]*\u2013-?\d[\d.,]*")


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "section"


class Report:
    """A self-contained HTML report, built section by section.

    Content added before the first :meth:`section` call goes at the top of the page (a
    banner added there is shown right under the title); afterwards every ``add`` goes into
    the most recent section. Sections appear in a table of contents.

    Args:
        title: page title and main heading.
        subtitle: one line under the title (e.g. the run directory or date).

    Example::

        report = Report("Split ResNet-34, cut 3", subtitle="runs/dr-cut3")
        report.banner("Synthetic data: numbers say nothing about real patients")
        report.section("Test metrics").table([{"metric": "AUC", "value": 0.71}])
        report.write(Path("reports/dr-cut3.html"))
    """

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = str(title)
        self.subtitle = str(subtitle)
        self._top: list[dict[str, Any]] = []
        self._sections: list[dict[str, Any]] = []
        self._ids: set[str] = set()

    # -- structure -------------------------------------------------------------------
    @property
    def _items(self) -> list[dict[str, Any]]:
        return self._sections[-1]["items"] if self._sections else self._top

    def section(self, heading: str, intro: str = "") -> Report:
        """Start a new section; following adds go into it. Returns ``self`` for chaining."""
        anchor = base = _slug(heading)
        k = 2
        while anchor in self._ids:
            anchor, k = f"{base}-{k}", k + 1
        self._ids.add(anchor)
        self._sections.append({"heading": str(heading), "id": anchor, "items": []})
        if intro:
            self.text(intro)
        return self

    # -- content ---------------------------------------------------------------------
    def banner(self, text: str, level: str = "warning") -> None:
        """A coloured notice box; ``level`` is one of ``BANNER_LEVELS``."""
        if level not in BANNER_LEVELS:
            raise ValueError(f"banner level must be one of {BANNER_LEVELS}, got {level!r}.")
        self._items.append({"kind": "banner", "text": str(text), "level": level})

    def text(self, paragraph: str) -> None:
        """A paragraph of plain text (HTML-escaped)."""
        self._items.append({"kind": "text", "text": str(paragraph)})

    def html(self, raw: str) -> None:
        """A trusted HTML snippet, inserted unescaped. Never pass data from a run through here."""
        self._items.append({"kind": "html", "html": Markup(raw)})

    def table(
        self,
        rows: list[dict],
        columns: list[str] | None = None,
        caption: str = "",
        float_fmt: str = "{:.4f}",
        marked: list[int] | None = None,
    ) -> None:
        """A table with one row per dict.

        Args:
            rows: the rows; missing keys show as an em dash.
            columns: column order; defaults to every key in order of first appearance.
            caption: shown above the table.
            float_fmt: format for float cells (ints and strings are shown as they are).
            marked: indices of rows to highlight (e.g. the selected epoch).
        """
        rows = list(rows)
        if columns is None:
            columns = []
            for row in rows:
                columns.extend(k for k in row if k not in columns)
        cells = [[_cell(row.get(c), float_fmt) for c in columns] for row in rows]
        self._items.append({"kind": "table", "columns": [str(c) for c in columns], "rows": cells, "caption": caption,
                            "marked": list(marked or [])})

    def kv(self, mapping: dict, caption: str = "") -> None:
        """A two-column key/value table; nested dicts are flattened to dotted keys."""
        rows = [{"key": k, "value": v} for k, v in flatten(dict(mapping)).items()]
        cells = [[{"text": r["key"], "num": False}, {"text": format_value(r["value"], "{:g}"), "num": False}] for r in rows]
        self._items.append({"kind": "table", "columns": ["key", "value"], "rows": cells, "caption": caption, "kv": True,
                            "marked": []})

    def cards(self, mapping: dict[str, Any], caption: str = "", float_fmt: str = "{:.3f}",
              notes: dict[str, str] | None = None) -> None:
        """Headline numbers shown large, side by side (e.g. test AUC, Dice, wall time).

        Args:
            mapping: label -> value.
            caption: shown above the cards.
            float_fmt: format for float values.
            notes: label -> a small line under the value (e.g. its 95% interval).
        """
        notes = notes or {}
        cards = [{"label": str(k), "value": v if isinstance(v, str) else format_value(v, float_fmt), "note": notes.get(k, "")}
                 for k, v in mapping.items()]
        self._items.append({"kind": "cards", "cards": cards, "caption": caption})

    def figure(self, fig_or_data_uri: Any, caption: str = "") -> None:
        """A figure: a matplotlib Figure (rendered to PNG and closed) or a ``data:image/...`` URI."""
        if isinstance(fig_or_data_uri, str):
            if not fig_or_data_uri.startswith("data:image/"):
                raise ValueError("figure() takes a matplotlib Figure or a 'data:image/...' URI, not a link.")
            uri = fig_or_data_uri
        elif hasattr(fig_or_data_uri, "savefig"):
            uri = figure_to_data_uri(fig_or_data_uri)
        else:
            raise TypeError(f"figure() takes a matplotlib Figure or a data URI, got {type(fig_or_data_uri).__name__}.")
        self._items.append({"kind": "figure", "src": uri, "caption": caption})

    def code(self, text: str, caption: str = "") -> None:
        """Preformatted text such as a YAML config (escaped)."""
        self._items.append({"kind": "code", "text": str(text), "caption": caption})

    # -- output ----------------------------------------------------------------------
    def render(self) -> str:
        """The complete HTML page as a string."""
        template = _environment().get_template("report.html")
        return template.render(
            title=self.title,
            subtitle=self.subtitle,
            top=self._top,
            sections=self._sections,
            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            version=medsplit_version(),
        )

    def write(self, path: Path | str) -> Path:
        """Render and write to ``path`` (parent directories are created). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path
