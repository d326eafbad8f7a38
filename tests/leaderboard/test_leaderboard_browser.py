"""What users look at: the HTML leaderboard in a real headless browser (Chromium), and the reliability figure.

The browser test renders ``leaderboard.html`` built from real records (generated data), takes a screenshot and checks
that the tables and the figures are on it: the DOM holds one row per measured checkpoint, every ``<img>`` resolves to
a file next to the page, and the screenshot shows the figures' line colours -- which a copy of the page whose images
are missing does not (the control that shows the check can fail). Without Chromium the test is skipped, saying how
to install it (`make setup` does when apt-get is usable).
"""

from __future__ import annotations

import html.parser
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mopro_bench.leaderboard import Cell, Row, Table
from mopro_bench.leaderboard.plots import pooled_reliability, reliability_figure

INSTALL = "install Chromium: `apt-get install -y chromium` (Debian/Ubuntu, as root; `make setup` does it when it can)"
TAB10_BLUE = (31, 119, 180)  # the first checkpoint's colour in every leaderboard figure


def chromium() -> str | None:
    for name in (os.environ.get("MOPRO_BENCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def browser(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        pytest.skip(f"no Chromium on this machine: {INSTALL}")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={args[0]}", *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(page: Path, out: Path, profile: Path, size=(1280, 5200)) -> np.ndarray:
    from PIL import Image

    proc = browser(str(profile), f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", page.resolve().as_uri())
    assert out.exists(), proc.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def near(img: np.ndarray, rgb, tol: int = 12) -> int:
    return int((np.abs(img - np.array(rgb)).max(axis=2) <= tol).sum())


def _ink(img: np.ndarray) -> float:
    """Share of the page's pixels (down to its last non-white row) that are not the white background."""
    mask = np.abs(img - 255).max(axis=2) > 40
    rows = np.flatnonzero(mask.any(axis=1))
    return float(mask[: rows[-1] + 1].mean()) if rows.size else 0.0


class _Imgs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


@pytest.fixture(scope="module")
def chromium_exe():
    exe = chromium()
    if exe is None:
        pytest.skip(f"no Chromium on this machine: {INSTALL}")
    return exe


@pytest.fixture(scope="module")
def site(chromium_exe, synth_root, tmp_path_factory):
    """leaderboard.html + plots from 3 real records: voc_lowshot for two checkpoints, imagenet_r for one."""
    import torch
    import torchvision

    from mopro_bench.evaluate import evaluate
    from mopro_bench.leaderboard import make_leaderboard

    d = tmp_path_factory.mktemp("browser")
    torch.manual_seed(0)
    ck = d / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), ck)  # fc = a 1000-way classifier: imagenet_r needs no head
    res, cache = d / "res", d / "cache"
    voc = {"image_size": 32, "resize": 36, "ks": [1, 2], "num_samples": 2}
    kw = {"cache_dir": cache, "results_dir": res, "progress": False}
    evaluate(str(ck), "voc_lowshot", synth_root("voc07"), overrides=voc, **kw)
    evaluate("random:resnet18", "voc_lowshot", synth_root("voc07"), overrides=voc, **kw)
    evaluate(str(ck), "imagenet_r", synth_root("imagenet-r"), overrides={"resize": 36, "crop": 32, "calib_bin_size": 8},
             **kw)
    out = d / "site"
    make_leaderboard(res, fmt="html", out_dir=out, plots=True, published=None)
    return out


def test_html_leaderboard_renders_tables_and_figures_in_chromium(site, tmp_path):
    page = site / "leaderboard.html"
    parser = _Imgs()
    parser.feed(page.read_text())
    assert sorted(parser.srcs) == ["calibration.png", "calibration_reliability.png", "lowshot.png"]
    assert all((site / s).is_file() and (site / s).stat().st_size > 5000 for s in parser.srcs)

    dom = browser(str(tmp_path / "profile"), "--dump-dom", page.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<td>measured</td>") == 3  # one row per (checkpoint, protocol) record
    assert "voc_lowshot@mopro+" in dom.stdout and "imagenet_r@hendrycks+" in dom.stdout
    assert dom.stdout.count("<img ") == 3

    img = screenshot(page, tmp_path / "shot.png", tmp_path / "profile")
    ink = _ink(img)
    assert ink > 0.03, f"the page looks blank ({ink:.3%} non-background pixels)"
    blue = near(img, TAB10_BLUE)
    assert blue > 300, f"the figures are not on the screenshot ({blue} pixels of their first line colour)"

    # control: the same page without its images -> the tables still render, the figures' colour is gone
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(page, bare / "leaderboard.html")
    img2 = screenshot(bare / "leaderboard.html", tmp_path / "bare.png", tmp_path / "profile")
    assert near(img2, TAB10_BLUE) < blue / 20
    assert _ink(img2) > 0.01  # text and tables are still there


def _rel(conf, acc, count):
    edges = [i / 5 for i in range(6)]
    return {"edges": edges, "count": count, "confidence": conf, "accuracy": acc}


def _table(pid: str, rows: list[Row]) -> Table:
    return Table(protocol_id=pid, task=pid.split("@")[0], version="1", params={}, params_hash="0" * 8, description="",
                 metrics=["top1", "calib_rms"], higher_is_better={"top1": True, "calib_rms": False}, rows=rows)


def _row(name: str, sha: str, recs: list[dict], rms: float) -> Row:
    return Row(kind="measured", name=name, sha256=sha * 8, records=recs,
               cells={"top1": Cell(50.0, None, None, 1), "calib_rms": Cell(rms, None, None, 1)})


def test_reliability_figure_is_one_panel_per_task_with_titles_inside():
    """Before: one panel overlaid every (checkpoint, task) curve (6 lines in the demo) and its title started left of
    the canvas. Now: one panel per protocol, one line per checkpoint, colours kept across panels, all text inside."""
    rec = lambda rel: {"details": {"reliability": rel}}  # noqa: E731
    a1 = _rel([0.1, 0.3, None, 0.7, 0.9], [0.0, 0.2, None, 0.8, 1.0], [10, 30, 0, 20, 40])
    a2 = _rel([0.12, 0.32, 0.5, None, 0.86], [0.1, 0.4, 0.5, None, 0.9], [30, 10, 10, 0, 50])
    names = ["moco_v2_800ep", "swav_800ep", "my-checkpoint-with-a-rather-long-display-name.pth.tar"]
    tables = [
        _table("imagenet_r@hendrycks", [_row(n, "ab"[i % 2] + str(i), [rec(a1)], 10.0 + i) for i, n in enumerate(names)]),
        _table("imagenet_a@hendrycks+0123abcd", [_row(n, "ab"[i % 2] + str(i), [rec(a1), rec(a2)], 30.0 + i)
                                                 for i, n in enumerate(names)]),
        _table("imagenet_val_calibration@hendrycks", [_row(n, "ab"[i % 2] + str(i), [rec(a2)], 20.0 + i)
                                                     for i, n in enumerate(names)]),
    ]
    tables[1].variant = True  # the long title: "... (protocol v1, constants 00000000)"
    # seeds pooled per bin: counts summed, confidence/accuracy weighted by count (a bin empty in one seed keeps the other)
    pooled = pooled_reliability([rec(a1), rec(a2)])
    assert pooled["count"] == [40, 40, 10, 20, 90]
    assert pooled["confidence"][0] == pytest.approx((10 * 0.1 + 30 * 0.12) / 40)
    assert pooled["accuracy"][4] == pytest.approx((40 * 1.0 + 50 * 0.9) / 90)
    assert pooled["confidence"][2] == 0.5 and pooled["accuracy"][3] == 0.8

    fig = reliability_figure(tables)
    fig.canvas.draw()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    colors = []
    for ax, t in zip(visible, tables):
        lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert len(lines) == 3  # one per checkpoint (the diagonal is unlabelled)
        assert ax.get_title().replace("\n", " ") == t.title
        colors.append([ln.get_color() for ln in lines])
        assert [ln.get_label().split(":")[0].replace("\n", " ").split(" [")[0] for ln in lines] == names
    assert colors[0] == colors[1] == colors[2] and len(set(map(str, colors[0]))) == 3
    # pooled curve of the second panel, first checkpoint: the non-empty bins in order
    xs = visible[1].get_lines()[1].get_xdata()
    assert list(xs) == pytest.approx([c for c in pooled["confidence"] if c is not None])

    _all_text_inside(fig)
    one = reliability_figure(tables[1:2])  # one panel: the narrowest figure, where a long title would stick out
    one.canvas.draw()
    _all_text_inside(one)


def _all_text_inside(fig):
    renderer = fig.canvas.get_renderer()
    W, H = fig.bbox.width, fig.bbox.height
    visible = [ax for ax in fig.axes if ax.get_visible()]
    texts = [fig._suptitle] + [t for ax in visible for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    texts += [t for ax in visible for t in ax.get_legend().get_texts()]
    for t in texts:
        bb = t.get_window_extent(renderer)
        assert bb.x0 >= -0.5 and bb.x1 <= W + 0.5 and bb.y0 >= -0.5 and bb.y1 <= H + 0.5, (t.get_text(), bb, W, H)
    assert not math.isnan(W)
