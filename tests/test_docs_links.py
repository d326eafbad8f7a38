"""The docs stay navigable: every relative link in the user documentation resolves, and README.md stays a front door.

Checked files: README.md, docs/*.md, tasks/*/README.md, leaderboards/README.md, benchmarks/README.md. A link is
``[text](target)`` outside fenced code blocks; ``http(s)://`` and ``mailto:`` targets are not fetched. The path part
must name an existing file or folder (relative to the linking file); an ``#anchor`` must be a heading of the target
Markdown file, slugged as GitHub does (lower case, punctuation dropped, spaces to hyphens, ``-N`` for repeats).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "tasks").glob("*/README.md"))]
    files += [p for p in (ROOT / "leaderboards" / "README.md", ROOT / "benchmarks" / "README.md") if p.exists()]
    return files


def _prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks (``` or ~~~)."""
    out, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        out.append(line)
    return out


def github_slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # drops backticks, punctuation, symbols; keeps letters, digits, _ and -
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    links = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # code spans are not links
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, ...
                continue
            links.append(target)
    return links


def test_link_checker_itself():
    assert github_slug("Safe loading and `--trust-checkpoint`") == "safe-loading-and---trust-checkpoint"
    assert github_slug("Shuffle-BN on one process and on many") == "shuffle-bn-on-one-process-and-on-many"
    assert github_slug("The published 71.2 / 74.8 and `@mopro-as-released`") == "the-published-712--748-and-mopro-as-released"
    assert relative_links(ROOT / "README.md"), "README.md has no relative links: the checker is not reading it"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: broken links:\n  " + "\n  ".join(broken)


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/ (limit {README_MAX_LINES})"
    text = "\n".join(lines)
    for needed in ("make demo", "make test", "zoo:moco_v2_800ep", "docs/extending.md"):
        assert needed in text, f"README.md no longer mentions {needed!r}"


def test_contracts_is_self_contained():
    text = (ROOT / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")
    assert not re.search(r"see (the )?README", text, re.IGNORECASE), "docs/CONTRACTS.md must not defer to the README"


def test_every_task_family_has_its_protocol_prose():
    for family in ("lowshot", "imagenet", "detection", "robustness"):
        assert (ROOT / "tasks" / family / "README.md").is_file(), f"tasks/{family}/README.md is missing"
