// Peak f32 FMA-rate probe for `effnet bench peak`: each thread runs 8 independent chains
// a_k <- fma(a_k, m, c) (two vec4s) for p.iters steps (2 FLOPs each) and writes their sum,
// so nothing is dead code. m < 1 keeps every chain bounded: a_k -> c / (1 - m).
//!include common/grid.wgsl

struct Params {
    n: u32,     // threads (outputs)
    iters: u32, // steps per chain
    m: f32,
    c: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): out[i] only for i < p.n, and the
// launcher (src/bench/peak.rs) binds out of p.n elements. No integer division but by the
// constant 64. Loop: s < p.iters.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn peak_fma(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    // Two vec4 accumulators: 8 independent chains held in registers.
    let x0 = f32(i % 64u) * 0.015625;
    var a0 = vec4<f32>(x0) + vec4<f32>(0.0, 0.125, 0.25, 0.375);
    var a1 = vec4<f32>(x0) + vec4<f32>(0.5, 0.625, 0.75, 0.875);
    let m = vec4<f32>(p.m);
    let c = vec4<f32>(p.c);
    for (var s = 0u; s < p.iters; s++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
    }
    let t = a0 + a1;
    let sum = t.x + t.y + t.z + t.w;
    out[i] = sum;
}
