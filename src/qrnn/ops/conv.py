"""The QRNN's masked (causal) convolution over time, as k matrix products that add in place.

    gates_t = sum_{j<k} W_j x_{t-j}        (x_{t-j} from `context` when t - j < 0, zeros if None)

`causal_conv_ref` is the specification (plain autograd over shifted copies). `causal_conv` computes
the same with no copy of the input at all: in a time-major, contiguous x of shape (T, B, I), the
inputs one step back are the same matrix shifted by B rows, so tap j is one matrix product of
the rows x[:T-j] added into the rows gates[j:] (`addmm_` on contiguous views). The backward is
the same trick transposed: dx[:T-j] += dgates[j:] W_j and dW_j = dgates[j:]^T x[:T-j]. Compared
with one product over [context; x] against all k taps at once, the output and its gradient are
k times smaller (G*H columns instead of k*G*H), which is what the layer's time was going into.

On CPU in float32 from `onednn_min_rows()` rows T*B, on a CPU with AVX-512 (`cpu_products`), the
same products run through oneDNN, whose AVX-512 kernels were about twice as fast as MKL's sgemm
on an AMD Zen 5 CPU: the forward as a 2-D convolution over a channels-last view of the same
memory (`_forward_onednn`), dx as the convolution that looks k-1 steps ahead
(`_grad_input_onednn`), dW_j through oneDNN's 1x1-convolution weight gradient
(`_grad_weight_onednn`). On an AVX2 CPU (AMD Zen 3) the same oneDNN calls were no faster
forward and about 3x slower for dW, so there the products stay on torch.mm. Where no gradient
is recorded (`library.run_causal_conv`), an x whose rows are evenly spaced (the first columns of
a larger buffer, as the dense QRNN stack passes at inference) is read in place by torch.mm (the
oneDNN path copies it); otherwise a non-contiguous x is made contiguous once.
Under `torch.autocast` the inputs are cast to the autocast dtype first, as `F.linear` does.

Registered as the custom ops `qrnn::causal_conv` / `qrnn::causal_conv_backward` (`library.py`),
so autograd, `torch.compile` and `torch.export` see one node. Any device.
"""

from __future__ import annotations

import functools
import numbers
import os

import torch
from torch import Tensor
from torch.nn import functional as F


def check_window(window: object, where: str = "") -> None:
    """A window (convolution width k) is an int >= 1: numpy ints count, bools do not. `where`
    prefixes the message (e.g. "causal_conv: "). The one check of the ops and the layer."""
    if isinstance(window, bool) or not isinstance(window, numbers.Integral):
        raise TypeError(f"{where}window must be an int, got {window!r}")
    if window < 1:
        raise ValueError(f"{where}window must be >= 1, got {window}")


def _check(x: Tensor, weight: Tensor, context: Tensor | None, window: int) -> None:
    check_window(window, "causal_conv: ")
    if x.dim() != 3:
        raise ValueError(f"causal_conv: x must have shape (T, B, I), got {tuple(x.shape)}")
    I = x.shape[2]
    if not (weight.dim() == 2 and weight.shape[1] == I and weight.shape[0] % window == 0
            or weight.dim() == 3 and weight.shape[0] == window and weight.shape[2] == I):
        raise ValueError(f"causal_conv: weight must have shape (window*C, I={I}) or (window, C, "
                         f"I={I}) with window={window}, got {tuple(weight.shape)}")
    if context is not None and context.shape != (window - 1, x.shape[1], I):
        raise ValueError(f"causal_conv: context must have shape (window-1={window - 1}, "
                         f"B={x.shape[1]}, I={I}), got {tuple(context.shape)}")
    for name, t in (("weight", weight), ("context", context)):
        if t is not None and (t.device != x.device or t.dtype != x.dtype):
            raise ValueError(f"causal_conv: {name} is {t.dtype} on {t.device}, x is {x.dtype} "
                             f"on {x.device}; they must match")


