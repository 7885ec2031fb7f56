"""Quantization-aware training: fake quantization with a straight-through estimator, exported as QDQ ONNX.

``torch.ao.quantization`` is deprecated in torch 2.13, and torchao's QAT (0.18) covers ``Linear`` and
``Embedding`` only (not the convolutions of the image and time-series models) and exports no QDQ
graph, so the fake quantizer is one small custom op of our own:

* in training it rounds to the integer grid and clamps, and its gradient is the straight-through
  estimator (1 inside the representable range, 0 outside: activations learn to live in the range);
* in ``torch.onnx`` it becomes ``QuantizeLinear → DequantizeLinear`` with an int8 zero point, so
  ONNX Runtime runs exactly the arithmetic the model was trained with, and the exporter stores the
  quantized weights as int8.

Weights are quantized per output channel (scale = max |w| / qmax), activations at the input of every
convolution and linear layer per tensor, with a scale observed on the data: the largest |value| over a
few calibration batches before fine-tuning (what static PTQ calibrates), then a moving average of each
training batch's largest |value| (as torch's moving-average observers), never above ``activation_range``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..export import ExportResult, ModelExporter, register_onnx_translation


@torch.library.custom_op("deepseek_ray::fake_quantize", mutates_args=())
def fake_quantize(x: torch.Tensor, scale: torch.Tensor, axis: int, bits: int) -> torch.Tensor:
    """Round ``x`` to the signed ``bits``-bit grid of ``scale`` (per channel along ``axis``; -1: per tensor).

    >>> fake_quantize(torch.tensor([0.26, -9.0]), torch.tensor(0.5), -1, 4)
    tensor([ 0.5000, -4.0000])
    """
    low, high = _grid(bits)
    return torch.clamp(torch.round(x / _along(scale, axis, x.dim())), low, high) * _along(scale, axis, x.dim())


@fake_quantize.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, axis: int, bits: int) -> torch.Tensor:
    return torch.empty_like(x)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    x, scale, axis, bits = inputs
    ctx.save_for_backward(x, scale)
    ctx.axis, ctx.bits = axis, bits


def _straight_through(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    x, scale = ctx.saved_tensors
    low, high = _grid(ctx.bits)
    step = x / _along(scale, ctx.axis, x.dim())
    inside = (step >= low - 0.5) & (step <= high + 0.5)
    return grad * inside, None, None, None


fake_quantize.register_autograd(_straight_through, setup_context=_setup_context)


def _grid(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _along(scale: torch.Tensor, axis: int, rank: int) -> torch.Tensor:
    return scale if axis < 0 else scale.reshape([-1 if d == axis else 1 for d in range(rank)])


def _fake_quantize_onnx(x: Any, scale: Any, axis: int, bits: int) -> Any:
    """``QuantizeLinear → DequantizeLinear`` (int8); below 8 bits a ``Clip`` keeps the narrower grid."""
    from onnxscript import opset18 as op

    low, high = _grid(bits)
    if bits < 8:
        x = op.Clip(x, op.Mul(scale, float(low)), op.Mul(scale, float(high))) if axis < 0 else x  # weights fit already
    # int8 zeros shaped like the scale (3 = INT8); Cast's static type cannot follow ``to``, hence Any
    zero: Any = op.Cast(op.Mul(scale, 0.0), to=3)
    quantized = op.QuantizeLinear(x, scale, zero, axis=max(axis, 0))
    return op.DequantizeLinear(quantized, scale, zero, axis=max(axis, 0))


register_onnx_translation(torch.ops.deepseek_ray.fake_quantize.default, _fake_quantize_onnx)


class FakeQuantized(nn.Module):
    """A convolution or linear layer whose input and weight pass through :func:`fake_quantize`.

    The input's scale is observed in training mode (see the module docstring) and frozen in eval mode,
    so the export sees constant scales.

    >>> layer = FakeQuantized(nn.Linear(3, 2), bits=8, activation_range=6.0)
    >>> _ = layer(torch.tensor([[100.0, 0.0, 0.0]]))   # the 100 is clamped to 6
    >>> round(float(layer.input_scale) * 127, 3)
    6.0
    """

    momentum = 0.01  # weight of each training batch in the observed input range
    input_scale: torch.Tensor  # buffers (register_buffer in __init__)
    weight_scale: torch.Tensor

    def __init__(self, layer: nn.Conv1d | nn.Conv2d | nn.Linear, bits: int, activation_range: float):
        super().__init__()
        self.layer, self.bits, self.activation_range = layer, bits, activation_range
        self.register_buffer("input_scale", torch.tensor(activation_range / _grid(bits)[1]))
        self.register_buffer("weight_scale", self._weight_scale())
        self.observed = False  # the first batch seen sets the input range outright
        self.calibrating = False  # True: keep the largest range seen instead of a moving average

    def _weight_scale(self) -> torch.Tensor:
        weight = self.layer.weight.detach()
        return (weight.abs().amax(dim=tuple(range(1, weight.dim()))) / _grid(self.bits)[1]).clamp(min=1e-12)

    def _observe(self, x: torch.Tensor) -> None:
        seen = x.detach().abs().amax().float().clamp(min=1e-6, max=self.activation_range) / _grid(self.bits)[1]
        if not self.observed:
            self.input_scale.copy_(seen)
            self.observed = True
        elif self.calibrating:
            torch.maximum(self.input_scale, seen, out=self.input_scale)
        else:
            self.input_scale.lerp_(seen, self.momentum)

    def forward(self, x: torch.Tensor, **geometry: Any) -> torch.Tensor:
        """``geometry``: a convolution's ``stride`` / ``padding`` / ``dilation`` for this call only (a model
        may reuse a kernel at another geometry, as the TCN's strided path does)."""
        if self.training:  # weights and activations move while training; frozen in eval for the export
            self.weight_scale.copy_(self._weight_scale())
            self._observe(x)
        x = fake_quantize(x, self.input_scale, -1, self.bits)
        weight = fake_quantize(self.layer.weight, self.weight_scale, 0, self.bits)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, weight, self.layer.bias)
        if not geometry:
            return self.layer._conv_forward(x, weight, self.layer.bias)
        layer = self.layer
        geometry = {
            "stride": layer.stride,
            "padding": layer.padding,
            "dilation": layer.dilation,
            "groups": layer.groups,
            **geometry,
        }
        convolve = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
        return convolve(x, weight, layer.bias, **geometry)


