"""``mopro-bench retrain``: classifier retraining (cRT, Kang et al. ICLR 2020) on noise-cleaned labels.

The pretrained query encoder's trunk is frozen (eval mode: BatchNorm statistics frozen too, no gradients); only the
classifier is trained, starting from the checkpoint's classifier, on the cleaned train list (``--annotation``,
written by ``noise-clean``) with class-balanced sampling: every epoch draws as many samples as the list holds,
each by picking a class uniformly and then one of its images uniformly (with replacement, seeded by
``(seed, epoch)``). Augmentation: RandomResizedCrop(scale) + flip. The result is written in the pretraining
checkpoint format (classifier replaced, everything else kept), so ``eval``, ``inspect`` and ``export`` read it as is.
The paper gives no cRT hyper-parameters; the defaults below are ours (short cosine schedule from the pretrained
classifier) and all of them are in the written checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mopro_bench.backbones import Preprocess
from mopro_bench.config import apply_overrides, to_dict
from mopro_bench.data.common import train_transform
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_torch_save, atomic_write_json, sha256_file
from mopro_bench.pretrain.data import derive_seed
from mopro_bench.pretrain.noise_clean import load_model
from mopro_bench.runtime import cleanup_distributed, init_distributed


@dataclass
class CRTConfig:
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256  # global
    schedule: str = "cos"  # or "const"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    image_size: int = 0  # 0 = the pretraining run's
    seed: int = 0
    eval_every: int = 1


@dataclass
class CRTResult:
    checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def balanced_draw(labels: list[int], n: int, seed: int, epoch: int) -> torch.Tensor:
    """``n`` indices: a uniform class, then a uniform image of that class (with replacement)."""
    y = torch.tensor(labels)
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse].double()  # P(i) = 1 / (n_classes * n_class(i))
    g = torch.Generator().manual_seed(derive_seed("crt", seed, epoch))
    return torch.multinomial(weights, n, replacement=True, generator=g)


class _Indexed(Dataset):
    def __init__(self, paths, labels, transform, order: list[int]):
        self.paths, self.labels, self.transform, self.order = paths, labels, transform, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, j: int):
        from mopro_bench.data.common import load_rgb

        i = self.order[j]
        return self.transform(load_rgb(self.paths[i])), self.labels[i]


def retrain(data_root: str | Path, ckpt: str | Path, annotation: str | Path, out: str | Path, *,
            overrides: dict[str, Any] | None = None, device: str = "auto", workers: int = 0,
            progress: bool = True) -> CRTResult:
    from tqdm import tqdm

    from mopro_bench.pretrain.trainer import evaluate_classifier, load_train_set

    info, dev = init_distributed(device)
    try:
        cfg_c = apply_overrides(CRTConfig(), overrides or {})
        if cfg_c.schedule not in ("cos", "const"):
            raise BenchError(f"--set schedule={cfg_c.schedule!r} is not valid", "use cos or const")
        model, cfg, obj = load_model(ckpt)
        image_size = cfg_c.image_size or cfg.aug.image_size
        ds, samples = load_train_set(data_root, cfg, annotation=str(annotation))
        if cfg_c.batch_size % info.world_size:
            raise BenchError(f"batch_size={cfg_c.batch_size} is not divisible by {info.world_size} processes",
                             "use a multiple of the process count")
        paths = [ds.path(r) for r, _ in samples]
        labels = [y for _, y in samples]
        pre = Preprocess(mean=tuple(cfg.aug.mean), std=tuple(cfg.aug.std))
        tf = train_transform(image_size, scale=tuple(cfg_c.crop_scale), pre=pre)
        val = [(ds.path(r), y) for r, y in ds.val_samples() if y < cfg.model.num_class]
        model.to(dev)
        enc = model.encoder_q
        enc.eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        clf = enc.classifier
        for p in clf.parameters():
            p.requires_grad_(True)
        opt = torch.optim.SGD(clf.parameters(), lr=cfg_c.lr, momentum=cfg_c.momentum, weight_decay=cfg_c.weight_decay)
        local = cfg_c.batch_size // info.world_size
        history: list[dict[str, Any]] = []
        metrics: dict[str, Any] = {}
        amp = torch.bfloat16 if dev.type == "cuda" else None
        for epoch in range(cfg_c.epochs):
            t0 = time.time()
            lr = cfg_c.lr * (0.5 * (1 + math.cos(math.pi * epoch / cfg_c.epochs)) if cfg_c.schedule == "cos" else 1.0)
            for g in opt.param_groups:
                g["lr"] = lr
            order = balanced_draw(labels, len(labels), cfg_c.seed, epoch).tolist()
            n_batches = len(order) // cfg_c.batch_size
            mine = [order[b * cfg_c.batch_size + info.rank * local + j] for b in range(n_batches) for j in range(local)]
            torch.manual_seed(derive_seed("crt-aug", cfg_c.seed, epoch, info.rank))
            loader = DataLoader(_Indexed(paths, labels, tf, mine), batch_size=local, num_workers=workers, drop_last=True,
                                pin_memory=dev.type == "cuda")
            tot, n = 0.0, 0
            for x, y in tqdm(loader, desc=f"cRT epoch {epoch}", disable=not (progress and info.is_main), leave=False):
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                with torch.no_grad(), (torch.autocast("cuda", dtype=amp) if amp else torch.autocast("cpu", enabled=False)):
                    h = enc.trunk(x)
                loss = F.cross_entropy(clf(h.float()), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if info.world_size > 1:
                    for p in clf.parameters():
                        dist.all_reduce(p.grad)
                        p.grad.div_(info.world_size)
                opt.step()
                tot += float(loss.detach()) * len(y)
                n += len(y)
            rec: dict[str, Any] = {"epoch": epoch, "lr": lr, "loss": tot / max(1, n), "seconds": round(time.time() - t0, 3)}
            if val and cfg_c.eval_every and ((epoch + 1) % cfg_c.eval_every == 0 or epoch == cfg_c.epochs - 1):
                r = evaluate_classifier(model, val, image_size, pre, dev, 256, workers, info.world_size, info.rank, amp)
                metrics = {"webvision_val/top1": r["top1"], "webvision_val/top5": r["top5"]}
                rec.update(metrics)
            history.append(rec)
            if info.is_main:
                print(f"cRT epoch {epoch}  loss {rec['loss']:.4f}  lr {lr:.4g}" +
                      "".join(f"  {k} {v:.2f}" for k, v in rec.items() if "/" in k), flush=True)
        out = Path(out).expanduser()
        path = out / "checkpoint_crt.pth.tar"
        if info.is_main:
            sd = dict(obj["state_dict"])
            sd["encoder_q.classifier.weight"] = clf.weight.detach().cpu().clone()
            sd["encoder_q.classifier.bias"] = clf.bias.detach().cpu().clone()
            new = dict(obj)
            new["state_dict"] = sd
            meta = dict(obj["mopro_bench"])
            meta["crt"] = {"config": to_dict(cfg_c), "annotation": str(annotation), "annotation_sha256": sha256_file(annotation),
                           "source_checkpoint": str(ckpt), "source_sha256": sha256_file(ckpt), "images": len(samples),
                           "metrics": metrics}
            new["mopro_bench"] = meta
            atomic_torch_save(path, new)
            atomic_write_json(out / "crt_log.json", history)
        if info.world_size > 1:
            dist.barrier()
        return CRTResult(path, metrics, history)
    finally:
        cleanup_distributed()
