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
# stdout (also in table.md there).
#
# Cost on 2 cores, per seed of dm:10:200: fedsim about 8 min, PyTorch about
# 17 min (one thread each), plus 3-4 min per evaluation.
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

"$PY" - "${dirs[@]}" <<'EOF' | tee "$out/table.md"
import glob, json, os, statistics, sys
print("| method | IPC | iterations | fedsim % (per seed) | reference loops in PyTorch % (per seed) | difference |")
print("|---|---|---|---|---|---|")
for d in sys.argv[1:]:
    m, k, it = os.path.basename(d).split("-")
    side = {}
    for impl in ("fedsim", "pytorch"):
        accs = []
        for f in sorted(glob.glob(os.path.join(d, impl + "-s*", "eval.json"))):
            e = json.load(open(f))
            accs.append(100 * e["evaluations"][0]["acc_mean"])
        side[impl] = accs
    def cell(a):
        if not a:
            return "–"
        sd = statistics.pstdev(a) if len(a) > 1 else 0.0
        return "%.2f ± %.2f (%s)" % (statistics.fmean(a), sd, ", ".join("%.2f" % v for v in a))
    diff = "–"
    if side["fedsim"] and side["pytorch"]:
        diff = "%+.2f" % (statistics.fmean(side["fedsim"]) - statistics.fmean(side["pytorch"]))
    print("| %s | %s | %s | %s | %s | %s |" % (m, k[3:], it, cell(side["fedsim"]), cell(side["pytorch"]), diff))
EOF
