// Moments pass 2 (centered statistics only): mean[c] = scale * sum over chunks of
// part[chunk, c] (scale = 1 / M).
//!include common/grid.wgsl

struct Params {
    c: u32,
    chunks: u32,
    scale: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). part >= chunks*c and mean >= c
// (checked by the launcher); part[k*c + c'] for k < chunks, c' < c. No integer division.
// Loop: k < chunks.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;

@compute @workgroup_size(256)
fn col_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let c = linear_group(wid, nwg) * 256u + lid;
    if (c >= p.c) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        s += part[k * p.c + c];
    }
    mean[c] = s * p.scale;
}
