#!/usr/bin/env bash
# Privacy comparison on real MNIST (issue 7): FedAvg, one-shot distillation
# (DM, GM), distillation with differential privacy at several ε, DP-FedAvg,
# and a model trained on the clients' raw data; against each final model
# the loss-threshold and offline-LiRA membership attacks; DLG/iDLG on a
# FedAvg client's one-step update; nearest-real SSIM of the uploaded
# synthetic sets. Fixed seeds; results in $OUT (default results/privacy):
# one folder per seed and run, then tables.py writes the CSV/Markdown
# tables and `fedsim attack plot` the ROC plots.
#
#   scripts/privacy/run.sh tiny   # smoke test, a few minutes on 2 cores
#   scripts/privacy/run.sh dm     # without gradient matching, on 5000 images (see README.md)
#   scripts/privacy/run.sh full   # the comparison (see README.md for time)
#   scripts/privacy/run.sh small  # the comparison on 1000 images (10 clients of 100), targets that remember
#
# Settings can be overridden from the environment (SEEDS, EPSILONS, …).
set -euo pipefail
MODE=${1:-full}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/results/privacy}
if [ "$MODE" = tiny ]; then
	OUT=${OUT_TINY:-$OUT/tiny}
	: "${SEEDS:=1}" "${TRAIN_LIMIT:=1000}" "${TEST_LIMIT:=500}" "${CLIENTS:=4}" "${ROUNDS:=1}" "${FRACTION:=0.5}"
	: "${ITERS:=2}" "${EPSILONS:=10}" "${MEMBERS:=50}" "${SHADOWS:=2}" "${SHADOW_EPOCHS:=2}" "${RAW_EPOCHS:=1}"
	: "${DM_PRIVATE_ITERS:=2}" "${DLG_ITERS:=20}" "${DLG_BATCHES:=1}" "${LEAK_IMAGES:=20}" "${BOOT:=20}" "${MODEL:=convnet-w8}"
elif [ "$MODE" = full ] || [ "$MODE" = dm ] || [ "$MODE" = small ]; then
	if [ "$MODE" = small ]; then
		# 1000 training images held by 10 clients: a ConvNet trained on
		# them for 50 epochs fits them exactly (96 % test accuracy), the
		# regime where membership inference has something to find, and
		# online LiRA uses both sides of its 16 shadows. FedAvg gets 30
		# rounds of 5 local epochs so that it is trained too.
		OUT=${OUT_SMALL:-$OUT/small}
		: "${METHODS:=dm gm}" "${EPSILONS:=1 10}" "${DLG_BATCHES:=1 4}" "${TRAIN_LIMIT:=1000}" "${CLIENTS:=10}" "${FRACTION:=0.5}"
		: "${MEMBERS:=500}" "${RAW_EPOCHS:=50}" "${SHADOW_EPOCHS:=50}" "${SHADOWS:=16}" "${LIRA_FLAGS:=--global-variance}"
		: "${FEDAVG_FLAGS:=--rounds 30 --local-epochs 5}"
	fi
	if [ "$MODE" = dm ]; then
		# Without gradient matching, on 5000 training images (100 per
		# client): a model trained on few images remembers them, so the
		# raw-data model shows what the attacks can do.
		OUT=${OUT_DM:-$OUT/dm}
		: "${METHODS:=dm}" "${EPSILONS:=1 10}" "${DLG_BATCHES:=1 4}" "${TRAIN_LIMIT:=5000}" "${RAW_EPOCHS:=30}" "${SHADOWS:=8}"
	fi
	: "${SEEDS:=1 2 3}" "${TRAIN_LIMIT:=0}" "${TEST_LIMIT:=0}" "${CLIENTS:=50}" "${ROUNDS:=5}" "${FRACTION:=0.2}"
	: "${ITERS:=20}" "${EPSILONS:=1 4 10}" "${MEMBERS:=1000}" "${SHADOWS:=16}" "${SHADOW_EPOCHS:=30}" "${RAW_EPOCHS:=8}"
	: "${DLG_ITERS:=300}" "${DLG_BATCHES:=1 2 4}" "${LEAK_IMAGES:=200}" "${BOOT:=200}" "${MODEL:=convnet-w32}"
