#!/usr/bin/env bash
# Whole-data baseline for RESULTS.md: `fedsim train` on each data set with
# several seeds, then mean ± std of the test accuracy.
# Usage: scripts/results/whole_data.sh [datasets] [seeds]
#   e.g. scripts/results/whole_data.sh "mnist fmnist" "1 2 3"
# Extra flags for fedsim train can be passed in TRAIN_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/../.."
datasets=${1:-"mnist fmnist"}
seeds=${2:-"1 2 3"}
out=${RESULTS_OUT:-results/whole_data}
mkdir -p "$out"
go build -o bin/fedsim ./cmd/fedsim
for d in $datasets; do
  for s in $seeds; do
    echo "== $d seed $s" >&2
    bin/fedsim train --dataset "$d" --seed "$s" --json --quiet ${TRAIN_FLAGS:-} \
      --out "$out/$d-seed$s" | tee "$out/$d-seed$s.jsonl" | tail -1 >&2
  done
done
python3 scripts/results/summarize.py "$out"/*.jsonl
