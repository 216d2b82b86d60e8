// Fused normalization backward, pass 3: the input gradient, elementwise, recomputing the
// normalized values (training-mode statistics, so the gradient flows through them):
//   xhat = (x - mean[s]) * rstd[s],  z = gamma * xhat + beta
//   dxhat = gamma * dy * s~ * act'(z)
//   dx = rstd[s] * (dxhat - mean_s(dxhat) - xhat * mean_s(dxhat * xhat))
// or, for a frozen BatchNorm (FROZEN: saved holds the running mean and variance, constants),
//   dx = rstd[c] * dxhat,  rstd = 1 / sqrt(running_var + eps)
// with the segment means from norm/backward_finalize.wgsl (scratch[seg_off ..]).
// Tiling of norm/forward.wgsl: one channel and one segment per thread, constants in
// registers.
//!include common/grid.wgsl
//!include common/act.wgsl

override ACT: u32 = 2u;

const HAS_SCALE: u32 = 1u;
const HAS_SHIFT: u32 = 2u;
const PROXY_SCALE: u32 = 8u;
const FROZEN: u32 = 256u;

struct Params {
    o: u32,
    m: u32,
    c: u32,
    cblocks: u32,
    ti: u32,
    rblocks: u32,
    rows: u32,
    groups: u32,
    cg: u32,
    segs: u32,
    seg_off: u32,
    flags: u32,
    eps: f32,      // with FROZEN: saved holds (running mean, running var)
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/norm) checks
// x = dy = dx = O*M*C elements, saved >= 2*S, scratch >= seg_off + 2*S, and binds C-element
// gamma, beta, s~ whenever their flag is set. Indices: x, dy, dx at (o*M + m)*C + c with
// m < M, c < C; saved at s and S + s; scratch at seg_off + s and seg_off + S + s,
// s = o*G + c/cg < S. Divisors: cblocks, rblocks, ti, cg >= 1. Loops: m += 256 / ti.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> saved: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read> ps: array<f32>;
@group(0) @binding(7) var<storage, read> scratch: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn norm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) t: u32) {
    let g = linear_group(wid, nwg);
    if (g >= p.o * p.rblocks * p.cblocks) {
        return;
    }
    let cb = g % p.cblocks;
    let rb = (g / p.cblocks) % p.rblocks;
    let o = g / (p.cblocks * p.rblocks);
    let c = cb * p.ti + t % p.ti;
    if (c >= p.c) {
        return;
    }
    let s = o * p.groups + c / p.cg;
    let mu = saved[s];
    var r = saved[p.segs + s];
    let frozen = (p.flags & FROZEN) != 0u;
    if (frozen) {
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
    var m1 = scratch[p.seg_off + s];
    var m2 = scratch[p.seg_off + p.segs + s];
    if (frozen) {
        m1 = 0.0;
        m2 = 0.0;
    }
    // dx = gr * dy * act'(z) - (r * m1 + xhat * r * m2), gr = rstd * gamma * s~.
    let gr = r * gm * sc;
    let rm1 = r * m1;
    let rm2 = r * m2;
    let lanes = 256u / p.ti;
    let end = min((rb + 1u) * p.rows, p.m);
    for (var m = rb * p.rows + t / p.ti; m < end; m += lanes) {
        let i = (o * p.m + m) * p.c + c;
        let xh = (x[i] - mu) * r;
        dx[i] = gr * dy[i] * act_df(ACT, gm * xh + bt) - rm1 - xh * rm2;
    }
}
