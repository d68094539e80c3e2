"""qrnn.memory.keep_freed_memory: glibc keeps freed blocks of any size for reuse; opt-out honoured."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

from qrnn.memory import keep_freed_memory

LIBC = ctypes.util.find_library("c")
HAS_MALLINFO2 = bool(LIBC) and hasattr(ctypes.CDLL(LIBC), "mallinfo2")

# Frees one 64 MiB block and prints the free bytes malloc then holds in its heap (mallinfo2's
# fordblks, its 9th size_t field): about 64 MiB if the block stayed for reuse, ~0 if it went
# back to the OS (glibc's default for a first block that size is its own mmap). 64 MiB is above
# the 32 MiB that glibc's mmap threshold can be raised to: only disabling mmap keeps it.
PROBE = """
import ctypes, ctypes.util, sys
from qrnn.memory import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(64 * 2**20)
ctypes.memset(p, 1, 64 * 2**20)
libc.free(ctypes.c_void_p(p))
print(libc.mallinfo2().fordblks)
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and HAS_MALLINFO2),
                    reason="needs glibc >= 2.33 (mallinfo2)")
def test_freed_block_stays_in_the_heap_only_when_asked():
    # without the settings a user may have made from outside (the opt-out, glibc's variables)
    env = {k: v for k, v in os.environ.items()
           if k not in ("QRNN_KEEP_FREED_MEMORY", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_",
                        "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}

    def free_after(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                             check=True, env=env)
        return int(out.stdout)

    assert free_after("on") >= 64 * 2**20
    assert free_after("off") < 2**20


def test_opt_out(monkeypatch):
    monkeypatch.setenv("QRNN_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
