"""Building blocks and the NAS op registry.

>>> from deepseek_ray.nn import BaseModule, MultiHeadAttention, FeedForward, OPS
>>> 'sep_conv3x3' in OPS
True
"""

from .modules import BaseModule, FeedForward, MultiHeadAttention
from .ops import OPS, Zero, conv_bn_relu, make_op, register_op

__all__ = ["BaseModule", "FeedForward", "MultiHeadAttention", "OPS", "Zero", "conv_bn_relu", "make_op", "register_op"]
