// Second pass of the split-K weight gradients: sums the partials [split][R(+1)][Cout] over
// splits in a fixed order (deterministic) into dw [R][Cout] and, with BIAS, row R into
// db [Cout].
//!include common/grid.wgsl

override BIAS: u32 = 0u;

struct Params {
    rows: u32,   // R
    rows_b: u32, // R (+ 1 with bias)
    cout: u32,
    nsplit: u32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). The launcher (ops/conv) binds
// the scratch of nsplit*rows_b*cout partials (checked), dw of rows*cout and db of cout
// elements (db aliases dw when there is no bias: rows_b = rows, so it is never written).
// e < rows_b*cout; part[s*per + e] for s < nsplit; dw[e] for e < rows*cout; db at
// e - rows*cout < cout. No divisions. Loop: s < nsplit.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(256)
fn conv_backward_weight_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let e = linear_group(wid, nwg) * 256u + lid;
    let per = p.rows_b * p.cout;
    if (e >= per) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < p.nsplit; s++) {
        acc += part[s * per + e];
    }
    if (e < p.rows * p.cout) {
        dw[e] = acc;
    } else if (BIAS == 1u) {
        db[e - p.rows * p.cout] = acc;
    }
}
