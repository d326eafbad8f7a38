"""Bad checkpoints: one-line errors (exit 2, no traceback), never a partial load, never code run from a pickle."""

from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.checkpoints.synth import random_family, random_resnet, write_layout
from mopro_bench.errors import BenchError
from tests.conftest import run_cli_subprocess

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    d = tmp_path_factory.mktemp("r18")
    sd = random_resnet("resnet18", seed=0).state_dict()
    path = d / "resnet18.pth"
    torch.save(sd, path)
    return sd, path


def _one_line_error(code: int, out: str, err: str, *needles: str) -> str:
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_truncated_files(cli, r18, tmp_path):
    sd, path = r18
    data = path.read_bytes()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    _one_line_error(*cli("inspect", "--ckpt", tmp_path / "half.pth"), "truncated or corrupt", "sha256")
    buf = tmp_path / "legacy.pth"
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    (tmp_path / "legacy_half.pth").write_bytes(buf.read_bytes()[:-1000])
    _one_line_error(*cli("inspect", "--ckpt", tmp_path / "legacy_half.pth"), "truncated or corrupt")
    pkl = tmp_path / "d2.pkl"
    write_layout("detectron2-moco", {k: v for k, v in sd.items() if not k.startswith("fc.")}, pkl)
    (tmp_path / "d2_half.pkl").write_bytes(pkl.read_bytes()[: pkl.stat().st_size // 3])
    _one_line_error(*cli("inspect", "--ckpt", tmp_path / "d2_half.pkl"), "truncated or corrupt")


def test_not_a_checkpoint(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello, I am not a checkpoint\n")
    _one_line_error(*cli("inspect", "--ckpt", tmp_path / "notes.txt"), "is not a checkpoint")
    (tmp_path / "img.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    _one_line_error(*cli("inspect", "--ckpt", tmp_path / "img.jpg"), "is not a checkpoint")
    (tmp_path / "empty.pth").write_bytes(b"")
    _one_line_error(*cli("inspect", "--ckpt", tmp_path / "empty.pth"), "is empty (0 bytes)")
    _one_line_error(*cli("inspect", "--ckpt", _save({}, tmp_path / "emptydict.pth")), "empty dict")
    _one_line_error(*cli("inspect", "--ckpt", _save({"epoch": 3, "arch": "resnet50"}, tmp_path / "meta.pth")),
                    "no state dict of tensors", "epoch")
    _one_line_error(*cli("inspect", "--ckpt", _save([torch.zeros(3)], tmp_path / "list.pth")), "not a dict of weights")
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    _one_line_error(*cli("inspect", "--ckpt", tmp_path / "arrays.npz"), "zip archive but not a PyTorch checkpoint", "a.npy")
    _one_line_error(*cli("inspect", "--ckpt", tmp_path / "missing.pth"), "does not exist")
    _one_line_error(*cli("inspect", "--ckpt", tmp_path), "is a directory")
    vit = {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8),
           "patch_embed.proj.weight": torch.zeros(8, 3, 4, 4)}
    _one_line_error(*cli("inspect", "--ckpt", _save(vit, tmp_path / "vit.pth")), "vit.pth (adapter timm)",
                    "the ViT trunk has no blocks.N")
    other_vit = {"cls_token": torch.zeros(1, 1, 8), "transformer.layers.0.attn.weight": torch.zeros(8, 8)}
    _one_line_error(*cli("inspect", "--ckpt", _save(other_vit, tmp_path / "vit2.pth")), "Vision Transformer")
    other = {"encoder.weight": torch.zeros(3, 3), "decoder.weight": torch.zeros(3, 3)}
    _one_line_error(*cli("inspect", "--ckpt", _save(other, tmp_path / "other.pth")), "ViT or ConvNeXt checkpoint layout",
                    "encoder.weight")


def test_resnet18_weights_as_resnet50(cli, r18):
    _, path = r18
    line = _one_line_error(*cli("inspect", "--ckpt", path, "--arch", "resnet50"), "--arch resnet50 disagrees",
                           "resnet18", "BasicBlock blocks 2-2-2-2")
    assert "--arch resnet18" in line  # the fix names the right architecture
    _one_line_error(*cli("export", "--ckpt", path, "--arch", "resnet50x2", "--format", "torchvision", "--out", "x.pth"),
                    "disagrees")
    code, out, _ = cli("inspect", "--ckpt", path, "--arch", "resnet18")
    assert code == 0 and "resnet18 (width 1)" in out


def test_missing_layer_missing_buffer_misshaped_unexpected(cli, r18, tmp_path):
    sd, _ = r18
    no_block = {k: v for k, v in sd.items() if not k.startswith("layer3.1.")}
    line = _one_line_error(*cli("inspect", "--ckpt", _save(no_block, tmp_path / "a.pth")),
                           "adapter torchvision", "does not match resnet18", "12 missing (layer3.1.conv1.weight")
    assert "match no architecture" in line
    no_buf = {k: v for k, v in sd.items() if k != "layer2.0.bn1.running_var"}
    _one_line_error(*cli("inspect", "--ckpt", _save(no_buf, tmp_path / "b.pth")), "1 missing (layer2.0.bn1.running_var)")
    bad = dict(sd)
    bad["layer1.0.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    _one_line_error(*cli("inspect", "--ckpt", _save(bad, tmp_path / "c.pth")),
                    "1 mis-shaped (layer1.0.conv2.weight: file [64, 64, 1, 1] vs [64, 64, 3, 3])")
    extra = {**sd, "layer1.0.se.fc.weight": torch.zeros(4, 64)}
    _one_line_error(*cli("inspect", "--ckpt", _save(extra, tmp_path / "d.pth")), "1 unexpected (layer1.0.se.fc.weight)")
    stray = {**sd, "projector.weight": torch.zeros(4, 512)}  # a non-trunk key in a bare dict is not silently dropped
    _one_line_error(*cli("inspect", "--ckpt", _save(stray, tmp_path / "e.pth")), "1 unexpected (projector.weight)")
    # one num_batches_tracked missing is damage, not an old torchvision file
    one_nbt = {k: v for k, v in sd.items() if k != "layer4.1.bn2.num_batches_tracked"}
    _one_line_error(*cli("inspect", "--ckpt", _save(one_nbt, tmp_path / "f.pth")), "1 missing (layer4.1.bn2.num_batches_tracked)")
    deep = {("conv1.0.weight" if k == "conv1.weight" else k): v for k, v in sd.items()}
    _one_line_error(*cli("inspect", "--ckpt", _save(deep, tmp_path / "g.pth")), "deep stem")
    with pytest.raises(BenchError, match="12 missing"):  # the library raises the same error
        load_checkpoint(tmp_path / "a.pth")


def test_select_errors(cli, r18, tmp_path):
    sd, path = r18
    _one_line_error(*cli("inspect", "--ckpt", path, "--select", "encoder_k"), "does not apply", "one network")
    moco = tmp_path / "moco.pth"
    write_layout("moco-v2", {k: v for k, v in sd.items() if not k.startswith("fc.")}, moco, low_dim=16)
    _one_line_error(*cli("inspect", "--ckpt", moco, "--select", "teacher"), "--select teacher does not apply",
                    "choose one of: encoder_q, encoder_k")
    _one_line_error(*cli("inspect", "--ckpt", f"{moco}#encoder_k", "--select", "encoder_q"), "give the network once")
    _one_line_error(*cli("inspect", "--ckpt", "random:resnet18", "--select", "encoder_k"), "does not apply")
    _one_line_error(*cli("inspect", "--ckpt", "random:resnet18", "--arch", "resnet50"), "disagrees")
    _one_line_error(*cli("inspect", "--ckpt", "random:vit"), "unknown architecture")


def test_malicious_pickles_are_refused_without_running(cli, tmp_path):
    marker = tmp_path / "PWNED"
    evil_torch = _save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _Evil(marker)}, tmp_path / "evil.pth")
    _one_line_error(*cli("inspect", "--ckpt", evil_torch), "refused", "system", "--trust-checkpoint")
    evil_pkl = tmp_path / "evil.pkl"
    evil_pkl.write_bytes(pickle.dumps({"model": {"stem.conv1.weight": np.zeros(3)}, "__author__": _Evil(marker)}, protocol=2))
    _one_line_error(*cli("inspect", "--ckpt", evil_pkl), "refused", "system")
    _one_line_error(*cli("export", "--ckpt", evil_pkl, "--format", "torchvision", "--out", tmp_path / "o.pth"), "refused")
    assert not marker.exists()
    assert not (tmp_path / "o.pth").exists()


@pytest.mark.slow
def test_malicious_pickle_in_a_fresh_process(tmp_path):
    """Exactly as a user sees it: exit 2, one line on stderr, nothing run."""
    marker = tmp_path / "PWNED"
    evil = _save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _Evil(marker)}, tmp_path / "evil.pth")
    res = run_cli_subprocess("inspect", "--ckpt", evil)
    _one_line_error(res.returncode, res.stdout, res.stderr, "refused", "system")
    assert not marker.exists()


