"""Gate activations + pooling of a QRNN layer, as one op: pre-activation gates in, h and c out.

`qrnn_pool_ref` is the specification; `qrnn_pool` its fast path. `qrnn_conv_pool` (reference
`qrnn_conv_pool_ref`) also adds the bias and can take over the masked convolution's shifted tap
sum (window > 1, from every tap's product); the layer calls it at window 1 on the gates that
`causal_conv` computed. Both run the registered op `qrnn::conv_pool` (`library.py`) on the
backend chosen by `backends.resolve`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qrnn.ops import library
from qrnn.ops._torch_loop import GATES  # one definition, shared with the kernels
from qrnn.ops.backends import resolve
from qrnn.ops.conv import check_window
from qrnn.ops.forget_mult import forget_mult_ref


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
        for f_t, iz_t in zip(f.unbind(0), iz.unbind(0)):  # unbind: see forget_mult_ref
            c_prev = f_t * c_prev + iz_t
            cells.append(c_prev)
        c = torch.stack(cells) if cells else f.new_zeros(f.shape)
    else:
        c, _ = forget_mult_ref(f, z, c0)
    if pooling == "f":
        return c, c
    return torch.sigmoid(parts[2]) * c, c


def qrnn_conv_pool_ref(y: Tensor, bias: Tensor | None = None, c0: Tensor | None = None,
                       pooling: str = "fo", window: int = 2) -> tuple[Tensor, Tensor]:
    """Reference: the masked convolution's tap sum, then `qrnn_pool_ref`.

    Args:
        y:       (k-1+T, B, k*G*H) per-tap products F.linear([context; x], W) of the masked
                 convolution (k = window): row r holds every tap applied to input row r, the
                 first k-1 rows being the k-1 inputs before x[0] (zeros at a sequence start);
                 tap j, columns [j*G*H, (j+1)*G*H), multiplies x_{t-j}.
        bias:    (G*H,) or None.
        c0, pooling: as in `qrnn_pool_ref`.
    Returns:
        h, c: (T, B, H), `qrnn_pool_ref(gates, c0, pooling)` with
              gates_t = bias + sum_{j<k} y[k-1+t-j, :, j*G*H:(j+1)*G*H].
    """
    gh = _check_taps(y, bias, pooling, window)
    k, T = window, y.shape[0] - (window - 1)
    gates = sum(y[k - 1 - j:k - 1 - j + T, :, j * gh:(j + 1) * gh] for j in range(k))
    return qrnn_pool_ref(gates if bias is None else gates + bias, c0, pooling)


def qrnn_pool(gates: Tensor, c0: Tensor | None = None, pooling: str = "fo", *,
              backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Same contract and values as `qrnn_pool_ref`, computed by the fast kernels.

    Args:
        gates, c0, pooling: as in `qrnn_pool_ref` (any strides; float16/bfloat16 compute in
                            float32 and return their own dtype).
        backend: "numba" (CPU), "triton" (CUDA), "python" (time loop of torch ops), "reference",
                 or None for `$QRNN_BACKEND` or the device's default (see `qrnn.ops.backends`).
    Returns:
        h, c: (T, B, H) each; for pooling "f", h is c (the same tensor).
    """
    _split(gates, pooling)
    return _run(gates, None, c0, pooling, 1, backend)


def qrnn_conv_pool(y: Tensor, bias: Tensor | None = None, c0: Tensor | None = None,
                   pooling: str = "fo", window: int = 2, *,
                   backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Bias, activations and pooling (and with window > 1 the masked convolution's tap sum)
    in one op; contract and values of `qrnn_conv_pool_ref` (`backend` as in `qrnn_pool`).
    `QRNNLayer` calls it as `qrnn_conv_pool(causal_conv(x, W, context, k), b, c0, pooling, 1)`,
    so its only autograd nodes are the convolution's op and this one."""
    _check_taps(y, bias, pooling, window)
    return _run(y, bias, c0, pooling, window, backend)


def _check_taps(y: Tensor, bias: Tensor | None, pooling: str, window: int) -> int:
    if pooling not in GATES:
        raise ValueError(f"pooling must be one of {sorted(GATES)}, got {pooling!r}")
    check_window(window)
    G = GATES[pooling]
    if y.dim() != 3 or y.shape[-1] % (window * G) or y.shape[0] < window - 1:
        raise ValueError(f"y must have shape (window-1+T, B, window*{G}*H) with T >= 0 for "
                         f"window={window}, pooling={pooling!r}, got {tuple(y.shape)}")
    gh = y.shape[-1] // window
    if bias is not None and bias.shape != (gh,):
        raise ValueError(f"bias must have shape ({gh},), got {tuple(bias.shape)}")
    return gh


def _run(y: Tensor, bias: Tensor | None, c0: Tensor | None, pooling: str, window: int,
         backend: str | None) -> tuple[Tensor, Tensor]:
    rows, B, width = y.shape
    T, H = rows - (window - 1), width // (window * GATES[pooling])
    if c0 is not None and c0.shape != (B, H):
        raise ValueError(f"c0 must have shape (B, H) = {(B, H)}, got {tuple(c0.shape)}")
    for name, t in (("bias", bias), ("c0", c0)):
        if t is not None and t.device != y.device:
            raise ValueError(f"{name} is on {t.device}, the gates on {y.device}")
    name = resolve(y.device.type, backend)
    if name == "reference":
        if window == 1 and bias is None:
            return qrnn_pool_ref(y, c0, pooling)
        return qrnn_conv_pool_ref(y, bias, c0, pooling, window)
    if library.transformed():  # torch.func: the reference, computed as the kernels compute
        work = torch.promote_types(y.dtype, torch.float32)
        h, c = qrnn_conv_pool_ref(*(None if t is None else t.to(work) for t in (y, bias, c0)),
                                  pooling, window)
        c = c.to(y.dtype)
        return (c, c) if pooling == "f" else (h.to(y.dtype), c)
    if T == 0:
        empty = y.new_empty(0, B, H)
        return empty, empty
    h, c = library.run_conv_pool(y, bias, c0, pooling, window, name)
    return (c, c) if pooling == "f" else (h, c)
