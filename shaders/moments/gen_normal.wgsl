// Deterministic Gaussian weights generated on the GPU: w[i] = std * N_i(k0, k1), where the
// pair (N_2j, N_2j+1) comes from Box-Muller on two uniforms drawn from a counter-based hash
// of (pair index j, key). For a fixed key the map j -> first hash is a bijection, so no two
// pairs share their first uniform. The key (derived on the host from --seed, the
// simulation and the layer) makes every simulation's weights fresh and reproducible.
//!include common/grid.wgsl

struct Params {
    total: u32,
    k0: u32,
    k1: u32,
    scale: f32,
}

// Bounds (runtime checks off, see src/gpu/kernel.rs). w[2j] for 2j < total = w.len(),
// w[2j + 1] only when 2j + 1 < total. No integer division, no loops.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;

// PCG-RXS-M-XS 32-bit output permutation (a bijection on u32).
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(256)
fn gen_normal(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let j = linear_group(wid, nwg) * 256u + lid;
    if (2u * j >= p.total) {
        return;
    }
    let h1 = pcg(pcg(j ^ p.k0) + p.k1);
    let h2 = pcg(h1 ^ (p.k1 + 0x9e3779b9u));
    let u1 = (f32(h1 >> 8u) + 1.0) * (1.0 / 16777216.0);
    let u2 = f32(h2 >> 8u) * (1.0 / 16777216.0);
    let r = sqrt(-2.0 * log(u1)) * p.scale;
    let th = 6.283185307179586 * u2;
    w[2u * j] = r * cos(th);
    if (2u * j + 1u < p.total) {
        w[2u * j + 1u] = r * sin(th);
    }
}
