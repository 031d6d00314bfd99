"""The original study's printed numbers, to set beside medsplit's sweeps.

medsplit grew out of a split ResNet-34 / U-Net healthcare study (ORIGINAL_STUDY_REPO). Its
cut and client-count sweeps are the reference a user compares against, so the numbers are
kept here with their sources and with the caveats that make them *not* directly
comparable (different metric, evaluation on training images, one unseeded run).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ORIGINAL_STUDY", "ORIGINAL_STUDY_CAVEATS", "ORIGINAL_STUDY_REPO"]

#: Where every ORIGINAL_STUDY number comes from: a 2023 BITS Pilani course project's notebooks.
ORIGINAL_STUDY_REPO = "github.com/Aadit3003/split-learning-healthcare"


def _accuracy_row(value: int, printed: str, source: str, **extra: Any) -> dict[str, Any]:
    """A retinopathy row from one printed ``Test_Accuracy`` list (percent, one entry per client).

    The notebooks never reset ``correct``/``total`` between clients, so entry k is pooled over
    clients 0..k; the last entry (all clients) is the row's metric, as a fraction. Parsing the
    printout here keeps the metric and its source text from drifting apart.
    """
    entries = [float(x) for x in printed.strip("[]").split(",")]
    return {"value": value, "metric": entries[-1] / 100, "metric_name": "accuracy (train-set resample)",
            "protocol": "sequential", "epochs": 20, "printed": printed, "source": source, **extra}


_CUT_LOG = ("Cut_Graph_ResNet_S.ipynb, printed results_cut.csv log, 'Test_Accuracy' "
            "(2 clients, 1000 images/client, 20 epochs)")
_CLIENTS_LOG = ("Clients_Graph_ResNet_S.ipynb, printed results_clients.csv log, 'Test_Accuracy' "
                "(notebook's cut 3; the log records no cut; 1000 images/client)")

#: The original study's numbers, keyed by ``(task, axis)``; each row is ``{"value": axis value,
#: "metric": float, "metric_name": what the study measured, "protocol": str, "source": notebook
#: and printout}`` plus ``printed`` (the printout verbatim), ``epochs`` and optionally ``note``
#: and ``bytes_per_epoch`` (the study gives none). Read from the repository's notebooks
#: (ORIGINAL_STUDY_REPO); only numbers printed in cell outputs are recorded, none read off a plot,
#: and the PDF report could not be read. The study's axis values use our numbering (ResNet-34
#: ``CUT=N`` = torchvision children 0..N on the client; U-Net ``CUT=N`` = N encoder blocks).
#: Caveats that make these NOT comparable with our metric (see ORIGINAL_STUDY_CAVEATS):
#: retinopathy is accuracy, not AUC, and -- by the notebooks' evaluation code and the arithmetic
#: of the printed values (69.45 % needs 2000 samples) -- measured on 1000 draws with replacement
#: from each client's own training images, not on the 200 test images; one unseeded run per
#: point; images taken in CSV order (both eyes of a patient together), no patient grouping. Lungs
#: is validation Jaccard, not Dice, at cut 1 only. Rows of the same value are separate printouts:
#: a second training run (cut 2), or the same trained model evaluated again (clients 2, 3, 6).
#: Left out: a 20-image, 3-epoch smoke run at cut 2 ([50.0, 37.5]) and a duplicate 6-client row;
#: the centralised U-Net notebook ran only a 20-image debugging subset (val Jaccard 0.8511 on 4).
ORIGINAL_STUDY: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("retinopathy", "cut"): [
        _accuracy_row(2, "[63.5, 52.75]", _CUT_LOG, note="first of two training runs at cut 2"),
        _accuracy_row(2, "[63.5, 60.25]", _CUT_LOG, note="second training run at cut 2"),
        _accuracy_row(3, "[69.4, 69.45]", _CUT_LOG),
        _accuracy_row(5, "[68.7, 62.85]", _CUT_LOG),
        _accuracy_row(7, "[70.8, 62.5]", _CUT_LOG, note="also printed by the notebook's last evaluation cell"),
    ],
    ("retinopathy", "clients"): [
        _accuracy_row(1, "[63.1]", _CLIENTS_LOG),
        _accuracy_row(2, "[74.3, 64.35]", _CLIENTS_LOG),
        _accuracy_row(2, "[72.7, 75.1]", _CLIENTS_LOG, note="same trained model as the row above, evaluated again"),
        _accuracy_row(3, "[77.5, 80.4, 82.16666666666667]", _CLIENTS_LOG),
        _accuracy_row(3, "[74.0, 62.7, 59.96666666666667]", _CLIENTS_LOG,
                      note="same trained model as the row above, evaluated again (the notebook's last printout)"),
        _accuracy_row(4, "[55.2, 56.25, 56.3, 57.15]", _CLIENTS_LOG, note="logged note: different trainloaders"),
        _accuracy_row(4, "[70.4, 70.35, 70.8, 71.05]", _CLIENTS_LOG, epochs=25,
                      note="the row above trained 5 more epochs on one shared trainloader"),
        _accuracy_row(6, "[90.4, 91.35, 91.36666666666666, 91.45, 91.3, 91.46666666666667]", _CLIENTS_LOG,
                      note="logged twice, identically"),
        _accuracy_row(6, "[89.1, 90.6, 90.33333333333333, 90.775, 90.68, 90.6]", _CLIENTS_LOG,
                      note="same trained model as the row above, evaluated again"),
    ],
    ("lungs", "cut"): [
        {"value": 1, "metric": 0.9314, "metric_name": "Jaccard (validation)", "protocol": "sequential", "epochs": 10,
         "printed": "Epoch [10/10], loss: 0.1929 - jaccard: 0.9313 - acc: 0.9820 - val_loss: 0.1870 - "
                    "val_jaccard: 0.9314 - val_acc: 0.9826",
         "source": "u-net-split.ipynb, printed fit() log, last epoch (also the best-validation-loss checkpoint); "
                   "1 client, 563 train / 141 validation images",
         "note": "val_acc is pixel accuracy"},
    ],
}

#: How the original study measured, per task; shown above its numbers in the sweep report.
ORIGINAL_STUDY_CAVEATS: dict[str, str] = {
    "retinopathy": (
        "Original study: ResNet-34 from scratch, 2 classes (Kaggle diabetic-retinopathy-resized, its "
        "trainLabels_Binary.csv), 1000 class-balanced images per client taken in CSV order (no patient grouping), "
        "20 epochs, one unseeded run per point. Its metric is accuracy, not AUC, and its evaluation code scores "
        "each client's training loader (1000 draws with replacement from that client's own training images), "
        "not the 200-image test loader; correct/total run on across clients, so each printed list is pooled over "
        "clients 0..k and the last entry (shown) covers all clients. In the clients notebook the training set-up "
        "changed between runs (per-client or one shared trainloader) and the logged Notes column is unreliable."),
    "lungs": (
        "Original study: split U-Net, one client, cut 1 only, 10 epochs, DiceBCE loss, Montgomery (138) + Shenzhen "
        "(566) images split 80/20 at random without a seed (563 train / 141 validation), no separate test set: the "
        "validation set also chose the saved checkpoint. Its metric is Jaccard (IoU), not Dice: sklearn "
        "jaccard_score per batch of 8 on logits thresholded at 0.5, averaged over batches. Its other cuts appear "
        "only as plots, which are not read here."),
}
