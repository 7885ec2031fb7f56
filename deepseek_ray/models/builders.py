"""Model builders for tabular, image and time-series inputs: MLP, CNN, TCN and LSTM/GRU.

Every ``forward`` is one static graph (no data-dependent Python branches), and every dense layer is
an ``nn.Linear``, so ``torch.onnx.export(dynamo=True)`` and int4 ``MatMulNBits`` reach them.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import BaseModule


def _outputs(num_classes: int | None, out_features: int | None) -> int:
    if (num_classes is None) == (out_features is None):
        raise ValueError("give exactly one of num_classes (classification) and out_features (regression)")
    return int(num_classes or out_features)


class MLP(BaseModule):
    """``layers`` × (Linear → ReLU → Dropout) of width ``hidden``, then a linear head.

    >>> MLP(in_features=4, num_classes=3)(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    >>> MLP(in_features=4, out_features=1, layers=1)(torch.zeros(2, 4)).shape
    torch.Size([2, 1])
    """

    def __init__(self, in_features: int, num_classes: int | None = None, hidden: int = 128, layers: int = 2,
                 dropout: float = 0.1, out_features: int | None = None):
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

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int] = (32, 64), kernel_size: int = 3,
                 dropout: float = 0.1):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for out in channels:
            blocks += [nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TemporalBlock(nn.Module):
    """Two causal dilated convolutions with a residual connection (Bai et al. 2018)."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.left_pad = (kernel_size - 1) * dilation  # pad the past only: output t never sees t+1
        self.conv1 = nn.Conv1d(in_channels, channels, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv1d(in_channels, channels, 1) if in_channels != channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.relu(self.conv1(F.pad(x, (self.left_pad, 0)))))
        h = self.dropout(F.relu(self.conv2(F.pad(h, (self.left_pad, 0)))))
        return F.relu(h + self.skip(x))


class TCN(BaseModule):
    """Temporal convolutional network: ``levels`` blocks with dilation 1, 2, 4, …; the last step's
    features go through a linear head. Input ``(B, C, T)``, output ``(B, out_features)``.

    >>> TCN(in_channels=2, out_features=1)(torch.zeros(4, 2, 24)).shape
    torch.Size([4, 1])
    """

    def __init__(self, in_channels: int, out_features: int, channels: int = 32, levels: int = 3, kernel_size: int = 3,
                 dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.Sequential(*(
            TemporalBlock(in_channels if level == 0 else channels, channels, kernel_size, 2**level, dropout)
            for level in range(levels)
        ))
        self.head = nn.Linear(channels, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x)[:, :, -1])


class RecurrentNet(BaseModule):
    """An LSTM or GRU over the time axis; the last step's hidden state goes through a linear head.
    Input ``(B, C, T)``, output ``(B, out_features)``.

    >>> RecurrentNet(in_channels=2, out_features=1, cell='gru')(torch.zeros(4, 2, 24)).shape
    torch.Size([4, 1])
    """

    CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, in_channels: int, out_features: int, hidden: int = 64, layers: int = 1, cell: str = "lstm",
                 dropout: float = 0.0):
        super().__init__()
        if cell not in self.CELLS:
            raise ValueError(f"cell: unknown {cell!r}; allowed: {', '.join(self.CELLS)}")
        self.rnn = self.CELLS[cell](in_channels, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(x.transpose(1, 2))
        return self.head(output[:, -1])
