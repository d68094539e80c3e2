"""One process-wide setting that makes repeated CPU training and inference steps cheaper.

Every step of a QRNN (or any PyTorch model) on CPU allocates and frees the same large
temporaries: gates, activations, their gradients, tens of MiB each. glibc's malloc serves such
blocks with fresh `mmap`s, or returns freed heap to the OS, so each step the kernel faults in and
zeroes every page again. `keep_freed_memory()` asks malloc to serve every block from its heap
(no `mmap`s) and not to hand heap memory back, so later steps reuse pages that are already
mapped. Measured on this project's 2-core machine (README, "Memory"):
a training step of the 4-layer classifier took 10,539 page faults without it for the QRNN and
134,322 for the LSTM twin (whose oneDNN workspace blocks are above 32 MiB, the largest size
glibc's mmap threshold can be raised to, so raising the threshold alone left the LSTM
paying for fresh pages while the QRNN did not); with it, about 600 each. The cost: the process
keeps its peak heap size until it exits.

It is the application's choice, not the library's: `import qrnn` never calls it. The `qrnn`
command and the benchmarks call it (opt out with `QRNN_KEEP_FREED_MEMORY=0`). The same effect
from outside the process: `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VAR = "QRNN_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every block from its heap and keep freed ones for reuse.

    This holds for the main thread's heap, where PyTorch's CPU work for the calling thread
    allocates. Threads with arenas of their own still get an mmap for a block their arena cannot
    hold (seen with glibc 2.36: 400 MiB in another thread), so nothing fails, it is only not kept.

    Returns True if the setting was applied; False (and changes nothing) when not on Linux with
    glibc, or when `$QRNN_KEEP_FREED_MEMORY` is "0".
    """
    if os.environ.get(ENV_VAR, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
