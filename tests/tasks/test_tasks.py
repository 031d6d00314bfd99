"""The task registry: what a task class answers, that the rest of the code asks it instead of
comparing task names, and that a newly registered task runs through the task-agnostic code."""

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import medsplit
from medsplit.config import load_config
from medsplit.evaluate import compare_to_internal
from medsplit.report.index import run_headline
from medsplit.tasks import (
    TASKS,
    Batch,
    Task,
    TaskSettings,
    make_task,
    register_task,
    task_class,
    task_model,
    task_of_record,
)
from medsplit.train.loop import check_cut, evaluate_split
from medsplit.train.server_view import batch_spec, server_loss, server_table

TINY = ["data.source=synthetic", "data.synthetic_size=40", "data.img_size=32", "train.epochs=1", "output.tensorboard=false"]

#: Files where task names may still be compared: the task modules themselves, and sweep.py, which
#: helper "sweep" of issue 16 splits (the coordinator removes it from this list after that merge).
ALLOWED = {"tasks"}


def _cfg(tmp_path, task, *extra):
    model = "resnet18" if task == "retinopathy" else "unet-classic"
    return load_config(None, [f"task={task}", f"model.name={model}", *TINY, f"data.cache_dir={tmp_path}/cache", *extra])


def _settings(tmp_path, task, *extra):
    return TaskSettings.from_config(_cfg(tmp_path, task, *extra))


def test_registry_lists_both_tasks_with_their_interface():
    assert set(TASKS) == {"retinopathy", "lungs"}
    for name, cls in TASKS.items():
        assert cls.name == name and task_class(name) is cls
        assert isinstance(cls.metric_label, str) and isinstance(cls.primary_metric, str)
        assert cls.primary_metric in cls.headline
        assert isinstance(cls.labels_may_cross, bool) and cls.in_channels in (1, 3)
    assert (TASKS["retinopathy"].metric_label, TASKS["lungs"].metric_label) == ("AUC", "Dice")
    assert (TASKS["retinopathy"].primary_metric, TASKS["lungs"].primary_metric) == ("auc", "dice")
    # the classifier's server holds the labels; the U-shaped lung split keeps the masks home
    assert TASKS["retinopathy"].labels_may_cross and not TASKS["lungs"].labels_may_cross
    with pytest.raises(ValueError, match=r"unknown task 'eyes'; valid tasks are \['lungs', 'retinopathy'\]"):
        task_class("eyes")


@pytest.mark.parametrize("task", ["retinopathy", "lungs"])
def test_config_alone_gives_the_servers_model_batch_and_loss(tmp_path, task):
    """What the server builds without data agrees with what the hospital's task builds."""
    cfg = _settings(tmp_path, task)
    cls = TASKS[task]
    x, y = batch_spec(cfg, 4)
    assert x.shape == (4, cls.in_channels, 32, 32)
    torch.manual_seed(0)
    server = server_table(cfg)
    torch.manual_seed(0)
    hospital = make_task(cfg, torch.device("cpu"))
    own = hospital.build_table()
    assert server.state_dict().keys() == own.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(server.state_dict().values(), own.state_dict().values()))
    batch = hospital.batch("train", torch.arange(4), train=False, generator=None)
    assert batch.x.shape == x.shape and batch.y.shape == y.shape and batch.y.dtype == y.dtype
    out = own(batch.x)
    assert torch.equal(server_loss(cfg)(out, batch.y), hospital.loss(out, batch.y))


def test_losses_are_the_documented_ones():
    logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    settings = TaskSettings()
    assert torch.equal(TASKS["retinopathy"].loss_function(settings)(logits, labels), F.cross_entropy(logits, labels))
    from monai.losses import DiceLoss

    out, masks = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    expected = DiceLoss(sigmoid=True)(out, masks) + F.binary_cross_entropy_with_logits(out, masks)
    assert torch.equal(TASKS["lungs"].loss_function(TaskSettings(task="lungs", model="unet-smp"))(out, masks), expected)


def test_records_find_their_task():
    assert task_of_record({"task": "lungs", "test": {}}) is TASKS["lungs"]
    assert task_of_record({"test": {"dice": {"mean": 0.9}}}) is TASKS["lungs"]  # older records: no task field
    assert task_of_record({"test": {"auc": 0.7}}) is TASKS["retinopathy"]
    assert task_of_record({}) is TASKS["retinopathy"]  # the config's default task
    assert TASKS["lungs"].judged_by({"dice": {"mean": 0.8}}) == ("mean Dice", 0.8)
    assert TASKS["retinopathy"].judged_by({"auc": None}) == ("AUC", None)


_NAMES = "|".join(sorted(TASKS))
_COMPARISON = re.compile(
    rf"""(==|!=)\s*["']({_NAMES})["']"""            # x == "lungs"
    rf"""|["']({_NAMES})["']\s*(==|!=)"""           # "lungs" == x
    rf"""|\bin\s*[(\[{{][^)\]}}]*["']({_NAMES})["']"""  # x in ("lungs", ...)
)


