"""Kernels and their plain-PyTorch references (`*_ref`, the specification)."""

from qrnn.ops.forget_mult import forget_mult, forget_mult_ref
from qrnn.ops.pooling import GATES, qrnn_pool, qrnn_pool_ref

__all__ = ["GATES", "forget_mult", "forget_mult_ref", "qrnn_pool", "qrnn_pool_ref"]
