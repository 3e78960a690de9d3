#!/usr/bin/python3
# PyTorch side of the distillation-method speed comparison (issue 4): the time
# per outer iteration of DC, DSA, DM and MTT as the authors' reference code
# runs them on MNIST, one JSON line per (method, IPC) on stdout.
#
# Run from the repository root with Debian's python3-torch (/usr/bin/python3):
#
#     /usr/bin/python3 scripts/torch/distill_bench.py --methods dm --ipc 1 --iters 20 --warmup 2
#     /usr/bin/python3 scripts/torch/distill_bench.py --methods dc,dsa,dm,mtt     # every default setting
#
# scripts/distill_bench.sh runs this next to `fedsim distill` with the same
# hyper-parameters and prints the comparison table.
#
# Schema: {"impl":"pytorch","method":"dc|dsa|dm|mtt","ipc":K,"s_per_iter_median":...,
#          "s_per_iter_mean":...,"iters":N,"threads":T, ...} plus "warmup",
#          "s_per_iter_min", "times" (every timed iteration), "hp" (the
#          hyper-parameters used), "data" ("mnist" or "random"), "experts"
#          (mtt: "random"), "peak_rss_mb", "torch".
#
# What one outer iteration is (the reference code this re-implements; read for
# facts and structure, not copied; "DC" = VICO-UoE/DatasetCondensation @ 53f63a67,
# "MTT" = GeorgeCazenavette/mtt-distillation @ 50dccea4):
#   dc/dsa  DC main.py lines 147-215: a fresh ConvNet; outer_loop times: per class a
#           real batch of batch_real (get_images, main.py 79-81) and the class's
#           synthetic images (dsa: both through DiffAugment with the same seed),
#           the real gradient without a graph, the synthetic one with create_graph,
#           match_loss 'ours' summed over classes, one backward, SGD on the images
#           (lr_img, momentum 0.5); between outer steps inner_loop epochs of the net
#           on the synthetic set (DataLoader batch_train 256, SGD lr_net; dsa: per-sample
#           DiffAugment; utils.py epoch 297-333).
#   dm      DC main_DM.py lines 139-168 (ConvNet branch) and the image step after it:
#           a fresh ConvNet with frozen parameters, per class a real batch and the
#           synthetic images through DiffAugment with the same seed, the squared
#           distance of the mean embeddings summed over classes, one backward, SGD
#           on the images (lr_img 1, momentum 0.5).
#   mtt     MTT distill.py lines 294-402: a fresh student (built as the reference
#           does, only its structure is used), an expert and a start epoch, the
#           flat parameter vector, syn_steps unrolled SGD steps with the learnable
#           step size (create_graph=True; per-sample DiffAugment of the minibatch),
#           the normalized parameter distance, one backward to the images and the
#           step size, SGD on both (momentum 0.5).
# Not timed: loading the data, building the synthetic set and the expert
# buffer, evaluation (the reference evaluates every 500/2000/100 iterations;
# fedsim is run with --eval-runs 0).
#
# Differences from the reference that can only make PyTorch faster, kept on
# purpose so that the comparison is conservative:
#   - DiffAugment builds the scale/rotate matrices with tensor ops; the reference
#     builds them from a Python list of per-sample tensors (utils.py 532-534, 546-548).
#   - Synthetic-set evaluation, wandb logging, image saving and prints are left out.
# Differences that do not change the work:
#   - With --random-data (or when the MNIST files are not found) the real images
#     are standard-normal noise of MNIST's shape (60000 x 1 x 28 x 28, 6000 per class).
#   - MTT's experts are random: each trajectory starts at a fresh ConvNet
#     initialisation and moves by Gaussian noise (0.01 per value) per epoch.
#     The time of an iteration does not depend on what the experts learned.
#     They are held in memory as lists of tensors, as MTT's buffer files are
#     after torch.load (fedsim reads and inflates two checkpoints from its
#     buffer files every iteration).
#   - The Siamese draws of DiffAugment come from a torch.Generator re-seeded
#     before each draw (seed, seed+1, ...), the same scheme as the reference's
#     set_seed_DiffAug on the global generator.
#   - affine_grid/grid_sample use align_corners=True, the behaviour of the
#     torch 1.2 the DC repository pins (and fedsim's).

