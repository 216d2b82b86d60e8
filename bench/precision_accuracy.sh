#!/usr/bin/env bash
# Issue 12's accuracy check: a small G16-B0 trained on Fashion-MNIST in f32 and in mixed
# precision (f16 activations and activation gradients, f32 master weights, dynamic loss
# scaling) for bn, gn and ln-pn, with the same seed, data order and steps. Prints the
# table of docs/ops.md ("Mixed precision: accuracy"): test top-1 of each pair, their
# difference, and the loss scaler's skipped steps and final scale.
# Usage (repo root, after cargo build --release):
#   bash bench/precision_accuracy.sh [workdir]      (default workdir: runs/precision-acc)
# Env: EFFNET (binary), STEPS, BATCH, SIZE, WIDTH, DEPTH, EVAL_LIMIT, SEED, NORMS.
# The runs stay in the workdir; nothing here is meant to be committed.
set -euo pipefail
W=${1:-runs/precision-acc}
E=${EFFNET:-target/release/effnet}
STEPS=${STEPS:-300}
BATCH=${BATCH:-32}
SIZE=${SIZE:-32}
WIDTH=${WIDTH:-0.5}
DEPTH=${DEPTH:-0.5}
EVAL_LIMIT=${EVAL_LIMIT:-2000}
SEED=${SEED:-1}
NORMS=${NORMS:-bn gn ln-pn}
mkdir -p "$W"
for norm in $NORMS; do
  for p in f32 mixed; do
    d="$W/$norm-$p"
    if [ -f "$d/done" ]; then continue; fi
    "$E" train --model b0-g16 --width "$WIDTH" --depth "$DEPTH" --image-size "$SIZE" \
      --batch "$BATCH" --norm "$norm" --max-steps "$STEPS" --warmup-epochs 0 \
      --log-every 10 --eval-limit "$EVAL_LIMIT" --seed "$SEED" --precision "$p" \
      --run-dir "$d" --overwrite > "$d.log" 2>&1
    touch "$d/done"
  done
done
python3 - "$W" $NORMS <<'PY'
import json, sys
w, norms = sys.argv[1], sys.argv[2:]
def last(path):
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])
print("| norm | f32 top-1 % | mixed top-1 % | mixed - f32 | f32 test loss | mixed test loss | skipped steps (mixed) | final loss scale |")
print("|---|---|---|---|---|---|---|---|")
for n in norms:
    f, m = last(f"{w}/{n}-f32/eval.jsonl"), last(f"{w}/{n}-mixed/eval.jsonl")
    mm = last(f"{w}/{n}-mixed/metrics.jsonl")
    print(f"| {n} | {100*f['top1']:.2f} | {100*m['top1']:.2f} | {100*(m['top1']-f['top1']):+.2f} | "
          f"{f['loss']:.4f} | {m['loss']:.4f} | {mm['skipped_steps']} | {mm['loss_scale']:.0f} |")
PY
