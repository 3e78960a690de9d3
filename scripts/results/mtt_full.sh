#!/usr/bin/env bash
# MTT towards its full budget on MNIST at IPC 1 (issue 4: ≥ 91.4, the
# survey's figure). Two steps, both resumable:
#
#  1. an expert buffer on the whole training set (`fedsim distill buffer`,
#     MTT's buffer.py settings: plain SGD at 0.01, batch 256, DSA), with
#     EXPERTS experts of EPOCHS epochs: max_start_epoch 2 + expert_epochs 2
#     need 4. MTT trains 100 experts of 50 epochs; that is out of reach
#     here (one epoch is minutes of CPU), so this is the shortcut.
#  2. `fedsim distill --method mtt --ipc 1` for ITERS iterations (MTT's
#     `Iteration` default: 5000) with fedsim's defaults, which are MTT's
#     CIFAR-10 IPC 1 setting without ZCA (50 unrolled steps, 2 expert
#     epochs, start epoch ≤ 2, lr_img 1000, lr_lr 1e-7, α₀ 0.01), evaluated
#     every EVAL_EVERY iterations (EVAL_RUNS ConvNets, 1000 epochs, DSA, the
#     learned α), checkpoint every 25 iterations.
#
# Running the script again continues both steps where they stopped (the
# buffer adds missing experts; the distillation resumes from its
# checkpoint) and appends to OUT/distill.log, where the evaluations are.
#
# Environment (all optional): THREADS (1: GOMAXPROCS of both steps),
# EXPERTS (8), EPOCHS (4), ITERS (5000), EVAL_EVERY (500), EVAL_RUNS (5),
# SEED (1), BUFFER (bench/distill/buffer-mnist-full-e$EPOCHS; not
# committed, about 10 MB per expert), OUT (results/distill/mnist-mtt-ipc1-full-s$SEED),
# FEDSIM_BIN (bin/fedsim-mttlong; built unless SKIP_BUILD=1).
#
# Cost: the buffer about 3 minutes per expert epoch at one thread (about
# 1 at two); the distillation about 3.5 s per iteration at one thread
# (about 5 hours for 5000).
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-1}
EXPERTS=${EXPERTS:-8}
EPOCHS=${EPOCHS:-4}
ITERS=${ITERS:-5000}
EVAL_EVERY=${EVAL_EVERY:-500}
EVAL_RUNS=${EVAL_RUNS:-5}
SEED=${SEED:-1}
BUFFER=${BUFFER:-bench/distill/buffer-mnist-full-e$EPOCHS}
OUT=${OUT:-results/distill/mnist-mtt-ipc1-full-s$SEED}
BIN=${FEDSIM_BIN:-bin/fedsim-mttlong}
[ "${SKIP_BUILD:-0}" = 1 ] || go build -o "$BIN" ./cmd/fedsim
mkdir -p "$OUT"

GOMAXPROCS=$THREADS "$BIN" distill buffer --dataset mnist --experts "$EXPERTS" \
	--epochs "$EPOCHS" --seed "$SEED" --quiet --out "$BUFFER" 2>&1 | tee -a "$OUT/buffer.log"

GOMAXPROCS=$THREADS "$BIN" distill --dataset mnist --method mtt --ipc 1 --iters "$ITERS" \
	--buffer "$BUFFER" --eval-every "$EVAL_EVERY" --eval-runs "$EVAL_RUNS" \
	--checkpoint-every 25 --seed "$SEED" --quiet --out "$OUT" --resume >>"$OUT/distill.log" 2>&1
