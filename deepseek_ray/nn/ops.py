"""The NAS op registry: every op maps ``channels`` to the same ``channels`` at stride 1.

>>> {'conv3x3', 'sep_conv3x3', 'identity', 'zero'} <= set(OPS)
True
>>> OPS['conv3x3'](8)(torch.zeros(1, 8, 6, 6)).shape
torch.Size([1, 8, 6, 6])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

OpFactory = Callable[[int], nn.Module]
OPS: dict[str, OpFactory] = {}


def register_op(name: str) -> Callable[[OpFactory], OpFactory]:
    """Register ``factory(channels) -> nn.Module`` as a NAS op named ``name`` (shape-preserving).

    >>> @register_op('conv1x1')
    ... def _conv1x1(c):
    ...     return conv_bn_relu(c, kernel=1)
    >>> 'conv1x1' in OPS
    True
    """

    def wrap(factory: OpFactory) -> OpFactory:
        OPS[name] = factory
        return factory

    return wrap


def make_op(name: str, channels: int) -> nn.Module:
    """Instantiate a registered op; an unknown name is an error listing the registered ones."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; registered ops: {', '.join(sorted(OPS))}")
    return OPS[name](channels)


def conv_bn_relu(channels: int, kernel: int, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv → BatchNorm → ReLU with 'same' padding."""
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


class Zero(nn.Module):
    """The 'no connection' op: outputs zeros of the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


register_op("conv3x3")(lambda c: conv_bn_relu(c, 3))
register_op("conv5x5")(lambda c: conv_bn_relu(c, 5))
register_op("dilated_conv3x3")(lambda c: conv_bn_relu(c, 3, dilation=2))
register_op("sep_conv3x3")(
    lambda c: nn.Sequential(
        nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(inplace=True),
    )
)
register_op("maxpool3x3")(lambda c: nn.MaxPool2d(3, stride=1, padding=1))
register_op("avgpool3x3")(lambda c: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
register_op("identity")(lambda c: nn.Identity())
register_op("zero")(lambda c: Zero())
