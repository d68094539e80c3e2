"""qrnn: Quasi-Recurrent Neural Networks in PyTorch (Bradbury et al., ICLR 2017).

The library (`qrnn.ops` -> `qrnn.modules`) knows nothing of IMDB; the sentiment application
built on it lives in `qrnn.sentiment`.
"""

from qrnn.modules import QRNN, QRNNLayer
from qrnn.ops import forget_mult, forget_mult_ref

__all__ = ["QRNN", "QRNNLayer", "forget_mult", "forget_mult_ref"]
__version__ = "0.1.0"
