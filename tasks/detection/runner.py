"""Train Mask R-CNN with detectron2 and evaluate it with ``COCOEvaluator`` (imports detectron2; used by the task only).

Processes are started by detectron2's ``launch`` (``torch.multiprocessing`` spawn, one per GPU, ``--num-machines`` /
``--machine-rank`` / ``--dist-url`` for several machines; a world of one runs in the calling process). Each worker
registers the datasets, builds the trainer, loads the backbone (or resumes from the work dir), trains, runs
precise BN and evaluates on val2017; the main process of every machine writes the outcome to
``<work_dir>/mopro_bench_outcome.json``, which the calling process reads back.

Loading is never detectron2's own: its ``DetectionCheckpointer`` unpickles ``.pkl`` files with plain ``pickle.load``
and, on resume, follows whatever ``<work_dir>/last_checkpoint`` names -- in a shared or writable work dir that would run
code from a crafted file. :func:`guard_checkpointer` makes every load go through the suite's restricted loader
(:func:`mopro_bench.checkpoints.safeload.read_checkpoint`: tensors, numpy arrays and plain containers only) and only
for files directly inside the work dir; every checkpoint the trainer saves is recorded with its sha256 in
``<work_dir>/mopro_bench_checkpoints.json``, and :func:`resume_checkpoint` (called before any process starts)
resumes only from a file listed there with that content.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json, sha256_json

OUTCOME_FILE = "mopro_bench_outcome.json"
RUN_FILE = "mopro_bench_run.json"
SAVED_FILE = "mopro_bench_checkpoints.json"  # {file name: sha256} of every checkpoint the suite's trainer wrote
RESUME_FIX = "delete the work dir (or pass another --work-dir) and start the run over"
PREDICTIONS_DIR = "inference"
# parameters of the ResNet trunk inside detectron2's model: FPN (backbone.bottom_up.*) or C4 (backbone.stem/res2-4 and
# the res5 blocks of the ROI head; not C4's extra norm after res5, which is new)
TRUNK_KEY = re.compile(r"^(?:backbone\.(?:bottom_up\.)?(?:stem|res[2-5])\.|roi_heads\.res5\.\d+\.)")


# ------------------------------------------------------------------------------------------------------------ datasets
def dataset_names(files: dict[str, Path]) -> tuple[str, str]:
    """Names under which the train/val sets of this COCO root are registered (unique per file location)."""
    key = sha256_json({k: str(Path(v).resolve()) for k, v in files.items()})[:8]
    return f"mopro_coco_train_{key}", f"mopro_coco_val_{key}"


def register_coco(files: dict[str, Path]) -> tuple[str, str]:
    """Register train2017/val2017 with detectron2 (idempotent; needed again in every spawned worker)."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    train, val = dataset_names(files)
    for name, js, images in ((train, files["train_json"], files["train_images"]), (val, files["val_json"], files["val_images"])):
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(js), str(images))
    return train, val


# ------------------------------------------------------------------------------------------------- safe checkpoints
def inside_work_dir(path: str | Path, work_dir: str | Path) -> Path:
    """``path`` resolved (symbolic links followed), required to be a file directly inside ``work_dir``."""
    work = Path(work_dir).resolve()
    p = Path(path)
    resolved = (p if p.is_absolute() else work / p).resolve()
    if resolved.parent != work:
        raise BenchError(f"refusing to load {path}: it is not a file in the work dir {work} (resolves to {resolved})",
                         RESUME_FIX)
    if not resolved.is_file():
        raise BenchError(f"checkpoint {resolved} in the work dir does not exist", RESUME_FIX)
    return resolved


def saved_checkpoints(work_dir: str | Path) -> dict[str, str]:
    f = Path(work_dir) / SAVED_FILE
    try:
        obj = json.loads(f.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in obj.items()} if isinstance(obj, dict) else {}


