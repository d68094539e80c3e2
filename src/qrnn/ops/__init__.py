"""Kernels and their plain-PyTorch references (`*_ref`, the specification).

Importing this package imports neither numba nor triton; a backend module loads on its first
use (see `qrnn.ops.backends`).
"""

from qrnn.ops.backends import BACKENDS, BackendUnavailableError
from qrnn.ops.conv import causal_conv, causal_conv_ref
from qrnn.ops.forget_mult import forget_mult, forget_mult_ref
from qrnn.ops.pooling import (GATES, qrnn_conv_pool, qrnn_conv_pool_ref, qrnn_pool,
                              qrnn_pool_ref)

__all__ = ["BACKENDS", "BackendUnavailableError", "GATES", "causal_conv", "causal_conv_ref",
           "forget_mult", "forget_mult_ref",
           "qrnn_conv_pool", "qrnn_conv_pool_ref", "qrnn_pool", "qrnn_pool_ref"]
