"""What a sweep trains: its points (one training run each), the grid's checks and each point's config.

Which protocols are split and which are baselines is asked of the protocol registry
(:data:`medsplit.train.protocols.PROTOCOLS`), so a protocol added there is swept without a
change here. The registry imports torch, so it is looked up when a sweep is planned, not
when this module is imported (``python -m medsplit --help`` stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medsplit.config import CHOICES, Config, load_config, parse_override

AXES = ("cut", "clients")
PARTITIONS = CHOICES["data.partition"]

# Config keys each point sets; an override of one of them would be silently replaced.
_SET_BY_SWEEP = {"split.protocol": "--protocols", "train.seed": "--seeds", "data.partition": "--partitions",
                 "output.name": "(named per point)", "output.runs_dir": "--out"}


def _protocol_flags() -> dict[str, tuple[bool, bool]]:
    """``name -> (baseline, pooled)`` for every registered protocol, in the registry's order.

    ``baseline``: an unsplit reference protocol the sweep runs beside the split ones.
    ``pooled``: it pools every hospital's data into one party, so neither the partition nor
    the number of clients changes it.
    """
    # imports torch: a sweep worker loads this module and sets its threads before torch loads
    from medsplit.train.protocols import PROTOCOLS

    return {name: (bool(cls.baseline), bool(cls.pooled)) for name, cls in PROTOCOLS.items()}


def baseline_protocols() -> tuple[str, ...]:
    """The registered baselines (``centralised``, ``fedavg``), which ``baselines=True`` adds."""
    return tuple(name for name, (baseline, _) in _protocol_flags().items() if baseline)


def pooled_protocols() -> tuple[str, ...]:
    """The registered baselines that pool every hospital's data into one party (``centralised``)."""
    return tuple(name for name, (baseline, pooled) in _protocol_flags().items() if baseline and pooled)


def split_protocols() -> tuple[str, ...]:
    """The registered protocols a sweep's ``protocols`` may name: every one but the baselines."""
    return tuple(name for name, (baseline, _) in _protocol_flags().items() if not baseline)


@dataclass
class SweepPoint:
    """One training run of a sweep.

    Args:
        name: run name (``output.name``), unique within the sweep.
        protocol: a registered protocol: a split one (``sequential``, ``splitfed``, ...) or a
            baseline (``centralised``, ``fedavg``).
        partition: client partition scheme; ``None`` for a pooled baseline (centralised), which
            pools every client's rows and so does not depend on it.
        seed: ``train.seed``.
        value: the swept axis value; ``None`` for a baseline that does not vary with the axis
            (every baseline of a cut sweep, the pooled baseline of a clients sweep).
        overrides: the ``key=value`` overrides that make this point from the base config.
    """

    name: str
    protocol: str
    partition: str | None
    seed: int
    value: int | None
    overrides: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> bool:
        """Whether ``protocol`` is one of the registry's unsplit baselines."""
        return self.protocol in baseline_protocols()


def plan_points(task: str, axis: str, values: list[int], seeds: list[int], protocols: list[str],
                partitions: list[str], baselines: bool) -> list[SweepPoint]:
    """Every point of a sweep, split points first (grouped by axis value), then baselines.

    Args:
        task: the config's task, used in run names.
        axis: ``"cut"`` or ``"clients"``.
        values, seeds, protocols, partitions: the grid.
        baselines: add the registry's baselines: a pooled one (centralised) once per seed (it
            pools all clients, so neither the cut, the number of clients nor the partition
            changes it), the others (FedAvg) per partition and seed, and per number of clients
            in a clients sweep.
    """
    points = []
    for v in values:
        for protocol in protocols:
            for part in partitions:
                for seed in seeds:
                    points.append(SweepPoint(
                        f"{task}-{protocol}-{axis}{v}-{part}-seed{seed}", protocol, part, seed, v,
                        [f"split.protocol={protocol}", f"split.{axis}={v}", f"data.partition={part}", f"train.seed={seed}"],
                    ))
    if baselines:
        flags = _protocol_flags()
        # pooled baselines first: the order the reports have always listed them in
        ordered = sorted((n for n, (baseline, _) in flags.items() if baseline), key=lambda n: not flags[n][1])
        for protocol in ordered:
            if flags[protocol][1]:
                for seed in seeds:
                    points.append(SweepPoint(f"{task}-{protocol}-seed{seed}", protocol, None, seed, None,
                                             [f"split.protocol={protocol}", f"train.seed={seed}"]))
                continue
            baseline_values: list[int | None] = list(values) if axis == "clients" else [None]
            for v in baseline_values:
                for part in partitions:
                    for seed in seeds:
                        where = f"clients{v}-" if v is not None else ""
                        extra = [f"split.clients={v}"] if v is not None else []
                        points.append(SweepPoint(
                            f"{task}-{protocol}-{where}{part}-seed{seed}", protocol, part, seed, v,
                            [f"split.protocol={protocol}", *extra, f"data.partition={part}", f"train.seed={seed}"]))
    return points


def check_grid(axis: str, values: list[int], seeds: list[int], protocols: list[str], partitions: list[str],
               overrides: list[str]) -> None:
    """Raise a ``ValueError`` naming the valid choices for a grid the sweep cannot run."""
    if axis not in AXES:
        raise ValueError(f"unknown sweep axis {axis!r}; valid axes are {list(AXES)}")
    for what, items in (("values", values), ("seeds", seeds), ("protocols", protocols), ("partitions", partitions)):
        if not items:
            raise ValueError(f"sweep {what} must not be empty")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in [*values, *seeds]):
        raise ValueError(f"sweep values and seeds must be integers, got values={values} seeds={seeds}")
    if axis == "clients" and min(values) < 1:
        raise ValueError(f"numbers of clients must be >= 1, got {values}")
    valid = split_protocols()
    for p in protocols:
        if p not in valid:
            hint = " (baselines run by default; --no-baselines drops them)" if p in baseline_protocols() else ""
            raise ValueError(f"unknown split protocol {p!r}; valid protocols are {list(valid)}{hint}")
    for p in partitions:
        if p not in PARTITIONS:
            raise ValueError(f"unknown partition {p!r}; valid partitions are {list(PARTITIONS)}")
    controlled = {**_SET_BY_SWEEP, f"split.{axis}": "--values"}
    for item in overrides:
        key, _ = parse_override(item)
        if key in controlled:
            raise ValueError(f"override {item!r} sets a key the sweep sets per point; use {controlled[key]} instead")


def point_config(base_config: Path, overrides: list[str], point: SweepPoint, out_dir: Path) -> Config:
    """The config of one point: the base config, the sweep's overrides, the point's own, and
    the sweep's folders."""
    cfg = load_config(base_config, [*overrides, *point.overrides])
    # Paths are set on the object, not as overrides, so no YAML parsing can mangle them.
    cfg.output.name = point.name
    cfg.output.runs_dir = str(out_dir / "runs")
    cfg.output.reports_dir = str(out_dir / "reports")  # per-run reports stay with the sweep
    return cfg


def same_run_key(point: SweepPoint, axis: str) -> tuple | None:
    """Points with equal keys are the same computation. With one client, every partition scheme
    gives that client the whole training set (and batches depend only on seed, epoch and
    client), so a clients sweep's one-client points differ only by name across partitions:
    the sweep trains the first and reuses it for the others."""
    if axis == "clients" and point.value == 1 and point.partition is not None:
        return (point.protocol, point.seed)
    return None
