"""Command line: ``python -m medsplit {train,evaluate,sweep,attack,data,...} ...``.

Every option is either a config key (``key=value`` overrides) or consumed here;
nothing is parsed and ignored.

Only light modules (argparse, the config schema, YAML) are imported before a command runs:
``--help`` of every command and config errors answer in well under a second. The choices of
``attack`` and ``sweep`` come from registries that import torch, so the parsers take them from
:mod:`medsplit.cli_choices`, which knows them without torch; torch, torchmetrics and the attack
code are imported by the command that runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from medsplit import __version__, cli_choices
from medsplit.cli_args import CommandParser, choice_list, int_list, positive_int
from medsplit.config import ConfigError, config_from_dict, default_data_root, keys_help, load_config
from medsplit.config.loading import SHIPPED_CONFIGS, config_path, shipped_config_names
from medsplit.data import download
from medsplit.flare.cli import add_flare_parser, run_flare_command
from medsplit.train.run_folder import check_allowed_changes
from medsplit.yaml_file import load_yaml

DOWNLOADS = ("retinamnist", "kaggle-retinopathy", "kaggle-lungs")
ATTACK_HELP = "attack x defence evaluation; writes an HTML report and JSON in reports/"
SWEEP_HELP = "train a grid over the cut or the number of clients and report mean +- std over seeds"


def _train_epilog() -> str:
    shipped = [n for n in shipped_config_names() if not n.startswith("sweep-")]
    wrap = lambda text: textwrap.fill(text, width=100)  # noqa: E731
    return (
        wrap(f"config files: a YAML file, or the name of a shipped config: {', '.join(shipped) or 'none'} (in "
             f"{SHIPPED_CONFIGS}, linked as configs/ in a checkout; the sweep-*.yaml files are for `medsplit sweep`). "
             "Without a config file the defaults below apply.") + "\n\n"
        "examples:\n  python -m medsplit train retinopathy split.cut=3 split.clients=2\n"
        "  python -m medsplit train configs/unet-seg.yaml data.source=synthetic train.epochs=2\n\n"
        + wrap("settings, as key=default (choices or type): the config file's values replace the defaults, and "
               "key=value arguments replace both.") + "\n" + keys_help()
    )


def _command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word not starting with '-')."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    return _run(args)


def build_parser(command: str | None = None) -> CommandParser:
    """The parser of ``python -m medsplit``; imports no torch.

    Args:
        command: the command named on the command line: ``train`` adds its long settings
            epilog, and only ``party`` (internal, not listed) adds the ``party`` command.
    """
    parser = CommandParser(prog="medsplit", description="Healthcare split-learning benchmark.")
    parser.add_argument("--version", action="version", version=f"medsplit {__version__}",
                        help="print medsplit's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; `medsplit COMMAND --help` explains it")

    p = sub.add_parser("train", help="train one configuration and write its report",
                       description="Train one configuration and write its HTML report and metrics JSON.",
                       epilog=_train_epilog() if command == "train" else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config file or a shipped config's name, e.g. configs/retinopathy.yaml "
                                             "or retinopathy (optional; see below)")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. split.cut=3 split.clients=2 (listed below)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a run folder that already holds a run (its files are removed)")
    p.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                   help="with --resume: let KEY differ from the run's saved config (given as a key=value override), "
                        "e.g. --resume RUN_DIR train.epochs=20 --allow-change train.epochs; repeatable")

    p = sub.add_parser("serve", help="run the server of a multi-process run (split.transport=gloo) on this machine")
    p.add_argument("config", help="YAML config file (every party must use the same settings)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.add_argument("--address", default="127.0.0.1:29500", help="HOST:PORT to bind (only this address; default loopback)")
    p.add_argument("--clients", type=int, default=None, help="number of hospitals that will join (default split.clients; "
                   "each join must have the same split.clients)")
    p.add_argument("--run-dir", default=None, help="where the server keeps its checkpoints (default runs/<run name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint (every party must resume)")

    p = sub.add_parser("join", help="run one hospital of a multi-process run, on its own data folder")
    p.add_argument("config", help="YAML config file (the same settings as the server's; data paths may differ)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.add_argument("--address", required=True, help="HOST:PORT of the server")
    p.add_argument("--rank", type=int, required=True, help="this hospital's rank, 1..K (hospital client{rank-1})")
    p.add_argument("--data", required=True, help="this hospital's own data folder (any supported layout); all of its training rows are used")
    p.add_argument("--run-dir", default=None, help="where this hospital keeps its checkpoints and (if it evaluates) the report")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint (every party must resume)")
    p.add_argument("--rejoin", action="store_true", help="this hospital left a run that goes on without it "
                   "(split.min_hospitals): rejoin it at the next epoch's start with the current weights")

    if command == "party":  # internal, so not listed: what `train` with split.transport=gloo starts, one per party
        p = sub.add_parser("party", description="Internal: one party of a run that `medsplit train` launched "
                                                "with split.transport=gloo.")
        p.add_argument("config", help="the run's resolved config (YAML written by the launcher)")
        p.add_argument("--rank", type=int, required=True, help="0 for the server, k for hospital client{k-1}")
        p.add_argument("--address", required=True, help="HOST:PORT of the server's rendezvous")
        p.add_argument("--run-dir", required=True, help="the run folder")
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        p.add_argument("--rejoin", action="store_true", help="this hospital restarted: rejoin the running run at an epoch's start")

    p = sub.add_parser("evaluate", help="score a trained run on a dataset (external validation)")
    p.add_argument("run_dir", help="a finished run folder (config.yaml, model.safetensors, metrics.json), "
                                    "e.g. runs/retinopathy-sequential-cut3-clients2-seed0")
    p.add_argument("--data", required=True, help="dataset folder, .npz, or a source name (eyepacs, retinamnist, ...)")
    p.add_argument("--out", required=True, help="where to write the metrics JSON")
    p.add_argument("--labels", default=None, help="fundus: a labels CSV (image,level) for a plain image folder given by --data")
    p.add_argument("--report", default=None, help="also write a Markdown report: the external metric against the run's own test metric")
    p.add_argument("--device", default="auto", help="auto (cuda when a GPU is present, else cpu), cpu, cuda or cuda:N "
                                                     "(default auto)")

    p = sub.add_parser("data", help="download datasets into $MEDSPLIT_DATA (needs network; Kaggle needs credentials)")
    # Checked by hand: Python 3.11's argparse rejects an empty list against ``choices``.
    p.add_argument("what", nargs="*", help=f"what to download: any of {', '.join(DOWNLOADS)} (default: all)")
    p.add_argument("--root", default=None, help="data root (default: $MEDSPLIT_DATA or datasets/)")

    add_sweep_parser(sub)
    add_attack_parser(sub)
    add_flare_parser(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            from medsplit.evaluate import evaluate_run  # imports torch: --help and config errors answer without it

            evaluate_run(Path(args.run_dir), args.data, Path(args.out), device=args.device, labels=args.labels,
                         report=Path(args.report) if args.report else None)
            return 0
        if args.command == "data":
            return _data(args)
        if args.command in ("serve", "join", "party"):
            return _party(args)
        if args.command == "sweep":
            return run_sweep_command(args)
        if args.command == "attack":
            # imports torch: --help and config errors answer without it
            from medsplit.attacks.harness import run_attack_command

            return run_attack_command(args)
        if args.command == "flare":
            return run_flare_command(args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"medsplit {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``sweep`` command to ``subparsers`` (made by a :class:`CommandParser`, so that
    ``key=value`` overrides may follow the options); returns its parser. Imports no torch."""
    try:
        p = subparsers.add_parser("sweep", help=SWEEP_HELP, trailing_overrides="overrides",
                                  description="Train a grid of configurations over the cut or the number of clients, "
                                              "then report mean +- std over seeds. Resumable: rerun the same command "
                                              "to finish or retry.")
    except TypeError as e:
        raise TypeError("add_sweep_parser needs sub-commands of a CommandParser "
                        "(CommandParser(...).add_subparsers(...))") from e
    protocols = cli_choices.sweep_protocols()
    partitions = cli_choices.SWEEP_PARTITIONS
    p.add_argument("config", help="YAML training config every run starts from (configs/sweep-*.yaml, or a shipped "
                                  "config's name such as sweep-cut-retinopathy)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run, e.g. train.epochs=2")
    p.add_argument("--axis", required=True, choices=cli_choices.SWEEP_AXES,
                   help="what varies: the cut or the number of clients")
    p.add_argument("--values", required=True, type=int_list, help="comma-separated cuts or client counts, e.g. 1,3,5")
    p.add_argument("--seeds", type=int_list, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument("--protocols", type=choice_list(protocols), default=["sequential"],
                   help=f"comma-separated split protocols from {','.join(protocols)} (default sequential)")
    p.add_argument("--partitions", type=choice_list(partitions), default=["iid"],
                   help=f"comma-separated partitions from {','.join(partitions)} (default iid)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help=f"skip the baselines ({', '.join(cli_choices.sweep_baselines())})")
    p.add_argument("--out", default=None, help="folder for the runs (default <output.runs_dir>/sweeps/<axis>-<task>)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="points trained side by side, each in its own process with cpu_count/jobs threads "
                        "(default 1; on a 2-core CPU, 2 finishes a sweep sooner)")
    p.add_argument("--verbose", action="store_true", help="show every run's progress bars (with --jobs 1)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the finished points and list the others as not run")
    return p


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run the sweep the parsed arguments describe; 0 when every run finished, 1 when some failed."""
    from medsplit.sweep import run_sweep  # imports torch once a point trains: `sweep --help` answers without it

    base = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path(base.output.runs_dir) / "sweeps" / f"{args.axis}-{base.task}"
    html = run_sweep(config_path(args.config), args.axis, args.values, args.seeds, args.protocols, args.partitions,
                     args.baselines, out, list(args.overrides), quiet=not args.verbose, report_only=args.report_only,
                     jobs=args.jobs)
    summary = json.loads(html.with_suffix(".json").read_text())
    failed = summary["headline"]["failed"]
    print(f"report: {html}\nsummary: {html.with_suffix('.json')}\nruns: {out}")
    if failed:
        print(f"{failed} run(s) failed; see the report. Rerun the same command to retry them.")
    return 1 if failed else 0


def _train(args) -> int:
    # medsplit.train.loop imports torch (seconds): only once the config is known to be good.
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"--resume {run_dir}: no config.yaml there; is it a medsplit run directory?")
        # argparse puts the first key=value into the config slot; with --resume every item is an override.
        overrides = ([args.config] if args.config else []) + list(args.overrides)
        if any("=" not in item for item in overrides):
            raise ConfigError("--resume continues a run with its saved config; do not pass a config file "
                              "(key=value overrides go with --allow-change KEY)")
        if overrides and not args.allow_change:
            raise ConfigError("--resume with overrides needs --allow-change for each key changed (e.g. "
                              "--allow-change train.epochs); anything else would mix two configs in one run")
        allow = check_allowed_changes(args.allow_change)
        try:
            cfg = load_config(saved, overrides)
        except ConfigError as e:
            raise ConfigError(f"{saved}: {e}") from e
        from medsplit.train.loop import train  # imports torch: only once the config is known to be good

        train(cfg, resume=run_dir, allow_change=allow)
        return 0
    if args.allow_change:
        raise ConfigError("--allow-change only applies with --resume RUN_DIR")
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():  # argparse took the first override for the file
        config, overrides = None, [config, *overrides]
    cfg = load_config(config, overrides)
    from medsplit.train.loop import train  # imports torch: only once the config is known to be good

    train(cfg, overwrite=args.overwrite)
    return 0


def _party(args) -> int:
    """One party in this process (``serve``, ``join``, or the launcher's ``party``). Exits the
    process directly: after a failure torch.distributed's threads must not keep it alive."""
    from medsplit.train.parties import run_party  # imports torch: --help and config errors answer without it

    code = 0
    try:
        if args.command == "party":
            cfg = config_from_dict(load_yaml(Path(args.config).read_text()))
            run_party(cfg, args.rank, Path(args.run_dir), address=args.address, resume=args.resume, quiet=False,
                      rejoin=args.rejoin)
        else:
            overrides = list(args.overrides) + ["split.transport=gloo", f"split.address={args.address}"]
            if args.command == "serve":
                if args.clients is not None:
                    if args.clients < 1:
                        raise ConfigError(f"--clients {args.clients}: at least one hospital must join")
                    overrides.append(f"split.clients={args.clients}")
                rank, own_data = 0, False
            else:
                overrides.append(f"data.source={args.data}")
                rank, own_data = args.rank, True
                if rank < 1:
                    raise ConfigError(f"--rank {rank}: hospitals take ranks 1..K (rank 0 is the server)")
            cfg = load_config(args.config, overrides)
            run_dir = Path(args.run_dir) if args.run_dir else Path(cfg.output.runs_dir) / cfg.run_name()
            run_party(cfg, rank, run_dir, own_data=own_data, resume=args.resume, quiet=False,
                      rejoin=getattr(args, "rejoin", False))  # join only: the server cannot rejoin
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the process exits
        print(f"medsplit {args.command}: error: {e}", file=sys.stderr, flush=True)
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _data(args) -> int:
    root = Path(args.root) if args.root else default_data_root()
    jobs = {
        "retinamnist": download.download_retinamnist,
        "kaggle-retinopathy": download.download_kaggle_retinopathy,
    }
    unknown = [w for w in args.what if w not in DOWNLOADS]
    if unknown:
        raise ValueError(f"cannot download {unknown}; valid choices are {list(DOWNLOADS)}")
    failures = 0
    for what in args.what or DOWNLOADS:
        try:
            if what == "kaggle-lungs":
                path = download.download_kaggle_lungs(root)
            else:
                path = jobs[what](root)
            print(f"{what}: ready at {path}")
        except Exception as e:  # one missing credential must not stop the other downloads
            failures += 1
            print(f"{what}: not downloaded: {e}", file=sys.stderr)
    return 1 if failures else 0


def add_attack_parser(subparsers) -> None:
    """The ``attack`` command's options; its choices are the attack, defence, task and profile
    registries', read without importing torch (:mod:`medsplit.cli_choices`)."""
    attacks, aliases = cli_choices.attack_names(), cli_choices.attack_aliases()
    p = subparsers.add_parser("attack", help=ATTACK_HELP, description="Run attacks against split training, with and "
                              "without defences, and write an HTML report and JSON.")
    p.add_argument("--profile", choices=cli_choices.ATTACK_PROFILES, default=None,
                   help="tiny (tests), reduced (CPU default), paper-cpu (FSHA at the paper's length and learning "
                        "rates, on a CPU), full (GPU default)")
    p.add_argument("--task", choices=cli_choices.ATTACK_TASKS, default="lungs",
                   help="lungs: covid-cxr-v7, the U-Net cut U-shaped, the masks never leave the hospital (default); "
                        "retinopathy: EyePACS, a ResNet-18 cut in two, the labels cross to the server; "
                        "lungs-label-sharing: the lung control cut in two, the masks sent to the server")
    p.add_argument("--device", choices=cli_choices.ATTACK_DEVICES, default="auto",
                   help="auto (cuda when a GPU is present, else cpu), cpu, or cuda (an error without a GPU)")
    p.add_argument("--attacks", default=",".join(attacks),
                   help=f"comma-separated from {','.join(attacks)} (aliases: "
                        f"{', '.join(f'{a} = {n}' for a, n in aliases.items())}; default all)")
    p.add_argument("--defences", default=None,
                   help=f"comma-separated from {','.join(cli_choices.defence_names())} (default: all of the profile)")
    p.add_argument("--data-root", default=None, help="data folder holding lungs/ and retinopathy/ (default: $MEDSPLIT_DATA, else datasets/)")
    p.add_argument("--out", default="reports", help="report folder (default reports)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log every row's numbers and the reconstruction grids to TensorBoard (<out>/tb/<report name>)")
    p.add_argument("--mlflow", default="", metavar="URI",
                   help="also log the numbers, the reconstruction grids, the report and its JSON to this MLflow tracking "
                        "URI (e.g. file:///data/mlruns; pip install 'medsplit[mlflow]')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one field of the profile, e.g. --set fsha.iterations=3000 --set img_size=96 "
                        "--set cut_lungs=2 (repeatable; the report is then named after the profile plus '-custom', "
                        "or after --set name=...)")


if __name__ == "__main__":
    sys.exit(main())
