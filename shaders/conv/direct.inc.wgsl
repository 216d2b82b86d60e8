// Direct grouped convolution for few channels per group (depthwise and friends), one
// dispatch for every group count. Each thread computes 4 outputs along W for one
// channel, channels fastest across threads (coalesced NHWC loads and stores).
// MODE 0: forward        y[n, oy, ox, co]  = sum_{ky, kx, ci} x[n, oy*s+ky-pt, ox*s+kx-pl, g*Gi+ci]
//                                           * w[ky, kx, ci, co]           (+ bias[co])
// MODE 1: backward data  dx[n, iy, ix, ci] = sum_{ky, kx, j} dy[n, oy, ox, g*Go+j]
//                                           * w[ky, kx, ci, g*Go+j]  where oy*s+ky-pt = iy
// (pt, pl: zero rows above and columns left of the image; those below and right are
// implied by the output size.)
// Weights are [k, k, Gi, Cout]. In backward data with stride 2 a thread's 4 pixels are
// ix = px + 2 (4 b + t), all of one parity px, so they share the taps that reach them and
// the loops visit only those taps.
//!include common/grid.wgsl

override BIAS: u32 = 0u;

struct Params {
    n: u32,
    oh: u32,     // output image
    ow: u32,
    ah: u32,     // source image (forward: x; backward data: dy)
    aw: u32,
    ac: u32,     // source channels
    cout: u32,   // output channels
    gi: u32,     // convolution Cin / groups
    go: u32,     // convolution Cout / groups
    k: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    wcout: u32,  // convolution Cout
    strips0: u32, // strips of parity 0 (backward data, stride 2); = strips otherwise
    strips: u32,  // strips per output row
    total: u32,   // threads
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launchers (ops/conv) validate
// the ConvSpec and check src, w, bias, out against it; total = n*oh*strips*cout threads
// with strips = ceil(ow / 4) (forward) or strips0 + strips1 parity strips (backward data,
// stride 2). idx < total gives co < cout, oy < oh, nn < n. Forward: src at
// ((nn*ah + iy)*aw + ix)*ac + g*Gi + c with iy, ix tested against the image,
// g = co / Go < groups, c < Gi; w at ((ky*k + kx)*Gi + c)*wcout + co. Backward data: rows
// yy = (oy + pad_top - ky) / s are tested against ah, columns xx against aw; channels
// g*Go + j < Cout; w at ((ky*k + kx)*Gi + cl)*wcout + g*Go + j with ky, kx < k, cl < Gi.
// The signed divisions divide a non-negative numerator (sy >= 0 is tested first) or one
// >= -(k-1) by s in {1, 2}: no overflow. out only for ox[q] < ow. bias[co] < Cout.
// Divisors: cout, strips, oh, go, gi, s >= 1. Loops: ky, kx < k (step s), c < Gi, j < Go,
// q < 4.
@group(0) @binding(0) var<uniform> p: Params;
// src and out hold activations: f16 in the f16-storage variant (the sums stay f32).
alias act_t = f32;
@group(0) @binding(1) var<storage, read> src: array<act_t>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<act_t>;
