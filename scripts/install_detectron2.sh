#!/usr/bin/env bash
# Install detectron2 into a Python environment (used by `make setup` and `make setup-detection`).
#
#   bash scripts/install_detectron2.sh PYTHON [--force] [--strict]
#
# detectron2 is not published on PyPI. In order of preference:
#   1. MOPRO_BENCH_D2_SOURCE=<local checkout | pip-installable URL> (built with compiled ops), or
#      MOPRO_BENCH_D2_SOURCE=registry to go straight to 3.;
#   2. the official source (git+https://github.com/facebookresearch/detectron2.git@$MOPRO_BENCH_D2_REF, default
#      main), tried only when github.com answers within a few seconds; built without isolation (its setup imports
#      torch) with compiled ops (CUDA ones where a CUDA toolkit is present);
#   3. the registry's `sal-detectron2==0.7.2` (a build of detectron2 main) -- published only as a cp310 wheel; its
#      Python part runs on newer Pythons, so the wheel is rewritten as py3-none-any without the compiled `_C`
#      module (standard Mask R-CNN uses torchvision's ops) and installed with --no-deps.
# Its Python dependencies are the `detection` extra of pyproject.toml (numpy 2 is fine; setuptools < 81 for
# pkg_resources).
#
# Already installed and importable -> returns in a few seconds (idempotent). --force reinstalls.
# Failure prints a warning and exits 0 (detectron2 is optional: coco_maskrcnn and its tests are then skipped);
# with --strict (implied by --force) it exits 1.
set -uo pipefail

PY="${1:-}"
if [[ -z "$PY" || "$PY" == --* ]]; then
    echo "usage: bash scripts/install_detectron2.sh PYTHON [--force] [--strict]" >&2
    exit 2
fi
shift
FORCE=0
STRICT=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1; STRICT=1 ;;
        --strict) STRICT=1 ;;
        *) echo "install_detectron2.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SAL_VERSION="0.7.2"
D2_REPO="https://github.com/facebookresearch/detectron2.git"
D2_REF="${MOPRO_BENCH_D2_REF:-main}"
SOURCE="${MOPRO_BENCH_D2_SOURCE:-}"
PROBE_TIMEOUT="${MOPRO_BENCH_D2_PROBE_TIMEOUT:-5}"
START=$(date +%s)

say() { echo "[detectron2] $*"; }
fail() {
    echo "[detectron2] WARNING: $* -- coco_maskrcnn and its tests will be skipped; see docs (detection)." >&2
    if [[ $STRICT == 1 ]]; then exit 1; fi
    exit 0
}
with_timeout() {  # with_timeout SECONDS cmd...  (coreutils timeout when present)
    local s="$1"; shift
    if command -v timeout >/dev/null 2>&1; then timeout "$s" "$@"; else "$@"; fi
}

# What a working install must import (detectron2 + what Mask R-CNN training and COCO evaluation use).
check_import() {
    "$PY" - <<'EOF' 2>&1
import detectron2
import pkg_resources  # noqa: F401  (detectron2.model_zoo needs it: setuptools < 81)
from detectron2.config import get_cfg  # noqa: F401
from detectron2.engine import DefaultTrainer, launch  # noqa: F401
from detectron2.evaluation import COCOEvaluator  # noqa: F401
from detectron2.modeling import build_model  # noqa: F401
import importlib.metadata as md
import importlib.util

dist = "unknown distribution"
for name in ("detectron2", "sal-detectron2"):
    try:
        md.version(name)
        dist = name
        break
    except md.PackageNotFoundError:
        pass
ops = "compiled ops" if importlib.util.find_spec("detectron2._C") else "Python only, no compiled ops"
print(f"detectron2 {detectron2.__version__} [{dist}, {ops}]")
EOF
}

if [[ $FORCE == 0 ]] && out=$(check_import) ; then
    say "already installed: $(echo "$out" | tail -1) ($(( $(date +%s) - START )) s)"
    exit 0
fi

# 1. Python dependencies: the `detection` extra of pyproject.toml.
DEPS=()
while IFS= read -r line; do
    [[ -n "$line" ]] && DEPS+=("$line")
