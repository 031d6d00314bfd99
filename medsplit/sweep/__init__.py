"""Sweeps: train a grid of configurations over the cut or the number of clients, then report.

A sweep point is one training run: (axis value, protocol, partition, seed) for the split
protocols, plus the unsplit baselines (centralised, FedAvg): every protocol of the registry
(:data:`medsplit.train.protocols.PROTOCOLS`) can be swept, its flags say which are
baselines. Each point is an ordinary :func:`medsplit.train.loop.train` run with its own
name under the sweep's folder, so a sweep is resumable point by point:

* a point whose ``metrics.json`` exists is finished and is read back, not rerun (its
  checkpoint is deleted once it finishes; the selected weights stay in ``model.safetensors``);
* a point with a checkpoint but no metrics was interrupted and is resumed;
* a point that raises is recorded as failed (with its error) and the sweep goes on; the
  next invocation retries it;
* ``--report-only`` trains nothing: it writes the report from the points finished so far and
  lists the others as "not run" (to look at a long sweep while it runs, or to report one
  that ran out of time honestly);
* ``--jobs N`` trains N points side by side, each in its own process with its share of the
  cores, and reports each as it finishes.

At the end one HTML report (``<reports_dir>/sweep-<axis>-<task>.html``) and a JSON summary
beside it are written: the test metric (AUC for retinopathy, Dice for lungs) as mean and
standard deviation over seeds against the axis, bytes per epoch, wall time, and a table
of every point.

One module per concept: :mod:`~medsplit.sweep.plan` (the points and their configs),
:mod:`~medsplit.sweep.run` (training, resuming, the worker pool, :func:`run_sweep`),
:mod:`~medsplit.sweep.summarise` (what is kept of a run, means over seeds) and
:mod:`medsplit.report.sweep_report` (the HTML and JSON). The command line is in
:mod:`medsplit.cli` (``add_sweep_parser``, ``run_sweep_command``)::

    python -m medsplit sweep configs/sweep-cut-retinopathy.yaml --axis cut --values 1,3,5 \\
        --seeds 0,1 --protocols sequential,splitfed --partitions iid,dirichlet [key=value ...]
"""

from medsplit.original_study import ORIGINAL_STUDY
from medsplit.sweep.plan import (
    AXES,
    PARTITIONS,
    SweepPoint,
    baseline_protocols,
    plan_points,
    pooled_protocols,
    split_protocols,
)
from medsplit.sweep.run import (
    check_run_matches,
    read_metrics,
    run_sweep,
    threads_per_job,
    train_points,
)
from medsplit.sweep.summarise import (
    client_mix,
    compare_to,
    mean_std,
    seed_groups,
    summarise_run,
)

__all__ = [
    "AXES",
    "ORIGINAL_STUDY",
    "PARTITIONS",
    "SweepPoint",
    "baseline_protocols",
    "check_run_matches",
    "client_mix",
    "compare_to",
    "mean_std",
    "plan_points",
    "pooled_protocols",
    "read_metrics",
    "run_sweep",
    "seed_groups",
    "split_protocols",
    "summarise_run",
    "threads_per_job",
    "train_points",
]
