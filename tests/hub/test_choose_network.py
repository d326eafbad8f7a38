"""``--select`` and a network written in the ``--ckpt`` spec (``zoo:NAME#NET``, ``URL#NET``) must agree; ``--select``
over a zoo entry's default network is named in the display name, as the spec form names it."""

from __future__ import annotations

import pytest

from mopro_bench.checkpoints import choose_network
from mopro_bench.errors import BenchError


def test_a_written_network_and_select_must_agree():
    with pytest.raises(BenchError) as e:
        choose_network("encoder_q", "zoo:moco_v2_800ep#encoder_k", "encoder_k", "moco_v2_800ep#encoder_k")
    assert "selects encoder_k but --select says encoder_q" in e.value.line() and "give the network once" in e.value.line()
    with pytest.raises(BenchError):
        choose_network("teacher", "https://example.org/ckpt.pth#student", "student", "ckpt.pth#student")
    # the same network twice is fine
    assert choose_network("encoder_k", "zoo:moco_v2_800ep#encoder_k", "encoder_k", "moco_v2_800ep#encoder_k") == (
        "encoder_k", "moco_v2_800ep#encoder_k")


def test_select_over_an_entry_default_is_named():
    # the entry's default network is teacher; --select student takes the student and says so in the name
    assert choose_network("student", "zoo:dino_vits16_full", "teacher", "dino_vits16_full") == (
        "student", "dino_vits16_full#student")
    assert choose_network(None, "zoo:dino_vits16_full", "teacher", "dino_vits16_full") == ("teacher", "dino_vits16_full")
    assert choose_network("teacher", "zoo:dino_vits16_full", "teacher", "dino_vits16_full") == (
        "teacher", "dino_vits16_full")


def test_local_files_keep_their_own_rules():
    # a local FILE#NET is checked by load_checkpoint itself; nothing is renamed here (the loader names the file)
    assert choose_network("encoder_k", "ckpt.pth#encoder_k", None, None) == ("encoder_k", None)
    assert choose_network(None, "random:resnet50", None, None) == (None, None)
