"""Result records: schema round trip, refusal of stale/invalid records, atomic and concurrent writes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from mopro_bench import io as mio
from mopro_bench.errors import BenchError
from mopro_bench.results import (
    SCHEMA_VERSION,
    build_record,
    read_record,
    record_path,
    result_path,
    validate_record,
    write_record,
)


def make_record(**kw):
    base = dict(
        task="voc_lowshot",
        protocol={"id": "voc_lowshot@mopro", "name": "mopro", "version": "1", "params": {"c": 0.5}, "overrides": {}},
        checkpoint={"name": "m", "path": "/x/m.pth", "sha256": "ab" * 32, "format": "mopro", "arch": "resnet50", "width": 1},
        seed=0, data={"root": "/d"}, metrics={"mAP_k1": 12.5, "mAP_k1_std": 1.0}, details={"per_run": {"mAP_k1": [11.5, 13.5]}},
        selection="last", timings={"total_s": 1.0},
    )
    base.update(kw)
    return build_record(**base)


def test_round_trip(tmp_path):
    rec = make_record()
    assert rec["schema_version"] == SCHEMA_VERSION and rec["suite"]["version"] and "torch" in rec["environment"]
    path = write_record(rec, tmp_path / "r.json")
    assert read_record(path) == rec


def test_invalid_and_stale_records_are_refused(tmp_path):
    rec = make_record()
    with pytest.raises(BenchError, match="metrics/mAP_k1.*is not of type 'number'"):
        validate_record({**rec, "metrics": {"mAP_k1": "high"}})
    stale = {**rec, "schema_version": 0}
    (tmp_path / "old.json").write_text(json.dumps(stale))
    with pytest.raises(BenchError, match=r"old.json: result schema version 0, this suite reads version 2"):
        read_record(tmp_path / "old.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BenchError, match="bad.json: not valid JSON"):
        read_record(tmp_path / "bad.json")
    with pytest.raises(BenchError, match="missing.json does not exist"):
        read_record(tmp_path / "missing.json")
    with pytest.raises(BenchError, match="'metrics' is a required property"):
        validate_record({k: v for k, v in rec.items() if k != "metrics"})


def test_result_path_layout(tmp_path):
    p = result_path(tmp_path, "voc_lowshot@mopro", "my ckpt/ä", "0123456789abcdef", 3, run_key="fedcba9876543210")
    assert p == tmp_path / "voc_lowshot@mopro" / "my-ckpt-01234567-fedcba987654-seed3.json"
    assert result_path(tmp_path, "t@p+1a2b3c4d", "random:resnet18", None, 0).name == "random-resnet18-nohash-seed0.json"
    rec = make_record(seed=3)
    assert record_path(tmp_path, rec).name == f"m-abababab-{rec['experiment']['run_key'][:12]}-seed3.json"


def test_crash_mid_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text('{"old": true}')

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with mio.atomic_open(target, "w") as fh:
            fh.write('{"new": ')
            raise Boom
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # temporary file removed


def _writer_proc(path: str, i: int) -> None:
    rec = make_record(seed=i, metrics={"mAP_k1": float(i)}, details={"per_run": {"mAP_k1": [i - 1.0, i + 1.0]}})
    for _ in range(5):
        write_record(rec, Path(path) / f"r{i}.json")
        write_record(rec, Path(path) / "shared.json")  # all processes hammer one file too


def test_concurrent_writers_in_separate_processes(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer_proc, args=(str(tmp_path), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for i in range(4):
        assert read_record(tmp_path / f"r{i}.json")["metrics"]["mAP_k1"] == float(i)
    assert read_record(tmp_path / "shared.json")["metrics"]["mAP_k1"] in {0.0, 1.0, 2.0, 3.0}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_sigkill_during_write_leaves_old_or_new(tmp_path):
    """A process killed while writing never leaves a truncated file behind."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "big.bin"
    target.write_bytes(b"old")
    code = (
        "import sys, time\nfrom mopro_bench.io import atomic_open\n"
        f"with atomic_open({str(target)!r}, 'wb') as fh:\n"
        "    fh.write(b'x' * 1000)\n    fh.flush()\n    print('writing', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert target.read_bytes() == b"old"


def test_json_keeps_number_lists_on_one_line_and_round_trips():
    obj = {"per_image": {"correct": [1, 0, 1, True, None, -1.5e-3]}, "names": ["x", "[1,\n2]"], "nested": [[1, 2], [3]], "e": []}
    text = mio.dumps_json(obj)
    assert json.loads(text) == obj
    assert '"correct": [1, 0, 1, true, null, -0.0015]' in text and '"nested": [\n' in text
    assert '    [1, 2],\n' in text and '"x",\n' in text  # string lists stay one item per line
