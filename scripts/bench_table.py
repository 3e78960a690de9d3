#!/usr/bin/env python3
"""Render fedsim's and PyTorch's benchmark JSON lines as one Markdown table.

Usage: scripts/bench_table.py FEDSIM.jsonl PYTORCH.jsonl
Speed-up is PyTorch's median time over fedsim's (higher is better for
fedsim); memory ratio is fedsim's peak RSS over PyTorch's (lower is better).
Standard library only.
"""
import json
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            key = (r["workload"], r.get("width", 0) if r["workload"] != "sgemm" else 0)
            rows[key] = r
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ours, theirs = load(sys.argv[1]), load(sys.argv[2])
    print("| workload | width | fedsim ms | PyTorch ms | speed-up | fedsim MB | PyTorch MB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(ours, key=lambda k: (k[0], -k[1])):
        o, t = ours[key], theirs.get(key)
        wl, width = key
        if wl == "sgemm":
            tg = t.get("gflops") if t else None
            print(f"| sgemm 1024³ (GFLOP/s) | – | {o['gflops']:.1f} | {tg:.1f} | {o['gflops'] / tg:.2f}× | – | – | – |" if tg else
                  f"| sgemm 1024³ (GFLOP/s) | – | {o['gflops']:.1f} | – | – | – | – | – |")
            continue
        if t is None:
            print(f"| {wl} | {width} | {o['ms_median']:.1f} | – | – | {o['peak_rss_mb']:.0f} | – | – |")
            continue
        print(f"| {wl} | {width} | {o['ms_median']:.1f} | {t['ms_median']:.1f} | {t['ms_median'] / o['ms_median']:.2f}× "
              f"| {o['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} | {o['peak_rss_mb'] / t['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
