#!/usr/bin/python3
# Golden values for the Go engine's ConvNet, computed by PyTorch in float64.
#
# Run from the repository root:
#
#     /usr/bin/python3 scripts/torch/make_fixtures.py [--out testdata/golden/convnet.npz]
#
# It needs Debian's python3-torch (PyTorch 1.13 CPU) and numpy, i.e. the
# system interpreter /usr/bin/python3 (another python3 may come first on PATH).
# The output is deterministic: fixed seeds, one thread, float64 throughout.
#
# For each config cfg in {mnist: (8,1,28,28), cifar: (8,3,32,32)}, width 32,
# 10 classes, the npz holds (float64 unless noted):
#   {cfg}_param_{name}    parameters (PyTorch default init, norm affine perturbed;
#                         values are float32-representable)
#   {cfg}_x, {cfg}_y      real batch (8 images) and int64 labels
#   {cfg}_logits          net(x), (8, 10)
#   {cfg}_loss            cross-entropy (mean), shape ()
#   {cfg}_grad_{name}     d loss / d param
#   {cfg}_grad_x          d loss / d x
#   {cfg}_embed           flattened features before fc, (8, 32*16)
#   {cfg}_xsyn, {cfg}_ysyn  synthetic batch (4 images) and int64 labels
#   {cfg}_gm_loss         gradient-matching distance (distance_wb, 'ours'), shape ()
#   {cfg}_gm_grad_xsyn    d gm_loss / d xsyn
#   {cfg}_gm_grad_{name}  d gm_loss / d param (second order through g_S; g_T is constant)
#   {cfg}_dm_loss         sum((mean_0 embed(x) - mean_0 embed(xsyn))^2), shape ()
#   {cfg}_dm_grad_xsyn    d dm_loss / d xsyn
#
# Note: a conv bias followed by instance norm cancels out, so the conv*.bias
# gradients are zero up to rounding (~1e-17): compare them with an absolute
# tolerance.

import argparse
import io
import os
import sys
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnet import PARAM_NAMES, ConvNet, gm_distance, perturb_norms  # noqa: E402

WIDTH = 32
NUM_CLASSES = 10
N_REAL = 8
N_SYN = 4

CONFIGS = [
    # name, channels, image size, seed
    ("mnist", 1, 28, 1234),
    ("cifar", 3, 32, 5678),
]


def functional_forward(params, x, pads, want_embed=False):
    """Pure-function ConvNet (same math as convnet.ConvNet) for gradcheck."""
    p = dict(zip(PARAM_NAMES, params))
    h = x
    for i in range(3):
        h = F.conv2d(h, p["conv%d.weight" % i], p["conv%d.bias" % i], padding=pads[i])
        h = F.group_norm(h, h.shape[1], p["norm%d.weight" % i], p["norm%d.bias" % i], eps=1e-5)
        h = F.relu(h)
        h = F.avg_pool2d(h, 2, stride=2)
    emb = h.reshape(h.shape[0], -1)
    if want_embed:
        return emb
    return F.linear(emb, p["fc.weight"], p["fc.bias"])


def self_check():
    """gradcheck / gradgradcheck on tiny nets so the fixture's math is trustworthy."""
    from convnet import match_loss

    for channels, im in ((1, 28), (2, 8)):
        torch.manual_seed(7)
        net = ConvNet(channels, 3, 5, im)
        perturb_norms(net)
        net = net.double()
        params = [t.detach().clone().requires_grad_(True) for t in net.params()]
        pads = net.pads
        x = torch.randn(3, channels, im, im, dtype=torch.float64, requires_grad=True)
        y = torch.tensor([0, 3, 1])
        xs = torch.randn(2, channels, im, im, dtype=torch.float64, requires_grad=True)
        ys = torch.tensor([3, 0])

        # the module and the functional form agree
        with torch.no_grad():
            a = net(x)
            b = functional_forward(params, x, pads)
        assert torch.allclose(a, b, rtol=0, atol=1e-13), "module/functional mismatch"

        def ce(x, *ps):
            return F.cross_entropy(functional_forward(ps, x, pads), y)

        assert torch.autograd.gradcheck(ce, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4)

        # gradient matching: the distance is differentiable w.r.t. xsyn and params
        g_real = [g.detach() for g in torch.autograd.grad(ce(x, *params), params)]

        def gm(xs, *ps):
            loss = F.cross_entropy(functional_forward(ps, xs, pads), ys)
            g_syn = torch.autograd.grad(loss, ps, create_graph=True)
            return match_loss(g_syn, g_real)

        # (conv biases cancel under instance norm: their analytic and numeric
        # gradients are both ~0, which the atol accepts.)
        assert torch.autograd.gradcheck(gm, (xs, *params), eps=1e-6, atol=1e-5, rtol=1e-3)

        # distribution matching
        def dm(xs, *ps):
            er = functional_forward(ps, x.detach(), pads, want_embed=True).mean(0)
            es = functional_forward(ps, xs, pads, want_embed=True).mean(0)
            return ((er - es) ** 2).sum()

        assert torch.autograd.gradcheck(dm, (xs, *params), eps=1e-6, atol=1e-6, rtol=1e-4)
    print("self-check: gradcheck passed (CE, gradient matching, distribution matching)")


