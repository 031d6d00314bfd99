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

from medsplit.config import ConfigError, config_from_dict, keys_help, load_config

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

    p = sub.add_parser("evaluate", help="score a trained run on a dataset (external validation)")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="dataset folder, .npz, or a source name (eyepacs, retinamnist, ...)")
    p.add_argument("--out", required=True, help="where to write the metrics JSON")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("data", help="download datasets into $MEDSPLIT_DATA (needs network; Kaggle needs credentials)")
    # Checked by hand: Python 3.11's argparse rejects an empty list against ``choices``.
    p.add_argument("what", nargs="*", help=f"what to download: any of {', '.join(DOWNLOADS)} (default: all)")
    p.add_argument("--root", default=None, help="data root (default: $MEDSPLIT_DATA or datasets/)")

    from medsplit.sweep import add_sweep_parser

    add_sweep_parser(sub)
    if command == "attack":  # the attack module imports torch: only when it is the command
        from medsplit.privacy_eval import add_attack_parser

        add_attack_parser(sub)
    else:
        sub.add_parser("attack", help=ATTACK_HELP)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            from medsplit.evaluate import evaluate_run

            evaluate_run(Path(args.run_dir), args.data, Path(args.out), device=args.device)
            return 0
        if args.command == "data":
            return _data(args)
        if args.command == "sweep":
            from medsplit.sweep import run_sweep_command

            return run_sweep_command(args)
        if args.command == "attack":
            from medsplit.privacy_eval import run_attack_command

            return run_attack_command(args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"medsplit {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


def _train(args) -> int:
    # medsplit.train.loop imports torch (seconds): only once the config is known to be good.
    if args.resume:
        import yaml

        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"--resume {run_dir}: no config.yaml there; is it a medsplit run directory?")
        if args.config or args.overrides:
            raise ConfigError("--resume continues a run with its saved config; do not pass a config or overrides")
        cfg = config_from_dict(yaml.safe_load(saved.read_text()))
        from medsplit.train.loop import train

        train(cfg, resume=run_dir)
        return 0
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        # `medsplit train split.cut=2`: a setting where the config file goes; take it as one
        # (the defaults then apply) rather than report a missing file named "split.cut=2".
        config, overrides = None, [config, *overrides]
    cfg = load_config(config, overrides)
    from medsplit.train.loop import train

    train(cfg)
    return 0


def _data(args) -> int:
    import os

    from medsplit.data import download

    root = Path(args.root or os.environ.get("MEDSPLIT_DATA", "datasets"))
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
                from medsplit.data.lungs import download_kaggle_lungs

                path = download_kaggle_lungs(root)
            else:
                path = jobs[what](root)
            print(f"{what}: ready at {path}")
        except Exception as e:  # one missing credential must not stop the other downloads
            failures += 1
            print(f"{what}: not downloaded: {e}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
