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
        ("split.cutt=3", r"unknown config key 'split.cutt'; did you mean 'split.cut'\? valid keys under split are \['address', 'clients', 'compress_activations', 'compress_gradients', 'cut', 'dropout', 'microbatches', 'min_hospitals', 'optimizer_handover', 'protocol', 'secret_file', 'serialise', 'timeout_s', 'transport'\]"),
        ("colour=red", r"unknown config key 'colour'"),
        ("split.cut=three", r"config key 'split.cut' must be int, got 'three'"),
        ("train.amp=3", r"config key 'train.amp' must be bool"),
        ("split.protocol=ring", r"config key 'split.protocol' is 'ring'; valid choices are \['sequential', 'splitfed', 'splitfed-v1', 'centralised', 'fedavg'\]"),
        ("split.clients=0", r"'split.clients' = 0 must be >= 1"),
        ("train.label_smoothing=1.0", r"'train.label_smoothing' = 1.0 must be in \[0, 1\)"),
        ("train.label_smoothing=-0.1", r"'train.label_smoothing' = -0.1 must be in \[0, 1\)"),
        ("nonsense", r"must look like key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_shipped_configs_are_valid():
    """Every shipped config loads and validates, and every value it writes is the value the run gets."""
    from pathlib import Path

    import yaml

    paths = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(paths) >= 10, paths
    for path in paths:
        cfg = load_config(path).to_dict()

        def check(written: dict, loaded: dict, where: str) -> None:
            for key, value in written.items():
                if isinstance(value, dict):
                    check(value, loaded[key], f"{where}{key}.")
                else:
                    assert loaded[key] == value, f"{path.name}: {where}{key} is {value!r} in the file, {loaded[key]!r} loaded"

        check(yaml.safe_load(path.read_text()), cfg, "")


def test_label_smoothing_needs_class_labels_and_reaches_the_loss():
    import torch
    import torch.nn.functional as F

    from medsplit.tasks import TASKS, TaskSettings

    with pytest.raises(ConfigError, match=r"'train.label_smoothing' = 0.1 needs class labels \(task=lungs"):
        load_config(None, ["task=lungs", "train.label_smoothing=0.1"])
    logits, target = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    loss = TASKS["retinopathy"].loss_function(TaskSettings.from_config(load_config(None, ["train.label_smoothing=0.3"])))(logits, target)
    plain = TASKS["retinopathy"].loss_function(TaskSettings.from_config(load_config(None, [])))(logits, target)
    # by hand: the target is 0.8 on the true class and 0.1 on each other one
    log_p = F.log_softmax(logits, 1)[0]
    assert float(loss) == pytest.approx(float(-(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2])), rel=1e-6)
    assert float(plain) == pytest.approx(float(-log_p[0]), rel=1e-6)
