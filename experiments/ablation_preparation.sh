#!/usr/bin/env bash
# Effect of the preparation choices on accuracy (README, "Results"): words without a GloVe vector
# (--oov random | unk) and casing (--case auto = lower for the uncased 6B vectors | keep).
# A reduced setting so that all runs fit in well under an hour on 2 cores: 2,500 reviews per label
# (500 of them held out), 2 QRNN layers of 128 units, 2 epochs; test accuracy on the first 2,500
# test reviews per label. Usage: experiments/ablation_preparation.sh DATA_DIR OUT_DIR [SEEDS...]
set -euo pipefail
data=${1:?data folder}; out=${2:?output folder}; shift 2
seeds=${*:-0}
qrnn=${QRNN_BIN:-.venv/bin/qrnn}
common=(--data "$data" --limit 2500 --valid-size 500 --epochs 2 --layers 2 --hidden-size 128)
for seed in $seeds; do
  for variant in "random auto" "unk auto" "random keep"; do
    set -- $variant
    run="$out/oov-$1-case-$2-seed$seed"
    "$qrnn" train "${common[@]}" --oov "$1" --case "$2" --seed "$seed" --out "$run" > "$run.log" 2>&1
    "$qrnn" evaluate "$run/best" --data "$data" --limit 2500 --json > "$run.test.json"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], sys.argv[4], r['accuracy'], r['n'])" \
      "$run.test.json" "$1" "$2" "$seed" | tee -a "$out/summary.txt"
  done
done
