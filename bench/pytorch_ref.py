#!/usr/bin/env python3
"""PyTorch twin of `effnet bench train`: the same architectures, batch, resolution and
optimizer (AdamW), timed as a training step and as inference, in fp32 eager and in bf16
autocast + channels-last, with torch.cuda.max_memory_allocated.

Architectures: timm's `efficientnet_b0` for (b0, bn) (identical to effnet's b0); our own
PyTorch code, written from SPEC §A-§C, for the G16 variants and every other norm (timm has
no G16 with expansion 4, and no Proxy Norm).

    python3 bench/pytorch_ref.py --model b0-g16 --norm ln-pn --batch 128 --image-size 224
    python3 bench/pytorch_ref.py --device cpu --batch 2 --image-size 32 --steps 2   # smoke

Prints one JSON object per precision.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

STAGES = [  # k, stride, cout, repeats, expand (B0)
    (3, 1, 16, 1, 1), (3, 2, 24, 2, 6), (5, 2, 40, 2, 6), (3, 2, 80, 3, 6),
    (5, 1, 112, 3, 6), (5, 2, 192, 4, 6), (3, 1, 320, 1, 6)]
SCALING = [(1.0, 1.0, 224, 0.2), (1.0, 1.1, 240, 0.2), (1.1, 1.2, 260, 0.3), (1.2, 1.4, 300, 0.3),
           (1.4, 1.8, 380, 0.4), (1.6, 2.2, 456, 0.4), (1.8, 2.6, 528, 0.5), (2.0, 3.1, 600, 0.5)]


def round_filters(c, w):
    v = c * w
    n = max(8, int((v + 4) // 8) * 8)
    if n < 0.9 * v:
        n += 8
    return n


def quantiles(n=200):
    # u_i = sqrt(2) erfinv(2 (i + 0.5) / n - 1), in float64 then float32 (SPEC §C.1).
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (math.sqrt(2.0) * torch.erfinv(2 * p - 1)).float()


class PNAct(nn.Module):
    """Proxy-normalized SiLU: (silu(g*y+b) - mu~) * s~ with the proxy statistics from 200
    quantiles of N(pshift, (1+pscale)^2), recomputed (with autograd) every forward."""

    def __init__(self, c, apply_scale=True, eps=0.03):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(c))
        self.beta = nn.Parameter(torch.zeros(c))
        self.pshift = nn.Parameter(torch.zeros(c))
        self.pscale = nn.Parameter(torch.zeros(c))
        self.register_buffer("u", quantiles())
        self.apply_scale = apply_scale
        self.eps = eps

    def forward(self, y):  # y: normalized, [N, C, H, W]
        z = self.gamma[:, None] * ((1 + self.pscale[:, None]) * self.u[None, :] + self.pshift[:, None]) + self.beta[:, None]
        a = F.silu(z.float())
        mu = a.mean(1)
        out = F.silu(y * self.gamma[None, :, None, None] + self.beta[None, :, None, None]) - mu[None, :, None, None]
        if self.apply_scale:
            s = torch.rsqrt(a.var(1, unbiased=False) + self.eps)
            out = out * s[None, :, None, None]
        return out


class NormAct(nn.Module):
    def __init__(self, c, norm, role, eps=1e-3, gn_groups=4):
        super().__init__()
        act = role != "proj"
        proxy = norm in ("ln-pn", "gn-pn")
        groups = 1 if norm in ("ln", "ln-pn") else max(g for g in range(1, min(c, gn_groups) + 1) if c % g == 0)
        if norm == "bn":
            self.norm = nn.BatchNorm2d(c, eps=eps, momentum=0.01)
        elif proxy and role != "proj":
            self.norm = nn.GroupNorm(groups, c, eps=eps, affine=False)
        elif proxy:  # projection LN: scale only
            self.norm = nn.GroupNorm(groups, c, eps=eps, affine=True)
            self.norm.bias.requires_grad_(False)
        else:
            self.norm = nn.GroupNorm(groups, c, eps=eps, affine=True)
        self.pn = PNAct(c, apply_scale=(role != "head")) if (proxy and act) else None
        self.act = act

    def forward(self, x):
        y = self.norm(x)
        if self.pn is not None:
            return self.pn(y)
        return F.silu(y) if self.act else y


class SE(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, hidden, 1)
        self.conv_expand = nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.conv_expand(F.silu(self.conv_reduce(s))))


class Block(nn.Module):
    def __init__(self, cin, cout, k, stride, expand, group_size, norm, drop):
        super().__init__()
        mid = cin * expand
        groups = mid if group_size <= 1 else max(mid // group_size, 1)
        self.expand = None
        if expand != 1:
            self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), NormAct(mid, norm, "act"))
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, k, stride, k // 2, groups=groups, bias=False), NormAct(mid, norm, "act"))
        self.se = SE(mid, max(1, int(cin * 0.25)))
        self.proj = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), NormAct(cout, norm, "proj"))
        self.residual = stride == 1 and cin == cout
        self.drop = drop

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.proj(self.se(self.dw(y)))
        if self.residual:
            if self.training and self.drop > 0:
                keep = 1 - self.drop
                mask = torch.bernoulli(torch.full((x.shape[0], 1, 1, 1), keep, device=x.device, dtype=y.dtype)) / keep
                y = y * mask
            return x + y
        return y


class EffNet(nn.Module):
    def __init__(self, preset="b0-g16", norm="ln-pn", classes=1000, in_ch=3):
        super().__init__()
        g16 = preset.endswith("-g16")
        w, d, _, dropout = SCALING[int(preset[1])]
        expand6 = 4 if g16 else 6
        stem = round_filters(32, w)
        self.stem = nn.Sequential(nn.Conv2d(in_ch, stem, 3, 2, 1, bias=False), NormAct(stem, norm, "act"))
        blocks, cin = [], stem
        total = sum(math.ceil(d * r) for (_, _, _, r, _) in STAGES)
        idx = 0
        for (k, s, c, r, e) in STAGES:
            cout = round_filters(c, w)
            for j in range(math.ceil(d * r)):
                blocks.append(Block(cin, cout, k, s if j == 0 else 1, 1 if e == 1 else expand6,
                                    16 if g16 else 1, norm, 0.2 * idx / total))
                cin, idx = cout, idx + 1
        self.blocks = nn.Sequential(*blocks)
        head = round_filters(1280, w)
        self.head = nn.Sequential(nn.Conv2d(cin, head, 1, bias=False), NormAct(head, norm, "head"))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head, classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(x.mean((2, 3))))


def build(model, norm, classes):
    if model == "b0" and norm == "bn":
        import timm
        return timm.create_model("efficientnet_b0", num_classes=classes, drop_rate=0.2, drop_path_rate=0.2)
    return EffNet(model, norm, classes)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def measure(args, precision):
    dev = torch.device(args.device)
    torch.manual_seed(0)
    m = build(args.model, args.norm, args.classes).to(dev)
    cl = precision == "bf16-cl"
    if cl:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    lossf = nn.CrossEntropyLoss(label_smoothing=0.1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cl):
            loss = lossf(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.time()
    m.train()
    step()
    sync(dev)
    first = time.time() - t0
    for _ in range(args.warmup):
        step()
    sync(dev)
    t = time.time()
    for _ in range(args.steps):
        step()
    sync(dev)
    train = args.batch * args.steps / (time.time() - t)
    m.eval()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cl):
        for _ in range(args.warmup):
            m(x)
        sync(dev)
        t = time.time()
        for _ in range(args.steps):
            m(x)
        sync(dev)
    infer = args.batch * args.steps / (time.time() - t)
    mem = torch.cuda.max_memory_allocated() if dev.type == "cuda" else 0
    return {"framework": "pytorch", "precision": precision, "model": args.model, "norm": args.norm,
            "batch": args.batch, "image_size": args.image_size, "train_img_s": train, "infer_img_s": infer,
            "gpu_bytes": mem, "startup_s": first,
            "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="b0-g16")
    ap.add_argument("--norm", default="ln-pn")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="fp32,bf16-cl")
    args = ap.parse_args()
    for p in args.precision.split(","):
        print(json.dumps(measure(args, p)), flush=True)


if __name__ == "__main__":
    main()
