"""Client partitions, patient-level splits and subsets, and batch augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsplit.data.augment import BatchAugment, channel_stats, standardize, to_float
from medsplit.data.images import DataError
from medsplit.data.partition import SCHEMES, partition, patient_split, patient_subset


def _toy(n_patients: int = 300, seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """Imbalanced labels (70/20/10), one or two images per patient (the two eyes usually
    agree), and a site per patient."""
    rng = np.random.default_rng(seed)
    labels, patients, groups = [], [], []
    for p in range(n_patients):
        label = int(rng.choice(3, p=[0.7, 0.2, 0.1]))
        for _ in range(1 + int(rng.random() < 0.7)):
            labels.append(label if rng.random() < 0.9 else int(rng.integers(3)))
            patients.append(f"p{p}")
            groups.append(f"site{p % 4}")
    return np.array(labels), patients, groups


def _assert_valid(parts: list[np.ndarray], n: int, patients: list[str] | None = None) -> None:
    everything = np.concatenate(parts)
    assert len(everything) == n and sorted(everything.tolist()) == list(range(n))  # disjoint and covering
    assert all(p.dtype == np.int64 and (np.diff(p) > 0).all() for p in parts)  # sorted
    if patients is not None:
        owner = {}
        for k, part in enumerate(parts):
            for i in part:
                assert owner.setdefault(patients[i], k) == k  # a patient never spans clients


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "label_skew", "group"])
def test_partitions_are_disjoint_covering_and_patient_grouped(scheme):
    labels, patients, groups = _toy()
    parts = partition(labels, 4, scheme=scheme, alpha=1.0, seed=1, groups=groups, patients=patients)
    assert len(parts) == 4
    _assert_valid(parts, len(labels), patients)
    assert all(len(p) >= 8 for p in parts)
    again = partition(torch.from_numpy(labels), 4, scheme=scheme, alpha=1.0, seed=1, groups=groups, patients=patients)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))  # seeded, tensor or array


def test_iid_is_stratified_and_near_equal():
    labels, patients, _ = _toy()
    parts = partition(labels, 5, "iid", seed=2, patients=patients)
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() - sizes.min() <= 3
    overall = np.bincount(labels, minlength=3) / len(labels)
    for part in parts:
        assert np.abs(np.bincount(labels[part], minlength=3) / len(part) - overall).max() < 0.05
    plain = partition(labels, 7, "iid", seed=2, min_per_client=1)  # without patients: per sample
    _assert_valid(plain, len(labels))
    assert max(len(p) for p in plain) - min(len(p) for p in plain) <= 1


def _skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between client label mixes and the overall mix."""
    overall = np.bincount(labels, minlength=3) / len(labels)
    return float(np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=3) / len(p) - overall).sum() for p in parts]))


def test_dirichlet_small_alpha_is_skewed():
    labels, patients, _ = _toy(600)
    iid = _skew(labels, partition(labels, 4, "iid", seed=0, patients=patients))
    wide = _skew(labels, partition(labels, 4, "dirichlet", alpha=100.0, seed=0, patients=patients))
    narrow = _skew(labels, partition(labels, 4, "dirichlet", alpha=0.1, seed=0, patients=patients))
    assert iid < 0.05 and wide < 0.1 and narrow > 0.25


def test_label_skew_gives_each_client_a_majority_of_its_classes():
    labels = np.repeat(np.arange(4), 50)
    parts = partition(labels, 4, "label_skew", seed=0)
    _assert_valid(parts, len(labels))
    for k, part in enumerate(parts):
        counts = np.bincount(labels[part], minlength=4)
        assert counts.argmax() == k and counts[k] == 40 and (counts > 0).all()
    two_clients = partition(labels, 2, "label_skew", seed=0)  # fewer clients than classes: 2 classes each
    assert sorted(np.bincount(labels[two_clients[0]], minlength=4).argsort()[-2:].tolist()) == [0, 2]


