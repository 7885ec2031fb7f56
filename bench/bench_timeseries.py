"""Time-series forecasting: TCN configurations against an LSTM baseline and persistence, in one run.

For each series and each lookback, every model is trained on the same windows (split by time, scaling
fitted on the training segment) with the same recipe, keeping the checkpoint with the best validation
MAE; the forecasters are window-relative (``relative``: they predict the change from the window's last
value, see ``deepseek_ray.models.builders.WindowNorm``). Reported on the test segment, in the series'
own units and on the same forecast targets for every lookback (those that the longest lookback can
reach, so the rows are comparable):

* test MAE, mean ± standard deviation over ``--seeds``;
* directional accuracy: the share of targets that differ from the last observed value for which the
  forecast moved the same way from that last value (persistence never moves, so it has none);
* ONNX Runtime latency of the exported graph (``torch.onnx.export(dynamo=True)``, raw window in,
  forecast out, optimisation level 9, one intra-op thread): the median of ``--repeats`` calls at batch 1
  and at batch 32, every model's session called in turn so that all see the same machine load;
* per TCN row, MAE and latency relative to the LSTM at the same lookback (the promise to users was
  "the same accuracy at 3.2× faster inference than LSTM"), and the accuracy/latency frontier.

    python bench/bench_timeseries.py                                # co2 and sunspots, the default grid
    python bench/bench_timeseries.py --datasets co2 --lookbacks co2=26 --tcn c32l4k3 --seeds 0 --epochs 15
    python bench/bench_timeseries.py --relative none                # the level-forecasting models of before

Flags: ``--datasets`` comma-separated registry names; ``--lookbacks NAME=L1,L2`` (repeatable; default
co2=26,64,104 and sunspots=12,24, others their registry default); ``--tcn`` comma-separated TCN
configurations ``c<channels>l<levels>k<kernel>``; ``--lstm-hidden``/``--lstm-layers`` the baseline;
``--relative`` last | mean | revin | none for all models; ``--epochs``, ``--lr``, ``--batch-size``,
``--seeds`` (comma-separated) the training recipe; ``--threads`` torch threads and ``--device`` for training;
``--repeats`` latency calls per model and batch size; ``--split`` train,val,test fractions.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from deepseek_ray.data import DatasetSplits, load_dataset
from deepseek_ray.export.exporter import onnx_session
from deepseek_ray.models import InferenceModel, build_model
from deepseek_ray.optim import MixedPrecisionTrainer

DEFAULT_LOOKBACKS = {"co2": [26, 64, 104], "sunspots": [12, 24]}
DEFAULT_TCN = "c32l4k3,c16l4k3,c16l3k3,c8l4k3,c8l3k3,c8l2k3"


@dataclass
class Row:
    """One trained model (all seeds) at one lookback, with its measurements."""

    dataset: str
    lookback: int
    name: str
    spec: dict
    params: int = 0
    receptive_field: int | None = None
    train_s: list[float] = field(default_factory=list)
    mae: list[float] = field(default_factory=list)
    direction: list[float] = field(default_factory=list)
    latency_ms: dict[int, float] = field(default_factory=dict)


def tcn_spec(text: str) -> dict:
    """``'c16l3k3'`` → a TCN spec with 16 channels, 3 levels, kernel size 3.

    >>> tcn_spec('c8l2k5')
    {'type': 'tcn', 'channels': 8, 'levels': 2, 'kernel_size': 5, 'dropout': 0.1}
    """
    match = re.fullmatch(r"c(\d+)l(\d+)k(\d+)", text.strip())
    if not match:
        raise SystemExit(f"--tcn: {text!r} is not c<channels>l<levels>k<kernel>, e.g. c16l3k3")
    channels, levels, kernel = map(int, match.groups())
    return {"type": "tcn", "channels": channels, "levels": levels, "kernel_size": kernel, "dropout": 0.1}


def train(spec: dict, data: DatasetSplits, epochs: int, lr: float, batch_size: int, seed: int,
          device: str = "cpu") -> InferenceModel:
    """Train ``spec`` on ``data`` and return the raw-window-in, forecast-out model (on the CPU) with the
    best validation MAE."""
    torch.manual_seed(seed)
    model = build_model({**spec, **data.model_inputs()})
    trainer = MixedPrecisionTrainer(model, "adamw", lr, weight_decay=1e-4, scheduler="cosine", clip_grad_norm=1.0,
                                    per_device_train_batch_size=batch_size, task="regression", seed=seed, device=device)
    best = {"mae": float("inf"), "state": None}

    def keep_best(epoch: int, metrics: dict[str, float]) -> None:
        if metrics["val_mae"] < best["mae"]:
            best.update(mae=metrics["val_mae"], state={k: v.clone() for k, v in model.state_dict().items()})

    trainer.fit(data.train, data.val, epochs=epochs, on_epoch_end=keep_best)
    model.load_state_dict(best["state"])
    return InferenceModel(model.cpu(), data.preprocessing).eval()


def scored_windows(data: DatasetSplits, longest: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Raw test windows, their targets and last observed values (series units), restricted to the
    targets that a window of ``longest`` steps inside the test segment also reaches."""
    pre = data.preprocessing
    skip = longest - pre["lookback"]  # window i of lookback L forecasts step test_start + L + i
    raw = data.raw("test")[skip:]
    channel = pre["target_channel"]
    truth = data.test.y[skip:, 0].numpy() * pre["target_std"] + pre["target_mean"]
    return raw, truth, raw[:, channel, -1].numpy()


