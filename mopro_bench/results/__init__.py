"""Result records: one JSON file per experiment and seed, validated on write and on read. This package owns the
record lifecycle; the leaderboard and ``compare`` only read through it.

The leaderboard is built from a directory of these files; nothing else is state. See ``RESULT_SCHEMA`` for the
fields. Files are written atomically (temporary file + rename), so concurrent writers and crashes never leave a
partial record.

Identity (schema v2). Everything that changes the number is part of a record's identity: the task, the protocol
(id, version, constants), the checkpoint's bytes (SHA-256) and selected network, the content of files given as
options (``--head``, ``--splits``, ``--subset-file``: SHA-256 of their bytes, never their path), the other options
that change the number (``--solver``, ...), and the data *content* (list hashes of every split the task uses and
the content fingerprints of the images it read). Locations (data root, file paths, output options) never count.

* ``experiment.key`` hashes all of that except the seed and what is drawn from the seed (low-shot samples, seeded
  subsets): records that share it are seeds of one experiment, and only those are pooled by the leaderboard and
  ``compare``.
* ``experiment.run_key`` adds the seed and every content fingerprint; the file name carries it, so two different
  experiments never share a file, and a re-run of exactly the same experiment replaces its own record.

Both keys are recomputed when a record is read; a record whose stored keys do not match its contents (edited by
hand) is refused, as is one whose metric disagrees with its own per-run values or that holds NaN/Infinity.

Modules (each imports only those above it):

* :mod:`~mopro_bench.results.identity` -- identity, experiment / run / pairing keys, option files, pre-run key;
* :mod:`~mopro_bench.results.schema` -- ``RESULT_SCHEMA`` and :func:`validate_record` (refusal rules);
* :mod:`~mopro_bench.results.paths` -- ``DEFAULT_RESULTS_DIR`` (the one default location) and file naming;
* :mod:`~mopro_bench.results.store` -- :func:`build_record`, atomic :func:`write_record`, :func:`read_record`,
  provenance, the fallback file for a record that cannot be written;
* :mod:`~mopro_bench.results.query` -- :func:`load_records` (a results tree, junk skipped), experiment grouping.
"""

from __future__ import annotations

from mopro_bench.results.identity import (
    FILE_OPTIONS,
    NON_IDENTITY_OPTIONS,
    data_fingerprint,
    experiment_keys,
    identity,
    identity_options,
    option_files,
    pairing_key,
    pre_run_key,
    protocol_key,
    run_data_key,
)
from mopro_bench.results.paths import DEFAULT_RESULTS_DIR, pre_run_stem, record_path, result_path, slug
from mopro_bench.results.query import (
    LoadedRecords,
    dedupe_seeds,
    group_experiments,
    iter_record_files,
    load_records,
    task_matches,
)
from mopro_bench.results.schema import PER_RUN_TOLERANCE, RESULT_SCHEMA, SCHEMA_VERSION, first_nonfinite, validate_record
from mopro_bench.results.store import (
    build_record,
    environment,
    git_sha,
    now_iso,
    read_record,
    save_fallback,
    write_outputs,
    write_record,
)

__all__ = [
    "DEFAULT_RESULTS_DIR", "FILE_OPTIONS", "NON_IDENTITY_OPTIONS", "PER_RUN_TOLERANCE", "RESULT_SCHEMA", "SCHEMA_VERSION",
    "LoadedRecords", "build_record", "data_fingerprint", "dedupe_seeds", "environment", "experiment_keys",
    "first_nonfinite", "git_sha", "group_experiments", "identity", "identity_options", "iter_record_files",
    "load_records", "now_iso", "option_files", "pairing_key", "pre_run_key", "pre_run_stem", "protocol_key",
    "read_record", "record_path", "result_path", "run_data_key", "save_fallback", "slug", "task_matches",
    "validate_record", "write_outputs", "write_record",
]