import argparse
import gc
import glob
import gzip
import json
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convnet import ConvNet, match_loss  # noqa: E402

NUM_CLASSES = 10
CHANNELS = 1
IM = 28
WIDTH = 128  # DC utils.py get_default_convnet_setting (line 119); MTT utils.py the same
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # DC utils.py get_dataset lines 17-18
DIGITS = "color_crop_cutout_scale_rotate"  # DC readme.md line 113: no flip for MNIST
METHODS = ["dc", "dsa", "dm", "mtt"]
DEFAULT_IPCS = {"dc": [1, 10], "dsa": [1, 10], "dm": [1, 10, 50], "mtt": [1, 10]}


def get_loops(ipc):
    """(outer_loop, inner_loop) of DC utils.py get_loops (lines 275-293)."""
    table = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
    if ipc not in table:
        raise SystemExit("the reference defines no loops for ipc %d (DC utils.py get_loops)" % ipc)
    return table[ipc]


# MTT has no MNIST loader (MTT utils.py get_dataset: CIFAR10, CIFAR100, Tiny,
# ImageNet); these are the CIFAR-10 rows "provided by the author" in DC-BENCH
# (justincui03/dc_benchmark methods/tm/readme.md lines 48, 52, 56), without ZCA.
MTT_ROWS = {
    1: dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=100.0, lr_lr=1e-7, lr_teacher=0.01),
    10: dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100.0, lr_lr=1e-5, lr_teacher=0.001),
    50: dict(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.001),
}


def default_iters(method, ipc):
    """(warmup, timed iterations) when --warmup/--iters are not given."""
    if method in ("dc", "dsa"):
        return (1, 10) if ipc == 1 else (1, 3)
    if method == "dm":
        return 2, 20
    return (1, 10) if ipc == 1 else (1, 5)


# ---------------------------------------------------------------- real data


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_mnist(data_dir):
    dirs = []
    if data_dir:
        dirs += [os.path.join(data_dir, "mnist"), os.path.join(data_dir, "MNIST", "raw"), data_dir]
    modcache = os.environ.get("GOMODCACHE") or os.path.join(
        os.environ.get("GOPATH") or os.path.expanduser("~/go"), "pkg", "mod")
    dirs += sorted(glob.glob(os.path.join(modcache, "github.com", "petar", "*", "data")))
    for d in dirs:
        for suffix in (".gz", ""):
            ip = os.path.join(d, "train-images-idx3-ubyte" + suffix)
            lp = os.path.join(d, "train-labels-idx1-ubyte" + suffix)
            if os.path.isfile(ip) and os.path.isfile(lp):
                return ip, lp
    return None


class RealData:
    """The training set as the reference organises it (DC main.py lines 65-81):
    one tensor of all images, a Python list of indices per class, and
    get_images(c, n) = n random images of class c without replacement."""

    def __init__(self, data_dir, random_data):
        found = None if random_data else find_mnist(data_dir)
        if found:
            x = read_idx(found[0]).astype(np.float32) / 255.0
            y = read_idx(found[1]).astype(np.int64)
            x = (x - MNIST_MEAN) / MNIST_STD
            self.images_all = torch.from_numpy(x).unsqueeze(1).contiguous()
            labels = y.tolist()
            self.source = "mnist"
        else:
            n = 60000
            self.images_all = torch.randn(n, CHANNELS, IM, IM)
            labels = [i % NUM_CLASSES for i in range(n)]
            self.source = "random"
        self.indices_class = [[] for _ in range(NUM_CLASSES)]
        for i, lab in enumerate(labels):
            self.indices_class[lab].append(i)

    def get_images(self, c, n):
        idx = np.random.permutation(self.indices_class[c])[:n]
        return self.images_all[idx]


