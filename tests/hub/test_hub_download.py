"""Downloads (``mopro_bench.hub``) against a loopback HTTP server started in the test; nothing leaves 127.0.0.1.

The server serves byte strings under ``/<mode>/<name>`` where mode is ``ok`` (honours Range), ``norange`` (always the
whole file), ``truncate`` (announces the full length, sends half, closes), ``truncate-once`` (that, the first time
only) and ``stall`` (headers, then silence for 3 s)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from mopro_bench import hub, zoo
from mopro_bench.errors import BenchError


class LoopbackServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)
        self.hits: dict[str, int] = {}
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                rng = self.headers.get("Range")
                srv.log.append((self.path, rng))
                parts = self.path.split("/", 2)
                mode, name = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
                srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
                data = srv.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                if mode == "stall":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.flush()
                    time.sleep(3)
                    return
                start = 0
                if rng and mode in ("ok", "truncate-once") and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if mode == "truncate" or (mode == "truncate-once" and srv.hits[self.path] == 1):
                    body = body[: len(body) // 2]
                self.wfile.write(body)
                self.wfile.flush()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, mode: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def server():
    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every request the code under test makes must go to 127.0.0.1 or a file:// URL (never a real zoo URL)."""
    real = hub._open

    def guarded(url, *a, **kw):
        assert url.startswith(("http://127.0.0.1:", "file://")), f"test tried to reach {url}"
        return real(url, *a, **kw)

    monkeypatch.setattr(hub, "_open", guarded)
    monkeypatch.setenv(hub.READ_TIMEOUT_ENV, "0.3")
    monkeypatch.setenv(hub.CONNECT_TIMEOUT_ENV, "2")
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    monkeypatch.delenv(zoo.ZOO_ENV, raising=False)


