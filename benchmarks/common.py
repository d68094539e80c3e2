"""Shared helpers for the benchmarks: timing, the machine description, markdown tables.

Every benchmark measures all its contenders side by side in one process and prints a markdown
table of times and ratios, headed by the machine (platform, CPU, torch threads, commit).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

from qrnn.memory import keep_freed_memory
from qrnn.ops import conv

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# As the `qrnn` command does, for every contender alike (opt out: QRNN_KEEP_FREED_MEMORY=0).
KEEP_FREED_MEMORY = keep_freed_memory()


def machine() -> str:
    """One markdown line describing where the numbers come from."""
    malloc = "keeps freed memory" if KEEP_FREED_MEMORY else "default"
    gpu = (f", GPU: {torch.cuda.get_device_name()} ({tf32_note()}, triton {triton_version()})"
           if torch.cuda.is_available() else "")
    return (f"machine: {platform.platform()}, CPU: {cpu_name()} ({os.cpu_count()} logical){gpu}, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"commit {commit()}, load average at start {os.getloadavg()[0]:.2f}, "
            f"malloc: {malloc}, CPU code: {torch.backends.cpu.get_cpu_capability()}, "
            f"CPU products: {products()}")


def products() -> str:
    """The CPU float32 products library, and from how many rows oneDNN takes over."""
    chosen = conv.cpu_products()
    return f"onednn from {conv.onednn_min_rows()} rows, else mkl" if chosen == "onednn" else chosen


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 2,
           budget_s: float = 20.0) -> float:
    """Median wall-clock seconds of fn() over `repeat` runs after `warmup` runs (fewer runs if
    one run is long, so that each contender stays within about `budget_s`)."""
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
    repeat = max(1, min(repeat, int(budget_s / max(first, 1e-9))))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(fns: dict[str, Callable[[], object]], repeat: int = 7, warmup: int = 2,
            budget_s: float = 60.0, sync: Callable[[], object] | None = None,
            rewarm: bool = False) -> dict[str, float]:
    """Median wall-clock seconds of each fn, timed *interleaved*: every round runs each
    contender once, in turn, so a slow spell of a shared machine hits all of them alike (timing
    them one after another let such spells land on one contender). Fewer rounds if one round
    is long (at least 3), so that the whole comparison stays within about `budget_s`.
    `sync` (e.g. torch.cuda.synchronize) runs before each clock reading, so that asynchronous
    device work is counted where it was launched. `rewarm`: each contender also runs once,
    untimed, right before each timed run, so that it is timed with its own weights in the
    caches, as when one model serves request after request (for one review, the contender run
    right after another model was measured ~5% slower than when run twice in a row)."""
    sync = sync or (lambda: None)
    for _ in range(max(1, warmup)):  # at least one round, which also sizes the rest
        sync()
        start = time.perf_counter()
        for fn in fns.values():
            fn()
        sync()
        round_s = time.perf_counter() - start
    repeat = max(3, min(repeat, int(budget_s / max(round_s, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if rewarm:
                fn()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def device_sync(device: str) -> Callable[[], object] | None:
    """What `compare` must call before reading the clock on `device` (None on CPU)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else None


def copy_bandwidth(mib: int = 512, device: str = "cpu") -> float:
    """Bytes per second moved (read + write) by copying a large float32 tensor on `device`."""
    src = torch.randn(mib * 2**18, device=device)
    dst = torch.empty_like(src)
    sync = device_sync(device) or (lambda: None)

    def copy():
        dst.copy_(src)
        sync()

    seconds = timeit(copy, repeat=7)
    return 2 * src.numel() * 4 / seconds


def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed"
    return triton.__version__


def allow_tf32(allowed: bool) -> None:
    """Whether float32 products on CUDA may run as TF32, for cuBLAS (torch.mm: the QRNN's) and
    cuDNN (the LSTM's) alike. PyTorch's defaults differ (cuDNN yes, cuBLAS no), which would time
    the LSTM at a lower precision than the QRNN; the CUDA benchmarks set both, default off."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed


def tf32_note() -> str:
    """On CUDA, whether float32 products may run as TF32 (cuBLAS: torch.mm; cuDNN: the LSTM)."""
    return (f"TF32 allowed: torch.mm {torch.backends.cuda.matmul.allow_tf32}, "
            f"cuDNN {torch.backends.cudnn.allow_tf32}")


def table(headers: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
