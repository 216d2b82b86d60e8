#!/usr/bin/env bash
# Issue 8's side-by-side on one GPU: effnet's training step vs PyTorch (fp32 eager and
# bf16 autocast + channels-last) on the same card, same model, batch, resolution and
# optimizer, then a ratio table. Run from the repo root on the GPU machine, with the
# release binary in .device/ (see shared/device/README.md):
#   . .device/gpu-env && bash bench/h100_compare.sh [outdir]
set -uo pipefail
OUTDIR=${1:-${OUT:-bench-out}}
mkdir -p "$OUTDIR"
EFFNET=${EFFNET:-./.device/effnet}
STEPS=${STEPS:-20}
rows=(
  "b0 bn 128 224"
  "b0-g16 gn 128 224"
  "b0-g16 ln-pn 128 224"
  "b0 bn 256 160"
  "b0-g16 gn 256 160"
  "b0-g16 ln-pn 256 160"
  "b2-g16 ln-pn 128 196"
)
: > "$OUTDIR/results.jsonl"
for r in "${rows[@]}"; do
  set -- $r
  echo "== $1 $2 batch $3 @ $4" >&2
  "$EFFNET" bench train --model "$1" --norm "$2" --batch "$3" --image-size "$4" --iters "$STEPS" --json \
    | sed 's/^{/{"framework":"effnet",/' >> "$OUTDIR/results.jsonl" || echo "effnet failed on $r" >&2
  python3 bench/pytorch_ref.py --model "$1" --norm "$2" --batch "$3" --image-size "$4" --steps "$STEPS" \
    >> "$OUTDIR/results.jsonl" || echo "pytorch failed on $r" >&2
done
python3 - "$OUTDIR/results.jsonl" <<'PY' | tee "$OUTDIR/table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
key = lambda r: (r["model"], r["norm"], r["batch"], r["image_size"])
groups = {}
for r in rows:
    groups.setdefault(key(r), {})[r.get("precision", "effnet") if r["framework"] == "pytorch" else "effnet"] = r
print("| model | norm | batch | px | effnet img/s | torch fp32 img/s | x fp32 | torch bf16+CL img/s | x bf16 | effnet MiB | torch fp32 MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k, g in groups.items():
    e, f, b = g.get("effnet"), g.get("fp32"), g.get("bf16-cl")
    fmt = lambda v: f"{v:.0f}" if v else "-"
    ratio = lambda a, b: f"{a['train_img_s'] / b['train_img_s']:.2f}" if a and b else "-"
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {fmt(e and e['train_img_s'])} | {fmt(f and f['train_img_s'])} | {ratio(e, f)} "
          f"| {fmt(b and b['train_img_s'])} | {ratio(e, b)} | {fmt(e and e['gpu_bytes'] / 2**20)} | {fmt(f and f['gpu_bytes'] / 2**20)} |")
PY