# ---------------------------------------------------------------- network


class RefConvNet(ConvNet):
    """scripts/torch/convnet.py's ConvNet (width 128, depth 3, GroupNorm(128, 128)
    affine, avg-pool 2x2, first conv padding 3 for 28x28 inputs: 2048 features)
    with the reference's in-place ReLU (DC networks.py line 59, MTT networks.py
    line 48: nn.ReLU(inplace=True))."""

    def embed(self, x):
        for i in range(3):
            x = getattr(self, "conv%d" % i)(x)
            x = getattr(self, "norm%d" % i)(x)
            x = F.relu(x, inplace=True)
            x = F.avg_pool2d(x, 2, stride=2)
        return x.reshape(x.shape[0], -1)


def new_net():
    # get_network (DC utils.py 124-209): a freshly initialised ConvNet, train mode.
    net = RefConvNet(CHANNELS, WIDTH, NUM_CLASSES, IM)
    net.train()
    return net


# ---------------------------------------------------------------- DSA


class _Draws:
    """Random draws of one DiffAugment call. Unseeded (seed -1): per-sample
    parameters from the global generator. Seeded (Siamese): every draw comes
    from a generator re-seeded with seed, seed+1, ... and sample 0's value is
    given to the whole batch, so two calls with the same seed transform their
    batches identically whatever their sizes (DC utils.py set_seed_DiffAug and
    the `theta[:] = theta[0]` lines)."""

    def __init__(self, seed):
        self.siamese = seed != -1
        self.seed = seed
        self.gen = torch.Generator() if self.siamese else None

    def _gen(self):
        if not self.siamese:
            return None
        self.gen.manual_seed(self.seed)
        self.seed += 1
        return self.gen

    def _share(self, t):
        if self.siamese:
            t[:] = t[0].clone()
        return t

    def rand(self, *size):
        return self._share(torch.rand(*size, generator=self._gen()))

    def randint(self, low, high, size):
        return self._share(torch.randint(low, high, size, generator=self._gen()))


