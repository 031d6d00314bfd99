"""Command line: ``python -m medsplit {train,evaluate,sweep,data} ...``.

Every option is either a config key (``key=value`` overrides) or consumed here;
nothing is parsed and ignored.

Only the light modules (argparse, the config schema, YAML) are imported before a command
runs: ``--help`` and config errors answer in well under a second. Torch and the attack
code are imported by the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medsplit.config import ConfigError, config_from_dict, default_data_root, keys_help, load_config

DOWNLOADS = ("retinamnist", "kaggle-retinopathy", "kaggle-lungs")
ATTACK_HELP = "attack x defence evaluation; writes an HTML report and JSON in reports/"


def _configs_dir() -> Path:
    """Where the shipped configs are: beside the package in a checkout, else ./configs."""
    here = Path(__file__).resolve().parent.parent / "configs"
    return here if here.is_dir() else Path("configs")


def _train_epilog() -> str:
    import textwrap

    configs = _configs_dir()
    shipped = sorted(p.name for p in configs.glob("*.yaml") if not p.name.startswith("sweep-"))
    wrap = lambda text: textwrap.fill(text, width=100)  # noqa: E731
    return (
        wrap(f"config files: {configs}/ holds {', '.join(shipped) or 'none'} (the sweep-*.yaml files are for "
             "`medsplit sweep`). Without a config file the defaults below apply.") + "\n\n"
        "examples:\n  python -m medsplit train configs/retinopathy.yaml split.cut=3 split.clients=2\n"
        "  python -m medsplit train configs/unet-seg.yaml data.source=synthetic train.epochs=2\n\n"
        + wrap("settings, as key=default (choices or type): the config file's values replace the defaults, and "
               "key=value arguments replace both.") + "\n" + keys_help()
    )


def _command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word not starting with '-')."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command(argv)
    parser = argparse.ArgumentParser(prog="medsplit", description="Healthcare split-learning benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one configuration and write its report",
                       description="Train one configuration and write its HTML report and metrics JSON.",
                       epilog=_train_epilog() if command == "train" else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config file, e.g. configs/retinopathy.yaml (optional; see below)")
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

    # Internal: what `train` with split.transport=gloo starts, one per party.
    p = sub.add_parser("party", help=argparse.SUPPRESS)
    p.add_argument("config")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--resume", action="store_true")

    p = sub.add_parser("evaluate", help="score a trained run on a dataset (external validation)")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="dataset folder, .npz, or a source name (eyepacs, retinamnist, ...)")
    p.add_argument("--out", required=True, help="where to write the metrics JSON")
    p.add_argument("--labels", default=None, help="fundus: a labels CSV (image,level) for a plain image folder given by --data")
    p.add_argument("--report", default=None, help="also write a Markdown report: the external metric against the run's own test metric")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("data", help="download datasets into $MEDSPLIT_DATA (needs network; Kaggle needs credentials)")
    # Checked by hand: Python 3.11's argparse rejects an empty list against ``choices``.
    p.add_argument("what", nargs="*", help=f"what to download: any of {', '.join(DOWNLOADS)} (default: all)")
    p.add_argument("--root", default=None, help="data root (default: $MEDSPLIT_DATA or datasets/)")

    from medsplit.sweep import add_sweep_parser

    add_sweep_parser(sub)
    if command == "attack":  # the attack registries import torch: only when it is the command
        add_attack_parser(sub)
    else:
        sub.add_parser("attack", help=ATTACK_HELP)
    from medsplit.flare.cli import add_flare_parser

    add_flare_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            from medsplit.evaluate import evaluate_run

            evaluate_run(Path(args.run_dir), args.data, Path(args.out), device=args.device, labels=args.labels,
                         report=Path(args.report) if args.report else None)
            return 0
        if args.command == "data":
            return _data(args)
        if args.command in ("serve", "join", "party"):
            return _party(args)
        if args.command == "sweep":
            from medsplit.sweep import run_sweep_command

            return run_sweep_command(args)
        if args.command == "attack":
            from medsplit.attacks.harness import run_attack_command

            return run_attack_command(args)
        if args.command == "flare":
            from medsplit.flare.cli import run_flare_command

            return run_flare_command(args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"medsplit {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


def _train(args) -> int:
    from medsplit.train.run_folder import check_allowed_changes

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
        from medsplit.train.loop import train

        train(cfg, resume=run_dir, allow_change=allow)
        return 0
    if args.allow_change:
        raise ConfigError("--allow-change only applies with --resume RUN_DIR")
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():  # argparse took the first override for the file
        config, overrides = None, [config, *overrides]
    cfg = load_config(config, overrides)
    from medsplit.train.loop import train

    train(cfg, overwrite=args.overwrite)
    return 0


def _party(args) -> int:
    """One party in this process (``serve``, ``join``, or the launcher's ``party``). Exits the
    process directly: after a failure torch.distributed's threads must not keep it alive."""
    import os

    import yaml

    from medsplit.train.parties import run_party

    code = 0
    try:
        if args.command == "party":
            cfg = config_from_dict(yaml.safe_load(Path(args.config).read_text()))
            run_party(cfg, args.rank, Path(args.run_dir), address=args.address, resume=args.resume, quiet=False)
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
            run_party(cfg, rank, run_dir, own_data=own_data, resume=args.resume, quiet=False)
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the process exits
        print(f"medsplit {args.command}: error: {e}", file=sys.stderr, flush=True)
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _data(args) -> int:
    from medsplit.data import download

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
                from medsplit.data.download import download_kaggle_lungs

                path = download_kaggle_lungs(root)
            else:
                path = jobs[what](root)
            print(f"{what}: ready at {path}")
        except Exception as e:  # one missing credential must not stop the other downloads
            failures += 1
            print(f"{what}: not downloaded: {e}", file=sys.stderr)
    return 1 if failures else 0


def add_attack_parser(subparsers) -> None:
    """The ``attack`` command's options; its choices come from the attack, defence, task and profile registries."""
    from medsplit.attacks import ALIASES, ATTACKS
    from medsplit.attacks.profiles import DEVICES, PROFILES
    from medsplit.attacks.tasks import ATTACK_TASKS
    from medsplit.defences import DEFENCES

    p = subparsers.add_parser("attack", help=ATTACK_HELP)
    p.add_argument("--profile", choices=list(PROFILES), default=None, help="tiny (tests), reduced (CPU default), full (GPU default)")
    p.add_argument("--task", choices=list(ATTACK_TASKS), default="lungs")
    p.add_argument("--device", choices=list(DEVICES), default="auto",
                   help="auto (cuda when a GPU is present, else cpu), cpu, or cuda (an error without a GPU)")
    p.add_argument("--attacks", default=",".join(ATTACKS),
                   help=f"comma-separated from {','.join(ATTACKS)} (aliases: "
                        f"{', '.join(f'{a} = {n}' for a, n in ALIASES.items())})")
    p.add_argument("--defences", default=None, help=f"comma-separated from {','.join(DEFENCES)} (default: all of the profile)")
    p.add_argument("--data-root", default=None, help="data folder holding lungs/ and retinopathy/ (default: $MEDSPLIT_DATA, else datasets/)")
    p.add_argument("--out", default="reports", help="report folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one field of the profile, e.g. --set fsha.iterations=3000 --set img_size=96 "
                        "--set cut_lungs=2 (repeatable; the report is then named after the profile plus '-custom', "
                        "or after --set name=...)")


if __name__ == "__main__":
    sys.exit(main())
