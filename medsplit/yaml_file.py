"""Reading a YAML file that must hold a mapping, with errors that name the file.

Configs (:func:`medsplit.config.load_config`) and FLARE site policies
(:func:`medsplit.flare.policy.load_policy`) are both such files; each names its own kind and
error class.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

__all__ = ["load_yaml", "read_yaml_mapping"]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that ``1e-5`` is a float as users mean it (YAML 1.1, which
    PyYAML follows, reads a number without a dot as a string: ``lr: 1e-4`` would be ``"1e-4"``)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load_yaml(text: str):
    """``text`` as YAML with the safe loader (no Python objects), exponents read as floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def read_yaml_mapping(path: Path, what: str, error: type[Exception], mapping_hint: str = "at the top level") -> dict:
    """The mapping in ``path`` (an empty file gives ``{}``).

    Args:
        path: the file.
        what: how messages name it, e.g. ``"config file"``.
        error: the exception raised for a missing file, invalid YAML or a non-mapping.
        mapping_hint: the end of the non-mapping message (what the mapping should hold).
    """
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    try:
        values = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise error(f"{what} {path} must hold a mapping {mapping_hint}")
    return values
