// Small elementwise helpers of the moments analysis:
//   center: out[i] = x[i] - y[i % c]        (per-channel centering before the covariance)
//   axpby:  out[i] = a * x[i] + b * y[i]    (finite-difference perturbations)
//!include common/grid.wgsl

struct Params {
    total: u32,
    c: u32,
    a: f32,
    b: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launchers (moments/kernels.rs)
// check x, out (and axpby's y) = total elements; center checks c >= 1 and mean >= c
// elements and reads y[i % c]; axpby passes c = 1 and reads y[i]. No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn center(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.total) {
        out[i] = x[i] - y[i % p.c];
    }
}

@compute @workgroup_size(256)
fn axpby(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i < p.total) {
        out[i] = p.a * x[i] + p.b * y[i];
    }
}
