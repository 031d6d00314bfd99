"""The choices ``python -m medsplit attack`` and ``sweep`` offer, known without importing torch.

The registries behind them (attacks, defences, attack tasks and profiles, training protocols)
import torch when they are built, which takes seconds, and ``--help`` must answer at once. So:

* the plug-in registries (attacks, defences: one module with a ``SPEC`` each, see
  :mod:`medsplit.plugins`) are read from their modules' *source*, the same modules in the same
  order as :func:`medsplit.plugins.discover_specs` imports them: a new plug-in shows up here
  with no other change;
* the training protocols that are baselines are read from their modules' source too;
* the fixed lists (attack tasks, profiles, devices, sweep axes) are mirrored.

``tests/package/test_cli.py`` checks every list here equals its registry.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

from medsplit.config.schema import CHOICES, protocol_module_names
from medsplit.plugins import _DEFINES_SPEC

PACKAGE = Path(__file__).resolve().parent

#: = medsplit.attacks.tasks.ATTACK_TASKS, in its order
ATTACK_TASKS = ("lungs", "retinopathy", "lungs-label-sharing")
#: = medsplit.attacks.profiles.PROFILES
ATTACK_PROFILES = ("tiny", "reduced", "paper-cpu", "full")
#: = medsplit.attacks.profiles.DEVICES
ATTACK_DEVICES = ("auto", "cpu", "cuda")
#: = medsplit.sweep.AXES
SWEEP_AXES = ("cut", "clients")
#: = medsplit.sweep.PARTITIONS
SWEEP_PARTITIONS = CHOICES["data.partition"]


def sweep_baselines() -> tuple[str, ...]:
    """= medsplit.sweep.baseline_protocols(): the protocols whose class body says ``baseline = True``
    (read from the source of ``medsplit/train/protocols/<name>.py``)."""
    folder = PACKAGE / "train" / "protocols"
    found = []
    for name in protocol_module_names():
        tree = ast.parse((folder / f"{name.replace('-', '_')}.py").read_text(encoding="utf-8"))
        if any(isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["baseline"]
               and isinstance(node.value, ast.Constant) and node.value.value is True
               for cls in tree.body if isinstance(cls, ast.ClassDef) for node in cls.body):
            found.append(name)
    return tuple(found)


def sweep_protocols() -> tuple[str, ...]:
    """= medsplit.sweep.split_protocols(): every protocol but the baselines."""
    baselines = sweep_baselines()
    return tuple(p for p in protocol_module_names() if p not in baselines)


def spec_names(package: str) -> dict[str, tuple[str, ...]]:
    """``{name: aliases}`` of every plug-in of ``medsplit.<package>`` (``attacks``, ``defences``),
    read from the ``SPEC = XSpec("name", ..., aliases=(...))`` line of each module's source.

    Raises:
        ValueError: a ``SPEC`` whose name or aliases are not literals (names the module): then
            only importing the registry can tell them.
    """
    names: dict[str, tuple[str, ...]] = {}
    folder = PACKAGE / package
    for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda m: m.name):
        source = folder / f"{info.name}.py"
        if info.ispkg or not source.is_file():
            continue
        text = source.read_text(encoding="utf-8")
        if not _DEFINES_SPEC.search(text):
            continue
        name, aliases = _literal_spec(ast.parse(text), source)
        names[name] = aliases
    return names


def _literal_spec(tree: ast.Module, source: Path) -> tuple[str, tuple[str, ...]]:
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not (isinstance(target, ast.Name) and target.id == "SPEC" and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        keywords = {k.arg: k.value for k in call.keywords}
        name_node = keywords.get("name", call.args[0] if call.args else None)
        try:
            name = ast.literal_eval(name_node)
            aliases = tuple(ast.literal_eval(keywords["aliases"])) if "aliases" in keywords else ()
        except (ValueError, TypeError, SyntaxError):
            name = None
        if isinstance(name, str):
            return name, aliases
        break
    raise ValueError(f"{source}: SPEC's name and aliases must be written as literals for `medsplit attack --help`")


def attack_names() -> tuple[str, ...]:
    """= medsplit.attacks.ATTACKS, in its order."""
    return tuple(spec_names("attacks"))


def attack_aliases() -> dict[str, str]:
    """= medsplit.attacks.ALIASES: other names users look for -> the attack's name."""
    return {alias: name for name, aliases in spec_names("attacks").items() for alias in aliases}


def defence_names() -> tuple[str, ...]:
    """= medsplit.defences.DEFENCES: ``none`` first, then the plug-ins in module-name order."""
    return ("none", *spec_names("defences"))
