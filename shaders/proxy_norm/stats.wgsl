// Proxy Norm statistics (SPEC C.1-C.2), one thread per channel c, over 200 fixed Gaussian
// quantiles u_i = sqrt(2) * erfinv(2 (i + 0.5) / 200 - 1) (computed on the host in f64 and
// rounded to f32; a test checks this table against the host):
//   v_i  = (1 + pscale[c]) * u_i + pshift[c]       proxy samples ~ N(pshift, (1+pscale)^2)
//   z_i  = gamma[c] * v_i + beta[c],  a_i = act(z_i)
//   mu~  = mean_i a_i,  var = mean_i (a_i - mu~)^2 (biased),  s~ = (var + eps)^(-1/2)
// `proxy_stats` writes mu~ and s~ (out0, out1). `proxy_stats_backward` recomputes them and
// chains dmu~, ds~ exactly:  da_i = (dmu~ - ds~ * s~^3 * (a_i - mu~)) / 200,
// dz_i = da_i * act'(z_i), then with PART = 0 it adds sum dz_i * v_i to out0 (dgamma) and
// sum dz_i to out1 (dbeta); with PART = 1 it writes gamma * sum dz_i to out0 (dpshift) and
// gamma * sum dz_i * u_i to out1 (dpscale). Bindings 5 and 6 (dmu~, ds~) are only read by
// the backward entry point. Sums run in index order: deterministic.
//!include common/grid.wgsl
//!include common/act.wgsl

override ACT: u32 = 2u;

const POINTS: u32 = 200u;
const HAS_GAMMA: u32 = 1u;
const HAS_BETA: u32 = 2u;
const HAS_DS: u32 = 4u;
const WRITE0: u32 = 8u;
const WRITE1: u32 = 16u;
const PART1: u32 = 32u;

var<private> QUANTILES: array<f32, 200> = array<f32, 200>(
    -2.80703378, -2.43237901, -2.24140263, -2.10835838, -2.00465441, -1.91887617, -1.84525812, -1.78046429,
    -1.72238386, -1.66959262, -1.62108231, -1.57611203, -1.53412056, -1.4946723, -1.45742178, -1.42209041,
    -1.38845015, -1.3563118, -1.32551622, -1.29592884, -1.26743436, -1.23993349, -1.21333957, -1.18757725,
    -1.16257989, -1.13828862, -1.11465096, -1.09162033, -1.06915462, -1.04721594, -1.02577007, -1.00478578,
    -0.984234989, -0.964091599, -0.944332063, -0.924934447, -0.905878842, -0.887146533, -0.868720531, -0.850584865,
    -0.83272469, -0.815126359, -0.797776818, -0.780664265, -0.763777256, -0.7471053, -0.730638504, -0.714367449,
    -0.698283374, -0.682377934, -0.666643322, -0.651072025, -0.635657012, -0.620391607, -0.605269432, -0.590284407,
    -0.575430751, -0.560703039, -0.546095908, -0.531604409, -0.517223716, -0.502949178, -0.488776416, -0.474701136,
    -0.460719317, -0.446826965, -0.433020324, -0.419295758, -0.405649722, -0.392078787, -0.378579706, -0.36514926,
    -0.351784348, -0.338481992, -0.325239271, -0.312053323, -0.298921436, -0.285840869, -0.272809058, -0.259823412,
    -0.24688141, -0.233980656, -0.221118718, -0.208293259, -0.195501968, -0.182742581, -0.170012891, -0.15731068,
    -0.144633815, -0.131980136, -0.119347565, -0.106734008, -0.0941374153, -0.081555739, -0.0689869598, -0.0564290695,
    -0.0438800715, -0.0313379802, -0.0188008193, -0.00626661163, 0.00626661163, 0.0188008193, 0.0313379802, 0.0438800715,
    0.0564290695, 0.0689869598, 0.081555739, 0.0941374153, 0.106734008, 0.119347565, 0.131980136, 0.144633815,
    0.15731068, 0.170012891, 0.182742581, 0.195501968, 0.208293259, 0.221118718, 0.233980656, 0.24688141,
    0.259823412, 0.272809058, 0.285840869, 0.298921436, 0.312053323, 0.325239271, 0.338481992, 0.351784348,
    0.36514926, 0.378579706, 0.392078787, 0.405649722, 0.419295758, 0.433020324, 0.446826965, 0.460719317,
    0.474701136, 0.488776416, 0.502949178, 0.517223716, 0.531604409, 0.546095908, 0.560703039, 0.575430751,
    0.590284407, 0.605269432, 0.620391607, 0.635657012, 0.651072025, 0.666643322, 0.682377934, 0.698283374,
    0.714367449, 0.730638504, 0.7471053, 0.763777256, 0.780664265, 0.797776818, 0.815126359, 0.83272469,
    0.850584865, 0.868720531, 0.887146533, 0.905878842, 0.924934447, 0.944332063, 0.964091599, 0.984234989,
    1.00478578, 1.02577007, 1.04721594, 1.06915462, 1.09162033, 1.11465096, 1.13828862, 1.16257989,
    1.18757725, 1.21333957, 1.23993349, 1.26743436, 1.29592884, 1.32551622, 1.3563118, 1.38845015,
    1.42209041, 1.45742178, 1.4946723, 1.53412056, 1.57611203, 1.62108231, 1.66959262, 1.72238386,
    1.78046429, 1.84525812, 1.91887617, 2.00465441, 2.10835838, 2.24140263, 2.43237901, 2.80703378,);

