#!/usr/bin/env bash
# Everything the issues want measured on the GPU machine (an H200 now), as one prepared script whose
# parts can be chosen (the device budget is ~15 minutes per session, start-up included).
# On this machine:   ../shared/device/prepare && cargo build --release && cp target/release/effnet .device/
#   (for the fmnist part also: cp -r /usr/share/datasets/fashion-mnist .device/; ~30 MB of the 64 MB that travel)
# Then run (device tool):   . .device/gpu-env && bash bench/gpu_session.sh "info selftest peak conv norm profile train"
# Parts: info selftest peak conv norm norm-mixed profile train fmnist moments repro-moments repro-norms
#   repro-fixres (default: info selftest peak conv norm profile train). The repro-* parts (issue 16, docs/papers.md) need
#   the Fashion-MNIST copy too; they are unmeasured on a GPU, so time them on their first run
#   and shrink --sims / --epochs to fit what is left of the device budget.
# Results land in $OUT (or ./bench-out): one log per part plus results tables.
set -uo pipefail
OUTDIR=${OUT:-bench-out}
mkdir -p "$OUTDIR"
E=${EFFNET:-./.device/effnet}
parts=${1:-"info selftest peak conv norm profile train"}
export PYTHONUNBUFFERED=1
run() { local name=$1; shift; echo "== $name: $*" | tee -a "$OUTDIR/summary.log"; ( "$@" ) > "$OUTDIR/$name.log" 2>&1; echo "   exit $?" | tee -a "$OUTDIR/summary.log"; tail -3 "$OUTDIR/$name.log" >> "$OUTDIR/summary.log"; }
for p in $parts; do
  case $p in
    info) run info "$E" info ;;
    selftest) run selftest "$E" selftest ;;
    # The adapter's copy bandwidth and f32 FMA rate: the ceilings of every later table.
    peak) run peak "$E" bench peak --refresh ;;
    # One G16-B0 LN+PN and one B0-BN training step per kernel against those ceilings.
    profile) run profile-g16-lnpn "$E" profile --model b0-g16 --norm ln-pn --batch 128 --image-size 224
             run profile-b0-bn "$E" profile --model b0 --norm bn --batch 128 --image-size 224 ;;
    conv) run conv-effnet "$E" bench conv --batch 128 --iters 10
          run conv-torch python3 bench/pytorch_conv.py ;;
    norm) run norm-effnet "$E" bench norm --batch 128 --iters 10
          run norm-torch python3 bench/pytorch_norm.py ;;
    # Issue 12: the norm kernels' f16-storage variants (x, y, dy, dx in f16; statistics f32),
    # the same rows as `norm` with /f16 (GB/s against the copy peak; PyTorch bf16 rows come
    # from pytorch_norm.py when it grows a dtype flag, not yet). Also their selftest rows.
    norm-mixed) run norm-effnet-mixed "$E" bench norm --precision mixed --batch 128 --iters 10
          run selftest-f16 "$E" selftest --op /f16 ;;
    train) run train-compare bash bench/h100_compare.sh "$OUTDIR" ;;
    fmnist) run fmnist "$E" train --data-dir "${FMNIST_DIR:-.device/fashion-mnist}" --run-dir "$OUTDIR/fmnist" ;;
    moments) run moments "$E" moments --net bn-ff --depth 200 --width 512 --batch 64 --sims 100 --out "$OUTDIR/moments-bn-ff" ;;
    # Paper 3 at the paper's sizes (SPEC §D.3), fewer simulations than its 200-1000.
    repro-moments) run repro-moments "$E" reproduce moments --scale paper --sims 50 \
          --data-dir "${FMNIST_DIR:-.device/fashion-mnist}" --out "$OUTDIR/reproduce-moments" ;;
    # Every norm on the full G16-B0 (Fashion-MNIST, 32 px), 3 epochs, 2 seeds.
    repro-norms) run repro-norms "$E" reproduce norms --width 1 --depth 1 --batch 128 --epochs 3 \
          --seeds 2 --eval-limit 10000 --data-dir "${FMNIST_DIR:-.device/fashion-mnist}" \
          --out "$OUTDIR/reproduce-norms" ;;
    # FixRes on the full G16-B0: 32 px + 1 fine-tune epoch at 64 px against 64 px throughout.
    repro-fixres) run repro-fixres "$E" reproduce fixres --norm gn --width 1 --depth 1 --batch 128 \
          --epochs 3 --finetune-epochs 1 --seeds 2 --eval-limit 10000 \
          --data-dir "${FMNIST_DIR:-.device/fashion-mnist}" --out "$OUTDIR/reproduce-fixres" ;;
    *) echo "unknown part $p" ;;
  esac
done
cat "$OUTDIR/summary.log"
