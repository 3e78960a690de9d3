#!/usr/bin/env bash
# The coreset baselines of issue 4 (survey Table 1's random and herding
# rows, and k-center greedy) on real data, under the evaluation protocol
# the distillation methods are scored by (fresh ConvNets trained on the
# selected images with DSA augmentation, 1000 epochs on MNIST; `fedsim eval
# --help` gives the recipe).
#
# Usage: scripts/results/baselines.sh [datasets] [ipcs] [seeds]
#   defaults: "mnist" "1 10" "1 2 3"; methods: METHODS (random herding kcenter)
#   e.g.     scripts/results/baselines.sh "mnist fmnist" "1 10 50" "1 2 3"
# Jobs run JOBS (2) at a time, one thread each. EVAL_RUNS (3) models are
# trained per selected set, for EVAL_EPOCHS epochs (default: fedsim's for
# the data set, 1000 on MNIST and 300 elsewhere; give 1000 to score them as
# DSA, DM and MTT score their sets off MNIST); each seed also draws its own
# selection (random) or its own feature network (herding, k-center: a
# ConvNet trained one epoch on the training set).
# Output: RESULTS_OUT (default results/baselines)/<dataset>-<method>-ipc<K>-s<S>/
# (report.json, grid.png, the log) and a Markdown table of every set in
# RESULTS_OUT, earlier runs' too, on stdout (also in table.md there).
# Cost on 2 cores, MNIST, three seeds: about 35 minutes for IPC 1 and 10.
set -euo pipefail
cd "$(dirname "$0")/../.."
datasets=${1:-mnist}
ipcs=${2:-"1 10"}
seeds=${3:-"1 2 3"}
methods=${METHODS:-"random herding kcenter"}
export out=${RESULTS_OUT:-results/baselines}
export runs=${EVAL_RUNS:-3}
export epochs=${EVAL_EPOCHS:-0}
go build -o bin/fedsim ./cmd/fedsim
mkdir -p "$out"

jobs=()
for d in $datasets; do
	for k in $ipcs; do
		for m in $methods; do
			for s in $seeds; do
				jobs+=("$d $m $k $s")
			done
		done
	done
done

printf '%s\n' "${jobs[@]}" | xargs -P "${JOBS:-2}" -L 1 bash -c '
	d=$0 m=$1 k=$2 s=$3
	dir="$out/$d-$m-ipc$k-s$s"
	mkdir -p "$dir"
	if GOMAXPROCS=1 bin/fedsim distill --dataset "$d" --method "$m" --ipc "$k" --eval-runs "$runs" \
		--eval-epochs "$epochs" --seed "$s" --quiet --out "$dir" >"$dir/distill.log" 2>&1; then
		echo "baselines: $d $m IPC $k seed $s: $(tail -n 2 "$dir/distill.log" | head -n 1)" >&2
	else
		echo "baselines: $d $m IPC $k seed $s failed (log: $dir/distill.log)" >&2
		exit 255
	fi'

# The table covers every set in the output folder, this run's and earlier
# ones' (another data set or IPC run separately), so a run adds its rows
# to table.md instead of replacing the others.
shopt -s nullglob
reports=("$out"/*-ipc*-s*/report.json)
python3 scripts/results/distill_summary.py "${reports[@]}" | tee "$out/table.md"
