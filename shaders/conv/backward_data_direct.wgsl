// Grouped 2-D convolution, backward data, direct (Cin / groups < 4: depthwise, the
// stem), 4 input pixels along W per thread, all of one parity with stride 2:
//   dx[n, iy, ix, ci] = sum_{ky, kx, j} dy[n, oy, ox, g*Go+j] * w[ky, kx, ci, g*Go+j]
//                       over oy*s+ky-p = iy, ox*s+kx-p = ix,   g = ci / Gi
// Launcher: src/ops/conv/backward_data.rs. Thread layout and bounds: conv/direct.inc.wgsl.
const MODE: u32 = 1u;
//!include conv/direct.inc.wgsl

@compute @workgroup_size(256)
fn conv_backward_data_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
//!include conv/direct_body.inc.wgsl
}
