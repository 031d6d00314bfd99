"""Atomic file writes: a reader (or a resumed sweep) sees the old file or the new one, never a
half-written one, even when the process is killed mid-write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates its file 0600; outputs get the permissions a plain open() would give them.
_FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: str | Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, flushed to disk and
    then renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows).

    Args:
        path: the file to (re)write; its folder must exist.
        data: text (encoded with ``encoding``) or bytes.
        encoding: text encoding.
    """
    path = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
