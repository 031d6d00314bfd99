"""Numbers written with an exponent (``1e-5``) are floats in configs, overrides and ``--set``:
YAML 1.1, which PyYAML follows, reads them as strings, so ``--set strengths.laplace=[1e-5]``
crashed an attack run and ``train.lr=1e-4`` was refused as a string."""

import pytest

from medsplit.attacks.profiles import PROFILES, customise
from medsplit.config import load_config
from medsplit.config.loading import parse_override
from medsplit.yaml_file import load_yaml


@pytest.mark.parametrize("text, value", [("1e-5", 1e-5), ("-2E3", -2000.0), ("1.5e-3", 1.5e-3), ("[1e-5, 2]", [1e-5, 2]),
                                         ("3", 3), ("0.5", 0.5), ("'1e-5'", "1e-5"), ("e5", "e5"), ("1e", "1e")])
def test_exponents_are_floats_and_everything_else_is_as_yaml_reads_it(text, value):
    got = load_yaml(f"x: {text}")["x"]
    assert got == value and type(got) is type(value)


def test_an_override_with_an_exponent_sets_a_float():
    assert parse_override("train.lr=1e-4") == ("train.lr", 1e-4)
    cfg = load_config("configs/retinopathy.yaml", ["train.lr=3e-4"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)


def test_a_config_file_with_an_exponent_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: retinopathy\ntrain:\n  lr: 1e-3\n")
    assert load_config(path).train.lr == pytest.approx(1e-3)


def test_attack_set_takes_an_exponent_in_a_list():
    profile = customise(PROFILES["tiny"], ["strengths.laplace=[1e-5]"])
    assert profile.strengths["laplace"] == [1e-5]
