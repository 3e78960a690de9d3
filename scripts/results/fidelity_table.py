#!/usr/bin/env python3
"""The fidelity table of issue 4 from the folders scripts/results/fidelity.sh
leaves: one row per method-ipcK-iters folder, with each side's accuracies
per seed (mean ± population std, as the DC/DSA/DM code reports), the
difference of the means, and the paired differences (same seed on both
sides) with their mean, sample std and 95 % t-interval.

Usage: fidelity_table.py DIR [DIR ...]   (DIR: results/fidelity/dm-ipc10-200)
"""
import glob
import json
import os
import re
import statistics
import sys

# Two-sided 95 % quantiles of Student's t, by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365,
        8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160,
        14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042}


def t975(df):
    if df in T975:
        return T975[df]
    below = [k for k in T975 if k <= df]
    return T975[max(below)]  # conservative between table entries; 2.042 past 30


def side(d, impl):
    """Seed -> accuracy % of every evaluated seed folder of one side."""
    accs = {}
    for f in glob.glob(os.path.join(d, impl + "-s*", "eval.json")):
        m = re.search(r"-s(\d+)$", os.path.dirname(f))
        if m is None:  # a folder such as fedsim-s3-old is not a seed's
            continue
        try:
            with open(f) as fh:
                e = json.load(fh)
            accs[int(m.group(1))] = 100 * e["evaluations"][0]["acc_mean"]
        except (ValueError, KeyError, IndexError) as err:
            # An evaluation still running leaves an empty eval.json.
            print("fidelity_table: %s left out: %s" % (f, err), file=sys.stderr)
    return dict(sorted(accs.items()))


def cell(a):
    if not a:
        return "–"
    v = list(a.values())
    sd = statistics.pstdev(v) if len(v) > 1 else 0.0
    return "%.2f ± %.2f (%s)" % (statistics.fmean(v), sd, ", ".join("%.2f" % x for x in v))


def main(dirs):
    print("| method | IPC | iterations | seeds | fedsim % (per seed) | reference loops in PyTorch % (per seed) "
          "| difference of the means | paired differences: mean ± std, 95 % interval |")
    print("|---|---|---|---|---|---|---|---|")
    for d in dirs:
        m, k, it = os.path.basename(os.path.normpath(d)).split("-")
        f, p = side(d, "fedsim"), side(d, "pytorch")
        diff = "–"
        if f and p:
            diff = "%+.2f" % (statistics.fmean(f.values()) - statistics.fmean(p.values()))
        both = [s for s in f if s in p]
        paired = "–"
        if len(both) > 1:
            ds = [f[s] - p[s] for s in both]
            mean, sd = statistics.fmean(ds), statistics.stdev(ds)
            half = t975(len(ds) - 1) * sd / len(ds) ** 0.5
            paired = "%+.2f ± %.2f, [%+.2f, %+.2f]" % (mean, sd, mean - half, mean + half)
        seeds = sorted(set(f) | set(p))
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            m, k[3:], it, ", ".join(map(str, seeds)), cell(f), cell(p), diff, paired))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: fidelity_table.py DIR [DIR ...]")
    main(sys.argv[1:])
