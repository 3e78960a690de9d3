#!/usr/bin/python3
# Writes nn/testdata/models.npz: PyTorch (float64) references for fedsim's
# models, built as in the DC/DSA authors' networks.py (VICO-UoE/
# DatasetCondensation) with small widths so the fixture stays small.
#
# For each case: the parameters and buffers (perturbed away from their
# initial values), an input batch and labels, the training-mode logits and
# cross-entropy, every parameter's gradient, the running statistics after
# that pass, and the evaluation-mode logits afterwards. Everything is
# stored as float32; inputs are rounded to float32 before the float64
# computation. Names of parameters
# and buffers are PyTorch's, which the Go models must reproduce (except the
# ConvNet, which keeps fedsim's historical conv{i}/norm{i}/fc names: it is
# compared by order).
#
# Run: /usr/bin/python3 nn/testdata/make_models.py   (Debian's python3-torch)
import os
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.manual_seed(0)


class ConvNet(nn.Module):
    def __init__(self, channel, num_classes, net_width, net_depth, net_act, net_norm, net_pooling, im_size):
        super().__init__()
        self.features, shape_feat = self._make_layers(channel, net_width, net_depth, net_norm, net_act, net_pooling, im_size)
        self.classifier = nn.Linear(shape_feat[0] * shape_feat[1] * shape_feat[2], num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))

    def _make_layers(self, channel, net_width, net_depth, net_norm, net_act, net_pooling, im_size):
        layers = []
        in_channels = channel
        if im_size[0] == 28:
            im_size = (32, 32)
        shape_feat = [in_channels, im_size[0], im_size[1]]
        for d in range(net_depth):
            # DC pads by 3 when channel == 1; fedsim when the input is 28x28.
            pad = 3 if (d == 0 and self.pad3) else 1
            layers += [nn.Conv2d(in_channels, net_width, kernel_size=3, padding=pad)]
            shape_feat[0] = net_width
            if net_norm == 'batchnorm':
                layers += [nn.BatchNorm2d(shape_feat[0], affine=True)]
            elif net_norm == 'layernorm':
                layers += [nn.LayerNorm(shape_feat, elementwise_affine=True)]
            elif net_norm == 'instancenorm':
                layers += [nn.GroupNorm(shape_feat[0], shape_feat[0], affine=True)]
            elif net_norm == 'groupnorm':
                layers += [nn.GroupNorm(4, shape_feat[0], affine=True)]
            layers += [{'relu': nn.ReLU(), 'leakyrelu': nn.LeakyReLU(0.01), 'sigmoid': nn.Sigmoid()}[net_act]]
            in_channels = net_width
            if net_pooling != 'none':
                layers += [nn.AvgPool2d(2, 2) if net_pooling == 'avgpooling' else nn.MaxPool2d(2, 2)]
                shape_feat[1] //= 2
                shape_feat[2] //= 2
        return nn.Sequential(*layers), shape_feat


def convnet(channel, classes, im, width, depth, act, norm, pool):
    ConvNet.pad3 = im == 28
    return ConvNet(channel, classes, width, depth, act, norm, pool, (im, im))


class MLP(nn.Module):
    def __init__(self, in_features, num_classes, hidden):
        super().__init__()
        self.fc_1 = nn.Linear(in_features, hidden[0])
        self.fc_2 = nn.Linear(hidden[0], hidden[1])
        self.fc_3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x):
        out = x.view(x.size(0), -1)
        out = F.relu(self.fc_1(out))
        out = F.relu(self.fc_2(out))
        return self.fc_3(out)


