// Normalization statistics, pass 2: merge the per-(o, chunk, channel) partial moments of
// norm/stats.wgsl into one mean and reciprocal standard deviation per statistics segment.
//
// Segment s = o * G + g covers the chunks x (C / G) partials of outer index o and channel
// group g (BatchNorm: O = 1, G = C, one segment per channel; LayerNorm G = 1; GroupNorm G;
// instance norm G = C). A workgroup handles 256 / L segments with L lanes each (L a power
// of two, about the number of partials per segment, so many short segments share a
// workgroup): each lane merges a fixed strided subset in order, then a fixed-order tree
// over the lanes (Chan's formula). Writes
//   saved[s] = mean, saved[S + s] = 1 / sqrt(var + eps)   (var biased: M2 / count)
// and, in `norm_stats_finalize_running` (BatchNorm training), also updates the running
// statistics, the variance unbiased as PyTorch keeps it (M2 / (count - 1); the biased one
// when a channel has a single value):
//   run = momentum * run + (1 - momentum) * batch.
//!include common/grid.wgsl

struct Params {
    c: u32,
    chunks: u32,
    groups: u32,
    cg: u32,        // channels per group
    segs: u32,      // S = O * G
    eps: f32,
    momentum: f32,
    lanes: u32,     // L: lanes per segment, a power of two <= 256
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/norm) checks
// saved >= 2*S and scratch >= 3*O*chunks*C (S = segments), and for the running entry
// point binds running mean / variance of C elements, used only by BatchNorm where S = C.
// Segment s < S has o = s / G < O and grp = s % G < G; part is read at
// ((o*chunks + chunk)*C + grp*cg + j)*3 + 2 with chunk < chunks, j < cg = C / G.
// lanes (L) is a power of two dividing 256: acc[t + stride] with lane < stride stays in
// the segment's L slots, t - lane >= 0. saved[s], saved[S + s], run_*[s] for s < S.
// Divisors: G, cg, L >= 1 (integer); unbiased_var's float count - 1 is selected only where
// count > 1. Loops: k += L up to chunks*cg, stride halves.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> saved: array<f32>;
@group(0) @binding(3) var<storage, read_write> run_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> run_var: array<f32>;

var<workgroup> acc: array<vec3<f32>, 256>;

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

// (count, mean, M2) of segment s (lane `lane` of L; meaningful on every lane when
// s < S); call from uniform control flow (has barriers).
fn segment_moments(s: u32, lane: u32, t: u32) -> vec3<f32> {
    var mine = vec3<f32>(0.0);
    if (s < p.segs) {
        let o = s / p.groups;
        let grp = s % p.groups;
        let terms = p.chunks * p.cg;
        for (var k = lane; k < terms; k += p.lanes) {
            let chunk = k / p.cg;
            let j = k % p.cg;
            let base = ((o * p.chunks + chunk) * p.c + grp * p.cg + j) * 3u;
            mine = merge_moments(mine, vec3<f32>(part[base], part[base + 1u], part[base + 2u]));
        }
    }
    acc[t] = mine;
    workgroupBarrier();
    for (var stride = p.lanes / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            acc[t] = merge_moments(acc[t], acc[t + stride]);
        }
        workgroupBarrier();
    }
    return acc[t - lane];
}

fn biased_var(r: vec3<f32>) -> f32 {
    return r.z / max(r.x, 1.0);
}

fn unbiased_var(r: vec3<f32>) -> f32 {
    return select(biased_var(r), r.z / (r.x - 1.0), r.x > 1.0);
}

@compute @workgroup_size(256)
fn norm_stats_finalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) t: u32) {
    let g = linear_group(wid, nwg);
    let spw = 256u / p.lanes;
    if (g * spw >= p.segs) {
        return;
    }
    let s = g * spw + t / p.lanes;
    let lane = t % p.lanes;
    let r = segment_moments(s, lane, t);
    if (lane == 0u && s < p.segs) {
        saved[s] = r.y;
        saved[p.segs + s] = 1.0 / sqrt(biased_var(r) + p.eps);
    }
}

@compute @workgroup_size(256)
fn norm_stats_finalize_running(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) t: u32) {
    let g = linear_group(wid, nwg);
    let spw = 256u / p.lanes;
    if (g * spw >= p.segs) {
        return;
    }
    let s = g * spw + t / p.lanes;
    let lane = t % p.lanes;
    let r = segment_moments(s, lane, t);
    if (lane == 0u && s < p.segs) {
        let v = biased_var(r);
        saved[s] = r.y;
        saved[p.segs + s] = 1.0 / sqrt(v + p.eps);
        run_mean[s] = p.momentum * run_mean[s] + (1.0 - p.momentum) * r.y;
        run_var[s] = p.momentum * run_var[s] + (1.0 - p.momentum) * unbiased_var(r);
    }
}
