#!/usr/bin/env bash
# The GPU checks of issue 3 as one command, for a session that is lent a GPU machine (the `device`
# tool runs it in a copy of this repo; that machine has python3 with torch, triton, numba and
# pytest). Nothing here runs in CI. Usage, from the repo root:
#
#     bash benchmarks/gpu_checks.sh        # logs and tables go to $OUT (or ./gpu-out)
#
# 1. the GPU's name and driver; 2. every CUDA test (Triton kernels and the whole layer on CUDA
# against float64 references; on the GPU Triton compiles for real, no interpreter); 3. one layer
# vs cuDNN's LSTM, forward + backward, at the paper's shape and the T/B sweep (the target:
# >= 5x at B=24, T=400). About 5 minutes on an H200, most of it Triton's first compilations.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_ops.py -k cuda 2>&1 | tee "$OUT/tests-cuda.log"
(cd benchmarks && python3 bench_layer.py --device cuda) 2>&1 | tee "$OUT/bench-layer-cuda.md"
