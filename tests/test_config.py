import pytest

from medsplit.config import ConfigError, config_from_dict, load_config


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("task: retinopathy\nsplit:\n  cut: 5\ntrain:\n  lr: 0.01\n")
    cfg = load_config(p, ["split.clients=3", "train.lr=1e-4", "data.max_images=null", "data.source=/some/folder"])
    assert cfg.split.cut == 5 and cfg.split.clients == 3
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.data.max_images is None and cfg.data.source == "/some/folder"


def test_resolved_config_round_trips():
    cfg = load_config(None, ["split.cut=7", "data.max_images=100"])
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("split.cutt=3", r"unknown config key 'split.cutt'; valid keys under split are \['address', 'clients', 'compress_activations', 'compress_gradients', 'cut', 'optimizer_handover', 'protocol', 'serialise', 'timeout_s', 'transport'\]"),
        ("colour=red", r"unknown config key 'colour'"),
        ("split.cut=three", r"config key 'split.cut' must be int, got 'three'"),
        ("train.amp=3", r"config key 'train.amp' must be bool"),
        ("split.protocol=ring", r"config key 'split.protocol' is 'ring'; valid choices are \['sequential', 'splitfed', 'splitfed-v1', 'centralised', 'fedavg'\]"),
        ("split.clients=0", r"'split.clients' = 0 must be >= 1"),
        ("nonsense", r"must look like key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_shipped_configs_are_valid():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        load_config(path)
