#!/usr/bin/env bash
# KIP's targets of issue 8 (RESULTS.md, "KIP with learned labels"): the
# fully connected NTK with learned labels, evaluated by kernel ridge
# regression with the set's kernel (KIP's own evaluation), over seeds.
#
# Usage: scripts/results/kip.sh [rows] [seeds]
#   rows: any of mnist1 fmnist10 mnist10 (default all three)
#   e.g. scripts/results/kip.sh mnist10 "1 2 3"
# Cost on 2 idle cores, per seed: mnist1 about 1 min, fmnist10 about 4 min,
# mnist10 (10 000 iterations at 400 targets per class, depth-5 kernel,
# image rate 0.03 decayed by a cosine) about 20 min alone (three seeds at
# once: about 65 min).
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-"mnist1 fmnist10 mnist10"}
seeds=${2:-"1 2 3"}
out=${RESULTS_OUT:-results/distill_part2/kip}
mkdir -p "$out"
go build -o bin/fedsim ./cmd/fedsim
reports=()
for r in $rows; do
  case $r in
    mnist1)   args=(--dataset mnist --ipc 1 --iters 5000); name=kip-fc-ipc1-ll-5000-krr ;;
    fmnist10) args=(--dataset fmnist --ipc 10 --iters 5000); name=fm-kip-fc-ipc10-ll-5000-krr ;;
    mnist10)  args=(--dataset mnist --ipc 10 --iters 10000 --batch-real 400 --lr-cosine --kernel-depth 5 --lr-img 0.03 --eval-every 2500)
              name=kip-fc5-ipc10-ll-b400-cos-lr03-10000-krr ;;
    *) echo "kip.sh: unknown row $r (want mnist1, fmnist10 or mnist10)" >&2; exit 2 ;;
  esac
  for s in $seeds; do
    dir="$out/$name-s$s"
    echo "== $r seed $s -> $dir" >&2
    rm -f "$dir/checkpoint.npz"
    bin/fedsim distill --method kip "${args[@]}" --learn-labels --eval-models krr \
      --seed "$s" --quiet --out "$dir" >&2
    rm -f "$dir/checkpoint.npz"
    reports+=("$dir/report.json")
  done
done
python3 scripts/results/distill_summary.py "${reports[@]}"
