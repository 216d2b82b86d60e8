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
  for p in f32 mixed; do
    "$EFFNET" bench train --model "$1" --norm "$2" --batch "$3" --image-size "$4" --iters "$STEPS" \
      --precision "$p" --json \
      | sed 's/^{/{"framework":"effnet",/' >> "$OUTDIR/results.jsonl" || echo "effnet $p failed on $r" >&2
  done
  python3 bench/pytorch_ref.py --model "$1" --norm "$2" --batch "$3" --image-size "$4" --steps "$STEPS" \
    >> "$OUTDIR/results.jsonl" || echo "pytorch failed on $r" >&2
done
python3 - "$OUTDIR/results.jsonl" <<'PY' | tee "$OUTDIR/table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
key = lambda r: (r["model"], r["norm"], r["batch"], r["image_size"])
groups = {}
for r in rows:
    tag = r.get("precision", "?") if r["framework"] == "pytorch" else "effnet-" + r.get("precision", "f32")
    groups.setdefault(key(r), {})[tag] = r
# effnet f32 is compared with torch fp32, effnet mixed (f16 storage) with torch bf16 autocast.
print("| model | norm | batch | px | effnet f32 img/s | torch fp32 img/s | x fp32 | effnet mixed img/s | torch bf16+CL img/s | x bf16 | effnet f32 / mixed MiB | torch fp32 / bf16 MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for k, g in groups.items():
    e, m, f, b = g.get("effnet-f32"), g.get("effnet-mixed"), g.get("fp32"), g.get("bf16-cl")
    fmt = lambda v: f"{v:.0f}" if v else "-"
    ratio = lambda a, b: f"{a['train_img_s'] / b['train_img_s']:.2f}" if a and b else "-"
    mib = lambda r: fmt(r and r["gpu_bytes"] / 2**20)
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {fmt(e and e['train_img_s'])} | {fmt(f and f['train_img_s'])} | {ratio(e, f)} "
          f"| {fmt(m and m['train_img_s'])} | {fmt(b and b['train_img_s'])} | {ratio(m, b)} | {mib(e)} / {mib(m)} | {mib(f)} / {mib(b)} |")
PY
