"""The config is read near the top (issue 26): a task gets a :class:`TaskSettings` of plain
values, and the layers below the runner (tasks, tracking, the epoch's schedule, precision, the
run's outputs, the server's view of the task) take explicit values, never the run's config."""

import ast
import dataclasses
from pathlib import Path

import pytest

import medsplit
from medsplit.config import Config, load_config
from medsplit.tasks import TaskSettings

PACKAGE = Path(medsplit.__file__).parent

#: Modules below the runner: none of them may take the run's config or import its class.
BELOW_THE_RUNNER = [*sorted((PACKAGE / "tasks").glob("*.py")), *sorted((PACKAGE / "tracking").glob("*.py")),
                    *(PACKAGE / "train" / f"{name}.py" for name in ("schedule", "precision", "outputs", "records", "server_view"))]
#: The one place the task layer meets the config: where the runner resolves the settings.
RESOLVER = ("tasks/settings.py", "from_config")


def test_default_settings_are_a_default_configs():
    assert TaskSettings() == TaskSettings.from_config(Config())


def test_every_task_setting_comes_from_its_config_key(tmp_path):
    cfg = load_config(None, [
        "task=lungs", "data.source=synthetic", f"data.root={tmp_path}", "data.img_size=48", "data.val_fraction=0.2",
        "data.test_fraction=0.3", "data.max_images=50", "data.synthetic_size=70", "data.augment=false",
        "data.aug_backend=albumentations", "data.cache_dir=", "data.duplicates=drop", "train.seed=7",
        "model.name=unet-classic", "model.base_channels=8", "train.select_on=jaccard"])
    s = TaskSettings.from_config(cfg)
    assert (s.task, s.source, s.root, s.img_size, s.val_fraction, s.test_fraction) == ("lungs", "synthetic", tmp_path, 48, 0.2, 0.3)
    assert (s.max_images, s.synthetic_size, s.augment, s.aug_backend, s.cache_dir, s.duplicates) == (50, 70, False, "albumentations", None, "drop")
    assert (s.seed, s.model, s.base_channels, s.select_on) == (7, "unet-classic", 8, "jaccard")
    fundus = TaskSettings.from_config(load_config(None, ["data.target=grade", "data.preprocess=local-contrast",
                                                         "data.rotation=right-angles", "train.label_smoothing=0.1",
                                                         "model.weights=w.safetensors", "data.cache_dir=c"]))
    assert (fundus.target, fundus.preprocess, fundus.rotation, fundus.label_smoothing) == ("grade", "local-contrast", "right-angles", 0.1)
    assert (fundus.weights, fundus.cache_dir) == ("w.safetensors", Path("c"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1  # resolved once: a task cannot change what the run was asked to do


def _takes_the_config(fn: ast.FunctionDef) -> bool:
    args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
    return any(a.arg == "cfg" or (a.annotation is not None and "Config" in ast.unparse(a.annotation).split(" | ")) for a in args)


@pytest.mark.parametrize("path", BELOW_THE_RUNNER, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_nothing_below_the_runner_takes_the_config(path):
    rel = path.relative_to(PACKAGE).as_posix()
    tree = ast.parse(path.read_text())
    takers = [fn.name for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) and _takes_the_config(fn)
              and (rel, fn.name) != RESOLVER]
    assert takers == [], f"{rel}: {takers} take the run's config; give them the values they use"
    imports = [a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "medsplit.config"
               for a in node.names]
    if rel != RESOLVER[0]:
        assert "Config" not in imports, f"{rel} imports the run's Config"
