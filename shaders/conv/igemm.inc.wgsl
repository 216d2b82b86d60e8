// Grouped convolution as an implicit GEMM, one dispatch for every group count.
// MODE 0: forward        y[n, oy, ox, co]  = sum_{ky, kx, ci} x[n, oy*s+ky-pt, ox*s+kx-pl, g*Gi+ci]
//                                           * w[ky, kx, ci, co]           (+ bias[co])
// MODE 1: backward data  dx[n, iy, ix, ci] = sum_{ky, kx, j} dy[n, oy, ox, g*Go+j]
//                                           * w[ky, kx, ci, g*Go+j]  where oy*s+ky-pt = iy
// (pt, pl: zero rows above and columns left of the image; those below and right are
// implied by the output size.)
// Weights are [k, k, Gi, Cout] (Gi = Cin / groups, Go = Cout / groups, g = co / Go).
//
// Per group it is a GEMM of output pixels (M) by the group's output channels (columns)
// over K = taps x (source channels per group), with the source gathered on the fly
// (zero padding). A 256-thread workgroup computes a 64-pixel x 64-column tile with 4 x 4
// register micro-tiles. When a group has fewer than 64 output channels the tile packs
// `gpt` whole groups side by side (block-diagonal weights): each K step stages BK source
// channels of each of those groups (gpt * BK <= 32 slots) so a thread still reads 4
// source and 4 weight values per 16 multiply-adds. With 64 or more per group, a group
// spans several column tiles (gpt = 1).
//
// Backward data with stride 2 splits the input pixels into the four (iy % 2, ix % 2)
// classes; a tile holds pixels of one class, which share the taps that reach them, so
// the K loop visits only taps that contribute (no 75% of zero products).
//!include common/grid.wgsl

override BK: u32 = 8u;   // K values per group per step
override UNI: u32 = 1u;  // 1: a thread's 4 columns always lie in one group
override BIAS: u32 = 0u;

struct Params {
    n: u32,
    oh: u32,     // output image (forward: Ho, Wo; backward data: H, W)
    ow: u32,
    ah: u32,     // source image (forward: x; backward data: dy)
    aw: u32,
    ac: u32,     // source channels
    ga: u32,     // source channels per group (forward Gi, backward data Go)
    gc: u32,     // output channels per group (forward Go, backward data Gi)
    cout: u32,   // output channels
    groups: u32,
    k: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    wcout: u32,  // convolution Cout (weight row length)
    wgi: u32,    // convolution Gi
    wgo: u32,    // convolution Go
    gpt: u32,    // groups per column tile
    ntpg: u32,   // column tiles per group (0 when groups are packed)
    ntiles: u32, // column tiles
    tiles: u32,  // all tiles
    cls0: u32,   // first row tile of each stride class; cls[classes] = row tiles
    cls1: u32,
    cls2: u32,
    cls3: u32,
    cls4: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launchers (ops/conv) validate
// the ConvSpec (every size >= 1, odd k, stride 1 or 2, groups dividing Cin and Cout, every
// tensor under 2^31 elements) and check src, w, bias, out against it. Column tiles: with
// ntpg > 0, g0 = nt / ntpg < groups and j0 = (nt % ntpg)*64 < gc; otherwise g0 = nt*gpt <
// groups and ngr = min(gpt, groups - g0) >= 1 whole groups, ngr*gc <= 64; either way
// cbase + col < (g0 + ngr)*gc <= groups*gc for col < ncols. Row tiles: forward has one
// class (sc = 1, ch = oh, cw = ow); backward data picks the last stride class whose first
// row tile <= mt, and since mt < cls[classes] (= all row tiles) that class owns row tile
// mt, so count = n*ch*cw > 0 and ch, cw >= 1 wherever they divide (only for ml < count).
// src[(abase + iy*aw + ix)*ac + ach + c]: nn < n, iy, ix tested against the image,
// ach + c = (g0 + lg)*ga + c < groups*ga = ac (lg < ngr, c < ga). w (forward):
// r*wcout + cbase + col with r < kg = k*k*Gi. w (backward data): ky = ky0 + s*(tap / ntx)
// < k and kx < k by the definition of nty, ntx; ci < Gi, g < groups, jo < Go. A stride
// class no tap reaches (ntx or nty = 0, e.g. 1x1 stride 2) has kg = 0: its K loop never
// runs, so tap / ntx is never evaluated. bias[cbase + col] (forward only) < Cout.
// out[((nn*oh + oy)*ow + ox)*cout + cbase + col] with oy = py + sc*yy < oh (yy < ch) and
// ox < ow. Workgroup memory: As[slot*17 + m/4] with slot < gpt*BK <= 32, m < 64: <= 542 <
// 544; Bs[k2*16 + col/4] with k2 < BK <= 16, col < 64: <= 255. Private arrays: abase,
// by, bx [8] for i < 8; acc, lgj [4] for i, j < 4. Divisors: ntiles, gpt, ga, gc, sc >= 1,
// BK in 2..16, ntpg only when > 0. Loops: fixed trip counts, or kb += BK up to kg,
// k2 += 4 up to BK, c < sc*sc.
@group(0) @binding(0) var<uniform> p: Params;
// src and out hold activations: f16 in the f16-storage variant (the sums stay f32).
alias act_t = f32;
@group(0) @binding(1) var<storage, read> src: array<act_t>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<act_t>;

// As[slot][pixel / 4] (slot = group-in-tile * BK + kk) with rows of 17 vec4 (one of
// padding, so the staging stores of a warp hit 32 different banks), Bs[kk][column / 4].
var<workgroup> As: array<vec4<f32>, 544>;
var<workgroup> Bs: array<vec4<f32>, 256>;

fn cls_start(i: u32) -> u32 {
    switch i {
        case 0u: { return p.cls0; }
        case 1u: { return p.cls1; }
        case 2u: { return p.cls2; }
        case 3u: { return p.cls3; }
        default: { return p.cls4; }
    }
}
