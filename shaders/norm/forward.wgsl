// Fused normalization forward, elementwise pass over NHWC x (viewed as [O, M, C]):
//   xhat = (x - mean[s]) * rstd[s]          s = o * G + c / (C / G)
//   z    = gamma[c] * xhat + beta[c]        (gamma = 1 / beta = 0 when absent)
//   a    = act(z)
//   y    = (a - mu~[c]) * s~[c]             (Proxy Norm; s~ dropped when not applied)
// Statistics come from norm/stats_finalize.wgsl (saved: means at 0.., rstd at S..), or for
// BatchNorm evaluation from the running mean and running (biased) variance, in which case
// rstd = 1 / sqrt(var + eps) is formed here.
// Workgroup (o, row block, channel block): ti consecutive channels (coalesced) by 256/ti
// lanes along the block's rows, so each thread has one channel and one segment: every
// per-channel and per-segment value is loaded once into registers, and no per-element
// integer division is needed.
//!include common/grid.wgsl
//!include common/act.wgsl

override ACT: u32 = 2u;

const HAS_SCALE: u32 = 1u;
const HAS_SHIFT: u32 = 2u;
const PROXY_MEAN: u32 = 4u;
const PROXY_SCALE: u32 = 8u;
const VAR_INPUT: u32 = 16u;

struct Params {
    o: u32,
    m: u32,
    c: u32,
    cblocks: u32,  // ceil(C / ti)
    ti: u32,       // channels per workgroup: a power of two <= 32
    rblocks: u32,  // ceil(M / rows)
    rows: u32,     // rows per workgroup
    groups: u32,
    cg: u32,       // C / G
    rstd_off: u32, // where rstd (or the variance) starts in `rstd`
    flags: u32,
    eps: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/norm) checks
// x = y = O*M*C elements; with training statistics mean = rstd = saved (>= 2*S, read at s
// and rstd_off + s with rstd_off = S), in BatchNorm evaluation the running mean and
// variance (C elements, S = C, rstd_off = 0). s = o*G + c/cg < O*G = S. gamma, beta, mu~,
// s~ are C-element tensors whenever their flag is set (NormSpec-driven `need` checks);
// otherwise a placeholder is bound and never read. x[i], y[i] with i = (o*M + m)*C + c,
// m < M, c < C. Divisors: cblocks, rblocks, ti, cg >= 1. Loops: m += 256 / ti.
// Activation storage type: f32, or f16 in the kernel's f16 variant (the shader loader
// rewrites this line, see src/gpu/precision.rs); statistics, parameters and every sum
// stay f32.
alias act_t = f32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read> pmu: array<f32>;
@group(0) @binding(7) var<storage, read> ps: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<act_t>;

@compute @workgroup_size(256)
fn norm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
    var r = rstd[p.rstd_off + s];
    if ((p.flags & VAR_INPUT) != 0u) {
        r = 1.0 / sqrt(r + p.eps);
    }
    // z = (x - mean) * k + beta with k = gamma * rstd (subtracting the mean first keeps
    // full precision when |mean| >> std).
    var gm = 1.0;
    if ((p.flags & HAS_SCALE) != 0u) {
        gm = gamma[c];
    }
    var bt = 0.0;
    if ((p.flags & HAS_SHIFT) != 0u) {
        bt = beta[c];
    }
    let k = gm * r;
    let mn = mean[s];
    var mu = 0.0;
    if ((p.flags & PROXY_MEAN) != 0u) {
        mu = pmu[c];
    }
    var sc = 1.0;
    if ((p.flags & PROXY_SCALE) != 0u) {
        sc = ps[c];
    }
    let lanes = 256u / p.ti;
    let m1 = min((rb + 1u) * p.rows, p.m);
    for (var m = rb * p.rows + t / p.ti; m < m1; m += lanes) {
        let i = (o * p.m + m) * p.c + c;
        y[i] = act_t((act_f(ACT, (f32(x[i]) - mn) * k + bt) - mu) * sc);
    }
}
