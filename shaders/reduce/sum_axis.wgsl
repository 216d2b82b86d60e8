// Deterministic sum over the middle axis of x viewed as [O, M, I]:
//   out[o, s, i] = scale * sum_{m in chunk s} f(o, m, i)
// with f = x (PRODUCT = 0) or x * y (PRODUCT = 1, e.g. the gradient of a channel scale).
// A workgroup of 256 threads covers TI consecutive i (coalesced) by 256/TI lanes along m,
// then a fixed-order tree reduction. Splitting M into S chunks (second pass sums the S
// partials) keeps the grid busy when O * I is small.
//!include common/grid.wgsl

// Activation storage type: f32, or f16 in the kernel's f16 variant (the shader loader
// rewrites this line, see src/gpu/precision.rs); arithmetic stays f32.
alias act_t = f32;

override TI: u32 = 32u;
override PRODUCT: u32 = 0u;

struct Params {
    o: u32,
    m: u32,
    i: u32,
    s: u32,       // chunks along M
    chunk: u32,   // rows of M per chunk
    iblocks: u32, // ceil(I / TI)
    scale: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/reduce) checks
// x (and y) = O*M*I, out = O*I elements, or out = the scratch of O*s*I partials for the
// split pass. Every workgroup with g < O*s*iblocks has o < O, sc < s, ib < iblocks =
// ceil(I / TI); x[(o*M + m)*I + i] for m < min(m0 + chunk, M), i < I; out[(o*s + sc)*I + i]
// for i < I. part[t + stride*TI] with mm < stride stays below 256 (stride*TI <= 128).
// Divisors: iblocks, s >= 1 whenever a workgroup runs (O*s*iblocks > 0), TI in 1..32.
// Loops: m += 256 / TI (>= 8) up to M, stride halves.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read> y: array<act_t>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn sum_axis(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    let g = linear_group(wid, nwg);
    let total = p.o * p.s * p.iblocks;
    // Uniform per workgroup: the whole group exits together, before any barrier.
    if (g >= total) {
        return;
    }
    let ib = g % p.iblocks;
    let sc = (g / p.iblocks) % p.s;
    let o = g / (p.iblocks * p.s);
    let lanes_m = 256u / TI;
    let ii = t % TI;
    let mm = t / TI;
    let i = ib * TI + ii;
    let m0 = sc * p.chunk;
    let m1 = min(m0 + p.chunk, p.m);
    var acc = 0.0;
    if (i < p.i) {
        for (var m = m0 + mm; m < m1; m += lanes_m) {
            let idx = (o * p.m + m) * p.i + i;
            if (PRODUCT == 1u) {
                acc += f32(x[idx]) * f32(y[idx]);
            } else {
                acc += f32(x[idx]);
            }
        }
    }
    part[t] = acc;
    workgroupBarrier();
    for (var stride = lanes_m / 2u; stride > 0u; stride /= 2u) {
        if (mm < stride) {
            part[t] += part[t + stride * TI];
        }
        workgroupBarrier();
    }
    if (mm == 0u && i < p.i) {
        out[(o * p.s + sc) * p.i + i] = part[ii] * p.scale;
    }
}