class DiffAugment:
    """DSA's differentiable augmentation in mode 'S' (one family per call),
    with ParamDiffAug's magnitudes (DC utils.py lines 474-485)."""

    prob_flip = 0.5
    ratio_scale = 1.2
    ratio_rotate = 15.0
    ratio_crop_pad = 0.125
    ratio_cutout = 0.5
    brightness = 1.0
    saturation = 2.0
    contrast = 0.5

    def __init__(self, strategy):
        self.families = [f for f in strategy.split("_") if f]
        ops = {"color": [self.brightness_op, self.saturation_op, self.contrast_op], "crop": [self.crop_op],
               "cutout": [self.cutout_op], "flip": [self.flip_op], "scale": [self.scale_op],
               "rotate": [self.rotate_op]}
        for f in self.families:
            if f not in ops:
                raise SystemExit("unknown DSA family %r in strategy %r" % (f, strategy))
        self.ops = ops

    def __call__(self, x, seed=-1):
        d = _Draws(seed)
        fam = self.families[int(d.randint(0, len(self.families), (1,)).item())]
        for op in self.ops[fam]:
            x = op(x, d)
        return x.contiguous()

    @staticmethod
    def _affine(x, theta):
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def scale_op(self, x, d):
        n, r = x.shape[0], self.ratio_scale
        sx = d.rand(n) * (r - 1.0 / r) + 1.0 / r
        sy = d.rand(n) * (r - 1.0 / r) + 1.0 / r
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = sx
        theta[:, 1, 1] = sy
        return self._affine(x, theta)

    def rotate_op(self, x, d):
        n = x.shape[0]
        a = (d.rand(n) - 0.5) * 2 * self.ratio_rotate / 180 * math.pi
        c, s = torch.cos(a), torch.sin(a)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = c, -s
        theta[:, 1, 0], theta[:, 1, 1] = s, c
        return self._affine(x, theta)

    def flip_op(self, x, d):
        u = d.rand(x.shape[0], 1, 1, 1)
        return torch.where(u < self.prob_flip, x.flip(3), x)

    def brightness_op(self, x, d):
        u = d.rand(x.shape[0], 1, 1, 1)
        return x + (u - 0.5) * self.brightness

    def saturation_op(self, x, d):
        m = x.mean(dim=1, keepdim=True)
        u = d.rand(x.shape[0], 1, 1, 1)
        return (x - m) * (u * self.saturation) + m

    def contrast_op(self, x, d):
        m = x.mean(dim=[1, 2, 3], keepdim=True)
        u = d.rand(x.shape[0], 1, 1, 1)
        return (x - m) * (u + self.contrast) + m

    def crop_op(self, x, d):
        # Shift by up to round(0.125 * size) pixels with zero fill: gather from
        # the image padded by one zero pixel, indices clamped into the border.
        n, _, h, w = x.shape
        shx, shy = int(h * self.ratio_crop_pad + 0.5), int(w * self.ratio_crop_pad + 0.5)
        tx = d.randint(-shx, shx + 1, (n, 1, 1))
        ty = d.randint(-shy, shy + 1, (n, 1, 1))
        rows = (torch.arange(h).view(1, h, 1) + tx + 1).clamp(0, h + 1)
        cols = (torch.arange(w).view(1, 1, w) + ty + 1).clamp(0, w + 1)
        b = torch.arange(n).view(n, 1, 1)
        padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
        return padded[b, rows, cols].permute(0, 3, 1, 2)

    def cutout_op(self, x, d):
        n, _, h, w = x.shape
        ch, cw = int(h * self.ratio_cutout + 0.5), int(w * self.ratio_cutout + 0.5)
        ox = d.randint(0, h + (1 - ch % 2), (n, 1, 1))
        oy = d.randint(0, w + (1 - cw % 2), (n, 1, 1))
        rows = (torch.arange(ch).view(1, ch, 1) + ox - ch // 2).clamp(0, h - 1)
        cols = (torch.arange(cw).view(1, 1, cw) + oy - cw // 2).clamp(0, w - 1)
        b = torch.arange(n).view(n, 1, 1)
        mask = torch.ones(n, h, w, dtype=x.dtype)
        mask[b, rows, cols] = 0
        return x * mask.unsqueeze(1)


def dsa_seed():
    # DC main.py line 186 / main_DM.py line 156
    return int(time.time() * 1000) % 100000


# ---------------------------------------------------------------- methods


def class_labels(ipc):
    return torch.tensor([c for c in range(NUM_CLASSES) for _ in range(ipc)], dtype=torch.long)


def init_images(data, ipc, init):
    x = torch.randn(NUM_CLASSES * ipc, CHANNELS, IM, IM)  # DC main.py line 88
    if init == "real":  # main.py lines 91-94
        for c in range(NUM_CLASSES):
            x[c * ipc:(c + 1) * ipc] = data.get_images(c, ipc)
    return x.requires_grad_(True)


def train_epoch(loader, net, optimizer, aug):
    """DC utils.py epoch('train', ...) (lines 297-333), including its per-batch
    accuracy and loss bookkeeping."""
    net.train()
    loss_avg, acc_avg, num_exp = 0.0, 0, 0
    for img, lab in loader:
        img = img.float()
        if aug is not None:
            img = aug(img)  # per-sample parameters (seed -1)
        lab = lab.long()
        n_b = lab.shape[0]
        output = net(img)
        loss = F.cross_entropy(output, lab)
        acc = np.sum(np.equal(np.argmax(output.detach().numpy(), axis=-1), lab.numpy()))
        loss_avg += loss.item() * n_b
        acc_avg += acc
        num_exp += n_b
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss_avg / num_exp, acc_avg / num_exp


class GradientMatching:
    """dc and dsa (DC main.py, method DC or DSA)."""

    def __init__(self, data, ipc, hp, dsa):
        self.data, self.ipc, self.hp = data, ipc, hp
        self.aug = DiffAugment(hp["dsa_strategy"]) if dsa else None
        self.image_syn = init_images(data, ipc, hp["init"])
        self.label_syn = class_labels(ipc)
        self.opt_img = torch.optim.SGD([self.image_syn], lr=hp["lr_img"], momentum=hp["momentum_img"])
        self.opt_img.zero_grad()

    def step(self):
        hp, ipc = self.hp, self.ipc
        net = new_net()
        params = list(net.parameters())
        opt_net = torch.optim.SGD(net.parameters(), lr=hp["lr_net"])
        opt_net.zero_grad()
        loss_avg = 0.0
        for ol in range(hp["outer_loop"]):
            loss = torch.tensor(0.0)
            for c in range(NUM_CLASSES):
                img_real = self.data.get_images(c, hp["batch_real"])
                lab_real = torch.ones((img_real.shape[0],), dtype=torch.long) * c
                img_syn = self.image_syn[c * ipc:(c + 1) * ipc].reshape((ipc, CHANNELS, IM, IM))
                lab_syn = torch.ones((ipc,), dtype=torch.long) * c
                if self.aug is not None:
                    seed = dsa_seed()
                    img_real = self.aug(img_real, seed)
                    img_syn = self.aug(img_syn, seed)
                gw_real = torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), params)
                gw_real = [g.detach().clone() for g in gw_real]
                gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True)
                loss = loss + match_loss(gw_syn, gw_real)
            self.opt_img.zero_grad()
            loss.backward()  # as the reference: also fills the net's .grad (cleared by the inner loop)
            self.opt_img.step()
            loss_avg += loss.item()
            if ol == hp["outer_loop"] - 1:
                break
            dst = TensorDataset(self.image_syn.detach().clone(), self.label_syn.detach().clone())
            loader = DataLoader(dst, batch_size=hp["batch_train"], shuffle=True, num_workers=0)
            for _ in range(hp["inner_loop"]):
                train_epoch(loader, net, opt_net, self.aug)
        return loss_avg / (NUM_CLASSES * hp["outer_loop"])


