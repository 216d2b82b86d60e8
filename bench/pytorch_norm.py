#!/usr/bin/env python3
"""The math of `effnet bench norm`, eagerly in PyTorch, for side-by-side runs.

BN+SiLU (training, running statistics updated), GN(4)+SiLU and LN+PN(SiLU) forward and
backward at EfficientNet-B0 activation shapes, timed with CUDA events (median of --iters
runs after --warmup), printed as the same table `effnet bench norm` prints:

    kernel  ms  GFLOP/s  GB/s  of copy

GB/s uses effnet's byte model: forward moves x in and y out (8 bytes per element),
backward x and dy in and dx out (12 bytes per element); "of copy" compares with a plain
`copy_` over the largest activation measured in the same run.

LN+PN follows SPEC C.1-C.2 (and effnet's kernels) exactly: LayerNorm over (H, W, C)
without affine, then PN-Act with per-channel gamma, beta, proxy shift and scale:
    proxy samples  z_i = gamma * ((1 + pscale) * u_i + pshift) + beta,
    u_i = sqrt(2) * erfinv(2 (i + 0.5) / 200 - 1), i = 0..199
    mu~ = mean_i silu(z_i),  s~ = (var_i silu(z_i) + 0.03)^(-1/2)   (biased variance)
    y   = (silu(gamma * LN(x) + beta) - mu~) * s~
The proxy statistics are recomputed inside the timed forward (effnet: once per step in
the optimizer, included in its PN rows too) and autograd chains their gradients to gamma,
beta, pshift and pscale in the backward.

Tensors are channels_last (NHWC, effnet's layout) unless --nchw.

    python3 bench/pytorch_norm.py --batch 128          # on the H100
    cargo run --release -- bench norm --batch 128      # same machine, effnet
"""

import argparse
import json
import math

import torch
import torch.nn.functional as F

SHAPES = [(112, 32), (56, 144), (28, 240), (14, 480), (7, 1152)]
PROXY_POINTS = 200
PROXY_EPS = 0.03
NORM_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention: TF momentum 0.99


def quantiles(device):
    i = torch.arange(PROXY_POINTS, dtype=torch.float64)
    u = math.sqrt(2.0) * torch.erfinv(2.0 * (i + 0.5) / PROXY_POINTS - 1.0)
    return u.to(torch.float32).to(device)


def proxy_stats(gamma, beta, pshift, pscale, u):
    v = (1.0 + pscale)[:, None] * u[None, :] + pshift[:, None]  # [C, 200]
    a = F.silu(gamma[:, None] * v + beta[:, None])
    mu = a.mean(dim=1)
    var = a.var(dim=1, unbiased=False)
    return mu, torch.rsqrt(var + PROXY_EPS)


def make_layer(kind, n, side, c, device, channels_last):
    x = torch.randn(n, c, side, side, device=device) * 1.5 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    dy = torch.randn_like(x)
    p = lambda v: torch.full((c,), v, device=device, requires_grad=True)  # noqa: E731
    gamma, beta = p(1.0), p(0.0)
    pshift, pscale = p(0.0), p(0.0)
    running_mean = torch.zeros(c, device=device)
    running_var = torch.ones(c, device=device)
    u = quantiles(device)
    bc = lambda t: t[None, :, None, None]  # noqa: E731

    def forward():
        if kind == "bn":
            y = F.batch_norm(x, running_mean, running_var, gamma, beta, True, BN_MOMENTUM, NORM_EPS)
            return F.silu(y)
        if kind == "gn4":
            return F.silu(F.group_norm(x, 4, gamma, beta, NORM_EPS))
        # ln+pn: LayerNorm over (C, H, W) without affine, then the PN-Act.
        mu, s = proxy_stats(gamma, beta, pshift, pscale, u)
        y = F.group_norm(x, 1, None, None, NORM_EPS)
        return (F.silu(bc(gamma) * y + bc(beta)) - bc(mu)) * bc(s)

    params = [x, gamma, beta, pshift, pscale]
    return forward, params, dy


def time_ms(fn, iters, warmup, before=None):
    for _ in range(warmup):
        if before:
            before()
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        if before:
            before()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def row(name, ms, nbytes):
    return {"name": name, "ms": ms, "bytes": nbytes, "gbps": nbytes / ms / 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--nchw", action="store_true", help="contiguous NCHW instead of channels_last")
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    n = args.batch

    largest = max(n * s * s * c for s, c in SHAPES)
    src = torch.randn(largest, device=dev)
    dst = torch.empty_like(src)
    copy = row(f"copy[{largest}]", time_ms(lambda: dst.copy_(src), args.iters, args.warmup), 8.0 * largest)

    rows = []
    for side, c in SHAPES:
        numel = n * side * side * c
        for kind in ["bn", "gn4", "ln+pn"]:
            forward, params, dy = make_layer(kind, n, side, c, dev, not args.nchw)
            name = f"{kind} silu [{n},{side},{side},{c}]"
            with torch.no_grad():
                ms = time_ms(forward, args.iters, args.warmup)
            # Forward with autograd recording (what a training step runs).
            ms_grad = time_ms(forward, args.iters, args.warmup)
            rows.append(row(f"{name} fwd", ms_grad, 8.0 * numel))
            rows[-1]["ms_no_grad"] = ms
            out = forward()

            def clear():
                for p in params:
                    p.grad = None

            ms = time_ms(lambda: out.backward(dy, retain_graph=True), args.iters, args.warmup, clear)
            rows.append(row(f"{name} bwd", ms, 12.0 * numel))
            del out, params, dy, forward
            torch.cuda.empty_cache()

    if args.json:
        for r in [copy] + rows:
            r = dict(r, bench="norm", adapter=torch.cuda.get_device_name(), of_copy=r["gbps"] / copy["gbps"])
            print(json.dumps(r))
        return
    fmt = "{:<48} {:>10} {:>10} {:>9} {:>8}"
    print(f"pytorch {torch.__version__} norm bench on {torch.cuda.get_device_name()}, batch {n}, "
          f"{'NCHW' if args.nchw else 'channels_last'}, median of {args.iters}")
    print(fmt.format("kernel", "ms", "GFLOP/s", "GB/s", "of copy"))
    print(fmt.format(copy["name"], f"{copy['ms']:.3f}", "0.0", f"{copy['gbps']:.1f}", ""))
    print(fmt.format("kernel", "ms", "GFLOP/s", "GB/s", "of copy"))
    for r in rows:
        share = f"{100.0 * r['gbps'] / copy['gbps']:.0f}%"
        print(fmt.format(r["name"], f"{r['ms']:.3f}", "0.0", f"{r['gbps']:.1f}", share))


if __name__ == "__main__":
    main()
