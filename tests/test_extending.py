"""docs/extending.md is true: each recipe, followed literally with a throw-away plug-in, works end to end.

1. a task, registered programmatically, run through ``evaluate()`` on tiny generated data (record written, validated,
   listed by ``mopro-bench tasks``);
2. a checkpoint format (an ``Adapter`` in the format registry): a file in its layout loads through ``load_checkpoint``
   with 100% coverage and gives the same features as the network it was written from;
3. a dataset layout.
Every plug-in is unregistered afterwards, so the other tests see the built-ins only.
"""

from __future__ import annotations

import json
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mopro_bench import registry
from mopro_bench.errors import BenchError
from mopro_bench.registry import Option, Protocol, Task, TaskOutput

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def recipe_code(section: str, module_name: str) -> types.ModuleType:
    """Execute the first ```python block of the docs/extending.md section whose heading starts with ``## <section>``
    as a module named ``module_name`` (so dataclasses and pickling see a real module)."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"^## " + re.escape(section) + r".*?$(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert m, f"docs/extending.md has no section '## {section}'"
    block = re.search(r"```python\n(.*?)```", m.group(1), re.DOTALL)
    assert block, f"docs/extending.md section {section} has no python block"
    mod = types.ModuleType(module_name)
    sys.modules[module_name] = mod
    exec(compile(block.group(1), f"docs/extending.md ({section})", "exec"), mod.__dict__)
    return mod



# ----------------------------------------------------------------------------------------------- recipe 1: a task
@dataclass(frozen=True)
class CentroidProtocol(Protocol):
    image_size: int = 32
    resize: int = 36


class NearestCentroid(Task):
    name = "extending_nearest_centroid"
    description = "nearest class mean of frozen train features, cosine, on ImageNet val (docs/extending.md recipe)"
    data_kind = "imagenet"
    protocols = {"default": CentroidProtocol("default", "1", "nearest class mean, cosine, centre crop 32")}
    default_protocol = "default"
    metrics = ("top1",)
    options = (Option("centroid_metric", "extending recipe: distance to the class means", choices=("cosine", "l2")),)

    def run(self, model, data_root, protocol, ctx):
        from mopro_bench.data.imagenet import ImageNetFolder
        from mopro_bench.features import extract_features

        ds = ImageNetFolder(data_root)
        feats = {}
        for split in ("train", "val"):
            samples = ds.samples(split)
            paths = [p for p, _ in samples]
            rel = [str(p.relative_to(data_root)) for p in paths]
            x = extract_features(model, paths, ctx, dataset_id=f"imagenet/{split}", rel_paths=rel,
                                 image_size=protocol.image_size, resize=protocol.resize)
            if ctx.option("centroid_metric", "cosine") == "cosine":
                x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
            feats[split] = (x, np.array([y for _, y in samples]))
        (xt, yt), (xv, yv) = feats["train"], feats["val"]
        classes = np.unique(yt)
        centroids = np.stack([xt[yt == c].mean(0) for c in classes])
        dist = ((xv[:, None, :] - centroids[None]) ** 2).sum(-1)  # cosine: on unit vectors, the same ranking
        pred = classes[np.argmin(dist, axis=1)]
        correct = (pred == yv).astype(int)
        top1 = 100.0 * float(correct.mean())
        return TaskOutput(metrics={"top1": top1}, details={"per_run": {"top1": [top1]},
                                                             "per_image": {"top1": {"correct": correct.tolist()}}},
                          selection="no selection", metric_units={"top1": "%"})


@pytest.fixture
def centroid_task():
    task = registry.register(NearestCentroid())
    try:
        yield task
    finally:
        registry.unregister(task.name)


def test_recipe_task_runs_through_evaluate(centroid_task, synth_root, tmp_path, cli):
    from mopro_bench.evaluate import evaluate
    from mopro_bench.results import read_record

    root = synth_root("imagenet")
    out = evaluate("random:resnet18", "extending_nearest_centroid", root, cache_dir=tmp_path / "cache",
                   results_dir=tmp_path / "results", progress=False)
    rec = out.record
    assert rec["task"] == "extending_nearest_centroid"
    assert rec["protocol"]["id"] == "extending_nearest_centroid@default"
    assert rec["protocol"]["params"] == {"image_size": 32, "resize": 36}
    assert 0.0 <= rec["metrics"]["top1"] <= 100.0
    # the images read are fingerprinted into the record (extract_features calls ctx.record_data)
    assert set(rec["data"]["fingerprints"]) == {"imagenet/train", "imagenet/val"}
    assert out.path.is_file() and out.path.parent.name == "extending_nearest_centroid@default"
    assert read_record(out.path)["metrics"] == rec["metrics"]  # validated on read, keys verified

    # --set works on its constants like on a built-in's: another protocol id
    changed = evaluate("random:resnet18", "extending_nearest_centroid", root, overrides={"image_size": 28},
                       cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", progress=False)
    assert changed.record["protocol"]["id"].startswith("extending_nearest_centroid@default+")

    code, text, _ = cli("tasks")
    assert code == 0 and "extending_nearest_centroid@default" in text

    # the task's own eval option: a flag of `eval`, passed in ctx.options, part of the experiment's identity
    code, text, err = cli("--cache-dir", tmp_path / "cache", "eval", "--ckpt", "random:resnet18", "--task",
                          "extending_nearest_centroid", "--data", root, "--results-dir", tmp_path / "results",
                          "--centroid-metric", "l2")
    assert code == 0, err
    recs = sorted((tmp_path / "results" / "extending_nearest_centroid@default").glob("*.json"))
    l2 = [json.loads(p.read_text()) for p in recs if json.loads(p.read_text())["experiment"]["options"]]
    assert len(l2) == 1 and l2[0]["experiment"]["options"] == {"centroid_metric": "l2"}
    assert l2[0]["experiment"]["key"] != rec["experiment"]["key"]
    code, _, err = cli("eval", "--ckpt", "random:resnet18", "--task", "extending_nearest_centroid", "--data", root,
                       "--centroid-metric", "manhattan")
    assert code == 2 and "manhattan" in err


def test_recipe_task_snippet_registers_like_a_builtin(synth_root, tmp_path):
    """The docs' own snippet, registered the way a built-in is (a lazy "module:attr" line, as in BUILTIN_TASKS)."""
    from mopro_bench.evaluate import evaluate

    recipe_code("Recipe 1", "extending_recipe_task")
    registry.TASKS.register("imagenet_knn", "extending_recipe_task:IMAGENET_KNN", replace=True)
    try:
        assert "imagenet_knn" in registry.registry()
        out = evaluate("random:resnet18", "imagenet_knn", synth_root("imagenet"), overrides={"image_size": 32},
                       cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", progress=False)
        assert out.record["protocol"]["id"].startswith("imagenet_knn@default+")
        assert out.record["protocol"]["params"] == {"k": 20, "image_size": 32}
        assert out.record["metrics"] == {"top1": 71.3}
        assert out.record["selection"] == "no selection"
    finally:
        registry.unregister("imagenet_knn")
        sys.modules.pop("extending_recipe_task", None)


def test_recipe_task_is_gone_after_unregister():
    names = registry.registry()
    assert "extending_nearest_centroid" not in names and "imagenet_knn" not in names


# ------------------------------------------------------------------------------------ recipe 2: a checkpoint format
def _mytool_adapter():
    """The adapter exactly as docs/extending.md writes it (its first python block under "Recipe 2")."""
    ns = recipe_code("Recipe 2", "extending_recipe_format")
    return ns.ADAPTER


@pytest.fixture
def mytool_format():
    from mopro_bench.checkpoints.formats import FORMATS

    adapter = _mytool_adapter()
    FORMATS.register(adapter.name, adapter, origin="register()")
    try:
        yield adapter
    finally:
        FORMATS.unregister(adapter.name)


def test_recipe_checkpoint_format_loads_verified(mytool_format, tmp_path, cli):
    from mopro_bench.backbones import build_backbone
    from mopro_bench.checkpoints import load_checkpoint

    torch.manual_seed(0)
    ref = build_backbone("resnet18", 1)
    net = {f"trunk.{k}": v.clone() for k, v in ref.state_dict().items()}
    net["head.weight"] = torch.zeros(10, 512)
    path = tmp_path / "mytool.ckpt"
    torch.save({"mytool_version": 1, "net": net}, path)

    ck = load_checkpoint(str(path))
    assert ck.format == "mytool"
    assert ck.arch == "resnet18"
    assert ck.coverage["loaded"] == ck.coverage["expected"] and ck.coverage["percent"] == 100.0  # every tensor, no partial load
    ref.eval()
    ck.backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ck.backbone(x), ref(x))

    code, text, _ = cli("inspect", "--formats")
    assert code == 0 and "mytool" in text


