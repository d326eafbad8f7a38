"""Generated images carry learnable class signal: a small CNN trained for seconds on generated ImageNet classifies
held-out images and transfers to generated ImageNet-R (same classes, rendition style) far above chance."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import functional as F

from mopro_bench.data.imagenet import ImageNetFolder
from mopro_bench.data.imagenet_ra import ImageNetRA


def _load(samples, index, size=32):
    x = torch.stack([F.to_tensor(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p, _ in samples])
    return x, torch.tensor([index[y] for _, y in samples])


def _net(n):
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, n))


def _accuracy(net, x, y):
    net.eval()
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def test_small_cnn_learns_generated_classes_and_transfers_to_renditions(synth_root):
    ds = ImageNetFolder(synth_root("imagenet"))
    train, val = ds.samples("train"), ds.samples("val")
    index = {y: i for i, y in enumerate(sorted({y for _, y in train}))}
    xtr, ytr = _load(train, index)
    xva, yva = _load(val, index)
    xr, yr = _load(ImageNetRA(synth_root("imagenet-r"), "imagenet-r").samples(), index)
    chance = 1 / len(index)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        net = _net(len(index))
        untrained = _accuracy(net, xva, yva)
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for _ in range(20):
            net.train()
            perm = torch.randperm(len(xtr), generator=g)
            for b in range(0, len(perm), 32):
                idx = perm[b:b + 32]
                x = xtr[idx]
                x = torch.where((torch.rand(len(x), generator=g) < 0.5)[:, None, None, None], x.flip(3), x)
                x = torch.where((torch.rand(len(x), generator=g) < 0.5)[:, None, None, None], x.transpose(2, 3), x)
                loss = nn.functional.cross_entropy(net(x), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        val_acc, r_acc = _accuracy(net, xva, yva), _accuracy(net, xr, yr)
    finally:
        torch.set_num_threads(threads)
    assert untrained < 0.35
    assert val_acc >= 0.5 and val_acc > untrained + 0.3, (val_acc, untrained)
    assert r_acc >= 3 * chance, r_acc
