"""The model zoo: the built-in entries, `mopro-bench zoo`, and `--ckpt zoo:NAME` / URL end to end (inspect, export,
evaluate) with checkpoints in the published layouts served from a loopback server (never the real URLs)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mopro_bench import hub, zoo
from mopro_bench.checkpoints.formats import format_names
from mopro_bench.checkpoints.synth import random_resnet, write_layout
from mopro_bench.leaderboard import DEFAULT_PUBLISHED
from tests.hub.test_hub_download import LoopbackServer, loopback_only  # noqa: F401 - the autouse guard applies here too

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PUBLISHED = DEFAULT_PUBLISHED  # the shipped copy (package data)


@pytest.fixture(scope="module")
def server():
    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def two_nets(tmp_path_factory):
    """A MoCo v2 layout file (encoder_q = net a, encoder_k = net b), resnet18, and its bytes."""
    a, b = random_resnet("resnet18", seed=20), random_resnet("resnet18", seed=21)
    p = tmp_path_factory.mktemp("zoo") / "moco_v2_test_pretrain.pth.tar"
    write_layout("moco-v2", a.state_dict(), p, second=b.state_dict(), arch="resnet18", low_dim=16)
    return a.state_dict(), b.state_dict(), p.read_bytes()


def test_builtin_entries_are_complete_and_sourced():
    entries = list(zoo.ENTRIES)
    assert len(entries) >= 10
    assert len({e.name for e in entries}) == len(entries) and len({e.filename for e in entries}) == len(entries)
    adapters = set(format_names())
    published_models = set(zoo.published_counts(PUBLISHED))
    hosts = {"dl.fbaipublicfiles.com", "storage.googleapis.com", "download.pytorch.org"}
    for e in entries:
        assert re.fullmatch(r"[a-z0-9_]+", e.name), e.name
        assert e.url.startswith("https://") and e.url.split("/")[2] in hosts, e.url
        assert e.url_source.startswith("github.com/") and e.citation and e.pretrain_data, e.name
        assert e.format in adapters, (e.name, e.format)
        assert e.published is None or e.published in published_models, (e.name, e.published)
        assert e.md5_prefix is None or re.fullmatch(r"[0-9a-f]{8}", e.md5_prefix)
    by = {e.name: e for e in entries}
    for name in ("mopro_v1", "mopro_v2", "moco_v1_200ep", "moco_v2_200ep", "moco_v2_800ep", "swav_800ep", "dino_resnet50",
                 "pcl_v1", "pcl_v2", "tv_resnet50_v1", "tv_resnet50_v2"):
        assert name in by
    # torchvision files carry their SHA-256 prefix in the name; it is what the download checks
    assert hub._expected(by["tv_resnet50_v1"].url, by["tv_resnet50_v1"]) == {"sha256_prefix": "0676ba61"}
    assert hub._expected(by["moco_v2_800ep"].url, by["moco_v2_800ep"]) == {"md5_prefix": "a04e12f8"}
    assert by["mopro_v1"].published == "MoPro V1" and by["pcl_v2"].published == "PCL v2"


def test_zoo_command_lists_entries_and_cache_state(cli, tmp_path):
    code, out, _ = cli("zoo", "--cache-dir", tmp_path)
    assert code == 0
    rows = [ln.split() for ln in out.splitlines()[1:] if ln.strip() and not ln.startswith("use as")]
    assert len(rows) >= 10
    moco = next(r for r in rows if r[0] == "moco_v2_800ep")
    assert moco[1:4] == ["MoCo", "v2", "800"] and "no" in moco and moco[-1] == "github.com/facebookresearch/moco"
    mopro = next(r for r in rows if r[0] == "mopro_v1")
    assert "19" in mopro or any(c.isdigit() for c in mopro[5:])
    # a file placed in the cache by hand shows as cached
    e = zoo.get("swav_800ep")
    dest = hub.cache_path(tmp_path, e.url, e)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"x")
    code, out, _ = cli("zoo", "--cache-dir", tmp_path, "--json")
    table = {r["name"]: r for r in json.loads(out)}
    assert table["swav_800ep"]["cached"] is True and table["moco_v2_800ep"]["cached"] is False
    assert table["mopro_v1"]["published_rows"] == zoo.published_counts(PUBLISHED)["MoPro V1"] > 0
    code, _, err = cli("inspect", "--ckpt", "zoo:moco_v2_80ep", "--cache-dir", tmp_path)
    assert code == 2 and "no zoo checkpoint named 'moco_v2_80ep'" in err and "zoo:moco_v2_800ep" in err


def test_zoo_name_end_to_end_inspect_select_export(server, two_nets, tmp_path, cli):
    a, b, data = two_nets
    server.files["moco_v2_test_pretrain.pth.tar"] = data
    md5 = hashlib.md5(data).hexdigest()
    zoo.register(dict(name="test_moco", method="MoCo v2", url=server.url("ok", "moco_v2_test_pretrain.pth.tar"),
                      url_source="test server", format="moco", pretrain_data="generated", epochs=200, citation="none",
                      arch="resnet18", select="encoder_q", md5_prefix=md5[:8]), replace=True)
    try:
        cache = tmp_path / "cache"
        code, out, err = cli("inspect", "--ckpt", "zoo:test_moco", "--json", "--cache-dir", cache)
        assert code == 0, err
        r = json.loads(out)
        assert (r["format"], r["select"], r["name"], r["arch"]) == ("moco", "encoder_q", "test_moco", "resnet18")
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        assert Path(r["path"]) == cache / "checkpoints" / "moco_v2_test_pretrain.pth.tar"
        n = len(server.log)
        code, out, _ = cli("inspect", "--ckpt", "zoo:test_moco#encoder_k", "--json", "--cache-dir", cache)
        r = json.loads(out)
        assert code == 0 and (r["select"], r["name"]) == ("encoder_k", "test_moco#encoder_k") and len(server.log) == n
        # export the key encoder through the zoo name: exactly net b's tensors under torchvision names
        out_file = tmp_path / "k.pth"
        code, out, err = cli("export", "--ckpt", "zoo:test_moco", "--select", "encoder_k", "--format", "torchvision",
                             "--out", out_file, "--cache-dir", cache)
        assert code == 0, err
        sd = torch.load(out_file, weights_only=True)
        assert sd.keys() == {k for k in b if not k.startswith("fc.")}
        assert all(torch.equal(sd[k], b[k]) for k in sd) and not torch.equal(sd["conv1.weight"], a["conv1.weight"])
        code, out, _ = cli("zoo", "--download", "test_moco", "--cache-dir", cache)
        assert code == 0 and "already cached" in out
    finally:
        zoo.unregister("test_moco")


def test_url_checkpoint_through_evaluate(server, synth_root, tmp_path):
    """A torchvision-layout file given by URL, scored with its own classifier through evaluate(): the record carries the
    downloaded file's sha256 and the URL, and top-1 equals a direct computation on the same images."""
    from mopro_bench.checkpoints import load_checkpoint
    from mopro_bench.data.common import eval_transform, load_rgb
    from mopro_bench.data.imagenet import ImageNetFolder
    from mopro_bench.evaluate import evaluate

    torch.set_num_threads(1)
    root = synth_root("imagenet")
    val = ImageNetFolder(root).samples("val")
    net = random_resnet("resnet18", seed=30)
    trunk = net.state_dict()
    ck0 = load_checkpoint("random:resnet18")
    ck0.backbone.load_state_dict({k: v for k, v in trunk.items() if not k.startswith("fc.")}, strict=False)
    tf = eval_transform(32, 36, ck0.preprocess)
    with torch.no_grad():
        feats = ck0.backbone.eval()(torch.stack([tf(load_rgb(p)) for p, _ in val]))
    labels = torch.tensor([y for _, y in val])
    # a nearest-class-mean classifier from these features: far above chance, so the comparison means something
    w = torch.zeros(1000, feats.shape[1])
    for c in labels.unique():
        w[c] = feats[labels == c].mean(0)
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    expect = 100.0 * float(((feats @ w.T).argmax(1) == labels).float().mean())
    assert expect > 100.0 * 2 / len(labels.unique())
    f = tmp_path / "tv.pth"
    write_layout("torchvision", trunk, f, fc={"weight": w, "bias": torch.zeros(1000)}, arch="resnet18")
    server.files["tv-resnet18.pth"] = f.read_bytes()
    url = server.url("ok", "tv-resnet18.pth")
    r = hub.resolve_checkpoint(url, cache_dir=tmp_path / "cache", progress=False)
    rec = evaluate(r.path, "imagenet_val", root, name=r.name, select=r.select, source=r.source, cache_dir=tmp_path / "cache",
                   results_dir=tmp_path / "res", progress=False, overrides={"image_size": 32, "resize": 36}).record
    assert rec["checkpoint"]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest() == r.source["sha256"]
    assert rec["checkpoint"]["source"] == {"url": url, "sha256": r.source["sha256"]}
    assert rec["checkpoint"]["name"] == "tv-resnet18.pth"
    assert rec["metrics"]["top1"] == pytest.approx(expect, abs=1e-6)
    assert np.isfinite(rec["metrics"]["top5"])


