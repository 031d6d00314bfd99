"""Help text generated from the config schema (``medsplit train --help``): every settable key
with its default, choices (or type) and the documentation written under its field."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any

from medsplit.config.schema import CHOICES, Config


def _field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass (read from the source; Python
    keeps no attribute docstrings at run time)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (frozen app): no docs
        return {}
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe_keys() -> list[dict[str, Any]]:
    """Every settable key with its default, choices (or type) and documentation, in schema order."""
    rows = []

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        docs = _field_docs(cls)
        default = cls()
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{key}.")
                continue
            hint = hints[f.name]
            type_name = " | ".join(a.__name__ if a is not type(None) else "null" for a in typing.get_args(hint)) \
                if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint.__name__
            rows.append({"key": key, "default": getattr(default, f.name), "choices": CHOICES.get(key),
                         "type": type_name, "doc": docs.get(f.name, "")})

    walk(Config, "")
    return rows


def keys_help(width: int = 100) -> str:
    """The settings block of ``medsplit train --help``: one entry per key, its default, its
    choices (or type) and the first sentence of its documentation."""
    lines = []
    section = None
    for row in describe_keys():
        head = row["key"].split(".")[0] if "." in row["key"] else ""
        if head != section:
            section = head
            lines.append(f"  {head or 'top level'}:")
        value = row["default"]
        default = "null" if value is None else str(value).lower() if isinstance(value, bool) else \
            (repr(value) if value == "" else value)
        allowed = " | ".join(row["choices"]) if row["choices"] else row["type"]
        lines.append(f"    {row['key']}={default}   ({allowed})")
        doc = row["doc"]
        if doc and doc.rstrip(".") != allowed:
            lines.extend(textwrap.wrap(doc, width=width, initial_indent="        ", subsequent_indent="        "))
    return "\n".join(lines)
