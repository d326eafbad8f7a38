"""``mopro-bench noise-clean``: the trained model's cleaned labels for the whole training set.

Each training image is passed once through the query encoder in eval mode (the evaluation transform: resize +
center crop), and the training-time rule (:func:`~mopro_bench.pretrain.cleaning.clean_labels`) is applied with the
checkpoint's classifier, its momentum prototypes and its ``alpha`` / ``pseudo_th`` / ``temperature`` (changeable
with ``--set mopro.alpha=...``). The output lists only the kept samples with their (possibly corrected) labels::

    {"images": [relpath, ...], "labels": [int, ...], "meta": {...}}

which ``WebVision(root, annotation=...)`` (and ``pretrain``/``retrain --annotation``) read as a train list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mopro_bench.backbones import Preprocess
from mopro_bench.config import apply_overrides
from mopro_bench.data.common import ImageList, eval_transform
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json
from mopro_bench.pretrain import checkpoint as ckptlib
from mopro_bench.pretrain.cleaning import clean_labels
from mopro_bench.pretrain.config import PretrainConfig, from_dict, validate
from mopro_bench.pretrain.losses import proto_logits
from mopro_bench.pretrain.model import MoPro


@dataclass
class CleanSummary:
    total: int
    kept: int
    relabelled: int
    removed: int
    out: Path | None
    truth: dict[str, Any] | None = None
    warning: str | None = None
    truth_error: BenchError | None = None

    @property
    def relabelled_pct(self) -> float:
        return 100.0 * self.relabelled / max(1, self.total)

    @property
    def removed_pct(self) -> float:
        return 100.0 * self.removed / max(1, self.total)


def load_model(ckpt: str | Path, overrides: dict[str, Any] | None = None) -> tuple[MoPro, PretrainConfig, dict[str, Any]]:
    """A :class:`MoPro` with a pretraining checkpoint's weights (strict), its config with ``overrides`` applied."""
    obj = ckptlib.load_file(ckpt)
    cfg = from_dict(obj["mopro_bench"]["config"])
    if overrides:
        bad = [k for k in overrides if not k.startswith(("mopro.", "data.", "aug.image_size"))]
        if bad:
            raise BenchError(f"--set {bad[0]} cannot change a trained model",
                             "only mopro.* (alpha, pseudo_th, temperature), data.* and aug.image_size apply here")
        cfg = validate(apply_overrides(cfg, overrides))
    m = cfg.model
    sd = obj["state_dict"]
    queue_size = sd["queue"].shape[1] if "queue" in sd else cfg.mopro.queue_size
    model = MoPro(m.arch, m.width, m.num_class, m.low_dim, queue_size, m.wide_stem)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise BenchError(f"checkpoint {ckpt} does not match its own config ({str(e).splitlines()[0]})",
                         "pass an unmodified checkpoint written by `mopro-bench pretrain`") from None
    return model, cfg, obj