def forecast_quality(predicted: np.ndarray, truth: np.ndarray, last: np.ndarray) -> dict[str, float]:
    """MAE, and directional accuracy against the last observed value (targets equal to it left out).

    >>> forecast_quality(np.array([2.0, 0.5, 3.0]), np.array([1.5, 1.5, 3.0]), np.array([1.0, 1.0, 3.0]))
    {'mae': 0.5, 'direction': 0.5}
    """
    moved = truth != last
    direction = np.sign(predicted - last)[moved] == np.sign(truth - last)[moved]
    return {"mae": float(np.abs(predicted - truth).mean()), "direction": float(direction.mean())}


def latencies_ms(sessions: dict, inputs: dict, repeats: int) -> dict:
    """Per session, ``repeats`` timings of one call, the sessions called in turn (same load for all)."""
    feeds = {key: {s.get_inputs()[0].name: inputs[key]} for key, s in sessions.items()}
    for key, session in sessions.items():  # warm-up: first calls allocate
        for _ in range(10):
            session.run(None, feeds[key])
    times: dict = {key: [] for key in sessions}
    for _ in range(repeats):
        for key, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds[key])
            times[key].append((time.perf_counter() - start) * 1000)
    return times


def pareto(rows: list[Row], batch: int) -> list[Row]:
    """Rows that no other row beats on both mean test MAE and latency at ``batch``."""
    def point(r: Row) -> tuple[float, float]:
        return statistics.mean(r.mae), r.latency_ms[batch]

    return sorted((r for r in rows if not any(
        point(o)[0] <= point(r)[0] and point(o)[1] <= point(r)[1] and point(o) != point(r) for o in rows)),
        key=lambda r: point(r)[1])


def parse_lookbacks(values: list[str], datasets: list[str]) -> dict[str, list[int | None]]:
    given = {}
    for value in values:
        name, _, lookbacks = value.partition("=")
        if not lookbacks:
            raise SystemExit(f"--lookbacks: {value!r} is not NAME=L1,L2 (e.g. co2=26,52)")
        given[name] = [int(v) for v in lookbacks.split(",")]
    return {name: given.get(name, DEFAULT_LOOKBACKS.get(name, [None])) for name in datasets}


