#!/usr/bin/env bash
# Issue 18's fine-tune demo: pretrain on one Fashion-MNIST task, export it as a timm state
# dict, fine-tune from that file (--init, as a timm user would) on a second task with a
# different class count (so the classifier is re-initialized), with and without
# --freeze-bn, and train from scratch on the second task for the same steps. Prints the
# top-1 table of docs/interop.md ("Fine-tune demo").
#   task A (source): classes 0-5 (T-shirt, Trouser, Pullover, Dress, Coat, Sandal), 6 classes
#   task B (target): classes 6-9 (Shirt, Sneaker, Bag, Ankle boot), relabelled 0-3, only the
#     first B_TRAIN training images (a small target set, as fine-tunes usually have; it also
#     makes an epoch short, and evaluations come at epoch ends)
# Usage (repo root, after cargo build --release):
#   bash bench/finetune_demo.sh [workdir]      (default workdir: runs/ft-demo)
# Env: EFFNET (binary), FMNIST_DIR, SRC_STEPS, FT_EPOCHS, B_TRAIN, BATCH, SIZE, WIDTH, DEPTH,
#   EVAL_LIMIT.
# The task folders (IDX files written from the Fashion-MNIST copy) and the runs stay in the
# workdir; nothing here is meant to be committed.
set -euo pipefail
W=${1:-runs/ft-demo}
E=${EFFNET:-target/release/effnet}
FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
SRC_STEPS=${SRC_STEPS:-300}
FT_EPOCHS=${FT_EPOCHS:-4}
B_TRAIN=${B_TRAIN:-960}
BATCH=${BATCH:-32}
mkdir -p "$W"

# Two IDX datasets from the four Fashion-MNIST files: task-a (labels 0-5) and task-b
# (labels 6-9 as 0-3). Standard library only.
python3 - "$FMNIST_DIR" "$W" "$B_TRAIN" <<'PY'
import gzip, os, struct, sys
src, out, b_train = sys.argv[1], sys.argv[2], int(sys.argv[3])
def read(name):
    p = os.path.join(src, name)
    op = gzip.open if os.path.exists(p + ".gz") else open
    with op(p + ".gz" if os.path.exists(p + ".gz") else p, "rb") as f:
        return f.read()
tasks = {"task-a": range(0, 6), "task-b": range(6, 10)}
for split in ("train", "t10k"):
    img, lab = read(f"{split}-images-idx3-ubyte"), read(f"{split}-labels-idx1-ubyte")
    n, h, w = struct.unpack(">III", img[4:16])
    labels = lab[8:8 + n]
    for task, keep in tasks.items():
        d = os.path.join(out, task)
        os.makedirs(d, exist_ok=True)
        idx = [i for i in range(n) if labels[i] in keep]
        if task == "task-b" and split == "train":
            idx = idx[:b_train]
        px = b"".join(img[16 + i * h * w:16 + (i + 1) * h * w] for i in idx)
        with open(os.path.join(d, f"{split}-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 0x803, len(idx), h, w) + px)
        with open(os.path.join(d, f"{split}-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 0x801, len(idx)) + bytes(labels[i] - keep[0] for i in idx))
        print(f"{task} {split}: {len(idx)} images")
PY

# One model and recipe for every run; the schedule spans each run's --max-steps.
M=(--model efficientnet_b0 --width "${WIDTH:-0.25}" --depth "${DEPTH:-0.25}" --image-size "${SIZE:-16}"
   --batch "$BATCH" --eval-limit "${EVAL_LIMIT:-1000}" --log-every 10 --seed 1)
# Task B runs: FT_EPOCHS epochs of B_TRAIN / BATCH steps, an evaluation after each.
FT_STEPS=$((FT_EPOCHS * (B_TRAIN / BATCH)))
t() { local name=$1; shift; echo "== $name: $E train $*" >&2; /usr/bin/time -f "   $name: %e s" "$E" train "$@" > "$W/$name.log" 2>&1 || { tail -20 "$W/$name.log"; exit 1; }; tail -1 "$W/$name.log" >&2; }
t source "${M[@]}" --data-dir "$W/task-a" --max-steps "$SRC_STEPS" --warmup-epochs 0.02 --eval-every 0 --run-dir "$W/source" --overwrite
"$E" export "$W/source" --output "$W/source.safetensors" | head -1
B=("${M[@]}" --data-dir "$W/task-b" --max-steps "$FT_STEPS" --warmup-epochs 0.25 --eval-every 1)
t init "${B[@]}" --init "$W/source.safetensors" --run-dir "$W/init" --overwrite
t init-freeze-bn "${B[@]}" --init "$W/source.safetensors" --freeze-bn --run-dir "$W/init-freeze-bn" --overwrite
t scratch "${B[@]}" --run-dir "$W/scratch" --overwrite
grep -E "loaded|re-initialized|left out" "$W/init.log" | head -5 || true

python3 - "$W" <<'PY'
import json, os, sys
w = sys.argv[1]
runs = ["init", "init-freeze-bn", "scratch"]
curves = {r: {d["step"]: 100 * d["top1"] for d in map(json.loads, open(os.path.join(w, r, "eval.jsonl")))} for r in runs}
steps = sorted(set().union(*curves.values()))
print("| step | " + " | ".join(f"{r} top-1 %" for r in runs) + " |")
print("|---:|" + "---:|" * len(runs))
for s in steps:
    print(f"| {s} | " + " | ".join(f"{curves[r][s]:.2f}" if s in curves[r] else "" for r in runs) + " |")
PY