else
	echo "usage: $0 tiny|dm|small|full" >&2
	exit 2
fi
# Private DM clips each real embedding's offset from the synthetic class
# mean (--dp-center): for a random convnet-w32 on MNIST embeddings have norm
# about 12.4 but lie about 4 from their class mean, so C = 4 clips little
# once the synthetic images are near the class and puts a third of the
# noise of C = 12 on the means. Private DM starts from noise and runs
# DM_PRIVATE_ITERS iterations (20 from noise leave the images half made);
# dm_noise is the same without privacy. GM clips per-example gradients and
# FedAvg client updates (C = 1: untuned).
: "${DM_DP_CLIP:=4}" "${DM_DP_FLAGS:=--dp-center}" "${DM_PRIVATE_ITERS:=200}"
: "${GM_DP_CLIP:=1}" "${FEDAVG_DP_CLIP:=1}" "${DP_DELTA:=1e-5}" "${DP_Q:=0.5}"
# LiRA: offline with one pooled variance per side unless a mode says
# otherwise; FEDAVG_FLAGS are extra flags of the FedAvg runs.
: "${LIRA_FLAGS:=--offline --global-variance}" "${FEDAVG_FLAGS:=}"
BIN=${FEDSIM:-$OUT/bin/fedsim}
mkdir -p "$OUT" "$(dirname "$BIN")"
if [ -z "${FEDSIM:-}" ]; then
	(cd "$ROOT" && go build -o "$BIN" ./cmd/fedsim)
fi
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

common=(--clients "$CLIENTS" --rounds "$ROUNDS" --fraction "$FRACTION" --distill-iters "$ITERS" --model "$MODEL"
	--train-limit "$TRAIN_LIMIT" --test-limit "$TEST_LIMIT" --quiet)
# run NAME SEED ARGS…: one federated run (skipped if its summary exists)
run() {
	local name=$1 seed=$2
	shift 2
	local dir=$OUT/seed$seed/$name
	if [ -f "$dir/summary.json" ]; then return; fi
	rm -rf "$dir"
	mkdir -p "$OUT/seed$seed"
	log "run $name seed $seed"
	"$BIN" run "${common[@]}" --seed "$seed" --out "$dir" "$@" >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
	case $name in *dp*)
		# a private run must report its ε: fail loudly if the build ignores the DP flags
		grep -q '"epsilon_max"' "$dir/metrics.jsonl" || { echo "$name: metrics.jsonl has no epsilon_max: this fedsim build does not apply --dp-* (sim/run.go needs cfg.WithDP)" >&2; exit 1; }
	esac
}
# attack NAME SEED WEIGHTS: loss threshold and offline LiRA against a model
attacks() {
	local name=$1 seed=$2 weights=$3
	local dir=$OUT/seed$seed/$name
	local m=(--weights "$weights" --model "$MODEL" --train-limit "$TRAIN_LIMIT" --members "$MEMBERS" --seed "$seed" --bootstrap "$BOOT"
		--epochs "$SHADOW_EPOCHS")
	[ -f "$dir/mia/report.json" ] || { log "mia $name"; "$BIN" attack mia "${m[@]}" --out "$dir/mia" --json >/dev/null; }
	[ -f "$dir/lira/report.json" ] || { log "lira $name"; "$BIN" attack lira "${m[@]}" --shadows "$SHADOWS" $LIRA_FLAGS \
		--shadow-cache "$OUT/seed$seed/shadows.json" --out "$dir/lira" --json >/dev/null; }
}