def run_dataset(name: str, lookbacks: list[int | None], args: argparse.Namespace, folder: Path) -> list[Row]:
    """Train, export, evaluate and time every model at every lookback of one series."""
    split = tuple(float(f) for f in args.split.split(","))
    splits = {lb: load_dataset(name, split=split, **({"lookback": lb} if lb else {})) for lb in lookbacks}
    splits = {data.preprocessing["lookback"]: data for data in splits.values()}
    longest = max(splits)
    specs = {f"TCN {t}": tcn_spec(t) for t in args.tcn.split(",")}
    specs["LSTM"] = {"type": "lstm", "hidden": args.lstm_hidden, "layers": args.lstm_layers, "cell": "lstm"}
    rows, sessions, inputs = [], {}, {1: {}, 32: {}}
    for lookback, data in splits.items():
        raw, truth, last = scored_windows(data, longest)
        if lookback == longest:  # the scored targets and their last values are the same at every lookback
            persistence = forecast_quality(last, truth, last)
        print(f"{name} lookback {lookback}: windows train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)}, "
              f"scored on the last {len(truth)} test targets", flush=True)
        for label, spec in specs.items():
            row = Row(name, lookback, label, {**spec, "relative": args.relative})
            for seed in args.seeds:
                start = time.perf_counter()
                model = train(row.spec, data, args.epochs, args.lr, args.batch_size, seed, args.device)
                row.train_s.append(time.perf_counter() - start)
                with torch.no_grad():
                    predicted = model(raw).numpy()
                quality = forecast_quality(predicted[:, 0], truth, last)
                row.mae.append(quality["mae"])
                row.direction.append(quality["direction"])
                if seed == args.seeds[0]:  # one exported graph per architecture: latency does not depend on the seed
                    path = folder / f"{name}-{lookback}-{label.replace(' ', '_')}.onnx"
                    torch.onnx.export(model, (raw[:2],), path, dynamo=True,
                                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
                    key = (name, lookback, label)
                    sessions[key] = onnx_session(path, optimize_level=9, threads=1)
                    served = sessions[key].run(None, {sessions[key].get_inputs()[0].name: raw.numpy()})[0]
                    assert np.allclose(served, predicted, atol=1e-3), f"{key}: ONNX Runtime differs from torch"
                    inputs[1][key], inputs[32][key] = raw[:1].numpy(), raw[:32].numpy()
                    row.params = sum(p.numel() for p in model.network.parameters())
                    row.receptive_field = getattr(model.network, "receptive_field", None)
            print(f"  {label:<14} MAE {statistics.mean(row.mae):.4f}  train {statistics.mean(row.train_s):.0f} s",
                  flush=True)
            rows.append(row)
    for batch in (1, 32):
        times = latencies_ms(sessions, inputs[batch], args.repeats)
        for row in rows:
            row.latency_ms[batch] = statistics.median(times[(row.dataset, row.lookback, row.name)])
    report(name, rows, persistence, longest)
    return rows


def fmt_mae(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def report(name: str, rows: list[Row], persistence: dict[str, float], longest: int) -> None:
    """The markdown table of one series, its frontier and the best TCN at LSTM-level accuracy."""
    lstm = {r.lookback: r for r in rows if r.name == "LSTM"}
    print(f"\n### {name} (test targets reachable with lookback {longest}; MAE in series units)\n")
    print("| model | lookback | params | receptive field | train s | test MAE | directional acc. | ORT b1 ms | "
          "ORT b32 ms | MAE ÷ LSTM | speed-up b1 | speed-up b32 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r.lookback, r.name != "LSTM", r.name)):
        ref = lstm[row.lookback]
        ratio = statistics.mean(row.mae) / statistics.mean(ref.mae)
        print(f"| {row.name} | {row.lookback} | {row.params:,} | {row.receptive_field or '–'} | "
              f"{statistics.mean(row.train_s):.0f} | {fmt_mae(row.mae)} | {statistics.mean(row.direction):.1%} | "
              f"{row.latency_ms[1]:.3f} | {row.latency_ms[32]:.3f} | {ratio:.2f} | "
              f"{ref.latency_ms[1] / row.latency_ms[1]:.2f}× | {ref.latency_ms[32] / row.latency_ms[32]:.2f}× |")
    # The scored targets and their last observed values are the same for every lookback: one row.
    best_mae = min(statistics.mean(r.mae) for r in lstm.values())  # the best LSTM of any lookback
    print(f"| persistence (next = last) | any | 0 | – | 0 | {persistence['mae']:.3f} | – | – | – | "
          f"{persistence['mae'] / best_mae:.2f} (÷ best LSTM) | – | – |")
    for batch in (1, 32):
        front = ", ".join(f"{r.name} @{r.lookback} ({statistics.mean(r.mae):.3f}, {r.latency_ms[batch]:.3f} ms)"
                          for r in pareto(rows, batch))
        print(f"\nfrontier (MAE, ORT latency) at batch {batch}: {front}")
    # Two readings of "the same accuracy, faster than LSTM": against the LSTM fed the same window, and,
    # stricter, at the MAE of the best LSTM of any lookback against the fastest LSTM of any lookback.
    for batch in (1, 32):
        fastest = min(r.latency_ms[batch] for r in lstm.values())
        same = [(lstm[r.lookback].latency_ms[batch] / r.latency_ms[batch], r) for r in rows
                if r.name != "LSTM" and statistics.mean(r.mae) <= statistics.mean(lstm[r.lookback].mae)]
        strict = [(fastest / r.latency_ms[batch], r) for r in rows if r.name != "LSTM" and statistics.mean(r.mae) <= best_mae]
        for reading, found in (("the LSTM at the same lookback", same),
                               (f"the best LSTM (MAE {best_mae:.3f}), against the fastest LSTM ({fastest:.3f} ms)", strict)):
            if not found:
                print(f"batch {batch}: no TCN reaches the MAE of {reading}")
                continue
            speedup, row = max(found, key=lambda pair: pair[0])
            print(f"batch {batch}: at ≤ the MAE of {reading}: fastest is {row.name} @{row.lookback} "
                  f"(MAE {statistics.mean(row.mae):.3f}, {row.latency_ms[batch]:.3f} ms), {speedup:.2f}× faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="co2,sunspots", help="comma-separated registry names")
    parser.add_argument("--lookbacks", action="append", default=[], metavar="NAME=L1,L2",
                        help="lookbacks of one series (repeatable); default co2=26,64,104 sunspots=12,24")
    parser.add_argument("--tcn", default=DEFAULT_TCN, help="comma-separated c<channels>l<levels>k<kernel>")
    parser.add_argument("--lstm-hidden", type=int, default=64)
    parser.add_argument("--lstm-layers", type=int, default=1)
    parser.add_argument("--relative", default="last", choices=["last", "mean", "revin", "none"],
                        help="window-relative forecasting for every model (none: forecast the level)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--device", default="cpu", help="training device (inference is always ONNX Runtime CPU)")
    parser.add_argument("--repeats", type=int, default=1000, help="latency calls per model and batch size")
    parser.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions, in time order")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The exporter logs a page per model (missing torchvision ops, symbolic-shape notes): not our results.
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    datasets = args.datasets.split(",")
    started = time.perf_counter()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()} ({os.cpu_count()} cores), "
          f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, relative={args.relative}, "
          f"{args.epochs} epochs, lr {args.lr}, batch {args.batch_size}, seeds {args.seeds}", flush=True)
    folder = Path(tempfile.mkdtemp())
    for name, lookbacks in parse_lookbacks(args.lookbacks, datasets).items():
        run_dataset(name, lookbacks, args, folder)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
