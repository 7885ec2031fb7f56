"""Model builders for tabular, image and time-series inputs: MLP, CNN, TCN and LSTM/GRU.

Every ``forward`` is one static graph (no data-dependent Python branches), and every dense layer is
an ``nn.Linear``, so ``torch.onnx.export(dynamo=True)`` and int4 ``MatMulNBits`` reach them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import BaseModule


def _outputs(num_classes: int | None, out_features: int | None) -> int:
    if num_classes is not None and out_features is None:
        return int(num_classes)
    if out_features is not None and num_classes is None:
        return int(out_features)
    raise ValueError("give exactly one of num_classes (classification) and out_features (regression)")


class MLP(BaseModule):
    """``layers`` × (Linear → ReLU → Dropout) of width ``hidden``, then a linear head.

    >>> MLP(in_features=4, num_classes=3)(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    >>> MLP(in_features=4, out_features=1, layers=1)(torch.zeros(2, 4)).shape
    torch.Size([2, 1])
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int | None = None,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.1,
        out_features: int | None = None,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, _outputs(num_classes, out_features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class CNN(BaseModule):
    """Conv → BatchNorm → ReLU → MaxPool per entry of ``channels``, global average pooling, linear head.

    >>> CNN(in_channels=1, num_classes=10, channels=(8, 16))(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        dropout: float = 0.1,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for out in channels:
            blocks += [
                nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            width = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


RELATIVE_MODES = ("last", "mean", "revin", "none")


class WindowNorm(nn.Module):
    """Makes a forecaster window-relative: the network sees each window minus its own level and predicts
    the change from it, which is added back, so a series that drifts outside its training range stays in
    the range the network was trained on.

    ``mode``: ``'last'`` subtracts each channel's last observed value (the forecast is last value + predicted
    change); ``'mean'`` subtracts the window mean; ``'revin'`` also divides by the window's standard deviation
    and multiplies the forecast back (RevIN, Kim et al. 2022, without the affine part); ``'none'`` passes
    the window through. The level added back is the ``target_channel``'s, in the same units as the input:
    the data side scales the target with its input channel's training-segment mean and std.

    >>> norm = WindowNorm('last')
    >>> x = torch.tensor([[[1.0, 2.0, 5.0]]])
    >>> z, level = norm(x)
    >>> z.tolist(), norm.restore(torch.tensor([[0.5]]), level).tolist()
    ([[[-4.0, -3.0, 0.0]]], [[5.5]])
    """

    def __init__(
        self, mode: bool | str = "last", target_channel: int = 0, in_channels: int | None = None, eps: float = 1e-5
    ):
        """``mode`` as a forecaster's ``relative`` takes it: ``True`` is ``'last'``, ``False`` is ``'none'``;
        ``in_channels`` (when given) checks ``target_channel`` against the window's channels."""
        super().__init__()
        if in_channels is not None and not 0 <= target_channel < in_channels:
            raise ValueError(f"target_channel: {target_channel} is not one of the {in_channels} input channels")
        if isinstance(mode, bool):
            mode = "last" if mode else "none"
        if mode not in RELATIVE_MODES:
            raise ValueError(f"relative: unknown {mode!r}; allowed: true, false, {', '.join(RELATIVE_MODES)}")
        self.mode, self.target_channel, self.eps = mode, target_channel, eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None] | None]:
        """``(B, C, T)`` → the normalised window and the target channel's ``(shift, scale)``, each ``(B, 1)``
        (``scale`` is ``None`` unless ``revin``; the pair is ``None`` for ``none``)."""
        if self.mode == "none":
            return x, None
        shift = x[:, :, -1:] if self.mode == "last" else x.mean(dim=-1, keepdim=True)
        t = self.target_channel
        if self.mode == "revin":
            scale = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + self.eps)
            return (x - shift) / scale, (shift[:, t], scale[:, t])
        return x - shift, (shift[:, t], None)  # no scale: no multiply in the exported graph

    def restore(self, y: torch.Tensor, level: tuple[torch.Tensor, torch.Tensor | None] | None) -> torch.Tensor:
        """The network's ``(B, horizon)`` output, back to the level of the window it came from."""
        if level is None:
            return y
        shift, scale = level
        return y + shift if scale is None else y * scale + shift


