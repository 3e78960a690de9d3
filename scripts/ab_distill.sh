#!/usr/bin/env bash
# A/B timing of two fedsim binaries on one `fedsim distill` command: the two
# run alternately (A, B, A, B, …) so that a change in the machine's load hits
# both, and each run prints one line with its time per iteration (median
# after the first iteration, and mean), user and system CPU seconds, minor
# page faults and peak RSS from /usr/bin/time -v.
#
# Usage:
#   scripts/ab_distill.sh A_BIN B_BIN ROUNDS OUT_DIR -- DISTILL_FLAGS...
# e.g. the mtt IPC-10 comparison of BENCHMARKS.md (old binary built from an
# earlier commit with `git worktree` or `git stash`):
#   GOMAXPROCS=1 scripts/ab_distill.sh /tmp/fedsim-old bin/fedsim 2 /tmp/ab -- \
#     --dataset mnist --method mtt --ipc 10 --iters 3 --seed 1 \
#     --buffer bench/distill/buffer-mnist-e21-n2560 --syn-steps 30 \
#     --expert-epochs 2 --max-start-epoch 20 --lr-img 100 --lr-lr 1e-5 \
#     --lr-teacher 0.001 --batch-syn 0 --labels hard --init real
# --out, --quiet, --eval-runs 0 and --checkpoint-every 0 are added here.
# Output: OUT_DIR/<A|B>-<round>/ (report.json, the set) and <A|B>-<round>.log,
# and OUT_DIR/ab.txt with the lines printed.
set -euo pipefail
die() { echo "ab_distill: $*" >&2; exit 2; }
[ $# -ge 5 ] || die "usage: ab_distill.sh A_BIN B_BIN ROUNDS OUT_DIR -- DISTILL_FLAGS..."
a=$1 b=$2 rounds=$3 out=$4
shift 4
[ "$1" = "--" ] || die "the fifth argument must be --, got $1"
shift
for bin in "$a" "$b"; do
	[ -x "$bin" ] || die "$bin is not an executable fedsim binary"
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS $rounds is not a positive integer"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
mkdir -p "$out"
: >"$out/ab.txt"
field() { grep "$1" "$2" | awk '{print $NF}'; }
for r in $(seq "$rounds"); do
	for v in A B; do
		bin=$a
		[ "$v" = B ] && bin=$b
		d="$out/$v-$r"
		rm -rf "$d"
		/usr/bin/time -v "$bin" distill "$@" --eval-runs 0 --checkpoint-every 0 --quiet --out "$d" >"$d.log" 2>&1 ||
			die "$v round $r failed: see $d.log"
		med=$(grep -o '"seconds_per_iteration_median": [0-9.]*' "$d/report.json" | awk '{print $2}')
		mean=$(grep -o '"seconds_per_iteration": [0-9.]*' "$d/report.json" | awk '{print $2}')
		printf '%s round %d: s/iter median %.2f mean %.2f, user %s s, sys %s s, minor faults %s, peak RSS %s kB\n' \
			"$v" "$r" "$med" "$mean" "$(field 'User time' "$d.log")" "$(field 'System time' "$d.log")" \
			"$(field 'Minor' "$d.log")" "$(field 'Maximum resident' "$d.log")" | tee -a "$out/ab.txt"
	done
done
