# Shared PyTorch reference definitions for scripts/torch/*.py.
#
# The dataset-distillation "ConvNet" of the DC/DSA/DM authors (instance norm,
# ReLU, average pooling), the gradient-matching distance `distance_wb` with the
# 'ours' metric, and a few helpers. Needs Debian's python3-torch: run the
# scripts with /usr/bin/python3.

import torch
import torch.nn as nn
import torch.nn.functional as F

PARAM_NAMES = [
    "conv0.weight", "conv0.bias", "norm0.weight", "norm0.bias",
    "conv1.weight", "conv1.bias", "norm1.weight", "norm1.bias",
    "conv2.weight", "conv2.bias", "norm2.weight", "norm2.bias",
    "fc.weight", "fc.bias",
]


class ConvNet(nn.Module):
    """depth-3 ConvNet: [conv3x3 -> GroupNorm(W, W) -> ReLU -> AvgPool2d(2)] x3 -> fc.

    The first convolution pads by 3 when the input is 28x28 (treated as 32x32,
    giving 4x4 after three pools), otherwise by 1.
    """

    def __init__(self, channels, width, num_classes, im_size):
        super().__init__()
        h = im_size
        p0 = 3 if im_size == 28 else 1
        self.pads = [p0, 1, 1]
        cin = channels
        for i in range(3):
            setattr(self, "conv%d" % i, nn.Conv2d(cin, width, 3, padding=self.pads[i], bias=True))
            setattr(self, "norm%d" % i, nn.GroupNorm(width, width, affine=True, eps=1e-5))
            h = (h + 2 * self.pads[i] - 2) // 2
            cin = width
        self.feat_hw = h
        self.fc = nn.Linear(width * h * h, num_classes, bias=True)

    def params(self):
        d = dict(self.named_parameters())
        return [d[n] for n in PARAM_NAMES]

    def embed(self, x):
        for i in range(3):
            x = getattr(self, "conv%d" % i)(x)
            x = getattr(self, "norm%d" % i)(x)
            x = F.relu(x)
            x = F.avg_pool2d(x, 2, stride=2)
        return x.reshape(x.shape[0], -1)

    def forward(self, x):
        return self.fc(self.embed(x))


def perturb_norms(net, gen=None):
    """Move the affine norm parameters away from 1/0 so their gradients matter."""
    with torch.no_grad():
        for i in range(3):
            norm = getattr(net, "norm%d" % i)
            norm.weight.copy_(1 + 0.1 * torch.randn(norm.weight.shape, generator=gen))
            norm.bias.copy_(0.1 * torch.randn(norm.bias.shape, generator=gen))


def distance_wb(gwr, gws):
    """DC authors' per-parameter gradient distance, 'ours' metric."""
    shape = gwr.shape
    if len(shape) == 4:
        gwr = gwr.reshape(shape[0], shape[1] * shape[2] * shape[3])
        gws = gws.reshape(shape[0], shape[1] * shape[2] * shape[3])
    elif len(shape) == 3:
        gwr = gwr.reshape(shape[0], shape[1] * shape[2])
        gws = gws.reshape(shape[0], shape[1] * shape[2])
    elif len(shape) == 2:
        pass
    elif len(shape) == 1:
        return torch.zeros((), dtype=gwr.dtype, device=gwr.device)
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1)
                     / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + 0.000001))


def match_loss(gw_syn, gw_real):
    dis = torch.zeros((), dtype=gw_real[0].dtype, device=gw_real[0].device)
    for gs, gr in zip(gw_syn, gw_real):
        dis = dis + distance_wb(gr, gs)
    return dis


def gm_distance(net, params, xsyn, ysyn, g_real):
    """Sum over params of distance_wb(g_real, d CE(net(xsyn), ysyn)/d params), differentiable."""
    loss = F.cross_entropy(net(xsyn), ysyn)
    g_syn = torch.autograd.grad(loss, params, create_graph=True)
    return match_loss(g_syn, g_real)