def causal_conv_ref(x: Tensor, weight: Tensor, context: Tensor | None = None,
                    window: int = 2) -> Tensor:
    """Reference masked convolution of width k = window.

    Args:
        x:       (T, B, I) inputs.
        weight:  (k*C, I), tap j (multiplying x_{t-j}) rows [j*C, (j+1)*C); or the taps as
                 (k, C, I), any strides (a view of some rows of each tap: `QRNN.last_output`).
        context: (k-1, B, I) the k-1 inputs before x[0], oldest first, or None for zeros.
    Returns:
        (T, B, C), step t = sum_j W_j x_{t-j}.
    """
    _check(x, weight, context, window)
    k, T = window, x.shape[0]
    if context is None:
        context = x.new_zeros(k - 1, x.shape[1], x.shape[2])
    padded = torch.cat([context, x])  # (k-1+T, B, I), row k-1+t is x_t
    taps = _taps(weight, k)
    return sum(F.linear(padded[k - 1 - j:k - 1 - j + T], taps[j]) for j in range(k))


def _taps(weight: Tensor, window: int) -> Tensor:
    """weight (k*C, I) or (k, C, I) -> the taps (k, C, I), a view."""
    if weight.dim() == 3:
        return weight
    return weight.view(window, weight.shape[0] // window, weight.shape[1])


# Rows T*B from which CPU float32 products run through oneDNN (`_use_onednn`) where it is
# chosen (`cpu_products`); None: by CPU (`onednn_min_rows`). On an AMD Zen 5 CPU, MKL's sgemm
# (what torch.mm calls) ran at about half the speed of oneDNN's AVX-512 kernels, at every shape
# that matters here; below a couple of hundred rows oneDNN's fixed cost per call wins instead
# (one review of 230 tokens: forward 2.0 ms vs 3.1 ms at I=868; 64 rows: 1.16 vs 0.95 ms): 200.
# On an AMD Zen 4 (AVX-512 on 256-bit units) MKL was the faster up to about 2,000 rows and
# oneDNN from about 3,000: one layer's convolution at batch 1 took 3.9 (MKL) vs 4.8 ms (oneDNN)
# forward at 230 rows and I=868, 6.4 vs 6.9 at 400 rows; at batch 24 and 400 steps 134 vs 119
# ms (forward) and 403 vs 387 ms (forward + backward): 2,000. `benchmarks/bench_layer.py`
# prints both paths side by side.
ONEDNN_MIN_ROWS: int | None = None


@functools.cache
def _amd_family(cpuinfo: str = "/proc/cpuinfo") -> int | None:
    """The CPU family of an AMD CPU (25: Zen 3 and Zen 4; 26: Zen 5), from `cpuinfo`; None for
    another vendor or where that file cannot be read."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            pairs = (line.split(":", 1) for line in fh.read(1 << 16).splitlines() if ":" in line)
            fields = {key.strip(): value.strip() for key, value in pairs}  # "key\t: value"
    except OSError:
        return None
    if fields.get("vendor_id") != "AuthenticAMD":
        return None
    family = fields.get("cpu family", "")
    return int(family) if family.isdigit() else None


def onednn_min_rows() -> int:
    """Rows T*B from which oneDNN runs the CPU float32 products where it is chosen:
    `ONEDNN_MIN_ROWS` if set, else 2,000 on an AMD family-25 CPU (a Zen 4, where oneDNN is
    chosen: Zen 3 has no AVX-512) and 200 elsewhere (see the measurements above)."""
    if ONEDNN_MIN_ROWS is not None:
        return ONEDNN_MIN_ROWS
    return 2000 if _amd_family() == 25 else 200

# Which library runs the CPU float32 products: "onednn", "mkl" (torch.mm), or "auto", the
# default: oneDNN where PyTorch runs AVX-512 code, MKL elsewhere. Measured at the paper's shape
# (products of one layer, forward / dx / dW, ms): AMD Zen 5 (AVX-512) MKL 25 / 25 / 23 vs oneDNN
# 12 / 10.6 / 15; AMD Zen 3 (AVX2) MKL 56 / 60 / 63 vs oneDNN 56 / 59 / 189, and for one review
# 4.6 vs 10.7 ms forward. Intel CPUs were not measured. Read on every call, so it can be changed
# at run time: every path returns the same strides, so graphs traced under one choice run under
# the other.
PRODUCTS_ENV = "QRNN_CPU_PRODUCTS"
PRODUCTS = ("auto", "onednn", "mkl")


@functools.cache
def _has_avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def cpu_products() -> str:
    """"onednn" or "mkl": the library chosen for CPU float32 products (`$QRNN_CPU_PRODUCTS`)."""
    choice = os.environ.get(PRODUCTS_ENV) or "auto"
    if choice not in PRODUCTS:
        raise ValueError(f"${PRODUCTS_ENV}={choice!r}: must be one of {', '.join(PRODUCTS)} "
                         "(or unset, which means auto)")
    if choice == "auto":
        return "onednn" if _has_avx512() else "mkl"
    return choice


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    """oneDNN serves CPU float32 (the dtype its kernels were measured for here) of at least
    `onednn_min_rows()` rows, where it is chosen (`cpu_products`) and the user has not switched
    it off (`torch.backends.mkldnn`)."""
    chosen = cpu_products() == "onednn"  # first, so that a bad setting is reported for any x
    T, B, I = x.shape
    return (chosen and x.device.type == "cpu" and x.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and T * B >= onednn_min_rows() and I > 0 and weight.numel() > 0)


def _unviewed(view: Tensor) -> Tensor:
    """The same sizes, strides and memory as `view`, as a tensor that is not a view: the op's
    result must not be one, or autograd forbids changing it in place (`gates += bias`)."""
    return view.new_empty(0).set_(view.untyped_storage(), view.storage_offset(), view.shape,
                                  view.stride())


def _conv_onednn(image: Tensor, kernel: Tensor, k: int) -> Tensor:
    """oneDNN's convolution, called directly: F.conv2d's own choice skips oneDNN for one small
    image (20,480 elements or fewer) and for 1x1 kernels on one thread. Padding k-1 above and below."""
    with torch.autocast("cpu", enabled=False):  # output dtype = input's, as the fake says
        return torch.mkldnn_convolution(image, kernel, None, [k - 1, 0], [1, 1], [1, 1], 1)


def _forward_onednn(x: Tensor, taps: Tensor) -> Tensor:
    """x (T, B, I) contiguous float32 on CPU, taps (k, C, I) -> (T, B, C): the same convolution
    as a 2-D one.

    Read without a copy, x is the channels-last image (N=1, H=T, W=B, C=I); the kernel is
    (k, 1) over time with k-1 rows of zero padding above, so output row t sees rows t-k+1..t.
    """
    k = taps.shape[0]
    image = x.unsqueeze(0).permute(0, 3, 1, 2)  # (1, I, T, B), channels-last strides
    # kernel position m (of k, oldest first) is tap k-1-m; built channels-last in one copy
    kernel = torch.stack([taps[k - 1 - m] for m in range(k)], dim=1)  # (C, k, I)
    kernel = kernel.unsqueeze(2).permute(0, 3, 1, 2)  # (C, I, k, 1), channels-last strides
    out = _conv_onednn(image, kernel, k)  # (1, C, T+k-1, B); the last k-1 rows see padding
    return _unviewed(out[:, :, :x.shape[0]].permute(0, 2, 3, 1)[0])  # (T, B, C), contiguous


def _grad_input_onednn(dgates: Tensor, weight: Tensor, window: int, I: int) -> Tensor:
    """dgates (T, B, C) contiguous -> dx (T, B, I), dx_t = sum_j W_j^T dgates_{t+j}: the
    transposed convolution is itself a convolution, looking k-1 steps ahead instead of back,
    so it runs as oneDNN's forward convolution too (its backward-data primitive was slower)."""
    k, C = window, weight.shape[0] // window
    image = dgates.unsqueeze(0).permute(0, 3, 1, 2)  # (1, C, T, B), channels-last strides
    kernel = weight.view(k, C, I).permute(2, 1, 0).unsqueeze(-1)  # (I, C, k, 1), [m] = W_m^T
    out = _conv_onednn(image, kernel.contiguous(memory_format=torch.channels_last), k)
    return out[:, :, k - 1:].permute(0, 2, 3, 1)[0]  # (T, B, I), contiguous strides: row k-1+t


def _grad_weight_onednn(g: Tensor, x: Tensor) -> Tensor:
    """g (N, C), x (N, I) contiguous float32 -> g^T x (C, I): the weight gradient of a 1x1
    convolution over the N rows, through oneDNN's backward-weights primitive on channels-last
    views of the same memory (no copies). Measured as fast as oneDNN's inner-product weight
    gradient, which takes oneDNN tensors (two copies). PyTorch picks the primitive: for a small
    x (20,480 elements or fewer) or on one thread it is its own im2col + sgemm, the products'
    speed before oneDNN."""
    (N, C), I = g.shape, x.shape[1]
    image = x.view(1, N, 1, I).permute(0, 3, 1, 2)  # (1, I, N, 1) channels-last
    grad_out = g.view(1, N, 1, C).permute(0, 3, 1, 2)  # (1, C, N, 1)
    like = x.new_empty(C, I, 1, 1).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", enabled=False):
        _, dweight, _ = torch.ops.aten.convolution_backward(
            grad_out, image, like, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [False, True, False])
    return dweight.view(C, I)


def conv_forward(x: Tensor, weight: Tensor, context: Tensor | None, window: int) -> Tensor:
    """The fast path (any device). x (T, B, I) -> gates (T, B, C) (contiguous strides); x is read
    in place where its rows are evenly spaced (`with_rows`), else copied."""
    T, B, I = x.shape
    taps = _taps(weight, window)
    k, C = taps.shape[:2]
    if _use_onednn(x, weight):
        out = _forward_onednn(x.contiguous(), taps)
    else:
        out = x.new_empty(T, B, C)
        rows, flat = out.view(T * B, C), x.reshape(T * B, I)  # views, rows evenly spaced
        torch.mm(flat, taps[0].t(), out=rows)
        for j in range(1, min(k, T)):  # steps t >= j read x_{t-j} from x itself
            rows[j * B:].addmm_(flat[:(T - j) * B], taps[j].t())
    if context is not None:  # steps t < j read x_{t-j} from the context
        for j in range(1, k):
            n = min(j, T)
            out[:n].view(n * B, C).addmm_(context[k - 1 - j:k - 1 - j + n].reshape(n * B, I),
                                          taps[j].t())
    return out


def _padded_rows(x: Tensor) -> Tensor:
    """An uninitialised (T, B, I) buffer for dx on the torch.mm path. On CPU its rows start every
    64 bytes (a view of a (T, B, I') buffer, I' = I rounded up): MKL's product into rows of 300
    float32 ran at 113 GFLOP/s against 168 for 304, as it splits cache lines."""
    T, B, I = x.shape
    per_line = max(1, 64 // x.element_size())
    padded = -(-I // per_line) * per_line
    if x.device.type != "cpu" or padded == I:
        return x.new_empty(T, B, I)
    return x.new_empty(T, B, padded)[:, :, :I]


def conv_backward(dgates: Tensor, x: Tensor, weight: Tensor, context: Tensor | None,
                  window: int, need_x: bool, need_weight: bool,
                  need_context: bool) -> tuple[Tensor, Tensor, Tensor]:
    """dgates (T, B, C) -> dx (T, B, I), dweight (k*C, I), dcontext (k-1, B, I); each is an
    empty tensor when not needed (custom ops cannot return None). dx has contiguous strides on
    every path (it may start at a storage offset)."""
    T, B, I = x.shape
    k, C = window, weight.shape[0] // window
    taps = weight.view(k, C, I)
    onednn = _use_onednn(x, weight)
    g = dgates.contiguous().view(T * B, C)
    flat = (x.contiguous() if onednn else x).reshape(T * B, I)  # a view where rows are even
    dx, dweight, dcontext = x.new_empty(0), x.new_empty(0), x.new_empty(0)  # distinct tensors
    if need_x and onednn:
        dx = _grad_input_onednn(g.view(T, B, C), weight, window, I)
    elif need_x:
        dx = _padded_rows(x)
        dx_rows = dx.view(T * B, I)  # (T*B, I) with the row stride of dx's buffer
        torch.mm(g, taps[0], out=dx_rows)
        for j in range(1, min(k, T)):
            dx_rows[:(T - j) * B].addmm_(g[j * B:], taps[j])
        # Contiguous whichever path ran: the fake implementation promises these strides, and a
        # graph compiled under one library choice may run under the other (one copy, 0.2-0.4 ms
        # at the paper's shape, against the ~30 ms the padded rows save MKL there).
        dx = dx.contiguous()
    if need_weight:
        dweight = weight.new_empty(k, C, I)
        for j in range(k):
            if T <= j:  # tap j reaches no step of x
                dweight[j].zero_()
            elif onednn:
                dweight[j] = _grad_weight_onednn(g[j * B:], flat[:(T - j) * B])
            else:
                torch.mm(g[j * B:].t(), flat[:(T - j) * B], out=dweight[j])
            if context is not None and j > 0:
                n = min(j, T)
                dweight[j].addmm_(g[:n * B].t(),
                                  context[k - 1 - j:k - 1 - j + n].reshape(n * B, I))
        dweight = dweight.view(k * C, I)
    if need_context and context is not None:
        dcontext = x.new_zeros(k - 1, B, I)
        for j in range(1, k):
            n = min(j, T)
            dcontext[k - 1 - j:k - 1 - j + n].view(n * B, I).addmm_(g[:n * B], taps[j])
    return dx, dweight, dcontext


def with_rows(x: Tensor) -> Tensor:
    """x (T, B, I) itself if its T*B rows are evenly spaced, unit-strided and do not overlap,
    as in the first columns of a larger buffer: every product then reads it in place as one
    (T*B, I) matrix (`reshape` is a view). Otherwise a contiguous copy."""
    T, B, I = x.shape
    stride = x.stride()
    if stride[2] == 1 and stride[1] >= I and stride[0] == B * stride[1]:
        return x
    return x.contiguous()


def causal_conv(x: Tensor, weight: Tensor, context: Tensor | None = None,
                window: int = 2) -> Tensor:
    """Same contract and values as `causal_conv_ref`, with no copies of x (see module docstring).

    Args:
        x, weight, context, window: as in `causal_conv_ref` (x and context may have any strides;
        x is made contiguous once, except without autograd where its rows are evenly
        spaced, see `with_rows`).
    Returns:
        (T, B, C) contiguous.
    """
    from qrnn.ops import library  # library imports this module

    device = x.device.type
    if torch.is_autocast_enabled(device) and x.is_floating_point():
        dtype = torch.get_autocast_dtype(device)  # as F.linear under autocast
        x, weight = x.to(dtype), weight.to(dtype)
        context = None if context is None else context.to(dtype)
    _check(x, weight, context, window)
    if library.transformed():  # torch.func: the reference (see `library.transformed`)
        return causal_conv_ref(x, weight, context, window)
    return library.run_causal_conv(x, weight, None if context is None else context.contiguous(),
                                   window)
