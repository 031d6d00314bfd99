"""Label leakage from gradients in label-private (U-shaped) split training (Li et al. 2022).

Threat model: the labels stay with the hospital, which owns the classifier head; the server
owns the middle of the network and is honest-but-curious. In every step it receives, from
the hospital, the gradient of the loss with respect to its own output, one row per example.
For binary labels it scores each example

* by the gradient's norm (the *norm attack*: with imbalanced labels, minority-class examples
  are fit worse and get larger gradients), and
* by the cosine of the gradient to that of one example whose label it knows (the *cosine
  attack*: the gradients of the two classes point in opposite directions),

and the leakage is the AUC of those scores against the true labels.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medsplit.attacks.registry import UNDEFENDED, AttackContext, AttackSpec
from medsplit.attacks.tap import Recorder
from medsplit.attacks.targets import parts_on
from medsplit.models.stages import PartSpec, StageTable
from medsplit.split import two_party
from medsplit.split.cut import Part
from medsplit.split.cut import cut as cut_table


def label_private_parts(table: StageTable, cut: int) -> list[Part]:
    """A ResNet cut into client (stages up to ``cut``) / server (to the pooled features) / client head.

    Args:
        table: a ResNet stage table (``conv1 .. layer4, pool, fc``).
        cut: the usual cut number (client keeps children ``0..cut``).
    """
    names = table.stage_names()
    if names[-1] != "fc" or cut not in table.plans:
        raise ValueError(f"label-private split needs a ResNet table and a legal cut; valid cuts are {table.legal_cuts}, "
                         f"stages are {names}")
    n = len(names)
    specs = [PartSpec("client", "client", cut + 1), PartSpec("server", "server", n - 1), PartSpec("client_head", "client", n)]
    saved = table.plans
    table.plans = {**saved, "label-private": specs}
    try:
        return cut_table(table, "label-private")  # type: ignore[arg-type]
    finally:
        table.plans = saved


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None


def leakage_scores(gradients: list[torch.Tensor], labels: list[torch.Tensor], positive: int = 1) -> dict:
    """AUC of the norm and cosine scores against the labels.

    Args:
        gradients: per step, the ``(N, ...)`` gradient rows the server received (any device).
        labels: per step, the true binary labels of those rows (only to score the attack).
        positive: the class counted as positive (the minority class in Li et al.).
    """
    norms, cosines, y_norm, y_cos = [], [], [], []
    for g, y in zip(gradients, labels):
        flat = g.reshape(g.shape[0], -1).double()
        yb = (y == positive).cpu().numpy().astype(int)
        norms.append(flat.norm(dim=1).cpu().numpy())
        y_norm.append(yb)
        known = np.flatnonzero(yb)
        if len(known) == 0:
            continue  # the cosine attack needs one example of known (positive) label in the batch
        ref = flat[known[0]]
        cos = torch.nn.functional.cosine_similarity(flat, ref.unsqueeze(0), dim=1).cpu().numpy()
        keep = np.arange(len(yb)) != known[0]
        cosines.append(cos[keep])
        y_cos.append(yb[keep])
    yn = np.concatenate(y_norm)
    out = {"norm_auc": _auc(yn, np.concatenate(norms)), "examples": int(len(yn)), "positive_rate": float(yn.mean())}
    out["cosine_auc"] = _auc(np.concatenate(y_cos), np.concatenate(cosines)) if cosines else None
    return out


# ------------------------------------------------------------------ in the attack harness


def label_leakage_row(ctx: AttackContext) -> dict:
    """Train the label-private split (no defence) and score every gradient the server received."""
    data, profile = ctx.data, ctx.profile
    torch.manual_seed(ctx.seed)
    g = torch.Generator().manual_seed(ctx.seed)
    table = ctx.task.table(profile, data.x_train.shape[1], data.num_classes)
    parts = parts_on(label_private_parts(table, ctx.task.cut(profile)), data.device)
    make = lambda params: torch.optim.Adam(params, lr=1e-3)  # noqa: E731
    model = two_party(parts, ctx.task.loss, make_optimizer=make)
    grads, labels = [], []
    x, y = torch.cat([data.x_train, data.x_aux]), torch.cat([data.y_train, data.y_aux])
    with Recorder(model.channel, "gradient", receiver="server") as rec:
        for _ in range(profile.label_steps):
            i = torch.randint(0, x.shape[0], (profile.batch_size,), generator=g).to(x.device)
            model.train_step(x[i], y[i])
            grads.append(next(iter(rec.transfers[-1].tensors.values())))
            labels.append(y[i])
    counts = torch.bincount(y, minlength=2)
    positive = int(counts.argmin())
    return {"attack": "label-leakage", "defence": "none", "seed": ctx.seed, "positive_class": positive,
            **leakage_scores(grads, labels, positive)}


SPEC = AttackSpec(
    "label-leakage",
    "honest-but-curious server scores the gradients it receives in label-private training (Li et al. 2022)",
    "label leakage", UNDEFENDED, label_leakage_row, needs_per_example_labels=True)
