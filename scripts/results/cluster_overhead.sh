#!/usr/bin/env bash
# Wall-time overhead of the local cluster over the in-process run (issue 6):
# PAIRS back-to-back pairs of `fedsim run --clients 50 --distill dm` and
# `fedsim cluster --workers 4 --clients 50 --distill dm` (same seed),
# alternating which goes first, each under /usr/bin/time -v. Prints one line
# per pair (wall and CPU of both, the ratio) and the median ratio; the runs
# are in $OUT (default results/federated/cluster-pairs). The metrics of every
# cluster run must equal the in-process run's apart from the timings
# (wall_s, clients_s, server_s); the script checks that too. Run it on a machine with nothing else running.
#
#   scripts/results/cluster_overhead.sh            # 5 pairs, about 16 min on 2 cores
#   PAIRS=3 CLUSTER_FLAGS="--max-tasks 0" scripts/results/cluster_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PAIRS=${PAIRS:-5}
OUT=${OUT:-results/federated/cluster-pairs}
mkdir -p "$OUT"
go build -o bin/fedsim ./cmd/fedsim
args=(--clients 50 --distill dm --seed 1 --quiet)
one() { # name command [flags]
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  /usr/bin/time -v -o "$OUT/$name.time.txt" bin/fedsim "$@" "${args[@]}" --out "$OUT/$name" >/dev/null 2>"$OUT/$name.log"
}
wall() { # seconds from /usr/bin/time -v's "Elapsed (wall clock) time (h:mm:ss or m:ss): M:SS.ss"
  awk -F': ' '/Elapsed/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"
}
cpu() { awk -F': ' '/User time|System time/ {s+=$2} END {print s}' "$1"; }
same() { # metrics equal apart from wall_s
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    out = []
    for line in open(p):
        d = json.loads(line)
        for k in ("wall_s", "clients_s", "server_s", "transport_events"): d.pop(k, None)
        out.append(d)
    return out
sys.exit(0 if load(sys.argv[1]) == load(sys.argv[2]) else 1)
PY
}
ratios=()
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then
    one "inprocess-$i" run; one "cluster-$i" cluster --workers 4 ${CLUSTER_FLAGS:-}
  else
    one "cluster-$i" cluster --workers 4 ${CLUSTER_FLAGS:-}; one "inprocess-$i" run
  fi
  same "$OUT/inprocess-$i/metrics.jsonl" "$OUT/cluster-$i/metrics.jsonl" || { echo "pair $i: cluster metrics differ from in-process" >&2; exit 1; }
  wi=$(wall "$OUT/inprocess-$i.time.txt"); wc=$(wall "$OUT/cluster-$i.time.txt")
  r=$(awk -v a="$wc" -v b="$wi" 'BEGIN {printf "%.4f", a/b}')
  ratios+=("$r")
  printf 'pair %d (%s first): in-process %.1f s wall / %.1f s CPU; cluster %.1f s / %.1f s; cluster/in-process %.3f\n' \
    "$i" "$([ $((i % 2)) -eq 1 ] && echo in-process || echo cluster)" "$wi" "$(cpu "$OUT/inprocess-$i.time.txt")" "$wc" "$(cpu "$OUT/cluster-$i.time.txt")" "$r" | tee -a "$OUT/pairs.txt"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median cluster/in-process over %d pairs: %.3f (min %.3f, max %.3f)\n", NR, m, a[1], a[NR]}' | tee -a "$OUT/pairs.txt"
