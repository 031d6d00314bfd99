"""medsplit's Python API: what ``python -m medsplit`` does, as functions that return results.

    import medsplit

    cfg = medsplit.load_config("retinopathy", split__cut=3, train__epochs=2)   # a shipped config by name
    run = medsplit.train(cfg, data__source="synthetic")                        # trains, writes the report
    run.metrics["auc"], run.intervals["auc"], run.paths["report"]
    external = medsplit.evaluate(run, "datasets/retinopathy/messidor")          # external validation
    report = medsplit.attack("lungs", profile="tiny", attacks=["fsha"], defences=["none"])

Settings are the config's keys (``python -m medsplit train --help`` lists them all), given in
any of three ways: ``split__cut=3`` (a double underscore for each dot), ``split={"cut": 3}``
(a section as a dict) or ``**{"split.cut": 3}``. Values are Python values, checked against the
schema like a config file's (an unknown key names the key and suggests the closest).

Everything here is importable without torch; torch is imported when something trains, scores
or attacks. The functions are re-exported by :mod:`medsplit` on first use (PEP 562), so
``import medsplit`` stays fast.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medsplit.config import Config, config_from_dict
from medsplit.config.loading import config_with
from medsplit.config.loading import load_config as _load_config_file
from medsplit.yaml_file import load_yaml

__all__ = ["RunResult", "attack", "evaluate", "load_config", "train"]


def load_config(config: str | Path | Config | None = None, /, **overrides: Any) -> Config:
    """A checked :class:`~medsplit.config.Config`.

    Args:
        config: a YAML file, a shipped config's name (``"retinopathy"``, ``"unet-seg"``,
            ``"eyepacs"`` ...: ``medsplit/configs/<name>.yaml``), a ``Config`` (copied, not
            changed), or ``None`` for the defaults.
        **overrides: settings on top (see the module docstring): ``split__cut=3``,
            ``split={"cut": 3}`` or ``**{"split.cut": 3}``.

    Raises:
        ConfigError: an unknown key, a wrong type or a value out of range; the message names the key.
    """
    settings = _dotted(overrides)
    if isinstance(config, Config):
        return config_with(config, settings)
    return _load_config_file(config, settings)


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"split__cut": 3, "train": {"epochs": 2}}`` -> ``{"split.cut": 3, "train.epochs": 2}``."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        key = key.replace("__", ".")
        if isinstance(value, dict):
            flat.update(_dotted({f"{key}.{k}": v for k, v in value.items()}))
        else:
            flat[key] = value
    return flat


@dataclass(frozen=True)
class RunResult:
    """A finished training run, read back from the files it wrote.

    Attributes:
        run_dir: the run folder (``config.yaml``, ``metrics.json``, ``model.safetensors``).
        config: the run's resolved config.
        metrics: test metrics of the model selected on validation (e.g. ``auc``, ``sensitivity``
            for retinopathy; ``dice``, ``hd95`` for lungs).
        intervals: their 95% patient-level bootstrap intervals, ``{metric: {"low", "high", ...}}``
            (``None`` when the run has none).
        history: one row per epoch and hospital (``train_loss``) and per epoch for all
            (``val_loss``, ``val_<metric>``, ``lr``, ``seconds``).
        paths: the files a person opens: ``run_dir``, ``config``, ``metrics``, ``weights``, and
            ``report`` / ``report_json`` (in ``output.reports_dir``) when they exist.
        summary: everything ``metrics.json`` holds (bytes per link, data summary, device, ...).
    """

    run_dir: Path
    config: Config
    metrics: dict
    intervals: dict | None
    history: list[dict]
    paths: dict[str, Path] = field(default_factory=dict)
    summary: dict = field(default_factory=dict, repr=False)

    @property
    def selected_epoch(self) -> int | None:
        """The epoch whose weights were tested (chosen on validation)."""
        return self.summary.get("selected_epoch")

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        """Read a finished run folder (one trained by :func:`train` or ``python -m medsplit train``).

        Raises:
            FileNotFoundError: the folder lacks ``config.yaml`` or ``metrics.json`` (not a
                medsplit run, or one that has not finished: continue it with ``--resume``).
        """
        run_dir = Path(run_dir)
        for name in ("config.yaml", "metrics.json"):
            if not (run_dir / name).is_file():
                raise FileNotFoundError(f"{run_dir} is not a finished medsplit run (no {name})")
        config = config_from_dict(load_yaml((run_dir / "config.yaml").read_text()))
        summary = json.loads((run_dir / "metrics.json").read_text())
        reports = Path(config.output.reports_dir)
        candidates = {"run_dir": run_dir, "config": run_dir / "config.yaml", "metrics": run_dir / "metrics.json",
                      "weights": run_dir / "model.safetensors", "report": reports / f"{summary.get('run')}.html",
                      "report_json": reports / f"{summary.get('run')}.json"}
        paths = {name: path for name, path in candidates.items() if path.exists()}
        return cls(run_dir=run_dir, config=config, metrics=summary.get("test", {}),
                   intervals=summary.get("test_intervals"), history=summary.get("history", []), paths=paths,
                   summary=summary)


class _ModuleNamedFunction:
    """An API function that shares its name with a module of the package: ``medsplit.train`` is
    also the subpackage ``medsplit.train``, ``medsplit.evaluate`` the module ``medsplit.evaluate``.
    Calling it calls the function; any other attribute is the module's, so
    ``medsplit.train.loop`` and ``import medsplit.train.loop as loop`` keep working (medsplit's
    ``__init__`` keeps the import system from replacing the function by the module)."""

    def __init__(self, function, module: str):
        functools.update_wrapper(self, function)
        self._module = module

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module(self._module), name)

    def __repr__(self) -> str:
        return f"<medsplit function {self.__name__}{_signature(self.__wrapped__)}>"


def _signature(function) -> str:
    return str(inspect.signature(function))


def train(config: str | Path | Config | None = None, /, *, resume: str | Path | None = None,
          allow_change: tuple[str, ...] = (), overwrite: bool = False, quiet: bool = False,
          **overrides: Any) -> RunResult:
    """Train one configuration, test the model selected on validation, write the run folder and
    the report; returns the finished run.

    Args:
        config: as for :func:`load_config` (a file, a shipped config's name, a ``Config``, or
            ``None`` for the defaults; with ``resume``, ``None`` is the run's saved config).
        resume: a run folder to continue from its last checkpoint.
        allow_change: with ``resume``: keys that may differ from the run's saved config, e.g.
            ``("train.epochs",)`` with ``train__epochs=20`` to train a finished run on (it must
            have kept its checkpoint: ``output__keep_checkpoint=True``).
        overwrite: start afresh in a run folder that already holds a run (its files are removed).
        quiet: no progress bars or summary lines.
        **overrides: settings on top, e.g. ``split__cut=3, train__epochs=2``.

    Example::

        run = medsplit.train("retinopathy", data__source="synthetic", train__epochs=1)
        print(run.metrics["auc"], run.paths["report"])
    """
    if resume is not None:
        resume = Path(resume)
        cfg = load_config(resume / "config.yaml" if config is None else config, **overrides)
        run_dir = _run_training(cfg, resume=resume, allow_change=tuple(allow_change), quiet=quiet)
    else:
        if allow_change:
            raise ValueError("allow_change only applies with resume=RUN_DIR")
        run_dir = _run_training(load_config(config, **overrides), overwrite=overwrite, quiet=quiet)
    return RunResult.load(run_dir)


def _run_training(cfg: Config, **options) -> Path:
    """The one place the API starts training: the runner's public ``train`` (returns the run folder)."""
    from medsplit.train.loop import train as run  # imports torch: only once training starts

    return Path(run(cfg, **options))


def evaluate(run: RunResult | str | Path, data: str | Path, /, *, out: str | Path | None = None,
              labels: str | Path | None = None, report: str | Path | None = None, device: str = "auto") -> dict:
    """Score a finished run on another dataset (external validation), as
    ``python -m medsplit evaluate`` does.

    Args:
        run: a :class:`RunResult` or a run folder.
        data: a dataset folder, a RetinaMNIST ``.npz`` or a source name (``eyepacs``,
            ``retinamnist``; a lung set name under ``$MEDSPLIT_DATA/lungs``).
        out: the result JSON (default ``<run_dir>/external/<data name>.json``).
        labels: fundus only: a labels CSV (``image,level``) for a plain image folder.
        report: also write a Markdown report (external metric against the run's own test metric).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        ``{"metrics", "intervals", "comparison", "n", "data", ...}``: ``comparison`` holds the
        run's internal test metric, the external one and the drop between them.
    """
    from medsplit.evaluate import evaluate_run  # imports torch: only once an evaluation starts

    run_dir = run.run_dir if isinstance(run, RunResult) else Path(run)
    if out is None:
        name = Path(str(data)).stem or "external"
        out = run_dir / "external" / f"{name}.json"
    return evaluate_run(run_dir, str(data), Path(out), device=device, labels=str(labels) if labels else None,
                        report=Path(report) if report else None)


def attack(task: str = "lungs", *, profile: str | None = None, attacks: list[str] | None = None,
           defences: list[str] | None = None, device: str = "auto", data_root: str | Path | None = None,
           out: str | Path = "reports", tensorboard: bool = False, mlflow: str = "", **settings: Any) -> Path:
    """Run attacks on split training, with and without defences, and write the HTML report and
    its JSON summary (beside it), as ``python -m medsplit attack`` does; returns the report's path.

    Args:
        task: ``lungs`` (U-shaped split U-Net), ``retinopathy`` (split ResNet-18) or
            ``lungs-label-sharing`` (the lung control cut in two).
        profile: ``tiny``, ``reduced`` (CPU default), ``paper-cpu`` or ``full`` (GPU default).
        attacks: attack names (default all: ``fsha``, ``inversion``, ``label-leakage``, ``sdar``).
        defences: defence names (default the profile's; ``none`` is the undefended baseline).
        device: ``auto``, ``cpu`` or ``cuda``.
        data_root: folder holding ``lungs/`` and ``retinopathy/`` (default ``$MEDSPLIT_DATA``,
            else ``datasets/``).
        out: the report folder.
        tensorboard: also log the rows and reconstruction grids to TensorBoard (``<out>/tb/<report>``).
        mlflow: an MLflow tracking URI to log the rows, grids, report and JSON to (empty: none).
        **settings: profile fields, as ``--set`` takes them: ``fsha__iterations=3000``,
            ``img_size=96``.
    """
    from medsplit.attacks.harness import run_attack  # imports torch: only once an attack starts

    overrides = [f"{key}={_yaml_scalar(value)}" for key, value in _dotted(settings).items()]
    return run_attack(task, profile=profile, attacks=attacks, defences=defences, device=device, data_root=data_root,
                      out=out, overrides=overrides, tensorboard=tensorboard, mlflow=mlflow)


def _yaml_scalar(value: Any) -> str:
    """A Python value as the YAML text a ``--set KEY=VALUE`` override reads back to the same value."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


# Last: the plain functions above are what these wrap.
train = _ModuleNamedFunction(train, "medsplit.train")
evaluate = _ModuleNamedFunction(evaluate, "medsplit.evaluate")
