#!/usr/bin/env bash
# DSA towards its full budget on Fashion-MNIST at IPC 10 (issue 4: ≥ 86.6,
# the survey's figure, from the DSA paper). One resumable step:
# `fedsim distill --dataset fmnist --method dsa --ipc 10` for ITERS
# iterations (DSA's 1000) with fedsim's defaults, which are the DSA
# reference's (ConvNet width 128, outer loop 10, inner loop 50, lr_img 0.1,
# batch_real 256, images from real ones, the full augmentation strategy
# with flips), evaluated every EVAL_EVERY iterations (EVAL_RUNS ConvNets,
# 1000 epochs, DSA), checkpoint every CHECKPOINT_EVERY iterations.
#
# Running the script again continues from the checkpoint and appends to
# OUT/distill.log, where the evaluations are.
#
# Environment (all optional): THREADS (1: GOMAXPROCS), ITERS (1000),
# EVAL_EVERY (100), EVAL_RUNS (5), CHECKPOINT_EVERY (5), SEED (1),
# OUT (results/distill/fmnist-dsa-ipc10-full-s$SEED),
# FEDSIM_BIN (bin/fedsim-dsalong; built unless SKIP_BUILD=1).
#
# Cost: about 82 s per iteration at one thread beside one other job (3 min
# with three jobs on two cores), so 1000 iterations are about 23 hours of
# one core and the run goes on across sessions; each evaluation trains
# EVAL_RUNS ConvNets for 1000 epochs on 100 images. --resume starts afresh
# when there is no checkpoint. The checkpoint is not committed:
# snapshot_eval.sh copies it whole into OUT/snapshots/, and a committed
# snapshot copied back to OUT/checkpoint.npz continues the run exactly.
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-1}
ITERS=${ITERS:-1000}
EVAL_EVERY=${EVAL_EVERY:-100}
EVAL_RUNS=${EVAL_RUNS:-5}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-5}
SEED=${SEED:-1}
OUT=${OUT:-results/distill/fmnist-dsa-ipc10-full-s$SEED}
BIN=${FEDSIM_BIN:-bin/fedsim-dsalong}
[ "${SKIP_BUILD:-0}" = 1 ] || go build -o "$BIN" ./cmd/fedsim
mkdir -p "$OUT"

GOMAXPROCS=$THREADS "$BIN" distill --dataset fmnist --method dsa --ipc 10 --iters "$ITERS" \
	--eval-every "$EVAL_EVERY" --eval-runs "$EVAL_RUNS" --checkpoint-every "$CHECKPOINT_EVERY" \
	--seed "$SEED" --quiet --out "$OUT" --resume >>"$OUT/distill.log" 2>&1
