// Linear index of a workgroup in a grid that the host may have folded into 2-D
// (x capped at the adapter's max_compute_workgroups_per_dimension). Callers skip
// indices at or past the number of workgroups they asked for.
fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