def _task_name_comparisons(root: Path, allowed: set[str] = ALLOWED) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in allowed or rel.split("/")[0] in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _COMPARISON.search(line):
                found.append(f"{root.name}/{rel}:{n}: {line.strip()}")
    return found


def test_the_pattern_finds_what_it_is_meant_to_find():
    hits = ['if cfg.task == "lungs":', "x = 1 if task != 'retinopathy' else 2", 'if "lungs" == record.get("task"):',
            'if args.task in ("retinopathy", "other"):']
    misses = ['lungs_dir = root / "lungs"', 'TASKS["lungs"].metric_label', 'if "lungs" in path.parts:']
    assert all(_COMPARISON.search(h) for h in hits)
    assert not any(_COMPARISON.search(m) for m in misses)


def test_no_task_name_comparisons_outside_the_task_modules():
    """Code outside medsplit/tasks asks the task class (TASKS[name].something) instead."""
    package = Path(medsplit.__file__).parent
    found = _task_name_comparisons(package)
    if (package.parent / "benchmarks").is_dir():  # a source checkout: its benchmark scripts too
        found += _task_name_comparisons(package.parent / "benchmarks", set())
    assert not found, "task-name comparisons outside the task modules:\n" + "\n".join(found)


@dataclass
class _Split:
    images: torch.Tensor
    labels: torch.Tensor
    ids: list

    def __len__(self):
        return len(self.ids)


class _Accuracy:
    """A metric accumulator written against the TaskMetrics protocol only."""

    def __init__(self):
        self.right = self.n = 0

    def update(self, output, target, ids=None):
        self.right += int((output.argmax(1) == target).sum())
        self.n += len(target)

    def aggregate(self):
        return {"accuracy": self.right / self.n, "n": self.n}


class _TwoSquares(Task):
    """A toy task: is the bright square on the left or the right?"""

    name = "dummy"
    metric_label = "accuracy"
    primary_metric = "accuracy"
    headline = ("accuracy",)
    in_channels = 3

    def __init__(self, settings, data, device):
        super().__init__(settings, data, device)
        self._loss = self.loss_function(settings)

    @classmethod
    def load_data(cls, settings):
        g = torch.Generator().manual_seed(settings.seed)

        def part(n):
            labels = torch.randint(0, 2, (n,), generator=g)
            images = torch.zeros(n, 3, 16, 16, dtype=torch.uint8)
            for i, side in enumerate(labels.tolist()):
                images[i, :, 4:12, side * 8 : side * 8 + 8] = 255
            return _Split(images, labels, [f"img{i}" for i in range(n)])

        return SimpleNamespace(train=part(12), val=part(6), test=part(6), source="toy", synthetic=True)

    @classmethod
    def num_outputs(cls, settings):
        return 2

    @classmethod
    def loss_function(cls, settings):
        return lambda output, target: F.cross_entropy(output.float(), target)

    def batch(self, split, idx, train, generator):
        part = self.split(split)
        return Batch(part.images[idx].float() / 255.0, part.labels[idx], [part.ids[i] for i in idx.tolist()])

    def build_table(self):
        return task_model(self.settings, self.num_outputs(self.settings))

    def new_metrics(self):
        return _Accuracy()

    def summarise(self, metrics):
        return {"accuracy": metrics["accuracy"]}


def test_a_registered_task_runs_through_make_task_and_the_loop(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "dummy", _TwoSquares)
    with pytest.raises(ValueError, match="registered twice"):
        register_task(type("Other", (_TwoSquares,), {}))
    cfg = _cfg(tmp_path, "retinopathy", "split.cut=3")
    cfg.task = "dummy"  # the config's list of task choices is medsplit.config's (checked by train())
    settings = TaskSettings.from_config(cfg)
    task = make_task(settings, torch.device("cpu"))
    assert isinstance(task, _TwoSquares) and task.select_metric == "accuracy"
    check_cut(cfg)  # the cut is checked on the dummy's own model
    model = task.build_table()
    metrics, loss = evaluate_split(model, task, "val", 4, contextlib.nullcontext)
    assert metrics["n"] == 6 and 0 <= metrics["accuracy"] <= 1 and loss > 0
    model.eval()
    with torch.no_grad():  # the server's loss is the dummy's own: the mean over the split agrees
        whole = server_loss(settings)(model(task.batch("val", torch.arange(6), False, None).x), task.split("val").labels)
    assert float(whole) == pytest.approx(loss, rel=1e-5)
    assert compare_to_internal("dummy", {"accuracy": 0.9}, {"accuracy": 0.8})["metric"] == "accuracy"
    assert run_headline({"task": "dummy", "test": {"accuracy": 0.5}}) == {}  # the toy names no index columns