def _blob(n: int = 300_000, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def _one_line(err: str) -> str:
    lines = [x.rsplit("\r", 1)[-1] for x in err.split("\n")]  # what a terminal shows (a progress bar is overwritten)
    lines = [x for x in lines if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_download_is_verified_cached_pinned_and_works_offline(server, tmp_path, monkeypatch):
    data = _blob()
    server.files["blob.bin"] = data
    url = server.url("ok", "blob.bin")
    cache = tmp_path / "cache"
    r = hub.resolve_checkpoint(url, cache_dir=cache, progress=False)
    sha = hashlib.sha256(data).hexdigest()
    assert Path(r.path) == hub.cache_path(cache, url) and Path(r.path).read_bytes() == data
    assert Path(r.path).parent.parent == cache / "checkpoints"
    assert (r.name, r.select, r.source) == ("blob.bin", None, {"url": url, "sha256": sha})
    assert hub.read_index(cache)[url]["sha256"] == sha and hub.read_index(cache)[url]["how"] == "downloaded"
    assert not list(cache.rglob("*.part"))
    # second use: no request at all, even with the network forbidden or unreachable
    n = len(server.log)
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    monkeypatch.setattr(hub, "_open", lambda *a, **k: pytest.fail("network used for a cached file"))
    again = hub.resolve_checkpoint(url + "#encoder_k", cache_dir=cache, progress=False)
    assert (again.path, again.select, again.name) == (r.path, "encoder_k", "blob.bin#encoder_k")
    assert len(server.log) == n


def test_plain_specs_pass_through_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_open", lambda *a, **k: pytest.fail("network used"))
    for spec in ("some/dir/ckpt.pth.tar", "ckpt.pth#encoder_k", "random:resnet18", str(tmp_path / "x.pth")):
        assert hub.resolve_checkpoint(spec, cache_dir=tmp_path) == hub.ResolvedCheckpoint(spec, None, None, None)
    assert not (tmp_path / "checkpoints").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path, monkeypatch):
    data = _blob(seed=1)
    server.files["resume.bin"] = data
    url = server.url("truncate-once", "resume.bin")
    cache = tmp_path / "cache"
    # one attempt only: the run stops short, keeps the .part, and says how to go on (exit 2, one line)
    monkeypatch.setenv(hub.ATTEMPTS_ENV, "1")
    with pytest.raises(BenchError) as e:
        hub.resolve_checkpoint(url, cache_dir=cache, progress=False)
    half = len(data) // 2
    assert f"stopped at {half} of {len(data)} bytes" in str(e.value) and "run the same command again" in str(e.value)
    dest = hub.cache_path(cache, url)
    part = dest.with_name(dest.name + ".part")
    assert not dest.exists() and part.read_bytes() == data[:half]
    # the next run asks only for the rest (HTTP Range) and completes the file
    monkeypatch.delenv(hub.ATTEMPTS_ENV)
    r = hub.resolve_checkpoint(url, cache_dir=cache, progress=False)
    assert server.log[-1] == ("/truncate-once/resume.bin", f"bytes={half}-")
    assert Path(r.path).read_bytes() == data and not part.exists()
    assert r.source["sha256"] == hashlib.sha256(data).hexdigest()


def test_interruption_within_one_run_is_resumed_automatically(server, tmp_path):
    data = _blob(seed=2)
    server.files["auto.bin"] = data
    url = server.url("truncate-once", "auto.bin")
    before = len(server.log)
    r = hub.resolve_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert Path(r.path).read_bytes() == data
    assert [rg for _, rg in server.log[before:]] == [None, f"bytes={len(data) // 2}-"]


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    data = _blob(seed=3)
    server.files["norange.bin"] = data
    url = server.url("norange", "norange.bin")
    dest = hub.cache_path(tmp_path, url)
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(b"garbage-from-an-old-run")
    r = hub.resolve_checkpoint(url, cache_dir=tmp_path, progress=False)
    assert Path(r.path).read_bytes() == data


def test_truncated_download_is_refused_with_one_line(server, tmp_path, cli):
    server.files["trunc.bin"] = _blob(seed=4)
    url = server.url("truncate", "trunc.bin")
    code, out, err = cli("inspect", "--ckpt", url, "--cache-dir", tmp_path)
    line = _one_line(err)
    assert code == 2 and "failed: the transfer stopped at 150000 of 300000 bytes" in line and "fix:" in line
    assert not hub.cache_path(tmp_path, url).exists()


def test_hash_in_file_name_is_checked(server, tmp_path, cli):
    data = _blob(seed=5)
    sha = hashlib.sha256(data).hexdigest()
    good, bad = f"resnet18-{sha[:8]}.pth", f"resnet18-{'0' if sha[0] != '0' else '1'}{sha[1:8]}.pth"
    server.files[good] = server.files[bad] = data
    code, _, err = cli("inspect", "--ckpt", server.url("ok", bad), "--cache-dir", tmp_path)
    line = _one_line(err)
    assert code == 2 and "does not start with" in line and "(the hash in its file name)" in line
    dest = hub.cache_path(tmp_path, server.url("ok", bad))
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()  # a wrong file is not kept
    r = hub.resolve_checkpoint(server.url("ok", good), cache_dir=tmp_path, progress=False)
    assert Path(r.path).read_bytes() == data


def test_first_download_pins_the_hash(server, tmp_path, cli):
    server.files["pinned.bin"] = _blob(seed=6)
    url = server.url("ok", "pinned.bin")
    r = hub.resolve_checkpoint(url, cache_dir=tmp_path, progress=False)
    first = r.source["sha256"]
    # the publisher's file changes; the cached copy is removed (the index keeps the pin): the new download is refused
    server.files["pinned.bin"] = _blob(seed=7)
    Path(r.path).unlink()
    code, _, err = cli("inspect", "--ckpt", url, "--cache-dir", tmp_path)
    line = _one_line(err)
    assert code == 2 and f"differs from {first[:16]}... recorded at its first download" in line
    assert "index.json" in line and not Path(r.path).exists()
    # a cached file changed in place is refused too
    server.files["pinned.bin"] = _blob(seed=6)
    hub.resolve_checkpoint(url, cache_dir=tmp_path, progress=False)
    with open(r.path, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(BenchError, match=r"cached file .* differs from .* recorded at its first download"):
        hub.resolve_checkpoint(url, cache_dir=tmp_path, progress=False)


def test_stalling_server_times_out_quickly(server, tmp_path):
    server.files["slow.bin"] = _blob(seed=8)
    t0 = time.monotonic()
    with pytest.raises(BenchError, match=r"failed: no data for 0.3 s"):
        hub.resolve_checkpoint(server.url("stall", "slow.bin"), cache_dir=tmp_path, progress=False)
    assert time.monotonic() - t0 < 1.5  # one read timeout (0.3 s) plus overhead: not the 2 s connect timeout, not 3 s


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_no_network_names_the_exact_path_to_fill(tmp_path, cli, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/models/resnet18-x.pth"
    code, _, err = cli("inspect", "--ckpt", url, "--cache-dir", tmp_path)
    line = _one_line(err)
    assert code == 2 and line.startswith(f"error: cannot download {url}")
    assert f"place it at {hub.cache_path(tmp_path, url)} exactly" in line
    # the same for a zoo entry, and with the network forbidden outright
    entry = zoo.register(dict(name="test_offline", method="t", url=url.replace("resnet18-x", "zoo_file"), url_source="test",
                              format="torchvision", pretrain_data="none", epochs=None, citation="none"))
    try:
        code, _, err = cli("inspect", "--ckpt", "zoo:test_offline", "--cache-dir", tmp_path)
        assert code == 2 and f"place it at {tmp_path / 'checkpoints' / 'zoo_file.pth'} exactly" in _one_line(err)
        monkeypatch.setenv(hub.OFFLINE_ENV, "1")
        monkeypatch.setattr(hub, "_open", lambda *a, **k: pytest.fail("network used while offline"))
        code, _, err = cli("inspect", "--ckpt", "zoo:test_offline", "--cache-dir", tmp_path)
        line = _one_line(err)
        assert code == 2 and "MOPRO_BENCH_OFFLINE forbids the network" in line
        assert str(hub.cache_path(tmp_path, entry.url, entry)) in line
    finally:
        zoo.unregister("test_offline")


def test_http_errors_and_bad_schemes_are_one_line(server, tmp_path, cli):
    code, _, err = cli("inspect", "--ckpt", server.url("ok", "missing.pth"), "--cache-dir", tmp_path)
    assert code == 2 and "HTTP 404" in _one_line(err)
    with pytest.raises(BenchError, match="unsupported URL scheme"):
        hub.fetch("ftp://127.0.0.1/x.pth", tmp_path)


def test_file_url_is_copied_into_the_cache(tmp_path):
    data = _blob(seed=9)
    src = tmp_path / "src dir" / "local.pth"
    src.parent.mkdir()
    src.write_bytes(data)
    url = src.as_uri()
    r = hub.resolve_checkpoint(url, cache_dir=tmp_path / "cache", progress=False)
    assert Path(r.path).read_bytes() == data and Path(r.path).name == "local.pth"
    assert Path(r.path).is_relative_to(tmp_path / "cache" / "checkpoints")
    os.remove(src)  # the cache copy is what is used from now on
    assert hub.resolve_checkpoint(url, cache_dir=tmp_path / "cache", progress=False).path == r.path
    with pytest.raises(BenchError, match="there is no file"):
        hub.resolve_checkpoint((tmp_path / "nothing.pth").as_uri(), cache_dir=tmp_path / "cache", progress=False)


def test_md5_prefix_of_a_zoo_entry_is_checked(server, tmp_path):
    data = _blob(seed=10)
    server.files["md5.pth.tar"] = data
    md5 = hashlib.md5(data).hexdigest()
    wrong = ("0" if md5[0] != "0" else "1") + md5[1:8]
    base = dict(method="t", url=server.url("ok", "md5.pth.tar"), url_source="test", format="moco",
                pretrain_data="none", epochs=1, citation="none")
    zoo.register(dict(name="test_md5", md5_prefix=wrong, **base))
    try:
        with pytest.raises(BenchError, match=f"does not start with the published {wrong}"):
            hub.resolve_checkpoint("zoo:test_md5", cache_dir=tmp_path, progress=False)
        zoo.register(dict(name="test_md5", md5_prefix=md5[:8], **base), replace=True)
        r = hub.resolve_checkpoint("zoo:test_md5", cache_dir=tmp_path, progress=False)
        assert Path(r.path).read_bytes() == data and r.source["zoo"] == "test_md5"
    finally:
        zoo.unregister("test_md5")
