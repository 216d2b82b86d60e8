// Normalization statistics, pass 1: per-channel partial moments.
//
// x is viewed as [O, M, C] (BatchNorm: O = 1, M = N*H*W; Layer/Group norm: O = N,
// M = H*W). Workgroup (o, chunk, channel block) covers ti consecutive channels (coalesced)
// by 256/ti lanes along rows m0..m1 of its chunk, and writes one (count, mean, M2) triple
// per (o, chunk, channel) to `part` ([O, chunks, C, 3]). Each lane accumulates sums shifted
// by its first value (no cancellation when |mean| >> std), then lanes are merged with
// Chan's pairwise formula in a fixed-order tree: deterministic, no atomics.
//!include common/grid.wgsl


struct Params {
    o: u32,
    m: u32,
    c: u32,
    chunks: u32,
    chunk_rows: u32,
    cblocks: u32,   // ceil(C / ti)
    ti: u32,        // channels per workgroup: a power of two <= 32
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/norm, NormSpec
// validated: every size >= 1, C % G == 0) checks x = O*M*C elements and scratch >=
// NormSpec::scratch_len() >= 3*O*chunks*C. A workgroup g < O*chunks*cblocks has o < O,
// chunk < chunks, c = cb*ti + ii < cblocks*ti; x[(o*M + m)*C + c] only for c < C and
// m < min(m0 + chunk_rows, M); part[((o*chunks + chunk)*C + c)*3 + 2] for c < C.
// acc[t + stride*ti] with mm < stride <= lanes/2 stays below 256. Divisors: cblocks,
// chunks >= 1, ti a power of two <= 32. Loops: m += 256 / ti up to M, stride halves.
// Activation storage type: f32, or f16 in the kernel's f16 variant (the shader loader
// rewrites this line, see src/gpu/precision.rs); statistics, parameters and every sum
// stay f32.
alias act_t = f32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read_write> part: array<f32>;

// (count, mean, M2) per lane.
var<workgroup> acc: array<vec3<f32>, 256>;

// Chan et al.: merge two (count, mean, M2) triples.
fn merge_moments(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    if (b.x == 0.0) {
        return a;
    }
    if (a.x == 0.0) {
        return b;
    }
    let n = a.x + b.x;
    let d = b.y - a.y;
    let f = b.x / n;
    return vec3<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f);
}

@compute @workgroup_size(256)
fn norm_stats_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) t: u32) {
    let g = linear_group(wid, nwg);
    // Uniform per workgroup: the whole group exits together, before any barrier.
    if (g >= p.o * p.chunks * p.cblocks) {
        return;
    }
    let cb = g % p.cblocks;
    let chunk = (g / p.cblocks) % p.chunks;
    let o = g / (p.cblocks * p.chunks);
    let lanes = 256u / p.ti;
    let ii = t % p.ti;
    let mm = t / p.ti;
    let c = cb * p.ti + ii;
    let m0 = chunk * p.chunk_rows;
    let m1 = min(m0 + p.chunk_rows, p.m);
    var cnt = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var k = 0.0;
    if (c < p.c && m0 + mm < m1) {
        k = f32(x[(o * p.m + m0 + mm) * p.c + c]);
        for (var m = m0 + mm; m < m1; m += lanes) {
            let d = f32(x[(o * p.m + m) * p.c + c]) - k;
            s1 += d;
            s2 += d * d;
            cnt += 1.0;
        }
    }
    var mine = vec3<f32>(0.0);
    if (cnt > 0.0) {
        mine = vec3<f32>(cnt, k + s1 / cnt, max(s2 - s1 * s1 / cnt, 0.0));
    }
    acc[t] = mine;
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
        if (mm < stride) {
            acc[t] = merge_moments(acc[t], acc[t + stride * p.ti]);
        }
        workgroupBarrier();
    }
    if (mm == 0u && c < p.c) {
        let r = acc[ii];
        let base = ((o * p.chunks + chunk) * p.c + c) * 3u;
        part[base] = r.x;
        part[base + 1u] = r.y;
        part[base + 2u] = r.z;
    }
}
