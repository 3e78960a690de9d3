#!/usr/bin/env python3
"""Tables of the privacy comparison (scripts/privacy/run.sh): reads
OUT/seed*/<run>/{summary.json,metrics.jsonl,mia/report.json,lira/report.json,
leakage.json} and OUT/seed*/dlg/*.json and writes, in OUT,

  membership.csv / membership.md  accuracy, spent ε, loss-threshold and
                                   offline-LiRA AUC and TPR at 1% / 0.1% FPR
  dlg.csv / dlg.md                 PSNR, SSIM and label recovery of DLG/iDLG
  leakage.csv / leakage.md         nearest-real SSIM of the uploaded sets

as mean ± std over seeds (single-seed 95% bootstrap intervals are in each
report.json). Standard library only."""
import csv
import glob
import json
import math
import os
import re
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def last_metrics(path):
    try:
        with open(path) as f:
            lines = [l for l in f if l.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def mean_std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def fmt(m, s, digits=3, scale=1.0):
    if m is None:
        return "–"
    if s is None or s == 0:
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def order(name):
    m = re.match(r"([a-z]+)(_noise)?(_dp_eps([0-9.]+))?$", name)
    base = ["raw", "fedavg", "dm", "gm"]
    if not m:
        return (99, 0, 0, name)
    b = base.index(m.group(1)) if m.group(1) in base else 98
    eps = float(m.group(4)) if m.group(4) else float("inf")
    # non-private from real images, from noise, then private by falling ε
    return (b, -eps, 1 if m.group(2) else 0, name)


def write(out, stem, header, rows, title):
    with open(os.path.join(out, stem + ".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write(f"### {title}\n\n")
        f.write("| " + " | ".join(header) + " |\n")
        f.write("|" + "---|" * len(header) + "\n")
        for r in rows:
            f.write("| " + " | ".join(str(c) for c in r) + " |\n")
    print(f"wrote {stem}.csv and {stem}.md")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "results/privacy"
    seeds = sorted(glob.glob(os.path.join(out, "seed*")))
    runs = {}
    for sd in seeds:
        for d in glob.glob(os.path.join(sd, "*")):
            name = os.path.basename(d)
            if os.path.isdir(d) and name != "dlg":
                runs.setdefault(name, []).append(d)
    lira_kind = "LiRA"  # the attack's name in the reports: lira-online or lira-offline
    for d in (d for ds in runs.values() for d in ds):
        rep = load(os.path.join(d, "lira", "report.json"))
        if rep and rep.get("attack"):
            lira_kind = "LiRA (%s)" % rep["attack"].replace("lira-", "")
            break
    rows = []
    for name in sorted(runs, key=order):
        acc, eps, aucs, t1, t01, laucs, lt1, lt01 = ([] for _ in range(8))
        for d in runs[name]:
            s = load(os.path.join(d, "summary.json"))
            r = load(os.path.join(d, "result.json"))  # fedsim train (raw)
            if s:
                acc.append(s.get("final_test_acc"))
            elif r:
                acc.append(r.get("test_acc", r.get("final_test_acc")))
            m = last_metrics(os.path.join(d, "metrics.jsonl"))
            if m and "epsilon_max" in m:
                eps.append(m["epsilon_max"])
            for rep, a, b, c in ((load(os.path.join(d, "mia", "report.json")), aucs, t1, t01),
                                 (load(os.path.join(d, "lira", "report.json")), laucs, lt1, lt01)):
                if rep and rep.get("report"):
                    a.append(rep["report"]["auc"]["value"])
                    b.append(rep["report"]["tpr_at_1pct_fpr"]["value"])
                    c.append(rep["report"]["tpr_at_0.1pct_fpr"]["value"])
        rows.append([name, len(runs[name]), fmt(*mean_std(acc), 2, 100), fmt(*mean_std(eps), 2) if eps else "∞",
                     fmt(*mean_std(aucs)), fmt(*mean_std(t1), 2, 100), fmt(*mean_std(t01), 2, 100),
                     fmt(*mean_std(laucs)), fmt(*mean_std(lt1), 2, 100), fmt(*mean_std(lt01), 2, 100)])
    write(out, "membership", ["run", "seeds", "test acc (%)", "ε (δ = 1e-5)", "loss AUC", "loss TPR@1% (%)", "loss TPR@0.1% (%)",
                              lira_kind + " AUC", lira_kind + " TPR@1% (%)", lira_kind + " TPR@0.1% (%)"], rows,
          "Membership inference against the final model")

    dl = {}
    for sd in seeds:
        for f in glob.glob(os.path.join(sd, "dlg", "*.json")):
            r = load(f)
            if r and r.get("psnr_db"):
                dl.setdefault(os.path.basename(f)[:-5], []).append(r)
    rows = []
    for k in sorted(dl):
        ps = [p for r in dl[k] for p in r["psnr_db"] if p != float("inf")]
        ss = [s for r in dl[k] for s in r["ssim"]]
        ok = [int(a == b) for r in dl[k] for a, b in zip(r["labels_true"], r["labels_found"])]
        model, b = k.rsplit("_b", 1)
        rows.append([model, b, len(dl[k]), fmt(*mean_std(ps), 1), fmt(*mean_std(ss), 3), fmt(sum(ok) / len(ok), None, 2, 100)])
    write(out, "dlg", ["model", "batch", "seeds", "PSNR (dB)", "SSIM", "labels recovered (%)"], rows,
          "Gradient inversion of a FedAvg client's one-step update (DLG; iDLG labels at batch 1)")

    rows = []
    for name in sorted(runs, key=order):
        mean, mx = [], []
        for d in runs[name]:
            r = load(os.path.join(d, "leakage.json"))
            if r and r.get("nearest"):
                mean.append(r["mean_nearest_ssim"])
                mx.append(r["max_nearest_ssim"])
        if mean:
            rows.append([name, len(mean), fmt(*mean_std(mean)), fmt(*mean_std(mx))])
    write(out, "leakage", ["run", "seeds", "mean nearest-real SSIM", "max nearest-real SSIM"], rows,
          "Similarity of uploaded synthetic images to the nearest real image of their class")


if __name__ == "__main__":
    main()
