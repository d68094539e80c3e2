"""Benchmark: the pooling recurrence alone (`qrnn_pool`, fo-pooling, and `forget_mult`) per
backend, forward and forward+backward, against the machine's memory floor. Every contender
(backend x forward / forward+backward) is timed interleaved with the others (`common.compare`).

The floor is the bytes the op must move divided by the copy bandwidth of a large tensor:
    qrnn_pool fwd: read gates (3 THB) + write h, c (2 THB) floats;
    fwd+bwd adds: read gates/activations (3), c, dh, dc (3) + write dgates (3);
    forget_mult fwd: read f, z + write c (3 THB); fwd+bwd adds read f, z, c, dc + write df, dz (6).

    .venv/bin/python benchmarks/bench_recurrence.py [--T 400 --B 24 --H 256]
    python benchmarks/bench_recurrence.py --device cuda --chunks 1,4,16,32 --blocks 16,64,128

On CUDA the backends are "python" and "triton"; `--chunks` also times the Triton kernels at
other numbers of steps per chunk (`_triton_gpu.CHUNK`; 1 walks time step by step), `--blocks` at
other numbers of channels per program (`_triton_gpu.BLOCK`, one warp per 32), side by side.
"""

from __future__ import annotations

import argparse

import torch

from common import compare, copy_bandwidth, device_sync, machine, table
from qrnn.ops import forget_mult, qrnn_pool


def contenders(backends: list[str], chunks: list[int],
               blocks: list[int]) -> list[tuple[str, str, int | None, int | None]]:
    """(label, backend, Triton float32 chunk, Triton block; None for the module's own)."""
    out = []
    for backend in backends:
        out.append((backend, backend, None, None))
        if backend == "triton":
            out += [(f"triton, chunk {n}", "triton", n, None) for n in chunks]
            out += [(f"triton, block {n}", "triton", None, n) for n in blocks]
    return out


def triton_setting(backend: str, chunk: int | None, block: int | None):
    """A function that sets the Triton kernels' float32 chunk and block (one warp per 32
    channels) before a contender runs: plain assignments, so they cost next to nothing inside
    the timed region; None means the module's own."""
    if backend != "triton":
        return lambda: None
    from qrnn.ops import _triton_gpu as kernels

    chunk = kernels.CHUNK[torch.float32] if chunk is None else chunk
    block = kernels.BLOCK if block is None else block
    launch = {**kernels.LAUNCH, "num_warps": max(1, block // 32)}

    def apply():
        kernels.CHUNK[torch.float32], kernels.BLOCK, kernels.LAUNCH = chunk, block, launch

    return apply


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=400)
    parser.add_argument("--B", type=int, default=24)
    parser.add_argument("--H", type=int, default=256)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda")
    parser.add_argument("--backends", default=None,
                        help="comma-separated; default python,numba on CPU, python,triton on CUDA")
    parser.add_argument("--chunks", default="",
                        help="Triton: comma-separated float32 steps per chunk to time as well")
    parser.add_argument("--blocks", default="",
                        help="Triton: comma-separated channels per program to time as well")
    args = parser.parse_args()
    T, B, H, device = args.T, args.B, args.H, args.device
    cuda = torch.device(device).type == "cuda"
    backends = (args.backends or ("python,triton" if cuda else "python,numba")).split(",")
    chunks = [int(n) for n in args.chunks.split(",") if n]
    blocks = [int(n) for n in args.blocks.split(",") if n]
    everyone = contenders(backends, chunks, blocks)
    # made before any contender runs: each captures the module's own chunk and block
    settings = {label: triton_setting(backend, chunk, block)
                for label, backend, chunk, block in everyone}
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
        for label, backend, _, _ in everyone:
            setting = settings[label]
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

            def forward(run=run, setting=setting):
                setting()
                with torch.no_grad():
                    run(False)

            def both(run=run, setting=setting):
                setting()
                run(True)

            fns[f"{label} fwd"], fns[f"{label} both"] = forward, both
        # interleaved, see common.compare
        times = compare(fns, repeat=9, warmup=2, budget_s=60, sync=device_sync(device))
        for label, *_ in everyone:
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
