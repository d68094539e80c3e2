"""The QRNN layer as an `nn.Module` (Bradbury et al., 2017), shaped like `nn.LSTM`.

One QRNN layer is a masked (causal) convolution of width k over time that produces the gates,
followed by a pooling recurrence:

    z_t = tanh(sum_j Wz_j x_{t-j} + bz)     f_t = sigmoid(...)     o_t = sigmoid(...)
    fo-pooling:  c_t = f_t * c_{t-1} + (1 - f_t) * z_t,   h_t = o_t * c_t
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from qrnn.ops import GATES as _GATES
from qrnn.ops import qrnn_pool


class QRNNLayer(nn.Module):
    """One direction of one QRNN layer.

    Parameters (G = 2, 3 or 4 gates for pooling "f", "fo", "ifo"; k = window):
        weight: (k * G * H, input_size), tap j (multiplying x_{t-j}) is rows [j*G*H, (j+1)*G*H),
                and within a tap the gates are stacked in the order z, f, o, i.
        bias:   (G * H,) or None.
    """

    def __init__(self, input_size: int, hidden_size: int, *, window: int = 2, pooling: str = "fo",
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if pooling not in _GATES:
            raise ValueError(f"pooling must be one of {sorted(_GATES)}, got {pooling!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.window, self.pooling = window, pooling
        gates = _GATES[pooling] * hidden_size
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(window * gates, input_size, **factory))
        self.bias = nn.Parameter(torch.empty(gates, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same scale as nn.LSTM / nn.Conv1d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = k * I.
        bound = 1.0 / math.sqrt(self.window * self.input_size)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def gates(self, x: Tensor) -> Tensor:
        """Masked convolution. x: (T, B, I) -> (T, B, G*H) pre-activation gates.

        All k taps are one matrix product over the T input rows; the taps are then summed with
        shifted views of the product, so no shifted copies of the input are ever built.
        """
        T = x.shape[0]
        k, gh = self.window, self.weight.shape[0] // self.window
        y = F.linear(x, self.weight)  # (T, B, k*G*H)
        out = y[:, :, :gh] if self.bias is None else y[:, :, :gh] + self.bias
        if k > 1:
            out = out.clone() if self.bias is None else out
            for j in range(1, min(k, T)):
                out[j:] += y[: T - j, :, j * gh:(j + 1) * gh]  # x_{t-j} reaches step t >= j
        return out

    def forward(self, x: Tensor, c0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (T, B, I), c0: (B, H) or None -> h: (T, B, H), c: (T, B, H) every cell."""
        return qrnn_pool(self.gates(x), c0, self.pooling)


class QRNN(nn.Module):
    """A stack of QRNN layers with the constructor and call of `nn.LSTM`.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout: as in `nn.LSTM`.
        window: convolution width k (>= 1). pooling: "f", "fo" or "ifo".
        dense: densely connected layers (Huang et al.; used by the paper's classifier): each
            layer's input is concatenated to its output, so layer l reads I + l*H features and
            `output` has I + num_layers*H features.
    forward(input, hx=None, lengths=None):
        input:   (T, B, I), or (B, T, I) if batch_first.
        hx:      (num_layers, B, H) initial cells, or None for zeros.
        lengths: (B,) real lengths of a right-padded batch, or None if every sequence is full.
        returns output (T, B, H_out) (batch-first if batch_first) and h_n (num_layers, B, H):
            each layer's cell at each sequence's last real step.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 window: int = 2, pooling: str = "fo", zoneout: float = 0.0, dense: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        if bidirectional:
            raise NotImplementedError("bidirectional QRNN is not implemented yet")
        if zoneout:
            raise NotImplementedError("zoneout is not implemented yet")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout, self.dense = batch_first, dropout, dense
        self.window, self.pooling = window, pooling
        def layer_input(l: int) -> int:
            if dense:
                return input_size + l * hidden_size
            return input_size if l == 0 else hidden_size

        self.layers = nn.ModuleList(
            QRNNLayer(layer_input(l), hidden_size, window=window, pooling=pooling, bias=bias, device=device,
                      dtype=dtype)
            for l in range(num_layers)
        )

    @property
    def output_size(self) -> int:
        return self.input_size + self.num_layers * self.hidden_size if self.dense else self.hidden_size

    def forward(self, input: Tensor, hx: Tensor | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        T, B = x.shape[:2]
        finals = []
        for l, layer in enumerate(self.layers):
            h, c = layer(x, None if hx is None else hx[l])
            finals.append(c[-1] if lengths is None else last_real_step(c, lengths))
            if l < self.num_layers - 1 and self.dropout > 0:
                h = F.dropout(h, self.dropout, self.training)
            x = torch.cat([x, h], dim=-1) if self.dense else h
        out = x.transpose(0, 1) if self.batch_first else x
        return out, torch.stack(finals)


def last_real_step(seq: Tensor, lengths: Tensor) -> Tensor:
    """seq: (T, B, F), lengths: (B,) in [1, T] -> (B, F), seq[lengths[b] - 1, b] for each b."""
    idx = (lengths.to(device=seq.device, dtype=torch.long) - 1).view(1, -1, 1)
    return seq.gather(0, idx.expand(1, -1, seq.shape[-1])).squeeze(0)
