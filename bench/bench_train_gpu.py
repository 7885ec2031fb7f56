"""GPU training benchmark: a raw torch DDP loop vs our MixedPrecisionTrainer, inside Ray Train worker groups.

For 1 and then N GPUs, one ``TorchTrainer`` worker group runs every configuration (model × precision),
raw and ours interleaved and repeated, so start-up is paid once per group and host drift hits both sides
alike. "Raw" is the plain loop a user would write (DDP + AdamW + autocast/GradScaler) on the same
processes and NCCL group; "ours" is :class:`MixedPrecisionTrainer` (fused AdamW, OOM recovery, accumulation
windows) on the model from ``ray.train.torch.prepare_model``. Also measured: the bf16 matrix rate
(for model-FLOPs utilisation), peak memory, time from ``fit()`` to the first step on every worker, and a
real CUDA out-of-memory recovery under a memory-fraction cap.

    python bench/bench_train_gpu.py --gpus 2 --out results.json        (on a machine with 2 GPUs)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

SEQ, DIM, LAYERS, HEADS, VOCAB = 256, 512, 6, 8, 8192


class Encoder(nn.Module):
    """The 6-layer d=512 transformer encoder classifier of ANCHORS.md (batch 64 × seq 256)."""

    def __init__(self, dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        layer = nn.TransformerEncoderLayer(DIM, HEADS, 4 * DIM, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = nn.Linear(DIM, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


def encoder_flops_per_sample() -> float:
    """Training FLOPs per sample: 3 × forward (matmuls: 24·d² per token per layer, attention 4·T·d)."""
    forward = LAYERS * SEQ * (24 * DIM * DIM + 4 * SEQ * DIM) + 2 * DIM * 10
    return 3.0 * forward


def cnn() -> nn.Module:
    """A VGG-style CNN for 3×32×32 inputs (batch 256)."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 64), *block(64, 128), *block(128, 256), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10))


class Tensors(torch.utils.data.Dataset):
    """GPU-resident examples fetched a batch at a time (what deepseek_ray.data.ArrayDataset does; kept local so
    this script needs only deepseek_ray.optim on the GPU host)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        if self.x.is_cuda:  # pinned + non_blocking: the index copy does not stall the host
            index = index.pin_memory().to(self.x.device, non_blocking=True)
        return self.x[index], self.y[index]


MODELS = {
    "transformer": (lambda: Encoder(), lambda n: torch.randint(0, VOCAB, (n, SEQ)), 64),
    "cnn": (cnn, lambda n: torch.randn(n, 3, 32, 32), 256),
}


def fp32_means_fp32() -> None:
    """TF32 off, as in ANCHORS (imported here: Ray pickles this script's functions by value, and the
    backend objects behind ``torch.backends.cudnn`` cannot be pickled)."""
    import torch.backends.cuda as cuda_backend
    import torch.backends.cudnn as cudnn_backend

    cuda_backend.matmul.allow_tf32 = False
    cudnn_backend.allow_tf32 = False


def matmul_tflops(device: torch.device) -> float:
    """Measured dense bf16 matrix rate (8192² × 8192)."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * reps / (time.perf_counter() - start) / 1e12


def raw_run(model_name: str, precision: str, steps: int, device: torch.device, world: int) -> tuple[float, float]:
    """The plain loop: DDP (when world > 1), AdamW, autocast and GradScaler. Returns (samples/s, peak GiB)."""
    build, make_x, batch = MODELS[model_name]
    torch.manual_seed(0)
    model = build().to(device)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    n = batch * (steps * world + 5)  # as much resident data as ours holds, so peak memory compares like with like
    data_x, data_y = make_x(n).to(device), torch.randint(0, 10, (n,), device=device)
    order = torch.randperm(n, device=device)  # a fresh batch each step, gathered on the GPU as ours does
    batches = iter(order.split(batch))

    def step() -> None:
        index = next(batches)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(data_x[index]), data_y[index])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return steps * batch / wall, torch.cuda.max_memory_allocated(device) / 2**30


