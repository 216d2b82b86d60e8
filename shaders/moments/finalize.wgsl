// Moments final pass: one workgroup merges the per-(chunk, channel) partial sums of
// moments/col_partial.wgsl (MODE 1) and averages over channels (SPEC §D.2: means over batch,
// positions and channels; centering per channel). Writes 5 values at record[off..off+5]:
//   nu1(|t|), nu2(t), mu2(t), mu4(t), mean_c m_c^2   (the last is 0 when not centered)
// so nu2 = mu2 + mean_c m_c^2 (the channel-wise constant power).
//!include common/grid.wgsl

struct Params {
    m: u32,
    c: u32,
    chunks: u32,
    off: u32,
    centered: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (moments/kernels.rs)
// checks part >= 4*chunks*c, mean >= c and off + 5 <= record.len(); part at
// (k*c + c')*4 + 3 for k < chunks, c' < c; record[off .. off + 5]. acc[t + stride],
// acc2[t + stride] with t < stride <= 128. Divisions: floats only. Loops: c' += 256 up to
// c, k < chunks, stride halves.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> record: array<f32>;

var<workgroup> acc: array<vec4<f32>, 256>;
var<workgroup> acc2: array<f32, 256>;

@compute @workgroup_size(256)
fn moments_finalize(@builtin(local_invocation_index) t: u32) {
    var s = vec4<f32>(0.0);
    var s2 = 0.0;
    let inv_m = 1.0 / f32(p.m);
    for (var c = t; c < p.c; c += 256u) {
        var q = vec4<f32>(0.0);
        for (var k = 0u; k < p.chunks; k++) {
            let base = (k * p.c + c) * 4u;
            q += vec4<f32>(part[base], part[base + 1u], part[base + 2u], part[base + 3u]);
        }
        s += q * inv_m;
        if (p.centered == 1u) {
            s2 += mean[c] * mean[c];
        }
    }
    acc[t] = s;
    acc2[t] = s2;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            acc[t] = acc[t] + acc[t + stride];
            acc2[t] = acc2[t] + acc2[t + stride];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        let inv_c = 1.0 / f32(p.c);
        record[p.off] = acc[0].x * inv_c;
        record[p.off + 1u] = acc[0].y * inv_c;
        record[p.off + 2u] = acc[0].z * inv_c;
        record[p.off + 3u] = acc[0].w * inv_c;
        record[p.off + 4u] = acc2[0] * inv_c;
    }
}
