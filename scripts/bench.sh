#!/usr/bin/env bash
# Runs the engine benchmark in fedsim and in PyTorch on this machine, one
# after the other, and prints a Markdown table of both with ratios.
# Usage: scripts/bench.sh [extra fedsim bench flags]   (from the repo root)
# Needs Debian's python3-torch for the PyTorch side (/usr/bin/python3).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-bench}
mkdir -p "$out"
go build -o bin/fedsim ./cmd/fedsim
echo "fedsim bench…" >&2
bin/fedsim bench --json "$@" | tee "$out/fedsim.jsonl" >&2
echo "PyTorch bench…" >&2
/usr/bin/python3 scripts/torch/bench.py --threads 2 --isolate | tee "$out/pytorch.jsonl" >&2
python3 scripts/bench_table.py "$out/fedsim.jsonl" "$out/pytorch.jsonl"
