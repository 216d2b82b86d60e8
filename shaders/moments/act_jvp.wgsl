// Activation step of the simultaneous propagation of signal and perturbation:
//   act_jvp: dx[i] = dz[i] * act'(z[i]) (* s[c])        (ReLU: dz masked by z > 0)
//   pn_act:  x[i]  = (act(z[i]) - mu[c]) * s[c]          (proxy-normalized activation)
// ACT selects the activation (common/act.wgsl). For pn_act, `a` holds mu~ and `s` s~; for
// act_jvp, `a` holds dz and `s` the optional per-channel factor (s~ of Proxy Norm).
//!include common/grid.wgsl
//!include common/act.wgsl

override ACT: u32 = 1u;

struct Params {
    total: u32,
    c: u32,
    scale: u32, // act_jvp: 1 multiplies by s[c]
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launchers (moments/kernels.rs)
// check z, a (act_jvp: dz), out = total elements and the per-channel tensors (s~, mu~) =
// c >= 1 elements; i < total, channel index i % c < c. Divisor: c >= 1 (checked whenever
// it divides). No loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> s: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn act_jvp(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.total) {
        return;
    }
    var v = a[i] * act_df(ACT, z[i]);
    if (p.scale == 1u) {
        v *= s[i % p.c];
    }
    out[i] = v;
}

@compute @workgroup_size(256)
fn pn_act(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if (i >= p.total) {
        return;
    }
    let c = i % p.c;
    out[i] = (act_f(ACT, z[i]) - a[c]) * s[c];
}