def ours_run(model_name: str, precision: str, steps: int, device: torch.device, world: int, compile: bool | str = False,
             accumulation: int = 1, oom_recovery: bool = True) -> tuple[float, float]:
    """The same work through MixedPrecisionTrainer.train_epoch (``steps`` micro-batches per rank).
    Returns (samples/s, peak GiB)."""
    import ray.train.torch

    from deepseek_ray.optim import MixedPrecisionTrainer

    build, make_x, batch = MODELS[model_name]
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(build()) if world > 1 else build().to(device)
    trainer = MixedPrecisionTrainer(model, "adamw", 1e-4, weight_decay=0.0, fp16=precision == "fp16",
                                    bf16=precision == "bf16", per_device_train_batch_size=batch, compile=compile,
                                    gradient_accumulation_steps=accumulation, oom_recovery=oom_recovery,
                                    device=device, scheduler="constant")
    warm_n = batch * max(5, accumulation) * world
    warm = Tensors(make_x(warm_n).to(device), torch.randint(0, 10, (warm_n,), device=device))
    timed = Tensors(make_x(batch * steps * world).to(device), torch.randint(0, 10, (batch * steps * world,), device=device))
    trainer.train_epoch(warm)
    if compile:  # compilation spans several calls (DDP buckets, recompiles): warm once more
        trainer.train_epoch(warm)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    trainer.train_epoch(timed)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return steps * batch / wall, torch.cuda.max_memory_allocated(device) / 2**30


def oom_recovery(device: torch.device) -> dict:
    """A real CUDA OOM: cap the allocator between the peaks of micro-batch 32 and 64, start at 64."""
    from deepseek_ray.optim import MixedPrecisionTrainer

    fp32_means_fp32()
    generator = torch.Generator().manual_seed(0)
    data = Tensors(torch.randint(0, VOCAB, (64 * 4, SEQ), generator=generator), torch.randint(0, 10, (64 * 4,), generator=generator))

    def run(batch: int, accumulation: int) -> tuple[MixedPrecisionTrainer, float]:
        torch.manual_seed(0)
        trainer = MixedPrecisionTrainer(Encoder(dropout=0.0).to(device), "adamw", 1e-4, per_device_train_batch_size=batch,
                                        gradient_accumulation_steps=accumulation, device=device, scheduler="constant")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        trainer.fit(data, epochs=1)
        return trainer, torch.cuda.max_memory_reserved(device)

    reference, peak64 = run(64, 1)
    _, peak32 = run(32, 2)
    cap = (peak32 + peak64) / 2
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.get_device_properties(device).total_memory, device)
    try:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            drilled, _ = run(64, 1)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    diff = max(float((p - q).abs().max()) for p, q in zip(reference.model.parameters(), drilled.model.parameters()))
    return {"peak_reserved_gib_batch64": peak64 / 2**30, "peak_reserved_gib_batch32": peak32 / 2**30, "cap_gib": cap / 2**30,
            "oom_events": drilled.oom_events, "micro_batch_after": drilled.batch_size, "accumulation_after": drilled.accumulation,
            "steps": [reference.step, drilled.step], "max_param_diff_vs_no_oom": diff,
            "warnings": [str(w.message) for w in caught if "out of memory" in str(w.message)]}


