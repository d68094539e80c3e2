"""The "triton" backend: the QRNN recurrence on GPU as Triton kernels.

Same functions and shape contracts as `_torch_loop.py` (read its docstring first). Imported
lazily, on the first call that runs this backend, so `import qrnn` never needs triton.

One program owns BLOCK channels of the flattened (B, H) and walks time inside the kernel, so a
whole sequence is one launch (never a launch per step). It walks it a chunk of CHUNK steps at a
time: every load of a chunk (the k taps of y for each gate, or the saved activations) is issued
at once as a (CHUNK, BLOCK) tile, the activations are computed on the whole tile, and the
chunk's recurrence is solved with `tl.associative_scan`, since each step is an affine map of the
cell before it:

    c_t = a_t c_{t-1} + b_t,   (a, b) = (f, (1 - f) z)   ["ifo": (f, i z)]
    two steps compose as (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2)        (`_compose`)

so c over the chunk is A_t c_before + B_t with (A, B) the scan's prefixes, and the chunk's last
cell carries into the next. The backward is the same scan run backwards in time (the tile's rows
in decreasing t): dc~_t = direct_t + f_{t+1} dc~_{t+1}. Walking time step by step instead
(CHUNK = 1, what this module did first) waits for one memory round trip per step; a chunk waits
for one per CHUNK steps. Neither has been timed on a GPU yet (no GPU has been lent to this
project); `benchmarks/bench_recurrence.py --device cuda --chunks 1,2,4,16,32` times them side
by side (`benchmarks/gpu_checks.sh` runs it).

Everything around the recurrence is fused into the same kernel: the masked convolution's tap
sum (reading the k taps of y directly), the bias, the gate activations, the output gate; the
forward stores the activations for the backward (unless no backward will come: `save=False`),
which then needs no transcendental function and writes the taps' gradients straight into dy.
Inputs in float16/bfloat16 are loaded as they are and computed in float32; float64 stays
float64. Each chunk starts at an int64 offset, so no length or batch overflows one; offsets
within a chunk are int32, and a time step too large for them is an error (`_run`). Runs on CPU
tensors under the Triton interpreter (TRITON_INTERPRET=1), which is how it is tested without a
GPU; its compilation for NVIDIA GPUs (sm_80, sm_90) is tested without one too
(`tests/test_ops.py`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from qrnn.ops._torch_loop import GATES, compute_dtype

# Steps per chunk (the tile's rows, a power of 2), by compute dtype, and channels per program
# (its columns, one warp's lanes). The largest chunks whose kernels compile without register
# spills at window 2 for sm_90 (Hopper) with triton 3.6 and 3.9: at 16 steps the float32
# backward spilled, and so did "ifo"'s at 8 with 3.6 (on sm_80), hence its half chunk; float64
# values take two registers each. `tests/triton_compile_check.py` prints registers and spills,
# and tests/test_ops.py asserts there are none. Untuned on hardware.
CHUNK = {torch.float32: 8, torch.float64: 4}
BLOCK = 32


def chunk(compute: torch.dtype, gates: int = 2) -> int:
    """Steps per chunk for a kernel computing in `compute` with `gates` gates (forget_mult: 2)."""
    return max(1, CHUNK[compute] // 2) if gates == 4 else CHUNK[compute]


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 1 - 2 / (exp(2x) + 1): exact limits +-1 for large |x| (exp overflows to inf -> 1 - 0)
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _compose(a1, b1, a2, b2):
    # the affine step c -> a1 c + b1, then c -> a2 c + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _last_row(tile, rows):
    # tile[CHUNK-1, :] as a (BLOCK,) vector: a sum of that row and zeros, so its values (-0.0
    # comes back as +0.0)
    return tl.sum(tl.where(rows[:, None] == rows.shape[0] - 1, tile, 0.0), axis=0)


@triton.jit
def _pool_fwd_kernel(y_ptr, bias_ptr, c0_ptr, act_ptr, h_ptr, c_ptr, T, B, H,
                     G: tl.constexpr, K: tl.constexpr, HAS_BIAS: tl.constexpr,
                     HAS_C0: tl.constexpr, SAVE: tl.constexpr, CHUNK: tl.constexpr,
                     BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flat (b, h) channels
    mask = idx < B * H
    b = idx // H
    h = idx % H
    GH = G * H
    cd = c_ptr.dtype.element_ty
    rows = tl.arange(0, CHUNK)
    # Offsets within a chunk, in int32 (the caller checks they fit): element (row, channel) of
    # a chunk that starts at step t0 is at base(t0) + offset, base(t0) a scalar int64 pointer.
    y_row, act_row, cell_row = B * (K * GH), B * GH, B * H
    y_off = rows[:, None] * y_row + (b * (K * GH) + h)[None, :]  # y[r, b, h]
    act_off = rows[:, None] * act_row + (b * GH + h)[None, :]  # act[t, b, h]
    cell_off = rows[:, None] * cell_row + idx[None, :]  # c[t, b, h], h[t, b, h]
    if HAS_C0:
        cell = tl.load(c0_ptr + idx, mask=mask, other=0.0).to(cd)
    else:
        cell = tl.zeros([BLOCK], dtype=cd)
    if HAS_BIAS:  # (1, BLOCK) each, loaded once
        bias_z = tl.load(bias_ptr + h, mask=mask, other=0.0).to(cd)[None, :]
        bias_f = tl.load(bias_ptr + H + h, mask=mask, other=0.0).to(cd)[None, :]
        if G >= 3:
            bias_o = tl.load(bias_ptr + 2 * H + h, mask=mask, other=0.0).to(cd)[None, :]
        if G == 4:
            bias_i = tl.load(bias_ptr + 3 * H + h, mask=mask, other=0.0).to(cd)[None, :]
    for t0 in range(0, T, CHUNK):
        m = ((t0 + rows) < T)[:, None] & mask[None, :]
        step = tl.cast(t0, tl.int64)
        pre_z = tl.zeros([CHUNK, BLOCK], dtype=cd)
        pre_f = tl.zeros([CHUNK, BLOCK], dtype=cd)
        pre_o = tl.zeros([CHUNK, BLOCK], dtype=cd)
        pre_i = tl.zeros([CHUNK, BLOCK], dtype=cd)
        for k in tl.static_range(K):  # tap k applied to input row K-1+t-k reaches step t
            tap = y_ptr + (step + K - 1 - k) * y_row + k * GH + y_off
            pre_z += tl.load(tap, mask=m, other=0.0).to(cd)
            pre_f += tl.load(tap + H, mask=m, other=0.0).to(cd)
            if G >= 3:
                pre_o += tl.load(tap + 2 * H, mask=m, other=0.0).to(cd)
            if G == 4:
                pre_i += tl.load(tap + 3 * H, mask=m, other=0.0).to(cd)
        if HAS_BIAS:
            pre_z += bias_z
            pre_f += bias_f
            if G >= 3:
                pre_o += bias_o
            if G == 4:
                pre_i += bias_i
        z = _tanh(pre_z)
        f = _sigmoid(pre_f)
        act = act_ptr + step * act_row + act_off
        if SAVE:
            tl.store(act, z, mask=m)
            tl.store(act + H, f, mask=m)
        if G == 4:
            i = _sigmoid(pre_i)
            if SAVE:
                tl.store(act + 3 * H, i, mask=m)
            steps_a, steps_b = tl.associative_scan((f, i * z), 0, _compose)
        else:
            steps_a, steps_b = tl.associative_scan((f, z - f * z), 0, _compose)
        cells = steps_a * cell[None, :] + steps_b  # (CHUNK, BLOCK)
        tl.store(c_ptr + step * cell_row + cell_off, cells, mask=m)
        if G >= 3:
            o = _sigmoid(pre_o)
            if SAVE:
                tl.store(act + 2 * H, o, mask=m)
            tl.store(h_ptr + step * cell_row + cell_off, o * cells, mask=m)
        cell = _last_row(cells, rows)  # rows past T (last chunk only) are never read


@triton.jit
def _pool_bwd_kernel(act_ptr, c_ptr, c0_ptr, dh_ptr, dc_ptr, dy_ptr, dbias_ptr, dc0_ptr,
                     T, B, H, G: tl.constexpr, K: tl.constexpr, HAS_C0: tl.constexpr,
                     HAS_DH: tl.constexpr, HAS_DC: tl.constexpr, CHUNK: tl.constexpr,
                     BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < B * H
    b = idx // H
    h = idx % H
    GH = G * H
    cd = act_ptr.dtype.element_ty
    rows = tl.arange(0, CHUNK)  # row j of a chunk is step t = (its latest step) - j
    dy_row, act_row, cell_row = B * (K * GH), B * GH, B * H
    dy_off = (b * (K * GH) + h)[None, :] - rows[:, None] * dy_row
    act_off = (b * GH + h)[None, :] - rows[:, None] * act_row
    cell_off = idx[None, :] - rows[:, None] * cell_row
    if HAS_C0:
        c0 = tl.load(c0_ptr + idx, mask=mask, other=0.0).to(cd)
    else:
        c0 = tl.zeros([BLOCK], dtype=cd)
    later = tl.zeros([BLOCK], dtype=cd)  # dc~ of the step after this chunk (0 after the last)
    dc0 = tl.zeros([BLOCK], dtype=cd)
    db_z = tl.zeros([BLOCK], dtype=cd)
    db_f = tl.zeros([BLOCK], dtype=cd)
    db_o = tl.zeros([BLOCK], dtype=cd)
    db_i = tl.zeros([BLOCK], dtype=cd)
    for back in range(0, T, CHUNK):
        t = (T - 1 - back - rows)[:, None]  # decreasing: row 0 is the chunk's latest step
        m = (t >= 0) & mask[None, :]
        step = tl.cast(T - 1 - back, tl.int64)
        act = act_ptr + step * act_row + act_off
        z = tl.load(act, mask=m, other=0.0)
        f = tl.load(act + H, mask=m, other=0.0)
        f_next = tl.load(act + act_row + H, mask=m & (t + 1 < T), other=0.0)  # f_{t+1}
        cell = step * cell_row + cell_off
        c_prev = tl.load(c_ptr + cell - cell_row, mask=m & (t > 0), other=0.0).to(cd)
        c_prev = tl.where(t == 0, c0[None, :], c_prev)
        direct = tl.zeros([CHUNK, BLOCK], dtype=cd)  # gradient given to c_t itself
        if HAS_DC:
            direct += tl.load(dc_ptr + cell, mask=m, other=0.0).to(cd)
        d_o = tl.zeros([CHUNK, BLOCK], dtype=cd)
        if G >= 3:
            if HAS_DH:
                o = tl.load(act + 2 * H, mask=m, other=0.0)
                g_h = tl.load(dh_ptr + cell, mask=m, other=0.0).to(cd)
                c_now = tl.load(c_ptr + cell, mask=m, other=0.0).to(cd)
                direct += o * g_h
                d_o = g_h * c_now * o * (1 - o)
        # dc~_t = direct_t + f_{t+1} dc~_{t+1}: rows run backwards in time, so a forward scan
        steps_a, steps_b = tl.associative_scan((f_next, direct), 0, _compose)
        total = steps_a * later[None, :] + steps_b
        if G == 4:
            i = tl.load(act + 3 * H, mask=m, other=0.0)
            d_z = total * i * (1 - z * z)
            d_f = total * c_prev * f * (1 - f)
            d_i = total * z * i * (1 - i)
        else:
            d_z = total * (1 - f) * (1 - z * z)
            d_f = total * (c_prev - z) * f * (1 - f)
            d_i = tl.zeros([CHUNK, BLOCK], dtype=cd)
        d_z = tl.where(m, d_z, 0.0)
        d_f = tl.where(m, d_f, 0.0)
        d_o = tl.where(m, d_o, 0.0)
        d_i = tl.where(m, d_i, 0.0)
        db_z += tl.sum(d_z, axis=0)
        db_f += tl.sum(d_f, axis=0)
        db_o += tl.sum(d_o, axis=0)
        db_i += tl.sum(d_i, axis=0)
        for k in tl.static_range(K):
            out = dy_ptr + (step + K - 1 - k) * dy_row + k * GH + dy_off
            tl.store(out, d_z, mask=m)
            tl.store(out + H, d_f, mask=m)
            if G >= 3:
                tl.store(out + 2 * H, d_o, mask=m)
            if G == 4:
                tl.store(out + 3 * H, d_i, mask=m)
        dc0 += tl.sum(tl.where(t == 0, total * f, 0.0), axis=0)  # dc0 = f_0 dc~_0
        later = _last_row(total, rows)  # dc~ of this chunk's earliest step
    db = dbias_ptr + b * GH + h
    tl.store(db, db_z, mask=mask)
    tl.store(db + H, db_f, mask=mask)
    if G >= 3:
        tl.store(db + 2 * H, db_o, mask=mask)
    if G == 4:
        tl.store(db + 3 * H, db_i, mask=mask)
    tl.store(dc0_ptr + idx, dc0, mask=mask)


@triton.jit
def _fm_fwd_kernel(f_ptr, z_ptr, c0_ptr, c_ptr, T, BH, HAS_C0: tl.constexpr,
                   CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < BH
    cd = c_ptr.dtype.element_ty
    rows = tl.arange(0, CHUNK)
    off = rows[:, None] * BH + idx[None, :]
    if HAS_C0:
        cell = tl.load(c0_ptr + idx, mask=mask, other=0.0).to(cd)
    else:
        cell = tl.zeros([BLOCK], dtype=cd)
    for t0 in range(0, T, CHUNK):
        m = ((t0 + rows) < T)[:, None] & mask[None, :]
        at = tl.cast(t0, tl.int64) * BH + off
        f = tl.load(f_ptr + at, mask=m, other=0.0).to(cd)
        z = tl.load(z_ptr + at, mask=m, other=0.0).to(cd)
        steps_a, steps_b = tl.associative_scan((f, z - f * z), 0, _compose)
        cells = steps_a * cell[None, :] + steps_b
        tl.store(c_ptr + at, cells, mask=m)
        cell = _last_row(cells, rows)


@triton.jit
def _fm_bwd_kernel(f_ptr, z_ptr, c0_ptr, c_ptr, dc_ptr, df_ptr, dz_ptr, dc0_ptr, T, BH,
                   HAS_C0: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < BH
    cd = c_ptr.dtype.element_ty
    rows = tl.arange(0, CHUNK)
    off = idx[None, :] - rows[:, None] * BH
    if HAS_C0:
        c0 = tl.load(c0_ptr + idx, mask=mask, other=0.0).to(cd)
    else:
        c0 = tl.zeros([BLOCK], dtype=cd)
    later = tl.zeros([BLOCK], dtype=cd)
    dc0 = tl.zeros([BLOCK], dtype=cd)
    for back in range(0, T, CHUNK):
        t = (T - 1 - back - rows)[:, None]  # decreasing
        m = (t >= 0) & mask[None, :]
        at = tl.cast(T - 1 - back, tl.int64) * BH + off
        f = tl.load(f_ptr + at, mask=m, other=0.0).to(cd)
        z = tl.load(z_ptr + at, mask=m, other=0.0).to(cd)
        f_next = tl.load(f_ptr + at + BH, mask=m & (t + 1 < T), other=0.0).to(cd)
        c_prev = tl.load(c_ptr + at - BH, mask=m & (t > 0), other=0.0)
        c_prev = tl.where(t == 0, c0[None, :], c_prev)
        direct = tl.load(dc_ptr + at, mask=m, other=0.0)
        steps_a, steps_b = tl.associative_scan((f_next, direct), 0, _compose)
        total = steps_a * later[None, :] + steps_b
        tl.store(df_ptr + at, total * (c_prev - z), mask=m)
        tl.store(dz_ptr + at, total * (1 - f), mask=m)
        dc0 += tl.sum(tl.where(t == 0, total * f, 0.0), axis=0)
        later = _last_row(total, rows)
    tl.store(dc0_ptr + idx, dc0, mask=mask)


LAUNCH = {"num_warps": 1}  # a program is one warp: BLOCK channels, one per lane


def _run(kernel, channels: int, row: int, compute: torch.dtype, *args, **constexprs) -> None:
    """kernel over `channels` (b, h) pairs, with the chunk for the `compute` dtype and the gates.
    `row`: the elements of the widest tensor's one time step; the kernels index up to a chunk
    and a window of them in int32."""
    steps = chunk(compute, constexprs.get("G", 2))
    reach = steps + constexprs.get("K", 1)  # time steps one chunk's int32 offsets span
    if reach * row >= 2**31:
        raise ValueError(f"qrnn triton backend: one time step of {row} elements is too large "
                         f"(at most {(2**31 - 1) // reach})")
    kernel[(triton.cdiv(channels, BLOCK),)](*args, **constexprs, CHUNK=steps, BLOCK=BLOCK,
                                            **LAUNCH)


def pool_forward(y: Tensor, bias: Tensor | None, c0: Tensor | None, pooling: str,
                 window: int, save: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    cd = compute_dtype(y.dtype)
    y = y.contiguous()  # float16/bfloat16 are read as they are and computed in float32
    rows, B, width = y.shape
    G, K = GATES[pooling], window
    T, H = rows - (K - 1), width // (K * G)
    act = torch.empty(T, B, G * H, dtype=cd, device=y.device) if save else y.new_empty(0, dtype=cd)
    c = torch.empty(T, B, H, dtype=cd, device=y.device)
    h = torch.empty(T, B, H, dtype=cd, device=y.device) if G >= 3 else c.new_empty(0)
    _run(_pool_fwd_kernel, B * H, B * width, cd,
         y, y if bias is None else bias.contiguous(),  # y: an unused placeholder pointer
         y if c0 is None else c0.contiguous(), act if save else c, c if G < 3 else h, c,
         T, B, H, G=G, K=K, HAS_BIAS=bias is not None, HAS_C0=c0 is not None, SAVE=save)
    return h, c, act


def pool_backward(act: Tensor, c: Tensor, c0: Tensor | None, dh: Tensor | None,
                  dc: Tensor | None, pooling: str, window: int,
                  has_bias: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    T, B, gh = act.shape
    G, K = GATES[pooling], window
    H = gh // G
    cd = act.dtype
    act, c = act.contiguous(), c.contiguous()  # c, dh, dc, c0 are read in their own dtypes
    dy = torch.empty(K - 1 + T, B, K * gh, dtype=cd, device=act.device)
    dy[:K - 1].zero_()  # rows that some tap does not reach; the kernel overwrites the rest
    dy[T:].zero_()
    dbias_part = torch.empty(B, gh, dtype=cd, device=act.device)
    dc0 = torch.empty(B, H, dtype=cd, device=act.device)
    _run(_pool_bwd_kernel, B * H, B * K * gh, cd,
         act, c, act if c0 is None else c0.contiguous(),
         act if dh is None else dh.contiguous(), act if dc is None else dc.contiguous(),
         dy, dbias_part, dc0, T, B, H, G=G, K=K, HAS_C0=c0 is not None,
         HAS_DH=dh is not None, HAS_DC=dc is not None)
    return dy, dbias_part.sum(0) if has_bias else None, None if c0 is None else dc0


def forget_mult_forward(f: Tensor, z: Tensor, c0: Tensor | None) -> Tensor:
    T, B, H = f.shape
    cd = compute_dtype(f.dtype)
    f, z = f.contiguous(), z.contiguous()
    c = torch.empty(T, B, H, dtype=cd, device=f.device)
    _run(_fm_fwd_kernel, B * H, B * H, cd, f, z, f if c0 is None else c0.contiguous(), c,
         T, B * H, HAS_C0=c0 is not None)
    return c


def forget_mult_backward(f: Tensor, z: Tensor, c0: Tensor | None, c: Tensor,
                         dc: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    T, B, H = f.shape
    cd = c.dtype
    f, z, c, dc = f.contiguous(), z.contiguous(), c.contiguous(), dc.to(cd).contiguous()
    df, dz = torch.empty(T, B, H, dtype=cd, device=f.device), torch.empty_like(c)
    dc0 = torch.empty(B, H, dtype=cd, device=f.device)
    _run(_fm_bwd_kernel, B * H, B * H, cd, f, z, f if c0 is None else c0.contiguous(), c, dc,
         df, dz, dc0, T, B * H, HAS_C0=c0 is not None)
    return df, dz, None if c0 is None else dc0