class DistributionMatching:
    """dm (DC main_DM.py, ConvNet branch)."""

    def __init__(self, data, ipc, hp):
        self.data, self.ipc, self.hp = data, ipc, hp
        self.aug = DiffAugment(hp["dsa_strategy"]) if hp["dsa_strategy"] not in ("", "none", "None") else None
        self.image_syn = init_images(data, ipc, hp["init"])
        self.opt_img = torch.optim.SGD([self.image_syn], lr=hp["lr_img"], momentum=hp["momentum_img"])
        self.opt_img.zero_grad()

    def step(self):
        ipc = self.ipc
        net = new_net()
        for p in net.parameters():
            p.requires_grad = False
        loss = torch.tensor(0.0)
        for c in range(NUM_CLASSES):
            img_real = self.data.get_images(c, self.hp["batch_real"])
            img_syn = self.image_syn[c * ipc:(c + 1) * ipc].reshape((ipc, CHANNELS, IM, IM))
            if self.aug is not None:
                seed = dsa_seed()
                img_real = self.aug(img_real, seed)
                img_syn = self.aug(img_syn, seed)
            output_real = net.embed(img_real).detach()
            output_syn = net.embed(img_syn)
            loss = loss + torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
        self.opt_img.zero_grad()
        loss.backward()
        self.opt_img.step()
        return loss.item() / NUM_CLASSES


