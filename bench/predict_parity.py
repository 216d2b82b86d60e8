#!/usr/bin/env python3
"""timm -> effnet parity at full size: `effnet predict` vs PyTorch on a timm EfficientNet.

Run from the repository root on a machine with PyTorch, timm, safetensors and a built
effnet binary (`cargo build --release`):

    python3 bench/predict_parity.py                      # efficientnet_b0, 224 px, batch 4
    python3 bench/predict_parity.py --arch efficientnet_b0_gn --batch 8
    python3 bench/predict_parity.py --with-train         # also effnet -> timm (see below)

Steps (all in one run, in a scratch folder):

1. build `timm.create_model(arch)` (random init, or `--pretrained` when the weights are in
   the local Hugging Face cache), give BatchNorm realistic running statistics (two
   calibration batches) and random norm affine parameters, and save its `state_dict()` as
   safetensors exactly as a user would;
2. draw an input [N, 3, S, S] (standard normal, i.e. already "normalized") and save it as
   safetensors (`input`);
3. compute the reference eval-mode logits in float64 (and float32 for scale) with PyTorch;
4. run `effnet predict --arch <arch> --weights W --input X --output Y --batch N`;
5. compare: relative L2 error of the logits (criterion: < --tol, default 1e-4) and the
   worst per-row error, and print one JSON line with the result.

With `--with-train` it also checks the way back: a tiny `effnet train` run (BatchNorm,
Fashion-MNIST, a few steps; needs the dataset at /usr/share/datasets/fashion-mnist),
`effnet export` of its checkpoint, `eval(timm_create)` + strict `load_state_dict` in timm,
and timm's logits against `effnet predict` on the same checkpoint.

Exit status 0 when every check passes, 1 otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import timm
from safetensors import safe_open
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
from gen_timm_fixtures import randomize  # noqa: E402  (same randomization as the fixtures)


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def run(cmd, env=None):
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.time() - t0
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}")
    return r.stdout, dt


def timm_to_effnet(args, work):
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = timm.create_model(args.arch, pretrained=args.pretrained)
    size = args.image_size or model.pretrained_cfg["input_size"][-1]
    if not args.pretrained:
        randomize(model, size, gen)
    model.eval()
    weights = os.path.join(work, "weights.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    x = torch.randn(args.batch, 3, size, size, generator=gen)
    inp = os.path.join(work, "input.safetensors")
    save_file({"input": x}, inp)
    with torch.no_grad():
        ref64 = model.double()(x.double())
        ref32 = model.float()(x)
    out = os.path.join(work, "logits.safetensors")
    stdout, dt = run([args.effnet, "predict", "--arch", args.arch, "--weights", weights,
                      "--input", inp, "--output", out, "--batch", str(args.batch),
                      "--top-k", "3"])
    got = load_file(out)["logits"]
    err = rel_l2(got, ref64)
    rows = [rel_l2(got[i], ref64[i]) for i in range(args.batch)]
    res = {
        "check": "timm->effnet predict",
        "arch": args.arch,
        "image_size": size,
        "batch": args.batch,
        "pretrained": args.pretrained,
        "rel_l2_vs_torch_f64": err,
        "worst_row_rel_l2": max(rows),
        "torch_f32_rel_l2_vs_f64": rel_l2(ref32, ref64),
        "max_abs_logit": ref64.abs().max().item(),
        "top1_agree": bool((got.argmax(1) == ref64.argmax(1)).all()),
        "effnet_seconds": round(dt, 2),
        "effnet_header": stdout.splitlines()[0] if stdout else "",
        "pass": err < args.tol,
    }
    print(json.dumps(res))
    return res["pass"]


def effnet_to_timm(args, work):
    data = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(data):
        print(json.dumps({"check": "effnet->timm", "skipped": f"no dataset at {data}"}))
        return True
    run_dir = os.path.join(work, "run")
    run([args.effnet, "train", "--model", "b0", "--norm", "bn", "--width", "0.25", "--depth",
         "0.25", "--image-size", "32", "--batch", "16", "--max-steps", "3", "--optimizer", "sgd",
         "--lr", "0.05", "--warmup-epochs", "0", "--eval-every", "0", "--eval-limit", "16",
         "--run-dir", run_dir])
    exported = os.path.join(work, "exported.safetensors")
    run([args.effnet, "export", run_dir, "--output", exported])
    with safe_open(exported, "pt") as f:
        meta = f.metadata()
    import functools  # noqa: F401  (used by some timm_create expressions)
    model = eval(meta["timm_create"])
    missing = model.load_state_dict(load_file(exported), strict=True)
    model = model.double().eval()
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(4, model.conv_stem.in_channels, 32, 32, generator=gen)
    inp = os.path.join(work, "input_train.safetensors")
    save_file({"input": x}, inp)
    out = os.path.join(work, "logits_train.safetensors")
    run([args.effnet, "predict", "--arch", "b0", "--weights", run_dir, "--input", inp,
         "--output", out, "--batch", "4"])
    got = load_file(out)["logits"]
    with torch.no_grad():
        ref = model(x.double())
    err = rel_l2(got, ref)
    # effnet's BatchNorm keeps a biased running variance; timm reads it as its (unbiased)
    # running variance: the same numbers, so eval outputs agree to float32 rounding.
    res = {
        "check": "effnet train -> export -> timm",
        "timm_create": meta["timm_create"],
        "strict_load": str(missing),
        "rel_l2_timm_vs_effnet": err,
        "pass": err < args.tol,
    }
    print(json.dumps(res))
    return res["pass"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--effnet", default=os.path.join("target", "release", "effnet"))
    p.add_argument("--arch", default="efficientnet_b0")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--with-train", action="store_true")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    if not os.path.exists(args.effnet):
        raise SystemExit(f"{args.effnet} not found: run `cargo build --release` first")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        ok = timm_to_effnet(args, work)
        if args.with_train:
            ok = effnet_to_timm(args, work) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
