"""Record identity: what makes a record's number what it is, and the keys derived from it.

* ``experiment.key`` (:func:`experiment_keys`) hashes everything that changes the number except the seed and what
  is drawn from it: records that share it are seeds of one experiment.
* ``experiment.run_key`` adds the seed and every content fingerprint; the file name carries it
  (:mod:`mopro_bench.results.paths`).
* :func:`pairing_key` / :func:`run_data_key`: what ``compare`` may compare and pair.

Locations (data root, file paths, output options) never count; option files count by the SHA-256 of their bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mopro_bench.errors import BenchError
from mopro_bench.io import sha256_file, sha256_json

# eval options whose *file content* is part of a record's identity (recorded as {path, sha256}; the path never counts)
FILE_OPTIONS = ("head", "splits", "subset_file")
# eval options that do not change the number (where things are written, how the run is launched): never identity
NON_IDENTITY_OPTIONS = ("save_splits", "save_head", "resume", "dist_url", "machine_rank")


def identity(record: dict[str, Any], *, with_seed: bool) -> dict[str, Any]:
    """What makes a record's number what it is (see the module doc); locations never count."""
    ck = record.get("checkpoint") or {}
    exp = record.get("experiment") or {}
    data = record.get("data") or {}
    proto = record.get("protocol") or {}
    fps = data.get("fingerprints") or {}
    found = {c.get("found") for c in (data.get("counts") or {}).values() if isinstance(c, dict)} - {None}
    ident: dict[str, Any] = {
        "task": record.get("task"),
        "protocol": {"id": proto.get("id"), "version": str(proto.get("version", "")), "params": proto.get("params", {})},
        # a checkpoint without a file (``random:ARCH``, seeded) is identified by its spec
        "checkpoint": {"sha256": ck.get("sha256"), "select": ck.get("select"),
                       **({} if ck.get("sha256") else {"spec": ck.get("path"), "arch": ck.get("arch")}),
                       # a config.json read beside a bare timm file changes the network (preprocessing, ViT heads)
                       **({"hub_config": ck["hub_config"].get("sha256")} if isinstance(ck.get("hub_config"), dict) else {})},
        "options": exp.get("options") or {},
        "files": {k: (v or {}).get("sha256") for k, v in (exp.get("files") or {}).items()},
        "data": {
            "kind": data.get("kind"),
            "lists": data.get("lists") or {},
            # content of whole splits read (a list as long as a split): the same for every seed. Where no split could
            # be counted (a task without known splits) every list read counts: seeds may then split into rows, but
            # two contents are never pooled
            "fingerprints": {k: v.get("sha256") for k, v in fps.items()
                             if isinstance(v, dict) and (not found or v.get("n") in found)},
        },
    }
    if with_seed:
        ident["seed"] = record.get("seed")
        # and everything drawn from the seed: the content of every list read, the data fields that are hashes
        ident["data"]["fingerprints"] = {k: v.get("sha256") for k, v in fps.items() if isinstance(v, dict)}
        ident["data"]["hashes"] = {k: v for k, v in data.items() if k.lower().endswith("sha256")}
    return ident


def run_data_key(record: dict[str, Any]) -> str:
    """Hash of the data one run used, down to what was drawn from the seed (split hashes, content of every list
    read) and the ``--splits`` file: equal for two records whose per-run numbers may be paired."""
    ident = identity(record, with_seed=True)
    return sha256_json([ident["data"], ident["files"].get("splits")])[:16]


def experiment_keys(record: dict[str, Any]) -> dict[str, str]:
    """``{"key": <experiment, all seeds>, "run_key": <this experiment and seed>}`` computed from the record."""
    return {"key": sha256_json(identity(record, with_seed=False))[:16],
            "run_key": sha256_json(identity(record, with_seed=True))[:16]}


def pairing_key(record: dict[str, Any]) -> str:
    """The experiment key without the checkpoint (its bytes, network and head file) and the low-shot ``--splits``
    file: two checkpoints' records that share it were measured the same way on the same data, so ``compare`` may
    compare them (paired where the seed's draws are the same too, see :func:`run_data_key`)."""
    ident = identity(record, with_seed=False)
    ident.pop("checkpoint")
    ident["files"].pop("head", None)
    ident["files"].pop("splits", None)
    return sha256_json(ident)[:16]



def option_files(options: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{option: {path, sha256}}`` for the eval options that name input files (hashed by content)."""
    files = {}
    for name in FILE_OPTIONS:
        value = options.get(name)
        if not value:
            continue
        p = Path(str(value)).expanduser()
        if not p.is_file():
            raise BenchError(f"--{name.replace('_', '-')} {value}: no such file", "check the path")
        files[name] = {"path": str(p.resolve()), "sha256": sha256_file(p)}
    return files


def identity_options(options: dict[str, Any]) -> dict[str, str]:
    """The eval options that are part of the identity as they are (not files, not output locations)."""
    return {k: str(v) for k, v in sorted(options.items()) if k not in FILE_OPTIONS and k not in NON_IDENTITY_OPTIONS}


def pre_run_key(*, task: str, protocol_id: str, version: str, params: dict[str, Any], sha256: str | None,
                select: Any, options: dict[str, str], files: dict[str, dict[str, str]], seed: int, data_kind: str,
                data_root: Path) -> str:
    """Everything known about a run before it starts (the image content is known only after it): names the
    artifacts and the default work dir, so an interrupted run resumes in the same place."""
    return sha256_json({"task": task, "protocol": [protocol_id, version, params],
                        "checkpoint": [sha256, select], "options": options,
                        "files": {k: v["sha256"] for k, v in files.items()}, "seed": seed,
                        "data": [data_kind, str(data_root.resolve())]})[:12]


def protocol_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """(protocol id, version, hash of the constants): two definitions never share a table or a comparison."""
    p = record["protocol"]
    return p["id"], str(p.get("version", "")), sha256_json(p.get("params", {}))[:8]


def data_fingerprint(record: dict[str, Any]) -> str:
    """Hash of what the data *is* (kind, list hashes of the splits, content fingerprints of the whole splits read --
    the data part of the experiment key), not where it lives on this machine."""
    return sha256_json(identity(record, with_seed=False)["data"])[:8]
