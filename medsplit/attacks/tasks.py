"""What the attack harness asks of a task: its data, its target model and cut, its loss and
scores. One :class:`AttackTask` per task name in ``ATTACK_TASKS``; the harness, the attacks and
the report ask these objects instead of comparing task names.

The harness's tasks are fixed sources (the covid-cxr-v7 lung set, the EyePACS fundus set) with
the attack profile's sizes, not the training config's: the adapter is the harness's own, beside
the training tasks of :mod:`medsplit.tasks`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from medsplit.data.lungs import load_lungs
from medsplit.data.retinopathy import load_retinopathy
from medsplit.models import build_model
from medsplit.models.unet_classic import two_part_plans
from medsplit.tasks import TASKS

if TYPE_CHECKING:
    from medsplit.attacks.profiles import Profile
    from medsplit.models.stages import StageTable


@dataclass
class AttackData:
    """One seed's images for the harness, float in [0, 1], on one device. Args: see the field comments."""

    x_train: torch.Tensor  # all hospitals' training images, float [0, 1]
    y_train: torch.Tensor
    x_aux: torch.Tensor  # the colluding hospital's / attacker's disjoint share
    y_aux: torch.Tensor
    x_test: torch.Tensor  # held-out victim images
    y_test: torch.Tensor
    num_classes: int
    source: str
    images_per_patient: int = 1  # the most private training images of one patient (patient-level privacy)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device) -> AttackData:
        """The same data with every tensor on ``device`` (moved once, before any training)."""
        return AttackData(self.x_train.to(device), self.y_train.to(device), self.x_aux.to(device), self.y_aux.to(device),
                        self.x_test.to(device), self.y_test.to(device), self.num_classes, self.source,
                        self.images_per_patient)


