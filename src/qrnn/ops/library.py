"""The recurrence registered as PyTorch custom ops, so autograd, `torch.compile` and export see it.

    qrnn::conv_pool(y, bias?, c0?, pooling, window, backend) -> (h, c, act)
    qrnn::conv_pool_backward(act, c, c0?, dh?, dc?, pooling, window, backend) -> (dy, dbias, dc0)
    qrnn::forget_mult(f, z, c0?, backend) -> (c, c_last)
    qrnn::forget_mult_backward(f, z, c0?, c, dc?, dc_last?, backend) -> (df, dz, dc0)
    qrnn::causal_conv(x, weight, context?, window) -> gates
    qrnn::causal_conv_backward(dgates, x, weight, context?, window, needs) -> (dx, dweight, dcontext)

Shapes and meaning are those of `_torch_loop.py` (`h` is empty for pooling "f"; `act` is the
gate activations saved for the backward). Each op has a fake (shape-only) implementation for
tracing and the backward is itself an op, so the compiled graph calls the kernels as opaque
nodes. `backend` is a resolved name from `backends.resolve` ("numba", "triton" or "python");
the public wrappers in `pooling.py` and `forget_mult.py` resolve it before calling.

The public wrappers call each op through `run_conv_pool`, `run_forget_mult` and
`run_causal_conv`. In plain eager code that needs no gradient (`torch.no_grad()`,
`torch.inference_mode()`), these call the op's implementation directly (`direct`). Going through
the dispatcher there cost 20-40 us per call, about 0.4 ms of a 10 ms single-review inference.
Wherever anything could watch or transform the call, they go through the op: autograd, tracing,
compiling, export, dispatch and function modes, functorch transforms, forward AD, the profiler.
`$QRNN_OPS_DIRECT=0` sends every call through the op (for watchers that cannot be detected, such
as `torch.profiler.ExecutionTraceObserver`).
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Optional

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad

from qrnn.ops import conv
from qrnn.ops._torch_loop import GATES, compute_dtype

_MODULES = {"python": "qrnn.ops._torch_loop", "numba": "qrnn.ops._numba_cpu",
            "triton": "qrnn.ops._triton_gpu"}


@functools.cache
def _backend(name: str):
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(_MODULES)}")
    return importlib.import_module(_MODULES[name])  # lazy: numba/triton load on first use


_PLAIN = (Tensor, nn.Parameter)  # tensor types with no __torch_function__ of their own

# "0" sends every call through the dispatcher: for what `_nothing_watching` cannot see, such as
# torch.profiler.ExecutionTraceObserver, which sets no flag that can be read.
DIRECT_ENV = "QRNN_OPS_DIRECT"


def transformed() -> bool:
    """Whether a functorch transform (`torch.func.grad`, `vmap`, `jvp`, ...) other than
    `functionalize`, or forward-mode AD, is active. The ops' registered autograd cannot run under
    them (PyTorch generates it as an `autograd.Function` without `setup_context`:
    pytorch/pytorch#170834), so there the public wrappers compute the plain-PyTorch references,
    which every transform supports, in float32 at least and rounded to the gates' dtype, as the
    kernels compute. Private torch functions; if one is missing, the answer is False (the op)."""
    try:
        if forward_ad._current_level >= 0:
            return True
        if not torch._C._are_functorch_transforms_active():
            return False
        from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
        return any(i.key() != torch._C._functorch.TransformType.Functionalize
                   for i in retrieve_all_functorch_interpreters())
    except (AttributeError, ImportError):
        return False


def _nothing_watching() -> bool:
    """No tracer, mode, transform or profiler that must see the op as one node (compiling is
    checked by `direct`). Each check uses a private torch function; if one is missing (another
    torch version), the answer is False, so the call goes through the op: slower, never wrong."""
    try:
        return not (torch.jit.is_tracing() or torch._C._len_torch_dispatch_stack()
                    or torch._C._is_torch_function_mode_enabled()
                    or torch._C._are_functorch_transforms_active()
                    or forward_ad._current_level >= 0
                    or torch.autograd.profiler._is_profiler_enabled
                    or torch._C._autograd._profiler_enabled())
    except AttributeError:
        return False


def direct(*tensors: Tensor | None) -> bool:
    """Whether an op on these inputs may run as a plain call of its implementation: the same
    values, with nothing that needed the dispatcher (no gradient to record, plain tensors,
    `_nothing_watching`); never with `$QRNN_OPS_DIRECT=0`. Compiling is checked first: dynamo
    folds it to True and then never traces the rest, some of which it could not."""
    if torch.compiler.is_compiling():
        return False
    setting = os.environ.get(DIRECT_ENV) or "1"  # read first: a bad value is an error anywhere
    if setting not in ("0", "1"):
        raise ValueError(f"${DIRECT_ENV}={setting!r}: must be 1 (call the kernels directly where "
                         "nothing watches, the default) or 0 (always through the dispatcher)")
    if setting == "0":
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN or (grad and t.requires_grad)):
            return False
    return _nothing_watching()


# ---- qrnn::conv_pool -------------------------------------------------------------------------

def _pool(y: Tensor, bias: Tensor | None, c0: Tensor | None, pooling: str, window: int,
          backend: str, save: bool) -> tuple[Tensor, Tensor, Tensor]:
    h, c, act = _backend(backend).pool_forward(y, bias, c0, pooling, window, save)
    if h.dtype != y.dtype:  # float16/bfloat16 computed in float32
        h, c = h.to(y.dtype), c.to(y.dtype)
    return h, c, act


def _conv_pool(y: Tensor, bias: Optional[Tensor], c0: Optional[Tensor], pooling: str,
               window: int, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _pool(y, bias, c0, pooling, window, backend, save=True)


conv_pool = torch.library.custom_op("qrnn::conv_pool", _conv_pool, mutates_args=())


def run_conv_pool(y: Tensor, bias: Tensor | None, c0: Tensor | None, pooling: str, window: int,
                  backend: str) -> tuple[Tensor, Tensor]:
    """(h, c) of `conv_pool`, called directly where nothing needs the op (`direct`), and then
    without keeping the activations for a backward that will not come."""
    if direct(y, bias, c0):
        h, c, _ = _pool(y, bias, c0, pooling, window, backend, save=False)
    else:
        h, c, _ = conv_pool(y, bias, c0, pooling, window, backend)
    return h, c


@conv_pool.register_fake
def _(y, bias, c0, pooling, window, backend):
    rows, B, width = y.shape
    T, gh = rows - (window - 1), width // window
    H = gh // GATES[pooling]
    h = y.new_empty(T, B, H) if GATES[pooling] >= 3 else y.new_empty(0)
    return h, y.new_empty(T, B, H), y.new_empty(T, B, gh, dtype=compute_dtype(y.dtype))


@torch.library.custom_op("qrnn::conv_pool_backward", mutates_args=())
def conv_pool_backward(act: Tensor, c: Tensor, c0: Optional[Tensor], dh: Optional[Tensor],
                       dc: Optional[Tensor], pooling: str, window: int,
                       backend: str) -> tuple[Tensor, Tensor, Tensor]:
    dy, dbias, dc0 = _backend(backend).pool_backward(act, c, c0, dh, dc, pooling, window, True)
    if dc0 is None:
        dc0 = act.new_zeros(act.shape[1], act.shape[2] // GATES[pooling])
    return dy, dbias, dc0


@conv_pool_backward.register_fake
def _(act, c, c0, dh, dc, pooling, window, backend):
    T, B, gh = act.shape
    return (act.new_empty(window - 1 + T, B, window * gh), act.new_empty(gh),
            act.new_empty(B, gh // GATES[pooling]))


def _conv_pool_setup(ctx, inputs, output):
    y, bias, c0, pooling, window, backend = inputs
    h, c, act = output
    # An output nobody used (act always; c or h often) gets None, not a materialised tensor of
    # zeros: the backward op takes dh and dc as optional and then skips reading them.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(act, c, c0)
    ctx.pooling, ctx.window, ctx.backend = pooling, window, backend
    ctx.y_dtype = y.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.c0_dtype = None if c0 is None else c0.dtype


def _conv_pool_grad(ctx, dh, dc, dact):
    act, c, c0 = ctx.saved_tensors
    if ctx.pooling == "f":
        dh = None  # h is an empty placeholder for "f"
    dy, dbias, dc0 = conv_pool_backward(act, c, c0, dh, dc, ctx.pooling, ctx.window, ctx.backend)
    return (dy.to(ctx.y_dtype),
            None if ctx.bias_dtype is None else dbias.to(ctx.bias_dtype),
            None if ctx.c0_dtype is None else dc0.to(ctx.c0_dtype),
            None, None, None)


conv_pool.register_autograd(_conv_pool_grad, setup_context=_conv_pool_setup)


# ---- qrnn::forget_mult -----------------------------------------------------------------------

def _forget_mult(f: Tensor, z: Tensor, c0: Optional[Tensor], backend: str) -> tuple[Tensor, Tensor]:
    c = _backend(backend).forget_mult_forward(f, z, c0).to(f.dtype)
    return c, c[-1].clone()


forget_mult = torch.library.custom_op("qrnn::forget_mult", _forget_mult, mutates_args=())


def run_forget_mult(f: Tensor, z: Tensor, c0: Tensor | None,
                    backend: str) -> tuple[Tensor, Tensor]:
    """`forget_mult`, called directly where nothing needs the op (`direct`)."""
    return (_forget_mult if direct(f, z, c0) else forget_mult)(f, z, c0, backend)


@forget_mult.register_fake
def _(f, z, c0, backend):
    return torch.empty_like(f), f.new_empty(f.shape[1:])


@torch.library.custom_op("qrnn::forget_mult_backward", mutates_args=())
def forget_mult_backward(f: Tensor, z: Tensor, c0: Optional[Tensor], c: Tensor,
                         dc: Optional[Tensor], dc_last: Optional[Tensor],
                         backend: str) -> tuple[Tensor, Tensor, Tensor]:
    cd = compute_dtype(f.dtype)
    grad = torch.zeros(c.shape, dtype=cd, device=c.device) if dc is None else dc.to(cd, copy=True)
    if dc_last is not None:
        grad[-1] += dc_last.to(cd)
    df, dz, dc0 = _backend(backend).forget_mult_backward(f, z, c0, c.to(cd), grad)
    if dc0 is None:
        dc0 = f.new_zeros(f.shape[1:], dtype=cd)
    return df, dz, dc0


@forget_mult_backward.register_fake
def _(f, z, c0, c, dc, dc_last, backend):
    cd = compute_dtype(f.dtype)
    return (f.new_empty(f.shape, dtype=cd), f.new_empty(f.shape, dtype=cd),
            f.new_empty(f.shape[1:], dtype=cd))


def _forget_mult_setup(ctx, inputs, output):
    f, z, c0, backend = inputs
    c, _ = output
    ctx.set_materialize_grads(False)  # as in _conv_pool_setup
    ctx.save_for_backward(f, z, c0, c)
    ctx.backend = backend
    ctx.dtypes = (f.dtype, z.dtype, None if c0 is None else c0.dtype)


def _forget_mult_grad(ctx, dc, dc_last):
    f, z, c0, c = ctx.saved_tensors
    df, dz, dc0 = forget_mult_backward(f, z, c0, c, dc, dc_last, ctx.backend)
    f_dtype, z_dtype, c0_dtype = ctx.dtypes
    return (df.to(f_dtype), dz.to(z_dtype), None if c0_dtype is None else dc0.to(c0_dtype),
            None)


forget_mult.register_autograd(_forget_mult_grad, setup_context=_forget_mult_setup)


# ---- qrnn::causal_conv -----------------------------------------------------------------------

def _causal_conv(x: Tensor, weight: Tensor, context: Optional[Tensor], window: int) -> Tensor:
    return conv.conv_forward(x, weight, context, window)


causal_conv = torch.library.custom_op("qrnn::causal_conv", _causal_conv, mutates_args=())


def run_causal_conv(x: Tensor, weight: Tensor, context: Tensor | None, window: int) -> Tensor:
    """`causal_conv`, called directly where nothing needs the op (`direct`). There x is read in
    place if its rows are evenly spaced (`conv.with_rows`, e.g. the first columns of a larger
    buffer). Through the op a non-contiguous x is made contiguous first, so that autograd never
    saves a view into a buffer of the caller's, which the caller may go on to change (or which
    may be an inference tensor); a contiguous x is saved itself, as `F.linear` saves its input.
    The weight may be taps (k, C, I) with any strides: read in place when called directly."""
    if direct(x, weight, context):
        return _causal_conv(conv.with_rows(x), weight, context, window)
    # the op takes the (k*C, I) form: taps (k, C, I) that are not one matrix are copied
    if weight.dim() == 3:
        weight = weight.reshape(weight.shape[0] * weight.shape[1], weight.shape[2])
    return causal_conv(x.contiguous(), weight, context, window)


@causal_conv.register_fake
def _(x, weight, context, window):
    return x.new_empty(x.shape[0], x.shape[1], weight.shape[0] // window)


@torch.library.custom_op("qrnn::causal_conv_backward", mutates_args=())
def causal_conv_backward(dgates: Tensor, x: Tensor, weight: Tensor, context: Optional[Tensor],
                         window: int, needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    return conv.conv_backward(dgates, x, weight, context, window, *needs)


@causal_conv_backward.register_fake
def _(dgates, x, weight, context, window, needs):
    need_x, need_weight, need_context = needs
    return (x.new_empty(x.shape) if need_x else x.new_empty(0),
            weight.new_empty(weight.shape if need_weight else (0,)),
            x.new_empty(context.shape if need_context and context is not None else (0,)))


def _causal_conv_setup(ctx, inputs, output):
    x, weight, context, window = inputs
    ctx.save_for_backward(x, weight, context)
    ctx.window = window


def _causal_conv_grad(ctx, dgates):
    x, weight, context = ctx.saved_tensors
    need_x, need_weight, need_context = ctx.needs_input_grad[:3]
    dx, dweight, dcontext = causal_conv_backward(
        dgates, x, weight, context, ctx.window,
        [need_x, need_weight, need_context and context is not None])
    return (dx if need_x else None, dweight if need_weight else None,
            dcontext if need_context and context is not None else None, None)


causal_conv.register_autograd(_causal_conv_grad, setup_context=_causal_conv_setup)
