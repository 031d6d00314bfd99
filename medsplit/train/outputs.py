"""What a finished run leaves for people: an HTML report and a metrics JSON in
``reports/`` (TensorBoard scalars and the checkpoint stay in the run directory)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from medsplit import __version__
from medsplit.atomic import write_atomic
from medsplit.config import Config
from medsplit.report.run_report import build_run_report
from medsplit.train.console import final_line
from medsplit.train.records import json_default
from medsplit.uncertainty import test_intervals


def write_outputs(cfg: Config, run_dir: Path, result: dict, task, model, quiet: bool = False) -> Path:
    reports = Path(cfg.output.reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    name = cfg.run_name()
    result["test_intervals"] = _test_intervals(task, result["test"], cfg.train.seed)
    # metrics.json gains the intervals; the reports copy is the same file.
    text = json.dumps(result, indent=2, default=json_default)
    write_atomic(run_dir / "metrics.json", text)
    write_atomic(reports / f"{name}.json", text)
    record = dict(result)
    record.update({
        "title": f"medsplit {cfg.task}: {cfg.split.protocol}" + (f", CUT={result['cut']}" if result["cut"] is not None else "") + f", {cfg.split.clients} client(s)",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "medsplit_version": __version__,
        "config_yaml": cfg.to_yaml(),
        # listed as the run will leave its folder: a checkpoint it deletes at its end is not shown
        "artifacts": run_artifacts(run_dir, reports / f"{name}.json", removed=() if cfg.output.keep_checkpoint else ("checkpoint.pt",)),
    })
    examples = task.report_examples(model, result["test"])
    if examples is not None:
        record["examples"] = examples
    # Both written atomically: a kill mid-write leaves the previous report, never half of one.
    html = write_atomic(reports / f"{name}.html", build_run_report(record).render())
    if not quiet:
        print(f"report: {html}\nmetrics: {reports / f'{name}.json'}\nrun: {run_dir}")
        # last, so the line a person reads first after a run is the result
        print(final_line(result, task.summarise(result["test"]), result["test_intervals"], task.select_metric))
    return html


#: What each file of a run directory is, for the report's list of artifacts.
RUN_FILES = {
    "config.yaml": "the resolved configuration (what --resume and evaluate read)",
    "metrics.json": "every number in the report: history, test metrics and intervals, bytes",
    "model.safetensors": "weights of the tested model (the selected epoch); what evaluate loads",
    "checkpoint.pt": "state after the last epoch, with optimiser state, for --resume",
    "tb": "TensorBoard logs: scalars per epoch, hparams, test metrics, example images (tensorboard --logdir <run directory>/tb)",
}


def run_artifacts(run_dir: Path, metrics_copy: Path, removed: tuple[str, ...] = ()) -> dict:
    """The run directory and the files in it now (size in MB), named relative to it, less the
    ``removed`` ones the run deletes before it ends."""
    files = {}
    for name, what in RUN_FILES.items():
        path = run_dir / name
        if name in removed:
            continue
        if path.is_dir():
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        elif path.exists():
            size = path.stat().st_size
        else:
            continue
        files[name + ("/" if path.is_dir() else "")] = {"what": what, "MB": size / 1e6}
    return {"run_dir": str(run_dir), "files": files, "metrics_copy": str(metrics_copy)}


def _test_intervals(task, test: dict, seed: int) -> dict | None:
    """95% patient-level bootstrap intervals of the test metrics (see medsplit.uncertainty)."""
    part = task.split("test")
    patients = getattr(part, "patients", None)
    patient_of = dict(zip(part.ids, patients)) if patients else None
    return test_intervals(test, patient_of, seed=seed)