@dataclass
class QATConfig:
    """Quantization-aware training: fake-quantize weights (per channel) and activations (clamped to
    ±``activation_range``) to ``bits`` bits, fine-tune, and export a QDQ ONNX model.

    >>> qat = QATConfig(bits=8, activation_range=6.0)
    >>> net = qat.prepare(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)))
    >>> sum(isinstance(m, FakeQuantized) for m in net.modules())
    2
    """

    bits: int = 8
    activation_range: float = 6.0

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"QATConfig.bits must be 2–8 (stored as int8), got {self.bits}")
        if not self.activation_range > 0:
            raise ValueError(f"QATConfig.activation_range must be > 0, got {self.activation_range}")

    def prepare(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with every Conv1d/Conv2d/Linear wrapped in :class:`FakeQuantized`."""
        model = copy.deepcopy(model)
        if isinstance(model, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            return FakeQuantized(model, self.bits, self.activation_range)
        for name, child in model.named_children():
            if not isinstance(child, FakeQuantized):
                setattr(model, name, self.prepare(child))
        return model

    def calibrate(self, model: nn.Module, batches: Any, limit: int = 8) -> nn.Module:
        """Set every fake-quantized input's range to the largest |value| seen over up to ``limit`` batches
        of ``batches`` (``(x, y)`` pairs), as static PTQ calibrates; the rest of the model stays in eval mode.

        >>> net = QATConfig().prepare(nn.Linear(4, 2))
        >>> _ = QATConfig().calibrate(net, [(torch.full((2, 4), 0.5), None)])
        >>> round(float(net.input_scale) * 127, 3)
        0.5
        """
        layers = [m for m in model.modules() if isinstance(m, FakeQuantized)]
        device = next(model.parameters()).device
        model.eval()
        for layer in layers:
            layer.train()
            layer.calibrating = True
        with torch.no_grad():
            for index, (x, _) in enumerate(batches):
                if index == limit:
                    break
                model(x.to(device))
        for layer in layers:
            layer.calibrating = False
        return model.eval()

    def train(
        self,
        model: nn.Module,
        train_data: Any,
        val_data: Any,
        epochs: int = 2,
        lr: float = 1e-4,
        **trainer_options: Any,
    ) -> tuple[nn.Module, list[dict[str, float]]]:
        """Calibrate a prepared copy of ``model`` on the training data, then fine-tune it with
        :class:`~deepseek_ray.optim.MixedPrecisionTrainer`.

        Returns the fake-quantized model (eval mode) with the weights of its best epoch by validation
        loss — the calibrated model before any fine-tuning counts as epoch 0, so fine-tuning never makes
        the result worse on validation than calibration alone — and the trainer's history.

        >>> from deepseek_ray.data import ArrayDataset
        >>> data = ArrayDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
        >>> net, history = QATConfig().train(nn.Linear(4, 2), data, data, epochs=1, per_device_train_batch_size=8)
        >>> isinstance(net, FakeQuantized), len(history)
        (True, 1)
        """
        from ..optim import MixedPrecisionTrainer

        prepared = self.prepare(model)
        trainer = MixedPrecisionTrainer(model=prepared, optimizer="adamw", lr=lr, **trainer_options)
        self.calibrate(prepared, trainer.eval_loader(train_data))
        best: dict[str, Any] = {"loss": math.inf, "state": None}

        def keep_best(epoch: int, metrics: dict[str, float]) -> None:
            if metrics["val_loss"] < best["loss"]:
                best.update(
                    loss=metrics["val_loss"], state={k: v.detach().clone() for k, v in prepared.state_dict().items()}
                )

        if val_data is not None:
            keep_best(0, {"val_loss": trainer.evaluate(val_data)["loss"]})
        history = trainer.fit(train_data, val_data, epochs=epochs, on_epoch_end=keep_best)
        if best["state"] is not None:
            prepared.load_state_dict(best["state"])
        return prepared.eval(), history

    def export(
        self, model: nn.Module, path: str | Path, example_input: torch.Tensor, **exporter_options: Any
    ) -> ExportResult:
        """Export a fake-quantized model as QDQ ONNX (int8 weights in the file), checked against torch.

        Parity is checked to 1e-2 unless ``parity_tolerance`` is given: a value that float rounding puts on
        a level's midpoint in one runtime may land on the neighbouring level in the other (one step of
        one activation, which the layers after it carry to the output).
        """
        exporter_options.setdefault("parity_tolerance", 1e-2)
        if not any(isinstance(m, FakeQuantized) for m in model.modules()):
            raise ValueError(
                "QATConfig.export: the model has no fake-quantized layers; call prepare() or train() first"
            )
        metadata = {"quantization": {"type": "qat", "bits": self.bits, "activation_range": self.activation_range}}
        return ModelExporter(format="onnx", **exporter_options).export(model, path, example_input, metadata=metadata)


__all__ = ["FakeQuantized", "QATConfig", "fake_quantize"]