def test_trust_lifts_the_restriction_for_a_pickled_module(cli, tmp_path):
    model = random_resnet("resnet18", seed=2)
    path = _save(model, tmp_path / "whole_model.pth")  # torch.save(model): needs torchvision's class to unpickle
    _one_line_error(*cli("inspect", "--ckpt", path), "refused", "torchvision.models.resnet.ResNet")
    code, out, err = cli("inspect", "--ckpt", path, "--trust-checkpoint")
    assert code == 0, err
    assert "format       torchvision" in out and "pickles a whole nn.Module" in out
    ck = load_checkpoint(path, trust=True)
    assert ck.meta["trusted"] is True
    x = torch.randn(1, 3, 64, 64)
    model.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.equal(ck.backbone(x), model(x))


def test_harmless_globals_are_allowed(tmp_path):
    """argparse.Namespace, pathlib paths, numpy scalars/arrays (real checkpoints carry them) load without --trust."""
    sd = {k: v for k, v in random_resnet("resnet18", seed=4).state_dict().items() if not k.startswith("fc.")}
    obj = {"state_dict": sd, "best_acc1": np.float64(71.5), "rng": np.random.RandomState(0).get_state(),
           "args": argparse.Namespace(arch="resnet18", data=Path("/data")), "epoch": 5}
    ck = load_checkpoint(_save(obj, tmp_path / "ok.pth"))
    assert ck.format == "torchvision" and ck.meta["trusted"] is False and ck.meta["epoch"] == 5
    # a Python-2-era detectron2 pickle (protocol 2: bytes via _codecs.encode) goes through the restricted unpickler
    p = tmp_path / "py2.pkl"
    write_layout("detectron2-moco", sd, p, pickle_protocol=2, low_dim=16)
    ck = load_checkpoint(p)
    assert ck.format == "detectron2" and ck.meta["container"] == "pickle"
    assert torch.equal(ck.backbone.layer4[1].bn2.running_mean, sd["layer4.1.bn2.running_mean"])


