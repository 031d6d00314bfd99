"""Test metrics per image group (hospital / site), beside the pooled ones.

A federation of sites is judged on each site's own test images as well as on all of them: a
protocol can look fine pooled while one site, under-served by the shared model, does badly.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def evaluate_by_group(model, task, split: str, batch_size: int, autocast) -> dict[str, dict]:
    """Metrics of ``model`` on each group of ``split``; ``{}`` when the split has one group or none.

    Args:
        model: the selected model (eval mode is set here and restored after).
        task: the run's :class:`~medsplit.tasks.Task`; its split must carry ``groups``.
        split: ``"test"`` (or ``"val"``).
        batch_size: images per forward pass.
        autocast: context factory used for the forward pass (as in the rest of the loop).

    Returns:
        ``{group: task metrics (without a per-image table) and "n"}`` in group-name order.
    """
    groups = getattr(task.split(split), "groups", None)
    if not groups or len(set(groups)) < 2:
        return {}
    model.eval()
    out = {}
    for name in sorted(set(groups)):
        rows = torch.tensor([i for i, g in enumerate(groups) if g == name], dtype=torch.int64)
        metrics = task.new_metrics()
        for idx in rows.split(batch_size):
            batch = task.batch(split, idx, train=False, generator=None)
            with autocast():
                logits = model(batch.x)
            task.update_metrics(metrics, logits.float(), batch)
        # the per-image table is already in the pooled test metrics; keep the summaries only
        out[name] = {k: v for k, v in metrics.aggregate().items() if k != "per_image"}
        out[name]["n"] = int(len(rows))
    model.train()
    return out
