"""The "triton" backend: the QRNN recurrence on GPU as Triton kernels.

Same functions and shape contracts as `_torch_loop.py` (read its docstring first). Imported
lazily, on the first call that runs this backend, so `import qrnn` never needs triton.

One program owns a block of BLOCK channels of the flattened (B, H) and walks time inside the
kernel, so a whole sequence is one launch (never a launch per step). Everything around the
recurrence is fused into the same kernel: the masked convolution's tap sum (reading the k taps
of y directly), the bias, the gate activations, the output gate; the forward stores the
activations for the backward, which then needs no transcendental function and writes the taps'
gradients straight into dy. Inputs in float16/bfloat16 are computed in float32 (the wrapper
casts), float64 stays float64. Runs on CPU tensors under the Triton interpreter
(TRITON_INTERPRET=1), which is how it is tested without a GPU; the GPU block size is a
heuristic that has not been tuned on hardware yet.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from qrnn.ops._torch_loop import GATES, compute_dtype


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 1 - 2 / (exp(2x) + 1): exact limits +-1 for large |x| (exp overflows to inf -> 1 - 0)
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _pool_fwd_kernel(y_ptr, bias_ptr, c0_ptr, act_ptr, h_ptr, c_ptr, T, B, H,
                     G: tl.constexpr, K: tl.constexpr, HAS_BIAS: tl.constexpr,
                     HAS_C0: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flat (b, h) channels
    mask = idx < B * H
    b = idx // H
    h = idx % H
    GH = G * H
    cd = act_ptr.dtype.element_ty
    if HAS_C0:
        cell = tl.load(c0_ptr + idx, mask=mask, other=0.0).to(cd)
    else:
        cell = tl.zeros([BLOCK], dtype=cd)
    for t in range(T):
        pre_z = tl.zeros([BLOCK], dtype=cd)
        pre_f = tl.zeros([BLOCK], dtype=cd)
        pre_o = tl.zeros([BLOCK], dtype=cd)
        pre_i = tl.zeros([BLOCK], dtype=cd)
        for k in tl.static_range(K):  # tap k applied to input row K-1+t-k reaches step t
            row = y_ptr + ((K - 1 + t - k) * B + b) * (K * GH) + k * GH + h
            pre_z += tl.load(row, mask=mask, other=0.0).to(cd)
            pre_f += tl.load(row + H, mask=mask, other=0.0).to(cd)
            if G >= 3:
                pre_o += tl.load(row + 2 * H, mask=mask, other=0.0).to(cd)
            if G == 4:
                pre_i += tl.load(row + 3 * H, mask=mask, other=0.0).to(cd)
        if HAS_BIAS:
            pre_z += tl.load(bias_ptr + h, mask=mask, other=0.0).to(cd)
            pre_f += tl.load(bias_ptr + H + h, mask=mask, other=0.0).to(cd)
            if G >= 3:
                pre_o += tl.load(bias_ptr + 2 * H + h, mask=mask, other=0.0).to(cd)
            if G == 4:
                pre_i += tl.load(bias_ptr + 3 * H + h, mask=mask, other=0.0).to(cd)
        z = _tanh(pre_z)
        f = _sigmoid(pre_f)
        act_row = act_ptr + (t * B + b) * GH + h
        tl.store(act_row, z, mask=mask)
        tl.store(act_row + H, f, mask=mask)
        if G == 4:
            i = _sigmoid(pre_i)
            tl.store(act_row + 3 * H, i, mask=mask)
            cell = f * cell + i * z
        else:
            cell = z + f * (cell - z)
        tl.store(c_ptr + t * B * H + idx, cell, mask=mask)
        if G >= 3:
            o = _sigmoid(pre_o)
            tl.store(act_row + 2 * H, o, mask=mask)
            tl.store(h_ptr + t * B * H + idx, o * cell, mask=mask)


@triton.jit
def _pool_bwd_kernel(act_ptr, c_ptr, c0_ptr, dh_ptr, dc_ptr, dy_ptr, dbias_ptr, dc0_ptr,
                     T, B, H, G: tl.constexpr, K: tl.constexpr, HAS_C0: tl.constexpr,
                     HAS_DH: tl.constexpr, HAS_DC: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < B * H
    b = idx // H
    h = idx % H
    GH = G * H
    cd = act_ptr.dtype.element_ty
    if HAS_C0:
        c0 = tl.load(c0_ptr + idx, mask=mask, other=0.0)
    else:
        c0 = tl.zeros([BLOCK], dtype=cd)
    running = tl.zeros([BLOCK], dtype=cd)  # gradient reaching c_t from c_{t+1}
    db_z = tl.zeros([BLOCK], dtype=cd)
    db_f = tl.zeros([BLOCK], dtype=cd)
    db_o = tl.zeros([BLOCK], dtype=cd)
    db_i = tl.zeros([BLOCK], dtype=cd)
    for step in range(T):
        t = T - 1 - step
        act_row = act_ptr + (t * B + b) * GH + h
        z = tl.load(act_row, mask=mask, other=0.0)
        f = tl.load(act_row + H, mask=mask, other=0.0)
        has_prev = tl.full([BLOCK], t, tl.int32) > 0  # a vector, so the interpreter agrees
        c_prev = tl.load(c_ptr + tl.maximum(t - 1, 0) * B * H + idx, mask=mask, other=0.0)
        c_prev = tl.where(has_prev, c_prev, c0)
        total = running
        if HAS_DC:
            total += tl.load(dc_ptr + t * B * H + idx, mask=mask, other=0.0)
        d_o = tl.zeros([BLOCK], dtype=cd)
        if G >= 3:
            if HAS_DH:
                o = tl.load(act_row + 2 * H, mask=mask, other=0.0)
                g_h = tl.load(dh_ptr + t * B * H + idx, mask=mask, other=0.0)
                c_now = tl.load(c_ptr + t * B * H + idx, mask=mask, other=0.0)
                total += o * g_h
                d_o = g_h * c_now * o * (1 - o)
        if G == 4:
            i = tl.load(act_row + 3 * H, mask=mask, other=0.0)
            d_z = total * i * (1 - z * z)
            d_f = total * c_prev * f * (1 - f)
            d_i = total * z * i * (1 - i)
        else:
            d_z = total * (1 - f) * (1 - z * z)
            d_f = total * (c_prev - z) * f * (1 - f)
            d_i = tl.zeros([BLOCK], dtype=cd)
        running = total * f
        db_z += d_z
        db_f += d_f
        db_o += d_o
        db_i += d_i
        for k in tl.static_range(K):
            out = dy_ptr + ((K - 1 + t - k) * B + b) * (K * GH) + k * GH + h
            tl.store(out, d_z, mask=mask)
            tl.store(out + H, d_f, mask=mask)
            if G >= 3:
                tl.store(out + 2 * H, d_o, mask=mask)
            if G == 4:
                tl.store(out + 3 * H, d_i, mask=mask)
    db = dbias_ptr + b * GH + h
    tl.store(db, db_z, mask=mask)
    tl.store(db + H, db_f, mask=mask)
    if G >= 3:
        tl.store(db + 2 * H, db_o, mask=mask)
    if G == 4:
        tl.store(db + 3 * H, db_i, mask=mask)
    tl.store(dc0_ptr + idx, running, mask=mask)


@triton.jit
def _fm_fwd_kernel(f_ptr, z_ptr, c0_ptr, c_ptr, T, BH, HAS_C0: tl.constexpr,
                   BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < BH
    cd = c_ptr.dtype.element_ty
    if HAS_C0:
        cell = tl.load(c0_ptr + idx, mask=mask, other=0.0).to(cd)
    else:
        cell = tl.zeros([BLOCK], dtype=cd)
    for t in range(T):
        f = tl.load(f_ptr + t * BH + idx, mask=mask, other=0.0).to(cd)
        z = tl.load(z_ptr + t * BH + idx, mask=mask, other=0.0).to(cd)
        cell = z + f * (cell - z)
        tl.store(c_ptr + t * BH + idx, cell, mask=mask)


@triton.jit
def _fm_bwd_kernel(f_ptr, z_ptr, c0_ptr, c_ptr, dc_ptr, df_ptr, dz_ptr, dc0_ptr, T, BH,
                   HAS_C0: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < BH
    cd = c_ptr.dtype.element_ty
    if HAS_C0:
        c0 = tl.load(c0_ptr + idx, mask=mask, other=0.0).to(cd)
    else:
        c0 = tl.zeros([BLOCK], dtype=cd)
    running = tl.zeros([BLOCK], dtype=cd)
    for step in range(T):
        t = T - 1 - step
        f = tl.load(f_ptr + t * BH + idx, mask=mask, other=0.0).to(cd)
        z = tl.load(z_ptr + t * BH + idx, mask=mask, other=0.0).to(cd)
        has_prev = tl.full([BLOCK], t, tl.int32) > 0
        c_prev = tl.load(c_ptr + tl.maximum(t - 1, 0) * BH + idx, mask=mask, other=0.0)
        c_prev = tl.where(has_prev, c_prev, c0)
        d = running + tl.load(dc_ptr + t * BH + idx, mask=mask, other=0.0)
        tl.store(df_ptr + t * BH + idx, d * (c_prev - z), mask=mask)
        tl.store(dz_ptr + t * BH + idx, d * (1 - f), mask=mask)
        running = d * f
    tl.store(dc0_ptr + idx, running, mask=mask)


def _block(channels: int) -> int:
    # Enough programs to fill a large GPU (~132 SMs) before making blocks wider. Untuned.
    block = 32
    while block < 256 and channels >= block * 2 * 264:
        block *= 2
    return block


def _grid(channels: int, block: int) -> tuple[int]:
    return (triton.cdiv(channels, block),)


def pool_forward(y: Tensor, bias: Tensor | None, c0: Tensor | None, pooling: str,
                 window: int, save: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    # `save` is not used: the kernel stores act at every step either way
    cd = compute_dtype(y.dtype)
    y = y.to(cd).contiguous()
    rows, B, width = y.shape
    G, K = GATES[pooling], window
    T, H = rows - (K - 1), width // (K * G)
    act = torch.empty(T, B, G * H, dtype=cd, device=y.device)
    c = torch.empty(T, B, H, dtype=cd, device=y.device)
    h = torch.empty(T, B, H, dtype=cd, device=y.device) if G >= 3 else c.new_empty(0)
    bias_ = y if bias is None else bias.to(cd).contiguous()  # y: an unused placeholder pointer
    c0_ = y if c0 is None else c0.to(cd).contiguous()
    block = _block(B * H)
    _pool_fwd_kernel[_grid(B * H, block)](
        y, bias_, c0_, act, c if G < 3 else h, c, T, B, H, G=G, K=K, HAS_BIAS=bias is not None,
        HAS_C0=c0 is not None, BLOCK=block)
    return h, c, act


def pool_backward(act: Tensor, c: Tensor, c0: Tensor | None, dh: Tensor | None,
                  dc: Tensor | None, pooling: str, window: int,
                  has_bias: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    T, B, gh = act.shape
    G, K = GATES[pooling], window
    H = gh // G
    cd = act.dtype
    act, c = act.contiguous(), c.to(cd).contiguous()
    dy = torch.empty(K - 1 + T, B, K * gh, dtype=cd, device=act.device)
    dy[:K - 1].zero_()  # rows that some tap does not reach; the kernel overwrites the rest
    dy[T:].zero_()
    dbias_part = torch.empty(B, gh, dtype=cd, device=act.device)
    dc0 = torch.empty(B, H, dtype=cd, device=act.device)
    block = _block(B * H)
    _pool_bwd_kernel[_grid(B * H, block)](
        act, c, act if c0 is None else c0.to(cd).contiguous(),
        act if dh is None else dh.to(cd).contiguous(),
        act if dc is None else dc.to(cd).contiguous(),
        dy, dbias_part, dc0, T, B, H, G=G, K=K, HAS_C0=c0 is not None,
        HAS_DH=dh is not None, HAS_DC=dc is not None, BLOCK=block)
    return dy, dbias_part.sum(0) if has_bias else None, None if c0 is None else dc0


def forget_mult_forward(f: Tensor, z: Tensor, c0: Tensor | None) -> Tensor:
    T, B, H = f.shape
    cd = compute_dtype(f.dtype)
    f, z = f.contiguous(), z.contiguous()
    c = torch.empty(T, B, H, dtype=cd, device=f.device)
    block = _block(B * H)
    _fm_fwd_kernel[_grid(B * H, block)](f, z, f if c0 is None else c0.contiguous(), c, T, B * H,
                                        HAS_C0=c0 is not None, BLOCK=block)
    return c


def forget_mult_backward(f: Tensor, z: Tensor, c0: Tensor | None, c: Tensor,
                         dc: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    T, B, H = f.shape
    cd = c.dtype
    f, z, c, dc = f.contiguous(), z.contiguous(), c.contiguous(), dc.to(cd).contiguous()
    df, dz = torch.empty(T, B, H, dtype=cd, device=f.device), torch.empty_like(c)
    dc0 = torch.empty(B, H, dtype=cd, device=f.device)
    block = _block(B * H)
    _fm_bwd_kernel[_grid(B * H, block)](f, z, f if c0 is None else c0.contiguous(), c, dc, df,
                                        dz, dc0, T, B * H, HAS_C0=c0 is not None, BLOCK=block)
    return df, dz, None if c0 is None else dc0
