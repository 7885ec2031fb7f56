"""Time-series forecasting: TCN against an LSTM baseline, trained and measured side by side in one run.

Both forecast the next step of a shipped series from the same windows (split by time, scaling fitted
on the training segment), with the same recipe; the checkpoint with the best validation MAE is kept.
Reported on the test segment in the series' own units: MAE, directional accuracy (did the forecast
move the right way from the last observed value), and ONNX Runtime latency of the exported graph
(raw window in, forecast out) at batch 1 and 32, one thread, interleaved between the two models.

    python bench/bench_timeseries.py --dataset co2        # also: sunspots, macrodata, stocks
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepseek_ray.data import DatasetSplits, load_dataset
from deepseek_ray.export.exporter import onnx_session
from deepseek_ray.models import InferenceModel, build_model
from deepseek_ray.optim import MixedPrecisionTrainer

SPECS = {
    "tcn": {"type": "tcn", "channels": 32, "levels": 4, "kernel_size": 3, "dropout": 0.1},
    "lstm": {"type": "lstm", "hidden": 64, "layers": 1, "cell": "lstm"},
}


def train(spec: dict, data: DatasetSplits, epochs: int, lr: float, seed: int) -> InferenceModel:
    torch.manual_seed(seed)
    model = build_model({**spec, **data.model_inputs()})
    trainer = MixedPrecisionTrainer(model, "adamw", lr, weight_decay=1e-4, scheduler="cosine", clip_grad_norm=1.0,
                                    per_device_train_batch_size=64, task="regression", seed=seed)
    best = {"mae": float("inf"), "state": None}

    def keep_best(epoch: int, metrics: dict[str, float]) -> None:
        if metrics["val_mae"] < best["mae"]:
            best.update(mae=metrics["val_mae"], state={k: v.clone() for k, v in model.state_dict().items()})

    trainer.fit(data.train, data.val, epochs=epochs, on_epoch_end=keep_best)
    model.load_state_dict(best["state"])
    return InferenceModel(model, data.preprocessing).eval()


def forecast_quality(predicted: np.ndarray, data: DatasetSplits) -> dict[str, float]:
    """MAE and directional accuracy on the test split, in the series' units."""
    pre = data.preprocessing
    channel = pre["channels"].index(pre["target"])
    last = data.raw("test")[:, channel, -1].numpy()
    truth = data.test.y[:, 0].numpy() * pre["target_std"] + pre["target_mean"]
    predicted = predicted[:, 0]
    moved = truth != last
    direction = np.sign(predicted - last)[moved] == np.sign(truth - last)[moved]
    return {"mae": float(np.abs(predicted - truth).mean()), "direction": float(direction.mean())}


def latencies_ms(sessions: dict, inputs: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Median-able latencies per model, measured in alternation so both see the same machine load."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            feed = {session.get_inputs()[0].name: inputs}
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="co2")
    parser.add_argument("--lookback", type=int, default=None, help="default: the dataset's own")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {"lookback": args.lookback} if args.lookback else {}
    data = load_dataset(args.dataset, split=(0.7, 0.15, 0.15), seed=args.seed, **options)
    print(f"{args.dataset}: windows train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}, "
          f"input {tuple(data.input_shape)}, {args.epochs} epochs, lr {args.lr}, batch 64")

    quality, sessions, walls, sizes = {}, {}, {}, {}
    folder = Path(tempfile.mkdtemp())
    raw_test = data.raw("test")
    for name, spec in SPECS.items():
        start = time.perf_counter()
        model = train(spec, data, args.epochs, args.lr, args.seed)
        walls[name] = time.perf_counter() - start
        path = folder / f"{name}.onnx"
        torch.onnx.export(model, (raw_test[:2],), path, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
                          verbose=False)
        sessions[name] = onnx_session(path, optimize_level=9, threads=1)
        predicted = sessions[name].run(None, {sessions[name].get_inputs()[0].name: raw_test.numpy()})[0]
        with torch.no_grad():
            assert np.allclose(predicted, model(raw_test).numpy(), atol=1e-3), f"{name}: ONNX differs from torch"
        quality[name] = forecast_quality(predicted, data)
        sizes[name] = sum(p.numel() for p in model.parameters())
    channel = data.preprocessing["channels"].index(data.preprocessing["target"])
    persistence = raw_test[:, channel, -1:].numpy()  # "tomorrow = today"

    latency = {batch: latencies_ms(sessions, raw_test[:batch].numpy(), args.repeats) for batch in (1, 32)}
    median = {b: {n: statistics.median(t) for n, t in latency[b].items()} for b in latency}
    print(f"\n{'model':<12} {'params':>8} {'train s':>8} {'test MAE':>9} {'direction':>9} {'ORT b=1 ms':>11} {'ORT b=32 ms':>12}")
    for name in SPECS:
        print(f"{name:<12} {sizes[name]:>8,} {walls[name]:>8.0f} {quality[name]['mae']:>9.4f} {quality[name]['direction']:>9.1%} "
              f"{median[1][name]:>11.3f} {median[32][name]:>12.3f}")
    naive = forecast_quality(persistence, data)
    print(f"{'persistence':<12} {0:>8} {0:>8} {naive['mae']:>9.4f} {'-':>9} {'-':>11} {'-':>12}")
    print(f"\nTCN / LSTM: MAE {quality['tcn']['mae'] / quality['lstm']['mae']:.2f}x; inference speed-up "
          f"{median[1]['lstm'] / median[1]['tcn']:.2f}x at batch 1, {median[32]['lstm'] / median[32]['tcn']:.2f}x at batch 32 "
          f"(promise: same accuracy, 3.2x faster)")


if __name__ == "__main__":
    main()
