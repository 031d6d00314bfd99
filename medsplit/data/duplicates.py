"""Exact duplicate images (the same file content under two names).

A copy of one image on both sides of a train/test split inflates test scores (measured: one
copy landed in train, the other in test). Duplicates are found by content hash when a source
is indexed, before anything is decoded. Only files of equal size can be equal, so files are
grouped by size first and only those sharing a size are read and hashed: a folder without
duplicates costs one ``stat`` per file.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from medsplit.data.errors import DataError

POLICIES = ("error", "drop")


def duplicate_pairs(files: list[Path]) -> list[tuple[int, int]]:
    """``(first, copy)`` index pairs of files whose bytes are identical; ``first`` is the earliest
    index with that content, every later one is a ``copy``."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        try:
            by_size[Path(f).stat().st_size].append(i)
        except OSError as error:
            raise DataError(f"cannot read image {f}: {error.strerror}") from error
    pairs = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        first_of: dict[str, int] = {}
        for i in same_size:
            digest = file_digest(Path(files[i]))
            if digest in first_of:
                pairs.append((first_of[digest], i))
            else:
                first_of[digest] = i
    return sorted(pairs, key=lambda p: p[1])


def handle_duplicates(files: list[Path], policy: str = "error") -> tuple[list[int], list[tuple[str, str]]]:
    """Apply ``data.duplicates`` to ``files``.

    Args:
        files: image files, in index order.
        policy: ``"error"`` stops at the first duplicate, naming both files; ``"drop"`` keeps the
            first file of each content and drops the later copies.

    Returns:
        The indices to keep (sorted) and the dropped ``(kept file, dropped copy)`` pairs.

    Raises:
        DataError: a duplicate under ``"error"`` (naming both files and the option to drop).
    """
    if policy not in POLICIES:
        raise DataError(f"duplicates policy must be one of {list(POLICIES)}, got {policy!r}")
    pairs = duplicate_pairs(files)
    if pairs and policy == "error":
        first, copy = pairs[0]
        more = f" ({len(pairs) - 1} more duplicate(s) after it)" if len(pairs) > 1 else ""
        raise DataError(f"images {files[first]} and {files[copy]} have identical content{more}; the copies could land on "
                        "both sides of the train/test split. Remove them, or set data.duplicates=drop to keep only the first")
    dropped = {copy for _, copy in pairs}
    keep = [i for i in range(len(files)) if i not in dropped]
    return keep, [(str(files[first]), str(files[copy])) for first, copy in pairs]


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (images here; downloads' md5 checks too)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