: "${METHODS:=dm gm}"
has() { case " $METHODS " in *" $1 "*) return 0 ;; esac; return 1; }
for seed in $SEEDS; do
	run fedavg "$seed" --distill none --strategy fedavg $FEDAVG_FLAGS
	for m in dm gm; do
		has $m && run $m "$seed" --distill $m
	done
	# DM from noise without privacy: DP-DM's own starting point, so that
	# the price of the noise is told apart from that of not starting from
	# real images.
	has dm && run dm_noise "$seed" --distill dm --distill-init noise --distill-iters "$DM_PRIVATE_ITERS"
	for eps in $EPSILONS; do
		has dm && run "dm_dp_eps$eps" "$seed" --distill dm --dp-epsilon "$eps" --dp-clip "$DM_DP_CLIP" --dp-delta "$DP_DELTA" --dp-sample-rate "$DP_Q" \
			--distill-iters "$DM_PRIVATE_ITERS" $DM_DP_FLAGS
		has gm && run "gm_dp_eps$eps" "$seed" --distill gm --dp-epsilon "$eps" --dp-clip "$GM_DP_CLIP" --dp-delta "$DP_DELTA" --dp-sample-rate "$DP_Q"
		run "fedavg_dp_eps$eps" "$seed" --distill none --strategy fedavg --dp-epsilon "$eps" --dp-clip "$FEDAVG_DP_CLIP" --dp-delta "$DP_DELTA" $FEDAVG_FLAGS
	done
	raw=$OUT/seed$seed/raw
	if [ ! -f "$raw/weights.npz" ]; then
		mkdir -p "$OUT/seed$seed"
		log "raw-data model seed $seed"
		"$BIN" train --model "$MODEL" --train-limit "$TRAIN_LIMIT" --epochs "$RAW_EPOCHS" --seed "$seed" --out "$raw" >"$raw.log" 2>&1 || { cat "$raw.log" >&2; exit 1; }
	fi
	attacks raw "$seed" "$raw/weights.npz"
	for d in "$OUT/seed$seed"/*/; do
		name=$(basename "$d")
		[ -f "$d/global.npz" ] || continue
		attacks "$name" "$seed" "$d/global.npz"
		case $name in dm* | gm*)
			[ -f "$d/leakage.json" ] || { log "leakage $name"; "$BIN" attack leakage --checkpoint "$d/checkpoint.fsw" --train-limit "$TRAIN_LIMIT" \
				--max-images "$LEAK_IMAGES" --seed "$seed" --json >"$d/leakage.json"; }
		esac
	done
	for b in $DLG_BATCHES; do
		for model in mlp "$MODEL"; do
			f=$OUT/seed$seed/dlg/${model}_b$b.json
			[ -f "$f" ] && continue
			mkdir -p "$(dirname "$f")"
			log "dlg $model batch $b"
			"$BIN" attack dlg --model "$model" --batch-size "$b" --index $((seed * 10)) --iters "$DLG_ITERS" --seed "$seed" \
				--out "$OUT/seed$seed/dlg/${model}_b$b" --json >"$f"
		done
	done
	args=()
	for d in "$OUT/seed$seed"/*/; do
		[ -f "$d/mia/report.json" ] && args+=("$(basename "$d")=$d/mia/report.json")
	done
	"$BIN" attack plot --title "loss-threshold MIA, seed $seed" --out "$OUT/roc_mia_seed$seed.png" "${args[@]}" >/dev/null
	args=()
	for d in "$OUT/seed$seed"/*/; do
		[ -f "$d/lira/report.json" ] && args+=("$(basename "$d")=$d/lira/report.json")
	done
	"$BIN" attack plot --title "LiRA ($LIRA_FLAGS), seed $seed" --out "$OUT/roc_lira_seed$seed.png" "${args[@]}" >/dev/null
done
python3 "$ROOT/scripts/privacy/tables.py" "$OUT"
log "done: tables and plots in $OUT"
