"""The "python" backend: the recurrence as a time loop of PyTorch ops, with a hand-written backward.

Runs on any device and needs nothing beyond torch; it is the fallback when no fast backend is
installed. Every backend module (`_numba_cpu.py`, `_triton_gpu.py`) implements these four
functions with the same signatures, called from the registered ops in `library.py`:

    pool_forward(y, bias, c0, pooling, window, save)                -> h, c, act
    pool_backward(act, c, c0, dh, dc, pooling, window, has_bias)    -> dy, dbias, dc0
    forget_mult_forward(f, z, c0)                                   -> c
    forget_mult_backward(f, z, c0, c, dc)                           -> df, dz, dc0

Shapes (G = 2, 3, 4 gates for pooling "f", "fo", "ifo"; k = window):
    y:    (k-1+T, B, k*G*H) per-tap products F.linear([context; x], W) of the masked
          convolution: row r holds every tap applied to input row r, and the first k-1 rows are
          the context before x[0] (zeros at a sequence start). Pre-activation gates:
          pre_t = bias + sum_{j<k} y[k-1+t-j, :, j*G*H:(j+1)*G*H]. k = 1: y is the gates
          themselves. Gate order within G*H: z, f[, o][, i].
    bias: (G*H,) or None.  c0: (B, H) or None (zeros).
    h:    (T, B, H) outputs o*c; an empty (0,) tensor for pooling "f" (where h is c).
    c:    (T, B, H) every cell.  act: (T, B, G*H) gate activations, kept for the backward;
          with save=False (no backward will come) a backend may return less (numba: one step).
    dh, dc: upstream gradients of h and c, or None.  dc0 is None when c0 is None.
Computation runs in float32 for float16/bfloat16 inputs (float64 stays float64): every tensor
these functions return is in that compute dtype; `library.py` casts results back to the inputs'
dtypes (a no-op for float32/float64).

Backward of c_t = f_t c_{t-1} + (1 - f_t) z_t  (or + i_t z_t for "ifo"), h_t = o_t c_t:
    dc~_t = dc_t + o_t dh_t + f_{t+1} dc~_{t+1}   (total gradient reaching c_t)
    df_t = dc~_t (c_{t-1} - z_t)  ["ifo": dc~_t c_{t-1}],   dz_t = dc~_t (1 - f_t)  ["ifo": dc~_t i_t]
    di_t = dc~_t z_t,   do_t = dh_t c_t,   dc0 = f_1 dc~_1
and through the activations: tanh' = 1 - z^2, sigmoid' = s (1 - s).
"""

from __future__ import annotations

import torch
from torch import Tensor

GATES = {"f": 2, "fo": 3, "ifo": 4}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def activations(y: Tensor, bias: Tensor | None, pooling: str, window: int) -> Tensor:
    """Tap sum of the masked convolution plus gate activations. -> act (T, B, G*H), contiguous."""
    rows, B, width = y.shape
    k, gh = window, width // window
    T, H = rows - (k - 1), gh // GATES[pooling]
    act = torch.empty(T, B, gh, dtype=compute_dtype(y.dtype), device=y.device)
    if bias is None:
        act.copy_(y[k - 1:, :, :gh])
    else:
        torch.add(y[k - 1:, :, :gh], bias, out=act)
    for j in range(1, k):
        act += y[k - 1 - j:k - 1 - j + T, :, j * gh:(j + 1) * gh]  # tap j on x_{t-j}
    act[:, :, :H].tanh_()
    act[:, :, H:].sigmoid_()
    return act


def activation_grads_to_taps(dpre: Tensor, window: int,
                             has_bias: bool) -> tuple[Tensor, Tensor | None]:
    """dpre (T, B, G*H) -> dy (k-1+T, B, k*G*H), dbias (G*H,) or None."""
    T, B, gh = dpre.shape
    k = window
    dy = torch.empty(k - 1 + T, B, k * gh, dtype=dpre.dtype, device=dpre.device)
    for j in range(k):
        tap = dy[:, :, j * gh:(j + 1) * gh]  # row r of tap j reached step t = r - (k-1) + j
        tap[:k - 1 - j] = 0
        tap[k - 1 - j:k - 1 - j + T] = dpre
        tap[k - 1 - j + T:] = 0
    dbias = dpre.sum((0, 1)) if has_bias else None
    return dy, dbias


