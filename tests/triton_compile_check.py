"""Compile every Triton kernel of `qrnn.ops._triton_gpu` for NVIDIA GPUs, on a machine without one.

Triton compiles ahead of time for a named target (`GPUTarget`) with no GPU and no driver: the
Python source goes through its IR to PTX and, with the `ptxas` its wheel ships, to a cubin. That
catches what the interpreter cannot (a construct that only interprets, a type the compiler
rejects) and shows each kernel's registers and spills (`cuobjdump -res-usage`). Run by
`tests/test_ops.py` in a subprocess, since that file runs Triton in interpreter mode; prints one
JSON object per compiled variant:

    python tests/triton_compile_check.py [--chunk N] [sm_90 sm_80 ...]

`--chunk N` sets N steps per chunk in every dtype instead of `kernels.CHUNK` ("ifo": N / 2,
as `kernels.chunk` halves it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # before triton loads: real kernels, not interpreted ones

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from qrnn.ops import _triton_gpu as kernels  # noqa: E402

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def variants():
    """(kernel name, signature, constexprs) for every pooling and dtype, at the paper's window
    (2) and the largest tested (3: the most loads and stores), with every optional input present
    (the most live values)."""
    for dtype, load in (("fp32", "fp32"), ("fp64", "fp64"), ("fp32", "bf16")):
        compute = torch.float64 if dtype == "fp64" else torch.float32
        for G in (2, 3, 4):
            chunk = {"CHUNK": kernels.chunk(compute, G), "BLOCK": kernels.BLOCK}
            for K in (2, 3):
                sig = {"y_ptr": "*" + load, "bias_ptr": "*" + load, "c0_ptr": "*" + load,
                       "act_ptr": "*" + dtype, "h_ptr": "*" + dtype, "c_ptr": "*" + dtype,
                       "T": "i32", "B": "i32", "H": "i32"}
                for save in (True, False):
                    yield ("_pool_fwd_kernel", sig, dict(G=G, K=K, HAS_BIAS=True, HAS_C0=True,
                                                         SAVE=save, **chunk))
                sig = {"act_ptr": "*" + dtype, "c_ptr": "*" + load, "c0_ptr": "*" + load,
                       "dh_ptr": "*" + load, "dc_ptr": "*" + load, "dy_ptr": "*" + dtype,
                       "dbias_ptr": "*" + dtype, "dc0_ptr": "*" + dtype,
                       "T": "i32", "B": "i32", "H": "i32"}
                yield ("_pool_bwd_kernel", sig, dict(G=G, K=K, HAS_C0=True, HAS_DH=True,
                                                     HAS_DC=True, **chunk))
        chunk = {"CHUNK": kernels.chunk(compute), "BLOCK": kernels.BLOCK}
        sig = {"f_ptr": "*" + load, "z_ptr": "*" + load, "c0_ptr": "*" + load,
               "c_ptr": "*" + dtype, "T": "i32", "BH": "i32"}
        yield "_fm_fwd_kernel", sig, dict(HAS_C0=True, **chunk)
        sig = {"f_ptr": "*" + load, "z_ptr": "*" + load, "c0_ptr": "*" + load,
               "c_ptr": "*" + dtype, "dc_ptr": "*" + dtype, "df_ptr": "*" + dtype,
               "dz_ptr": "*" + dtype, "dc0_ptr": "*" + dtype, "T": "i32", "BH": "i32"}
        yield "_fm_bwd_kernel", sig, dict(HAS_C0=True, **chunk)


def resources(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL (spills) of the cubin's kernel, read by cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        out = subprocess.run([str(CUOBJDUMP), "-res-usage", fh.name], capture_output=True,
                             text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out)}


def main(archs: list[str]) -> None:
    for arch in archs:
        target = GPUTarget("cuda", int(arch.removeprefix("sm_")), 32)
        for name, sig, constexprs in variants():
            signature = {**sig, **{k: "constexpr" for k in constexprs}}
            src = ASTSource(fn=getattr(kernels, name), signature=signature, constexprs=constexprs)
            compiled = triton.compile(src, target=target, options=dict(kernels.LAUNCH))
            print(json.dumps({"arch": arch, "kernel": name, "types": sig, "constexprs": constexprs,
                              **resources(compiled.asm["cubin"])}), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--chunk"]:
        kernels.CHUNK, args = dict.fromkeys(kernels.CHUNK, int(args[1])), args[2:]
    main(args or ["sm_90"])