def loop(config: dict) -> None:
    """Every rank runs every configuration; rank 0 writes the table (after each row, so a cut-short run
    still leaves what it measured)."""
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.cuda.set_device(device)
    first_step = torch.tensor([time.time()], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(first_step, op=dist.ReduceOp.MAX)
    rows = {"world": world, "compile": config["compile"], "startup_s": float(first_step) - config["fit_start"], "runs": [],
            "device": f"{device} of CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}"}
    if rank == 0:
        rows["bf16_matmul_tflops"] = matmul_tflops(device)
    host = dist.new_group(backend="gloo") if world > 1 else None  # barriers that leave the GPUs alone

    def record(kind: str, model_name: str, precision: str, repeat: int, measure) -> None:
        try:
            rate, peak = measure()
            row = {"samples_per_s_per_gpu": rate, "peak_gib": peak}
        except Exception as err:  # reported in the table, the other rows still get measured
            row = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        rows["runs"].append({"model": model_name, "precision": precision, "kind": kind, "repeat": repeat, **row})
        torch.cuda.empty_cache()
        if rank == 0:
            Path(config["out"]).write_text(json.dumps(rows, indent=2))

    def solo(model_name: str, precision: str) -> tuple[float, float]:
        """Rank 0 alone, the other GPU idle: the 1-GPU reference, interleaved with the 2-GPU runs."""
        result = raw_run(model_name, precision, config["steps"], device, 1) if rank == 0 else (0.0, 0.0)
        dist.barrier(group=host)
        return result

    steps = config["steps"]
    for model_name, precision in config["configs"]:
        fp32_means_fp32()
        for repeat in range(config["repeats"]):
            record("raw", model_name, precision, repeat, lambda: raw_run(model_name, precision, steps, device, world))
            record("ours", model_name, precision, repeat, lambda: ours_run(model_name, precision, steps, device, world))
            if world > 1 and precision == "bf16":
                record("solo", model_name, precision, repeat, lambda: solo(model_name, precision))
                for accumulation in config["accumulations"]:
                    record(f"ours, accumulation {accumulation}", model_name, precision, repeat,
                           lambda: ours_run(model_name, precision, steps, device, world, accumulation=accumulation))
                record("ours, oom_recovery off", model_name, precision, repeat,
                       lambda: ours_run(model_name, precision, steps, device, world, oom_recovery=False))
                record("alone", model_name, precision, repeat, lambda: raw_run(model_name, precision, steps, device, 1))
    if config["compile"]:  # compiling takes a while: once per group, then repeated runs reuse it
        for repeat in range(config["repeats"]):
            record("ours+compile", "transformer", "bf16", repeat,
                   lambda: ours_run("transformer", "bf16", steps, device, world, compile=config["compile"]))
    if world == 1 and config["oom"]:
        rows["oom_recovery"] = oom_recovery(device)
    if rank == 0:
        Path(config["out"]).write_text(json.dumps(rows, indent=2))
    ray.train.report({"done": 1})


def run_group(gpus: int, args: argparse.Namespace, out: Path) -> dict:
    from ray.train import RunConfig, ScalingConfig

    from deepseek_ray.ray_compat import torch_trainer_class

    configs = [(m, p) for m in args.models.split(",") for p in args.precisions.split(",")]
    config = {"configs": configs, "repeats": args.repeats, "steps": args.steps, "out": str(out), "fit_start": time.time(),
              "compile": args.compile, "oom": gpus == 1 and args.oom,
              "accumulations": [int(a) for a in args.accumulation.split(",") if a]}
    torch_trainer_class()(loop, train_loop_config=config, scaling_config=ScalingConfig(num_workers=gpus, use_gpu=True),
                 run_config=RunConfig(name=f"bench-{gpus}gpu-{int(time.time())}", storage_path="/tmp/bench_train")).fit()
    return json.loads(out.read_text())


KIND_ORDER = ("raw", "ours", "ours, oom_recovery off", "ours, accumulation", "ours+compile", "solo", "alone")


def summarise(groups: list[dict]) -> str:
    """A markdown table: per GPU count, model, precision and kind, the mean of the repeats, its ratio to the
    raw loop, and (2 GPUs) per-GPU scaling against rank 0 running alone in the same group, interleaved."""
    flops = encoder_flops_per_sample()
    rate = next(g["bf16_matmul_tflops"] for g in groups if "bf16_matmul_tflops" in g)
    lines = ["| GPUs | model | precision | run | samples/s/GPU (min–max) | ÷ raw | scaling ÷ solo | peak GiB | MFU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group in groups:
        keys = sorted({(r["model"], r["precision"]) for r in group["runs"]}, key=lambda k: (k[0] != "transformer", k[1]))
        for model, precision in keys:
            def runs(kind: str) -> list[dict]:
                return [r for r in group["runs"] if (r["model"], r["precision"], r["kind"]) == (model, precision, kind)]

            def mean(kind: str, field: str = "samples_per_s_per_gpu") -> float | None:
                values = [r[field] for r in runs(kind) if field in r]
                return sum(values) / len(values) if values else None

            raw, solo = mean("raw"), mean("solo")
            present = {r["kind"] for r in group["runs"] if (r["model"], r["precision"]) == (model, precision)}
            order = {kind: max((i for i, k in enumerate(KIND_ORDER) if kind.startswith(k)), key=lambda i: len(KIND_ORDER[i]))
                     for kind in present}  # the longest name it starts with: "ours, accumulation 8" → "ours, accumulation"
            for kind in sorted(present, key=lambda k: (order[k], len(k), k)):
                value = mean(kind)
                if value is None:
                    lines.append(f"| {group['world']} | {model} | {precision} | {kind} | failed: {runs(kind)[0]['error']} | | | | |")
                    continue
                rates = [r["samples_per_s_per_gpu"] for r in runs(kind) if "samples_per_s_per_gpu" in r]
                label = f"{kind} ({group['compile']})" if kind == "ours+compile" else kind
                versus_raw = f"{value / raw:.3f}" if raw and kind != "raw" else "–"
                scaling = f"{value / solo:.3f}" if solo and kind not in ("solo",) else "–"
                mfu = f"{100 * value * flops / (rate * 1e12):.1f}%" if model == "transformer" else "–"
                lines.append(f"| {group['world']} | {model} | {precision} | {label} | {value:,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | "
                             f"{versus_raw} | {scaling} | {mean(kind, 'peak_gib'):.2f} | {mfu} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=torch.cuda.device_count())
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", nargs="?", const="reduce-overhead", default=False,
                        help="also time bf16 + torch.compile in this mode (default reduce-overhead: CUDA graphs)")
    parser.add_argument("--models", default="transformer,cnn", help="comma-separated: transformer, cnn")
    parser.add_argument("--precisions", default="fp32,fp16,bf16", help="comma-separated: fp32, fp16, bf16")
    parser.add_argument("--no-oom", dest="oom", action="store_false", help="skip the real CUDA OOM drill")
    parser.add_argument("--accumulation", default="4", help="comma-separated accumulation steps timed on 2+ GPUs (bf16)")
    parser.add_argument("--out", type=Path, default=Path("bench_train_gpu.json"))
    args = parser.parse_args()
    import ray

    from deepseek_ray.ray_compat import TRAIN_ENV

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    for key, value in TRAIN_ENV.items():  # the start-up settings deepseek_ray.train uses
        os.environ.setdefault(key, value)
    ray.init(log_to_driver=True, logging_level="ERROR")
    groups = []
    for gpus in sorted({1, args.gpus}):
        groups.append(run_group(gpus, args, args.out.with_suffix(f".{gpus}gpu.json")))
        print(json.dumps(groups[-1], indent=1), flush=True)
    table = summarise(groups)
    args.out.write_text(json.dumps({"groups": groups, "table": table, "gpu": torch.cuda.get_device_name(0),
                                    "torch": torch.__version__, "flops_per_sample": encoder_flops_per_sample()}, indent=2))
    print(table)
    for group in groups:
        print(f"{group['world']} GPU(s): fit() → first step on every worker {group['startup_s']:.1f} s")
        if group["world"] > 1:  # against the 1-GPU group too (another moment on the same machine)
            one = next(g for g in groups if g["world"] == 1)
            for kind in ("raw", "ours", "ours+compile"):
                rates = {g["world"]: [r["samples_per_s_per_gpu"] for r in g["runs"] if "samples_per_s_per_gpu" in r
                                      and (r["model"], r["precision"], r["kind"]) == ("transformer", "bf16", kind)] for g in (one, group)}
                if rates[1] and rates[group["world"]]:
                    ratio = sum(rates[group["world"]]) / len(rates[group["world"]]) / (sum(rates[1]) / len(rates[1]))
                    print(f"scaling against the 1-GPU group, transformer bf16 {kind}: {ratio:.3f} per GPU")
        if "oom_recovery" in group:
            print("OOM recovery:", json.dumps(group["oom_recovery"]))


if __name__ == "__main__":
    main()
