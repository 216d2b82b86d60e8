#!/usr/bin/env python3
"""Time cuDNN on the shapes of `effnet bench conv`, for a side-by-side comparison.

Same list as src/bench_conv.rs: the EfficientNet-B0 depthwise convolutions, their G16-B0
equivalents (expansion 4, 16 channels per group) and the B0 1x1 expand/project convs,
each forward, backward-data, backward-weight (separately, through
aten.convolution_backward) and their sum; fp32 (TF32 off), channels_last, CUDA-event
timing, median of --iters runs after warm-up. FLOPs count a multiply-add as 2; bytes count
each tensor read or written once, as effnet does. Prints the same table as effnet.

    python3 bench/pytorch_conv.py --batch 128            # on the H100
    cargo run --release -- bench conv --batch 128        # same machine, effnet
"""

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

# (C, H, k, stride): H is the input size.
B0_DEPTHWISE = [(96, 112, 3, 2), (144, 56, 3, 1), (240, 28, 5, 1), (480, 14, 3, 1), (1152, 7, 5, 1)]
G16_B0_GROUPED = [(64, 112, 3, 2), (96, 56, 3, 1), (160, 28, 5, 1), (320, 14, 3, 1), (768, 7, 5, 1)]
# (H, Cin, Cout)
B0_POINTWISE = [
    (112, 16, 96), (56, 96, 24), (56, 24, 144), (56, 144, 24), (28, 40, 240),
    (28, 240, 40), (14, 80, 480), (14, 480, 80), (7, 192, 1152), (7, 320, 1280),
]


def shapes(n):
    out = []
    for lst, per_group in ((B0_DEPTHWISE, 1), (G16_B0_GROUPED, 16)):
        for c, h, k, s in lst:
            out.append(dict(n=n, h=h, cin=c, cout=c, k=k, stride=s, groups=c // per_group))
    for h, cin, cout in B0_POINTWISE:
        out.append(dict(n=n, h=h, cin=cin, cout=cout, k=1, stride=1, groups=1))
    return out


def label(s):
    gi = s["cin"] // s["groups"]
    go = s["cout"] // s["groups"]
    if s["k"] == 1 and s["groups"] == 1:
        return f"conv1x1 {s['cin']}->{s['cout']} @{s['h']}x{s['h']} n{s['n']}"
    if s["groups"] == 1:
        kind = "conv"
    elif gi == 1 and go == 1:
        kind = "dwconv"
    else:
        kind = f"g{gi}conv"
    k = s["k"]
    return f"{kind}{k}x{k}/s{s['stride']} {s['cin']}->{s['cout']} @{s['h']}x{s['h']} n{s['n']}"


def time_ms(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def bench(s, iters):
    dev = "cuda"
    n, h, cin, cout, k, st, g = s["n"], s["h"], s["cin"], s["cout"], s["k"], s["stride"], s["groups"]
    pad = k // 2
    ho = (h - 1) // st + 1
    x = torch.randn(n, cin, h, h, device=dev).to(memory_format=torch.channels_last)
    w = (torch.randn(cout, cin // g, k, k, device=dev) * 0.1).to(memory_format=torch.channels_last)
    dy = torch.randn(n, cout, ho, ho, device=dev).to(memory_format=torch.channels_last)
    macs = n * ho * ho * cout * k * k * (cin // g)
    flops = 2.0 * macs
    xl, wl, yl = x.numel(), w.numel(), dy.numel()

    def fwd():
        return F.conv2d(x, w, None, st, pad, 1, g)

    def bwd(mask):
        return torch.ops.aten.convolution_backward(
            dy, x, w, None, [st, st], [pad, pad], [1, 1], False, [0, 0], g, mask)

    xr = x.detach().clone().requires_grad_(True)
    wr = w.detach().clone().requires_grad_(True)

    def both():
        y = F.conv2d(xr, wr, None, st, pad, 1, g)
        y.backward(dy)

    name = label(s)
    rows = [
        (f"{name} fwd [cudnn]", time_ms(fwd, iters), flops, 4.0 * (xl + wl + yl)),
        (f"{name} bwd-data [cudnn]", time_ms(lambda: bwd([True, False, False]), iters), flops, 4.0 * (yl + wl + xl)),
        (f"{name} bwd-weight [cudnn]", time_ms(lambda: bwd([False, True, False]), iters), flops, 4.0 * (xl + yl + wl)),
    ]
    rows.append((f"{name} fwd+bwd", sum(r[1] for r in rows), 3 * flops, sum(r[3] for r in rows)))
    rows.append((f"{name} fwd+bwd (autograd)", time_ms(both, iters), 3 * flops, rows[-1][3]))
    return rows


def copy_bandwidth(n, iters):
    a = torch.zeros(n, device="cuda")
    b = torch.zeros(n, device="cuda")
    ms = time_ms(lambda: b.copy_(a), iters)
    return (f"copy[{n}]", ms, 0.0, 8.0 * n)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="print JSON lines")
    ap.add_argument("--no-cudnn-benchmark", action="store_true",
                    help="do not let cuDNN autotune its algorithm choice")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = not a.no_cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.cuda.get_device_name()
    copy = copy_bandwidth(max(a.batch * 112 * 112 * 96, 1 << 20), a.iters)
    rows = []
    for s in shapes(a.batch):
        rows.extend(bench(s, a.iters))
    if a.json:
        for name, ms, fl, by in rows:
            print(json.dumps(dict(name=name, ms=ms, gflops=fl / ms / 1e6, gbps=by / ms / 1e6,
                                  flops=fl, bytes=by, device=dev)))
        return
    print(f"bench conv (PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}) "
          f"on {dev}, batch {a.batch}, median of {a.iters}")
    print(f"{'kernel':<48} {'ms':>10} {'GFLOP/s':>10} {'GB/s':>9} {'of copy':>8}")
    cgbps = copy[3] / copy[1] / 1e6
    for name, ms, fl, by in rows:
        gbps = by / ms / 1e6
        print(f"{name:<48} {ms:>10.3f} {fl / ms / 1e6:>10.1f} {gbps:>9.1f} {100 * gbps / cgbps:>7.0f}%")
    print(f"{copy[0]:<48} {copy[1]:>10.3f} {'-':>10} {cgbps:>9.1f}")


if __name__ == "__main__":
    main()