def resume_checkpoint(work_dir: str | Path) -> Path:
    """The checkpoint that ``<work_dir>/last_checkpoint`` names, checked before anything loads it: a bare file name in
    the work dir (no path, no ``..``, no symbolic link out of it) that the suite's trainer wrote, byte for byte."""
    from mopro_bench.io import sha256_file

    work = Path(work_dir)
    marker = work / "last_checkpoint"
    try:
        name = marker.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"{marker} cannot be read ({type(e).__name__})", RESUME_FIX) from None
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise BenchError(f"{marker} names {name!r}, not a checkpoint file in the work dir", RESUME_FIX)
    path = inside_work_dir(name, work)
    saved = saved_checkpoints(work)
    if name not in saved:
        raise BenchError(f"{marker} names {name}, which this suite's trainer did not write (not in {SAVED_FILE})",
                         RESUME_FIX)
    if sha256_file(path) != saved[name]:
        raise BenchError(f"checkpoint {path} changed after the trainer wrote it (sha256 differs from {SAVED_FILE})",
                         RESUME_FIX)
    return path


def guard_checkpointer(checkpointer, work_dir: str | Path) -> None:
    """Patch one detectron2 checkpointer: loads use the restricted loader on files directly inside ``work_dir``;
    saves (main process) are recorded with their sha256 in ``SAVED_FILE`` before ``last_checkpoint`` names them."""
    from mopro_bench.checkpoints.safeload import read_checkpoint
    from mopro_bench.io import sha256_file

    def load_file(filename: str) -> dict[str, Any]:
        # detectron2 opens ``filename`` as given: relative to the current directory (save_dir joined with the name,
        # or MODEL.WEIGHTS), so it is made absolute from there before the work-dir check
        path = inside_work_dir(Path(filename).absolute(), work_dir)
        try:
            data = read_checkpoint(path).obj  # refuses anything but tensors, numpy arrays and plain containers
        except BenchError as e:  # (its --trust-checkpoint fix does not apply: a work dir is never trusted)
            raise BenchError(e.message, RESUME_FIX) from None
        if not isinstance(data, dict):
            raise BenchError(f"checkpoint {path} holds a {type(data).__name__}, not a dict", RESUME_FIX)
        if path.suffix == ".pkl":  # the exported backbone: detectron2's model-zoo layout (see checkpoints/detectron2.py)
            if "model" in data and "__author__" in data:
                return data
            data = data.get("blobs", data)
            return {"model": {k: v for k, v in data.items() if not k.endswith("_momentum")}, "__author__": "Caffe2",
                    "matching_heuristics": True}
        return data if "model" in data else {"model": data}

    tag = checkpointer.tag_last_checkpoint

    def record_then_tag(basename: str) -> None:
        # called by save() on the process that writes, after the file is complete and before last_checkpoint names it
        work = Path(work_dir)
        kept = {k: v for k, v in saved_checkpoints(work).items() if (work / k).is_file()}
        atomic_write_json(work / SAVED_FILE, {**kept, basename: sha256_file(work / basename)})
        tag(basename)

    checkpointer._load_file = load_file
    checkpointer.tag_last_checkpoint = record_then_tag


# ------------------------------------------------------------------------------------------------------- backbone load
def load_report(incompatible: Any, model_state: dict[str, Any]) -> dict[str, Any]:
    """Summarise detectron2's incompatible-keys report for the ResNet trunk (see ``TRUNK_KEY``)."""
    counted = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
    trunk = [k for k in model_state if TRUNK_KEY.match(k) and not k.endswith("num_batches_tracked")]
    missing = sorted(k for k in counted if TRUNK_KEY.match(k))
    heads_init = sorted({k.rsplit(".", 1)[0] for k in counted if not TRUNK_KEY.match(k)})
    return {
        "backbone_tensors": len(trunk),
        "backbone_loaded": len(trunk) - len(missing),
        "backbone_missing": missing,
        "unexpected": sorted(incompatible.unexpected_keys),
        "incorrect_shapes": [[k, list(a), list(b)] for k, a, b in incompatible.incorrect_shapes],
        "randomly_initialised_modules": len(heads_init),
    }


