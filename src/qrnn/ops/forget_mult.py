"""fo-pooling, the recurrence at the heart of a QRNN (Bradbury et al., 2017, eq. 4).

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t

`forget_mult_ref` is the specification: a plain loop under autograd, obviously correct and
float64-testable. `forget_mult` computes the same values with a hand-written backward, so that
autograd records one node for the whole sequence instead of a few per time step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(f: Tensor, z: Tensor, c0: Tensor | None) -> None:
    if f.dim() != 3:
        raise ValueError(f"forget_mult: f must have shape (T, B, H), got {tuple(f.shape)}")
    if z.shape != f.shape:
        raise ValueError(
            f"forget_mult: z must have the shape of f {tuple(f.shape)}, got {tuple(z.shape)}"
        )
    if c0 is not None and c0.shape != f.shape[1:]:
        raise ValueError(
            f"forget_mult: c0 must have shape (B, H) = {tuple(f.shape[1:])}, got {tuple(c0.shape)}"
        )


def forget_mult_ref(f: Tensor, z: Tensor, c0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Reference fo-pooling.

    Args:
        f:  (T, B, H) forget gate, values in [0, 1].
        z:  (T, B, H) candidate values.
        c0: (B, H) initial cell, or None for zeros.
    Returns:
        c:      (T, B, H) every cell c_1..c_T.
        c_last: (B, H) the last cell c_T (c0 when T == 0).
    """
    _check(f, z, c0)
    c_prev = f.new_zeros(f.shape[1:]) if c0 is None else c0
    cells = []
    for t in range(f.shape[0]):
        c_prev = f[t] * c_prev + (1 - f[t]) * z[t]
        cells.append(c_prev)
    if not cells:
        return f.new_zeros(f.shape), c_prev
    return torch.stack(cells), c_prev


class _ForgetMult(torch.autograd.Function):
    """One autograd node for the whole recurrence; the time loop runs outside autograd.

    Backward (dc_t is the total gradient reaching c_t, g_t the gradient given for c_t):
        dc_T = g_T + g_last;   dc_t = g_t + f_{t+1} * dc_{t+1}
        df_t = dc_t * (c_{t-1} - z_t);   dz_t = dc_t * (1 - f_t);   dc0 = f_1 * dc_1
    """

    @staticmethod
    def forward(ctx, f: Tensor, z: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
        T = f.shape[0]
        c = torch.empty_like(f)  # (T, B, H)
        c_prev = c0
        one_minus_f_z = (1 - f) * z
        for t in range(T):
            c_prev = torch.addcmul(one_minus_f_z[t], f[t], c_prev, out=c[t])
        ctx.save_for_backward(f, z, c0, c)
        return c, c_prev.clone()

    @staticmethod
    def backward(ctx, grad_c: Tensor | None, grad_last: Tensor | None):
        f, z, c0, c = ctx.saved_tensors
        T = f.shape[0]
        grad_c = torch.zeros_like(c) if grad_c is None else grad_c
        dc_total = torch.empty_like(c)  # (T, B, H)
        running = torch.zeros_like(c0) if grad_last is None else grad_last.clone()
        for t in range(T - 1, -1, -1):
            running = running + grad_c[t]
            dc_total[t] = running
            running = running * f[t]
        dc0 = running  # f_1 * dc_1
        c_before = torch.cat([c0.unsqueeze(0), c[:-1]])  # (T, B, H): c_{t-1}
        df = dc_total * (c_before - z)
        dz = dc_total * (1 - f)
        return df, dz, dc0


def forget_mult(f: Tensor, z: Tensor, c0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """fo-pooling with a hand-written backward; same contract as `forget_mult_ref`."""
    _check(f, z, c0)
    if f.shape[0] == 0:
        c_last = f.new_zeros(f.shape[1:]) if c0 is None else c0
        return f.new_empty(f.shape), c_last
    if c0 is None:
        c0 = f.new_zeros(f.shape[1:])
    return _ForgetMult.apply(f, z, c0)
