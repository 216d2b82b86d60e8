// Count the non-finite values (NaN, +inf, -inf) of x[0..n) and add the count to
// count[slot]: a workgroup counts its 256 elements in workgroup memory, then one atomic
// add per workgroup that found any. Integer atomics, so the result does not depend on
// scheduling. The test is on the bits (exponent all ones), which no fast-math
// assumption about NaN can fold away. The caller zeroes `count` first.
//!include common/grid.wgsl

struct Params {
    n: u32,
    slot: u32,
}

// Bounds (wgpu's runtime checks are off, see src/gpu/kernel.rs): x[i] only for i < p.n,
// and the launcher (ops/finite) binds x of exactly p.n elements and checks
// p.slot < len(count). No loops, no integer division.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> count: array<atomic<u32>>;

var<workgroup> local_count: atomic<u32>;

@compute @workgroup_size(256)
fn count_nonfinite(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) {
        atomicStore(&local_count, 0u);
    }
    workgroupBarrier();
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.n) {
        if ((bitcast<u32>(x[i]) & 0x7f800000u) == 0x7f800000u) {
            atomicAdd(&local_count, 1u);
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        let c = atomicLoad(&local_count);
        if (c > 0u) {
            atomicAdd(&count[p.slot], c);
        }
    }
}
