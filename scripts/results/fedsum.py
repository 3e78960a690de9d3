#!/usr/bin/env python3
"""Summarise `fedsim run` folders made by federated.sh as a Markdown table:
per configuration (the folder name without -seedN), final and best test
accuracy (mean ± sample std over seeds), wall time and peak memory (from the
/usr/bin/time -v file beside each folder), total upload, and the round and
cumulative upload at which the test accuracy first reached --target. The mean
of the last five rounds' accuracy is beside the final one: FedAvg on very
skewed partitions swings by several points from round to round.

With --baseline PREFIX (repeatable; PREFIX is a run folder without its
-seedN, e.g. results/federated/dynafed/fedavg), a second table gives each
configuration's gain over that baseline seed by seed, on the last-five mean,
the final round and the best round, for the seeds both have: the same seed means the
same partition and client sampling, so the paired gain is the fair one.

Usage: scripts/results/fedsum.py [--target 0.95] [--baseline PREFIX]... DIR
(standard library only)
"""
import argparse
import json
import os
import re
import statistics
import sys
from collections import defaultdict


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return m, s


def fmt(xs, scale=1.0, digits=2, sign=False):
    r = mean_std([None if x is None else x * scale for x in xs])
    if r == "–":
        return r
    return f"{r[0]:{'+' if sign else ''}.{digits}f} ± {r[1]:.{digits}f}"


def read_time(path):
    wall = rss = None
    if not os.path.exists(path):
        return wall, rss
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("Elapsed (wall clock) time"):
                t = line.rsplit(" ", 1)[1].split(":")
                wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(t)))
            elif line.startswith("Maximum resident set size"):
                rss = int(line.rsplit(" ", 1)[1]) / 1024 / 1024  # KiB → GiB
    return wall, rss


def load_runs(dir, target):
    """Finished runs in dir, grouped by folder name without -seedN."""
    if not os.path.isdir(dir):
        sys.exit(f"fedsum: {dir} is not a folder; pass the folder federated.sh wrote (results/federated/EXPERIMENT)")
    groups = defaultdict(list)
    for name in sorted(os.listdir(dir)):
        d = os.path.join(dir, name)
        m = re.fullmatch(r"(.+)-seed(\d+)", name)
        if not m or not os.path.isdir(d) or not os.path.exists(os.path.join(d, "summary.json")):
            continue
        with open(os.path.join(d, "summary.json")) as f:
            summ = json.load(f)
        with open(os.path.join(d, "metrics.jsonl")) as f:
            rows = [json.loads(l) for l in f if l.strip()]
        hit = next((r for r in rows if r["test_acc"] >= target), None)
        wall, rss = read_time(d + ".time.txt")
        groups[m.group(1)].append(dict(
            seed=int(m.group(2)), final=summ["final_test_acc"], best=summ["best_test_acc"],
            last5=statistics.mean(r["test_acc"] for r in rows[-5:]),
            up=summ["upload_bytes"], wall=wall, rss=rss,
            hit_round=hit["round"] if hit else None,
            hit_up=hit["cum_upload_bytes"] if hit else None,
            rounds=summ["rounds"]))
    for rs in groups.values():
        rs.sort(key=lambda r: r["seed"])
    return groups


def load_baseline(prefixes, target):
    """Baseline runs by seed, merged over every PREFIX (folder/name)."""
    by_seed = {}
    for p in prefixes:
        dir, name = os.path.split(p.rstrip("/"))
        rs = load_runs(dir or ".", target).get(name)
        if not rs:
            sys.exit(f"fedsum: --baseline {p}: no finished runs {name}-seedN in {dir or '.'}")
        for r in rs:
            if r["seed"] in by_seed:
                sys.exit(f"fedsum: --baseline: seed {r['seed']} of {name} appears twice; pass each seed once")
            by_seed[r["seed"]] = r
    return by_seed


GAIN_METRICS = (("last5", "mean of the last 5 rounds"), ("final", "final round"), ("best", "best round"))


def print_gains(dir, groups, base, prefixes):
    """One row per configuration and metric: the baseline's and the run's
    accuracy over the paired seeds, and the gain seed by seed."""
    print()
    print("| run | metric | seeds | baseline % | run % | gain per seed | gain, mean ± std |")
    print("|---|---|---|---|---|---|---|")
    skip = {os.path.realpath(p.rstrip("/")) for p in prefixes}
    for g, rs in groups.items():
        paired = [r for r in rs if r["seed"] in base]
        if not paired or os.path.realpath(os.path.join(dir, g)) in skip:
            continue
        seeds = ",".join(str(r["seed"]) for r in paired)
        for key, label in GAIN_METRICS:
            gains = [100 * (r[key] - base[r["seed"]][key]) for r in paired]
            print(f"| {g} | {label} | {seeds} "
                  f"| {fmt([base[r['seed']][key] for r in paired], 100)} | {fmt([r[key] for r in paired], 100)} "
                  f"| {', '.join(f'{x:+.2f}' for x in gains)} | {fmt(gains, sign=True)} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--baseline", action="append", default=[], metavar="PREFIX")
    ap.add_argument("dir")
    a = ap.parse_args()
    groups = load_runs(a.dir, a.target)
    if not groups:
        sys.exit(f"fedsum: no finished runs (NAME-seedN/summary.json) in {a.dir}")
    t = f"{100 * a.target:g} %"
    print(f"| run | seeds | rounds | final acc % | mean of last 5 rounds % | best acc % | wall s | peak RSS GiB | upload MB | round to {t} | upload MB to {t} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for g, rs in groups.items():
        reached = [r for r in rs if r["hit_round"] is not None]
        note = "" if len(reached) == len(rs) else f" ({len(reached)}/{len(rs)} seeds reached it)"
        print(f"| {g} | {','.join(str(r['seed']) for r in rs)} | {rs[0]['rounds']} "
              f"| {fmt([r['final'] for r in rs], 100)} | {fmt([r['last5'] for r in rs], 100)} | {fmt([r['best'] for r in rs], 100)} "
              f"| {fmt([r['wall'] for r in rs], 1, 0)} | {fmt([r['rss'] for r in rs], 1, 2)} "
              f"| {fmt([r['up'] for r in rs], 1e-6, 1)} "
              f"| {fmt([r['hit_round'] for r in reached], 1, 1)}{note} "
              f"| {fmt([r['hit_up'] for r in reached], 1e-6, 1)} |")
    if a.baseline:
        print_gains(a.dir, groups, load_baseline(a.baseline, a.target), a.baseline)


if __name__ == "__main__":
    main()
