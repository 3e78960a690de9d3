#!/usr/bin/env bash
# Time per outer iteration of fedsim's distillation methods against the
# authors' reference code re-implemented in PyTorch
# (scripts/torch/distill_bench.py), same hyper-parameters, one after the other
# on this machine, and a Markdown table of both with the ratio (issue 4).
#
# Usage (from anywhere; the machine should be otherwise idle):
#   scripts/distill_bench.sh
#   THREADS=1 METHODS=dm IPCS=1 ITERS=2 WARMUP=1 scripts/distill_bench.sh      # a quick check
#
# Environment (all optional):
#   THREADS        threads of both sides: GOMAXPROCS and torch.set_num_threads (2)
#   METHODS        subset of "dc dsa dm mtt" (all four)
#   IPCS           IPCs for every method (default: 1 10, and 1 10 50 for dm)
#   ITERS, WARMUP  timed and warm-up iterations of the PyTorch side (default by
#                  method and IPC, see iters_for). fedsim runs WARMUP+ITERS
#                  iterations and reports their median after the first, and
#                  their mean with the first one included.
#   OUT            folder for the raw results (bench/distill/<UTC time>)
#   FEDSIM_BIN     the fedsim binary built and run (bin/fedsim); SKIP_BUILD=1 skips the build
#   TORCH_PYTHON   the interpreter with torch (/usr/bin/python3)
#   DSA_STRATEGY   augmentation of dsa, dm and mtt on both sides
#                  (color_crop_cutout_scale_rotate: fedsim's mnist default and the DSA readme's)
#   BUFFER_DIR     mtt expert buffer (bench/distill/buffer-mnist-e<epochs>-n<images>;
#                  made once with `fedsim distill buffer`, reused afterwards)
#   BUFFER_TRAIN_LIMIT  training images of the buffer's one expert (2560; 0: all 60000)
#   BATCH_REAL OUTER_LOOP INNER_LOOP SYN_STEPS EXPERT_EPOCHS MAX_START_EPOCH
#                  override the reference values on both sides (quick checks only)
#   DRY_RUN=1      print the commands instead of running them
#
# Output: OUT/fedsim.jsonl and OUT/pytorch.jsonl (one JSON line per method and
# IPC), OUT/table.md, OUT/meta.txt, OUT/runs/<method>-ipc<K>/ (fedsim's
# report.json and log) and OUT/runs/<method>-ipc<K>/pytorch.log.
#
# What is compared: the median time per iteration on both sides, after
# warm-up: fedsim's report.json seconds_per_iteration_median (its iterations
# after the first, evaluations left out; the first warms pools and caches)
# against the PyTorch script's median over its timed iterations after its
# warm-up ones. The table also gives the means: fedsim's
# seconds_per_iteration covers all its iterations, the first one and the
# checkpoint written after the last one included. fedsim's mtt also reads two
# expert checkpoints from the buffer files every iteration; the PyTorch side
# keeps random experts in memory.
#
# Cost on 2 idle cores: about 1-1.5 hours, most of it dc and dsa at IPC 10
# (2-4 minutes per iteration on each side). Memory: mtt at IPC 10 keeps 30
# unrolled steps of 100 images, about 11-13 GB on either side.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
METHODS=${METHODS:-"dc dsa dm mtt"}
IPCS=${IPCS:-}
ITERS=${ITERS:-}
WARMUP=${WARMUP:-}
OUT=${OUT:-bench/distill/$(date -u +%Y-%m-%dT%H%M%SZ)}
FEDSIM=${FEDSIM_BIN:-bin/fedsim}
PY=${TORCH_PYTHON:-/usr/bin/python3}
DSA=${DSA_STRATEGY:-color_crop_cutout_scale_rotate}
BUFFER_TRAIN_LIMIT=${BUFFER_TRAIN_LIMIT:-2560}
BATCH_REAL=${BATCH_REAL:-}
OUTER_LOOP=${OUTER_LOOP:-}
INNER_LOOP=${INNER_LOOP:-}
SYN_STEPS=${SYN_STEPS:-}
EXPERT_EPOCHS=${EXPERT_EPOCHS:-}
MAX_START_EPOCH=${MAX_START_EPOCH:-}

