#!/usr/bin/env bash
# Fidelity against the reference loops (issue 4): the same method, IPC,
# hyper-parameters and iteration budget distilled twice per seed, once by
# `fedsim distill` and once by scripts/torch/distill_bench.py (our PyTorch
# version of the authors' loops, DC main.py / main_DM.py), and both final
# sets scored by the same evaluator (`fedsim eval`: the DC/DSA/DM protocol,
# ConvNet, EVAL_RUNS models of 1000 epochs on MNIST). Any gap is then the
# distillation's, not the evaluation's.
#
# Usage: scripts/results/fidelity.sh [rows] [seeds]
#   rows:  method:ipc:iterations, any of dc, dsa, dm (default "dm:10:200")
#   seeds: distillation seeds (default "1 2 3"); evaluation seed 1 for all
#   e.g.   scripts/results/fidelity.sh "dm:10:200 dc:1:100" "1 2 3"
# The fedsim and PyTorch runs go in two lanes side by side, one thread each
# (the timing is not what is measured here). Output: RESULTS_OUT (default
# results/fidelity)/<method>-ipc<K>-<iters>/{fedsim,pytorch}-s<S>/ with each
# set, its evaluation (eval.json) and the logs, and a Markdown table on
# stdout (also in results/fidelity/table.md) made by fidelity_table.py over
# every seed folder of each row, earlier runs' included: each side's mean ±
# std, the difference of the means and the paired (same seed) differences
# with a 95 % interval. `scripts/results/fidelity_table.py DIR` remakes it.
#
# Cost on 2 cores, per seed of dm:10:200: fedsim about 7 min, PyTorch about
# 23 min (6.5 s per iteration; one thread each), plus 10-11 min per
# evaluation of three models at one thread (2026-11-28).
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-"dm:10:200"}
seeds=${2:-"1 2 3"}
out=${RESULTS_OUT:-results/fidelity}
runs=${EVAL_RUNS:-3}
PY=${TORCH_PYTHON:-/usr/bin/python3}
go build -o bin/fedsim ./cmd/fedsim

evaluate() { # set.npz out.json log
	GOMAXPROCS=1 bin/fedsim eval --synthetic "$1" --dataset mnist --eval-runs "$runs" --seed 1 --json --quiet >"$2" 2>"$3"
}

fedsim_lane() { # method ipc iters dir
	for s in $seeds; do
		d="$4/fedsim-s$s"
		mkdir -p "$d"
		rm -f "$d/checkpoint.npz"
		GOMAXPROCS=1 bin/fedsim distill --dataset mnist --method "$1" --ipc "$2" --iters "$3" \
			--eval-runs 0 --seed "$s" --quiet --out "$d" >"$d/distill.log" 2>&1
		rm -f "$d/checkpoint.npz"
		evaluate "$d/synthetic.npz" "$d/eval.json" "$d/eval.log"
		echo "fidelity: fedsim $1 IPC $2 seed $s done" >&2
	done
}

pytorch_lane() { # method ipc iters dir
	for s in $seeds; do
		d="$4/pytorch-s$s"
		mkdir -p "$d"
		OMP_NUM_THREADS=1 "$PY" scripts/torch/distill_bench.py --methods "$1" --ipc "$2" --warmup 0 --iters "$3" \
			--threads 1 --seed "$s" --save-dir "$d" >"$d/run.jsonl" 2>"$d/run.log"
		evaluate "$d/$1-ipc$2/synthetic.npz" "$d/eval.json" "$d/eval.log"
		echo "fidelity: PyTorch $1 IPC $2 seed $s done" >&2
	done
}

dirs=()
for r in $rows; do
	IFS=: read -r m k it <<<"$r"
	case $m in dc | dsa | dm) ;; *) echo "fidelity.sh: method $m: want dc, dsa or dm" >&2; exit 2 ;; esac
	dir="$out/$m-ipc$k-$it"
	mkdir -p "$dir"
	echo "== $m IPC $k, $it iterations, seeds $seeds -> $dir" >&2
	fedsim_lane "$m" "$k" "$it" "$dir" &
	fl=$!
	pytorch_lane "$m" "$k" "$it" "$dir" &
	pl=$!
	wait "$fl"
	wait "$pl"
	dirs+=("$dir")
done

"$PY" scripts/results/fidelity_table.py "${dirs[@]}" | tee "$out/table.md"