class TrajectoryMatching:
    """mtt (MTT distill.py) with random expert trajectories."""

    def __init__(self, data, ipc, hp, experts):
        self.data, self.ipc, self.hp = data, ipc, hp
        self.aug = DiffAugment(hp["dsa_strategy"]) if hp["dsa_strategy"] not in ("", "none", "None") else None
        template = new_net()
        self.shapes = [p.shape for p in template.parameters()]
        self.numels = [p.numel() for p in template.parameters()]
        self.pads = template.pads
        # Random experts: epochs 0 ... max_start_epoch + expert_epochs, each a
        # list of parameter tensors (what buffer.py saves per epoch).
        epochs = hp["max_start_epoch"] + hp["expert_epochs"]
        self.buffer = []
        for _ in range(experts):
            traj = [[p.detach().clone() for p in new_net().parameters()]]
            for _ in range(epochs):
                # 0.01 per value and epoch: the student's 10-50 steps then move about
                # as far as the expert's epochs do, so the loss stays near 1 and the
                # images stay finite over a benchmark's few iterations.
                traj.append([p + 1e-2 * torch.randn_like(p) for p in traj[-1]])
            self.buffer.append(traj)
        self.image_syn = init_images(data, ipc, hp["init"])  # pix_init real (distill.py 443)
        self.label_syn = class_labels(ipc)
        self.syn_lr = torch.tensor(hp["lr_teacher"]).requires_grad_(True)
        self.opt_img = torch.optim.SGD([self.image_syn], lr=hp["lr_img"], momentum=hp["momentum_img"])
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=hp["lr_lr"], momentum=hp["momentum_img"])
        self.opt_img.zero_grad()
        self.batch_syn = hp["batch_syn"] or NUM_CLASSES * ipc  # distill.py lines 74-75

    def forward(self, flat, x):
        """The ConvNet on a flat parameter vector (what ReparamModule does)."""
        ps = [t.view(s) for t, s in zip(flat.split(self.numels), self.shapes)]
        for i in range(3):
            w, b, gw, gb = ps[4 * i:4 * i + 4]
            x = F.conv2d(x, w, b, padding=self.pads[i])
            x = F.group_norm(x, WIDTH, gw, gb, eps=1e-5)
            x = F.relu(x, inplace=True)
            x = F.avg_pool2d(x, 2, stride=2)
        x = x.reshape(x.shape[0], -1)
        return F.linear(x, ps[12], ps[13])

    def step(self):
        hp = self.hp
        student = new_net()  # distill.py 294-303: a fresh student each iteration
        num_params = sum(int(np.prod(p.size())) for p in student.parameters())
        expert_trajectory = self.buffer[np.random.randint(0, len(self.buffer))]
        start_epoch = np.random.randint(0, hp["max_start_epoch"])
        starting_params = expert_trajectory[start_epoch]
        target_params = expert_trajectory[start_epoch + hp["expert_epochs"]]
        target_params = torch.cat([p.data.reshape(-1) for p in target_params], 0)
        student_params = [torch.cat([p.data.reshape(-1) for p in starting_params], 0).requires_grad_(True)]
        starting_params = torch.cat([p.data.reshape(-1) for p in starting_params], 0)
        syn_images, y_hat = self.image_syn, self.label_syn
        indices_chunks = []
        for _ in range(hp["syn_steps"]):
            if not indices_chunks:
                indices = torch.randperm(len(syn_images))
                indices_chunks = list(torch.split(indices, self.batch_syn))
            these = indices_chunks.pop()
            x = syn_images[these]
            this_y = y_hat[these]
            if self.aug is not None:
                x = self.aug(x)  # per-sample (seed -1), distill.py 358-359
            out = self.forward(student_params[-1], x)
            ce_loss = F.cross_entropy(out, this_y)
            grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
            student_params.append(student_params[-1] - self.syn_lr * grad)
        param_loss = torch.tensor(0.0)
        param_dist = torch.tensor(0.0)
        param_loss = param_loss + F.mse_loss(student_params[-1], target_params, reduction="sum")
        param_dist = param_dist + F.mse_loss(starting_params, target_params, reduction="sum")
        param_loss = param_loss / num_params
        param_dist = param_dist / num_params
        grand_loss = param_loss / param_dist
        self.opt_img.zero_grad()
        self.opt_lr.zero_grad()
        grand_loss.backward()
        self.opt_img.step()
        self.opt_lr.step()
        del student_params
        return grand_loss.item()


