"""Checkpoint identity and values: the sha256 is of the bytes the weights came from; NaN/Inf or negative BN variance
is refused (exit 2, tensor named); crafted safetensors headers are one-line errors (reliability cases 5-10, 19-22)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
import torch

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.checkpoints.synth import random_resnet
from mopro_bench.errors import BenchError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sds():
    return random_resnet("resnet18", seed=0).state_dict(), random_resnet("resnet18", seed=1).state_dict()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256_is_of_the_bytes_the_weights_came_from_when_the_path_is_replaced(sds, tmp_path, monkeypatch):
    """pretrain re-points last.pth.tar while eval loads it: the identity must follow the weights, not the path."""
    import mopro_bench.checkpoints.loader as A

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(sds[0], a)
    torch.save(sds[1], b)
    target = tmp_path / "last.pth.tar"
    target.write_bytes(a.read_bytes())
    b_copy = tmp_path / "b_copy"
    b_copy.write_bytes(b.read_bytes())
    real = A.read_checkpoint

    def read_then_swap(path, trust=False):  # the file is replaced by a rename right after it was read
        raw = real(path, trust=trust)
        os.replace(b_copy, target)
        return raw

    monkeypatch.setattr(A, "read_checkpoint", read_then_swap)
    ck = load_checkpoint(target)
    assert _sha(target) == _sha(b)  # the path now holds b
    assert torch.equal(ck.backbone.state_dict()["conv1.weight"], sds[0]["conv1.weight"])  # the weights are a's
    assert ck.sha256 == _sha(a)


@pytest.mark.parametrize("case", ["nan", "inf", "negvar"])
def test_non_finite_or_negative_variance_is_refused_naming_the_tensor(sds, tmp_path, case):
    sd = {k: v.clone() for k, v in sds[0].items()}
    key = {"nan": "conv1.weight", "inf": "layer3.1.bn2.bias", "negvar": "bn1.running_var"}[case]
    sd[key].view(-1)[0] = {"nan": float("nan"), "inf": float("inf"), "negvar": -1.0}[case]
    path = tmp_path / f"{case}.pth"
    torch.save(sd, path)
    with pytest.raises(BenchError) as e:
        load_checkpoint(path)
    assert key in str(e.value) and "refused" in str(e.value)
    ck = load_checkpoint(path, check_values=False)  # what inspect does
    assert key in ck.coverage["nonfinite" if case != "negvar" else "negative_var"] and ck.meta["refused"]


def test_inspect_reports_bad_tensors_and_eval_refuses_with_exit_2(sds, tmp_path, synth_root, cli):
    sd = {k: v.clone() for k, v in sds[0].items()}
    sd["conv1.weight"][0, 0, 0, 0] = float("nan")
    sd["layer1.0.bn1.running_var"][3] = -2.0
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    code, out, err = cli("inspect", "--ckpt", path)
    assert code == 2 and "Traceback" not in err, err
    assert "refused" in out and "conv1.weight: NaN/Inf" in out
    assert "layer1.0.bn1.running_var: negative running variance" in out
    code, out, err = cli("inspect", "--ckpt", path, "--json")
    rep = json.loads(out)
    assert rep["coverage"]["nonfinite"] == ["conv1.weight"] and rep["coverage"]["negative_var"] == ["layer1.0.bn1.running_var"]
    code, out, err = cli("eval", "--ckpt", path, "--task", "places_lowshot", "--data", synth_root("places205"),
                         "--device", "cpu", "--workers", "0", "--no-progress", "--results-dir", tmp_path / "res",
                         "--cache-dir", tmp_path / "cache", "--set", "image_size=32", "--set", "resize=36")
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "conv1.weight" in lines[0] and "layer1.0.bn1.running_var" in lines[0]
    assert not list((tmp_path / "res").rglob("*.json"))


def test_a_nan_classifier_head_is_refused_when_used(sds, tmp_path):
    sd = {k: v.clone() for k, v in sds[0].items()}
    sd["fc.weight"] = torch.full((1000, 512), float("nan"))
    sd["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "nanhead.pth"
    torch.save(sd, path)
    ck = load_checkpoint(path)  # the backbone is fine: low-shot tasks may use it
    assert any("head classifier holds NaN" in w for w in ck.meta["warnings"])
    with pytest.raises(BenchError, match="classifier head holds NaN"):
        ck.classifier()


def _st(header, body: bytes = b"", n: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if n is None else n) + h + body


CRAFTED = {
    "huge_length": _st(b'{"a":1}', n=2**62),
    "negative_length": struct.pack("<q", -5) + b'{"x": 1}' + b"\0" * 64,
    "over_format_limit": _st(b"{" + b" " * 64 + b"}", n=200 * 1024 * 1024),
    "not_json": _st(b"{not json at all}"),
    "deep_json": _st(b"[" * 100000 + b"]" * 100000),
    "list_header": _st([1, 2, 3]),
    "string_entry": _st({"conv1.weight": "hello"}),
    "unknown_dtype": _st({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16),
    "no_offsets": _st({"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),
    "offsets_outside": _st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4096]}}, b"\0" * 8),
    "offsets_reversed": _st({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, b"\0" * 8),
    "negative_offset": _st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, b"\0" * 8),
    "bad_shape": _st({"w": {"dtype": "F32", "shape": [3, 5], "data_offsets": [0, 8]}}, b"\0" * 8),
    "shape_not_ints": _st({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}, b"\0" * 8),
    "misaligned": _st({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 7]}}, b"\0" * 8),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_safetensors_headers_are_bench_errors(tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(CRAFTED[name])
    with pytest.raises(BenchError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_crafted_safetensors_is_one_line_from_the_cli(tmp_path, cli):
    path = tmp_path / "x.safetensors"
    path.write_bytes(CRAFTED["string_entry"])
    code, out, err = cli("inspect", "--ckpt", path)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_symlink_loop_is_named_as_such(tmp_path):
    loop = tmp_path / "loop.pth"
    loop.symlink_to(loop)
    with pytest.raises(BenchError, match="symlink loop"):
        load_checkpoint(loop)
