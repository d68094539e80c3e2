"""Benchmark: the pooling recurrence alone (`qrnn_pool`, fo-pooling, and `forget_mult`) per
backend, forward and forward+backward, against the machine's memory floor. Every contender
(backend x forward / forward+backward) is timed interleaved with the others (`common.compare`).

The floor is the bytes the op must move divided by the copy bandwidth of a large tensor:
    qrnn_pool fwd: read gates (3 THB) + write h, c (2 THB) floats;
    fwd+bwd adds: read gates/activations (3), c, dh, dc (3) + write dgates (3);
    forget_mult fwd: read f, z + write c (3 THB); fwd+bwd adds read f, z, c, dc + write df, dz (6).

    .venv/bin/python benchmarks/bench_recurrence.py [--T 400 --B 24 --H 256]
"""

from __future__ import annotations

import argparse

import torch

from common import compare, copy_bandwidth, machine, table
from qrnn.ops import forget_mult, qrnn_pool


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=400)
    parser.add_argument("--B", type=int, default=24)
    parser.add_argument("--H", type=int, default=256)
    parser.add_argument("--backends", default="python,numba")
    args = parser.parse_args()
    T, B, H = args.T, args.B, args.H
    backends = args.backends.split(",")
    torch.manual_seed(0)
    bandwidth = copy_bandwidth()
    unit = T * B * H * 4  # bytes of one (T, B, H) float32 tensor
    gates = torch.randn(T, B, 3 * H, requires_grad=True)
    f = torch.rand(T, B, H, requires_grad=True)
    z = torch.randn(T, B, H, requires_grad=True)
    gh, gc = torch.randn(T, B, H), torch.randn(T, B, H)

    rows = []
    for op, fwd_units, bwd_units in (("qrnn_pool fo", 5, 9), ("forget_mult", 3, 6)):
        floor_fwd = fwd_units * unit / bandwidth
        floor_both = (fwd_units + bwd_units) * unit / bandwidth
        fns = {}
        for backend in backends:
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

            def forward(run=run):
                with torch.no_grad():
                    run(False)

            fns[f"{backend} fwd"] = forward
            fns[f"{backend} both"] = lambda run=run: run(True)
        times = compare(fns, repeat=9, warmup=2, budget_s=60)  # interleaved, see common.compare
        for backend in backends:
            t_fwd, t_both = times[f"{backend} fwd"], times[f"{backend} both"]
            rows.append([op, backend, t_fwd * 1e3, t_fwd / floor_fwd,
                         t_both * 1e3, t_both / floor_both])
        rows.append([op, "memory floor", floor_fwd * 1e3, 1.0, floor_both * 1e3, 1.0])
    print(f"## Recurrence alone, T={T} B={B} H={H}, float32\n")
    print(machine() + f", copy bandwidth {bandwidth / 1e9:.1f} GB/s\n")
    print(table(["op", "backend", "fwd ms", "fwd / floor", "fwd+bwd ms", "fwd+bwd / floor"],
                rows))


if __name__ == "__main__":
    main()
