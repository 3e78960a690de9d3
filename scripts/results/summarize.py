#!/usr/bin/env python3
"""Summarise JSON-lines results (the last line of each file holds test_acc)
as a Markdown table of mean ± std (sample std, n−1) per data set and model.

Usage: scripts/results/summarize.py FILE.jsonl ...   (standard library only)
"""
import json
import statistics
import sys
from collections import defaultdict


def main():
    groups = defaultdict(list)
    for path in sys.argv[1:]:
        last = None
        with open(path) as f:
            for line in f:
                if line.strip().startswith("{"):
                    last = json.loads(line)
        if last is None or "test_acc" not in last:
            sys.exit(f"{path}: no final line with test_acc")
        key = (last["dataset"], last["model"], last["epochs"])
        groups[key].append(last)
    print("| data set | model | epochs | seeds | test accuracy % (mean ± std) | wall s per run (mean) |")
    print("|---|---|---|---|---|---|")
    for (d, m, e), rs in sorted(groups.items()):
        accs = [100 * r["test_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        wall = statistics.mean(r["wall_s"] for r in rs)
        seeds = ",".join(str(r["seed"]) for r in rs)
        print(f"| {d} | {m} | {e} | {seeds} | {statistics.mean(accs):.2f} ± {std:.2f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
