#!/usr/bin/env bash
# Evaluates a long distillation between its own periodic evaluations: copies
# the run's resumable checkpoint (OUT/checkpoint.npz, which holds the
# synthetic set x, y, mean, std, the next iteration, the images' momentum and
# the configuration) into OUT/snapshots/iterN.npz, then scores it with
# `fedsim eval` under the method's protocol into OUT/snapshots/iterN_eval.json.
# The run may keep going meanwhile: the checkpoint is replaced atomically.
# The snapshot is a whole checkpoint, so a committed one outlives the
# machine: copied back to OUT/checkpoint.npz it continues the run exactly.
#
# Usage: snapshot_eval.sh OUT [EVAL_RUNS] [EVAL_EPOCHS]
#   EVAL_RUNS models (5), EVAL_EPOCHS each (1000: the DSA/DM/MTT evaluation).
# Environment: THREADS (1: GOMAXPROCS), FEDSIM_BIN (bin/fedsim, built unless
# SKIP_BUILD=1), PYTHON (/usr/bin/python3, with numpy).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: snapshot_eval.sh OUT [EVAL_RUNS] [EVAL_EPOCHS]}
runs=${2:-5}
epochs=${3:-1000}
bin=${FEDSIM_BIN:-bin/fedsim}
py=${PYTHON:-/usr/bin/python3}
[ -f "$out/checkpoint.npz" ] || { echo "snapshot_eval.sh: no checkpoint in $out (is it a fedsim distill --out folder?)" >&2; exit 2; }
[ "${SKIP_BUILD:-0}" = 1 ] || go build -o "$bin" ./cmd/fedsim
mkdir -p "$out/snapshots"
tmp=$(mktemp "$out/snapshots/.snapshot.XXXXXX.npz")
evaltmp=$tmp.json
trap 'rm -f "$tmp" "$evaltmp"' EXIT
cp "$out/checkpoint.npz" "$tmp" # one open file: the run replaces it by rename
iter=$("$py" -c 'import sys, numpy as np; print(int(np.load(sys.argv[1])["next"][0]))' "$tmp")
snap="$out/snapshots/iter$iter.npz"
chmod 0644 "$tmp" && mv "$tmp" "$snap" # mktemp made it private
echo "snapshot_eval.sh: $snap (the set after $iter iterations)" >&2
GOMAXPROCS=${THREADS:-1} "$bin" eval --synthetic "$snap" --eval-runs "$runs" --eval-epochs "$epochs" \
	--json --quiet >"$evaltmp"
mv "$evaltmp" "$out/snapshots/iter${iter}_eval.json"
cat "$out/snapshots/iter${iter}_eval.json"
