"""The MoPro network: query encoder, momentum (key) encoder, instance queue and class prototypes.

State-dict keys are exactly the reference implementation's without ``module.`` (see docs/CONTRACTS.md):
``encoder_q.<torchvision ResNet trunk keys>``, ``encoder_q.classifier.{weight,bias}``, ``encoder_q.fc1.*``,
``encoder_q.fc2.*``, the same under ``encoder_k.``, and the buffers ``queue`` [low_dim, K], ``queue_ptr`` [1]
and ``prototypes`` [num_class, low_dim].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mopro_bench.backbones import Backbone
from mopro_bench.pretrain.prototypes import update_prototypes


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises ``num_splits`` contiguous sub-batches separately ("ghost BN").

    Sub-batch ``g`` is rows ``[g*N/G, (g+1)*N/G)``, i.e. what process ``g`` would hold if the batch were spread over
    ``G`` processes. Running statistics are updated with the mean over the groups of each group's mean and
    (unbiased) variance. In eval mode, and with one split, it is exactly ``nn.BatchNorm2d``; its state-dict keys
    are BatchNorm2d's, so checkpoints keep torchvision's names.
    """

    num_splits: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.num_splits
        if g <= 1 or not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % g:
            raise RuntimeError(f"batch of {n} cannot be split into {g} BatchNorm groups")
        xs = x.reshape(g, n // g, c, h, w).transpose(0, 1).reshape(n // g, g * c, h, w)
        rm = self.running_mean.repeat(g) if self.running_mean is not None else None
        rv = self.running_var.repeat(g) if self.running_var is not None else None
        weight = self.weight.repeat(g) if self.weight is not None else None
        bias = self.bias.repeat(g) if self.bias is not None else None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, like nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked)
        out = F.batch_norm(xs, rm, rv, weight, bias, True, momentum, self.eps)
        if rm is not None:
            with torch.no_grad():
                self.running_mean.copy_(rm.view(g, c).mean(0))
                self.running_var.copy_(rv.view(g, c).mean(0))
        return out.reshape(n // g, g, c, h, w).transpose(0, 1).reshape(n, c, h, w)


def convert_split_bn(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a :class:`SplitBatchNorm2d` with the same tensors."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = SplitBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_split_bn(child)
    return module


def set_bn_splits(module: nn.Module, splits: int) -> None:
    for m in module.modules():
        if isinstance(m, SplitBatchNorm2d):
            m.num_splits = int(splits)


class Encoder(Backbone):
    """ResNet trunk -> pooled feature h -> (classifier logits, L2-normalised embedding of the projection MLP).

    Projection MLP: ``fc1`` (D -> D) -> ReLU -> ``fc2`` (D -> low_dim), D = the pooled feature dimension
    (2048 for ResNet-50), as in the paper. ``wide_stem`` (wide ResNets only): see ``model.wide_stem``; the default
    (False) keeps conv1 at 64 channels like the reference's resnet.py.
    """

    def __init__(self, arch: str = "resnet50", width: int = 1, num_class: int = 1000, low_dim: int = 128,
                 wide_stem: bool = False):
        super().__init__(arch, width, wide_stem=wide_stem)
        d = self.feature_dim
        self.classifier = nn.Linear(d, num_class)
        self.fc1 = nn.Linear(d, d)
        self.relu_mlp = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(d, low_dim)
        convert_split_bn(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        h = super().forward(x)
        logits = self.classifier(h)
        z = self.fc2(self.relu_mlp(self.fc1(h)))
        return logits, F.normalize(z, dim=1)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return Backbone.forward(self, x)


class MoPro(nn.Module):
    """Both encoders and MoPro's state. The training step itself lives in :mod:`mopro_bench.pretrain.trainer`."""

    def __init__(self, arch: str = "resnet50", width: int = 1, num_class: int = 1000, low_dim: int = 128,
                 queue_size: int = 8192, wide_stem: bool = False):
        super().__init__()
        self.encoder_q = Encoder(arch, width, num_class, low_dim, wide_stem)
        self.encoder_k = Encoder(arch, width, num_class, low_dim, wide_stem)
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(low_dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        # the reference starts from zero prototypes: the first update makes a class's prototype its first embedding
        self.register_buffer("prototypes", torch.zeros(num_class, low_dim))
        self.num_class, self.low_dim, self.queue_size = num_class, low_dim, queue_size

    def set_bn_splits(self, splits: int) -> None:
        set_bn_splits(self, splits)

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """encoder_k <- m * encoder_k + (1 - m) * encoder_q, parameters only (one fused foreach kernel)."""
        k = [p for p in self.encoder_k.parameters()]
        q = [p.detach() for p in self.encoder_q.parameters()]
        torch._foreach_lerp_(k, q, 1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the (globally gathered) keys [B, low_dim] at the pointer and advance it modulo K."""
        b = keys.shape[0]
        k = self.queue.shape[1]
        if k % b:
            raise ValueError(f"queue size {k} is not a multiple of the batch {b}")
        ptr = int(self.queue_ptr.item())
        self.queue[:, ptr:ptr + b] = keys.detach().to(self.queue.dtype).t()
        self.queue_ptr[0] = (ptr + b) % k

    @torch.no_grad()
    def update_prototypes(self, feats: torch.Tensor, labels: torch.Tensor, m: float, norm: str = "batch") -> None:
        self.prototypes.copy_(update_prototypes(self.prototypes, feats.to(self.prototypes.dtype), labels, m, norm))
