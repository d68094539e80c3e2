"""Every backend of the QRNN ops against the plain-PyTorch references (the specification).

What runs where (recorded for issue 3; no session so far had a GPU):
  * CPU, always: backends "python" (torch time loop, hand-written backward) and "numba" (CPU
    kernels) against `*_ref`: outputs and every gradient (gates/y, bias, c0, f, z) under random
    upstream gradients on both outputs; lengths 1, 2, odd, 2048; batch 1 and odd; odd H;
    window 1/2/3; non-contiguous inputs; with and without c0; float32/float64 (tight) and
    float16/bfloat16 (tolerances in `TOL`); float64 gradcheck; torch.library.opcheck;
    torch.compile(backend="aot_eager") over a small model; backend dispatch rules.
  * CPU, when triton is installed: the "triton" backend under the Triton interpreter
    (`TRITON_INTERPRET=1`, set by this file before triton loads) on the same grid up to 2**16
    elements (lengths 2049 and 2050 included), at chunk sizes 1, 2, 4 and 32 as well as the
    default; and every Triton kernel compiled for real for sm_80 and sm_90 (no GPU needed),
    with no register spills at window 2 on sm_90 (`tests/triton_compile_check.py`).
    Checked with triton 3.3.1, 3.6.0 (the lent GPU machine's) and 3.9.0 (what CI installs).
  * CUDA only (skipped without a GPU; `benchmarks/gpu_checks.sh` runs them): "triton" and
    "python" on CUDA tensors against the float64 reference on CPU, and the whole layer.
Run: OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_ops.py
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import importlib.util
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
import torch

from qrnn.ops import (GATES, BackendUnavailableError, causal_conv, causal_conv_ref,
                      forget_mult, forget_mult_ref,
                      qrnn_conv_pool, qrnn_conv_pool_ref, qrnn_pool, qrnn_pool_ref)
from qrnn.ops import backends, library

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()
# "numba" runs the kernels' serial compilation on every shape, "numba-parallel" their parallel
# one (in use they switch at `_numba_cpu.SERIAL_WORK`); see the `backend` fixture.
CPU_BACKENDS = ["python", "numba", "numba-parallel"] + (["triton"] if HAS_TRITON else [])
# |fast - ref| <= atol + rtol * (|ref| + max|ref|), ref computed in float64 from the same inputs.
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 2e-5),
       torch.bfloat16: (2e-2, 2e-2), torch.float16: (4e-3, 4e-3)}

# (T, B, H): lengths 1, 2, odd; batch 1 and odd; odd widths
SHAPES = [(1, 1, 1), (2, 3, 5), (7, 1, 33), (17, 5, 7), (33, 2, 64)]


@pytest.fixture
def backend(request, monkeypatch):
    """The backend name a test passes to the ops; parametrized indirectly by CPU_BACKENDS."""
    name = request.param
    if name.startswith("numba"):
        from qrnn.ops import _numba_cpu

        monkeypatch.setattr(_numba_cpu, "SERIAL_WORK", 0 if name == "numba-parallel" else 2**62)
        return "numba"
    return name


def _triton_ok(backend: str, T: int, B: int, H: int) -> bool:
    return backend != "triton" or T * B * H <= 2**16  # the interpreter is slow


def _assert_close(name, got, want, dtype):
    atol, rtol = TOL[dtype]
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.double().cpu() - want).abs()
    # relative to each element and to the tensor's scale: sums over time and batch (dbias,
    # long-sequence gradients) carry rounding error proportional to their terms, not their result
    bound = atol + rtol * (want.abs() + want.abs().max())
    assert bool((err <= bound).all()), f"{name}: max error {err.max().item():.3g}"


def _grads(fn, inputs, upstream):
    """Outputs of fn(*inputs) and the gradients of sum(out * upstream) w.r.t. inputs."""
    leaves = [None if x is None else x.detach().clone().requires_grad_(True) for x in inputs]
    outs = fn(*leaves)
    loss = sum((o.double() * g.to(o.device)).sum() for o, g in zip(outs, upstream)
               if g is not None)
    wrt = [x for x in leaves if x is not None]
    return outs, torch.autograd.grad(loss, wrt)


def _noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as x as a strided view (every other element of a wider buffer, stored
    batch-major), so no dimension of it is laid out as a contiguous tensor's would be."""
    buf = x.new_zeros(x.shape[1], x.shape[0], x.shape[2], 2)
    buf[..., 0] = x.transpose(0, 1)
    out = buf[..., 0].transpose(0, 1)
    assert torch.equal(out, x) and (x.shape[-1] == 1 or not out.is_contiguous())
    return out


def _check_pool(backend, pooling, T, B, H, window, dtype, with_c0, with_bias, strided,
                upstream_on=("h", "c"), device="cpu"):
    G = GATES[pooling]
    # crc32, not hash(): str hashes change from process to process, and a failure must replay
    gen = torch.Generator().manual_seed(zlib.crc32(repr((pooling, T, B, H, window)).encode()))
    y = torch.randn(window - 1 + T, B, window * G * H, generator=gen, dtype=torch.float64)
    bias = torch.randn(G * H, generator=gen, dtype=torch.float64) if with_bias else None
    c0 = torch.randn(B, H, generator=gen, dtype=torch.float64) if with_c0 else None
    gh = torch.randn(T, B, H, generator=gen, dtype=torch.float64) if "h" in upstream_on else None
    gc = torch.randn(T, B, H, generator=gen, dtype=torch.float64) if "c" in upstream_on else None
    # reference in float64 on CPU, on the values the fast path actually sees (rounded to dtype)
    inputs = [None if t is None else t.to(device, dtype) for t in (y, bias, c0)]
    if strided:
        inputs[0] = _noncontiguous(inputs[0])
    ref_inputs = [None if t is None else t.double().cpu() for t in inputs]
    if window == 1 and bias is None:
        def ref(y_, b_, c0_):
            return qrnn_pool_ref(y_, c0_, pooling)

        def fast(y_, b_, c0_):
            return qrnn_pool(y_, c0_, pooling, backend=backend)
    else:
        def ref(y_, b_, c0_):
            return qrnn_conv_pool_ref(y_, b_, c0_, pooling, window)

        def fast(y_, b_, c0_):
            return qrnn_conv_pool(y_, b_, c0_, pooling, window, backend=backend)

    want, want_grads = _grads(ref, ref_inputs, (gh, gc))
    got, got_grads = _grads(fast, inputs, (gh, gc))
    for name, g, w in zip(("h", "c"), got, want):
        _assert_close(name, g, w, dtype)
    names = [n for n, t in zip(("dy", "dbias", "dc0"), inputs) if t is not None]
    assert len(got_grads) == len(want_grads) == len(names)
    for name, g, w in zip(names, got_grads, want_grads):
        _assert_close(name, g, w, dtype)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("pooling", ["f", "fo", "ifo"])
