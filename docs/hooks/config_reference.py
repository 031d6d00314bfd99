"""mkdocs hook: replace ``<!-- config-keys -->`` in a page with the configuration reference,
generated from the schema (:func:`medsplit.config.describe_keys`: every key, its type, default,
choices and the documentation written under its field), so the page cannot fall behind the code."""

from __future__ import annotations

MARKER = "<!-- config-keys -->"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(value) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return "`''`" if value == "" else f"`{value}`"


def config_reference() -> str:
    """The reference as Markdown: one table per section (top level, data, model, split, train, output)."""
    from medsplit.config import describe_keys

    sections: dict[str, list[dict]] = {}
    for row in describe_keys():
        sections.setdefault(row["key"].split(".")[0] if "." in row["key"] else "top level", []).append(row)
    lines = []
    for section, rows in sections.items():
        lines += [f"### {section}", "", "| key | type | default | choices | meaning |", "|---|---|---|---|---|"]
        for row in rows:
            choices = ", ".join(f"`{c}`" for c in row["choices"]) if row["choices"] else ""
            lines.append(f"| `{row['key']}` | {_cell(row['type'])} | {_default(row['default'])} | {choices} | {_cell(row['doc'])} |")
        lines.append("")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, config_reference())
    return markdown