def thresholded_dice(logits: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of the Dice of ``logits > 0`` against ``masks`` (+1e-6 smoothing).

    Not :class:`medsplit.metrics.SegmentationMetrics` (MONAI's Dice, what training reports), on
    purpose: the attack reports' numbers are kept bit for bit. The two differ where a logit is
    exactly 0 (background here; foreground there, sigmoid(0) >= 0.5), by the smoothing (an empty
    prediction of a non-empty mask scores ~1e-8 here, 0 there) and in precision (float32 on the
    tensors' device here, float64 on the CPU there): 0.39447 here against 0.39423 there on eight
    random 16 px images, one of them with a logit of exactly 0.
    """
    pred = (logits > 0).float()
    m = masks.float()
    inter = (pred * m).sum((1, 2, 3))
    return float(((2 * inter + 1e-6) / (pred.sum((1, 2, 3)) + m.sum((1, 2, 3)) + 1e-6)).mean())


class AttackTask:
    """The base of the harness's task adapters; a subclass fills in every attribute and method.

    Attributes:
        name: the ``--task`` name; unless :attr:`training_task` says otherwise, also a task of
            :data:`medsplit.tasks.TASKS`, which says whether its labels may cross and how its
            metric is called.
        chance_level: the utility a constant answer scores (``None``: no such level).
        label_note: why per-example labels are unavailable to a label-leakage attack (``None``:
            they are available).
        split_note: how the target is split and what reaches the client's first part besides
            the server's gradient (the reports' threat models print it).
    """

    name: str
    chance_level: float | None = None
    label_note: str | None = None
    split_note: str

    @property
    def training_task(self) -> str:
        """The training task (of :data:`medsplit.tasks.TASKS`) whose data and metric this adapter uses."""
        return self.name

    @property
    def labels_may_cross(self) -> bool:
        """The task's split lets the labels cross to the server (the training task says)."""
        return bool(TASKS[self.training_task].labels_may_cross)

    @property
    def metric_label(self) -> str:
        """Display name of the utility metric ("Dice", "AUC"), the training task's."""
        return TASKS[self.training_task].metric_label

    def load_splits(self, profile: Profile, data_root: Path, seed: int) -> tuple[Any, Any, torch.Tensor,
                                                                                 torch.Tensor, int, str]:
        """``(train split, test split, train targets, test targets, num_classes, source)``."""
        raise NotImplementedError

    def load(self, profile: Profile, data_root: Path, seed: int) -> AttackData:
        """Images in [0, 1]; the training split is divided by patient order into a private half and an auxiliary
        half (the server's auxiliary data: disjoint from what the client trains on, as in SDAR and FSHA)."""
        tr, te, ytr, yte, nc, src = self.load_splits(profile, data_root, seed)
        patients = getattr(tr, "patients", None) or list(tr.ids)
        order = sorted(set(patients))
        rng = np.random.default_rng(seed)
        aux_patients = set(rng.permutation(order)[: len(order) // 2].tolist())
        aux = torch.tensor([p in aux_patients for p in patients])
        x = tr.images.float() / 255
        private = Counter(p for p, a in zip(patients, aux.tolist()) if not a)
        return AttackData(x[~aux], ytr[~aux], x[aux], ytr[aux], te.images.float() / 255, yte, nc, src,
                        max(private.values(), default=1))

    def table(self, profile: Profile, in_channels: int, num_classes: int) -> StageTable:
        """The target's (and the validator's) network, uncut."""
        raise NotImplementedError

    def cut(self, profile: Profile) -> int:
        """Where the profile cuts the target."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def utility(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """The target's task score on held-out outputs (the ``utility`` column)."""
        raise NotImplementedError

    def validator_score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """How well a separate model reads the task from (reconstructed) images."""
        raise NotImplementedError

    def label_channels(self, num_classes: int) -> int:
        """Channels of the labels an attacker conditions on (SDAR)."""
        raise NotImplementedError

    def inferred_label_scores(self, inferred: torch.Tensor, data: AttackData) -> dict[str, float]:
        """Columns scoring the labels an attacker inferred for the held-out victims (SDAR)."""
        raise NotImplementedError


class LungSegmentation(AttackTask):
    """covid-cxr-v7 lung masks, the classic U-Net cut U-shaped (the masks never leave the hospital)."""

    name = "lungs"
    label_note = "the lung task's labels are pixel masks that never leave the hospital"
    split_note = ("the lung U-Net cut U-shaped: the masks never leave the hospital and the client decoder computes "
                  "the loss, so a malicious server can hijack only the gradient it returns to the client encoder, "
                  "while the client decoder's skip-path gradient keeps pulling that encoder toward the task; the "
                  "server trains its own parts on the gradient the client decoder returns.")

    def load_splits(self, profile, data_root, seed):
        d = load_lungs("covid-cxr-v7", data_root, img_size=profile.img_size, seed=seed)
        return d.train, d.test, d.train.masks, d.test.masks, 1, d.source

    def table(self, profile, in_channels, num_classes):
        return build_model("unet-classic", num_classes=1, in_channels=in_channels, base_channels=profile.base_channels)

    def cut(self, profile):
        return profile.cut_lungs

    def loss(self, out, y):
        return F.binary_cross_entropy_with_logits(out, y.float())

    def utility(self, out, y):
        return thresholded_dice(out, y)

    def validator_score(self, out, y):
        return thresholded_dice(out, y)

    def label_channels(self, num_classes):
        return 1

    def inferred_label_scores(self, inferred, data):
        # U-shaped: the masks never crossed; the attacker infers them
        mean_mask = (data.y_aux.float().mean(0, keepdim=True) > 0.5).float().expand_as(data.y_test)
        return {"mask_dice": thresholded_dice(torch.logit(inferred.clamp(1e-6, 1 - 1e-6)), data.y_test),
                "mask_dice_baseline": thresholded_dice(mean_mask * 2 - 1, data.y_test)}  # the mean auxiliary mask


class LungSegmentationLabelSharing(LungSegmentation):
    """The lung task in FSHA's own threat model (a control for the U-shaped runs): the same data,
    network and cut, but cut in two, so the server holds every later layer and the masks and the
    client's only gradient is the one the server returns. Pasquini et al. (2021) attack this
    setting; comparing it with ``lungs`` separates what the U-shape changes from what the attack
    reaches on these images."""

    name = "lungs-label-sharing"
    training_task = "lungs"
    label_note = "the lung task's labels are pixel masks, not per-example binary labels"
    split_note = ("the lung U-Net cut in two after its first block, a control and not a training plan: the server "
                  "holds every later layer, the masks and the loss, so the gradient it returns is the client "
                  "encoder's only gradient, FSHA's own threat model (Pasquini et al. 2021).")

    @property
    def labels_may_cross(self) -> bool:
        return True  # this plan sends the masks to the server (the paper's setting, not a training plan)

    def table(self, profile, in_channels, num_classes):
        table = super().table(profile, in_channels, num_classes)
        table.plans = two_part_plans(len(table.stages))
        return table


class FundusClassification(AttackTask):
    """EyePACS referable retinopathy (a profile-sized subset), a ResNet-18 cut in two (the labels cross)."""

    name = "retinopathy"
    chance_level = 0.5
    split_note = ("the fundus ResNet-18 cut in two: the labels cross to the server, which computes the loss, so the "
                  "gradient it returns is the client part's only gradient.")

    def load_splits(self, profile, data_root, seed):
        d = load_retinopathy("eyepacs", data_root, target="referable", img_size=profile.img_size, seed=seed,
                             max_images=profile.max_images)
        return d.train, d.test, d.train.labels, d.test.labels, d.num_classes, d.source

    def table(self, profile, in_channels, num_classes):
        return build_model("resnet18", num_classes=num_classes, in_channels=in_channels)

    def cut(self, profile):
        return profile.cut_retinopathy

    def loss(self, out, y):
        return F.cross_entropy(out, y)  # accepts the soft (mixed) targets too

    def utility(self, out, y):
        p = out.softmax(1)[:, 1].cpu().numpy()
        return float(roc_auc_score(y.cpu().numpy(), p)) if len(set(y.tolist())) == 2 else float("nan")

    def validator_score(self, out, y):
        # Balanced accuracy (the mean of the per-class recalls). Plain accuracy rewarded garbage:
        # about 80 % of fundus images are non-referable, so a validator that answers
        # "non-referable" for unrecognisable reconstructions scored higher on them than on the
        # originals. Balanced accuracy is 0.5 for any constant answer.
        pred = out.argmax(1)
        recalls = [float((pred[y == c] == c).float().mean()) for c in torch.unique(y)]
        return sum(recalls) / len(recalls)

    def label_channels(self, num_classes):
        return num_classes

    def inferred_label_scores(self, inferred, data):
        return {"label_accuracy": float((inferred.cpu() == data.y_test.cpu()).float().mean())}


#: task name -> adapter, in the order ``--task`` lists them
ATTACK_TASKS: dict[str, AttackTask] = {t.name: t for t in (LungSegmentation(), FundusClassification(),
                                                             LungSegmentationLabelSharing())}


def attack_task(task: str | AttackTask) -> AttackTask:
    """The adapter of ``task`` (a name or an adapter); an unknown name is an error listing the valid ones."""
    if isinstance(task, AttackTask):
        return task
    if task not in ATTACK_TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks are {list(ATTACK_TASKS)}")
    return ATTACK_TASKS[task]
