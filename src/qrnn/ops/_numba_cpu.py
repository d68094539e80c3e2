"""The "numba" backend: the QRNN recurrence on CPU, parallel over channels, time loop inside.

Same functions and shape contracts as `_torch_loop.py` (read its docstring first). Imported
lazily, on the first call that runs this backend, so `import qrnn` never needs numba.

How it is fast: the work splits into jobs of (a run of sequences, a block of hidden units); jobs
run in parallel (`prange`, one thread per torch thread), and each job walks time in order keeping
its cells in a local (sequences x units) buffer, and within each step its sequences, so every
step reads and writes long contiguous runs of rows that the compiler vectorises. (With one
sequence per job, each walking all of time before the next, a step read one short row per
sequence at a stride of B rows: at the paper's shape `qrnn_pool`'s forward + backward took
1.1-1.8x as long over six paired runs; README, "Speed", table 1.)
Every kernel is compiled twice, parallel and serial (`_kernel`): below `SERIAL_WORK` unit-steps
(batch-1 inference, short batches) waking the thread pool costs more than it saves (measured: a
230-step review's forward pooling 0.43 ms parallel, 0.15 ms serial), so the serial one runs.
numba has no vectorised exp/tanh here (no SVML), and its scalar calls cost more than the whole
recurrence, so in float32 the forward is one kernel
(`_pool_fwd_fused_kernel`) whose activations are a rational function that LLVM vectorises
(`_tanh32`: Lambert's continued fraction for tanh, cut at depth 12, max abs error 3.1e-7 in
float32, torch's own 3e-8; sigmoid(x) = (1 + tanh(x/2)) / 2). At the paper's shape it took
6.7-8.3 ms alone against 13.9-17.2 for the three passes it replaced, 12.1-14.5 against
13.6-15.1 timed interleaved with them (torch's threads then compete with numba's), and one layer
forward + backward 218 against 227 ms. In float64 the activations stay one torch
sigmoid pass between two kernels (see `pool_forward`), exact to the last bits. The backward
needs no transcendental function at all (it reads the saved activations), so it is one kernel
that writes the taps' gradients straight into dy. Tensors reach numba zero-copy via `.numpy()`.
Compiled once per dtype and cached on disk (`cache=True`); no compiler is needed at run time.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import types

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from qrnn.ops._torch_loop import GATES, compute_dtype

_JIT = dict(parallel=True, cache=True, fastmath=False, nogil=True)

# T * B * H below which a kernel runs serially in the calling thread (see the module docstring).
SERIAL_WORK = 1 << 20


def _kernel(fn=None, **options):
    """fn compiled twice: (serial, parallel), indexed by `parallel: bool`; `options` add to or
    replace `_JIT`'s. Outside a parallel compilation `prange` is `range`. The serial copy gets
    its own name, because numba's disk cache keys a function by name and signature, not by its
    compile options."""
    if fn is None:
        return lambda f: _kernel(f, **options)
    jit = {**_JIT, **options}
    serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                fn.__defaults__, fn.__closure__)
    serial.__qualname__ = fn.__qualname__ + "_serial"
    return njit(**{**jit, "parallel": False})(serial), njit(**jit)(fn)


def _launching(parallel: bool):
    """The lock a launch holds: only parallel kernels use numba's thread pool (see _LAUNCH)."""
    return _LAUNCH if parallel else contextlib.nullcontext()


