"""Published numbers: ``published.csv`` (paper / official-README numbers, each with its source), shipped as package
data (``mopro_bench/resources/published.csv``) so an installed wheel finds it; ``--published FILE`` reads another.
See ``leaderboards/README.md`` for the columns.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mopro_bench.errors import BenchError

# the one copy, inside the package (a regular file in both editable and wheel installs)
DEFAULT_PUBLISHED = Path(str(resources.files("mopro_bench.resources").joinpath("published.csv")))
PUBLISHED_COLUMNS = ("kind", "model", "arch", "pretrain_data", "protocol_id", "metric", "value", "source", "note")
PUBLISHED_STATUS = ("verified", "unverified")  # optional column `status`; absent = verified


@dataclass(frozen=True)
class Published:
    model: str
    arch: str
    pretrain_data: str
    protocol_id: str
    metric: str
    value: float
    source: str
    note: str
    text: str = ""  # the value as printed in the source (rendered as is: "39.7" stays "39.7")
    status: str = "verified"  # "unverified": copied but not checked against the source


def load_published(path: str | Path) -> list[Published]:
    """Rows of ``published.csv`` (see ``leaderboards/README.md`` for the columns); malformed rows are refused."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"published numbers file {path} does not exist", "pass --published FILE or --no-published")
    text = path.read_text(encoding="utf-8")
    reader = csv.DictReader(line for line in io.StringIO(text) if line.strip() and not line.lstrip().startswith("#"))
    missing = [c for c in PUBLISHED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BenchError(f"{path}: missing column(s) {', '.join(missing)}",
                         "use the header " + ",".join(PUBLISHED_COLUMNS))
    rows = []
    for i, r in enumerate(reader, start=2):
        where = f"{path} row {i}"
        if (r.get("kind") or "").strip() != "published":
            raise BenchError(f"{where}: kind must be 'published' (got {r.get('kind')!r})",
                             "published.csv holds only published numbers; measured numbers come from result records")
        pid = (r.get("protocol_id") or "").strip()
        if "@" not in pid or "+" in pid:
            raise BenchError(f"{where}: protocol_id {pid!r} is not task@protocol",
                             "name the registered protocol the number was published under, e.g. voc_lowshot@mopro")
        try:
            value = float(r["value"])
        except (TypeError, ValueError):
            raise BenchError(f"{where}: value {r.get('value')!r} is not a number", "write the number as printed") from None
        if not (r.get("source") or "").strip():
            raise BenchError(f"{where}: no source", "name the paper and table, or the repository README")
        status = (r.get("status") or "").strip() or "verified"
        if status not in PUBLISHED_STATUS:
            raise BenchError(f"{where}: status {status!r} is not one of {', '.join(PUBLISHED_STATUS)}",
                             "write verified or unverified (or leave the column empty)")
        rows.append(Published(
            model=r["model"].strip(), arch=(r.get("arch") or "").strip(), pretrain_data=(r.get("pretrain_data") or "").strip(),
            protocol_id=pid, metric=r["metric"].strip(), value=value, source=r["source"].strip(),
            note=(r.get("note") or "").strip(), text=r["value"].strip(), status=status,
        ))
    return rows
