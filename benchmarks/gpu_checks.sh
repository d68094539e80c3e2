#!/usr/bin/env bash
# The GPU checks of issue 3 as one command, for a session that is lent a GPU machine (the `device`
# tool runs it in a copy of this repo; that machine has python3 with torch, triton, numba and
# pytest, and nothing to install). Nothing here runs in CI. Usage, from the repo root:
#
#     bash benchmarks/gpu_checks.sh        # results go to $OUT (or ./gpu-out): 4 files
#
#   gpu.txt        the GPU, driver, versions, and each step's exit status and seconds
#   compile.jsonl  registers and spills of every Triton kernel as compiled by this machine's triton
#   tests.log      every CUDA test: the Triton kernels (compiled for the card, no interpreter) and
#                  the whole layer on CUDA against float64 references on CPU
#   bench.md       the tables: the recurrence alone at several chunk sizes (1 = step by step)
#                  and channels per program; one layer vs cuDNN's LSTM at the paper's shape
#                  and the T/B sweep (the target: >= 5x at B=24, T=400), in float32
#                  and with TF32 on both sides; one review; a training step of the classifier
#
# Each step has a time limit, so that the whole script ends inside the device tool's 10 minutes
# (at most 550 s of limits) and a hung step costs only its own; it has never run on a GPU yet.
set -uo pipefail
OUT=$(mkdir -p "${OUT:-gpu-out}" && cd "${OUT:-gpu-out}" && pwd) || exit 1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_INTERPRET=0

step() {  # step NAME LIMIT_S LOG_FILE COMMAND...: run, append its output to LOG_FILE, record status
    local name=$1 limit=$2 log=$3 start=$SECONDS
    shift 3
    echo "== $name" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "$name: exit ${PIPESTATUS[0]} (124 = over its ${limit} s), $((SECONDS - start)) s" \
        | tee -a "$OUT/gpu.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 \
    | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
'cuda', torch.version.cuda, torch.cuda.is_available())" 2>&1 | tee -a "$OUT/gpu.txt"

step compile 60 "$OUT/compile.log" python3 tests/triton_compile_check.py sm_90
grep '^{' "$OUT/compile.log" > "$OUT/compile.jsonl"
grep -v '^{' "$OUT/compile.log" >> "$OUT/gpu.txt"  # warnings, or why it failed
rm -f "$OUT/compile.log"
# -v: each test's verdict as it ends, so a run cut short by its limit still says which passed
# (Triton compiles every kernel variant on first use there: about a second each)
step tests 230 "$OUT/tests.log" python3 -m pytest -v --tb=short -rfE --durations=15 \
    -p no:cacheprovider tests/test_ops.py -k cuda
cd benchmarks || exit 1
bench="$OUT/bench.md"
step recurrence 60 "$bench" python3 bench_recurrence.py --device cuda --chunks 1,2,4,16,32 \
    --blocks 16,64,128
step layer 80 "$bench" python3 bench_layer.py --device cuda
step layer-tf32 40 "$bench" python3 bench_layer.py --device cuda --tf32 --quick
step inference 40 "$bench" python3 bench_inference.py --device cuda
step train-step 40 "$bench" python3 bench_train_step.py --device cuda
