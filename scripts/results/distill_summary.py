#!/usr/bin/env python3
"""Summarise `fedsim distill` runs: the final evaluation of each report.json,
as a Markdown table of mean ± std (population std, as RESULTS.md's
distillation tables) per data set, method, IPC, iterations and model.

Usage: scripts/results/distill_summary.py DIR/report.json ...   (standard library only)
"""
import json
import statistics
import sys
from collections import defaultdict


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    groups = defaultdict(list)
    for path in sys.argv[1:]:
        with open(path) as f:
            rep = json.load(f)
        evals = rep.get("evaluations") or []
        final = [e for e in evals if e["iteration"] == rep["iterations"]]
        if not final:
            sys.exit(f"{path}: no evaluation of the final set (iteration {rep['iterations']})")
        for e in final:
            key = (rep["dataset"], rep["method"], rep["ipc"], rep["iterations"], e["model"])
            groups[key].append((rep["seed"], 100 * e["acc_mean"]))
    print("| data set | method | IPC | iterations | evaluation | seeds | test accuracy % (mean ± std) | per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for (d, m, ipc, it, model), rs in sorted(groups.items()):
        rs.sort()
        accs = [a for _, a in rs]
        std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        seeds = ",".join(str(s) for s, _ in rs)
        per = ", ".join(f"{a:.2f}" for a in accs)
        print(f"| {d} | {m} | {ipc} | {it} | {model} | {seeds} | {statistics.mean(accs):.2f} ± {std:.2f} | {per} |")


if __name__ == "__main__":
    main()