# ---------------------------------------------------------------- harness


def hyper_parameters(method, ipc, args):
    """The reference's values for (method, ipc), with command-line overrides.
    Sources: DC main.py argparse (lines 23-32) and line 100 (image momentum);
    main_DM.py argparse (lines 22-28) and line 102; MTT distill.py argparse
    (lines 431-457) and lines 138-139; DC-BENCH methods/tm/readme.md (MTT_ROWS)."""
    pick = lambda v, d: d if v is None else v  # noqa: E731
    if method in ("dc", "dsa"):
        outer, inner = get_loops(ipc) if args.outer_loop is None and args.inner_loop is None else (None, None)
        hp = dict(lr_img=pick(args.lr_img, 0.1), momentum_img=0.5, lr_net=0.01,
                  batch_real=pick(args.batch_real, 256), batch_train=256,
                  outer_loop=pick(args.outer_loop, outer), inner_loop=pick(args.inner_loop, inner),
                  init=pick(args.init, "noise" if method == "dc" else "real"), dis_metric="ours",
                  dsa_strategy="none" if method == "dc" else args.dsa_strategy)
        if hp["outer_loop"] is None or hp["inner_loop"] is None:
            raise SystemExit("give both --outer-loop and --inner-loop, or neither")
        return hp
    if method == "dm":
        return dict(lr_img=pick(args.lr_img, 1.0), momentum_img=0.5, batch_real=pick(args.batch_real, 256),
                    init=pick(args.init, "real"), dsa_strategy=args.dsa_strategy)
    row = MTT_ROWS.get(ipc)
    if row is None:
        row = MTT_ROWS[10 if ipc <= 10 else 50]
    return dict(syn_steps=pick(args.syn_steps, row["syn_steps"]),
                expert_epochs=pick(args.expert_epochs, row["expert_epochs"]),
                max_start_epoch=pick(args.max_start_epoch, row["max_start_epoch"]),
                lr_img=pick(args.lr_img, row["lr_img"]), lr_lr=pick(args.lr_lr, row["lr_lr"]),
                lr_teacher=pick(args.lr_teacher, row["lr_teacher"]), momentum_img=0.5,
                batch_syn=args.batch_syn, init=pick(args.init, "real"), dsa_strategy=args.dsa_strategy,
                zca=False)


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def run_one(method, ipc, args, data):
    hp = hyper_parameters(method, ipc, args)
    warm, iters = default_iters(method, ipc)
    if args.warmup is not None:
        warm = args.warmup
    if args.iters is not None:
        iters = args.iters
    if method in ("dc", "dsa"):
        runner = GradientMatching(data, ipc, hp, dsa=method == "dsa")
    elif method == "dm":
        runner = DistributionMatching(data, ipc, hp)
    else:
        runner = TrajectoryMatching(data, ipc, hp, args.experts)
    gc.collect()
    reset_peak_rss()
    times = []
    for i in range(warm + iters):
        t0 = time.perf_counter()
        loss = runner.step()
        dt = time.perf_counter() - t0
        tag = "warm-up" if i < warm else "timed"
        print("pytorch %s ipc %d iteration %d/%d (%s): %.3f s, loss %.4f"
              % (method, ipc, i + 1, warm + iters, tag, dt, loss), file=sys.stderr, flush=True)
        if i >= warm:
            times.append(dt)
    rec = {"impl": "pytorch", "method": method, "ipc": ipc,
           "s_per_iter_median": statistics.median(times) if times else None,
           "s_per_iter_mean": statistics.fmean(times) if times else None,
           "iters": iters, "threads": torch.get_num_threads(),
           "warmup": warm, "s_per_iter_min": min(times) if times else None,
           "times": [round(t, 4) for t in times], "hp": hp, "data": data.source,
           "peak_rss_mb": peak_rss_mb(), "torch": torch.__version__}
    if method == "mtt":
        rec["experts"] = "random"
        rec["n_experts"] = args.experts
    if args.save_dir:
        rec["synthetic"] = save_synthetic(runner, method, ipc, args.save_dir)
    del runner
    gc.collect()
    return rec


