"""Model-FLOPs utilisation of the bf16 encoder on one GPU: eager vs torch.compile modes, through our trainer.

The 6-layer d=512 encoder of ANCHORS.md (batch 64 × seq 256, 31.4 GFLOP per training sample) trained by
:class:`MixedPrecisionTrainer` (bf16 autocast, fused AdamW, clip 1.0) with ``compile`` set to each mode; MFU
is against the bf16 matrix rate measured in the same process. No Ray: this isolates the step itself.

    python bench/bench_compile.py --steps 100 --modes eager,default,max-autotune-no-cudagraphs
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench_train_gpu import MODELS, Tensors, encoder_flops_per_sample, matmul_tflops


def samples_per_s(mode: str, steps: int, device: torch.device, clip: float | None) -> tuple[float, float]:
    """(samples/s, seconds spent compiling and warming up) for one compile mode."""
    from deepseek_ray.optim import MixedPrecisionTrainer

    build, make_x, batch = MODELS["transformer"]
    torch.manual_seed(0)
    trainer = MixedPrecisionTrainer(build().to(device), "adamw", 1e-4, weight_decay=0.0, bf16=True, device=device,
                                    per_device_train_batch_size=batch, scheduler="constant", clip_grad_norm=clip,
                                    compile=False if mode == "eager" else mode)
    warm = Tensors(make_x(batch * 6).to(device), torch.randint(0, 10, (batch * 6,), device=device))
    timed = Tensors(make_x(batch * steps).to(device), torch.randint(0, 10, (batch * steps,), device=device))
    start = time.perf_counter()
    trainer.train_epoch(warm)
    trainer.train_epoch(warm)
    torch.cuda.synchronize()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train_epoch(timed)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start), warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", default="eager,default,max-autotune-no-cudagraphs")
    parser.add_argument("--out", default="compile.json")
    args = parser.parse_args()
    device = torch.device("cuda", 0)
    peak = matmul_tflops(device)
    flops = encoder_flops_per_sample()
    rows = {}
    for mode in args.modes.split(","):
        for clip in (1.0, None):
            key = f"{mode}{'' if clip else ' (no clip)'}"
            runs = [samples_per_s(mode, args.steps, device, clip) for _ in range(args.repeats)]
            best = max(rate for rate, _ in runs)
            rows[key] = {"samples_per_s": [rate for rate, _ in runs], "warmup_s": [w for _, w in runs],
                         "mfu": best * flops / (peak * 1e12)}
            print(f"{key:<40} {best:>9,.0f} samples/s  MFU {rows[key]['mfu']:.1%}  "
                  f"(warm-up {runs[0][1]:.0f} s)", flush=True)
    print(f"bf16 matrix rate {peak:.0f} TFLOP/s; {flops / 1e9:.1f} GFLOP per training sample")
    with open(args.out, "w") as handle:
        json.dump({"bf16_tflops": peak, "flops_per_sample": flops, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
