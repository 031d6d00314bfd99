"""Tables without the parts that tell a reader nothing: columns, or rows, that hold no value."""

from __future__ import annotations

from typing import Any

__all__ = ["without_empty_columns", "without_empty_rows"]


def _filled(value: Any) -> bool:
    return value is not None and value != "" and value != "\u2014"


def without_empty_columns(rows: list[dict]) -> list[dict]:
    """The rows less every column that no row fills (a column of dashes tells a reader nothing)."""
    keep = {k for row in rows for k, v in row.items() if _filled(v)}
    return [{k: v for k, v in row.items() if k in keep} for row in rows]


def without_empty_rows(rows: list[dict], label: str = "quantity") -> list[dict]:
    """The rows that hold a value besides their ``label`` cell."""
    return [row for row in rows if any(_filled(v) for k, v in row.items() if k != label)]