def make_config(name, channels, im, seed):
    torch.manual_seed(seed)
    net = ConvNet(channels, WIDTH, NUM_CLASSES, im)  # default init, float32
    perturb_norms(net)
    x32 = torch.randn(N_REAL, channels, im, im)
    y = torch.randperm(NUM_CLASSES)[:N_REAL]
    xsyn32 = torch.randn(N_SYN, channels, im, im)
    ysyn = y[torch.randperm(N_REAL)[:N_SYN]].clone()  # syn labels drawn from the real ones

    net = net.double()
    params = net.params()
    x = x32.double().requires_grad_(True)
    xsyn = xsyn32.double().requires_grad_(True)

    out = {}
    for n, p in zip(PARAM_NAMES, params):
        out["%s_param_%s" % (name, n)] = p.detach()
    out["%s_x" % name] = x.detach()
    out["%s_y" % name] = y

    # plain forward / backward
    emb = net.embed(x)
    logits = net.fc(emb)
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, params + [x])
    out["%s_logits" % name] = logits.detach()
    out["%s_loss" % name] = loss.detach()
    for n, g in zip(PARAM_NAMES, grads[:-1]):
        out["%s_grad_%s" % (name, n)] = g
    out["%s_grad_x" % name] = grads[-1]
    out["%s_embed" % name] = emb.detach()
    assert emb.shape == (N_REAL, WIDTH * 16)

    # gradient matching
    g_real = [g.detach() for g in grads[:-1]]
    out["%s_xsyn" % name] = xsyn.detach()
    out["%s_ysyn" % name] = ysyn
    dist = gm_distance(net, params, xsyn, ysyn, g_real)
    gm_grads = torch.autograd.grad(dist, [xsyn] + params, allow_unused=True)
    gm_grads = [torch.zeros_like(t) if g is None else g for g, t in zip(gm_grads, [xsyn] + params)]
    out["%s_gm_loss" % name] = dist.detach()
    out["%s_gm_grad_xsyn" % name] = gm_grads[0]
    for n, g in zip(PARAM_NAMES, gm_grads[1:]):
        out["%s_gm_grad_%s" % (name, n)] = g

    # distribution matching
    with torch.no_grad():
        mean_real = net.embed(x).mean(0)
    dm = ((mean_real - net.embed(xsyn).mean(0)) ** 2).sum()
    (dm_grad,) = torch.autograd.grad(dm, xsyn)
    out["%s_dm_loss" % name] = dm.detach()
    out["%s_dm_grad_xsyn" % name] = dm_grad

    arrays = {}
    for k, v in out.items():
        a = v.detach().cpu().numpy()
        # np.array, not np.ascontiguousarray: the latter turns shape () into (1,)
        dtype = np.int64 if a.dtype == np.int64 else np.float64
        arrays[k] = np.array(a, dtype=dtype, order="C", copy=True)
    return arrays


def normalize_zip(data):
    """Re-store the zip entries with a fixed timestamp so the file is byte-identical run to run."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename), compresslevel=9)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join("testdata", "golden", "convnet.npz"))
    ap.add_argument("--skip-check", action="store_true", help="skip the gradcheck self-check")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if not args.skip_check:
        self_check()

    arrays = {}
    for name, channels, im, seed in CONFIGS:
        arrays.update(make_config(name, channels, im, seed))

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    # savez_compressed: parameters and inputs are float32-representable float64,
    # whose zero low mantissa bits deflate well; keeps the file under 2 MB.
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = normalize_zip(buf.getvalue())
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)

    print("wrote %s (%d bytes, %d arrays, torch %s)" % (
        args.out, os.path.getsize(args.out), len(arrays), torch.__version__))
    for k, a in arrays.items():
        extra = ""
        if a.ndim == 0:
            extra = " = %.17g" % a
        print("  %-28s %-8s %s%s" % (k, a.dtype, tuple(a.shape), extra))


if __name__ == "__main__":
    main()