@pytest.fixture(scope="module")
def vit_sd():
    return {k: v.clone() for k, v in random_family("vit_small_patch16_224", seed=5, depth=2, img_size=32).state_dict().items()}


def test_vit_and_convnext_damage_is_one_line(cli, vit_sd, tmp_path):
    """A ViT / ConvNeXt file is never loaded partially or as something it is not: one line, exit 2."""
    no_fc2 = {k: v for k, v in vit_sd.items() if k != "blocks.1.mlp.fc2.weight"}
    _one_line_error(*cli("inspect", "--ckpt", _save(no_fc2, tmp_path / "a.pth")), "(adapter timm) does not match",
                    "vit_small2_patch16_32", "1 missing (blocks.1.mlp.fc2.weight)")
    bad = {**vit_sd, "blocks.0.attn.qkv.weight": torch.zeros(1152, 192)}
    _one_line_error(*cli("inspect", "--ckpt", _save(bad, tmp_path / "b.pth")),
                    "1 mis-shaped (blocks.0.attn.qkv.weight: file [1152, 192] vs [1152, 384])")
    # a file whose own metadata names a 12-block ViT-S but holds 2 blocks: the missing blocks are named
    moco = write_layout("moco-v3-vit", vit_sd, tmp_path / "moco.pth.tar", arch="vit_small")
    _one_line_error(*cli("inspect", "--ckpt", moco), "(adapter moco) does not match vit_small_patch16_32",
                    "missing (blocks.2.", "metadata says depth 12")
    _one_line_error(*cli("inspect", "--ckpt", write_layout("moco-v3-vit", vit_sd, tmp_path / "c.pth", arch="vit_conv_small")),
                    "vit_conv_small", "convolutional stem")
    ok = _save(vit_sd, tmp_path / "vits.pth")
    line = _one_line_error(*cli("inspect", "--ckpt", ok, "--arch", "vit_base_patch16_224"),
                           "--arch vit_base_patch16_224 disagrees", "its trunk is vit_small2_patch16_32")
    assert "--arch vit_small2_patch16_32" in line
    _one_line_error(*cli("inspect", "--ckpt", ok, "--arch", "resnet50"), "--arch resnet50 disagrees")
    code, out, err = cli("inspect", "--ckpt", ok)
    assert code == 0, err
    assert "vit_small2_patch16_32 (family vit, 6 heads)" in out and "format       timm" in out
    rep = json.loads(cli("inspect", "--ckpt", ok, "--json")[1])
    assert (rep["family"], rep["arch"], rep["coverage"]["architecture"]["num_heads"]) == ("vit", "vit_small2_patch16_32", 6)
    # what the suite does not build is named
    fc_norm = {**vit_sd, "fc_norm.weight": torch.ones(384), "fc_norm.bias": torch.zeros(384)}
    _one_line_error(*cli("inspect", "--ckpt", _save({"model": fc_norm}, tmp_path / "mae_ft.pth")), "fc_norm",
                    "MAE fine-tuned", "use the pretrained (not fine-tuned) checkpoint")
    regs = {**vit_sd, "mask_token": torch.zeros(1, 384), "register_tokens": torch.zeros(1, 4, 384)}
    _one_line_error(*cli("inspect", "--ckpt", _save(regs, tmp_path / "dinov2_reg.pth")), "(adapter dinov2)",
                    "register tokens")
    deit = {**vit_sd, "dist_token": torch.zeros(1, 1, 384), "head_dist.weight": torch.zeros(1000, 384)}
    _one_line_error(*cli("inspect", "--ckpt", _save(deit, tmp_path / "deit.pth")), "distilled DeiT", "dist_token")
    cnx = random_family("convnext_tiny", seed=6, depths=[1, 1, 1, 1]).state_dict()
    fb = write_layout("convnext-fb", cnx, tmp_path / "cnx.pth")
    obj = torch.load(fb, weights_only=True)
    del obj["model"]["stages.2.0.pwconv2.bias"]
    _one_line_error(*cli("inspect", "--ckpt", _save(obj, tmp_path / "cnx_bad.pth")), "(adapter convnext)",
                    "1 missing (stages.2.blocks.0.mlp.fc2.bias)")


def test_nan_in_a_vit_is_refused_as_for_resnets(cli, vit_sd, tmp_path):
    sd = {k: v.clone() for k, v in vit_sd.items()}
    sd["blocks.1.attn.qkv.weight"][0, 0] = float("nan")
    path = _save(sd, tmp_path / "nan_vit.pth")
    with pytest.raises(BenchError) as e:
        load_checkpoint(path)
    assert "refused" in str(e.value) and "blocks.1.attn.qkv.weight" in str(e.value)
    code, out, err = cli("inspect", "--ckpt", path)
    assert code == 2 and "Traceback" not in err, err
    assert "refused" in out and "blocks.1.attn.qkv.weight: NaN/Inf" in out
