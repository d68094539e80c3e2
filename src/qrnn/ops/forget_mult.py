"""fo-pooling, the recurrence at the heart of a QRNN (Bradbury et al., 2017, eq. 4).

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t

`forget_mult_ref` is the specification: a plain loop under autograd, obviously correct and
float64-testable. `forget_mult` computes the same values with a hand-written backward, so that
autograd records one node for the whole sequence instead of a few per time step.
The fast paths live in one module per backend (`_numba_cpu.py`, `_triton_gpu.py`,
`_torch_loop.py`), registered as the custom op `qrnn::forget_mult` in `library.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qrnn.ops import library
from qrnn.ops.backends import resolve


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
    # unbind, not f[t]: autograd then sums one gradient per step, not a (T, B, H) tensor per step
    for f_t, z_t in zip(f.unbind(0), z.unbind(0)):
        c_prev = f_t * c_prev + (1 - f_t) * z_t
        cells.append(c_prev)
    if not cells:
        return f.new_zeros(f.shape), c_prev
    return torch.stack(cells), c_prev


def forget_mult(f: Tensor, z: Tensor, c0: Tensor | None = None, *,
                backend: str | None = None) -> tuple[Tensor, Tensor]:
    """fo-pooling with a hand-written backward; same contract and values as `forget_mult_ref`.

    Args:
        f, z, c0: as in `forget_mult_ref` (any strides; float16/bfloat16 compute in float32).
        backend:  "numba" (CPU), "triton" (CUDA), "python" (time loop of torch ops, any device),
                  "reference", or None for `$QRNN_BACKEND` or the device's default
                  (see `qrnn.ops.backends`).
    Returns:
        c: (T, B, H), c_last: (B, H), as in `forget_mult_ref`.
    """
    _check(f, z, c0)
    for name, t in (("z", z), ("c0", c0)):
        if t is not None and t.device != f.device:
            raise ValueError(f"forget_mult: {name} is on {t.device}, f on {f.device}")
    name = resolve(f.device.type, backend)
    if name == "reference":
        return forget_mult_ref(f, z, c0)
    if library.transformed():  # torch.func: the reference, computed as the kernels compute
        work = torch.promote_types(f.dtype, torch.float32)
        c, c_last = forget_mult_ref(f.to(work), z.to(work), None if c0 is None else c0.to(work))
        return c.to(f.dtype), c_last.to(f.dtype)
    if f.shape[0] == 0:
        return f.new_empty(f.shape), (f.new_zeros(f.shape[1:]) if c0 is None else c0)
    return library.run_forget_mult(f, z, c0, name)