def test_recipe_checkpoint_format_damaged_file_is_refused(mytool_format, tmp_path):
    from mopro_bench.backbones import build_backbone
    from mopro_bench.checkpoints import load_checkpoint

    sd = build_backbone("resnet18", 1).state_dict()
    sd.pop("layer4.1.conv2.weight")
    path = tmp_path / "broken.ckpt"
    torch.save({"mytool_version": 1, "net": {f"trunk.{k}": v for k, v in sd.items()}}, path)
    with pytest.raises(BenchError, match="mytool"):
        load_checkpoint(str(path))


def test_recipe_format_is_gone_after_unregister():
    from mopro_bench.checkpoints.formats import format_names

    assert "mytool" not in format_names()


# ------------------------------------------------------------------------------------------ recipe 3: a dataset layout
@pytest.fixture
def mylist_layout():
    from mopro_bench.data import DATASETS

    mod = recipe_code("Recipe 3", "extending_recipe_dataset")
    DATASETS.register("mylist", mod.LAYOUT)
    try:
        yield mod
    finally:
        DATASETS.unregister("mylist")
        sys.modules.pop("extending_recipe_dataset", None)


class MyListCentroid(Task):
    """A task on the new kind: nearest class mean, even-numbered images of each class as train, odd ones as test."""

    name = "extending_mylist_centroid"
    description = "nearest class mean on a mylist dataset (docs/extending.md recipe 3)"
    data_kind = "mylist"
    splits = ("all",)  # recipe 1: the splits it reads, counted for data.complete
    protocols = {"default": CentroidProtocol("default", "1", "nearest class mean, cosine, centre crop 32")}
    default_protocol = "default"
    metrics = ("top1",)

    def run(self, model, data_root, protocol, ctx):
        from mopro_bench.features import extract_features

        loader = sys.modules["extending_recipe_dataset"].MyList(data_root)
        samples = loader.samples()
        paths = [p for p, _ in samples]
        x = extract_features(model, paths, ctx, dataset_id="mylist/all", rel_paths=[p.relative_to(data_root).as_posix()
                                                                                      for p in paths],
                             image_size=protocol.image_size, resize=protocol.resize)
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
        y = np.array([label for _, label in samples])
        train = np.array([int(p.stem) % 2 == 0 for p in paths])
        classes = np.unique(y[train])
        centroids = np.stack([x[train & (y == c)].mean(0) for c in classes])
        pred = classes[np.argmax(x[~train] @ centroids.T, axis=1)]
        top1 = 100.0 * float((pred == y[~train]).mean())
        return TaskOutput(metrics={"top1": top1}, selection="no selection", metric_units={"top1": "%"})