die() { echo "distill_bench: $*" >&2; exit 1; }

# DC utils.py get_loops (lines 275-293): "outer inner".
loops() {
	case $1 in
	1) echo "1 1" ;; 10) echo "10 50" ;; 20) echo "20 25" ;; 30) echo "30 20" ;; 40) echo "40 15" ;; 50) echo "50 10" ;;
	*) return 1 ;;
	esac
}

# MTT settings "syn_steps expert_epochs max_start_epoch lr_img lr_lr lr_teacher":
# MTT has no MNIST setting; these are the CIFAR-10 rows of DC-BENCH
# methods/tm/readme.md (lines 48, 52, 56), run without ZCA.
mtt_row() {
	case $1 in
	1) echo "50 2 2 100 1e-7 0.01" ;;
	10) echo "30 2 20 100 1e-5 0.001" ;;
	50) echo "30 2 40 1000 1e-5 0.001" ;;
	*) return 1 ;;
	esac
}

# "warmup iters" of the PyTorch side by method and IPC (few for dc/dsa at
# IPC 10, whose iterations take minutes).
iters_for() {
	local w n
	case $1 in
	dc | dsa) if [ "$2" = 1 ]; then w=1 n=10; else w=1 n=3; fi ;;
	dm) w=2 n=20 ;;
	mtt) if [ "$2" = 1 ]; then w=1 n=10; else w=1 n=5; fi ;;
	esac
	echo "${WARMUP:-$w} ${ITERS:-$n}"
}

ipcs_for() {
	if [ -n "$IPCS" ]; then echo "$IPCS"; elif [ "$1" = dm ]; then echo "1 10 50"; else echo "1 10"; fi
}

# mtt: "syn expert_epochs max_start lr_img lr_lr lr_teacher" with the overrides.
mtt_hp() {
	local row
	row=$(mtt_row "$1") || die "no MTT setting for IPC $1"
	set -- $row
	echo "${SYN_STEPS:-$1} ${EXPERT_EPOCHS:-$2} ${MAX_START_EPOCH:-$3} $4 $5 $6"
}

for m in $METHODS; do
	case $m in dc | dsa | dm | mtt) ;; *) die "unknown method $m (want dc, dsa, dm, mtt)" ;; esac
done
[ -x "$PY" ] || die "$PY not found (Debian's python3-torch is needed)"

mkdir -p "$OUT/runs"
if [ "${SKIP_BUILD:-0}" != 1 ] && [ "${DRY_RUN:-0}" != 1 ]; then
	echo "building $FEDSIM…" >&2
	go build -o "$FEDSIM" ./cmd/fedsim
