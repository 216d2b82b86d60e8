// Grouped 2-D convolution, backward data, as an implicit GEMM (one dispatch for any
// group count; used when Cin / groups >= 4):
//   dx[n, iy, ix, ci] = sum_{ky, kx, j} dy[n, oy, ox, g*Go+j] * w[ky, kx, ci, g*Go+j]
//                       over oy*s+ky-p = iy, ox*s+kx-p = ix,   g = ci / Gi
// With stride 2 the input pixels are split into the four (iy % 2, ix % 2) classes so only
// contributing taps are visited. Launcher: src/ops/conv/backward_data.rs. Tiles, staging
// and bounds: conv/igemm.inc.wgsl.
const MODE: u32 = 1u;
//!include conv/igemm.inc.wgsl

@compute @workgroup_size(256)
fn conv_backward_data_igemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) t: u32) {
//!include conv/igemm_body.inc.wgsl
}