# the published layout of each distinct (format, select) in the zoo, as mopro_bench.checkpoints.synth writes it
ZOO_LAYOUTS = {"mopro_v1": "mopro", "moco_v2_800ep": "moco-v2", "moco_v1_200ep": "moco-v1", "pcl_v2": "pcl",
               "swav_800ep": "swav", "dino_resnet50": "dino-backbone", "dino_resnet50_full": "dino",
               "tv_resnet50_v1": "torchvision"}


def test_each_entry_format_and_network_match_its_published_layout(tmp_path):
    from mopro_bench.checkpoints import load_checkpoint

    trunk = random_resnet("resnet18", seed=40).state_dict()
    formats = {(e.format, e.select) for e in zoo.ENTRIES if e.family == "resnet"}  # ViT entries: test_zoo_families.py
    assert formats == {(zoo.get(n).format, zoo.get(n).select) for n in ZOO_LAYOUTS}  # every kind is covered below
    for name, layout in ZOO_LAYOUTS.items():
        e = zoo.get(name)
        p = tmp_path / f"{name}.pth"
        write_layout(layout, trunk, p, arch="resnet18", low_dim=16)
        ck = load_checkpoint(p, select=e.select)
        assert (ck.format, ck.select) == (e.format, e.select), name
        assert all(torch.equal(ck.backbone.state_dict()[k], v) for k, v in trunk.items() if not k.startswith("fc.")), name


