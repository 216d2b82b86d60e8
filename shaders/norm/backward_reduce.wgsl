// Fused normalization backward, pass 1: per-channel partial sums over row chunks, with the
// normalized values recomputed from x and the saved statistics (nothing else is stored):
//   xhat = (x - mean[s]) * rstd[s],  z = gamma * xhat + beta,  a = act(z)
//   dz   = dy * s~ * act'(z)          (s~ = 1 without the Proxy Norm scale)
//   part[o, chunk, c] = (sum dz, sum dz * xhat, sum dy, sum dy * (a - mu~))
// Layout of norm/stats.wgsl: workgroup (o, chunk, channel block), ti channels by 256/ti
// lanes along rows, fixed-order tree over lanes. The last two sums are taken only with
// Proxy Norm (they give the gradients of mu~ and s~).
//!include common/grid.wgsl
//!include common/act.wgsl

override ACT: u32 = 2u;

const HAS_SCALE: u32 = 1u;
const HAS_SHIFT: u32 = 2u;
const PROXY_MEAN: u32 = 4u;
const PROXY_SCALE: u32 = 8u;
const FROZEN: u32 = 256u;

struct Params {
    o: u32,
    m: u32,
    c: u32,
    chunks: u32,
    chunk_rows: u32,
    cblocks: u32,
    ti: u32,        // channels per workgroup: a power of two <= 32
    groups: u32,
    cg: u32,
    segs: u32,
    flags: u32,
    eps: f32,       // with FROZEN: saved holds (running mean, running var)
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/norm) checks
// x = dy = O*M*C elements, saved >= 2*S, scratch >= 4*O*chunks*C + 2*S, and binds
// C-element gamma, beta, mu~, s~ whenever their flag is set. Indices as in
// norm/stats.wgsl: x, dy at (o*M + m)*C + c for c < C, m < M; saved at s and S + s,
// s = o*G + c/cg < S; part at ((o*chunks + chunk)*C + c)*4 + 3. acc[t + stride*ti] < 256.
// Divisors: cblocks, chunks, ti, cg >= 1. Loops: m += 256 / ti, stride halves.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> saved: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read> pmu: array<f32>;
@group(0) @binding(7) var<storage, read> ps: array<f32>;
@group(0) @binding(8) var<storage, read_write> part: array<f32>;

var<workgroup> acc: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn norm_backward_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) t: u32) {
    let g = linear_group(wid, nwg);
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
    var sum = vec4<f32>(0.0);
    if (c < p.c) {
        let s = o * p.groups + c / p.cg;
        let mu = saved[s];
        var r = saved[p.segs + s];
        if ((p.flags & FROZEN) != 0u) {
            r = 1.0 / sqrt(r + p.eps);
        }
        var gm = 1.0;
        if ((p.flags & HAS_SCALE) != 0u) {
            gm = gamma[c];
        }
        var bt = 0.0;
        if ((p.flags & HAS_SHIFT) != 0u) {
            bt = beta[c];
        }
        var sc = 1.0;
        if ((p.flags & PROXY_SCALE) != 0u) {
            sc = ps[c];
        }
        let proxy = (p.flags & PROXY_MEAN) != 0u;
        var pm = 0.0;
        if (proxy) {
            pm = pmu[c];
        }
        for (var m = m0 + mm; m < m1; m += lanes) {
            let idx = (o * p.m + m) * p.c + c;
            let xh = (x[idx] - mu) * r;
            let z = gm * xh + bt;
            let d = dy[idx];
            let dz = d * sc * act_df(ACT, z);
            sum.x += dz;
            sum.y += dz * xh;
            if (proxy) {
                sum.z += d;
                sum.w += d * (act_f(ACT, z) - pm);
            }
        }
    }
    acc[t] = sum;
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
        if (mm < stride) {
            acc[t] += acc[t + stride * p.ti];
        }
        workgroupBarrier();
    }
    if (mm == 0u && c < p.c) {
        let r = acc[ii];
        let base = ((o * p.chunks + chunk) * p.c + c) * 4u;
        part[base] = r.x;
        part[base + 1u] = r.y;
        part[base + 2u] = r.z;
        part[base + 3u] = r.w;
    }
}
