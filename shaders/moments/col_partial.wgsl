// Moments of a tensor viewed as [M, C] (rows = batch * positions), pass 1: per-(chunk,
// channel) partial sums. A workgroup covers ti consecutive channels (coalesced) by
// 256 / ti lanes along the rows of its chunk, then a fixed-order tree (deterministic).
//   MODE 0: part[chunk, c]        = sum t                      (for the channel means)
//   MODE 1: part[chunk, c, 0..4]  = sum |t|, sum t^2, sum d^2, sum d^4   with d = t - m_c
//           (m_c = mean[c] when `centered`, else 0)
//!include common/grid.wgsl

override MODE: u32 = 1u;

struct Params {
    m: u32,
    c: u32,
    chunks: u32,
    chunk_rows: u32,
    cblocks: u32,
    ti: u32,
    centered: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (moments/kernels.rs)
// checks src = m*c elements, mean >= c and part >= 4*chunks*c (MomentPlan::scratch_len).
// g < chunks*cblocks gives chunk < chunks and c' = cb*ti + ii; src at m*c + c' only for
// c' < c, m < min(m0 + chunk_rows, m); part at chunk*c + c' (MODE 0) or
// (chunk*c + c')*4 + 3 (MODE 1). acc[t + stride*ti] < 256. Divisors: cblocks, ti >= 1
// whenever a workgroup runs. Loops: m += 256 / ti, stride halves.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

var<workgroup> acc: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn col_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
    let g = linear_group(wid, nwg);
    // Uniform per workgroup: the whole group exits together, before any barrier.
    if (g >= p.chunks * p.cblocks) {
        return;
    }
    let cb = g % p.cblocks;
    let chunk = g / p.cblocks;
    let lanes = 256u / p.ti;
    let ii = t % p.ti;
    let mm = t / p.ti;
    let c = cb * p.ti + ii;
    let m0 = chunk * p.chunk_rows;
    let m1 = min(m0 + p.chunk_rows, p.m);
    var s = vec4<f32>(0.0);
    if (c < p.c) {
        var mu = 0.0;
        if (MODE == 1u && p.centered == 1u) {
            mu = mean[c];
        }
        for (var m = m0 + mm; m < m1; m += lanes) {
            let v = src[m * p.c + c];
            if (MODE == 0u) {
                s.x += v;
            } else {
                let d = v - mu;
                let d2 = d * d;
                s += vec4<f32>(abs(v), v * v, d2, d2 * d2);
            }
        }
    }
    acc[t] = s;
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
        if (mm < stride) {
            acc[t] = acc[t] + acc[t + stride * p.ti];
        }
        workgroupBarrier();
    }
    if (mm == 0u && c < p.c) {
        let r = acc[ii];
        if (MODE == 0u) {
            part[chunk * p.c + c] = r.x;
        } else {
            let base = (chunk * p.c + c) * 4u;
            part[base] = r.x;
            part[base + 1u] = r.y;
            part[base + 2u] = r.z;
            part[base + 3u] = r.w;
        }
    }
}