def check_backbone_load(cfg) -> dict[str, Any]:
    """Build the model on CPU, load ``cfg.MODEL.WEIGHTS`` the way training will, and require every trunk tensor.

    Raises BenchError naming the keys when the exported backbone does not fill detectron2's ResNet exactly."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from mopro_bench.tasks.detection.config import register_modules

    register_modules()
    c = cfg.clone()
    c.defrost()
    c.MODEL.DEVICE = "cpu"
    model = build_model(c)
    ckpt = DetectionCheckpointer(model)
    guard_checkpointer(ckpt, cfg.OUTPUT_DIR)
    captured: list[Any] = []
    original = ckpt._load_model

    def capture(checkpoint):
        inc = original(checkpoint)
        captured.append(inc)
        return inc

    ckpt._load_model = capture
    logging.getLogger("detectron2.checkpoint.c2_model_loading").setLevel(logging.WARNING)
    ckpt.load(cfg.MODEL.WEIGHTS)
    report = load_report(captured[0], model.state_dict())
    bad = report["backbone_missing"] or report["unexpected"] or report["incorrect_shapes"]
    if bad:
        what = "; ".join(filter(None, [
            f"{len(report['backbone_missing'])} backbone tensors not filled (e.g. {report['backbone_missing'][:3]})"
            if report["backbone_missing"] else "",
            f"unexpected keys {report['unexpected'][:3]}" if report["unexpected"] else "",
            f"shape mismatches {report['incorrect_shapes'][:3]}" if report["incorrect_shapes"] else "",
        ]))
        raise BenchError(f"the exported backbone does not load into detectron2's ResNet-{cfg.MODEL.RESNETS.DEPTH}: {what}",
                         "check the checkpoint's architecture (`mopro-bench inspect CKPT`) and width")
    return report


# ------------------------------------------------------------------------------------------------------------- trainer
def _trainer_class():
    from detectron2.engine import DefaultTrainer, hooks
    from detectron2.evaluation import COCOEvaluator

    class Trainer(DefaultTrainer):
        """DefaultTrainer without the periodic evaluation hook: the suite evaluates once, after training."""

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            out = output_folder or str(Path(cfg.OUTPUT_DIR) / PREDICTIONS_DIR)
            # the official COCO API (pycocotools), not detectron2's optional C++ re-implementation
            return COCOEvaluator(dataset_name, tasks=("bbox", "segm"), distributed=True, output_dir=out,
                                 use_fast_impl=False)

        def build_hooks(self):
            return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]

    return Trainer


def cfg_from_yaml(text: str):
    from detectron2.config import CfgNode, get_cfg

    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(text))
    cfg.freeze()
    return cfg


def worker(spec: dict[str, Any]) -> None:
    """One process of a run (called by detectron2's ``launch``; must stay a module-level function)."""
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    cfg = cfg_from_yaml(spec["cfg_yaml"])
    rank = comm.get_rank()
    # console + <work_dir>/log.txt; the handlers are removed afterwards, so that a later run in the same process
    # (tests, notebooks) does not also write into this run's log (setup_logger itself is cached per arguments)
    d2_logger = logging.getLogger("detectron2")
    before = list(d2_logger.handlers)
    # the full log always goes to <work_dir>/log.txt; the console gets it only with progress output on
    getattr(setup_logger, "__wrapped__", setup_logger)(cfg.OUTPUT_DIR, distributed_rank=rank, name="detectron2",
                                                      configure_stdout=spec.get("console_log", True))
    try:
        if spec.get("console_log", True):
            _work(spec, cfg)
        else:  # pycocotools prints its summary tables on stdout; the metrics land in the result record
            with contextlib.redirect_stdout(io.StringIO()):
                _work(spec, cfg)
    finally:
        for h in d2_logger.handlers[:]:
            if h not in before:
                d2_logger.removeHandler(h)
                h.flush()  # (not close(): detectron2 caches the log file stream per path)


def _work(spec: dict[str, Any], cfg) -> None:
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    from mopro_bench.tasks.detection.config import register_modules

    rank = comm.get_rank()
    log = logging.getLogger("detectron2.mopro_bench")
    register_modules()
    register_coco({k: Path(v) for k, v in spec["files"].items()})
    seed_all_rng(cfg.SEED + rank)

    if cfg.MODEL.DEVICE == "cpu" and comm.get_world_size() > 1:
        # detectron2's DefaultTrainer passes device_ids=[local_rank] to DDP, which only GPU modules accept; CPU
        # processes (gloo) need device_ids=None. Patched in this spawned worker process only.
        import detectron2.engine.defaults as d2_defaults

        make_ddp = d2_defaults.create_ddp_model
        d2_defaults.create_ddp_model = lambda model, **kw: make_ddp(model, **{**kw, "device_ids": None})
    Trainer = _trainer_class()
    trainer = Trainer(cfg)
    captured: list[Any] = []
    original = trainer.checkpointer._load_model

    def capture(checkpoint):
        inc = original(checkpoint)
        captured.append(inc)
        return inc

    trainer.checkpointer._load_model = capture
    guard_checkpointer(trainer.checkpointer, cfg.OUTPUT_DIR)
    if spec["resume"] and trainer.checkpointer.has_checkpoint():
        resume_checkpoint(cfg.OUTPUT_DIR)  # again in this process: the file must still be what the trainer wrote
    trainer.resume_or_load(resume=bool(spec["resume"]))
    start_iter = trainer.start_iter
    model_state = trainer.model.module.state_dict() if hasattr(trainer.model, "module") else trainer.model.state_dict()
    report = load_report(captured[0], model_state) if captured else None
    if start_iter:
        log.info(f"resumed from {cfg.OUTPUT_DIR} at iteration {start_iter} of {cfg.SOLVER.MAX_ITER}")
    t0 = time.time()
    trainer.train()
    t_train = time.time() - t0
    t1 = time.time()
    results = Trainer.test(cfg, trainer.model, evaluators=[Trainer.build_evaluator(cfg, cfg.DATASETS.TEST[0])])
    t_eval = time.time() - t1
    outcome = {
        "results": {k: dict(v) for k, v in results.items()} if comm.is_main_process() else None,
        "start_iter": int(start_iter),
        "max_iter": int(cfg.SOLVER.MAX_ITER),
        "world_size": comm.get_world_size(),
        "load_report": report,
        "resumed": bool(start_iter),
        "train_s": t_train,
        "eval_s": t_eval,
        "predictions": str(Path(cfg.OUTPUT_DIR) / PREDICTIONS_DIR / "coco_instances_results.json"),
        "run_key": spec["run_key"],
    }
    gathered = comm.all_gather(outcome)  # every machine learns rank 0's results
    if comm.get_local_rank() == 0:
        atomic_write_json(Path(cfg.OUTPUT_DIR) / OUTCOME_FILE, gathered[0])
    comm.synchronize()


def launch_run(spec: dict[str, Any], *, num_gpus: int, num_machines: int, machine_rank: int, dist_url: str) -> dict[str, Any]:
    """Run :func:`worker` in ``num_gpus`` processes on this machine and return rank 0's outcome."""
    from detectron2.engine import launch

    out = Path(spec["output_dir"]) / OUTCOME_FILE
    out.unlink(missing_ok=True)
    launch(worker, num_gpus, num_machines=num_machines, machine_rank=machine_rank, dist_url=dist_url, args=(spec,))
    if not out.is_file():
        raise RuntimeError(f"the detectron2 workers finished without writing {out}")
    outcome = json.loads(out.read_text())
    if outcome.get("run_key") != spec["run_key"]:
        raise RuntimeError(f"{out} belongs to another run")
    return outcome
