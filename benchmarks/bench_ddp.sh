#!/usr/bin/env bash
# The DDP path at one process vs the plain single-process path: same device, same settings, same run.
#
#   1. the step benchmark (bench_step.py, synthetic in-memory batches): plain vs under
#      `torchrun --standalone --nproc-per-node 1` with the query encoder wrapped in DDP (--ddp);
#   2. the trainer itself (`mopro-bench pretrain`, JPEG decoding, checkpoints) on generated data: plain vs under
#      torchrun. NB: at world size 1 the trainer does not wrap the encoder in DDP (it only initialises the process
#      group), so part 2 measures torchrun + process-group start-up; part 1 measures the DDP wrapper itself.
#
# Throughput of part 2 = images / seconds of the last epoch in log.json (epoch time excludes the checkpoint write and
# validation is off; it includes the DataLoader start-up of that epoch).
#
#   bash benchmarks/bench_ddp.sh                  # CUDA: resnet50, 224 px, batch 256 / CPU: resnet18, 64 px, batch 32
#   ARCH=resnet50 SIZE=224 BATCH=256 WORKERS=16 EPOCHS=2 LENGTH=16384 bash benchmarks/bench_ddp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc-per-node 1)
CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')
if [ "$CUDA" = 1 ]; then
  : "${ARCH:=resnet50}" "${SIZE:=224}" "${BATCH:=256}" "${STEPS:=20}" "${WORKERS:=$(nproc)}" "${EPOCHS:=2}"
  : "${UNIQUE:=2048}" "${SOURCE:=296}" "${LENGTH:=16384}" "${VARIANT:=bf16}" "${THREADS:=0}"
else
  : "${ARCH:=resnet18}" "${SIZE:=64}" "${BATCH:=32}" "${STEPS:=4}" "${WORKERS:=1}" "${EPOCHS:=2}"
  : "${UNIQUE:=64}" "${SOURCE:=80}" "${LENGTH:=128}" "${VARIANT:=fp32}" "${THREADS:=1}"
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-ddp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$([ "$THREADS" = 0 ] && nproc || echo "$THREADS")}

echo "## 1. step (bench_step.py, $VARIANT): plain vs torchrun --nproc-per-node 1 --ddp"
STEP_ARGS=(--arch "$ARCH" --image-size "$SIZE" --batch "$BATCH" --steps "$STEPS" --variants "$VARIANT" --threads "$THREADS")
"$PY" benchmarks/bench_step.py "${STEP_ARGS[@]}" | tee "$TMP/plain.txt"
"${TORCHRUN[@]}" benchmarks/bench_step.py "${STEP_ARGS[@]}" --ddp | tee "$TMP/ddp.txt"

echo
echo "## 2. trainer (mopro-bench pretrain, $EPOCHS epochs of $LENGTH images): plain vs torchrun --nproc-per-node 1"
ROOT=$("$PY" benchmarks/_common.py --unique "$UNIQUE" --size "$SOURCE" --length "$LENGTH" --annotation "$TMP/train.json" | tail -1)
PRE_ARGS=(pretrain --data "$ROOT" --annotation "$TMP/train.json" --arch "$ARCH" --image-size "$SIZE" --batch-size "$BATCH"
          --epochs "$EPOCHS" --workers "$WORKERS" --no-progress --set run.eval_every=0 --set ckpt.keep_last=1)
"$PY" -m mopro_bench "${PRE_ARGS[@]}" --out "$TMP/run-plain" > "$TMP/run-plain.log" 2>&1 || { cat "$TMP/run-plain.log"; exit 1; }
"${TORCHRUN[@]}" -m mopro_bench "${PRE_ARGS[@]}" --out "$TMP/run-torchrun" > "$TMP/run-torchrun.log" 2>&1 \
  || { cat "$TMP/run-torchrun.log"; exit 1; }

"$PY" - "$TMP" <<'EOF'
import json, re, sys
from pathlib import Path

tmp = Path(sys.argv[1])

def step_rate(name):
    for line in (tmp / name).read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and re.fullmatch(r"[0-9.]+", cells[1] or "x"):
            return float(cells[1])
    raise SystemExit(f"no table row in {name}")

def trainer_rate(run):
    last = json.loads((tmp / run / "log.json").read_text())[-1]
    return last["samples"] / last["seconds"], last["seconds"]

s_plain, s_ddp = step_rate("plain.txt"), step_rate("ddp.txt")
(t_plain, e_plain), (t_tr, e_tr) = trainer_rate("run-plain"), trainer_rate("run-torchrun")
print()
print("| path | img/s | vs plain |")
print("|------|-------|----------|")
print(f"| step, plain | {s_plain:.1f} | 1.00 |")
print(f"| step, torchrun 1 process + DDP wrapper | {s_ddp:.1f} | {s_ddp / s_plain:.2f} |")
print(f"| trainer, plain (last epoch {e_plain:.1f} s) | {t_plain:.1f} | 1.00 |")
print(f"| trainer, torchrun 1 process (last epoch {e_tr:.1f} s) | {t_tr:.1f} | {t_tr / t_plain:.2f} |")
EOF
