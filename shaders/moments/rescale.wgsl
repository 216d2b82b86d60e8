// Rescale the perturbation to unit second moment: t[i] /= sqrt(record[idx]), where
// record[idx] = E[t^2] was written by moments/finalize.wgsl earlier in the same command
// stream (no host round trip). The host accumulates log(record[idx]) so that depth 500
// cannot overflow. A zero (vanished perturbation) leaves t unchanged.
//!include common/grid.wgsl

struct Params {
    total: u32,
    idx: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (moments/kernels.rs)
// checks idx < record.len(); t[i] for i < total = t.len(). No divisions, no loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> record: array<f32>;
@group(0) @binding(2) var<storage, read_write> t: array<f32>;

@compute @workgroup_size(256)
fn rescale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.total) {
        return;
    }
    let v = record[p.idx];
    if (v > 0.0) {
        t[i] = t[i] * inverseSqrt(v);
    }
}
