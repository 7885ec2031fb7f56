"""Where 2-GPU scaling goes: NCCL all-reduce bandwidth, and DDP with and without bf16 gradient compression.

Plain torch.multiprocessing + NCCL (no Ray), so it also gives the raw-DDP figure outside Ray Train.

    python bench/bench_ddp_comm.py --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F


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


def ddp_rate(device: torch.device, steps: int, hook: str | None) -> float:
    """Samples/s per GPU of the bf16 encoder under DDP, optionally with a gradient-compression hook."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from bench_train_gpu import Encoder, SEQ, VOCAB

    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(Encoder().to(device), device_ids=[device.index])
    if hook == "bf16":
        model.register_comm_hook(None, default_hooks.bf16_compress_hook)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x, y = torch.randint(0, VOCAB, (64, SEQ), device=device), torch.randint(0, 10, (64,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * 64 / (time.perf_counter() - start)


def worker(rank: int, world: int, steps: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("nccl", rank=rank, world_size=world)
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    result = {"allreduce_bus_gbps": allreduce_gbps(device)}
    for repeat in range(2):
        for hook in (None, "bf16"):
            result[f"ddp_bf16_samples_per_s_per_gpu hook={hook} #{repeat}"] = ddp_rate(device, steps, hook)
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(result, handle, indent=1)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="ddp_comm.json")
    args = parser.parse_args()
    world = torch.cuda.device_count()
    mp.spawn(worker, args=(world, args.steps, args.out), nprocs=world)
    print(open(args.out).read())


if __name__ == "__main__":
    main()
