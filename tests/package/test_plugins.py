"""Defences and attacks are plug-ins: one module with a SPEC is all a new one needs."""

import sys

import pytest

from medsplit.attacks import ATTACKS
from medsplit.defences import DEFENCES
from medsplit.defences.registry import DefenceSpec
from medsplit.plugins import discover_specs


def test_every_builtin_defence_and_attack_is_found():
    assert set(DEFENCES) == {"none", "nopeek", "laplace", "mixing", "proxy", "dpsgd"}
    assert list(ATTACKS) == ["fsha", "inversion", "label-leakage", "sdar"]


def _package(tmp_path, name, modules):
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for mod, text in modules.items():
        (pkg / f"{mod}.py").write_text(text)
    sys.path.insert(0, str(tmp_path))
    return pkg


def test_a_new_module_with_a_spec_is_registered_and_helpers_are_not_imported(tmp_path):
    spec_module = (
        "from medsplit.defences.registry import DefenceSpec\n"
        "def install(model, strength, setting):\n    return {}, None\n"
        "SPEC = DefenceSpec('blur', 'sigma of a Gaussian blur', install)\n")
    pkg = _package(tmp_path, "plugins_ok", {"blur": spec_module, "helper": "raise RuntimeError('must not be imported')\n"})
    try:
        specs = discover_specs("plugins_ok", [str(pkg)], DefenceSpec)
    finally:
        sys.path.remove(str(tmp_path))
    assert [s.name for s in specs] == ["blur"]


def test_a_spec_of_the_wrong_type_names_its_module(tmp_path):
    pkg = _package(tmp_path, "plugins_bad", {"oops": "SPEC = 'not a spec'\n"})
    try:
        with pytest.raises(TypeError, match=r"plugins_bad\.oops\.SPEC must be a DefenceSpec"):
            discover_specs("plugins_bad", [str(pkg)], DefenceSpec)
    finally:
        sys.path.remove(str(tmp_path))