done < <("$PY" - "$HERE/pyproject.toml" <<'EOF'
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
try:
    import tomllib

    deps = tomllib.loads(text)["project"]["optional-dependencies"]["detection"]
except ModuleNotFoundError:  # Python 3.10: the list is simple enough to read directly
    block = re.search(r"^detection\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    deps = re.findall(r'"([^"]+)"', block)
print("\n".join(deps))
EOF
)
if [[ ${#DEPS[@]} == 0 ]]; then
    fail "could not read the detection extra from $HERE/pyproject.toml"
fi
say "installing Python dependencies: ${DEPS[*]}"
"$PY" -m pip install -q "${DEPS[@]}" || fail "pip could not install detectron2's Python dependencies"

uninstall_other() {  # both distributions provide the `detectron2` package: keep only one
    "$PY" -m pip uninstall -q -y "$1" >/dev/null 2>&1 || true
}

install_from_source() {  # a checkout or a pip-installable URL; compiled ops are built
    local src="$1"
    say "building detectron2 from $src (compiled ops; this takes several minutes)"
    uninstall_other sal-detectron2
    "$PY" -m pip install -q --no-build-isolation "$src"
}

TMP_D2="$(mktemp -d)"
trap 'rm -rf "$TMP_D2"' EXIT

install_registry_wheel() {
    local tmp="$TMP_D2"
    say "fetching sal-detectron2==$SAL_VERSION from the package registry (Python part only, no compiled ops)"
    "$PY" -m pip download -q --timeout 60 --no-deps --only-binary=:all: --python-version 3.10 \
        --platform manylinux2014_x86_64 "sal-detectron2==$SAL_VERSION" -d "$tmp/dl" || return 1
    local whl
    whl="$(ls "$tmp"/dl/sal_detectron2-"$SAL_VERSION"-*.whl 2>/dev/null | head -1)"
    [[ -n "$whl" ]] || return 1
    # Rewrite it as a pure-Python wheel: drop the cp310 extension module and the top-level `tools` scripts
    # package (it would shadow any other `tools` module), mark it purelib + py3-none-any, regenerate RECORD.
    "$PY" - "$whl" "$tmp/out" <<'EOF' || return 1
import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

src, outdir = Path(sys.argv[1]), Path(sys.argv[2])
outdir.mkdir(parents=True, exist_ok=True)
name, version = src.name.split("-")[:2]
dst = outdir / f"{name}-{version}-py3-none-any.whl"
dist_info = f"{name}-{version}.dist-info"


def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


records, dropped = [], []
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        n = info.filename
        if n.endswith("/") or n == f"{dist_info}/RECORD":
            continue
        if re.match(r"detectron2/_C\..*\.(so|pyd)$", n) or n.startswith("tools/"):
            dropped.append(n)
            continue
        data = zin.read(n)
        if n == f"{dist_info}/WHEEL":
            lines = [ln for ln in data.decode().splitlines() if not ln.startswith(("Root-Is-Purelib:", "Tag:"))]
            data = ("\n".join(lines).rstrip("\n") + "\nRoot-Is-Purelib: true\nTag: py3-none-any\n").encode()
        elif n == f"{dist_info}/top_level.txt":
            data = b"detectron2\n"
        elif n == f"{dist_info}/METADATA":
            # drop the numpy<2 pin (numpy 2 works; the pin would make pip downgrade numpy or flag the environment)
            lines = ["Requires-Dist: numpy" if re.match(r"Requires-Dist:\s*numpy\b", ln) else ln
                     for ln in data.decode().splitlines()]
            data = ("\n".join(lines) + "\n").encode()
            # its runtime requirements (without extras), installed after the --no-deps install of the wheel
            reqs = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]
            (outdir / "requires.txt").write_text("\n".join(r for r in reqs if "extra ==" not in r) + "\n")
        zout.writestr(n, data)
        records.append(f"{n},{digest(data)},{len(data)}")
    records.append(f"{dist_info}/RECORD,,")
    zout.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
if not any(d.startswith("detectron2/_C") for d in dropped):
    print("note: the wheel had no compiled _C module", file=sys.stderr)
EOF
    uninstall_other detectron2
    "$PY" -m pip install -q --no-deps --force-reinstall "$tmp"/out/*.whl || return 1
    if [[ -s "$tmp/out/requires.txt" ]]; then
        local reqs=()
        while IFS= read -r line; do [[ -n "$line" ]] && reqs+=("$line"); done < "$tmp/out/requires.txt"
        "$PY" -m pip install -q "${reqs[@]}" || return 1
    fi
}

installed=""
if [[ "$SOURCE" == "registry" ]]; then
    :
elif [[ -n "$SOURCE" ]]; then
    if install_from_source "$SOURCE" && check_import >/dev/null; then
        installed="source"
    else
        say "building from MOPRO_BENCH_D2_SOURCE=$SOURCE failed; falling back to the registry wheel"
    fi
elif with_timeout "$PROBE_TIMEOUT" "$PY" -c "
import urllib.request
urllib.request.urlopen('https://github.com/facebookresearch/detectron2', timeout=$PROBE_TIMEOUT)
" >/dev/null 2>&1 && command -v git >/dev/null 2>&1; then
    if install_from_source "git+$D2_REPO@$D2_REF" && check_import >/dev/null; then
        installed="source"
    else
        say "building the official source failed; falling back to the registry wheel"
    fi
else
    say "official source not reachable (github.com did not answer within ${PROBE_TIMEOUT} s, or git is missing); using the registry wheel"
fi

if [[ -z "$installed" ]]; then
    install_registry_wheel || fail "could not fetch or install sal-detectron2==$SAL_VERSION"
fi

if ! out=$(check_import); then
    echo "$out" | tail -5 >&2
    fail "detectron2 was installed but does not import"
fi
say "installed $(echo "$out" | tail -1) in $(( $(date +%s) - START )) s"
exit 0
