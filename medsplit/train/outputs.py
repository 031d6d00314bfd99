"""What a finished run leaves for people: an HTML report and a metrics JSON in
``reports/`` (TensorBoard scalars and the checkpoint stay in the run directory). What the run
was (task, protocol, cut, hospitals, name) comes from its run record; the few settings the
report needs besides are arguments, so this module never reads the config."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from medsplit import __version__
from medsplit.atomic import write_atomic
from medsplit.train.console import final_line
from medsplit.train.records import json_default
from medsplit.uncertainty import test_intervals


def write_outputs(run_dir: Path, reports_dir: Path, result: dict, task, model, seed: int, config_yaml: str,
                  keep_checkpoint: bool, quiet: bool = False) -> Path:
    """Add the test intervals to ``result`` (the run record) and write it, with the HTML report.

    Args:
        run_dir: the run folder (its ``metrics.json`` is rewritten with the intervals).
        reports_dir: ``output.reports_dir``: the report and a copy of the metrics go there.
        result: the run record (:func:`medsplit.train.records.run_record`).
        task: the run's task (test split, report examples, metric names).
        model: the tested model (the report's example images).
        seed: ``train.seed``: seeds the intervals' bootstrap.
        config_yaml: the resolved config as YAML, shown in the report.
        keep_checkpoint: ``output.keep_checkpoint``: whether the report lists ``checkpoint.pt``.
        quiet: print nothing.
    """
    reports = Path(reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    name = result["run"]
    result["test_intervals"] = _test_intervals(task, result["test"], seed)
    # metrics.json gains the intervals; the reports copy is the same file.
    text = json.dumps(result, indent=2, default=json_default)
    write_atomic(run_dir / "metrics.json", text)
    write_atomic(reports / f"{name}.json", text)
    record = dict(result)
    record.update({
        "title": f"medsplit {result['task']}: {result['protocol']}" + (f", CUT={result['cut']}" if result["cut"] is not None else "") + f", {result['clients']} client(s)",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "medsplit_version": __version__,
        "config_yaml": config_yaml,
        # listed as the run will leave its folder: a checkpoint it deletes at its end is not shown
        "artifacts": run_artifacts(run_dir, reports / f"{name}.json", removed=() if keep_checkpoint else ("checkpoint.pt",)),
    })
    examples = task.report_examples(model, result["test"])
    if examples is not None:
        record["examples"] = examples
    # The report draws with matplotlib, which takes a third of a second to import: only the
    # process that writes the report (one per run) pays for it, not every party process.
    from medsplit.report.run_report import build_run_report

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
