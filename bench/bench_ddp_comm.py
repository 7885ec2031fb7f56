"""Where 2-GPU scaling goes: the bf16 encoder on 1 GPU, then on 2 GPUs with and without DDP and its variants.

Plain torch.multiprocessing + NCCL (no Ray), so it also gives the raw-DDP figure outside Ray Train. Each
variant runs on both GPUs at once (same processes, interleaved, repeated):

- ``alone``: no DDP, no communication — what two busy GPUs on one host give on their own;
- ``ddp``: DDP defaults (25 MB buckets);
- ``ddp_view_static``: ``gradient_as_bucket_view=True, static_graph=True`` (no gradient copies);
- ``ddp_one_bucket``: one 200 MB bucket (no overlap with backward, one all-reduce);
- ``ddp_bucket5``: 5 MB buckets (more, earlier all-reduces);
- ``ddp_no_sync``: DDP's wrapper but ``no_sync()`` every step (the wrapper's cost, no communication);
- ``ddp_bf16_hook``: bf16 gradient compression.

``--channels N`` sets ``NCCL_MAX_NCHANNELS`` (fewer SMs taken from the backward by NCCL's kernels).

    python bench/bench_ddp_comm.py --steps 60 [--channels 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

VARIANTS = ("alone", "ddp", "ddp_view_static", "ddp_one_bucket", "ddp_bucket5", "ddp_no_sync", "ddp_bf16_hook")


def allreduce_gbps(device: torch.device, megabytes: int = 76, reps: int = 20) -> float:
    """Bus bandwidth of an all-reduce of ``megabytes`` (the fp32 gradients of the 19M-parameter encoder)."""
    tensor = torch.ones(megabytes * 2**20 // 4, device=device)
    for _ in range(3):
        dist.all_reduce(tensor)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(tensor)
    torch.cuda.synchronize()
    world = dist.get_world_size()
    return tensor.numel() * 4 * reps * 2 * (world - 1) / world / (time.perf_counter() - start) / 1e9


def wrap(model: torch.nn.Module, device: torch.device, variant: str) -> torch.nn.Module:
    """The model as the variant runs it."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    if variant == "alone" or not dist.is_initialized():
        return model
    options = {"ddp_view_static": {"gradient_as_bucket_view": True, "static_graph": True},
               "ddp_one_bucket": {"bucket_cap_mb": 200}, "ddp_bucket5": {"bucket_cap_mb": 5}}.get(variant, {})
    ddp = DDP(model, device_ids=[device.index], **options)
    if variant == "ddp_bf16_hook":
        ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)
    return ddp


def rate(device: torch.device, steps: int, variant: str) -> float:
    """Samples/s of this GPU: the bf16 encoder, batch 64 × 256, fused AdamW."""
    from bench_train_gpu import Encoder, SEQ, VOCAB

    torch.manual_seed(0)
    model = wrap(Encoder().to(device), device, variant)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x, y = torch.randint(0, VOCAB, (64, SEQ), device=device), torch.randint(0, 10, (64,), device=device)
    skip_sync = model.no_sync if variant == "ddp_no_sync" else contextlib.nullcontext

    def step() -> None:
        with skip_sync(), torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    if dist.is_initialized():
        dist.barrier()  # both GPUs start the timed steps together
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * 64 / (time.perf_counter() - start)


def worker(rank: int, world: int, steps: int, repeats: int, out: str, variants: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    result: dict = {"allreduce_bus_gbps": allreduce_gbps(device), "affinity": sorted(os.sched_getaffinity(0)),
                    "nccl_max_nchannels": os.environ.get("NCCL_MAX_NCHANNELS")}
    for repeat in range(repeats):
        for variant in variants:
            value = rate(device, steps, variant)
            gathered = [None] * world
            dist.all_gather_object(gathered, value)
            result.setdefault(variant, []).append(min(gathered))  # the slower GPU sets the pace
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(result, handle, indent=1)
    dist.destroy_process_group()


def single(steps: int, repeats: int) -> list[float]:
    """The same encoder on GPU 0 alone, no other GPU busy: the per-GPU reference."""
    return [rate(torch.device("cuda", 0), steps, "alone") for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--channels", type=int, default=None, help="NCCL_MAX_NCHANNELS for the 2-GPU run")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"a subset of {','.join(VARIANTS)}")
    parser.add_argument("--out", default="ddp_comm.json")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if args.channels:
        os.environ["NCCL_MAX_NCHANNELS"] = str(args.channels)
    world = torch.cuda.device_count()
    mp.spawn(worker, args=(world, args.steps, args.repeats, args.out, variants), nprocs=world)
    result = json.load(open(args.out))
    result["one_gpu_alone"] = single(args.steps, args.repeats)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    reference = max(result["one_gpu_alone"])
    print(f"all-reduce bus bandwidth {result['allreduce_bus_gbps']:.0f} GB/s; NCCL_MAX_NCHANNELS={result['nccl_max_nchannels']}, "
          f"NCCL_PROTO={os.environ.get('NCCL_PROTO')}")
    print(f"{'variant':<18} {'samples/s per GPU (repeats)':<34} {'÷ 1 GPU alone':>14}")
    for variant in ("one_gpu_alone", *variants):
        values = result[variant]
        print(f"{variant:<18} {', '.join(f'{v:,.0f}' for v in values):<34} {max(values) / reference:>14.3f}")


if __name__ == "__main__":
    main()
