// Perturbation step of a normalization (SPEC §D.1): the statistics are treated as
// constants, so dz = dy * rstd[segment] (* gamma[c]) without centering. `saved` is the
// normalization's saved statistics ([mean; S] then [rstd; S], read at offset `off`).
// Segments: BatchNorm (groups == 0) one per channel; Layer/Group norm one per
// (sample, group) over hw positions and c / groups channels.
//!include common/grid.wgsl

struct Params {
    total: u32,
    hw: u32,
    c: u32,
    groups: u32, // 0: BatchNorm
    off: u32,    // offset of rstd in `saved`
    gamma: u32,  // 1: multiply by gamma[c]
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (moments/kernels.rs)
// refuses c = 0 or hw = 0, checks dy = dz = total (a multiple of hw*c), c % groups == 0,
// saved >= 2*S (S = c for BatchNorm, n*groups otherwise) and gamma = c. seg < S:
// c' < c, or n = i / (hw*c) < N and c' / (c / groups) < groups. saved at off + seg with
// off = S. Divisors: c, hw*c, c / groups >= 1. No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> saved: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> dz: array<f32>;

@compute @workgroup_size(256)
fn seg_scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.total) {
        return;
    }
    let c = i % p.c;
    var seg = c;
    if (p.groups > 0u) {
        let n = i / (p.hw * p.c);
        seg = n * p.groups + c / (p.c / p.groups);
    }
    var s = saved[p.off + seg];
    if (p.gamma == 1u) {
        s *= gamma[c];
    }
    dz[i] = dy[i] * s;
}
