"""Contract test of the dataset plug-ins: every registered kind goes through the generic path.

A layout is tested by being registered (``mopro_bench.data.BUILTIN_DATASETS``): it is generated (tiny), passes its
own ``check`` (deep), and its loader's listing agrees with the check, the generator's summary and its official sizes.
A toy layout defined here shows that a new kind needs nothing but its ``DatasetLayout``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mopro_bench.data import BUILTIN_DATASETS, DATASETS, KINDS, get_layout, is_synthetic, render
from mopro_bench.data.check import CheckReport, check, list_problems, read_text
from mopro_bench.data.layout import DatasetLayout, SplitListing, validate_layout
from mopro_bench.data.synth import SCALES, kind_code, synth, text_lines, write_file
from mopro_bench.errors import BenchError


def test_registry_lists_every_builtin_kind_in_order():
    assert KINDS == tuple(k for k, _ in BUILTIN_DATASETS) == tuple(DATASETS.names())
    assert KINDS == ("webvision", "imagenet", "voc07", "places205", "coco", "imagenet-r", "imagenet-a")
    codes = [DATASETS.get(k).synth_code for k in KINDS]
    # the random stream of each kind: unique, and fixed forever (changing one changes every generated image)
    assert codes == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(BenchError, match="unknown dataset kind 'nope'"):
        get_layout("nope")


@pytest.mark.parametrize("kind", DATASETS.names())
def test_layout_declares_a_consistent_plug_in(kind):
    lay = DATASETS.get(kind)
    assert isinstance(lay, DatasetLayout) and lay.kind == kind and lay.description
    assert lay.splits and set(lay.splits) == set(lay.official_sizes)
    assert all(isinstance(n, int) and n > 0 for n in lay.official_sizes.values())
    assert set(lay.synth_sizes) == set(SCALES)
    assert set(lay.synth_sizes["tiny"]) == set(lay.synth_sizes["small"])
    assert all(callable(f) for f in (lay.check, lay.synth, lay.listing))


@pytest.mark.parametrize("kind", DATASETS.names())
def test_every_kind_synthesises_checks_and_loads(kind, tmp_path):
    lay = DATASETS.get(kind)
    summary = synth(kind, tmp_path / "root", seed=0, scale="tiny")
    root = Path(summary["root"])
    assert summary["kind"] == kind and summary["params"] == dict(lay.synth_sizes["tiny"])
    assert is_synthetic(root)
    assert json.loads((tmp_path / "root.synth.json").read_text())["kind"] == kind

    report = check(kind, root, deep=True)
    assert report.ok, report.errors
    # usable but not the official size: one size warning per split, nothing else
    assert len(report.warnings) == len(lay.splits)
    assert report.official == dict(lay.official_sizes)

    for split in lay.splits:
        listing = lay.listing(root, split, {})
        assert isinstance(listing, SplitListing)
        # the loader, the check and the generator agree on what the split holds; the official size is the layout's
        assert 0 < listing.found == report.counts[split] == summary["counts"][split]
        assert listing.official == lay.official_sizes[split] == report.official[split]
        assert len(listing.lines) >= listing.found and all(isinstance(x, str) for x in listing.lines)
        assert lay.listing(root, split, {}).lines == listing.lines  # deterministic


# ------------------------------------------------------------------------------------------- a toy layout, registered
def _check_toy(report: CheckReport, root: Path, deep: bool) -> None:
    f = root / "labels.txt"
    if not f.is_file():
        report.error(f"toy list {f} is missing", "write labels.txt")
        return
    text = read_text(report, f, "toy list")
    if text is None:
        return
    rows = [line.split() for line in text.splitlines() if line.strip()]
    bad = [(i + 1, " ".join(r), "expected '<name> <label>'") for i, r in enumerate(rows) if len(r) != 2]
    list_problems(report, f, bad, "write one '<name> <label>' per line")
    report.size("all", len(rows), TOY.official_sizes["all"])


def _synth_toy(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    rows = []
    for i in range(p["images"]):
        rng = render.image_rng(seed, kind_code(kind), "all", i)
        write_file(root / f"{i:03d}.jpg", render.jpeg_bytes(render.scene_image(render.places_look(i % 3), 16, rng)))
        rows.append(f"{i:03d}.jpg {i % 3}")
    (root / "labels.txt").write_text(text_lines(rows))
    return {"counts": {"all": len(rows)}}


def _listing_toy(root: Path, split: str, data: dict) -> SplitListing:
    lines = [line for line in (root / "labels.txt").read_text().splitlines() if line.strip()]
    return SplitListing(len(lines), TOY.official_sizes[split], lines)


TOY = DatasetLayout(kind="toy", description="a list file and images", splits=("all",), official_sizes={"all": 100},
                    check=_check_toy, synth=_synth_toy, synth_sizes={"tiny": {"images": 4}, "small": {"images": 8}},
                    synth_code=99, listing=_listing_toy)


def test_a_registered_layout_goes_through_the_drivers(tmp_path):
    assert "toy" not in DATASETS
    DATASETS.register("toy", TOY)
    try:
        summary = synth("toy", tmp_path / "t", seed=0, images=5)
        assert summary["counts"] == {"all": 5} and summary["params"] == {"images": 5}
        report = check("toy", tmp_path / "t")
        assert report.ok and report.counts == {"all": 5} and report.official == {"all": 100}
        assert TOY.listing(tmp_path / "t", "all", {}).found == 5
        with pytest.raises(BenchError, match="synth toy does not take classes"):
            synth("toy", tmp_path / "u", classes=3)
        (tmp_path / "t" / "labels.txt").write_text("000.jpg\n")
        assert check("toy", tmp_path / "t").errors[0].startswith(f"{tmp_path / 't' / 'labels.txt'}:1: expected")
    finally:
        DATASETS.unregister("toy")
    with pytest.raises(BenchError, match="unknown dataset kind 'toy'"):
        check("toy", tmp_path / "t")


def test_registry_refuses_what_is_not_a_layout():
    with pytest.raises(TypeError, match="not a DatasetLayout"):
        validate_layout("x", object())
    with pytest.raises(TypeError, match="declares kind 'toy'"):
        validate_layout("other", TOY)
