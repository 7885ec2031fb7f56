"""Image classifiers: the NAS cell network and the plain 2-conv CNN baseline."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import OPS, BaseModule, make_op

_ARCH = re.compile(r"^c(\d+)((?:\|[\w+]+)+)$")


@dataclass(frozen=True)
class Architecture:
    """A cell network's genotype: stem width and, per cell, the ops applied in sequence.

    Its string form is readable and exact: ``c32|conv3x3+identity|conv5x5`` is a 32-channel stem,
    then a cell of two ops, then a cell of one; channels double at each cell.

    >>> arch = Architecture.decode('c32|conv3x3+identity|conv5x5')
    >>> arch.cells, arch.encode()
    ((('conv3x3', 'identity'), ('conv5x5',)), 'c32|conv3x3+identity|conv5x5')
    """

    channels: int
    cells: tuple[tuple[str, ...], ...]

    def encode(self) -> str:
        return f"c{self.channels}|" + "|".join("+".join(cell) for cell in self.cells)

    @classmethod
    def decode(cls, text: str) -> Architecture:
        match = _ARCH.match(text.strip())
        if not match:
            raise ValueError(f"not an architecture string: {text!r}; expected e.g. 'c32|conv3x3+identity|conv5x5'")
        cells = tuple(tuple(cell.split("+")) for cell in match.group(2).strip("|").split("|"))
        unknown = sorted({op for cell in cells for op in cell} - set(OPS))
        if unknown:
            raise ValueError(f"unknown op(s) {unknown} in {text!r}; registered ops: {', '.join(sorted(OPS))}")
        return cls(int(match.group(1)), cells)


class Cell(nn.Module):
    """Project to the cell's width, apply its ops in sequence with a residual, then halve H and W."""

    def __init__(self, in_channels: int, channels: int, ops: tuple[str, ...]):
        super().__init__()
        self.project = (
            nn.Identity()
            if in_channels == channels
            else nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
            )
        )
        self.ops = nn.Sequential(*(make_op(op, channels) for op in ops))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        return self.pool(x + self.ops(x))


class CellNet(BaseModule):
    """The NAS image classifier: conv stem, one :class:`Cell` per genotype cell, global pooling, linear head.

    >>> net = CellNet('c8|conv3x3|identity', in_channels=1, num_classes=10)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, arch: str, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.1):
        super().__init__()
        genotype = Architecture.decode(arch)
        width = genotype.channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        cells, in_width = [], width
        for index, ops in enumerate(genotype.cells):
            out_width = width * 2**index
            cells.append(Cell(in_width, out_width, ops))
            in_width = out_width
        self.cells = nn.Sequential(*cells)
        # A 3×3 pooled map keeps coarse spatial layout, which converges much faster than global pooling.
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Dropout(dropout), nn.Linear(9 * in_width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cells(self.stem(x)))


class PlainCNN(BaseModule):
    """The baseline: two 3×3 convs with max pooling, then a 128-unit hidden layer.

    >>> PlainCNN(in_channels=1, num_classes=10, image_size=28)(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        side = image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