class LeNet(nn.Module):
    def __init__(self, channel, num_classes, im):
        super().__init__()
        pad = 2 if im == 28 else 0
        self.features = nn.Sequential(
            nn.Conv2d(channel, 6, kernel_size=5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        h = ((im + 2 * pad - 4) // 2 - 4) // 2
        self.fc_1 = nn.Linear(16 * h * h, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.features(x).view(x.size(0), -1)
        x = F.relu(self.fc_1(x))
        x = F.relu(self.fc_2(x))
        return self.fc_3(x)


class AlexNet(nn.Module):
    def __init__(self, channel, num_classes, im, ch):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channel, ch[0], kernel_size=5, stride=1, padding=4 if im == 28 else 2), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(ch[0], ch[1], kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(ch[1], ch[2], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(ch[2], ch[3], kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(ch[3], ch[4], kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2))
        h = (im + 4 if im == 28 else im) // 8
        self.fc = nn.Linear(ch[4] * h * h, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).view(x.size(0), -1))


class VGG(nn.Module):
    def __init__(self, channel, num_classes, norm, width, im):
        super().__init__()
        cfg = [1, 'M', 2, 'M', 4, 4, 'M', 8, 8, 'M', 8, 8, 'M']
        layers, in_channels = [], channel
        for ic, x in enumerate(cfg):
            if x == 'M':
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                x *= width
                layers += [nn.Conv2d(in_channels, x, kernel_size=3, padding=3 if im == 28 and ic == 0 else 1),
                           nn.GroupNorm(x, x, affine=True) if norm == 'instancenorm' else nn.BatchNorm2d(x),
                           nn.ReLU(inplace=True)]
                in_channels = x
        layers += [nn.AvgPool2d(kernel_size=1, stride=1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(8 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).view(x.size(0), -1))


def norm_layer(norm, c):
    return nn.GroupNorm(c, c, affine=True) if norm == 'instancenorm' else nn.BatchNorm2d(c)


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                norm_layer(norm, planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, channel, num_classes, norm, width):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(channel, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(norm, width)
        self.layer1 = self._make_layer(width, 2, 1, norm)
        self.layer2 = self._make_layer(2 * width, 2, 2, norm)
        self.layer3 = self._make_layer(4 * width, 2, 2, norm)
        self.layer4 = self._make_layer(8 * width, 2, 2, norm)
        self.classifier = nn.Linear(8 * width, num_classes)

    def _make_layer(self, planes, n, stride, norm):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s, norm))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.classifier(out.view(out.size(0), -1))


CASES = {
    # name: (constructor, C, H)
    'convnet_in_mnist': (lambda: convnet(1, 5, 28, 4, 3, 'relu', 'instancenorm', 'avgpooling'), 1, 28),
    'convnet_bn_cifar': (lambda: convnet(3, 5, 32, 4, 3, 'relu', 'batchnorm', 'avgpooling'), 3, 32),
    'convnet_ln_mnist': (lambda: convnet(1, 5, 28, 4, 2, 'relu', 'layernorm', 'avgpooling'), 1, 28),
    'convnet_gn_cifar': (lambda: convnet(3, 5, 16, 8, 2, 'leakyrelu', 'groupnorm', 'maxpooling'), 3, 16),
    'convnet_nn_cifar': (lambda: convnet(3, 5, 8, 4, 2, 'sigmoid', 'none', 'none'), 3, 8),
    'mlp': (lambda: MLP(3 * 8 * 8, 5, [16, 12]), 3, 8),
    'lenet_cifar': (lambda: LeNet(3, 5, 16), 3, 16),
    'alexnet_mnist': (lambda: AlexNet(1, 5, 28, [4, 5, 6, 5, 4]), 1, 28),
    'vgg11_bn_cifar': (lambda: VGG(3, 5, 'batchnorm', 2, 32), 3, 32),
    'vgg11_in_mnist': (lambda: VGG(1, 5, 'instancenorm', 2, 28), 1, 28),
    'resnet18_bn_cifar': (lambda: ResNet(3, 5, 'batchnorm', 2), 3, 32),
    'resnet18_in_mnist': (lambda: ResNet(1, 5, 'instancenorm', 2), 1, 28),
}


def main():
    out = {}
    for case, (make, c, h) in CASES.items():
        net = make()
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.dim() >= 1 and ('norm' in type(dict(net.named_modules())[name.rsplit('.', 1)[0]]).__name__.lower()):
                    p.add_(0.3 * torch.randn_like(p))
            for name, b in net.named_buffers():
                if name.endswith('running_mean'):
                    b.copy_(0.2 * torch.randn_like(b))
                elif name.endswith('running_var'):
                    b.copy_(0.5 + torch.rand_like(b))
            # Inputs are stored as float32: round them first so that the
            # float64 computation starts from exactly the stored values.
            for t in list(net.parameters()) + list(net.buffers()):
                if t.is_floating_point():
                    t.copy_(t.float().double())
        names = [n for n, _ in net.named_parameters()]
        bufs = [n for n, b in net.named_buffers() if not n.endswith('num_batches_tracked')]
        out[case + '/param_names'] = np.array(names)
        out[case + '/buffer_names'] = np.array(bufs if bufs else [''])
        for i, (_, p) in enumerate(net.named_parameters()):
            out['%s/param/%d' % (case, i)] = p.detach().numpy().copy()
        sd = dict(net.named_buffers())
        for i, n in enumerate(bufs):
            out['%s/buffer_before/%d' % (case, i)] = sd[n].detach().numpy().copy()
        x = torch.randn(3, c, h, h).float().double()
        y = torch.tensor([0, 3, 4])
        net.train()
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        out[case + '/x'] = x.numpy()
        out[case + '/y'] = y.numpy().astype(np.int64)
        out[case + '/logits_train'] = logits.detach().numpy()
        out[case + '/loss'] = loss.detach().numpy()
        for i, g in enumerate(grads):
            out['%s/grad/%d' % (case, i)] = g.numpy()
        for i, n in enumerate(bufs):
            out['%s/buffer_after/%d' % (case, i)] = sd[n].detach().numpy().copy()
        net.eval()
        with torch.no_grad():
            out[case + '/logits_eval'] = net(x).numpy()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'models.npz')
    # Name strings are not an npz dtype fedsim reads: store them as uint8
    # (newline-separated).
    final = {}
    for k, v in out.items():
        if v.dtype.kind == 'U':
            final[k] = np.frombuffer('\n'.join(v.tolist()).encode(), dtype=np.uint8)
        elif v.dtype == np.float64:
            final[k] = v.astype(np.float32)  # outputs: rounding ~6e-8, far below the tolerance
        else:
            final[k] = v
    np.savez_compressed(path, **final)
    print('wrote', path, os.path.getsize(path), 'bytes')


if __name__ == '__main__':
    main()