def test_group_scheme_shares_large_groups_when_clients_outnumber_groups():
    labels, patients, _ = _toy()
    # Three views of unequal size, by patient: 60 %, 30 %, 10 % (like AP / PA / AP supine).
    view = {f"p{p}": ("AP", "PA", "supine")[0 if p % 10 < 6 else 1 if p % 10 < 9 else 2] for p in range(300)}
    groups = [view[p] for p in patients]
    parts = partition(labels, 6, "group", groups=groups, patients=patients, seed=3)
    _assert_valid(parts, len(labels), patients)
    held = [{groups[i] for i in p} for p in parts]
    assert all(len(g) == 1 for g in held)  # a client still holds one view only
    clients_per_view = {v: sum(g == {v} for g in held) for v in ("AP", "PA", "supine")}
    assert clients_per_view == {"AP": 3, "PA": 2, "supine": 1}  # in proportion to size
    for v in ("AP", "PA"):  # a shared view is dealt evenly and stratified among its clients
        sizes = [len(p) for p, g in zip(parts, held, strict=True) if g == {v}]
        assert max(sizes) - min(sizes) <= 3
        fractions = [np.mean(labels[p] == 0) for p, g in zip(parts, held, strict=True) if g == {v}]
        assert max(fractions) - min(fractions) < 0.1
    again = partition(labels, 6, "group", groups=groups, patients=patients, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_group_scheme_follows_groups():
    labels, patients, groups = _toy()
    parts = partition(labels, 4, "group", groups=groups, patients=patients)
    _assert_valid(parts, len(labels), patients)
    per_client = [{groups[i] for i in p} for p in parts]
    assert all(len(g) == 1 for g in per_client) and set.union(*per_client) == {"site0", "site1", "site2", "site3"}
    packed = partition(labels, 2, "group", groups=groups)  # fewer clients: whole groups packed
    _assert_valid(packed, len(labels))
    assert all(len({groups[i] for i in p}) == 2 for p in packed)
    with pytest.raises(DataError, match="needs groups"):
        partition(labels, 2, "group")


def test_partition_errors_name_the_values():
    labels, patients, _ = _toy(50)
    with pytest.raises(DataError, match="unknown partition scheme 'shards'; valid schemes: " + ", ".join(SCHEMES)):
        partition(labels, 2, "shards")
    with pytest.raises(DataError, match="n_clients must be >= 1, got 0"):
        partition(labels, 0)
    with pytest.raises(DataError, match="alpha must be > 0, got 0.0"):
        partition(labels, 2, "dirichlet", alpha=0.0)
    with pytest.raises(DataError, match=rf"20 clients need at least 160 samples .* the data has {len(labels)} samples") as e:
        partition(labels, 20, "iid", patients=patients)
    # the message names what a user can set (split.clients) and the largest count that fits
    assert "min_per_client" not in str(e.value)
    assert f"at most {len(labels) // 8} client(s) fit: use split.clients={len(labels) // 8} or fewer" in str(e.value)
    with pytest.raises(DataError, match="50 patients"):
        partition(labels, 60, "iid", min_per_client=1, patients=patients)
    tiny = np.array([0] * 30 + [1] * 2)
    with pytest.raises(DataError, match=r"dirichlet partition with alpha=0.01 left a client with \d+ samples"):
        partition(tiny, 3, "dirichlet", alpha=0.01, min_per_client=8)


def test_label_skew_error_when_a_client_would_be_empty():
    labels = np.array([0] * 16 + [1] * 16)
    with pytest.raises(DataError, match=r"client\(s\) \[\d\] (empty|fewer than 8 samples)"):
        partition(labels, 3, "label_skew", min_per_client=8)


def test_patient_split_and_subset():
    labels, patients, _ = _toy(400)
    parts = patient_split(labels, patients, (0.6, 0.2, 0.2), seed=0)
    _assert_valid(parts, len(labels), patients)
    for part, share in zip(parts, (0.6, 0.2, 0.2)):
        assert abs(len(part) / len(labels) - share) < 0.02
        assert (np.bincount(labels[part], minlength=3) > 0).all()
    rare = np.array([0] * 60 + [1] * 3)  # three patients of a rare class land in three parts
    parts = patient_split(rare, [f"p{i}" for i in range(63)], (0.7, 0.15, 0.15), seed=4)
    assert all((rare[p] == 1).sum() == 1 for p in parts)
    keep = patient_subset(labels, patients, 101, seed=0)
    assert 95 <= len(keep) <= 101
    kept_patients = {patients[i] for i in keep}
    assert all(i in keep for i in range(len(labels)) if patients[i] in kept_patients)  # whole patients
    assert np.array_equal(keep, patient_subset(labels, patients, 101, seed=0))
    with pytest.raises(DataError, match="fractions"):
        patient_split(labels, patients, (0.5, 0.6), seed=0)


# ---------------------------------------------------------------------------- augmentation


def test_augment_shapes_dtype_range_and_reproducibility():
    x = to_float(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), None, None)
    augment = BatchAugment(gamma=0.2)
    a = augment(x, torch.Generator().manual_seed(7))
    b = augment(x, torch.Generator().manual_seed(7))
    c = augment(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(augment.eval()(x), x)  # identity at evaluation


def test_augment_commutes_with_standardisation():
    """Training code may standardise before augmenting: the result must be the same as
    augmenting [0, 1] images (black borders stay black, nothing leaves the range)."""
    images = torch.randint(0, 256, (5, 3, 24, 24), dtype=torch.uint8)
    images[:, :, :3] = 0  # a black border, as on fundus photographs
    mean, std = channel_stats(images)
    augment = BatchAugment(gamma=0.3)
    then_standardise = standardize(augment(to_float(images, None, None), torch.Generator().manual_seed(3)), mean, std)
    standardise_first = augment(to_float(images, mean, std), torch.Generator().manual_seed(3))
    assert torch.allclose(then_standardise, standardise_first, atol=1e-4)


def test_augment_geometry_is_exact_for_flips():
    x = torch.rand(64, 1, 8, 8)
    flips_only = BatchAugment(flips=True, rotate_degrees=0.0, scale=(1.0, 1.0), brightness=0.0, contrast=0.0)
    out = flips_only(x, torch.Generator().manual_seed(0))
    candidates = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    matched = [[torch.allclose(out[i], c[i], atol=1e-5) for c in candidates] for i in range(64)]
    assert all(any(m) for m in matched)
    assert all(sum(m[k] for m in matched) > 5 for k in range(4))  # all four flip states occur
    rotated = BatchAugment(flips=False, rotate_degrees=180.0, scale=(1.0, 1.0), brightness=0.0, contrast=0.0)
    disc = (torch.arange(32).view(1, -1) - 15.5) ** 2 + (torch.arange(32).view(-1, 1) - 15.5) ** 2 < 100
    spun = rotated(disc.float().expand(4, 3, 32, 32).contiguous(), torch.Generator().manual_seed(1))
    assert (spun - disc.float()).abs().mean() < 0.05  # a centred disc is rotation-invariant


def test_right_angle_geometry_gives_all_eight_symmetries_without_resampling():
    x = torch.rand(128, 3, 8, 8)
    lossless = BatchAugment(right_angles=True, brightness=0.0, contrast=0.0)
    out = lossless(x, torch.Generator().manual_seed(0))
    symmetries = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    symmetries += [s.transpose(-1, -2) for s in symmetries]
    matched = [[torch.equal(out[i], s[i]) for s in symmetries] for i in range(128)]  # exact: no pixel resampled
    assert all(any(m) for m in matched)
    assert all(sum(m[k] for m in matched) > 5 for k in range(8))  # every symmetry occurs
    assert torch.equal(lossless(x, torch.Generator().manual_seed(0)), out)  # reproducible
    affine = BatchAugment(brightness=0.0, contrast=0.0)(x, torch.Generator().manual_seed(0))
    assert not any(torch.equal(affine[0], s[0]) for s in symmetries)  # the default resamples


def test_the_fundus_task_reads_the_rotation_setting(tmp_path):
    from medsplit.config import load_config
    from medsplit.tasks import TASKS, TaskSettings

    base = ["data.source=synthetic", "data.synthetic_size=40", "data.img_size=32", f"data.cache_dir={tmp_path}"]
    for rotation, right_angles in (("any", False), ("right-angles", True)):
        settings = TaskSettings.from_config(load_config(None, [*base, f"data.rotation={rotation}"]))
        task = TASKS["retinopathy"](settings, TASKS["retinopathy"].load_data(settings), torch.device("cpu"))
        assert task.augment.right_angles is right_angles


def test_to_float_standardize_and_channel_stats():
    images = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8)
    images[:, 1] //= 2
    mean, std = channel_stats(images)
    x = images.float() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(std, x.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-5)
    z = to_float(images, mean, std)
    assert z.dtype == torch.float32 and torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z, standardize(to_float(images, None, None), mean, std))
    with pytest.raises(DataError, match="3 channels"):
        to_float(images, (0.5,), (0.2,))
    with pytest.raises(DataError, match="uint8"):
        to_float(images.float(), None, None)