@torch.no_grad()
def predict(model: MoPro, paths: list[Path], labels: list[int], cfg: PretrainConfig, device: torch.device,
            batch_size: int, workers: int, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(classifier logits [N, C], prototype logits [N, C]) of the query encoder, eval mode, center crops."""
    from tqdm import tqdm

    pre = Preprocess(mean=tuple(cfg.aug.mean), std=tuple(cfg.aug.std))
    ds = ImageList(paths, labels, eval_transform(cfg.aug.image_size, pre=pre))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    model.to(device).eval()
    bf16 = device.type == "cuda" and cfg.run.precision in ("auto", "bf16")  # the run's precision; fp32 = the reference
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    cls_all, proto_all = [], []
    for x, y, _ in tqdm(loader, desc="noise-clean", disable=not progress, dynamic_ncols=True):
        with amp:
            logits, q = model.encoder_q(x.to(device, non_blocking=True))
        cls_all.append(logits.float().cpu())
        tgt = y.to(device).long() if cfg.mopro.mask_unseen_protos else None
        proto_all.append(proto_logits(q.float(), model.prototypes.float(), cfg.mopro.temperature, tgt).cpu())
    return torch.cat(cls_all), torch.cat(proto_all)


# noise-clean warns when it would remove or relabel more than this fraction of the images (the observed collapse
# removed 68% of the in-distribution images), or when one class would get more than this fraction of the kept labels
# and at least twice its share of the given labels
REMOVAL_WARN_FRACTION = 0.5
RELABEL_WARN_FRACTION = 0.5
CLASS_WARN_FRACTION = 0.5
COLLAPSE_FIXES = ("Check the pretraining run's log.json for a collapse warning; pretrain again with a longer warm-up "
                  "(mopro.start_clean_epoch about half the run), larger crops on low-resolution images (e.g. "
                  "aug.crop_scale=[0.6,1.0]) and a model.num_class matching the data's classes")


def removal_warning(s: CleanSummary, given: list[int] | None = None, new_kept: list[int] | None = None) -> str | None:
    """A warning when the cleaned list looks like a collapse rather than cleaning: most images removed, most
    relabelled, or most kept labels in one class that had far fewer of the given labels (``given``: all given labels,
    ``new_kept``: the cleaned labels of the kept images)."""
    if s.total == 0:
        return None
    signs = []
    if s.removed / s.total > REMOVAL_WARN_FRACTION:
        signs.append(f"removes {s.removed_pct:.0f}% of the training images (keeps {s.kept} of {s.total})")
    if s.relabelled / s.total > RELABEL_WARN_FRACTION:
        signs.append(f"relabels {s.relabelled_pct:.0f}% of the training images")
    if given and new_kept:
        top, n_top = max(((c, new_kept.count(c)) for c in set(new_kept)), key=lambda t: t[1])
        share, before = n_top / len(new_kept), given.count(top) / len(given)
        if share > CLASS_WARN_FRACTION and share >= 2 * before:
            signs.append(f"gives {100 * share:.0f}% of the kept images label {top} (given labels: {100 * before:.0f}%)")
    if not signs:
        return None
    return ("noise-clean " + " and ".join(signs) + ": that usually means noise cleaning collapsed during pretraining, "
            "not that the data is this noisy. " + COLLAPSE_FIXES)


def _read_truth(truth_file: str | Path) -> dict[str, Any]:
    fix = "pass the .truth.json written by `mopro-bench data synth` for this --data, or drop --truth"
    try:
        obj = json.loads(Path(truth_file).read_text())
    except OSError as e:
        raise BenchError(f"--truth {truth_file} cannot be read ({e.strerror or e})", fix) from None
    except ValueError as e:
        raise BenchError(f"--truth {truth_file} is not valid JSON ({e})", fix) from None
    train = obj.get("train") if isinstance(obj, dict) else None
    if not isinstance(train, dict) or not all(isinstance(v, dict) and {"kind", "true"} <= v.keys() for v in train.values()):
        raise BenchError(f"--truth {truth_file} is not a generated dataset's truth file (no train -> kind/true map)", fix)
    return train


def truth_report(truth_file: str | Path, rels: list[str], given: list[int], new: list[int], kept: list[bool]) -> dict[str, Any]:
    """Against a generated dataset's truth file: label accuracy before/after and removal rate per kind."""
    truth = _read_truth(truth_file)
    missing = [r for r in rels if r not in truth]
    if missing:
        raise BenchError(f"--truth {truth_file} is not this dataset's: it does not cover {len(missing)} of {len(rels)} "
                         f"training images (e.g. {missing[0]})",
                         "pass the .truth.json written by `mopro-bench data synth` for this --data, or drop --truth")
    in_dist = [i for i, r in enumerate(rels) if truth[r]["kind"] != "ood"]
    kept_in = [i for i in in_dist if kept[i]]
    before = sum(given[i] == truth[rels[i]]["true"] for i in in_dist) / max(1, len(in_dist))
    after = sum(new[i] == truth[rels[i]]["true"] for i in kept_in) / max(1, len(kept_in))
    removal = {}
    for kind in ("clean", "flip", "ood"):
        idx = [i for i, r in enumerate(rels) if truth[r]["kind"] == kind]
        n = max(1, len(idx))
        removal[kind] = {"n": len(idx), "removed_pct": 100.0 * sum(not kept[i] for i in idx) / n,
                         "correct_after_pct": 100.0 * sum(kept[i] and new[i] == truth[rels[i]]["true"] for i in idx) / n}
    return {"label_accuracy_before_pct": 100.0 * before, "label_accuracy_after_pct": 100.0 * after,
            "n_in_distribution": len(in_dist), "n_kept_in_distribution": len(kept_in), "by_kind": removal}


def noise_clean(data_root: str | Path, ckpt: str | Path, out: str | Path | None, *, overrides: dict[str, Any] | None = None,
                device: torch.device | None = None, batch_size: int | None = None, workers: int = 0,
                truth: str | Path | None = None, annotation: str | None = None, progress: bool = True) -> CleanSummary:
    from mopro_bench.pretrain.checkpoint import check_out_dir
    from mopro_bench.pretrain.trainer import load_train_set

    device = device or torch.device("cpu")
    if out:  # before the pass over the whole train set, not after it
        if Path(out).expanduser().is_dir():
            raise BenchError(f"--out {out} is a directory", "pass a file name, e.g. pseudo_label.json")
        check_out_dir(Path(out).expanduser().parent, what=f"the folder of --out {out}:")
    model, cfg, ck_obj = load_model(ckpt, overrides)
    obj_sha = ck_obj[ckptlib.FILE_SHA256]
    ds, samples = load_train_set(data_root, cfg, annotation=annotation)
    rels = [r for r, _ in samples]
    given = [y for _, y in samples]
    cls_logits, p_logits = predict(model, [ds.path(r) for r in rels], given, cfg, device,
                                   batch_size or cfg.data.val_batch_size, workers, progress)
    m = cfg.mopro
    cr = clean_labels(cls_logits, p_logits, torch.tensor(given), alpha=m.alpha, threshold=m.pseudo_th,
                      num_class=cfg.model.num_class)
    kept = cr.kept.tolist()
    new = cr.target.tolist()
    n_relab = int((cr.relabelled & cr.kept).sum())
    summary = CleanSummary(total=len(rels), kept=sum(kept), relabelled=n_relab, removed=len(rels) - sum(kept), out=None)
    summary.warning = removal_warning(summary, given, [y for y, k in zip(new, kept) if k])
    if out:
        obj = {
            "images": [r for r, k in zip(rels, kept) if k],
            "labels": [int(y) for y, k in zip(new, kept) if k],
            "meta": {"checkpoint": str(ckpt), "checkpoint_sha256": obj_sha, "data": str(data_root),
                     "alpha": m.alpha, "pseudo_th": m.pseudo_th, "temperature": m.temperature,
                     "num_class": cfg.model.num_class, "total": summary.total, "kept": summary.kept,
                     "relabelled": summary.relabelled, "removed": summary.removed, "warning": summary.warning},
        }
        summary.out = atomic_write_json(out, obj)
    if truth:  # after the pseudo-labels are safely written: a wrong --truth must not lose them
        try:
            summary.truth = truth_report(truth, rels, given, new, kept)
        except BenchError as e:
            if summary.out is None:
                raise
            # the caller reports the written file first, then this error (exit 2)
            summary.truth_error = BenchError(f"pseudo-labels written to {summary.out}, but {e.message}", e.fix)
    return summary
