// Direct grouped convolution for few channels per group (depthwise and friends), one
// dispatch for every group count. Each thread computes 4 outputs along W for one
// channel, channels fastest across threads (coalesced NHWC loads and stores).
// MODE 0: forward        y[n, oy, ox, co]  = sum_{ky, kx, ci} x[n, oy*s+ky-p, ox*s+kx-p, g*Gi+ci]
//                                           * w[ky, kx, ci, co]           (+ bias[co])
// MODE 1: backward data  dx[n, iy, ix, ci] = sum_{ky, kx, j} dy[n, oy, ox, g*Go+j]
//                                           * w[ky, kx, ci, g*Go+j]  where oy*s+ky-p = iy
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
    pad: u32,
    wcout: u32,  // convolution Cout
    strips0: u32, // strips of parity 0 (backward data, stride 2); = strips otherwise
    strips: u32,  // strips per output row
    total: u32,   // threads
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