class TemporalBlock(nn.Module):
    """Two causal dilated convolutions with a residual connection (Bai et al. 2018).

    :meth:`forward` gives every step (causal padding); :meth:`forward_strided` gives only the steps that
    the next, twice as dilated block reads for the last step (see :class:`TCN`).
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.kernel_size = kernel_size
        self.left_pad = (kernel_size - 1) * dilation  # pad the past only: output t never sees t+1
        self.conv1 = nn.Conv1d(in_channels, channels, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv1d(in_channels, channels, 1) if in_channels != channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.relu(self.conv1(F.pad(x, (self.left_pad, 0)))))
        h = self.dropout(F.relu(self.conv2(F.pad(h, (self.left_pad, 0)))))
        return F.relu(h + self.skip(x))

    def forward_strided(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` holds this block's input at every ``dilation``-th step, ending at the last (odd length
        ``1 + 2 (k - 1)(2^n - 1)``); the output holds every ``2 dilation``-th step, ending at the last.

        At that stride the dilated kernels are plain ones, the second convolution strides by 2, and no
        padding is needed: every output is exactly the one :meth:`forward` computes at that step.
        """
        h = self.dropout(F.relu(_undilated(self.conv1, x)))
        h = self.dropout(F.relu(_undilated(self.conv2, h, stride=2)))
        return F.relu(h + self.skip(x[:, :, 2 * (self.kernel_size - 1) :: 2]))


def _undilated(conv: nn.Module, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """``conv``'s kernel applied without dilation or padding, at ``stride``. A wrapped convolution (QAT's
    ``FakeQuantized``) is called with that geometry as keywords, so it still quantizes what it wraps."""
    if isinstance(conv, nn.Conv1d):
        return F.conv1d(x, conv.weight, conv.bias, stride=stride)
    return conv(x, stride=stride, dilation=1, padding=0)


class TCN(BaseModule):
    """Temporal convolutional network: ``levels`` blocks with dilation 1, 2, 4, …; the last step's
    features go through a linear head. Input ``(B, C, T)``, output ``(B, out_features)``.

    ``relative`` (default ``True`` = ``'last'``; also ``'mean'``, ``'revin'``, ``False``) makes the forecast
    window-relative (:class:`WindowNorm`) around ``target_channel``, the input channel being forecast.
    Only the last step is used: a window at least as long as the receptive field
    (``1 + 2 (kernel_size - 1)(2^levels - 1)`` steps) is cut to it and each block computes only the steps
    the last one depends on (:meth:`TemporalBlock.forward_strided`, every ``2^level``-th): the same
    output as the padded network, for a cost that no longer grows with the lookback. Shorter windows
    run the padded network.

    >>> TCN(in_channels=2, out_features=1)(torch.zeros(4, 2, 24)).shape
    torch.Size([4, 1])
    >>> tcn = TCN(in_channels=1, out_features=1, levels=2, relative='mean').eval()
    >>> tcn.receptive_field
    13
    >>> x = torch.randn(2, 1, 40)
    >>> torch.allclose(tcn(x + 100.0), tcn(x) + 100.0, atol=1e-4)  # window-relative: a level shift passes through
    True
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        channels: int = 32,
        levels: int = 3,
        kernel_size: int = 3,
        dropout: float = 0.1,
        relative: bool | str = True,
        target_channel: int = 0,
    ):
        super().__init__()
        self.norm = WindowNorm(relative, target_channel, in_channels)
        blocks = [
            TemporalBlock(in_channels if level == 0 else channels, channels, kernel_size, 2**level, dropout)
            for level in range(levels)
        ]
        self.blocks = nn.Sequential(*blocks)
        self.receptive_field = 1 + sum(2 * block.left_pad for block in blocks)
        self.head = nn.Linear(channels, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, level = self.norm(x)  # the window statistics use the whole window, the convolutions only their reach
        # The window length is static in the exported graph, so this branch is fixed at export time.
        if z.shape[-1] >= self.receptive_field:
            h = z[:, :, -self.receptive_field :]
            for block in cast("Iterable[TemporalBlock]", self.blocks):
                h = block.forward_strided(h)
        else:
            h = self.blocks(z)
        return self.norm.restore(self.head(h[:, :, -1]), level)


class RecurrentNet(BaseModule):
    """An LSTM or GRU over the time axis; the last step's hidden state goes through a linear head.
    Input ``(B, C, T)``, output ``(B, out_features)``. ``relative`` and ``target_channel`` as in :class:`TCN`.

    >>> RecurrentNet(in_channels=2, out_features=1, cell='gru')(torch.zeros(4, 2, 24)).shape
    torch.Size([4, 1])
    >>> RecurrentNet(in_channels=1, out_features=1, relative=False).norm.mode
    'none'
    """

    CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        hidden: int = 64,
        layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        relative: bool | str = True,
        target_channel: int = 0,
    ):
        super().__init__()
        if cell not in self.CELLS:
            raise ValueError(f"cell: unknown {cell!r}; allowed: {', '.join(self.CELLS)}")
        self.norm = WindowNorm(relative, target_channel, in_channels)
        self.rnn = self.CELLS[cell](
            in_channels, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, level = self.norm(x)
        output, _ = self.rnn(z.transpose(1, 2))
        return self.norm.restore(self.head(output[:, -1]), level)