def test_recipe_dataset_layout_synth_check_listing(mylist_layout, tmp_path):
    from mopro_bench.data import is_synthetic
    from mopro_bench.data.check import check
    from mopro_bench.data.synth import synth

    summary = synth("mylist", tmp_path / "ml", seed=0, scale="tiny")
    root = tmp_path / "ml"
    assert summary["counts"] == {"all": 16} and summary["params"] == {"classes": 4, "per_class": 4, "image_size": 64}
    assert is_synthetic(root)
    report = check("mylist", root, deep=True)
    assert report.ok, report.errors
    assert report.counts == {"all": 16} and report.official == {"all": 1000}
    assert len(report.warnings) == 1  # usable, not the official size
    listing = mylist_layout.LAYOUT.listing(root, "all", {})
    assert listing.found == 16 and listing.official == 1000 and listing.lines[0].endswith(" 0")
    assert len(mylist_layout.MyList(root).samples()) == 16
    # same seed, same bytes
    synth("mylist", tmp_path / "ml2", seed=0, scale="tiny")
    assert (root / "labels.txt").read_bytes() == (tmp_path / "ml2" / "labels.txt").read_bytes()
    first = listing.lines[0].split()[0]
    assert (root / first).read_bytes() == (tmp_path / "ml2" / first).read_bytes()

    # what check reports: a missing image, a line that leaves the root, a malformed line
    (root / first).unlink()
    assert any("1 of 16 mylist images are missing" in e for e in check("mylist", root).errors)
    (root / "labels.txt").write_text("../outside.jpg 0\n")
    errors = check("mylist", root).errors
    assert errors and errors[0].startswith(f"{root / 'labels.txt'}:1:")
    (root / "labels.txt").write_text("just-a-name\n")
    assert "expected '<relpath> <label>'" in check("mylist", root).errors[0]


def test_recipe_dataset_layout_feeds_a_task(mylist_layout, tmp_path, monkeypatch):
    from mopro_bench.data.synth import synth
    from mopro_bench.evaluate import evaluate

    synth("mylist", tmp_path / "ml", seed=0, scale="tiny")
    task = registry.register(MyListCentroid())
    try:
        out = evaluate("random:resnet18", task.name, tmp_path / "ml", cache_dir=tmp_path / "cache",
                       results_dir=tmp_path / "results", progress=False)
    finally:
        registry.unregister(task.name)
    rec = out.record
    assert rec["data"]["kind"] == "mylist" and rec["data"]["synthetic"] is True
    assert set(rec["data"]["fingerprints"]) == {"mylist/all"} and rec["data"]["fingerprints"]["mylist/all"]["n"] == 16
    # counted with the layout's own listing: found vs official, and the hash of the listed names + labels
    assert rec["data"]["counts"] == {"all": {"found": 16, "official": 1000}}
    assert set(rec["data"]["lists"]) == {"all"}
    assert rec["data"]["complete"] is False  # generated (and not the official size): never complete
    assert 0.0 <= rec["metrics"]["top1"] <= 100.0


def test_recipe_dataset_is_gone_after_unregister():
    from mopro_bench.data import DATASETS

    assert "mylist" not in DATASETS
