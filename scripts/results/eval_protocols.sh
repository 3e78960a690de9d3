#!/usr/bin/env bash
# Evaluation protocols (issue 4): the same synthetic sets scored two ways,
#   dsa  the default protocol (ConvNet, 1000 epochs on MNIST, DSA on every
#        batch), which DSA, DM and the later papers use;
#   dc   the DC reference's MNIST protocol: the same, but with DC's own
#        augmentation (`--dc-augment crop_scale_rotate`: one of crop, scale,
#        rotate per image), with which the DC paper scored its sets and the
#        coreset baselines the survey copies from it.
#
# Usage: scripts/results/eval_protocols.sh DIR...
#   each DIR holds a synthetic.npz and the report.json of `fedsim distill`.
# Writes DIR/eval-protocols/dc-crop_scale_rotate-e1000.json (EVAL_RUNS
# models, default 5); the dsa column is the set's own final evaluation in
# report.json when there is one, else DIR/eval-protocols/dsa-e1000.json is
# made. Outputs that exist are kept. Jobs run JOBS (1) at a time, one
# thread each. A Markdown table goes to stdout.
# Cost: about 4 min per evaluation of 5 models at IPC 1 (one thread).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || { sed -n 2,17p "$0"; exit 2; }
export runs=${EVAL_RUNS:-5}
go build -o bin/fedsim ./cmd/fedsim
jobs=()
for d in "$@"; do
	[ -f "$d/synthetic.npz" ] || { echo "eval_protocols: $d has no synthetic.npz" >&2; exit 2; }
	mkdir -p "$d/eval-protocols"
	jobs+=("$d dc")
	python3 scripts/results/protocol_summary.py --has-dsa "$d" || jobs+=("$d dsa")
done
printf '%s\n' "${jobs[@]}" | xargs -P "${JOBS:-1}" -L 1 bash -c '
	d=$0 p=$1
	case $p in
	dc) f=$d/eval-protocols/dc-crop_scale_rotate-e1000.json flags=(--dc-augment crop_scale_rotate) ;;
	dsa) f=$d/eval-protocols/dsa-e1000.json flags=() ;;
	esac
	[ -s "$f" ] && exit 0
	GOMAXPROCS=1 bin/fedsim eval --synthetic "$d/synthetic.npz" "${flags[@]}" --eval-epochs 1000 --eval-runs "$runs" \
		--seed 1 --json --quiet >"$f.tmp" && mv "$f.tmp" "$f"
	echo "eval_protocols: $d $p done" >&2'
python3 scripts/results/protocol_summary.py "$@"