fi
MNIST_DIR=${MNIST_DIR:-$(ls -d "$(go env GOMODCACHE)"/github.com/petar/*/data 2>/dev/null | head -n 1 || true)}

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host: $(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "fedsim: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)'), $(go version)"
	echo "torch: $("$PY" -c 'import torch; print(torch.__version__)')"
	echo "threads: $THREADS; DSA strategy: $DSA; MNIST: ${MNIST_DIR:-not found (PyTorch uses random images)}"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

# The expert buffer for mtt: one expert, as many epochs as the start epochs
# and expert epochs of the requested IPCs need (fedsim: max_start_epoch - 1 +
# expert_epochs), trained on BUFFER_TRAIN_LIMIT images (the time of a
# distillation iteration does not depend on how good the expert is).
BUFFER=""
case " $METHODS " in
*" mtt "*)
	need=0
	for k in $(ipcs_for mtt); do
		hp=$(mtt_hp "$k") || exit 1
		set -- $hp
		e=$(($3 - 1 + $2))
		if [ "$e" -gt "$need" ]; then need=$e; fi
	done
	BUFFER=${BUFFER_DIR:-bench/distill/buffer-mnist-e$need-n$BUFFER_TRAIN_LIMIT}
	echo "mtt expert buffer $BUFFER (1 expert, $need epochs)…" >&2
	bufcmd=("$FEDSIM" distill buffer --dataset mnist --experts 1 --epochs "$need"
		--train-limit "$BUFFER_TRAIN_LIMIT" --test-limit -1 --quiet --out "$BUFFER")
	if [ "${DRY_RUN:-0}" = 1 ]; then
		echo "GOMAXPROCS=$THREADS ${bufcmd[*]}"
	else
		GOMAXPROCS=$THREADS "${bufcmd[@]}" >&2
	fi
	;;
esac

failed=()
: >"$OUT/fedsim.jsonl"
: >"$OUT/pytorch.jsonl"
for m in $METHODS; do
	for k in $(ipcs_for "$m"); do
		wn=$(iters_for "$m" "$k")
		set -- $wn
		w=$1 n=$2
		total=$((w + n))
		run="$OUT/runs/$m-ipc$k"
		rm -rf "$run"
		mkdir -p "$run"
		fed=(distill --dataset mnist --method "$m" --ipc "$k" --iters "$total" --eval-runs 0
			--checkpoint-every 0 --seed 1 --quiet --out "$run")
		py=(--methods "$m" --ipc "$k" --iters "$n" --warmup "$w" --threads "$THREADS" --dsa-strategy "$DSA")
		if [ -n "$MNIST_DIR" ]; then py+=(--data-dir "$MNIST_DIR"); fi
		case $m in
		dc | dsa)
			if [ -n "$OUTER_LOOP$INNER_LOOP" ]; then
				lo="${OUTER_LOOP:?set both OUTER_LOOP and INNER_LOOP} ${INNER_LOOP:?set both OUTER_LOOP and INNER_LOOP}"
			else
				lo=$(loops "$k") || die "the reference defines no loops for IPC $k"
			fi
			set -- $lo
			br=${BATCH_REAL:-256}
			if [ "$m" = dc ]; then init=noise strat=none; else init=real strat=$DSA; fi
			fed+=(--batch-real "$br" --lr-img 0.1 --outer-loop "$1" --inner-loop "$2" --init "$init" --dsa-strategy "$strat")
			py+=(--batch-real "$br" --lr-img 0.1 --outer-loop "$1" --inner-loop "$2" --init "$init")
			;;
		dm)
			br=${BATCH_REAL:-256}
			fed+=(--batch-real "$br" --lr-img 1 --init real --dsa-strategy "$DSA")
			py+=(--batch-real "$br" --lr-img 1 --init real)
			;;
		mtt)
			hp=$(mtt_hp "$k") || exit 1
			set -- $hp
			fed+=(--buffer "$BUFFER" --syn-steps "$1" --expert-epochs "$2" --max-start-epoch "$3" --lr-img "$4"
				--lr-lr "$5" --lr-teacher "$6" --batch-syn 0 --labels hard --init real --dsa-strategy "$DSA")
			py+=(--syn-steps "$1" --expert-epochs "$2" --max-start-epoch "$3" --lr-img "$4"
				--lr-lr "$5" --lr-teacher "$6" --batch-syn 0 --init real)
			;;
		esac

		echo "$FEDSIM ${fed[*]}" >"$run/fedsim.cmd"
		echo "$PY scripts/torch/distill_bench.py ${py[*]}" >"$run/pytorch.cmd"
		if [ "${DRY_RUN:-0}" = 1 ]; then
			echo "GOMAXPROCS=$THREADS $(cat "$run/fedsim.cmd")"
			echo "OMP_NUM_THREADS=$THREADS $(cat "$run/pytorch.cmd")"
			continue
		fi
		echo "== $m IPC $k: fedsim, $total iterations (GOMAXPROCS=$THREADS)" >&2
		if GOMAXPROCS=$THREADS "$FEDSIM" "${fed[@]}" >"$run/fedsim.log" 2>&1; then
			tail -n 3 "$run/fedsim.log" >&2
			"$PY" - "$run/report.json" "$m" "$k" "$total" "$THREADS" >>"$OUT/fedsim.jsonl" <<'EOF' ||
import json, sys
path, method, ipc, iters, threads = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"impl": "fedsim", "method": method, "ipc": int(ipc),
                  "s_per_iter_mean": r["seconds_per_iteration"],
                  "s_per_iter_median": r.get("seconds_per_iteration_median"), "iters": int(iters),
                  "threads": int(threads), "distill_wall_s": r["distill_wall_s"],
                  "wall_s": r["wall_s"], "hp": r["hyper_parameters"]}))
EOF
				failed+=("fedsim $m IPC $k (no seconds_per_iteration in $run/report.json)")
		else
			tail -n 20 "$run/fedsim.log" >&2
			echo "distill_bench: fedsim $m IPC $k failed (log: $run/fedsim.log); going on" >&2
			failed+=("fedsim $m IPC $k")
		fi

		echo "== $m IPC $k: PyTorch, $w warm-up + $n timed iterations ($THREADS threads)" >&2
		if ! OMP_NUM_THREADS=$THREADS "$PY" scripts/torch/distill_bench.py "${py[@]}" \
			2> >(tee "$run/pytorch.log" >&2) | tee -a "$OUT/pytorch.jsonl" >&2; then
			echo "distill_bench: PyTorch $m IPC $k failed (log: $run/pytorch.log); going on" >&2
			failed+=("PyTorch $m IPC $k")
		fi
	done
done

"$PY" - "$OUT/fedsim.jsonl" "$OUT/pytorch.jsonl" "$THREADS" <<'EOF' | tee "$OUT/table.md"
import json, sys
fed = {(r["method"], r["ipc"]): r for r in map(json.loads, filter(str.strip, open(sys.argv[1])))}
pt = {(r["method"], r["ipc"]): r for r in map(json.loads, filter(str.strip, open(sys.argv[2])))}
print("Time per outer iteration, THREADS=%s on each side (GOMAXPROCS, torch.set_num_threads). fedsim: median over its"
      " iterations after the first (seconds_per_iteration_median), and in brackets the mean over all of them, the first"
      " included (seconds_per_iteration); PyTorch: median (mean) over its timed iterations after warm-up."
      " Ratio: PyTorch / fedsim (> 1: fedsim faster).\n" % sys.argv[3])
print("| method | IPC | fedsim s/iter median (mean) | PyTorch s/iter median (mean) | ratio (medians) | ratio (means) | iterations fedsim / PyTorch |")
print("|---|---|---|---|---|---|---|")
order = {"dc": 0, "dsa": 1, "dm": 2, "mtt": 3}
for key in sorted(set(fed) | set(pt), key=lambda k: (order.get(k[0], 9), k[1])):
    f, p = fed.get(key), pt.get(key)
    fs = f["s_per_iter_mean"] if f else None
    fm = f.get("s_per_iter_median") if f else None
    pm = p["s_per_iter_median"] if p else None
    pa = p["s_per_iter_mean"] if p else None
    fmt = lambda v: "–" if v is None else "%.3f" % v
    ratio = lambda a, b: "–" if a is None or not b else "%.2f×" % (a / b)
    print("| %s | %d | %s (%s) | %s (%s) | %s | %s | %s / %s |" % (
        key[0], key[1], fmt(fm), fmt(fs), fmt(pm), fmt(pa), ratio(pm, fm), ratio(pa, fs),
        f["iters"] if f else "–", "%d+%d" % (p["warmup"], p["iters"]) if p else "–"))
EOF
echo "raw results in $OUT" >&2
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'distill_bench: failed: %s\n' "${failed[@]}" >&2
	exit 1
fi
