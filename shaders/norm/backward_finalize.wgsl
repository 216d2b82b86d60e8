// Fused normalization backward, pass 2 (small): two kinds of workgroup in one dispatch.
// - Channel blocks (the first `cblocks` workgroups, 32 channels x 8 lanes each): sum the
//   partials of norm/backward_reduce.wgsl over (o, chunk) in a fixed order and write the
//   per-channel gradients
//     dgamma = sum dz * xhat,  dbeta = sum dz,
//     dmu~   = -s~ * sum dy,   ds~ = sum dy * (a - mu~)   (Proxy Norm)
// - Segment groups (the next ceil(S / (256 / L)) workgroups, L lanes per segment as in
//   norm/stats_finalize.wgsl): for segment s = (o, g) sum gamma[c] * (sum dz,
//   sum dz * xhat) over its chunks and channels, i.e. the sums of dxhat and dxhat * xhat,
//   and store their means in scratch[seg_off + s] and scratch[seg_off + S + s] for the
//   elementwise pass. The segment region does not overlap the partials.
// Absent gradients are not written (their bindings may then alias a present one).
//!include common/grid.wgsl

const HAS_SCALE: u32 = 1u;
const PROXY_SCALE: u32 = 8u;
const W_DGAMMA: u32 = 16u;
const W_DBETA: u32 = 32u;
const W_DMU: u32 = 64u;
const W_DS: u32 = 128u;

struct Params {
    o: u32,
    c: u32,
    chunks: u32,
    groups: u32,
    cg: u32,
    segs: u32,
    cblocks: u32,   // ceil(C / 32)
    seg_off: u32,
    flags: u32,
    inv_count: f32, // 1 / elements per segment
    lanes: u32,     // L: lanes per segment, a power of two <= 256
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/norm) checks
// scratch >= seg_off + 2*S with seg_off = 4*O*chunks*C, and binds C-element dgamma,
// dbeta, dmu~, ds~ for every write flag it sets (others alias a present output and are
// never written), C-element gamma / s~ when HAS_SCALE / PROXY_SCALE. Channel blocks
// (g < cblocks = ceil(C / 32)): scratch at ((r*C + c)*4 + 3) for r < O*chunks, c < C;
// acc[t + stride*32] with ll < stride <= 4 stays below 256. Segments: s < S, o = s / G,
// c = grp*cg + k % cg < C; scratch at seg_off + s and seg_off + S + s. Divisors: G, cg,
// lanes >= 1, lanes a power of two dividing 256. Loops: r += 8, k += lanes, stride halves.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> ps: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dmu: array<f32>;
@group(0) @binding(7) var<storage, read_write> ds: array<f32>;

var<workgroup> acc: array<vec4<f32>, 256>;

fn partial4(base: u32) -> vec4<f32> {
    return vec4<f32>(scratch[base], scratch[base + 1u], scratch[base + 2u], scratch[base + 3u]);
}

fn channel_block(cb: u32, t: u32) {
    let ii = t % 32u;
    let ll = t / 32u;
    let c = cb * 32u + ii;
    let rows = p.o * p.chunks;
    var sum = vec4<f32>(0.0);
    if (c < p.c) {
        for (var r = ll; r < rows; r += 8u) {
            sum += partial4((r * p.c + c) * 4u);
        }
    }
    acc[t] = sum;
    workgroupBarrier();
    for (var stride = 4u; stride > 0u; stride /= 2u) {
        if (ll < stride) {
            acc[t] += acc[t + stride * 32u];
        }
        workgroupBarrier();
    }
    if (ll == 0u && c < p.c) {
        let r = acc[ii];
        if ((p.flags & W_DGAMMA) != 0u) {
            dgamma[c] = r.y;
        }
        if ((p.flags & W_DBETA) != 0u) {
            dbeta[c] = r.x;
        }
        if ((p.flags & W_DMU) != 0u) {
            var sc = 1.0;
            if ((p.flags & PROXY_SCALE) != 0u) {
                sc = ps[c];
            }
            dmu[c] = -sc * r.z;
        }
        if ((p.flags & W_DS) != 0u) {
            ds[c] = r.w;
        }
    }
}

fn segments(sg: u32, t: u32) {
    let s = sg * (256u / p.lanes) + t / p.lanes;
    let lane = t % p.lanes;
    var sum = vec4<f32>(0.0);
    if (s < p.segs) {
        let o = s / p.groups;
        let grp = s % p.groups;
        let terms = p.chunks * p.cg;
        for (var k = lane; k < terms; k += p.lanes) {
            let chunk = k / p.cg;
            let c = grp * p.cg + k % p.cg;
            var gm = 1.0;
            if ((p.flags & HAS_SCALE) != 0u) {
                gm = gamma[c];
            }
            let base = ((o * p.chunks + chunk) * p.c + c) * 4u;
            sum += vec4<f32>(gm * scratch[base], gm * scratch[base + 1u], 0.0, 0.0);
        }
    }
    acc[t] = sum;
    workgroupBarrier();
    for (var stride = p.lanes / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            acc[t] += acc[t + stride];
        }
        workgroupBarrier();
    }
    if (lane == 0u && s < p.segs) {
        scratch[p.seg_off + s] = acc[t].x * p.inv_count;
        scratch[p.seg_off + p.segs + s] = acc[t].y * p.inv_count;
    }
}

@compute @workgroup_size(256)
fn norm_backward_finalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) t: u32) {
    let g = linear_group(wid, nwg);
    if (g < p.cblocks) {
        channel_block(g, t);
    } else if ((g - p.cblocks) * (256u / p.lanes) < p.segs) {
        segments(g - p.cblocks, t);
    }
}
