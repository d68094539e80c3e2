"""Gate activations + pooling of a QRNN layer, as one op: pre-activation gates in, h and c out.

`qrnn_pool_ref` is the specification; `qrnn_pool` is the path the layer calls (fast paths plug in
here without the layer changing).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qrnn.ops.forget_mult import forget_mult, forget_mult_ref

GATES = {"f": 2, "fo": 3, "ifo": 4}


def _split(gates: Tensor, pooling: str) -> list[Tensor]:
    if pooling not in GATES:
        raise ValueError(f"pooling must be one of {sorted(GATES)}, got {pooling!r}")
    if gates.dim() != 3 or gates.shape[-1] % GATES[pooling]:
        raise ValueError(
            f"gates must have shape (T, B, {GATES[pooling]}*H) for pooling={pooling!r}, "
            f"got {tuple(gates.shape)}"
        )
    return list(gates.chunk(GATES[pooling], dim=-1))


def qrnn_pool_ref(gates: Tensor, c0: Tensor | None = None,
                  pooling: str = "fo") -> tuple[Tensor, Tensor]:
    """Reference pooling of one QRNN layer (Bradbury et al., 2017, eqs. 2-5).

    Args:
        gates:   (T, B, G*H) pre-activations, stacked z, f[, o][, i] (G = 2, 3, 4 for
                 pooling "f", "fo", "ifo").
        c0:      (B, H) initial cell or None for zeros.
        pooling: "f":   c_t = f c_{t-1} + (1-f) z,  h_t = c_t
                 "fo":  c_t = f c_{t-1} + (1-f) z,  h_t = o c_t
                 "ifo": c_t = f c_{t-1} + i z,      h_t = o c_t
    Returns:
        h: (T, B, H) outputs, c: (T, B, H) cells.
    """
    parts = _split(gates, pooling)
    z, f = torch.tanh(parts[0]), torch.sigmoid(parts[1])
    if pooling == "ifo":
        iz = torch.sigmoid(parts[3]) * z
        c_prev = f.new_zeros(f.shape[1:]) if c0 is None else c0
        cells = []
        for t in range(f.shape[0]):
            c_prev = f[t] * c_prev + iz[t]
            cells.append(c_prev)
        c = torch.stack(cells) if cells else f.new_zeros(f.shape)
    else:
        c, _ = forget_mult_ref(f, z, c0)
    if pooling == "f":
        return c, c
    return torch.sigmoid(parts[2]) * c, c


def qrnn_pool(gates: Tensor, c0: Tensor | None = None,
              pooling: str = "fo") -> tuple[Tensor, Tensor]:
    """Same contract as `qrnn_pool_ref`, computed with `forget_mult`'s hand-written backward."""
    parts = _split(gates, pooling)
    if pooling == "ifo":
        return qrnn_pool_ref(gates, c0, pooling)  # TODO(issue 3): a kernel for ifo
    z, f = torch.tanh(parts[0]), torch.sigmoid(parts[1])
    c, _ = forget_mult(f.contiguous(), z.contiguous(), c0)
    if pooling == "f":
        return c, c
    return torch.sigmoid(parts[2]) * c, c
