#!/usr/bin/env python3
"""Table of synthetic sets under two evaluation protocols (eval_protocols.sh).

Usage: scripts/results/protocol_summary.py DIR...      (standard library only)
       scripts/results/protocol_summary.py --has-dsa DIR   exit 0 if DIR's dsa score exists

Per method and IPC (from DIR/report.json): mean ± std over the sets (seeds)
of each set's mean accuracy, and each set's own, under
  dsa: DIR/eval-protocols/dsa-e1000.json, else report.json's evaluation of
       the final set by a ConvNet at 1000 epochs with the default DSA;
  dc:  DIR/eval-protocols/dc-crop_scale_rotate-e1000.json.
"""
import json
import os
import statistics
import sys
from collections import defaultdict


def load(path):
    with open(path) as f:
        return json.load(f)


def dsa_score(d):
    p = os.path.join(d, "eval-protocols", "dsa-e1000.json")
    if os.path.exists(p):
        e = load(p)["evaluations"][0]
        return e["acc_mean"], e["runs"]
    rep = load(os.path.join(d, "report.json"))
    for e in rep.get("evaluations") or []:
        aug = e.get("augmentation", "dsa:default")  # reports before --dc-augment: always the default DSA
        if e["iteration"] == rep["iterations"] and e["model"] == "convnet" and e["epochs"] == 1000 and aug.startswith("dsa:"):
            return e["acc_mean"], e["runs"]
    return None


def dc_score(d):
    p = os.path.join(d, "eval-protocols", "dc-crop_scale_rotate-e1000.json")
    if not os.path.exists(p):
        return None
    e = load(p)["evaluations"][0]
    return e["acc_mean"], e["runs"]


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    if args[0] == "--has-dsa":
        sys.exit(0 if dsa_score(args[1]) else 1)
    groups = defaultdict(list)
    for d in args:
        rep = load(os.path.join(d, "report.json"))
        groups[(rep["method"], rep["ipc"], rep["iterations"])].append((rep["seed"], dsa_score(d), dc_score(d)))
    print("| method | IPC | iterations | seeds | DSA protocol % | DC's augmentation % | per seed (DSA / DC) |")
    print("|---|---|---|---|---|---|---|")

    def cell(v):
        v = [100 * x[0] for x in v if x]
        if not v:
            return "not run"
        return "%.2f ± %.2f" % (statistics.mean(v), statistics.pstdev(v)) if len(v) > 1 else "%.2f" % v[0]

    for (m, ipc, it), rs in sorted(groups.items()):
        rs.sort()
        per = ", ".join("s%d %s / %s" % (s, "%.2f" % (100 * a[0]) if a else "–", "%.2f" % (100 * b[0]) if b else "–") for s, a, b in rs)
        print("| %s | %d | %d | %s | %s | %s | %s |" % (m, ipc, it, ",".join(str(s) for s, _, _ in rs),
                                                        cell([a for _, a, _ in rs]), cell([b for _, _, b in rs]), per))


if __name__ == "__main__":
    main()