@pytest.mark.parametrize("T,B,H", SHAPES)
@pytest.mark.parametrize("with_c0", [False, True])
def test_qrnn_pool_matches_reference(backend, pooling, T, B, H, with_c0):
    if not _triton_ok(backend, T, B, H):
        pytest.skip("shape too large for the Triton interpreter")
    for dtype in (torch.float64, torch.float32):
        _check_pool(backend, pooling, T, B, H, 1, dtype, with_c0, False, strided=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("pooling", ["f", "fo", "ifo"])
@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("T,B,H", [(1, 2, 3), (2, 1, 4), (9, 3, 17)])
def test_qrnn_conv_pool_matches_reference(backend, pooling, window, T, B, H):
    _check_pool(backend, pooling, T, B, H, window, torch.float64, True, True, strided=False)
    _check_pool(backend, pooling, T, B, H, window, torch.float32, False, True, strided=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("pooling", ["f", "fo", "ifo"])
def test_strided_inputs_and_one_sided_upstream(backend, pooling):
    for upstream in (("h",), ("c",)):
        _check_pool(backend, pooling, 11, 3, 9, 2, torch.float32, True, True, strided=True,
                    upstream_on=upstream)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("pooling", ["fo", "ifo"])
def test_long_sequence(backend, pooling):
    _check_pool(backend, pooling, 2049, 2, 3, 2, torch.float32, True, True, strided=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(backend, dtype):
    _check_pool(backend, "fo", 13, 3, 10, 2, dtype, True, True, strided=True)
    _check_forget_mult(backend, 13, 3, 10, dtype, True, strided=False)


def _check_forget_mult(backend, T, B, H, dtype, with_c0, strided, device="cpu"):
    gen = torch.Generator().manual_seed(T * 1000 + B * 10 + H)
    f = torch.rand(T, B, H, generator=gen, dtype=torch.float64)
    z = torch.randn(T, B, H, generator=gen, dtype=torch.float64)
    c0 = torch.randn(B, H, generator=gen, dtype=torch.float64) if with_c0 else None
    g_c = torch.randn(T, B, H, generator=gen, dtype=torch.float64)
    g_last = torch.randn(B, H, generator=gen, dtype=torch.float64)
    inputs = [None if t is None else t.to(device, dtype) for t in (f, z, c0)]
    if strided:
        inputs[0], inputs[1] = _noncontiguous(inputs[0]), _noncontiguous(inputs[1])
    want, want_grads = _grads(forget_mult_ref, [None if t is None else t.double().cpu()
                                                for t in inputs], (g_c, g_last))
    got, got_grads = _grads(lambda *a: forget_mult(*a, backend=backend), inputs, (g_c, g_last))
    for name, g, w in zip(("c", "c_last"), got, want):
        _assert_close(name, g, w, dtype)
    for name, g, w in zip(("df", "dz", "dc0"), got_grads, want_grads):
        _assert_close(name, g, w, dtype)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("T,B,H", SHAPES + [(2050, 1, 3)])
@pytest.mark.parametrize("with_c0", [False, True])
def test_forget_mult_matches_reference(backend, T, B, H, with_c0):
    if not _triton_ok(backend, T, B, H):
        pytest.skip("shape too large for the Triton interpreter")
    for dtype in (torch.float64, torch.float32):
        _check_forget_mult(backend, T, B, H, dtype, with_c0, strided=dtype == torch.float32)


@pytest.mark.parametrize("parallel", [False, True])
def test_numba_float32_activations_accuracy_and_special_values(parallel, monkeypatch):
    """The fused float32 forward's tanh and sigmoid (a rational function, `_tanh32`) against
    float64 over a dense grid, in both compilations; inf saturates, NaN stays NaN (its clamps
    are selects that keep NaN) so that a diverging model still shows NaN, as torch's would."""
    from qrnn.ops import _numba_cpu

    monkeypatch.setattr(_numba_cpu, "SERIAL_WORK", 0 if parallel else 2**62)
    pos = torch.linspace(0, 12, 120_001)[1:]
    grid = torch.cat([-pos.flip(0), torch.zeros(1), pos, torch.tensor(
        [-0.0, 1e-30, -1e-30, 1e-6, 9.0, -9.0, 30.0, -30.0, 88.0, -88.0])])
    special = torch.tensor([float("inf"), float("-inf"), float("nan")])
    x = torch.cat([grid, special])
    H = x.numel()
    gates = torch.stack([x, x, x]).reshape(1, 1, 3 * H)  # z, f, o all = x
    h, c, act = _numba_cpu.pool_forward(gates, None, None, "fo", 1)
    tanh, sig = act[0, 0, :H].double(), act[0, 0, H:2 * H].double()
    n = grid.numel()
    want_tanh, want_sig = torch.tanh(grid.double()), torch.sigmoid(grid.double())
    assert (tanh[:n] - want_tanh).abs().max() < 4e-7
    assert (sig[:n] - want_sig).abs().max() < 2.5e-7
    assert tanh[:n].abs().max() <= 1 and sig[:n].min() >= 0 and sig[:n].max() <= 1
    assert tanh[n:n + 2].tolist() == [1.0, -1.0] and sig[n:n + 2].tolist() == [1.0, 0.0]
    assert tanh[-1].isnan() and sig[-1].isnan() and h[0, 0, -1].isnan() and c[0, 0, -1].isnan()
    # tanh is odd, and so is the approximation, exactly: no bias between signs
    m = pos.numel()
    assert torch.equal(act[0, 0, :m].flip(0), -act[0, 0, m + 1:2 * m + 1])


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_numba_jobs_cover_every_sequence_and_unit_once(threads, monkeypatch):
    """The parallel kernels split (sequences, units) into jobs (`_plan`, `_job`): runs of whole
    sequences where there are at least 2 per thread, else blocks of units. Every (b, unit) is in
    exactly one job; where units are split (H >= 16), every thread gets the same number of jobs;
    and the kernels give the reference's values under each split, also for thread counts this
    machine may not have (the split is computed for them, the kernel runs on the threads there
    are)."""
    from qrnn.ops import _numba_cpu

    monkeypatch.setattr(_numba_cpu, "_threads", lambda: threads)
    monkeypatch.setattr(_numba_cpu, "SERIAL_WORK", 0)
    for B in range(1, 11):
        for H in (1, 5, 16, 33, 40, 256):
            parallel, seqs, blk = _numba_cpu._plan(9, B, H)
            assert parallel == (threads > 1)
            njobs, nblk = _numba_cpu._jobs(B, H, seqs, blk)
            seen = np.zeros((B, H), dtype=np.int64)
            for job in range(njobs):
                b0, b1, h0, h1 = _numba_cpu._job(job, nblk, seqs, blk, B, H)
                assert 0 <= b0 < b1 <= B and 0 <= h0 < h1 <= H
                seen[b0:b1, h0:h1] += 1
            assert (seen == 1).all(), (B, H, seqs, blk)
            if parallel and B < 2 * threads and H >= 16:
                assert njobs % threads == 0 and seqs == 1, (B, H, njobs)
    for T, B, H in ((9, 3, 40), (9, 7, 40), (9, 1, 33), (9, 9, 5), (1, 6, 65)):
        _check_pool("numba", "fo", T, B, H, 1, torch.float64, True, True, strided=False)
        _check_pool("numba", "ifo", T, B, H, 2, torch.float32, True, True, strided=True)
        _check_pool("numba", "f", T, B, H, 3, torch.float64, False, True, strided=False)
        _check_forget_mult("numba", T, B, H, torch.float64, True, strided=False)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.parametrize("chunk", [1, 2, 4, 32])
def test_triton_chunks(chunk, monkeypatch):
    """The Triton kernels walk time in chunks of CHUNK steps (a scan inside each, a carry
    between them): any chunk size gives the reference's values, for lengths below, at and across
    chunk boundaries, both directions of time, every pooling and window, float32 and float64."""
    from qrnn.ops import _triton_gpu

    monkeypatch.setattr(_triton_gpu, "CHUNK", dict.fromkeys(_triton_gpu.CHUNK, chunk))
    for T in sorted({1, chunk, chunk + 1, 2 * chunk + 3}):
        _check_pool("triton", "fo", T, 2, 5, 2, torch.float64, True, True, strided=False)
        _check_pool("triton", "ifo", T, 3, 4, 3, torch.float32, True, True, strided=True)
        _check_pool("triton", "f", T, 1, 33, 1, torch.float64, False, False, strided=False,
                    upstream_on=("c",))
        _check_forget_mult("triton", T, 2, 5, torch.float64, True, strided=False)


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_triton_kernels_compile_for_nvidia_gpus(tmp_path):
    """Every Triton kernel compiles for real (not interpreted) to machine code for Ampere (sm_80)
    and Hopper (sm_90), here, without a GPU (`tests/triton_compile_check.py`): every pooling,
    windows 2 and 3, float32, float64 and bfloat16 inputs, with and without saving activations.
    For Hopper, at window 2, none spills registers to local memory at its chunk size
    (`_triton_gpu.chunk`). The rest is only required to compile: spills cost speed, not
    correctness, and they depend on the compiler (with triton 3.9 none of these kernels spills;
    with 3.3 and 3.6 the float32 backward of "fo" spilled 8 to 16 bytes on sm_80)."""
    import json

    import triton

    nvidia_bin = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not all(os.path.exists(os.path.join(nvidia_bin, tool)) for tool in ("ptxas", "cuobjdump")):
        pytest.skip("this triton build ships no NVIDIA ptxas/cuobjdump")
    script = os.path.join(os.path.dirname(__file__), "triton_compile_check.py")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path),
           "TRITON_DEFAULT_FP_FUSION": "1"}
    out = subprocess.run([sys.executable, script, "sm_80", "sm_90"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    # per arch: 3 dtypes x (3 poolings x 2 windows x (2 forward + 1 backward) + 2 forget_mult)
    assert len(rows) == 2 * 3 * (3 * 2 * 3 + 2)
    assert {(r["arch"], r["kernel"]) for r in rows} == {
        (arch, k) for arch in ("sm_80", "sm_90")
        for k in ("_pool_fwd_kernel", "_pool_bwd_kernel", "_fm_fwd_kernel", "_fm_bwd_kernel")}
    spilled = [r for r in rows if r["LOCAL"] or r["STACK"]]
    # forget_mult's kernels have no window: held to the same rule
    assert not [r for r in spilled if r["arch"] == "sm_90" and r["constexprs"].get("K") != 3], \
        spilled
    assert all(0 < r["REG"] <= 255 for r in rows)


def test_empty_sequence():
    y = torch.randn(0, 2, 6)
    h, c = qrnn_pool(y, None, "fo")
    assert h.shape == c.shape == (0, 2, 2)
    c0 = torch.randn(2, 3)
    c, last = forget_mult(torch.rand(0, 2, 3), torch.randn(0, 2, 3), c0)
    assert c.shape == (0, 2, 3) and torch.equal(last, c0)


@pytest.mark.parametrize("backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("pooling", ["f", "fo", "ifo"])
def test_gradcheck_float64(backend, pooling):
    G = GATES[pooling]
    fast = backend == "triton"  # the interpreter is slow: check a random projection instead
    y = torch.randn(4, 2, 2 * G * 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(G * 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: qrnn_conv_pool(*a, pooling=pooling, window=2, backend=backend), (y, bias, c0),
        fast_mode=fast)
    f = torch.rand(4, 2, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: forget_mult(*a, backend=backend), (f, z, c0),
                                    fast_mode=fast)


@pytest.mark.parametrize("backend", ["python", "numba", "numba-parallel"], indirect=True)
def test_opcheck(backend):
    from qrnn.ops import library

    for pooling, G in GATES.items():
        for bias, c0 in ((None, None), (torch.randn(G * 4), torch.randn(3, 4))):
            y = torch.randn(5, 3, 2 * G * 4, requires_grad=True)
            args = (y, bias, c0, pooling, 2, backend)
            torch.library.opcheck(library.conv_pool, args)
    f, z = torch.rand(5, 3, 4, requires_grad=True), torch.randn(5, 3, 4, requires_grad=True)
    torch.library.opcheck(library.forget_mult, (f, z, torch.randn(3, 4, requires_grad=True),
                                                backend))
    torch.library.opcheck(library.forget_mult, (f, z, None, backend))


# ---- the masked convolution (`causal_conv`, any device: matrix products) -------------------

# (T, B, I, C, window): T = 1, 2, odd, below / at / above the window; batch 1 and odd; odd widths;
# I = 32 fills whole 64-byte rows of dx in every dtype here, the others take its padded layout
CONV_SHAPES = [(1, 1, 1, 1, 2), (2, 3, 5, 4, 2), (7, 1, 33, 6, 3), (1, 2, 3, 4, 3),
               (2, 2, 3, 5, 3), (17, 5, 7, 9, 1), (3, 2, 4, 3, 4), (2049, 2, 3, 4, 2),
               (5, 3, 32, 4, 2)]


@pytest.mark.parametrize("T,B,I,C,window", CONV_SHAPES)
@pytest.mark.parametrize("with_context", [False, True])
@pytest.mark.parametrize("strided", [False, True, "rows"])
@pytest.mark.parametrize("dtype,forward", [(torch.float64, "matmul"), (torch.float32, "matmul"),
                                           (torch.bfloat16, "matmul"), (torch.float32, "onednn")])
def test_causal_conv_matches_reference(T, B, I, C, window, with_context, strided, dtype, forward,
                                       monkeypatch):
    from qrnn.ops import conv

    # "onednn": the CPU float32 products through oneDNN at every size ("matmul": torch.mm)
    monkeypatch.setattr(conv, "ONEDNN_MIN_ROWS", 0 if forward == "onednn" else 2**62)
    monkeypatch.setenv(conv.PRODUCTS_ENV, "onednn" if forward == "onednn" else "mkl")
    gen = torch.Generator().manual_seed(hash((T, B, I, C, window)) % 2**31)
    x = torch.randn(T, B, I, generator=gen, dtype=torch.float64).to(dtype)
    weight = torch.randn(window * C, I, generator=gen, dtype=torch.float64).to(dtype)
    context = (torch.randn(window - 1, B, I, generator=gen, dtype=torch.float64).to(dtype)
               if with_context else None)
    if strided == "rows":  # the first I columns of a wider buffer: read in place without autograd
        x = torch.cat([x, torch.randn(T, B, 3, generator=gen).to(dtype)], dim=-1)[:, :, :I]
        assert conv.with_rows(x) is x
        with torch.no_grad():
            _assert_close("gates (in place)", causal_conv(x, weight, context, window),
                          causal_conv_ref(*(None if t is None else t.double() for t in
                                            (x, weight, context)), window), dtype)
    elif strided:
        x = _noncontiguous(x)
        assert conv.with_rows(x).is_contiguous()
        if context is not None and context.numel():
            context = _noncontiguous(context)
    upstream = torch.randn(T, B, C, generator=gen, dtype=torch.float64)
    inputs = [x, weight, context]

    def grads(fn, ins):
        return _grads(lambda *a: (fn(a[0], a[1], a[2] if with_context else None, window),),
                      ins, (upstream,))

    want, want_grads = grads(causal_conv_ref, [None if t is None else t.double() for t in inputs])
    got, got_grads = grads(causal_conv, inputs)
    _assert_close("gates", got[0], want[0], dtype)
    for name, g, w in zip(("dx", "dweight", "dcontext"), got_grads, want_grads):
        if w.numel() == 0:  # window 1: the context is (0, B, I)
            assert g.shape == w.shape
            continue
        _assert_close(name, g, w, dtype)


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("dtype,forward", [(torch.float64, "matmul"), (torch.float32, "matmul"),
                                           (torch.float32, "onednn")])
def test_causal_conv_takes_taps_with_any_strides(window, grad, dtype, forward, monkeypatch):
    """weight as taps (k, C, I): here some rows of each tap of a (k, 3C, I) weight, as
    `QRNN.last_output` passes (read in place without autograd, copied once through the op);
    the values of the reference on a contiguous copy, and the gradient lands in those rows."""
    from qrnn.ops import conv

    monkeypatch.setattr(conv, "ONEDNN_MIN_ROWS", 0 if forward == "onednn" else 2**62)
    monkeypatch.setenv(conv.PRODUCTS_ENV, "onednn" if forward == "onednn" else "mkl")
    gen = torch.Generator().manual_seed(window)
    T, B, I, C = 9, 3, 5, 4
    x = torch.randn(T, B, I, generator=gen, dtype=torch.float64).to(dtype)
    full = torch.randn(window * 3 * C, I, generator=gen, dtype=torch.float64).to(dtype)
    context = torch.randn(window - 1, B, I, generator=gen, dtype=torch.float64).to(dtype)
    full.requires_grad_(grad)
    taps = full.view(window, 3 * C, I)[:, C:2 * C]  # the middle C rows of each tap
    assert not taps.is_contiguous() or window == 1
    with torch.set_grad_enabled(grad):
        got = causal_conv(x, taps, context, window)
    want = causal_conv_ref(x.double(), taps.detach().double().reshape(window * C, I),
                           context.double(), window)
    _assert_close("gates", got, want, dtype)
    torch.testing.assert_close(causal_conv_ref(x, taps.detach(), context, window),
                               causal_conv_ref(x, taps.detach().reshape(-1, I), context, window))
    if grad:
        upstream = torch.randn(T, B, C, generator=gen, dtype=torch.float64)
        (dfull,) = torch.autograd.grad(got, [full], upstream.to(dtype))
        ref_taps = taps.detach().double().reshape(window * C, I).requires_grad_(True)
        (dtaps,) = torch.autograd.grad(causal_conv_ref(x.double(), ref_taps, context.double(),
                                                       window), [ref_taps], upstream)
        dfull = dfull.view(window, 3, C, I)
        _assert_close("dweight", dfull[:, 1], dtaps.view(window, C, I), dtype)
        assert not dfull[:, 0].any() and not dfull[:, 2].any()
    with pytest.raises(ValueError, match=r"\(window, C, I=5\) with window=2, got \(3, 4, 5\)"):
        causal_conv(x, torch.zeros(3, C, I, dtype=dtype), None, 2)


@pytest.mark.parametrize("taps", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_causal_conv_of_no_input_features_is_zero(taps, grad):
    """I = 0: gates of zeros, (T, B, C), with a (k*C, 0) weight or (k, C, 0) taps."""
    weight = torch.randn(2, 3, 0) if taps else torch.randn(6, 0)
    x = torch.randn(4, 2, 0, requires_grad=grad)
    gates = causal_conv(x, weight, None, 2)
    assert gates.shape == (4, 2, 3) and not gates.any()
    if grad:
        gates.sum().backward()
        assert x.grad.shape == (4, 2, 0)


@pytest.mark.parametrize("window,with_context", [(1, False), (2, False), (2, True), (3, True)])
def test_causal_conv_onednn_path_runs_and_its_result_can_be_changed_in_place(window, with_context,
                                                                             monkeypatch):
    """From `onednn_min_rows()` rows, CPU float32 runs oneDNN's primitives where chosen (for
    one small image too, which F.conv2d's own choice would skip); the result is no view, so
    in-place ops work."""
    from torch.profiler import profile

    from qrnn.ops import conv

    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        pytest.skip("oneDNN is not available")
    monkeypatch.setenv(conv.PRODUCTS_ENV, "onednn")
    monkeypatch.setattr(conv, "ONEDNN_MIN_ROWS", 200)  # whatever the CPU's own threshold
    x = torch.randn(200, 1, 5, requires_grad=True)
    w = torch.randn(window * 4, 5, requires_grad=True)
    context = torch.randn(window - 1, 1, 5) if with_context else None
    with profile() as prof:
        gates = causal_conv(x, w, context, window)
        gates += torch.arange(4.0)  # as a bias added in place
        gates.square().sum().backward()
    ops_run = {e.key for e in prof.key_averages()}
    assert "aten::mkldnn_convolution" in ops_run  # forward and dx
    want = causal_conv_ref(x.double(), w.double(),
                           None if context is None else context.double(), window)
    want = want + torch.arange(4.0, dtype=torch.float64)
    dx, dw = torch.autograd.grad(want.square().sum(), [x, w])  # through the double casts
    torch.testing.assert_close(x.grad, dx.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(w.grad, dw.float(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("setting,avx512,want", [
    (None, True, "onednn"), (None, False, "mkl"), ("auto", True, "onednn"), ("", False, "mkl"),
    ("mkl", True, "mkl"), ("onednn", False, "onednn")])
def test_cpu_products_choice_by_setting_and_cpu(setting, avx512, want, monkeypatch):
    """auto (or unset): oneDNN where PyTorch runs AVX-512 code, MKL elsewhere; names win; the
    MKL choice runs no oneDNN convolution; dx is contiguous either way."""
    from torch.profiler import profile

    from qrnn.ops import conv

    monkeypatch.setattr(conv, "_has_avx512", lambda: avx512)
    if setting is None:
        monkeypatch.delenv(conv.PRODUCTS_ENV, raising=False)
    else:
        monkeypatch.setenv(conv.PRODUCTS_ENV, setting)
    assert conv.cpu_products() == want
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return
    monkeypatch.setattr(conv, "ONEDNN_MIN_ROWS", 200)  # whatever the CPU's own threshold
    x = torch.randn(200, 2, 300, requires_grad=True)
    w = torch.randn(2 * 8, 300, requires_grad=True)
    with profile() as prof:
        gates = causal_conv(x, w, None, 2)
        (dx,) = torch.autograd.grad(gates.square().sum(), [x])
    ran = "aten::mkldnn_convolution" in {e.key for e in prof.key_averages()}
    assert ran == (want == "onednn")
    assert dx.is_contiguous()
    (want_dx,) = torch.autograd.grad(causal_conv_ref(x, w, None, 2).square().sum(), [x])
    torch.testing.assert_close(dx, want_dx, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("setting,family,want", [
    (None, 25, 2000), (None, 26, 200), (None, 23, 200), (None, None, 200), (0, 25, 0),
    (500, 26, 500)])
def test_onednn_rows_by_cpu(setting, family, want, monkeypatch):
    """oneDNN runs from 2,000 rows on an AMD Zen 4 (family 25), from 200 elsewhere, and from
    `ONEDNN_MIN_ROWS` where that is set; the first row count that takes it is the threshold."""
    from qrnn.ops import conv

    monkeypatch.setattr(conv, "ONEDNN_MIN_ROWS", setting)
    monkeypatch.setattr(conv, "_amd_family", lambda: family)
    monkeypatch.setattr(conv, "_has_avx512", lambda: True)
    monkeypatch.delenv(conv.PRODUCTS_ENV, raising=False)
    assert conv.onednn_min_rows() == want
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return
    w = torch.randn(2 * 4, 3)
    assert conv._use_onednn(torch.randn(max(want, 1), 1, 3), w)
    if want > 1:
        assert not conv._use_onednn(torch.randn(want - 1, 1, 3), w)


def test_amd_family_is_read_from_cpuinfo(tmp_path):
    from qrnn.ops import conv

    for i, (text, want) in enumerate((
            ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n", 25),
            ("vendor_id\t: GenuineIntel\ncpu family\t: 6\n", None),
            ("vendor_id\t: AuthenticAMD\n", None))):
        info = tmp_path / f"cpuinfo{i}"  # a file of its own each: the answer is cached by path
        info.write_text(text)
        assert conv._amd_family(str(info)) == want
    assert conv._amd_family(str(tmp_path / "missing")) is None  # unreadable


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_products_bad_setting_is_a_clear_error(dtype, monkeypatch):
    from qrnn.ops import conv

    monkeypatch.setenv(conv.PRODUCTS_ENV, "blas")
    with pytest.raises(ValueError, match=r"\$QRNN_CPU_PRODUCTS='blas': must be one of auto"):
        causal_conv(torch.randn(300, 1, 4, dtype=dtype), torch.randn(4, 4, dtype=dtype), None, 1)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # from torch.backends.mkldnn.flags
@pytest.mark.parametrize("setting", ["onednn", "mkl", "no oneDNN"])
@pytest.mark.parametrize("T,B,I,window,with_context", [
    (100, 2, 300, 2, False), (50, 3, 7, 3, True), (3, 1, 16, 1, False), (1, 2, 300, 2, True)])
def test_causal_conv_real_strides_are_the_fake_ones(setting, T, B, I, window, with_context,
                                                     monkeypatch):
    """The fake implementations promise the strides of every path: a graph compiled under one
    library choice (Inductor asserts the strides the fake gave) runs under any other. dx once
    had padded rows on the MKL path and contiguous ones on oneDNN's."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from qrnn.ops import conv, library

    x, w = torch.randn(T, B, I), torch.randn(window * 8, I)
    context = torch.randn(window - 1, B, I) if with_context else None
    dgates = torch.randn(T, B, 8)

    def run():
        return [library.causal_conv(x, w, context, window),
                *library.causal_conv_backward(dgates, x, w, context, window, [True, True, True])]

    for traced in ("onednn", "mkl"):  # the setting a graph was traced under
        monkeypatch.setenv(conv.PRODUCTS_ENV, traced)
        with FakeTensorMode(allow_non_fake_inputs=True):
            fake = run()
        monkeypatch.setenv(conv.PRODUCTS_ENV, "mkl" if setting == "mkl" else "onednn")
        with torch.backends.mkldnn.flags(enabled=setting != "no oneDNN"):
            real = run()
        for name, r, f in zip(("gates", "dx", "dweight", "dcontext"), real, fake):
            assert (r.shape, r.stride()) == (f.shape, f.stride()), (name, traced)


def test_causal_conv_gradcheck_and_opcheck():
    from qrnn.ops import library

    x = torch.randn(6, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2 * 5, 4, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: causal_conv(*a, window=2), (x, w, ctx))
    assert torch.autograd.gradcheck(lambda a, b: causal_conv(a, b, None, 2), (x, w))
    for context in (ctx.float(), None):
        args = (x.float().detach().requires_grad_(True), w.float().detach().requires_grad_(True),
                context, 2)
        torch.library.opcheck(library.causal_conv, args)
    # only the gradients asked for are computed (the others come back as None)
    gx, = torch.autograd.grad(causal_conv(x, w.detach(), ctx.detach(), 2).sum(), [x])
    assert gx.shape == x.shape


def test_causal_conv_is_the_layer_convolution_and_rejects_bad_shapes():
    x, w = torch.randn(5, 2, 3), torch.randn(2 * 4, 3)
    conv1d = torch.nn.functional.conv1d(  # the same causal convolution, as a padded Conv1d
        torch.nn.functional.pad(x.permute(1, 2, 0), (1, 0)),
        torch.stack([w[4:], w[:4]], dim=-1))  # (C, I, k): kernel position 0 is the oldest tap
    torch.testing.assert_close(causal_conv(x, w, None, 2), conv1d.permute(2, 0, 1))
    with pytest.raises(ValueError, match=r"weight must have shape \(window\*C, I=3\)"):
        causal_conv(x, torch.randn(7, 3), None, 2)
    with pytest.raises(ValueError, match=r"context must have shape \(window-1=1, B=2, I=3\)"):
        causal_conv(x, w, torch.randn(2, 2, 3), 2)
    with pytest.raises(ValueError, match="x must have shape"):
        causal_conv(x[0], w, None, 2)
    with pytest.raises(ValueError, match="window must be >= 1"):
        causal_conv(x, w, None, 0)
    with pytest.raises(ValueError, match="they must match"):
        causal_conv(x, w.double(), None, 2)


def _op_calls(monkeypatch) -> list[str]:
    """The names of the registered ops called from now on (each wrapped to record its call)."""
    from qrnn.ops import library

    calls: list[str] = []
    for name in ("conv_pool", "forget_mult", "causal_conv"):
        op = getattr(library, name)
        monkeypatch.setattr(library, name,
                            lambda *a, op=op, name=name: (calls.append(name), op(*a))[1])
    return calls


def _every_op_input(requires_grad: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(6, 2, 4, generator=gen, requires_grad=requires_grad),
            torch.randn(2 * 12, 4, generator=gen), torch.randn(12, generator=gen),
            torch.rand(6, 2, 3, generator=gen), torch.randn(6, 2, 3, generator=gen)]


def _run_every_op(x, w, bias, f, z) -> list[torch.Tensor]:
    gates = causal_conv(x, w, None, 2)  # (6, 2, 12): 4 gates of 3 for "ifo", 3 of 4 for "fo"
    return [gates, *qrnn_conv_pool(gates, bias, None, "ifo", 1, backend="numba"),
            *qrnn_conv_pool(gates, bias, None, "fo", 1, backend="numba"),
            *qrnn_conv_pool(gates.double(), bias.double(), None, "f", 1, backend="numba"),
            *forget_mult(f, z, None, backend="numba")]


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "frozen inputs"])
def test_ops_without_a_gradient_to_record_run_their_kernels_directly(mode, monkeypatch):
    """With nothing to record, the wrappers call the ops' implementations without the dispatcher
    (20-40 us less per call, 4% of a single-review inference): the same values, bit for bit."""
    inputs = _every_op_input()
    calls = _op_calls(monkeypatch)
    with torch.no_grad(), monkeypatch.context() as m:
        m.setattr(library, "direct", lambda *tensors: False)
        want = _run_every_op(*inputs)
    assert calls == ["causal_conv", "conv_pool", "conv_pool", "conv_pool", "forget_mult"]
    calls.clear()
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode,
               "frozen inputs": torch.enable_grad}[mode]
    with context():
        got = _run_every_op(*inputs)
    assert calls == []
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_ops_go_through_the_dispatcher_wherever_something_watches(monkeypatch):
    """Autograd, modes, transforms, tracers and the profiler each see the op as one node."""
    from torch.autograd import forward_ad
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = _op_calls(monkeypatch)
    _run_every_op(*_every_op_input(requires_grad=True))  # autograd records causal_conv: its input needs a gradient
    assert calls[0] == "causal_conv"

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    inputs = _every_op_input()
    with torch.no_grad(), Seen() as seen:
        _run_every_op(*inputs)
    assert {"qrnn.causal_conv", "qrnn.conv_pool", "qrnn.forget_mult"} <= seen.ops

    with torch.no_grad(), torch.profiler.profile() as prof:
        _run_every_op(*inputs)
    names = {event.name for event in prof.events()}
    assert {"qrnn::causal_conv", "qrnn::conv_pool", "qrnn::forget_mult"} <= names

    x = torch.randn(3)
    flags = []
    torch.func.vmap(lambda t: (flags.append(library.direct(t)), t)[1])(x.view(3, 1))
    with forward_ad.dual_level():
        flags.append(library.direct(x))
    torch.jit.trace(lambda t: (flags.append(library.direct(t)), t * 2)[1], (x,),
                    check_trace=False)
    with torch.device("cpu"):  # a torch function mode
        flags.append(library.direct(x))
    assert flags == [False] * 4 and library.direct(x)


def test_causal_conv_under_autograd_saves_its_own_copy_of_a_strided_input():
    """Only the direct path reads a buffer's columns in place: under autograd the op saves its
    own copy, so the caller may go on writing into the buffer, or pass an inference tensor."""
    w = torch.randn(8, 3, requires_grad=True)
    buf = torch.randn(5, 2, 7)
    gates = causal_conv(buf[:, :, :3], w, None, 2)
    want = causal_conv_ref(buf[:, :, :3].clone(), w, None, 2)
    buf[:, :, 3:] = 0  # the other columns change after the forward
    upstream = torch.randn(5, 2, 4)
    got_dw, = torch.autograd.grad(gates, [w], upstream)
    want_dw, = torch.autograd.grad(want, [w], upstream)
    torch.testing.assert_close(got_dw, want_dw)
    with torch.inference_mode():
        feats = torch.randn(5, 2, 8)
    causal_conv(feats[:, :, :3], w, None, 2).sum().backward()
    assert w.grad is not None


@pytest.mark.parametrize("grad", [False, True])
def test_a_window_that_is_not_an_int_is_a_clear_error(grad):
    import numpy as np

    x, w, y = torch.randn(5, 2, 3), torch.randn(8, 3), torch.randn(5, 2, 2 * 3 * 4)
    with torch.set_grad_enabled(grad):
        # a numpy int is an int
        torch.testing.assert_close(causal_conv(x, w, None, np.int64(2)), causal_conv(x, w, None, 2))
        torch.testing.assert_close(qrnn_conv_pool(y, None, None, "fo", np.int64(2)),
                                   qrnn_conv_pool(y, None, None, "fo", 2))
        for window in (2.0, True, None, torch.tensor(2)):
            with pytest.raises(TypeError, match="window must be an int, got"):
                causal_conv(x, w, None, window)
            with pytest.raises(TypeError, match="window must be an int, got"):
                qrnn_conv_pool(y, None, None, "fo", window)


def test_setting_sends_every_call_through_the_dispatcher(monkeypatch):
    inputs = _every_op_input()
    calls = _op_calls(monkeypatch)
    monkeypatch.setenv(library.DIRECT_ENV, "0")
    with torch.no_grad():
        _run_every_op(*inputs)
    assert calls == ["causal_conv", "conv_pool", "conv_pool", "conv_pool", "forget_mult"]
    monkeypatch.setenv(library.DIRECT_ENV, "yes")
    for grad in (False, True):  # reported whether or not the call could have gone direct
        with torch.set_grad_enabled(grad), \
                pytest.raises(ValueError, match=r"\$QRNN_OPS_DIRECT='yes': must be 1"):
            _run_every_op(*_every_op_input(requires_grad=grad))


def test_torch_compile_without_autograd_traces_the_ops():
    """Under no_grad a compiled graph still holds the ops (fake tensors never reach numba), and
    fullgraph holds: the direct-call check stops at `is_compiling` before anything dynamo
    cannot trace."""
    torch._dynamo.reset()
    inputs = _every_op_input()
    with torch.no_grad():
        eager = _run_every_op(*inputs)
        compiled = torch.compile(_run_every_op, backend="aot_eager", fullgraph=True)(*inputs)
    for c, e in zip(compiled, eager):
        torch.testing.assert_close(c, e)


def test_torch_compile_over_a_model_that_uses_the_ops():
    """aot_eager: dynamo + AOTAutograd trace the custom ops (fake impls, backward op) without
    needing inductor's C++ compiler; the kernels run as opaque nodes."""
    torch._dynamo.reset()
    lin = torch.nn.Linear(4, 2 * 3 * 5)

    def model(x, c0):
        h, c = qrnn_conv_pool(lin(x), None, c0, "fo", 2, backend="numba")
        c2, last = forget_mult(torch.sigmoid(h), c, None, backend="numba")
        return h.sum() + c.pow(2).sum() + last.sum() + c2.mean()

    x, c0 = torch.randn(6, 3, 4), torch.randn(3, 5, requires_grad=True)
    eager = model(x, c0)
    g_eager = torch.autograd.grad(eager, [c0, lin.weight])
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x, c0)
    g_comp = torch.autograd.grad(out, [c0, lin.weight])
    torch.testing.assert_close(out, eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b)


# ---- dispatch ---------------------------------------------------------------------------------

def test_default_and_env_backend(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert backends.resolve("cpu") == "numba"
    monkeypatch.setenv(backends.ENV_VAR, "python")
    assert backends.resolve("cpu") == "python"
    monkeypatch.setenv(backends.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="QRNN_BACKEND"):
        backends.resolve("cpu")


def test_missing_fast_path_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setattr(backends, "is_installed", lambda name: name in ("python", "reference"))
    monkeypatch.setattr(backends, "_warned", set())
    with pytest.warns(RuntimeWarning, match='pip install "numba>=0.59"'):
        assert backends.resolve("cpu") == "python"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("cpu") == "python"  # no second warning
    with pytest.raises(BackendUnavailableError, match='pip install "numba>=0.59"'):
        backends.resolve("cpu", "numba")
    with pytest.raises(BackendUnavailableError, match=r"pip install \"qrnn\[gpu\]\""):
        backends.resolve("cuda", "triton")
    monkeypatch.setenv(backends.ENV_VAR, "numba")
    with pytest.raises(BackendUnavailableError, match=r"\$QRNN_BACKEND='numba'"):
        qrnn_pool(torch.randn(3, 1, 6))


def test_backend_on_the_wrong_device_is_an_error(monkeypatch):
    with pytest.raises(BackendUnavailableError, match="CPU tensors only"):
        backends.resolve("cuda", "numba")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if HAS_TRITON:
        with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
            backends.resolve("cpu", "triton")


def test_import_loads_no_accelerator():
    code = ("import sys, qrnn, qrnn.ops, qrnn.modules; "
            "print(sorted(m for m in ('numba', 'triton') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- GPU (skipped without CUDA; none in this session) -----------------------------------------

@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "python"], indirect=True)
@pytest.mark.parametrize("pooling", ["f", "fo", "ifo"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_cuda_matches_reference(backend, pooling, dtype):
    """The ops on CUDA tensors (Triton compiled for the card, or the python loop) against the
    float64 reference on CPU, with the CPU tests' tolerances: outputs and every gradient, for
    lengths 1, odd, across chunks and long, batch 1 and odd, odd widths, windows 1-3, strided
    inputs, the paper's shape."""
    for T, B, H, window in [(1, 1, 1, 2), (7, 3, 33, 1), (37, 5, 7, 3), (2049, 2, 5, 2),
                            (400, 24, 256, 2)]:
        _check_pool(backend, pooling, T, B, H, window, dtype, True, True, strided=T == 37,
                    device="cuda")
        _check_pool(backend, pooling, T, B, H, window, dtype, False, window > 1, strided=False,
                    upstream_on=("c",) if pooling == "f" else ("h",), device="cuda")
        _check_forget_mult(backend, T, B, H, dtype, T % 2 == 1, strided=T == 37, device="cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_layer_matches_float64_cpu(dtype):
    """The whole layer on CUDA (cuBLAS convolution, Triton pooling) against the same layer in
    float64 on CPU: outputs, final cells and every gradient (input, weights, biases, c0)."""
    from qrnn.modules import QRNN

    torch.manual_seed(0)
    ref = QRNN(24, 32, num_layers=2, dense=True, dtype=torch.float64)
    gpu = QRNN(24, 32, num_layers=2, dense=True, device="cuda", dtype=dtype)
    gpu.load_state_dict(ref.state_dict())
    x, hx = torch.randn(300, 5, 24, dtype=torch.float64), torch.randn(2, 5, 32, dtype=torch.float64)
    lengths = torch.tensor([300, 1, 77, 299, 150])
    up = torch.randn(300, 5, ref.output_size, dtype=torch.float64)
    results = []
    for m, dev, dt in ((ref, "cpu", torch.float64), (gpu, "cuda", dtype)):
        xs, hs = x.to(dev, dt).requires_grad_(), hx.to(dev, dt).requires_grad_()
        out, h_n = m(xs, hs, lengths=lengths.to(dev))
        loss = (out.double() * up.to(dev)).sum() + h_n.double().square().sum()
        grads = torch.autograd.grad(loss, [xs, hs, *m.parameters()])
        results.append([t.detach().double().cpu() for t in (out, h_n, *grads)])
    tol = 2e-4 if dtype == torch.float32 else 5e-2
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=tol * (1 + want.abs().max().item()), rtol=tol)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("grad", [False, True])
def test_cuda_last_output_matches_float64_cpu(grad, device="cuda"):
    """`QRNN.last_output` on CUDA (the last layer's z, f taps read in place by cuBLAS without
    autograd; Triton's "f" pooling) against float64 `forward` on CPU read at the last steps."""
    from qrnn.modules import QRNN, last_real_step

    torch.manual_seed(0)
    ref = QRNN(24, 32, num_layers=3, dense=True, window=3, dtype=torch.float64)
    gpu = QRNN(24, 32, num_layers=3, dense=True, window=3, device=device)
    gpu.load_state_dict(ref.state_dict())
    x = torch.randn(300, 5, 24, dtype=torch.float64)
    lengths = torch.tensor([300, 1, 77, 2, 150])
    xs = x.to(device, torch.float32).requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        got = gpu.last_output(xs, lengths.to(device))
    xr = x.clone().requires_grad_(grad)
    want = last_real_step(ref(xr, lengths=lengths)[0], lengths)
    torch.testing.assert_close(got.double().cpu(), want.detach(), atol=2e-4, rtol=2e-4)
    if grad:
        up = torch.randn(want.shape, dtype=torch.float64)
        for g, w in zip(torch.autograd.grad(got, [xs, *gpu.parameters()], up.to(device).float()),
                        torch.autograd.grad(want, [xr, *ref.parameters()], up)):
            torch.testing.assert_close(g.double().cpu(), w,
                                       atol=2e-4 * (1 + w.abs().max().item()), rtol=2e-4)
