"""What ``train.cpu_amp`` (bf16 autocast on CPU) buys: one training step, float32 against bf16.

Times the whole model's training step (forward, loss, backward, Adam) on a fixed random batch, on one
thread, for the two models medsplit trains at the sizes its CPU studies use: ResNet-34 at 128 px
(EyePACS) and the smp U-Net at 96 px (lungs). Prints a table and writes JSON to
benchmarks/results/. bf16 pays off only on a CPU that computes it in hardware (AVX512-BF16 or AMX);
the table says whether this one does.

    python benchmarks/cpu_bf16.py                  # both models, 5 timed steps each
    python benchmarks/cpu_bf16.py --steps 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medsplit.models import build_model
from medsplit.train.precision import cpu_bf16_is_native

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {  # name -> (build kwargs, image size, batch, loss)
    "resnet34": ({"num_classes": 2}, 128, 32, lambda out, y: F.cross_entropy(out, y.long().squeeze(1))),
    "unet-smp": ({"num_classes": 1, "in_channels": 1}, 96, 8, lambda out, y: F.binary_cross_entropy_with_logits(out, y)),
}


def seconds_per_step(name: str, bf16: bool, steps: int, warmup: int) -> float:
    kwargs, size, batch, loss_fn = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(batch, kwargs.get("in_channels", 3), size, size)
    y = torch.randint(0, 2, (batch, 1)).float() if name == "resnet34" else (torch.rand(batch, 1, size, size) > 0.5).float()
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)  # autocast keeps both losses in float32
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]  # the median: robust to another job's burst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=str(RESULTS / "cpu-bf16.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    native = cpu_bf16_is_native()
    rows = []
    print(f"CPU: {platform.processor() or platform.machine()}, native bf16: {native}, threads: {args.threads}")
    print(f"{'model':10} {'size':>5} {'batch':>5} {'fp32 s/step':>12} {'bf16 s/step':>12} {'speed-up':>9}")
    for name in args.models.split(","):
        _, size, batch, _ = MODELS[name]
        fp32 = seconds_per_step(name, False, args.steps, args.warmup)
        bf16 = seconds_per_step(name, True, args.steps, args.warmup)
        rows.append({"model": name, "size": size, "batch": batch, "fp32_s_per_step": fp32, "bf16_s_per_step": bf16,
                     "speedup": fp32 / bf16})
        print(f"{name:10} {size:5d} {batch:5d} {fp32:12.3f} {bf16:12.3f} {fp32 / bf16:8.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"what": "median seconds per training step, float32 against bf16 autocast on CPU",
                                          "machine": platform.platform(), "native_bf16": native, "threads": args.threads,
                                          "torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
