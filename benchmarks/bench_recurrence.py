"""Benchmark: the pooling recurrence alone (`qrnn_pool`, fo-pooling, and `forget_mult`) per
backend, forward and forward+backward, against the machine's memory floor. Every contender
(backend x forward / forward+backward) is timed interleaved with the others (`common.compare`).

The floor is the bytes the op must move divided by the copy bandwidth of a large tensor:
    qrnn_pool fwd: read gates (3 THB) + write h, c (2 THB) floats;
    fwd+bwd adds: read gates/activations (3), c, dh, dc (3) + write dgates (3);
    forget_mult fwd: read f, z + write c (3 THB); fwd+bwd adds read f, z, c, dc + write df, dz (6).

    .venv/bin/python benchmarks/bench_recurrence.py [--T 400 --B 24 --H 256]
    python benchmarks/bench_recurrence.py --device cuda --chunks 1,4,8,16,32

On CUDA the backends are "python" and "triton", and `--chunks` times the Triton kernels at each
number of steps per chunk (`_triton_gpu.CHUNK`; 1 walks time step by step), side by side.
"""

from __future__ import annotations

import argparse
import contextlib
from unittest import mock

import torch

from common import compare, copy_bandwidth, device_sync, machine, table
from qrnn.ops import forget_mult, qrnn_pool


def contenders(backends: list[str], chunks: list[int]) -> list[tuple[str, str, int | None]]:
    """(label, backend, Triton chunk or None for the module's own) for each contender."""
    out = []
    for backend in backends:
        if backend == "triton" and chunks:
            out += [(f"triton, chunk {n}", "triton", n) for n in chunks]
        else:
            out.append((backend, backend, None))
    return out


def chunk_setting(chunk: int | None):
    """A context in which the Triton kernels walk `chunk` float32 steps per chunk."""
    if chunk is None:
        return contextlib.nullcontext()
    from qrnn.ops import _triton_gpu

    return mock.patch.dict(_triton_gpu.CHUNK, {torch.float32: chunk})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=400)
    parser.add_argument("--B", type=int, default=24)
    parser.add_argument("--H", type=int, default=256)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda")
    parser.add_argument("--backends", default=None,
                        help="comma-separated (default: python,numba on CPU, python,triton on CUDA)")
    parser.add_argument("--chunks", default="",
                        help="Triton only: comma-separated steps per chunk to time side by side")
    args = parser.parse_args()
    T, B, H, device = args.T, args.B, args.H, args.device
    cuda = torch.device(device).type == "cuda"
    backends = (args.backends or ("python,triton" if cuda else "python,numba")).split(",")
    chunks = [int(n) for n in args.chunks.split(",") if n]
    torch.manual_seed(0)
    bandwidth = copy_bandwidth(device=device)
    unit = T * B * H * 4  # bytes of one (T, B, H) float32 tensor
    gates = torch.randn(T, B, 3 * H, device=device, requires_grad=True)
    f = torch.rand(T, B, H, device=device, requires_grad=True)
    z = torch.randn(T, B, H, device=device, requires_grad=True)
    gh, gc = torch.randn(T, B, H, device=device), torch.randn(T, B, H, device=device)

    rows = []
    for op, fwd_units, bwd_units in (("qrnn_pool fo", 5, 9), ("forget_mult", 3, 6)):
        floor_fwd = fwd_units * unit / bandwidth
        floor_both = (fwd_units + bwd_units) * unit / bandwidth
        fns = {}
        for label, backend, chunk in contenders(backends, chunks):
            if op == "qrnn_pool fo":
                def run(grad, backend=backend):
                    h, c = qrnn_pool(gates, None, "fo", backend=backend)
                    if grad:  # autograd.grad: no accumulation into .grad inside the timing
                        torch.autograd.grad([h, c], [gates], [gh, gc])
            else:
                def run(grad, backend=backend):
                    c, last = forget_mult(f, z, None, backend=backend)
                    if grad:
                        torch.autograd.grad([c, last], [f, z], [gc, gh[-1]])

            def forward(run=run, chunk=chunk):
                with torch.no_grad(), chunk_setting(chunk):
                    run(False)

            def both(run=run, chunk=chunk):
                with chunk_setting(chunk):
                    run(True)

            fns[f"{label} fwd"], fns[f"{label} both"] = forward, both
        # interleaved, see common.compare
        times = compare(fns, repeat=9, warmup=2, budget_s=60, sync=device_sync(device))
        for label, _, _ in contenders(backends, chunks):
            t_fwd, t_both = times[f"{label} fwd"], times[f"{label} both"]
            rows.append([op, label, t_fwd * 1e3, t_fwd / floor_fwd,
                         t_both * 1e3, t_both / floor_both])
        rows.append([op, "memory floor", floor_fwd * 1e3, 1.0, floor_both * 1e3, 1.0])
    print(f"## Recurrence alone, T={T} B={B} H={H}, float32\n")
    print(machine() + f", copy bandwidth {bandwidth / 1e9:.1f} GB/s\n")
    print(table(["op", "backend", "fwd ms", "fwd / floor", "fwd+bwd ms", "fwd+bwd / floor"],
                rows))


if __name__ == "__main__":
    main()
