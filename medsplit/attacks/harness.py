"""The attack x defence harness behind ``python -m medsplit attack`` (and ``make attacks``).

For every defence and strength: train the target split model with the defence once, then
train *fresh* attackers against the defended client that see exactly what crossed the channel
(noisy or mixed activations included): the adversarial reconstruction attack (ADRA, model
inversion with a colluding hospital) and SDAR (passive, no collusion). Never judge a defence
by a proxy it trained against. FSHA is an attack *during* training, so it runs from scratch,
inside the real protocol (:class:`~medsplit.attacks.fsha_protocol.HijackedSplitModel`: in the
lung U-Net the server can only hijack the gradient it returns to the client encoder), against a
client that applies its defence. Everything is measured on held-out images.

What runs is data: each attack's :class:`~medsplit.attacks.registry.AttackSpec` says how it
meets its target and against which defences, each defence's
:class:`~medsplit.defences.registry.DefenceSpec` how it is installed and where it applies, each
task's :class:`~medsplit.attacks.tasks.AttackTask` its data, model and scores.

DP-SGD runs on every part (client and server), with GroupNorm for every BatchNorm and Poisson
batches, so the accountant's epsilon bounds what the trained weights of all parts say about one
image (:mod:`medsplit.defences.dpsgd`); it does not cover the activations the server sees during
training. The target trains on the client's private images only: the auxiliary images are the
server's (SDAR, FSHA) or the colluder's (ADRA), disjoint from the client's training data.

Every reconstruction row carries the trivial baselines (:func:`~medsplit.attacks.quality.trivial_baselines`:
the mean auxiliary image, and the auxiliary image nearest each victim), and every figure is the
attack's final value, never its best logged point on the held-out images.

Device: one ``torch.device`` runs everything (data, target, validator, attacker, defences).
Batch indices always come from CPU generators and are then moved, so a seed gives the same
batches on every device; models are initialised on the CPU and moved, so the same weights too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from medsplit.attacks import ATTACKS, check_attack_names, resolve_attack_names
from medsplit.attacks.profiles import PROFILES, Profile, customise, default_profile, resolve_device
from medsplit.attacks.quality import trivial_baselines
from medsplit.attacks.registry import OWN, SHARED, UNDEFENDED, AttackContext
from medsplit.attacks.targets import CPU, train_defended_target, train_validator
from medsplit.attacks.tasks import attack_task
from medsplit.config import default_data_root
from medsplit.defences import DEFENCES, DefenceNotApplicable, check_defence_names
from medsplit.report import attack_report
from medsplit.tracking.attack import track_attack
from medsplit.train import device as train_device


def evaluate(task: str, profile: Profile, data_root: Path, attacks: list[str], defences: list[str] | None,
             log=print, device: torch.device = CPU, progress: bool = False) -> dict:
    """Run every requested attack against every defence and strength of ``profile`` on ``device``.

    ``progress`` shows a bar over the runs (one line per finished run is written either way).

    Returned tensors (reconstructions, originals) are on the CPU whatever ``device`` is.
    """
    check_attack_names(attacks)
    t = attack_task(task)
    defences = list(profile.strengths) if defences is None else defences
    check_defence_names(defences)
    rows, extras, skipped, trivial = [], {}, [], {}
    specs = [spec for name, spec in ATTACKS.items() if name in attacks]  # registry order
    shared = [spec for spec in specs if spec.target == SHARED]  # share one defended target per setting
    target_runs = [(n, s) for n in defences for s in profile.strengths.get(n, [0])] if shared else []
    own_runs = {spec.name: [(n, s) for n in defences if n in spec.strengths(profile) for s in spec.strengths(profile)[n]]
                for spec in specs if spec.target == OWN}
    undefended = [spec for spec in specs if spec.target == UNDEFENDED]
    per_seed = 1 + len(target_runs) + sum(map(len, own_runs.values())) + len(undefended)  # 1: the validator
    bar = tqdm(total=per_seed * len(profile.seeds), desc=f"attacks on {task} ({profile.name})", unit="run",
               disable=not progress)
    say = bar.write if progress else log
    for name in own_runs:
        spec, chosen = ATTACKS[name], ATTACKS[name].strengths(profile)
        for defence in [d for d in defences if d not in chosen]:
            skipped.append({"attack": name, "defence": defence, "reason": f"profile {profile.name!r} runs "
                            f"{spec.display_name} against {sorted(chosen)} only ({spec.limited_because})"})
    # a defence that cannot apply (to this task or cut) is tried once, not at every strength and seed
    refused: dict[str, set[str]] = {SHARED: set(), **{name: set() for name in own_runs}}

    def record(attack, name, s, seed, row, extra):
        if "mse" in row:  # a reconstruction attack: the trivial baselines go beside its numbers
            row.update({k: v for k, v in baselines.items() if k not in row})
        rows.append(row)
        extras[f"{attack}/{name}/{s}/{seed}"] = extra
        say(f"{attack} {name}={s} seed {seed}: " + ATTACKS[attack].summary.format(**row))

    start = time.perf_counter()
    for seed in profile.seeds:
        data = t.load(profile, data_root, seed).to(device)
        validator = train_validator(t, data, profile, torch.Generator().manual_seed(1000 + seed))
        baselines = trivial_baselines(data.x_aux, data.x_test)
        trivial[seed] = baselines
        ctx = AttackContext(t, seed, data, profile, validator)
        bar.update(1)
        for name, s in target_runs:
            bar.set_postfix_str(f"{'+'.join(spec.name for spec in shared)} {name}={s} seed {seed}")
            if name not in refused[SHARED]:
                try:
                    target = train_defended_target(t, name, s, seed, data, profile)
                except DefenceNotApplicable as e:
                    skipped += [{"attack": spec.name, "defence": name, "reason": str(e)} for spec in shared]
                    refused[SHARED].add(name)
                else:
                    for spec in shared:
                        if spec.runs_at(profile, name, s):
                            record(spec.name, name, s, seed, *spec.run(ctx, name, s, target))
            bar.update(1)
        for attack, runs in own_runs.items():
            for name, s in runs:
                bar.set_postfix_str(f"{attack} {name}={s} seed {seed}")
                if name not in refused[attack]:
                    try:
                        record(attack, name, s, seed, *ATTACKS[attack].run(ctx, name, s))
                    except DefenceNotApplicable as e:
                        skipped.append({"attack": attack, "defence": name, "reason": str(e)})
                        refused[attack].add(name)
                bar.update(1)
        for spec in undefended:
            bar.set_postfix_str(f"{spec.display_name} seed {seed}")
            reason = spec.applies_to(t)
            if reason is None:
                rows.append(spec.run(ctx))
            elif seed == profile.seeds[0]:  # the task decides, not the seed
                skipped.append({"attack": spec.name, "defence": "none", "reason": reason})
            bar.update(1)
    bar.close()
    return {"task": task, "profile": profile.name, "rows": rows, "extras": extras, "skipped": skipped,
            "trivial_baselines": trivial,
            "seconds": time.perf_counter() - start, "data_source": data.source, "originals": data.x_test[:6].cpu(),
            "profile_config": _jsonable(asdict(profile)), "device": train_device.device_label(device)}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def run_attack_command(args) -> int:
    """``python -m medsplit attack``: the options of :func:`medsplit.cli.add_attack_parser`."""
    html = run_attack(args.task, profile=args.profile, attacks=[a.strip() for a in args.attacks.split(",") if a.strip()],
                      defences=[d for d in args.defences.split(",") if d] if args.defences else None,
                      device=args.device, data_root=args.data_root, out=args.out, overrides=args.overrides,
                      tensorboard=args.tensorboard, mlflow=args.mlflow)
    print(f"report: {html}\nsummary: {html.with_suffix('.json')}")
    return 0


def run_attack(task: str, profile: str | None = None, attacks: list[str] | None = None, defences: list[str] | None = None,
               device: str = "auto", data_root: str | Path | None = None, out: str | Path = "reports",
               overrides: list[str] = (), tensorboard: bool = False, mlflow: str = "") -> Path:
    """Run the attack evaluation and write its report; returns the HTML report's path (the JSON
    summary is beside it). The arguments are ``medsplit attack``'s options (``attacks=None``: all;
    ``defences=None``: the profile's); a defence that cannot apply to ``task`` is refused before
    anything trains. ``tensorboard`` logs every row's numbers and the reconstruction grids under
    ``<out>/tb/<report name>``; ``mlflow`` (a tracking URI) logs them, the report and its JSON there."""
    dev = resolve_device(device)
    chosen = customise(PROFILES[profile or default_profile(dev)], list(overrides))
    names = resolve_attack_names(list(ATTACKS) if attacks is None else list(attacks))
    if defences is not None:
        check_defence_names(defences)
        for name in defences:  # refused before any training (evaluate would skip it and go on)
            reason = DEFENCES[name].applies_to(attack_task(task))
            if reason:
                raise DefenceNotApplicable(f"--task {task} --defences {name}: {reason}")
    root = Path(data_root) if data_root else default_data_root()
    results = evaluate(task, chosen, root, names, defences, device=dev, progress=True)
    html = attack_report.write_attack_report(results, Path(out))
    if tensorboard or mlflow:
        track_attack(results, html, tensorboard_dir=Path(out) / "tb" / html.stem if tensorboard else None, mlflow_uri=mlflow)
    return html
