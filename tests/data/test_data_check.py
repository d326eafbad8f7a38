"""`data check` on good generated trees and on broken ones (exact messages), and the `data` CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from mopro_bench.data import KINDS
from mopro_bench.data.check import check
from tests.conftest import run_cli_subprocess

OFFICIAL = {"voc07": {"trainval": 5011, "test": 4952}, "places205": {"train": 2448873, "val": 20500},
            "imagenet": {"train": 1281167, "val": 50000}, "imagenet-r": {"test": 30000}, "imagenet-a": {"test": 7500},
            "coco": {"train": 118287, "val": 5000}, "webvision": {"train": 2439574, "val": 50000}}


@pytest.mark.parametrize("kind", KINDS)
def test_generated_tree_passes_deep_check_with_size_warnings(kind, synth_root):
    r = check(kind, synth_root(kind), deep=True)
    assert r.ok, r.errors
    assert r.official == OFFICIAL[kind]
    assert all(r.counts[s] > 0 for s in r.official)
    # usable, but not the official size: one warning per split
    assert len(r.warnings) == len(r.official)
    assert all("results are not comparable to published numbers" in w for w in r.warnings)
    assert r.lines()[-1] == f"usable, with {len(r.official)} warning(s)"


def _copy(synth_root, kind, tmp_path):
    root = tmp_path / kind
    shutil.copytree(synth_root(kind), root)
    return root


def test_missing_split_file(synth_root, tmp_path, cli):
    root = _copy(synth_root, "voc07", tmp_path)
    f = root / "VOCdevkit/VOC2007/ImageSets/Main/test.txt"
    f.unlink()
    r = check("voc07", root)
    assert r.errors == [f"VOC07 split file {f} is missing -- fix: extract VOCtest_06-Nov-2007.tar into {root}"]
    code, out, err = cli("data", "check", "voc07", root)
    assert code == 2 and "NOT USABLE: 1 error(s)" in out
    assert err == (f"error: voc07 dataset at {root} is not usable: VOC07 split file {f} is missing -- "
                   f"fix: extract VOCtest_06-Nov-2007.tar into {root}\n")


def test_missing_images(synth_root, tmp_path):
    root = _copy(synth_root, "places205", tmp_path)
    images = root / "data/vision/torralba/deeplearning/images256"
    lines = (root / "trainvalsplit_places205/val_places205.csv").read_text().splitlines()
    gone = [images / ln.split()[0] for ln in lines[:5]]
    for p in gone:
        p.unlink()
    r = check("places205", root)
    assert r.errors == [f"5 of 205 Places205 val images are missing (first: {gone[0]}, {gone[1]}, {gone[2]}, ...) -- "
                        f"fix: extract imagesPlaces205_resize.tar.gz into {root}"]


def test_bad_label(synth_root, tmp_path):
    root = _copy(synth_root, "places205", tmp_path)
    f = root / "trainvalsplit_places205/train_places205.csv"
    lines = f.read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 205"
    f.write_text("\n".join(lines) + "\n")
    r = check("places205", root)
    assert r.errors == [f"{f}:3: label 205 is out of range 0..204: {lines[2]!r} -- "
                        "fix: restore the file from trainvalsplit_places205.tar.gz"]
    root = _copy(synth_root, "voc07", tmp_path)
    f = root / "VOCdevkit/VOC2007/ImageSets/Main/dog_trainval.txt"
    lines = f.read_text().splitlines()
    lines[0] = lines[0].split()[0] + " 2"
    f.write_text("\n".join(lines) + "\n")
    assert check("voc07", root).errors == [f"{f}:1: expected '<id> <1|-1|0>': {lines[0]!r} -- "
                                           "fix: restore dog_trainval.txt from VOCtrainval_06-Nov-2007.tar"]


def test_corrupt_jpeg_needs_deep(synth_root, tmp_path):
    root = _copy(synth_root, "imagenet", tmp_path)
    bad = sorted((root / "val").rglob("*.JPEG"))[3]
    bad.write_bytes(bad.read_bytes()[:200])
    assert check("imagenet", root).ok  # only --deep decodes images
    r = check("imagenet", root, deep=True)
    assert len(r.errors) == 1
    assert r.errors[0].startswith(f"1 of 32 ImageNet val images cannot be decoded (first: {bad}: OSError: ")
    assert r.errors[0].endswith("-- fix: replace the unreadable files with good copies from the original archive")


def test_webvision_corrupt_training_image_is_a_warning_but_val_is_an_error(synth_root, tmp_path):
    root = _copy(synth_root, "webvision", tmp_path)
    rel = (root / "info/train_filelist_google.txt").read_text().split()[0]
    (root / rel).write_bytes((root / rel).read_bytes()[:100])
    r = check("webvision", root, deep=True)
    assert r.ok and any(w.startswith(f"1 of 128 WebVision train images cannot be decoded (first: {root / rel}: ") and
                        w.endswith("; training skips them") for w in r.warnings)
    val = sorted((root / "val_images_256").iterdir())[0]
    val.unlink()
    r = check("webvision", root)
    assert r.errors == [f"1 of 32 WebVision val images are missing (first: {val}) -- fix: extract val_images_256.tar into {root}"]


def test_webvision_label_beyond_synsets(synth_root, tmp_path):
    root = _copy(synth_root, "webvision", tmp_path)
    f = root / "info/val_filelist.txt"
    lines = f.read_text().splitlines()
    lines[0] = lines[0].split()[0] + " 1000"
    f.write_text("\n".join(lines) + "\n")
    assert check("webvision", root).errors == [
        f"{f}:1: label 1000 is out of range 0..999: {lines[0]!r} -- "
        "fix: restore val_filelist.txt from the WebVision info archive"]


def test_imagenet_ra_foreign_folder_and_coco_bad_annotation(synth_root, tmp_path):
    root = _copy(synth_root, "imagenet-a", tmp_path)
    (root / "n01440764").mkdir()  # an ImageNet class that is not in ImageNet-A
    assert check("imagenet-a", root).errors == [
        f"{root} has 1 folder(s) that are not imagenet-a wnids (first: n01440764) -- "
        "fix: pass the extracted imagenet-a folder (its 200 <wnid>/ folders) with --data"]
    root = _copy(synth_root, "coco", tmp_path)
    jf = root / "annotations/instances_val2017.json"
    obj = json.loads(jf.read_text())
    obj["annotations"][0]["category_id"] = 99
    jf.write_text(json.dumps(obj))
    a = obj["annotations"][0]["id"]
    assert check("coco", root).errors == [
        f"{jf}: 1 bad annotation(s) (first: annotation {a}: unknown category_id 99) -- "
        "fix: re-extract annotations_trainval2017.zip"]


def test_cli_synth_then_check(tmp_path, cli):
    out = tmp_path / "ina"
    code, stdout, err = cli("data", "synth", "imagenet-a", out, "--seed", "2", "--classes", "2", "--per-class", "3")
    assert code == 0, err
    assert f"wrote imagenet-a (tiny, seed 2) to {out}: test 6" in stdout
    code, stdout, err = cli("data", "check", "imagenet-a", out, "--deep")
    assert code == 0 and stdout.splitlines()[-1] == "usable, with 1 warning(s)"
    code, stdout, err = cli("data", "check", "imagenet-a", out, "--json")
    assert code == 0 and json.loads(stdout)["counts"] == {"test": 6}
    code, stdout, err = cli("data", "synth", "imagenet-a", out)
    assert code == 2 and err == (f"error: {out} already exists and is not empty -- "
                                 "fix: pass a new or empty folder to write the dataset into\n")
    code, stdout, err = cli("data", "synth", "voc07", tmp_path / "v", "--noise", "0.1")
    assert code == 2 and err == ("error: synth voc07 does not take noise -- "
                                 "fix: options for voc07: --height, --test, --trainval, --width\n")


@pytest.mark.slow  # a fresh interpreter importing the CLI (torch) takes ~10 s on a loaded machine
def test_cli_unusable_tree_exits_2_with_one_line(tmp_path):
    p = run_cli_subprocess("data", "check", "imagenet-a", tmp_path / "nope")
    assert p.returncode == 2
    assert p.stderr == (f"error: imagenet-a dataset at {tmp_path / 'nope'} is not usable: dataset root {tmp_path / 'nope'} "
                        "does not exist -- fix: pass the folder that holds the dataset\n")
