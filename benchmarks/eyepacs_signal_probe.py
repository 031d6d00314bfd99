"""Is there referable-DR signal at this image size, and does a preprocessing expose it? A
logistic regression on 24 brightness-histogram features of each photograph (the share of the
disc above 8 levels, per colour channel), trained on the training split and scored on
validation, once on the photographs as decoded and once after local contrast. No network: a
floor on what the images carry that a CNN should at least find.

    MEDSPLIT_DATA=../shared/data python benchmarks/eyepacs_signal_probe.py --img-size 128

Prints a table and writes ``benchmarks/results/eyepacs-signal-probe-<size>px.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from medsplit.config import default_data_root
from medsplit.data.fundus_contrast import local_contrast
from medsplit.data.retinopathy import load_retinopathy

RESULTS = Path(__file__).resolve().parent / "results"
# Levels whose exceedance shares make the features: around the mean for the raw photographs,
# around neutral grey (128) for local contrast, where lesions are the departures from it.
LEVELS = {"as decoded": (20, 50, 80, 110, 140, 170, 200, 230), "local contrast": (100, 110, 120, 136, 146, 156, 170, 190)}


def features(images: torch.Tensor, filtered: bool) -> np.ndarray:
    """Per image and channel, the share of disc pixels above each level (disc: any channel > 10)."""
    x = (local_contrast(images) if filtered else images).float()
    disc = images.float().amax(1) > 10
    area = disc.float().sum((1, 2)).clamp(min=1)
    levels = LEVELS["local contrast" if filtered else "as decoded"]
    cols = [((x[:, c] > t) & disc).float().sum((1, 2)) / area for c in range(x.shape[1]) for t in levels]
    return torch.stack(cols, 1).numpy()


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default="eyepacs")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=".cache/medsplit")
    args = p.parse_args(argv)
    start = time.time()
    data = load_retinopathy(args.source, default_data_root(), target="referable", img_size=args.img_size, seed=args.seed,
                            cache_dir=Path(args.cache_dir))
    rows = []
    for name, filtered in (("as decoded", False), ("local contrast", True)):
        f_train, f_val = features(data.train.images, filtered), features(data.val.images, filtered)
        scale = StandardScaler().fit(f_train)
        model = LogisticRegression(max_iter=2000).fit(scale.transform(f_train), data.train.labels.numpy())
        auc = {split: float(roc_auc_score(part.labels.numpy(), model.predict_proba(scale.transform(f))[:, 1]))
               for split, part, f in (("train", data.train, f_train), ("val", data.val, f_val))}
        rows.append({"images": name, "features": f_train.shape[1], "train_auc": auc["train"], "val_auc": auc["val"]})
    print(f"referable DR, {args.source} at {args.img_size} px, seed {args.seed}: logistic regression on histogram features")
    print("| images | features | train AUC | validation AUC |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['features']} | {r['train_auc']:.3f} | {r['val_auc']:.3f} |")
    out = RESULTS / f"eyepacs-signal-probe-{args.img_size}px.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"source": data.source, "img_size": args.img_size, "seed": args.seed, "rows": rows,
                               "n": {s: len(getattr(data, s)) for s in ("train", "val")},
                               "wall_time_s": time.time() - start}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
