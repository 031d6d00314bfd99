"""The data layer's one error type, and the guard that turns a badly encoded CSV into it."""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["DataError", "utf8_csv"]


class DataError(ValueError):
    """Bad input to the data layer; the message names the file, row, field or value at fault."""


@contextlib.contextmanager
def utf8_csv(path: Path):
    """Around reading a CSV as UTF-8: a file in another encoding (Latin-1 from a spreadsheet,
    say) stops with an error naming it and the encoding expected, not a bare codec message."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position {error.start} "
                        "cannot be decoded); save it as UTF-8 (with or without a BOM), e.g. "
                        f"iconv -f latin1 -t utf-8 {path.name} > fixed.csv") from error
