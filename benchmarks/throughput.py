"""Training throughput of a split model against the whole model, on one device, in one run.

Measures images/s for (ResNet-34 classification, or a U-Net with ``--model unet-smp``)
  * model-only: the whole model's training step on a pre-made float batch (the ceiling);
  * whole, end to end: uint8 images cached on the device -> index -> float -> augment -> step;
  * split at each cut, end to end: the same, through parties and the channel.

Targets (GPU): split >= 95% of whole end to end; end to end >= 80% of model-only.
Prints a table and writes JSON to benchmarks/results/.

    python benchmarks/throughput.py                      # auto device, 224 px, batch 64
    python benchmarks/throughput.py --size 64 --batch 32 --steps 10   # a CPU-sized run
    python benchmarks/throughput.py --model unet-smp --size 256 --batch 16 --cuts 1,2,3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medsplit.data.augment import BatchAugment, to_float
from medsplit.models import build_model
from medsplit.split import Channel, cut, two_party

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, steps: int, warmup: int, batch: int, device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t)


def _split_model(table, cut_at, make_opt, loss_fn):
    channel = Channel(check_finite=False)
    return two_party(cut(table, cut_at), loss_fn, channel, make_opt), channel


def _classification_loss(out, y):
    return F.cross_entropy(out.float(), y)


def _segmentation_loss(out, y):
    return F.binary_cross_entropy_with_logits(out.float(), y)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="resnet34", help="resnet34 | resnet18 | unet-smp | unet-classic")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--cuts", default="1,3,5")
    ap.add_argument("--cache-images", type=int, default=1024, help="uint8 images cached on the device")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    fmt = torch.channels_last if cuda else torch.contiguous_format

    segmentation = args.model.startswith("unet")
    channels = 1 if segmentation else 3
    loss_fn = _segmentation_loss if segmentation else _classification_loss
    g = torch.Generator().manual_seed(0)
    cache = torch.randint(0, 256, (args.cache_images, channels, args.size, args.size), dtype=torch.uint8, generator=g).to(device)
    if segmentation:
        labels = (torch.rand(args.cache_images, 1, args.size, args.size, generator=g) > 0.5).float().to(device)
    else:
        labels = torch.randint(0, 2, (args.cache_images,), generator=g).to(device)
    mean, std = (0.5,) * channels, (0.25,) * channels
    augment = BatchAugment().to(device)
    aug_gen = torch.Generator(device=device).manual_seed(0)
    idx_gen = torch.Generator(device=device).manual_seed(1)
    make_opt = lambda p: torch.optim.Adam(p, lr=1e-4)  # noqa: E731

    def next_batch():
        idx = torch.randint(0, args.cache_images, (args.batch,), device=device, generator=idx_gen)
        x = to_float(cache[idx], mean, std)
        if segmentation:  # image and mask must move together: flip both on the device
            flip = torch.rand(args.batch, device=device, generator=aug_gen) < 0.5
            y = labels[idx]
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = torch.where(flip.view(-1, 1, 1, 1), y.flip(-1), y)
            return x.contiguous(memory_format=fmt), y
        x = augment(x, generator=aug_gen).contiguous(memory_format=fmt)
        return x, labels[idx]

    rows = []
    torch.manual_seed(0)
    whole = (build_model(args.model, num_classes=1, in_channels=1) if segmentation else build_model(args.model, num_classes=2))
    whole = whole.to(device).to(memory_format=fmt)
    opt = make_opt(whole.parameters())
    x0, y0 = next_batch()

    def whole_step(x=None, y=None):
        if x is None:
            x, y = next_batch()
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = loss_fn(whole(x), y)
        loss.backward()
        opt.step()

    model_only = _timed(lambda: whole_step(x0, y0), args.steps, args.warmup, args.batch, device)
    rows.append({"setting": "whole, model only", "img_per_s": model_only})
    whole_e2e = _timed(whole_step, args.steps, args.warmup, args.batch, device)
    rows.append({"setting": "whole, end to end", "img_per_s": whole_e2e})
    for c in [int(c) for c in args.cuts.split(",")]:
        model, channel = _split_model(whole, c, make_opt, loss_fn)

        def split_step():
            x, y = next_batch()
            with amp():
                model.train_step(x, y)

        ips = _timed(split_step, args.steps, args.warmup, args.batch, device)
        per_sample = channel.total_bytes() / max(1, channel.step * args.batch)
        rows.append({"setting": f"split CUT={c}, end to end", "img_per_s": ips, "bytes_per_sample": per_sample})
    for r in rows:
        r["vs_whole_e2e"] = r["img_per_s"] / whole_e2e
        r["vs_model_only"] = r["img_per_s"] / model_only
    result = {
        "benchmark": "throughput", "model": args.model, "device": torch.cuda.get_device_name(device) if cuda else f"cpu {platform.machine()} x{torch.get_num_threads()}",
        "size": args.size, "batch": args.batch, "steps": args.steps, "amp_bf16": cuda, "channels_last": cuda,
        "torch": torch.__version__, "rows": rows,
        "targets": {"split_vs_whole_e2e": 0.95, "e2e_vs_model_only": 0.80},
    }
    print(f"\n{args.model} training throughput on {result['device']} ({args.size} px, batch {args.batch}, {args.steps} steps)")
    print(f"{'setting':<28}{'img/s':>10}{'vs whole e2e':>14}{'vs model-only':>15}{'MB/sample':>11}")
    for r in rows:
        mb = f"{r['bytes_per_sample'] / 1e6:.3f}" if "bytes_per_sample" in r else ""
        print(f"{r['setting']:<28}{r['img_per_s']:>10.1f}{r['vs_whole_e2e']:>14.3f}{r['vs_model_only']:>15.3f}{mb:>11}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if cuda else "cpu"
    out = RESULTS / f"throughput-{args.model}-{tag}-{args.size}px.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return result


if __name__ == "__main__":
    main()
