"""Reading a YAML file that must hold a mapping, with errors that name the file.

Configs (:func:`medsplit.config.load_config`) and FLARE site policies
(:func:`medsplit.flare.policy.load_policy`) are both such files; each names its own kind and
error class.
"""

from __future__ import annotations

from pathlib import Path

import yaml


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
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise error(f"{what} {path} must hold a mapping {mapping_hint}")
    return values
