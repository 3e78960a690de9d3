#!/usr/bin/python3
# PyTorch side of the engine benchmark: the same workloads as the Go engine's
# benchmark, one JSON line per (workload, width) on stdout.
#
# Run from the repository root (needs Debian's python3-torch, i.e. /usr/bin/python3):
#
#     /usr/bin/python3 scripts/torch/bench.py --widths 32 --threads 2
#     /usr/bin/python3 scripts/torch/bench.py --widths 128,32 --workloads train_step,dm_step,gm_step,sgemm
#     /usr/bin/python3 scripts/torch/bench.py --widths 32 --isolate   # one process per workload
#
# Schema (sgemm has no ConvNet: its width and batch are the matrix size n, also as "n"):
#         {"impl":"pytorch","workload":"train_step|dm_step|gm_step|sgemm","width":W,
#          "batch":B,"ms_median":...,"peak_rss_mb":...,"gflops":(sgemm only),
#          "threads":T,"torch":version}, plus "ms_min" and "repeats" (the median is
#          what to compare; ms_min helps on a loaded machine).
# Model: ConvNet (scripts/torch/convnet.py), 1x28x28 input (first pad 3), 10
# classes, float32, batch 256. Peak RSS is the process's VmHWM after the
# workload, with the counter reset (write "5" to /proc/self/clear_refs) before it;
# it includes torch's own resident memory (~230 MB, printed to stderr) and, without
# --isolate, memory the allocator kept from earlier workloads.

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnet import ConvNet, match_loss, perturb_norms  # noqa: E402

NUM_CLASSES = 10
IM = 28
CHANNELS = 1
SGEMM_N = 1024
WORKLOADS = ["train_step", "dm_step", "gm_step", "sgemm"]


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux or not permitted: VmHWM is then the peak since start


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB -> MB
    except OSError:
        pass
    return None


def base_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def make_net(width, seed):
    torch.manual_seed(seed)
    net = ConvNet(CHANNELS, width, NUM_CLASSES, IM)
    perturb_norms(net)
    return net


def time_steps(step, warmup, repeats):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def setup_train_step(width, batch):
    net = make_net(width, 1)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(batch, CHANNELS, IM, IM, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    return step


def setup_dm_step(width, batch):
    net = make_net(width, 2)
    for p in net.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(batch, CHANNELS, IM, IM, generator=gen).requires_grad_(True)
    target = torch.randn(width * net.feat_hw * net.feat_hw, generator=gen)

    def step():
        x.grad = None
        emb = net.embed(x)
        loss = ((emb.mean(0) - target) ** 2).sum()
        loss.backward()
        return x.grad

    return step


def setup_gm_step(width, batch):
    net = make_net(width, 3)
    params = net.params()
    gen = torch.Generator().manual_seed(13)
    x_real = torch.randn(batch, CHANNELS, IM, IM, generator=gen)
    y_real = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    g_real = [g.detach() for g in
              torch.autograd.grad(F.cross_entropy(net(x_real), y_real), params)]
    x0 = torch.randn(batch, CHANNELS, IM, IM, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)

    def step():
        x = x0.clone().requires_grad_(True)
        loss = F.cross_entropy(net(x), y)
        g_syn = torch.autograd.grad(loss, params, create_graph=True)
        dist = match_loss(g_syn, g_real)
        (gx,) = torch.autograd.grad(dist, x)
        return gx

    return step


def setup_sgemm():
    gen = torch.Generator().manual_seed(14)
    a = torch.randn(SGEMM_N, SGEMM_N, generator=gen)
    b = torch.randn(SGEMM_N, SGEMM_N, generator=gen)

    def step():
        return torch.mm(a, b)

    return step


def run(workload, width, batch, threads, warmup, repeats):
    gc.collect()
    reset_peak_rss()
    if workload == "sgemm":
        step = setup_sgemm()
    else:
        step = {"train_step": setup_train_step, "dm_step": setup_dm_step,
                "gm_step": setup_gm_step}[workload](width, batch)
    med, best = time_steps(step, warmup, repeats)
    rec = {"impl": "pytorch", "workload": workload, "width": width, "batch": batch,
           "ms_median": round(med * 1e3, 3),
           "ms_min": round(best * 1e3, 3), "repeats": repeats, "peak_rss_mb": peak_rss_mb()}
    if workload == "sgemm":
        # no ConvNet here: width and batch carry the matrix size n (n x n times n x n)
        rec["width"] = SGEMM_N
        rec["batch"] = SGEMM_N
        rec["n"] = SGEMM_N
        rec["gflops"] = round(2 * SGEMM_N ** 3 / med / 1e9, 2)
    rec["threads"] = threads
    rec["torch"] = torch.__version__
    del step
    gc.collect()
    return rec


def main():
    ap = argparse.ArgumentParser(description="PyTorch side of the engine benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--widths", default="128,32", help="comma-separated ConvNet widths")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=0,
                    help="timed steps per workload (default: 5 for width >= 128, else 10)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--isolate", action="store_true",
                    help="run each (workload, width) in a fresh child process, so peak_rss_mb "
                         "is not raised by memory the allocator kept from earlier workloads")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            ap.error("unknown workload %r (want some of %s)" % (w, ",".join(WORKLOADS)))
    widths = [int(w) for w in args.widths.split(",") if w]

    gc.collect()
    if not args.isolate:
        print("# baseline VmRSS after importing torch: %.1f MB (peak_rss_mb includes it)"
          % base_rss_mb(), file=sys.stderr)
    sgemm_done = False
    for width in widths:
        repeats = args.repeats or (5 if width >= 128 else 10)
        for w in workloads:
            if w == "sgemm":
                if sgemm_done:
                    continue  # independent of width: run once
                sgemm_done = True
            if args.isolate:
                subprocess.run([sys.executable, os.path.abspath(__file__),
                                "--threads", str(args.threads), "--batch", str(args.batch),
                                "--warmup", str(args.warmup), "--repeats", str(repeats),
                                "--widths", str(width), "--workloads", w], check=True)
                continue
            rec = run(w, width, args.batch, args.threads, args.warmup, repeats)
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