def _plan(T: int, B: int, H: int) -> tuple[bool, int, int]:
    """(run in parallel?, sequences per job, hidden units per job) for T steps of B sequences
    of H units. Serially (small work, or one thread): one job. In parallel, where there are at
    least 2 sequences per thread, at most one job per thread, each a run of ceil(B / threads)
    whole sequences; else one sequence per job and H split into blocks (`_block`)."""
    threads = _threads() if T * B * H >= SERIAL_WORK else 1
    if threads == 1:
        return False, max(B, 1), H
    if B >= 2 * threads:
        return True, -(-B // threads), H
    return True, 1, _block(B, H, threads)

# numba's "omp" threading layer runs its own OpenMP pool beside torch's; on a small machine the
# two pools' spin-waiting threads compete for the cores and a kernel launch was seen to wait
# milliseconds. The "workqueue" layer's threads sleep between launches. It is chosen only if the
# user has not picked a layer; it is not safe for launches from several Python threads at once,
# hence the lock (the kernels already use every thread they are given).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_LAUNCH = threading.Lock()


def _threads() -> int:
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def _block(B: int, H: int, threads: int) -> int:
    """Hidden units per job when there are too few sequences to share out (B < 2 threads): H
    split into the fewest pieces that give every thread the same number of jobs (B * pieces
    jobs, a multiple of threads) where H splits into that many equal blocks (any H >= 16 does
    for up to 4 threads; 33 units in 8 pieces do not), blocks of a multiple of 16 units where
    that keeps the count. Measured at batch 1, 2 threads, H = 256 and 1,024, T = 2,000-8,000:
    2 jobs took 0.5-0.9x the time of the 8 smaller ones an earlier rule made."""
    pieces = threads // math.gcd(B, threads)
    blk = -(-H // pieces)
    aligned = -(-blk // 16) * 16
    return aligned if -(-H // aligned) == pieces else max(blk, 1)


_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}  # the compute dtypes


def _np(t: Tensor, dtype: torch.dtype) -> np.ndarray:
    """t as a C-contiguous numpy array of `dtype`: the same memory where it already is one
    (each conversion skipped when not needed, as a dozen calls per layer add up at batch 1)."""
    if t.dtype != dtype:
        t = t.to(dtype)
    if t.requires_grad:
        t = t.detach()
    return (t if t.is_contiguous() else t.contiguous()).numpy()


@njit(inline="always", cache=True)
def _jobs(B, H, seqs, blk):  # pragma: no cover (compiled)
    """(number of jobs, blocks of units per run of sequences) for runs of `seqs` sequences and
    blocks of `blk` units."""
    nblk = (H + blk - 1) // blk
    return ((B + seqs - 1) // seqs) * nblk, nblk


@njit(inline="always", cache=True)
def _job(job, nblk, seqs, blk, B, H):  # pragma: no cover (compiled)
    """Job `job`: sequences [b0, b1) (runs of `seqs`), hidden units [h0, h1) (blocks of `blk`).
    A job walks time outermost and its sequences within each step: in time-major memory the
    rows of one step's sequences are next to each other, so each step reads a few long
    contiguous runs instead of one short row per sequence at a stride of B rows."""
    b0 = (job // nblk) * seqs
    h0 = (job % nblk) * blk
    return b0, min(B, b0 + seqs), h0, min(H, h0 + blk)


@_kernel
def _taps_kernel(y, bias, K, H, act):  # pragma: no cover (compiled)
    """act[t] = bias + sum_k y[K-1+t-k, :, tap k], with the z block doubled (see pool_forward)."""
    T, B, GH = act.shape
    for tb in prange(T * B):
        t = tb // B
        b = tb % B
        out = act[t, b]
        for j in range(GH):
            out[j] = bias[j]
        for k in range(K):
            src = y[K - 1 + t - k, b, k * GH:(k + 1) * GH]
            for j in range(GH):
                out[j] += src[j]
        for j in range(H):
            out[j] *= 2


@njit(inline="always", cache=True)
def _pool_step(act, ta, t, b, h0, h1, G, cell, h_out, c_out):  # pragma: no cover (compiled)
    """Step t of the pooling for sequence b, units [h0, h1), from the activations act[ta, b]
    (z, f, o, i blocks of H; ta = t, or 0 in a one-step scratch): cell (the running c) ->
    c_out[t, b] and, with o, h_out[t, b]."""
    H = c_out.shape[2]
    n = h1 - h0
    z = act[ta, b, h0:h1]
    f = act[ta, b, H + h0:H + h1]
    c_row = c_out[t, b, h0:h1]
    if G == 4:
        i = act[ta, b, 3 * H + h0:3 * H + h1]
        for j in range(n):
            cell[j] = f[j] * cell[j] + i[j] * z[j]
            c_row[j] = cell[j]
    else:
        for j in range(n):
            cell[j] = z[j] + f[j] * (cell[j] - z[j])
            c_row[j] = cell[j]
    if G >= 3:
        o = act[ta, b, 2 * H + h0:2 * H + h1]
        h_row = h_out[t, b, h0:h1]
        for j in range(n):
            h_row[j] = o[j] * cell[j]


@_kernel
def _pool_fwd_kernel(act, c0, G, seqs, blk, h_out, c_out):  # pragma: no cover (compiled)
    T, B, _ = act.shape
    H = c0.shape[1]
    njobs, nblk = _jobs(B, H, seqs, blk)
    for job in prange(njobs):
        b0, b1, h0, h1 = _job(job, nblk, seqs, blk, B, H)
        n = h1 - h0
        cells = c0[b0:b1, h0:h1].copy()  # the running c of these sequences and units
        for t in range(T):
            for b in range(b0, b1):
                z = act[t, b, h0:h1]  # holds sigmoid(2 pre_z) on entry; tanh(pre_z) on exit
                for j in range(n):
                    z[j] = 2 * z[j] - 1
                _pool_step(act, t, t, b, h0, h1, G, cells[b - b0], h_out, c_out)


def _lambert_tanh(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(p, q), coefficients in u = x^2 (lowest first, q[0] = 1), with tanh(x) ~= x p(u) / q(u):
    Lambert's continued fraction tanh x = x / (1 + u / (3 + u / (5 + ... u / (2 depth + 1))))
    folded into one fraction. All coefficients are positive, so q has no root on the real line."""
    num, den = np.array([2.0 * depth + 1.0]), np.array([1.0])  # the fraction's innermost tail
    for k in range(depth - 1, -1, -1):  # tail_k = (2k + 1) + u / tail_{k+1}
        num, den = np.polynomial.polynomial.polyadd((2 * k + 1) * num, np.r_[0.0, den]), num
    return den / num[0], num / num[0]


# float32 constants, so that the activations compile to float32 vector code (a float64 literal
# would promote every product to float64). Depth 12: max abs error 3.1e-7 on [-12, 12] measured in
# float32 (tests/test_ops.py); beyond 9, tanh is 1 to within 3e-8, so x is clamped there.
_P, _Q = _lambert_tanh(12)
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (np.float32(v) for v in _P)
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6 = (np.float32(v) for v in _Q)
_CLAMP, _ONE, _HALF = np.float32(9.0), np.float32(1.0), np.float32(0.5)


@njit(inline="always", cache=True, fastmath={"contract"}, error_model="numpy")
def _tanh32(x):  # pragma: no cover (compiled)
    """tanh of a float32 (see `_lambert_tanh`). Clamps written as selects that keep NaN."""
    x = _CLAMP if x > _CLAMP else x
    x = -_CLAMP if x < -_CLAMP else x
    u = x * x
    p = _P0 + u * (_P1 + u * (_P2 + u * (_P3 + u * (_P4 + u * (_P5 + u * _P6)))))
    q = _Q0 + u * (_Q1 + u * (_Q2 + u * (_Q3 + u * (_Q4 + u * (_Q5 + u * _Q6)))))
    r = x * p / q
    r = _ONE if r > _ONE else r
    return -_ONE if r < -_ONE else r


@_kernel(fastmath={"contract"}, error_model="numpy")
def _pool_fwd_fused_kernel(y, bias, c0, K, G, seqs, blk, act, h_out, c_out):  # pragma: no cover
    """float32 forward in one pass: per step and sequence, the tap sum + bias of each gate into
    `pre`, its activation into act (tanh for z, sigmoid for the others), then the recurrence on
    the row. act is (T, B, GH), or (1, B, GH) when no backward needs it: a scratch row that
    each step overwrites (each job only its own sequences and units)."""
    T, B, _ = c_out.shape
    GH = act.shape[2]
    H = c0.shape[1]
    keep = act.shape[0] == T
    njobs, nblk = _jobs(B, H, seqs, blk)
    for job in prange(njobs):
        b0, b1, h0, h1 = _job(job, nblk, seqs, blk, B, H)
        n = h1 - h0
        cells = c0[b0:b1, h0:h1].copy()  # the running c of these sequences and units
        pre = np.empty(n, act.dtype)
        for t in range(T):
            ta = t if keep else 0
            for b in range(b0, b1):
                for g in range(G):
                    lo = g * H + h0
                    bs = bias[lo:lo + n]
                    src = y[K - 1 + t, b, lo:lo + n]
                    for j in range(n):
                        pre[j] = bs[j] + src[j]
                    for k in range(1, K):
                        src = y[K - 1 + t - k, b, k * GH + lo:k * GH + lo + n]
                        for j in range(n):
                            pre[j] += src[j]
                    out = act[ta, b, lo:lo + n]
                    if g == 0:
                        for j in range(n):
                            out[j] = _tanh32(pre[j])
                    else:
                        for j in range(n):
                            out[j] = _HALF + _HALF * _tanh32(_HALF * pre[j])
                _pool_step(act, ta, t, b, h0, h1, G, cells[b - b0], h_out, c_out)


@_kernel
def _pool_bwd_kernel(act, c, c0, dh, dc, has_dh, has_dc, G, K, seqs, blk,
                     dy, dbias_part, dc0_out):  # pragma: no cover (compiled)
    # Each loop over units reads and writes 1-D row views indexed by the loop counter alone:
    # an index like h0 + j keeps numba's negative-index wraparound check in the loop, which
    # stops LLVM from vectorising it (measured 3x slower). The gradient of step t goes to tap 0
    # of dy's row K-1+t; the other taps copy it after the time loop.
    T, B, GH = act.shape
    H = c0.shape[1]
    njobs, nblk = _jobs(B, H, seqs, blk)
    for job in prange(njobs):
        b0, b1, h0, h1 = _job(job, nblk, seqs, blk, B, H)
        n = h1 - h0
        runs = np.zeros((b1 - b0, n), act.dtype)  # gradient reaching c_t from c_{t+1}
        total = np.empty(n, act.dtype)    # dc~_t, everything reaching c_t
        for t in range(T - 1, -1, -1):
            r = K - 1 + t
            for b in range(b0, b1):
                running = runs[b - b0]
                db_z = dbias_part[b, h0:h1]
                db_f = dbias_part[b, H + h0:H + h1]
                a_z = act[t, b, h0:h1]
                a_f = act[t, b, H + h0:H + h1]
                g_z = dy[r, b, h0:h1]
                g_f = dy[r, b, H + h0:H + h1]
                c_prev = c[t - 1, b, h0:h1] if t > 0 else c0[b, h0:h1]
                for j in range(n):
                    total[j] = running[j]
                if has_dc:
                    g_c = dc[t, b, h0:h1]
                    for j in range(n):
                        total[j] += g_c[j]
                if G >= 3:
                    g_o = dy[r, b, 2 * H + h0:2 * H + h1]
                    if has_dh:
                        a_o = act[t, b, 2 * H + h0:2 * H + h1]
                        g_h = dh[t, b, h0:h1]
                        c_now = c[t, b, h0:h1]
                        db_o = dbias_part[b, 2 * H + h0:2 * H + h1]
                        for j in range(n):
                            o = a_o[j]
                            total[j] += o * g_h[j]
                            d_o = g_h[j] * c_now[j] * o * (1 - o)
                            g_o[j] = d_o
                            db_o[j] += d_o
                    else:
                        for j in range(n):
                            g_o[j] = 0
                if G == 4:
                    a_i = act[t, b, 3 * H + h0:3 * H + h1]
                    g_i = dy[r, b, 3 * H + h0:3 * H + h1]
                    db_i = dbias_part[b, 3 * H + h0:3 * H + h1]
                    for j in range(n):
                        d = total[j]
                        z = a_z[j]
                        f = a_f[j]
                        i = a_i[j]
                        d_z = d * i * (1 - z * z)
                        d_f = d * c_prev[j] * f * (1 - f)
                        d_i = d * z * i * (1 - i)
                        g_z[j] = d_z
                        g_f[j] = d_f
                        g_i[j] = d_i
                        db_z[j] += d_z
                        db_f[j] += d_f
                        db_i[j] += d_i
                        running[j] = d * f
                else:
                    for j in range(n):
                        d = total[j]
                        z = a_z[j]
                        f = a_f[j]
                        d_z = d * (1 - f) * (1 - z * z)
                        d_f = d * (c_prev[j] - z) * f * (1 - f)
                        g_z[j] = d_z
                        g_f[j] = d_f
                        db_z[j] += d_z
                        db_f[j] += d_f
                        running[j] = d * f
        if K > 1:
            # tap k applied to input row r carried x_{r-(K-1)} to step t = r - (K-1) + k, whose
            # gradient sits in tap 0 of row r + k; rows reaching no step get zeros
            for k in range(1, K):
                for r in range(T + K - 1):
                    for b in range(b0, b1):
                        for g_ in range(G):
                            out = dy[r, b, k * GH + g_ * H + h0:k * GH + g_ * H + h1]
                            if K - 1 <= r + k <= T + K - 2:
                                src = dy[r + k, b, g_ * H + h0:g_ * H + h1]
                                for j in range(n):
                                    out[j] = src[j]
                            else:
                                for j in range(n):
                                    out[j] = 0
            for r in range(K - 1):  # tap 0 of the context rows reaches no step
                for b in range(b0, b1):
                    for g_ in range(G):
                        out = dy[r, b, g_ * H + h0:g_ * H + h1]
                        for j in range(n):
                            out[j] = 0
        dc0_out[b0:b1, h0:h1] = runs  # once per job: no loop to vectorise


@_kernel
def _fm_fwd_kernel(f, z, c0, seqs, blk, c_out):  # pragma: no cover (compiled)
    T, B, H = f.shape
    njobs, nblk = _jobs(B, H, seqs, blk)
    for job in prange(njobs):
        b0, b1, h0, h1 = _job(job, nblk, seqs, blk, B, H)
        n = h1 - h0
        cells = c0[b0:b1, h0:h1].copy()  # the running c of these sequences and units
        for t in range(T):
            for b in range(b0, b1):
                cell = cells[b - b0]
                fr = f[t, b, h0:h1]
                zr = z[t, b, h0:h1]
                c_row = c_out[t, b, h0:h1]
                for j in range(n):
                    cell[j] = zr[j] + fr[j] * (cell[j] - zr[j])
                    c_row[j] = cell[j]


@_kernel
def _fm_bwd_kernel(f, z, c0, c, dc, seqs, blk, df, dz, dc0_out):  # pragma: no cover (compiled)
    T, B, H = f.shape
    njobs, nblk = _jobs(B, H, seqs, blk)
    for job in prange(njobs):
        b0, b1, h0, h1 = _job(job, nblk, seqs, blk, B, H)
        n = h1 - h0
        runs = np.zeros((b1 - b0, n), f.dtype)
        for t in range(T - 1, -1, -1):
            for b in range(b0, b1):
                running = runs[b - b0]
                fr = f[t, b, h0:h1]
                zr = z[t, b, h0:h1]
                g = dc[t, b, h0:h1]
                c_prev = c[t - 1, b, h0:h1] if t > 0 else c0[b, h0:h1]
                df_row = df[t, b, h0:h1]
                dz_row = dz[t, b, h0:h1]
                for j in range(n):
                    d = running[j] + g[j]
                    df_row[j] = d * (c_prev[j] - zr[j])
                    dz_row[j] = d * (1 - fr[j])
                    running[j] = d * fr[j]
        dc0_out[b0:b1, h0:h1] = runs  # once per job: no loop to vectorise


def _c0_np(c0: Tensor | None, B: int, H: int, dtype: torch.dtype) -> np.ndarray:
    """The initial cells as a (B, H) array of the compute dtype (float32 or float64)."""
    return np.zeros((B, H), _NP_DTYPES[dtype]) if c0 is None else _np(c0, dtype)


def pool_forward(y: Tensor, bias: Tensor | None, c0: Tensor | None, pooling: str,
                 window: int, save: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    # float32: one fused kernel (see the module docstring). float64: three passes: tap sum +
    # bias (numba), one sigmoid over every gate (torch's vectorised sigmoid; tanh(x) =
    # 2 sigmoid(2x) - 1, the doubling done by the tap kernel, the rest by the recurrence kernel;
    # torch's tanh costs ~6x its sigmoid here), then the recurrence. tanh this way is within
    # ~2 ulp of 1 absolutely (not relatively for |x| << 1).
    cd = compute_dtype(y.dtype)
    G = GATES[pooling]
    rows, B, width = y.shape
    gh = width // window
    T, H = rows - (window - 1), gh // G
    # float32 without a backward (`save` False): act is one step's scratch, (1, B, gh); at batch
    # 1 not storing every step's activations saved ~10% of the kernel's time, and at any batch
    # the memory of 3 outputs of its size
    fused = cd == torch.float32
    act = torch.empty(T if save or not fused else min(T, 1), B, gh, dtype=cd)
    bias_ = np.zeros(gh, _NP_DTYPES[cd]) if bias is None else _np(bias, cd)
    parallel, seqs, blk = _plan(T, B, H)
    c = torch.empty(T, B, H, dtype=act.dtype)
    h = torch.empty(T, B, H, dtype=act.dtype) if G >= 3 else act.new_empty(0)
    if fused:
        if T and B and H:  # numba jobs need at least one (sequence, unit)
            with _launching(parallel):
                _pool_fwd_fused_kernel[parallel](
                    _np(y, cd), bias_, _c0_np(c0, B, H, cd), window, G, seqs, blk,
                    act.numpy(), h.numpy() if G >= 3 else c.numpy(), c.numpy())
        return h, c, act
    if T and B and H:  # numba jobs need at least one (sequence, unit)
        with _launching(parallel):
            _taps_kernel[parallel](_np(y, cd), bias_, window, H, act.numpy())
    act.sigmoid_()
    if T and B and H:  # numba jobs need at least one (sequence, unit)
        with _launching(parallel):
            _pool_fwd_kernel[parallel](act.numpy(), _c0_np(c0, B, H, act.dtype), G,
                                       seqs, blk, h.numpy() if G >= 3 else c.numpy(), c.numpy())
    return h, c, act


def pool_backward(act: Tensor, c: Tensor, c0: Tensor | None, dh: Tensor | None,
                  dc: Tensor | None, pooling: str, window: int,
                  has_bias: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    T, B, gh = act.shape
    G = GATES[pooling]
    H = gh // G
    cd = act.dtype
    dummy = np.zeros((1, 1, 1), dtype=act.numpy().dtype)
    dy = torch.empty(window - 1 + T, B, window * gh, dtype=cd)
    dbias_part = torch.zeros(B, gh, dtype=cd)
    dc0 = torch.empty(B, H, dtype=cd)
    if T and B and H:  # numba jobs need at least one (sequence, unit)
        parallel, seqs, blk = _plan(T, B, H)
        args = (_np(act, cd), _np(c, cd), _c0_np(c0, B, H, cd),
                dummy if dh is None else _np(dh, cd), dummy if dc is None else _np(dc, cd),
                dh is not None, dc is not None, G, window, seqs, blk,
                dy.numpy(), dbias_part.numpy(), dc0.numpy())
        with _launching(parallel):
            _pool_bwd_kernel[parallel](*args)
    else:
        dc0.zero_()
        dy.zero_()
    return dy, dbias_part.sum(0) if has_bias else None, None if c0 is None else dc0


def forget_mult_forward(f: Tensor, z: Tensor, c0: Tensor | None) -> Tensor:
    T, B, H = f.shape
    cd = compute_dtype(f.dtype)
    c = torch.empty(T, B, H, dtype=cd)
    if T and B and H:  # numba jobs need at least one (sequence, unit)
        parallel, seqs, blk = _plan(T, B, H)
        with _launching(parallel):
            _fm_fwd_kernel[parallel](_np(f, cd), _np(z, cd),
                                     _c0_np(c0, B, H, cd), seqs, blk, c.numpy())
    return c


def forget_mult_backward(f: Tensor, z: Tensor, c0: Tensor | None, c: Tensor,
                         dc: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    T, B, H = f.shape
    cd = c.dtype
    df, dz = torch.empty(T, B, H, dtype=cd), torch.empty(T, B, H, dtype=cd)
    dc0 = torch.zeros(B, H, dtype=cd)
    if T and B and H:  # numba jobs need at least one (sequence, unit)
        parallel, seqs, blk = _plan(T, B, H)
        with _launching(parallel):
            _fm_bwd_kernel[parallel](_np(f, cd), _np(z, cd),
                                     _c0_np(c0, B, H, cd), _np(c, cd), _np(dc, cd),
                                     seqs, blk, df.numpy(), dz.numpy(), dc0.numpy())
    return df, dz, None if c0 is None else dc0
