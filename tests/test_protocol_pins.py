"""Every released protocol's constants are pinned: a change that does not bump the protocol's version fails here.

A record's identity holds ``protocol.params()``; changing a constant of an existing protocol (or adding a field to its
dataclass) silently gives every later record of it another experiment key, so re-runs stop replacing old records and
tables split. New constants go into a new protocol (or a subclass used only by new protocols); a deliberate change
bumps ``version`` and updates the pin below.
"""

from __future__ import annotations

from mopro_bench.io import sha256_json
from mopro_bench.registry import all_protocols

# "task@protocol": (version, sha256_json(params())[:16])
PINNED = {
    "coco_maskrcnn@mopro": ("1", "db63ec3cb1dcf1a6"),
    "coco_maskrcnn@mopro-short": ("1", "f0eb862785fe29f4"),
    "coco_maskrcnn@moco_c4": ("1", "68cd2178a352e90b"),
    "imagenet_10pct@mopro": ("2", "b292941c9869072b"),
    "imagenet_10pct@mopro-as-released": ("1", "8b13e54eda68eff2"),
    "imagenet_10pct@swav": ("2", "1b72e3de6583e3a5"),
    "imagenet_1pct@mopro": ("2", "04849cc867558e1b"),
    "imagenet_1pct@mopro-as-released": ("1", "0e40bcd908789d4d"),
    "imagenet_1pct@swav": ("2", "3505b71bc7f22bba"),
    "imagenet_a@hendrycks": ("1", "627b7bcc8f74d015"),
    "imagenet_linear@moco": ("2", "7b6863c93590ffa6"),
    "imagenet_linear@fast": ("1", "614f8997b6c7e880"),
    "imagenet_r@hendrycks": ("1", "627b7bcc8f74d015"),
    "imagenet_val@mopro": ("1", "65ed9b0fc428ec45"),
    "imagenet_val_calibration@hendrycks": ("2", "8b3127bd5c5e30a2"),
    "imagenet_val_calibration@in1k": ("1", "dd3dd00a720128be"),
    "places_lowshot@mopro": ("1", "98e6614228bb78fa"),
    "voc_lowshot@mopro": ("1", "19d56c604da0c00f"),
    "voc_lowshot@goyal19": ("2", "215f5fe17c5e7129"),
    "voc_lowshot@goyal19-published": ("2", "26b435de66ff8baf"),
    "webvision_val@mopro": ("1", "045fb9c244eff129"),
    # issue 19: ViT protocols
    "places_lowshot@mopro-vit": ("1", "294b505ad51c910d"),
    "voc_lowshot@mopro-vit": ("1", "f7609c1c78ab212b"),
    "imagenet_10pct@ibot": ("1", "4d92dae579e9de95"),
    "imagenet_1pct@ibot": ("1", "e48c66f98e159dff"),
    "imagenet_linear@dino": ("1", "40a5812369bb01bd"),
    "imagenet_linear@dino-base": ("1", "691f0fba16de9386"),
    "imagenet_linear@mocov3": ("1", "04c52a7bf6f36a63"),
}


def test_released_protocols_keep_their_constants():
    now = {f"{t.name}@{p.name}": (p.version, sha256_json(p.params())[:16]) for t, p in all_protocols()}
    changed = {k: (v, now.get(k)) for k, v in PINNED.items() if now.get(k) != v}
    assert not changed, f"protocol constants changed without a version bump (pinned, now): {changed}"


def test_every_built_in_protocol_is_pinned():
    from mopro_bench.registry import BUILTIN_TASKS

    unpinned = [f"{t.name}@{p.name}" for t, p in all_protocols()
                if t.name in BUILTIN_TASKS and f"{t.name}@{p.name}" not in PINNED]
    assert not unpinned, f"pin the new protocols in PINNED (version, params hash): {unpinned}"


def test_every_protocol_names_known_families():
    from mopro_bench.backbones import FAMILIES

    for t, p in all_protocols():
        assert p.families and set(p.families) <= set(FAMILIES), (t.name, p.name, p.families)
