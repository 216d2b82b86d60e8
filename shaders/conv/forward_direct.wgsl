// Grouped 2-D convolution, forward, direct (few channels per group: depthwise and
// Cout / groups < 4), 4 outputs along W per thread:
//   y[n, oy, ox, co] = sum_{ky, kx, ci} x[n, oy*s+ky-p, ox*s+kx-p, g*Gi+ci] * w[ky, kx, ci, co]
//                      (+ bias[co]),   g = co / Go
// Launcher: src/ops/conv/forward.rs. Thread layout and bounds: conv/direct.inc.wgsl.
const MODE: u32 = 0u;
//!include conv/direct.inc.wgsl

@compute @workgroup_size(256)
fn conv_forward_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
//!include conv/direct_body.inc.wgsl
}