def save_synthetic(runner, method, ipc, save_dir):
    """Writes the final synthetic set as DESIGN.md's synthetic.npz (x float32
    normalized, y int64, mean and std float32 per channel), so that `fedsim
    eval --synthetic` scores it with the same protocol as fedsim's own sets
    (the fidelity comparison of scripts/results/fidelity.sh)."""
    if method == "mtt":
        raise SystemExit("--save-dir: mtt runs on random experts here; its set means nothing")
    folder = os.path.join(save_dir, "%s-ipc%d" % (method, ipc))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "synthetic.npz")
    tmp = path + ".tmp.npz"
    np.savez(tmp, x=runner.image_syn.detach().numpy().astype(np.float32),
             y=class_labels(ipc).numpy().astype(np.int64),
             mean=np.array([MNIST_MEAN], dtype=np.float32), std=np.array([MNIST_STD], dtype=np.float32))
    os.replace(tmp, path)  # atomic: a stopped run leaves no half-written set
    return path


def int_list(s):
    return [int(v) for v in s.replace(" ", ",").split(",") if v]


def main():
    ap = argparse.ArgumentParser(description=__doc__ or "PyTorch reference timing of dc, dsa, dm, mtt")
    ap.add_argument("--methods", default="dc,dsa,dm,mtt", help="comma-separated subset of dc,dsa,dm,mtt")
    ap.add_argument("--ipc", default=None, help="comma-separated IPCs (default: 1,10; dm also 50)")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default by method and IPC)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default by method and IPC)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0, help="seeds torch and numpy once at the start")
    ap.add_argument("--data-dir", default="", help="folder with MNIST's train-*-idx*-ubyte[.gz] (default: the GoMNIST module's copy)")
    ap.add_argument("--random-data", action="store_true", help="standard-normal images of MNIST's shape instead of MNIST")
    ap.add_argument("--dsa-strategy", default=DIGITS, help="DiffAugment strategy of dsa, dm and mtt")
    ap.add_argument("--experts", type=int, default=1, help="mtt: random expert trajectories")
    # Overrides of the reference values, for quick checks (same flags on the fedsim side).
    ap.add_argument("--batch-real", type=int, default=None)
    ap.add_argument("--outer-loop", type=int, default=None)
    ap.add_argument("--inner-loop", type=int, default=None)
    ap.add_argument("--lr-img", type=float, default=None)
    ap.add_argument("--init", choices=["real", "noise"], default=None)
    ap.add_argument("--syn-steps", type=int, default=None)
    ap.add_argument("--expert-epochs", type=int, default=None)
    ap.add_argument("--max-start-epoch", type=int, default=None)
    ap.add_argument("--lr-lr", type=float, default=None)
    ap.add_argument("--lr-teacher", type=float, default=None)
    ap.add_argument("--batch-syn", type=int, default=0, help="mtt: images per student step (0: all, as the reference)")
    ap.add_argument("--save-dir", default="", help="write each run's final set to DIR/<method>-ipc<K>/synthetic.npz")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise SystemExit("unknown method %r (want %s)" % (m, ",".join(METHODS)))
    t0 = time.perf_counter()
    data = RealData(args.data_dir, args.random_data)
    print("real data: %s, %d images (%.1f s)" % (data.source, data.images_all.shape[0], time.perf_counter() - t0),
          file=sys.stderr, flush=True)
    for m in methods:
        for ipc in (int_list(args.ipc) if args.ipc else DEFAULT_IPCS[m]):
            print(json.dumps(run_one(m, ipc, args, data)), flush=True)


if __name__ == "__main__":
    main()
