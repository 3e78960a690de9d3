#!/usr/bin/python3
# Golden values for data/dcaug.go: DC's non-differentiable augmentation
# (the DC reference's utils.py augment) at fixed parameters, computed with
# the library calls the reference makes: F.interpolate (nearest) for
# scale and scipy.ndimage.rotate (reshape, constant fill) for rotate,
# here at order 1 (bilinear), the interpolation fedsim implements; the
# reference uses scipy's default cubic spline.
#
# Run from the repository root:
#
#     /usr/bin/python3 scripts/torch/make_dcaug_fixtures.py [--out testdata/golden/dcaug.npz]
#
# It needs Debian's python3-torch and python3-scipy. The output is
# deterministic. The npz holds, for a batch x of shape (2, C, H, W) with
# (C, H, W) in {(1, 28, 28), (3, 32, 32)} (key prefix "c1_" or "c3_"):
#   x                          the batch (float32 values, stored as float64)
#   crop_{r}_{c}               image 0 after crop with offsets (r, c), pad 4
#   scale_{h}_{w}              image 0 after scale to h×w
#   rotate_{deg}               image 0 after rotate by deg degrees
# Fill values follow the reference: the batch's channel means (crop) and
# their mean (rotate); scale fills with zeros.

import argparse
import io
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import rotate as scipy_rotate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import normalize_zip  # noqa: E402

CROPS = [(0, 0), (3, 5), (7, 7), (4, 4)]
SCALES = [(22, 33), (28, 28), (24, 31), (33, 22), (25, 25)]
ANGLES = [-45, -30, -7, 0, 1, 13, 44]
PAD = 4


def crop(img, mean, r, c):
    ch, h, w = img.shape
    canvas = np.empty((ch, h + 2 * PAD, w + 2 * PAD), dtype=np.float64)
    for k in range(ch):
        canvas[k] = mean[k]
    canvas[:, PAD:PAD + h, PAD:PAD + w] = img
    return canvas[:, r:r + h, c:c + w]


def scale(img, h, w):
    ch, ih, iw = img.shape
    t = F.interpolate(torch.tensor(img, dtype=torch.float32)[None], [h, w])[0].double().numpy()
    m = max(h, w, ih, iw)
    canvas = np.zeros((ch, m, m))
    r, c = int((m - h) / 2), int((m - w) / 2)
    canvas[:, r:r + h, c:c + w] = t
    r, c = int((m - ih) / 2), int((m - iw) / 2)
    return canvas[:, r:r + ih, c:c + iw]


def rotate(img, deg, fill):
    ch, h, w = img.shape
    out = scipy_rotate(img, angle=deg, axes=(-2, -1), cval=fill, order=1)
    r, c = int((out.shape[-2] - h) / 2), int((out.shape[-1] - w) / 2)
    return out[:, r:r + h, c:c + w]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join("testdata", "golden", "dcaug.npz"))
    args = ap.parse_args()
    rng = np.random.default_rng(20261127)
    arrays = {}
    for ch, im in [(1, 28), (3, 32)]:
        # A digit-like image: a bright stroke on a dark background, plus noise.
        x = rng.normal(size=(2, ch, im, im)) * 0.3 - 0.4
        x[:, :, im // 4:3 * im // 4, im // 2 - 2:im // 2 + 2] += 2.5
        x[:, :, im // 3, im // 4:3 * im // 4] += 2.0
        x = x.astype(np.float32).astype(np.float64)
        p = "c%d_" % ch
        arrays[p + "x"] = x
        mean = [float(np.float32(x[:, k].mean())) for k in range(ch)]
        img = x[0]
        for r, c in CROPS:
            arrays[p + "crop_%d_%d" % (r, c)] = crop(img, mean, r, c)
        for h, w in SCALES:
            arrays[p + "scale_%d_%d" % (h, w)] = scale(img, h, w)
        fill = float(np.float32(np.mean(mean)))
        for deg in ANGLES:
            arrays[p + "rotate_%d" % deg] = rotate(img.astype(np.float64), deg, fill)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(normalize_zip(buf.getvalue()))
    os.replace(tmp, args.out)
    print("wrote %s (%d bytes, %d arrays, torch %s)" % (args.out, os.path.getsize(args.out), len(arrays), torch.__version__))


if __name__ == "__main__":
    main()
