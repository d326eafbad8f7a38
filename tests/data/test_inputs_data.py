"""List files that used to crash or pass silently: bytes that are not UTF-8, a byte-order mark, empty splits, duplicated
lines, contradictory labels, entries outside the dataset root. `data check` reports each as an error (the tree is not
usable), and the loaders that evaluation uses refuse the same with a one-line BenchError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mopro_bench.data.check import check
from mopro_bench.errors import BenchError

MAIN = "VOCdevkit/VOC2007/ImageSets/Main"
PLACES_VAL = "trainvalsplit_places205/val_places205.csv"


def _copy(synth_root, kind, tmp_path) -> Path:
    root = tmp_path / kind
    shutil.copytree(synth_root(kind), root)
    return root


def _latin1_on_line_3(f: Path) -> int:
    """Put a Latin-1 'é' into the first field of line 3; return its byte offset."""
    lines = f.read_bytes().splitlines(keepends=True)
    offset = len(b"".join(lines[:2])) + 1
    lines[2] = lines[2][:1] + b"\xe9" + lines[2][1:]
    f.write_bytes(b"".join(lines))
    return offset


def _places(root):
    from mopro_bench.data.places import Places205

    return Places205(root).samples("val")


def _voc_ids(root):
    from mopro_bench.data.voc import VOC07

    return VOC07(root).labels("trainval")


def _voc_labels(root):
    from mopro_bench.data.voc import VOC07

    return VOC07(root).labels("test")


def _wv_val(root):
    from mopro_bench.data.webvision import WebVision

    return WebVision(root).val_samples()


def _wv_synsets(root):
    from mopro_bench.data.webvision import WebVision

    return WebVision(root).synsets()


def _coco(root):
    from mopro_bench.data.coco import load_instances

    return load_instances(root / "annotations/instances_val2017.json")


@pytest.mark.parametrize(("kind", "rel", "load"), [
    ("places205", PLACES_VAL, _places),
    ("voc07", f"{MAIN}/trainval.txt", _voc_ids),
    ("voc07", f"{MAIN}/cat_test.txt", _voc_labels),
    ("webvision", "info/val_filelist.txt", _wv_val),
    ("webvision", "info/synsets.txt", _wv_synsets),
    ("coco", "annotations/instances_val2017.json", _coco),
])
def test_a_list_file_that_is_not_utf8_names_file_line_and_offset(synth_root, tmp_path, kind, rel, load):
    root = _copy(synth_root, kind, tmp_path)
    f = root / rel
    if f.suffix == ".json":  # a Latin-1 file name on line 3 of a pretty-printed annotation file
        obj = json.loads(f.read_text())
        f.write_text(json.dumps(obj, indent=0))
    offset = _latin1_on_line_3(f)
    where = f"{f}:3: byte 0xe9 at offset {offset} is not UTF-8 text"
    with pytest.raises(BenchError) as info:  # was: UnicodeDecodeError traceback
        load(root)
    assert where in info.value.message and "iconv -f latin1 -t utf-8" in info.value.fix
    r = check(kind, root)
    assert not r.ok and any(where in e for e in r.errors), r.errors


def test_imagenet_subset_and_annotation_files_that_are_not_utf8(tmp_path):
    from mopro_bench.data.imagenet import read_subset_file
    from mopro_bench.data.webvision import read_annotation

    sub = tmp_path / "1percent.txt"
    sub.write_bytes(b"n01440764_1.JPEG\nn01440764_2.JPEG\nn01440764_\xe9.JPEG\n")
    with pytest.raises(BenchError, match=r"1percent.txt:3: byte 0xe9 at offset 44 is not UTF-8"):
        read_subset_file(sub)
    ann = tmp_path / "nc.json"
    ann.write_bytes(b'{"images": ["google/q0001/\xe9.jpg"], "labels": [1]}')
    with pytest.raises(BenchError, match=r"nc.json:1: byte 0xe9 at offset 26 is not UTF-8"):
        read_annotation(ann)


def test_a_byte_order_mark_is_not_part_of_the_first_file_name(synth_root, tmp_path):
    root = _copy(synth_root, "places205", tmp_path)
    f = root / PLACES_VAL
    first = f.read_text().split()[0]
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())  # was: "first image missing" with the BOM invisible in the message
    assert _places(root)[0][0] == first
    assert check("places205", root).ok


# ------------------------------------------------------------------------------------------------------- empty splits
def test_empty_splits_are_errors_in_check_and_loaders(synth_root, tmp_path):
    from mopro_bench.data.voc import VOC07
    from mopro_bench.data.webvision import WebVision

    places = _copy(synth_root, "places205", tmp_path)
    (places / PLACES_VAL).write_text("")
    r = check("places205", places)  # was: "usable" (a size warning only); eval then failed on a confusing message
    assert not r.ok and any("lists no images" in e and PLACES_VAL in e for e in r.errors)
    with pytest.raises(BenchError, match="lists no images"):
        _places(places)

    voc = _copy(synth_root, "voc07", tmp_path)
    for f in (voc / MAIN).glob("*test.txt"):
        f.write_text("")
    r = check("voc07", voc)  # was: "usable, 3 warnings"
    assert not r.ok and any(f"{voc / MAIN / 'test.txt'} lists no images" in e for e in r.errors)
    with pytest.raises(BenchError, match="test.txt lists no images"):
        VOC07(voc).labels("test")

    wv = _copy(synth_root, "webvision", tmp_path)
    (wv / "info/val_filelist.txt").write_text("")
    assert not check("webvision", wv).ok
    with pytest.raises(BenchError, match="lists no images"):
        WebVision(wv).val_samples()


def test_imagenet_r_and_coco_without_images_are_errors(synth_root, tmp_path):
    from mopro_bench.data.imagenet_ra import ImageNetRA

    imr = _copy(synth_root, "imagenet-r", tmp_path)
    for p in imr.glob("*/*"):
        p.unlink()
    r = check("imagenet-r", imr)
    assert not r.ok and any("has no images" in e for e in r.errors)
    with pytest.raises(BenchError, match="has no images"):
        ImageNetRA(imr, "imagenet-r").samples()

    coco = _copy(synth_root, "coco", tmp_path)
    jf = coco / "annotations/instances_val2017.json"
    obj = json.loads(jf.read_text())
    jf.write_text(json.dumps({**obj, "images": [], "annotations": []}))
    r = check("coco", coco)
    assert not r.ok and any("lists no images" in e for e in r.errors)
    with pytest.raises(BenchError, match="lists no images"):
        _coco(coco)


# ------------------------------------------------------------------------------------- duplicates and contradictions
def test_duplicated_and_contradictory_places_lines(synth_root, tmp_path):
    root = _copy(synth_root, "places205", tmp_path)
    f = root / PLACES_VAL
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines + lines[:5]) + "\n")  # 5 repeated lines: those images would weigh double in top-1
    r = check("places205", root)
    rel0 = lines[0].split()[0]
    assert not r.ok and f"{f}:206: duplicated: {rel0} is already listed on line 1: {lines[0]!r} (5 bad lines)" in r.errors[0]
    with pytest.raises(BenchError, match=r"val_places205.csv:206: duplicated"):
        _places(root)

    rel, label = lines[1].rsplit(" ", 1)
    f.write_text("\n".join([*lines, f"{rel} {(int(label) + 1) % 205}"]) + "\n")
    with pytest.raises(BenchError, match=rf"val_places205.csv:206: contradictory labels: line 2 gives {rel} label {label}"):
        _places(root)
    assert not check("places205", root).ok


def test_voc_duplicated_id_and_contradictory_class_line(synth_root, tmp_path):
    from mopro_bench.data.voc import VOC07

    root = _copy(synth_root, "voc07", tmp_path)
    tv = root / MAIN / "trainval.txt"
    ids = tv.read_text().split()
    tv.write_text("\n".join([*ids, ids[0]]) + "\n")
    msg = f"{tv}:{len(ids) + 1}: duplicated: id {ids[0]} is already listed on line 1"
    r = check("voc07", root)  # was: "usable"; eval then said "image 000001 has no label ... (60 labels missing)"
    assert not r.ok and any(msg in e for e in r.errors), r.errors
    with pytest.raises(BenchError) as info:
        VOC07(root).labels("trainval")
    assert msg in info.value.message and "labels missing" not in info.value.message

    cat = root / MAIN / "cat_test.txt"
    first_id, first_label = cat.read_text().split()[:2]
    other = "1" if first_label == "-1" else "-1"
    cat.write_text(cat.read_text() + f"{first_id} {other}\n")  # was: accepted, the last line won
    n = len(cat.read_text().splitlines())
    msg = f"{cat}:{n}: contradictory labels: id {first_id} is already labelled {first_label} on line 1"
    r = check("voc07", root)
    assert any(msg in e for e in r.errors), r.errors
    with pytest.raises(BenchError, match=msg.replace(".", r"\.")):
        VOC07(root).labels("test")


def test_webvision_train_repeats_are_a_warning_but_contradictions_an_error(synth_root, tmp_path):
    from mopro_bench.data.webvision import WebVision

    root = _copy(synth_root, "webvision", tmp_path)
    f = root / "info/train_filelist_google.txt"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([*lines, lines[0]]) + "\n")
    r = check("webvision", root)
    assert r.ok and any("1 line(s) repeat an earlier entry" in w for w in r.warnings)
    assert len(WebVision(root).train_samples()) == len(WebVision(synth_root("webvision")).train_samples()) + 1
    rel, label = lines[0].rsplit(" ", 1)
    f.write_text("\n".join([*lines, f"{rel} {int(label) + 1}"]) + "\n")
    assert not check("webvision", root).ok
    with pytest.raises(BenchError, match="contradictory labels"):
        WebVision(root).train_samples()


# ------------------------------------------------------------------------------------------------- outside the root
def test_entries_outside_the_root_are_refused(synth_root, tmp_path):
    root = _copy(synth_root, "places205", tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    img = next((root / "data/vision/torralba/deeplearning/images256").rglob("*.jpg"))
    shutil.copy(img, outside / "a.jpg")
    f = root / PLACES_VAL
    good = f.read_text()
    up = "../" * 6 + str(outside.relative_to(Path(outside.anchor))) + "/a.jpg"
    for entry, why in ((up, "leaves the dataset root ('..')"), (str(outside / "a.jpg"), "is an absolute path")):
        f.write_text(good + f"{entry} 3\n")  # was: "usable", and eval used the image (206 val images)
        r = check("places205", root)
        assert not r.ok and f"{f}:206: the path {why}" in r.errors[0], r.errors
        with pytest.raises(BenchError, match=f"val_places205.csv:206: the path {why[:20]}"):
            _places(root)
    # a symbolic link inside the root is followed wherever it points (how shared dataset copies are mounted)
    (root / "data/vision/torralba/deeplearning/images256/linked.jpg").symlink_to(outside / "a.jpg")
    f.write_text(good + "linked.jpg 3\n")
    assert check("places205", root, deep=True).ok and _places(root)[-1] == ("linked.jpg", 3)


def test_voc_ids_coco_file_names_and_annotations_outside_the_root(synth_root, tmp_path):
    from mopro_bench.data.voc import VOC07
    from mopro_bench.data.webvision import read_annotation

    voc = _copy(synth_root, "voc07", tmp_path)
    tv = voc / MAIN / "trainval.txt"
    tv.write_text("../../../../x\n" + tv.read_text())
    assert not check("voc07", voc).ok
    with pytest.raises(BenchError, match="trainval.txt:1: an image id is a bare name"):
        VOC07(voc).ids("trainval")

    coco = _copy(synth_root, "coco", tmp_path)
    jf = coco / "annotations/instances_val2017.json"
    obj = json.loads(jf.read_text())
    obj["images"][0]["file_name"] = "../../secret.jpg"
    jf.write_text(json.dumps(obj))
    r = check("coco", coco)
    assert not r.ok and any("file_name '../../secret.jpg' leaves the dataset root" in e for e in r.errors), r.errors
    with pytest.raises(BenchError, match="leaves the dataset root"):
        _coco(coco)

    ann = tmp_path / "nc.json"
    for bad in ("/etc/hosts", "../../etc/hosts"):
        ann.write_text(json.dumps({"images": ["google/q0001/000001.jpg", bad], "labels": [0, 1]}))
        with pytest.raises(BenchError, match=f"image '{bad}' of entry 1 (is an absolute path|leaves the dataset root)"):
            read_annotation(ann)


def test_eval_refuses_a_list_entry_outside_the_root_before_any_work(synth_root, tmp_path, cli):
    root = _copy(synth_root, "places205", tmp_path)
    f = root / PLACES_VAL
    f.write_text(f.read_text() + "../../../../../etc/hostname 3\n")
    code, _, err = cli("eval", "--ckpt", "random:resnet18", "--task", "places_lowshot", "--data", root, "--device", "cpu",
                       "--workers", "0", "--no-progress", "--cache-dir", tmp_path / "c", "--results-dir", tmp_path / "r",
                       "--set", "image_size=32", "--set", "ks=[1]", "--set", "num_samples=1")
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "the path leaves the dataset root" in lines[0], err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.npy"))


def test_data_synth_into_an_unusable_place_is_one_line_before_generating(tmp_path, cli):
    (tmp_path / "afile").write_text("x")
    code, out, err = cli("data", "synth", "voc07", tmp_path / "afile" / "voc")  # was: FileExistsError traceback
    assert code == 2 and err == (f"error: output folder {tmp_path / 'afile'} cannot be created: {tmp_path / 'afile'} is a "
                                 "file, not a directory -- fix: pass another directory\n")
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_voc_image_in_both_splits_is_refused(synth_root, tmp_path):
    from mopro_bench.data.voc import VOC07

    root = _copy(synth_root, "voc07", tmp_path)
    test_ids = (root / MAIN / "test.txt").read_text().split()
    tv = root / MAIN / "trainval.txt"
    tv.write_text(tv.read_text() + f"{test_ids[0]}\n")  # was: trained on and scored, silently
    r = check("voc07", root)
    assert any(f"1 image id(s) are in both trainval.txt and test.txt (first: {test_ids[0]})" in e for e in r.errors), r.errors
    for split in ("trainval", "test"):
        with pytest.raises(BenchError, match="are in both trainval.txt and test.txt"):
            VOC07(root).ids(split)
