// Peak-bandwidth probe for `effnet bench peak`: dst = src over p.n vec4s, each thread
// copying p.per vec4s spaced one grid apart (coalesced at every step).
//!include common/grid.wgsl

struct Params {
    n: u32,      // vec4 elements
    per: u32,    // vec4s per thread
    stride: u32, // threads in the grid (256 * workgroups)
}

// Bounds (runtime checks off, see src/gpu/kernel.rs): the launcher (src/bench/peak.rs)
// binds src and dst of at least p.n vec4s; every access is at i + k * p.stride < p.n
// (tested). No integer division. Loop: k < p.per.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn peak_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    for (var k = 0u; k < p.per; k++) {
        let j = i + k * p.stride;
        if (j < p.n) {
            dst[j] = src[j];
        }
    }
}
