//! Checkpoints as safetensors: weights, both optimizer states, the weight average, extra
//! state tensors (BatchNorm running statistics, proxy statistics), and metadata (step,
//! epoch, batch, RNG state, the run configuration). Written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::{Arena, Gpu, Tensor};
use crate::nn::{ParamId, ParamStore};
use crate::util::safetensors::SafeTensors;

/// Arena prefixes stored in a checkpoint.
const ARENAS: [&str; 4] = ["w", "s1", "s2", "ema"];

fn arena<'a>(store: &'a ParamStore, which: &str) -> &'a Arena {
    match which {
        "w" => &store.w,
        "s1" => &store.s1,
        "s2" => &store.s2,
        _ => &store.ema,
    }
}

/// Read whole arena chunks once, then slice out each tensor.
fn read_arena(gpu: &Gpu, store: &ParamStore, a: &Arena) -> Result<Vec<Vec<f32>>> {
    let chunks: Vec<Vec<f32>> = a
        .chunks
        .iter()
        .map(|c| gpu.read(c))
        .collect::<Result<_>>()?;
    Ok((0..store.defs.len())
        .map(|i| {
            let t = store.tensor_of(a, ParamId(i));
            let c = a.chunk_index(t);
            let s = (t.offset / 4) as usize;
            chunks[c][s..s + t.len()].to_vec()
        })
        .collect())
}

/// Save a checkpoint of `store`, the `state` tensors and `meta`.
pub fn save(
    path: &Path,
    gpu: &Gpu,
    store: &ParamStore,
    state: &[(String, Tensor)],
    meta: BTreeMap<String, String>,
) -> Result<()> {
    let mut st = SafeTensors {
        metadata: meta,
        ..Default::default()
    };
    for which in ARENAS {
        let vals = read_arena(gpu, store, arena(store, which))?;
        for (d, v) in store.defs.iter().zip(vals) {
            st.insert(format!("{which}/{}", d.name), &d.shape, v);
        }
    }
    for (name, t) in state {
        st.insert(format!("state/{name}"), t.shape(), gpu.read(t)?);
    }
    st.save(path)
}

/// Load a checkpoint into `store` and the `state` tensors; returns the metadata. Every
/// tensor must be present with the right shape, else the error lists what differs.
pub fn load(
    path: &Path,
    gpu: &Gpu,
    store: &ParamStore,
    state: &[(String, Tensor)],
) -> Result<BTreeMap<String, String>> {
    let st = SafeTensors::load(path)?;
    let mut problems = Vec::new();
    let mut check = |name: String, shape: &[usize]| -> Option<Vec<f32>> {
        match st.tensors.get(&name) {
            None => {
                problems.push(format!("missing {name}"));
                None
            }
            Some(t) if t.shape != shape => {
                problems.push(format!(
                    "{name}: shape {:?} in file, model needs {shape:?}",
                    t.shape
                ));
                None
            }
            Some(t) => Some(t.data.clone()),
        }
    };
    let mut writes: Vec<(Tensor, Vec<f32>)> = Vec::new();
    for which in ARENAS {
        let a = arena(store, which);
        for (i, d) in store.defs.iter().enumerate() {
            if let Some(v) = check(format!("{which}/{}", d.name), &d.shape) {
                writes.push((store.tensor_of(a, ParamId(i)).clone(), v));
            }
        }
    }
    for (name, t) in state {
        if let Some(v) = check(format!("state/{name}"), t.shape()) {
            writes.push((t.clone(), v));
        }
    }
    if !problems.is_empty() {
        return Err(Error::file(
            path,
            format!(
                "checkpoint does not match this model (was it written for another --model, \
                 --norm or --width?):\n  {}",
                problems.join("\n  ")
            ),
        ));
    }
    for (t, v) in writes {
        gpu.write_f32(&t, &v)?;
    }
    Ok(st.metadata)
}
