"""Benchmark: one QRNN layer vs `nn.LSTM` of the same width, forward + backward, float32.

Contenders, measured side by side:
    lstm          nn.LSTM(I, H), output (T, B, H)
    qrnn layer    `QRNNLayer` as the repo ships it: the convolution's k matrix products
                  (`causal_conv`) + `qrnn_conv_pool` (bias, activations and pooling in one op)
                  on the default CPU backend (numba)
    python loop   the same layer with the op's "python" backend (a time loop of torch ops with a
                  hand-written backward): the baseline the kernels replace
    other layer   the same layer with its CPU products on the library not chosen for this CPU
                  (`conv.cpu_products`: oneDNN where PyTorch runs AVX-512 code, else MKL's
                  sgemm through torch.mm), to show what the choice is worth here
    matmul floor  the layer's convolution alone (`causal_conv`: its matrix products, on the
                  chosen library), forward + backward
Contenders are timed interleaved (`common.compare`), so a slow spell hits all of them alike.
Each gets a random upstream gradient on its output (T, B, H) and computes the gradients of the
input and of every parameter (`torch.autograd.grad`, so nothing accumulates into `.grad`). Shapes: the paper's (B=24, T=400,
I=300, H=256), then a sweep over T at B=24 and over B at T=400.

    .venv/bin/python benchmarks/bench_layer.py [--quick]
    python benchmarks/bench_layer.py --device cuda [--tf32]

On CUDA the layer's pooling runs the Triton kernels and the LSTM is cuDNN's; there is no "other
layer" (the CPU products choice). Float32 products run in full float32 on both sides unless
`--tf32` lets both use TF32 (PyTorch's own defaults differ: cuDNN's LSTM may use TF32, torch.mm
may not, which would favour the LSTM); the header says which.
"""

from __future__ import annotations

import argparse
import os
from unittest import mock

import torch
from torch import nn

from common import allow_tf32, compare, device_sync, machine, table
from qrnn.modules.qrnn import QRNNLayer
from qrnn.ops import causal_conv, conv, qrnn_conv_pool


def other_products() -> str:
    """The CPU products library that `conv.cpu_products` did not choose."""
    return "mkl" if conv.cpu_products() == "onednn" else "onednn"


def measure(T: int, B: int, I: int, H: int, window: int = 2,
            device: str = "cpu") -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(T, B, I, device=device, requires_grad=True)
    grad = torch.randn(T, B, H, device=device)
    lstm = nn.LSTM(I, H, device=device)  # cuDNN's LSTM on CUDA, oneDNN's on CPU
    layer = QRNNLayer(I, H, window=window, pooling="fo", device=device)
    weight, bias = layer.weight, layer.bias

    def run_lstm():
        out, _ = lstm(x)
        torch.autograd.grad(out, [x, *lstm.parameters()], grad)

    def run_layer():
        h, _ = layer(x)
        torch.autograd.grad(h, [x, weight, bias], grad)

    def run_fused():  # the layer's own computation, on the python-loop backend
        gates = causal_conv(x, weight, None, window)  # (T, B, 3H)
        h, _ = qrnn_conv_pool(gates, bias, None, "fo", 1, backend="python")
        torch.autograd.grad(h, [x, weight, bias], grad)

    def run_other():
        with mock.patch.dict(os.environ, {conv.PRODUCTS_ENV: other_products()}):
            run_layer()

    gates_grad = torch.randn(T, B, weight.shape[0] // window, device=device)

    def run_matmul():
        gates = causal_conv(x, weight, None, window)
        torch.autograd.grad(gates, [x, weight], gates_grad)

    fns = {"lstm": run_lstm, "layer": run_layer, "fused": run_fused, "other": run_other,
           "matmul": run_matmul}
    if device != "cpu":
        del fns["other"]
    return compare(fns, sync=device_sync(device))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the paper's shape only")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (Triton kernels, cuDNN LSTM)")
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA: let float32 products use TF32 on both sides (default: neither)")
    args = parser.parse_args()
    allow_tf32(args.tf32)
    I, H = 300, 256
    shapes = [(400, 24)]
    if not args.quick:
        shapes += [(50, 24), (1000, 24), (2000, 24), (400, 1), (400, 8), (400, 128)]
    rows = []
    for T, B in shapes:
        m = measure(T, B, I, H, device=args.device)
        other = [m["other"] * 1e3, m["other"] / m["layer"]] if "other" in m else []
        rows.append([T, B, m["lstm"] * 1e3, m["layer"] * 1e3, m["fused"] * 1e3, m["matmul"] * 1e3,
                     m["lstm"] / m["layer"], m["layer"] / m["matmul"], m["fused"] / m["layer"],
                     *other])
    print(f"## One layer, forward + backward, I={I} H={H} window=2 fo-pooling, float32\n")
    print(machine() + "\n")
    headers = ["T", "B", "LSTM ms", "QRNN layer ms", "python-loop layer ms", "matmul ms",
               "LSTM / layer (speed-up)", "layer / matmul", "python loop / layer"]
    if args.device == "cpu":
        headers += [f"layer on {other_products()} ms", f"{other_products()} / layer"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