def pool_forward(y: Tensor, bias: Tensor | None, c0: Tensor | None, pooling: str,
                 window: int, save: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    act = activations(y, bias, pooling, window)  # needed whatever `save` says
    T, B, gh = act.shape
    H = gh // GATES[pooling]
    z, f = act[:, :, :H], act[:, :, H:2 * H]
    # "f"/"fo": c_t = f c_{t-1} + (1-f) z = z + f (c_{t-1} - z);  "ifo": c_t = f c_{t-1} + i z
    c = torch.empty(T, B, H, dtype=act.dtype, device=act.device)
    c_prev = act.new_zeros(B, H) if c0 is None else c0.to(act.dtype)
    iz = act[:, :, 3 * H:] * z if pooling == "ifo" else None
    for t in range(T):
        if iz is None:
            torch.addcmul(z[t], f[t], c_prev - z[t], out=c[t])
        else:
            torch.addcmul(iz[t], f[t], c_prev, out=c[t])
        c_prev = c[t]
    h = c.new_empty(0) if pooling == "f" else act[:, :, 2 * H:3 * H] * c
    return h, c, act


def pool_backward(act: Tensor, c: Tensor, c0: Tensor | None, dh: Tensor | None,
                  dc: Tensor | None, pooling: str, window: int,
                  has_bias: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    T, B, gh = act.shape
    H = gh // GATES[pooling]
    cd = act.dtype
    c = c.to(cd)
    z, f = act[:, :, :H], act[:, :, H:2 * H]
    o = act[:, :, 2 * H:3 * H] if pooling != "f" else None
    # Gradient given directly to each c_t (the loop then adds what flows back from c_{t+1}).
    direct = torch.zeros(T, B, H, dtype=cd, device=act.device) if dc is None else dc.to(cd)
    if o is not None and dh is not None:
        direct = direct + o * dh.to(cd)
    dc_total, running, c_before = _cell_gradients(direct, f, c, c0)
    dpre = torch.empty_like(act)
    if pooling == "ifo":
        i = act[:, :, 3 * H:]
        dpre[:, :, :H] = dc_total * i * (1 - z * z)
        dpre[:, :, H:2 * H] = dc_total * c_before * f * (1 - f)
        dpre[:, :, 3 * H:] = dc_total * z * i * (1 - i)
    else:
        dpre[:, :, :H] = dc_total * (1 - f) * (1 - z * z)
        dpre[:, :, H:2 * H] = dc_total * (c_before - z) * f * (1 - f)
    if o is not None:
        do = c * dh.to(cd) if dh is not None else torch.zeros_like(c)
        dpre[:, :, 2 * H:3 * H] = do * o * (1 - o)
    dy, dbias = activation_grads_to_taps(dpre, window, has_bias)
    dc0 = None if c0 is None else running
    return dy, dbias, dc0


def _cell_gradients(direct: Tensor, f: Tensor, c: Tensor,
                    c0: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The backward time loop shared by both ops (all (T, B, H) in the compute dtype).

    direct: gradient given to each c_t; f: forget gates; c: cells; c0: (B, H) or None.
    Returns dc_total (T, B, H), the total gradient reaching each c_t (dc_t = direct_t +
    f_{t+1} dc_{t+1}); f_1 * dc_1 (B, H), the gradient of c0; and c_{t-1} (T, B, H).
    """
    T, B, H = c.shape
    dc_total = torch.empty_like(direct)
    running = c.new_zeros(B, H)
    for t in range(T - 1, -1, -1):
        running = torch.add(direct[t], running, out=dc_total[t])
        running = running * f[t]
    c0_ = c.new_zeros(B, H) if c0 is None else c0.to(c.dtype)
    c_before = torch.cat([c0_.unsqueeze(0), c[:-1]])  # (T, B, H): c_{t-1}
    return dc_total, running, c_before


def forget_mult_forward(f: Tensor, z: Tensor, c0: Tensor | None) -> Tensor:
    T, B, H = f.shape
    cd = compute_dtype(f.dtype)
    f, z = f.to(cd), z.to(cd)
    c = torch.empty(T, B, H, dtype=cd, device=f.device)
    c_prev = f.new_zeros(B, H) if c0 is None else c0.to(cd)
    for t in range(T):
        c_prev = torch.addcmul(z[t], f[t], c_prev - z[t], out=c[t])
    return c


def forget_mult_backward(f: Tensor, z: Tensor, c0: Tensor | None, c: Tensor,
                         dc: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    T, B, H = f.shape
    cd = c.dtype
    f, z, dc = f.to(cd), z.to(cd), dc.to(cd)
    dc_total, running, c_before = _cell_gradients(dc, f, c, c0)
    df = dc_total * (c_before - z)
    dz = dc_total * (1 - f)
    return df, dz, None if c0 is None else running