def test_a_file_placed_by_hand_is_used_offline_and_checked(tmp_path, monkeypatch, cli):
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    trunk = random_resnet("resnet18", seed=41).state_dict()
    swav = zoo.get("swav_800ep")
    write_layout("swav", trunk, hub.cache_path(tmp_path, swav.url, swav), arch="resnet18", low_dim=16)
    r = hub.resolve_checkpoint("zoo:swav_800ep", cache_dir=tmp_path, progress=False)
    assert (r.name, r.select, r.source["zoo"], r.source["published"]) == ("swav_800ep", None, "swav_800ep", None)
    rec = hub.read_index(tmp_path)[swav.url]
    assert rec["how"] == "placed in the cache by hand" and rec["sha256"] == r.source["sha256"]
    # torchvision's name carries the SHA-256 prefix: a stand-in file there is refused, with the fix
    tv = zoo.get("tv_resnet50_v1")
    write_layout("torchvision", trunk, hub.cache_path(tmp_path, tv.url, tv), arch="resnet18")
    code, _, err = cli("inspect", "--ckpt", "zoo:tv_resnet50_v1", "--cache-dir", tmp_path)
    assert code == 2 and "does not start with 0676ba61" in err and "fix: delete" in err and len(err.splitlines()) == 1


def test_eval_cli_scores_a_zoo_name_and_a_url_in_one_run(server, two_nets, synth_root, tmp_path, cli):
    """`mopro-bench eval --ckpt zoo:NAME --ckpt https://...` (loopback): both download once into the cache, each pair
    writes a record naming its source, and the zoo entry's network (encoder_q) is the one scored."""
    a, b, data = two_nets
    server.files["moco_v2_test_pretrain.pth.tar"] = data
    tv = tmp_path / "tv-resnet18.pth"
    write_layout("torchvision", b, tv, arch="resnet18")  # net b as a plain torchvision file: the zoo's key encoder
    server.files["tv-resnet18.pth"] = tv.read_bytes()
    url = server.url("ok", "tv-resnet18.pth")
    zoo.register(dict(name="test_moco_eval", method="MoCo v2", url=server.url("ok", "moco_v2_test_pretrain.pth.tar"),
                      url_source="test server", format="moco", pretrain_data="generated", epochs=200, citation="none",
                      arch="resnet18", select="encoder_q"), replace=True)
    try:
        voc, res, cache = synth_root("voc07"), tmp_path / "res", tmp_path / "cache"
        args = ("eval", "--ckpt", "zoo:test_moco_eval", "--ckpt", url, "--task", "voc_lowshot", "--data", voc,
                "--set", "ks=[1]", "--set", "num_samples=1", "--set", "image_size=32", "--set", "resize=36",
                "--results-dir", res, "--cache-dir", cache, "--no-progress")
        code, out, err = cli(*args)
        assert code == 0, err
        recs = {r["checkpoint"]["name"]: r for r in (json.loads(p.read_text()) for p in res.rglob("*.json"))}
        assert set(recs) == {"test_moco_eval", "tv-resnet18.pth"}
        z, u = recs["test_moco_eval"], recs["tv-resnet18.pth"]
        assert z["checkpoint"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert z["checkpoint"]["source"]["zoo"] == "test_moco_eval"
        assert z["checkpoint"]["select"] == "encoder_q" and u["checkpoint"]["source"]["url"] == url
        assert z["metrics"]["mAP_k1"] != u["metrics"]["mAP_k1"]  # encoder_q (net a) is scored, not net b
        assert "test_moco_eval" in out and "tv-resnet18.pth" in out  # the summary table names both
        n = len(server.log)
        code, _, err = cli(*args)  # a second run reads both files from the cache: no request at all
        assert code == 0 and len(server.log) == n, err
    finally:
        zoo.unregister("test_moco_eval")
