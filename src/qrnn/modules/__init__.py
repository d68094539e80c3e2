"""nn.Module layers built on `qrnn.ops`."""

from qrnn.modules.qrnn import QRNN, QRNNLayer, QRNNState, dropout, last_real_step

__all__ = ["QRNN", "QRNNLayer", "QRNNState", "dropout", "last_real_step"]