struct Params {
    c: u32,
    flags: u32,
    eps: f32,
    // Always 200 (POINTS); a uniform trip count keeps compilers from unrolling the loops
    // 200 times (which costs seconds of pipeline compilation on some drivers).
    points: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launchers (ops/proxy_norm)
// check that every bound tensor (gamma, beta, pshift, pscale, dmu, ds, out0, out1) holds c
// elements; each thread touches index c < p.c only, and gamma / beta / ds only when the
// flags say the launcher bound them. QUANTILES[i] for i < min(p.points, POINTS) <= 200, its
// length. Divisions: floats only. Loops: i < min(p.points, 200).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read> pshift: array<f32>;
@group(0) @binding(4) var<storage, read> pscale: array<f32>;
@group(0) @binding(5) var<storage, read> dmu: array<f32>;
@group(0) @binding(6) var<storage, read> ds: array<f32>;
@group(0) @binding(7) var<storage, read_write> out0: array<f32>;
@group(0) @binding(8) var<storage, read_write> out1: array<f32>;

struct Channel {
    g: f32,
    b: f32,
    sh: f32,
    sc: f32,
}

fn channel(c: u32) -> Channel {
    var ch = Channel(1.0, 0.0, pshift[c], 1.0 + pscale[c]);
    if ((p.flags & HAS_GAMMA) != 0u) {
        ch.g = gamma[c];
    }
    if ((p.flags & HAS_BETA) != 0u) {
        ch.b = beta[c];
    }
    return ch;
}

fn proxy_z(ch: Channel, i: u32) -> f32 {
    return ch.g * (ch.sc * QUANTILES[i] + ch.sh) + ch.b;
}

// (mu~, s~) of a channel: two passes over the points (mean, then centred variance).
fn moments(ch: Channel) -> vec2<f32> {
    let n = min(p.points, POINTS);
    var sum = 0.0;
    for (var i = 0u; i < n; i++) {
        sum += act_f(ACT, proxy_z(ch, i));
    }
    let mu = sum / f32(POINTS);
    var sq = 0.0;
    for (var i = 0u; i < n; i++) {
        let d = act_f(ACT, proxy_z(ch, i)) - mu;
        sq += d * d;
    }
    return vec2<f32>(mu, 1.0 / sqrt(sq / f32(POINTS) + p.eps));
}

@compute @workgroup_size(64)
fn proxy_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let c = linear_group(wid, nwg) * 64u + lid;
    if (c >= p.c) {
        return;
    }
    let m = moments(channel(c));
    out0[c] = m.x;
    out1[c] = m.y;
}

@compute @workgroup_size(64)
fn proxy_stats_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let c = linear_group(wid, nwg) * 64u + lid;
    if (c >= p.c) {
        return;
    }
    let ch = channel(c);
    let m = moments(ch);
    let gmu = dmu[c];
    var gvar = 0.0;
    if ((p.flags & HAS_DS) != 0u) {
        gvar = ds[c] * m.y * m.y * m.y;
    }
    var acc0 = 0.0;
    var acc1 = 0.0;
    let n = min(p.points, POINTS);
    for (var i = 0u; i < n; i++) {
        let z = proxy_z(ch, i);
        let dz = (gmu - gvar * (act_f(ACT, z) - m.x)) / f32(POINTS) * act_df(ACT, z);
        if ((p.flags & PART1) != 0u) {
            acc0 += dz;
            acc1 += dz * QUANTILES[i];
        } else {
            acc0 += dz * (ch.sc * QUANTILES[i] + ch.sh);
            acc1 += dz;
        }
    }
    if ((p.flags & PART1) != 0u) {
        if ((p.flags & WRITE0) != 0u) {
            out0[c] = ch.g * acc0;
        }
        if ((p.flags & WRITE1) != 0u) {
            out1[c] = ch.g * acc1;
        }
    } else {
        if ((p.flags & WRITE0) != 0u) {
            out0[c] += acc0;
        }
        if ((p.flags & WRITE1) != 0u) {
            out1[c] += acc1;
        }
    }
}
