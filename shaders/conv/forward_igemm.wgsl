// Grouped 2-D convolution, forward, as an implicit GEMM (one dispatch for any group
// count; used when Cout / groups >= 4):
//   y[n, oy, ox, co] = sum_{ky, kx, ci} x[n, oy*s+ky-p, ox*s+kx-p, g*Gi+ci] * w[ky, kx, ci, co]
//                      (+ bias[co]),   g = co / Go
// Launcher: src/ops/conv/forward.rs. Tiles, staging and bounds: conv/igemm.inc.wgsl.
const MODE: u32 = 0u;
//!include conv/igemm.inc.wgsl

@compute @workgroup_size(256)
fn conv_forward_igemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) t: u32) {
//!include conv/igemm_body.inc.wgsl
}
