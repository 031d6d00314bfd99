"""Patient-level splits and client partitions.

Two questions with the same constraint, answered here in one place:

- :func:`patient_split`: which images are train / val / test (stratified, seeded);
- :func:`partition`: which training images each hospital (client) holds (iid or non-IID).

Both move whole *units*: all images of one patient go to the same side, because images
of one patient on both sides of a split leak the answer (both eyes of a patient usually
share their DR grade), and in a federated/split setting a patient belongs to one hospital.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medsplit.data.errors import DataError

__all__ = ["SCHEMES", "LABEL_SKEW_MAJORITY", "partition", "patient_split", "patient_subset"]

SCHEMES = ("iid", "dirichlet", "label_skew", "group")

# label_skew: share of each class held by the clients that "own" it; the rest is spread
# over the other clients, so every client still sees a little of every class.
LABEL_SKEW_MAJORITY = 0.8

# dirichlet: draws retried (seeded) before giving up on a draw that starves a client.
_DIRICHLET_TRIES = 200


def partition(
    labels: np.ndarray | torch.Tensor,
    n_clients: int,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_per_client: int = 8,
    groups: list[str] | None = None,
    patients: list[str] | None = None,
) -> list[np.ndarray]:
    """Partition sample indices among ``n_clients`` clients.

    Args:
        labels: integer class label per sample, shape ``(N,)``.
        n_clients: number of clients (>= 1).
        scheme: ``"iid"`` (stratified, shuffled, near-equal sizes), ``"dirichlet"`` (each
            class is split among clients with proportions drawn from ``Dir(alpha)``),
            ``"label_skew"`` (each client owns a subset of classes and holds most of their
            samples: :data:`LABEL_SKEW_MAJORITY`), ``"group"`` (clients are the ``groups``,
            e.g. image source or site; with fewer clients than groups, whole groups are
            packed together, largest first; with more, a large group is shared by several
            clients, each still holding one group only).
        alpha: Dirichlet concentration for ``"dirichlet"``: small is skewed, large is
            near-iid. Must be > 0.
        seed: seed for every random choice; the same arguments give the same partition.
        min_per_client: smallest acceptable client size.
        groups: per-sample group names; required by ``"group"``.
        patients: per-sample patient ids; all samples of a patient go to one client.

    Returns:
        ``n_clients`` sorted index arrays (int64), pairwise disjoint and covering ``0..N-1``.

    Raises:
        DataError: unknown scheme, ``n_clients < 1``, ``alpha <= 0``, more clients than the
            data allows (fewer than ``min_per_client`` samples or patients per client),
            ``"group"`` without groups, or a client left empty or below ``min_per_client``.
    """
    y = _as_labels(labels)
    if scheme not in SCHEMES:
        raise DataError(f"unknown partition scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    if n_clients < 1:
        raise DataError(f"n_clients must be >= 1, got {n_clients}")
    if scheme == "dirichlet" and not alpha > 0:
        raise DataError(f"dirichlet alpha must be > 0, got {alpha}")
    if min_per_client < 0:
        raise DataError(f"min_per_client must be >= 0, got {min_per_client}")
    units = _Units(y, patients)
    per_client = max(1, min_per_client)
    if len(y) < n_clients * per_client or units.n < n_clients:
        # min_per_client is not a config key, so the message names only what a user can change.
        most = max(0, min(len(y) // per_client, units.n))
        raise DataError(
            f"{n_clients} clients need at least {n_clients * per_client} samples ({per_client} per client) "
            f"and {n_clients} patients; the data has {len(y)} samples from {units.n} "
            f"{'patients' if patients is not None else 'units'}, so at most {most} client(s) fit: "
            f"use split.clients={most} or fewer"
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        owner = _iid(units, n_clients, rng)
    elif scheme == "dirichlet":
        owner = _dirichlet(units, n_clients, alpha, min_per_client, rng)
    elif scheme == "label_skew":
        owner = _label_skew(units, n_clients, rng)
    else:
        owner = _by_group(units, n_clients, groups, len(y), rng)
    parts = units.expand(owner, n_clients)
    _check_sizes(parts, scheme, min_per_client)
    return parts


def patient_split(
    strata: np.ndarray | torch.Tensor, patients: Sequence[str], fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Split samples into ``len(fractions)`` parts by patient, stratified by ``strata``.

    A seeded greedy scheme (in the spirit of iterative stratification): patients are
    visited rarest class first, in a seeded random order within equal rarity, and each
    goes to the part that is relatively furthest below its target count for that class
    (ties: furthest below its target size, then the earlier part). Relative deficits make
    even three patients of a rare class land in three different parts.

    Args:
        strata: class per sample (e.g. the DR grade), shape ``(N,)``.
        patients: patient id per sample.
        fractions: target share of samples per part (> 0 each, summing to 1).
        seed: seed for the visiting order.

    Returns:
        One sorted int64 index array per part; disjoint, covering, patient-disjoint.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if (fractions <= 0).any() or abs(fractions.sum() - 1.0) > 1e-6:
        raise DataError(f"split fractions must be > 0 and sum to 1, got {fractions.tolist()}")
    units = _Units(_as_labels(strata), list(patients))
    total = units.counts.sum(axis=0).astype(np.float64)
    desired = fractions[:, None] * total[None, :]
    desired_size = fractions * total.sum()
    current = np.zeros_like(desired)
    size = np.zeros(len(fractions))
    owner = np.empty(units.n, dtype=np.int64)
    for u in _rare_first_order(units, total, np.random.default_rng(seed)):
        c = units.rarest(u, total)
        need_class = (desired[:, c] - current[:, c]) / np.maximum(desired[:, c], 1e-12)
        need_size = (desired_size - size) / desired_size
        # lexsort sorts by its last key first; negate to get the largest deficit.
        part = int(np.lexsort((np.arange(len(fractions)), -need_size, -need_class))[0])
        owner[u] = part
        current[part] += units.counts[u]
        size[part] += units.counts[u].sum()
    return units.expand(owner, len(fractions))


def patient_subset(strata: np.ndarray | torch.Tensor, patients: Sequence[str], max_images: int, seed: int) -> np.ndarray:
    """A seeded, patient-level subset of at most ``max_images`` samples, stratified by ``strata``.

    Patients are taken rarest class first (seeded order) while their classes are below
    their share of ``max_images``; the rest of the budget is filled with any patients that
    still fit. Never exceeds ``max_images``.

    Args:
        strata: class per sample, shape ``(N,)``.
        patients: patient id per sample.
        max_images: the budget (>= 1).
        seed: seed for the order in which patients are considered.

    Returns:
        Sorted int64 indices of the chosen samples.
    """
    if max_images < 1:
        raise DataError(f"max_images must be >= 1, got {max_images}")
    y = _as_labels(strata)
    if max_images >= len(y):
        return np.arange(len(y), dtype=np.int64)
    units = _Units(y, list(patients))
    total = units.counts.sum(axis=0).astype(np.float64)
    quota = np.ceil(total * max_images / len(y))
    rng = np.random.default_rng(seed)
    order = _rare_first_order(units, total, rng)
    taken = np.zeros(units.n, dtype=bool)
    have = np.zeros_like(total)
    budget = max_images
    for u in order:  # stratified pass
        size = units.counts[u].sum()
        if size <= budget and (have + units.counts[u] <= quota).all():
            taken[u], budget, have = True, budget - size, have + units.counts[u]
    for u in rng.permutation(units.n):  # fill pass
        size = units.counts[u].sum()
        if not taken[u] and size <= budget:
            taken[u], budget = True, budget - size
    return np.sort(np.concatenate([units.members[u] for u in np.flatnonzero(taken)])).astype(np.int64)


class _Units:
    """Samples grouped into indivisible units (patients, or single samples)."""

    def __init__(self, labels: np.ndarray, patients: Sequence[str] | None):
        if patients is not None and len(patients) != len(labels):
            raise DataError(f"got {len(patients)} patient ids for {len(labels)} samples")
        keys = patients if patients is not None else range(len(labels))
        index: dict[object, int] = {}
        unit_of = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)
        self.n = len(index)
        self.unit_of = unit_of
        order = np.argsort(unit_of, kind="stable")
        bounds = np.searchsorted(unit_of[order], np.arange(self.n + 1))
        self.members = [order[bounds[u] : bounds[u + 1]] for u in range(self.n)]
        n_classes = int(labels.max()) + 1 if len(labels) else 1
        self.counts = np.zeros((self.n, n_classes), dtype=np.int64)
        np.add.at(self.counts, (unit_of, labels), 1)
        self.sizes = self.counts.sum(axis=1)
        # A unit's class for class-wise schemes: its most common label (ties: the rarer).
        totals = self.counts.sum(axis=0)
        tie_break = -totals / (totals.max() + 1.0)
        self.label = np.argmax(self.counts + 0.5 * tie_break[None, :] * (self.counts > 0), axis=1)

    def rarest(self, u: int, total: np.ndarray) -> int:
        present = np.flatnonzero(self.counts[u])
        return int(present[np.argmin(total[present])])

    def restricted(self, keep: np.ndarray) -> _Units:
        """The units ``keep`` alone, renumbered 0..len(keep)-1, for dealing within a subset."""
        sub = object.__new__(_Units)
        sub.n = len(keep)
        sub.members = [self.members[u] for u in keep]
        sub.counts, sub.sizes, sub.label = self.counts[keep], self.sizes[keep], self.label[keep]
        return sub

    def expand(self, owner: np.ndarray, n_parts: int) -> list[np.ndarray]:
        per_sample = owner[self.unit_of]
        return [np.flatnonzero(per_sample == k).astype(np.int64) for k in range(n_parts)]


def _rare_first_order(units: _Units, total: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shuffled = rng.permutation(units.n)
    rarity = np.array([total[units.rarest(u, total)] for u in shuffled])
    return shuffled[np.argsort(rarity, kind="stable")]


def _iid(units: _Units, n_clients: int, rng: np.random.Generator) -> np.ndarray:
    """Deal units class by class to the client with the fewest of that class (ties: the
    smallest client, then a seeded random one): stratified and near-equal in size."""
    owner = np.empty(units.n, dtype=np.int64)
    n_classes = units.counts.shape[1]
    have = np.zeros((n_clients, n_classes))
    size = np.zeros(n_clients)
    order = rng.permutation(units.n)
    order = order[np.argsort(-units.sizes[order], kind="stable")]  # big patients first pack better
    order = order[np.argsort(units.label[order], kind="stable")]
    for u in order:
        c = units.label[u]
        k = int(np.lexsort((rng.random(n_clients), size, have[:, c]))[0])
        owner[u] = k
        have[k] += units.counts[u]
        size[k] += units.sizes[u]
    return owner


def _dirichlet(units: _Units, n_clients: int, alpha: float, min_per_client: int, rng: np.random.Generator) -> np.ndarray:
    """Per class, split that class's units among clients with Dir(alpha) proportions.

    Small alpha can starve a client; like the usual recipe, redraw (seeded) until every
    client has ``min_per_client`` samples, and fail loudly if that does not happen.
    """
    smallest = 0
    for _ in range(_DIRICHLET_TRIES):
        owner = np.empty(units.n, dtype=np.int64)
        for c in range(units.counts.shape[1]):
            members = rng.permutation(np.flatnonzero(units.label == c))
            if len(members) == 0:
                continue
            share = rng.dirichlet(np.full(n_clients, alpha))
            # Cut the class's units where their cumulative size crosses each share boundary.
            cumulative = np.cumsum(units.sizes[members]) / units.sizes[members].sum()
            owner[members] = np.minimum(np.searchsorted(np.cumsum(share), cumulative, side="left"), n_clients - 1)
        sizes = np.bincount(owner, weights=units.sizes, minlength=n_clients)
        smallest = int(sizes.min())
        if smallest >= max(1, min_per_client):
            return owner
    raise DataError(
        f"dirichlet partition with alpha={alpha} left a client with {smallest} samples "
        f"(fewer than {max(1, min_per_client)}) in {_DIRICHLET_TRIES} seeded draws for {n_clients} clients: "
        f"use a larger data.alpha or fewer clients (split.clients)"
    )


def _label_skew(units: _Units, n_clients: int, rng: np.random.Generator) -> np.ndarray:
    """Each class is owned by some clients (round-robin, so every class has an owner and
    every client owns at least one class); owners share LABEL_SKEW_MAJORITY of the class's
    units, the other clients share the rest."""
    n_classes = units.counts.shape[1]
    owners = {c: [k for k in range(n_clients) if k % n_classes == c or c % n_clients == k] for c in range(n_classes)}
    owner = np.empty(units.n, dtype=np.int64)
    for c in range(n_classes):
        members = rng.permutation(np.flatnonzero(units.label == c))
        major = owners[c]
        minor = [k for k in range(n_clients) if k not in major]
        n_major = int(round(LABEL_SKEW_MAJORITY * len(members))) if minor else len(members)
        owner[members[:n_major]] = np.asarray(major)[np.arange(n_major) % len(major)]
        rest = members[n_major:]
        owner[rest] = np.asarray(minor)[np.arange(len(rest)) % len(minor)]
    return owner


def _by_group(units: _Units, n_clients: int, groups: list[str] | None, n: int, rng: np.random.Generator) -> np.ndarray:
    if groups is None:
        raise DataError("partition scheme 'group' needs groups (one name per sample, e.g. image source or site)")
    if len(groups) != n:
        raise DataError(f"got {len(groups)} groups for {n} samples")
    # A patient imaged in several groups joins its most frequent one.
    unit_group = []
    for u in range(units.n):
        names, counts = np.unique([groups[i] for i in units.members[u]], return_counts=True)
        unit_group.append(str(names[np.argmax(counts)]))
    names = sorted(set(unit_group))
    sizes = {g: 0 for g in names}
    for u, g in enumerate(unit_group):
        sizes[g] += int(units.sizes[u])
    if n_clients > len(names):
        return _split_groups(units, n_clients, unit_group, names, sizes, rng)
    # One group per client, or greedy packing (largest group to the smallest client).
    client_of: dict[str, int] = {}
    load = np.zeros(n_clients)
    for g in sorted(names, key=lambda g: (-sizes[g], g)):
        k = int(np.argmin(load))
        client_of[g] = k
        load[k] += sizes[g]
    return np.array([client_of[g] for g in unit_group], dtype=np.int64)


def _split_groups(
    units: _Units, n_clients: int, unit_group: list[str], names: list[str], sizes: dict[str, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """More clients than groups: every client still holds a single group (a hospital has one
    scanner or view), and a large group is shared by several clients. Each group gets one
    client, then each spare client goes to the group with the most samples per client; a
    group's units are dealt among its clients stratified, as in ``iid``."""
    share = {g: 1 for g in names}
    for _ in range(n_clients - len(names)):
        g = max(names, key=lambda g: (sizes[g] / share[g], g))
        share[g] += 1
    owner = np.empty(units.n, dtype=np.int64)
    first = 0
    group_of = np.array(unit_group)
    for g in names:
        members = np.flatnonzero(group_of == g)
        sub = units.restricted(members)
        owner[members] = first + _iid(sub, share[g], rng)
        first += share[g]
    return owner


def _check_sizes(parts: list[np.ndarray], scheme: str, min_per_client: int) -> None:
    sizes = [len(p) for p in parts]
    empty = [k for k, s in enumerate(sizes) if s == 0]
    if empty:
        raise DataError(f"partition scheme {scheme!r} left client(s) {empty} empty (client sizes {sizes}): use fewer clients")
    small = [k for k, s in enumerate(sizes) if s < min_per_client]
    if small:
        raise DataError(
            f"partition scheme {scheme!r} gave client(s) {small} fewer than {min_per_client} samples "
            f"(client sizes {sizes}): use fewer clients (split.clients)"
        )


def _as_labels(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {y.shape}")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
        raise DataError(f"labels must be non-negative integers, got dtype {y.dtype} with minimum {y.min()}")
    return y.astype(np.int64)
