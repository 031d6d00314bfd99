"""Registries that fill themselves: every module of a package that defines a top-level ``SPEC``.

Defences (:mod:`medsplit.defences`) and attacks (:mod:`medsplit.attacks`) are plug-ins: a new
one is one new module in its package with a ``SPEC`` (a ``DefenceSpec`` / ``AttackSpec``), and
no other file changes. Only modules whose source assigns ``SPEC`` at the top level are imported,
so the packages' infrastructure modules (the harness, registries, networks) are not imported
while the package itself is being initialised.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Iterable, TypeVar

T = TypeVar("T")

_DEFINES_SPEC = re.compile(r"^SPEC\s*(:[^=]+)?=", re.MULTILINE)


def discover_specs(package: str, path: Iterable[str], spec_type: type[T]) -> list[T]:
    """The ``SPEC`` of every plug-in module of ``package``, in module-name order.

    Args:
        package: the package's dotted name (``__name__`` inside its ``__init__``).
        path: the package's ``__path__``.
        spec_type: the class every ``SPEC`` must be an instance of.

    Raises:
        TypeError: a module's ``SPEC`` is of another type (names the module).
    """
    specs = []
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if info.ispkg:
            continue
        source = Path(info.module_finder.path, f"{info.name}.py")  # type: ignore[union-attr]
        if not source.is_file() or not _DEFINES_SPEC.search(source.read_text(encoding="utf-8")):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, spec_type):
            raise TypeError(f"{package}.{info.name}.SPEC must be a {spec_type.__name__}, got {type(spec).__name__}")
        specs.append(spec)
    return specs
