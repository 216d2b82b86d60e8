//! Checkpoints as safetensors: weights, both optimizer states, the weight average, extra
//! state tensors (BatchNorm running statistics) and their averages, and metadata (step,
//! RNG state, the run configuration and its history, `num_batches_tracked`). Written
//! atomically, and never with a non-finite value in it: [`save`] counts non-finite values
//! on the GPU first and refuses. Loading checks every tensor's presence, shape and
//! finiteness, then rebuilds the state derived from the weights
//! ([`Trainable::rebuild_derived`]).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::{Arena, Gpu, Tensor};
use crate::nn::model::Trainable;
use crate::nn::{ParamId, ParamStore};
use crate::ops::finite;
use crate::util::safetensors::SafeTensors;

/// Arena prefixes stored in a checkpoint.
const ARENAS: [&str; 4] = ["w", "s1", "s2", "ema"];
/// Prefix of the state tensors (BatchNorm running statistics).
const STATE: &str = "state";
/// Prefix of their weight-average twins.
const STATE_AVG: &str = "state_ema";
/// Metadata key of [`Trainable::batches_tracked`].
pub const META_BATCHES_TRACKED: &str = "num_batches_tracked";

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

/// "name (k of n values non-finite)" for the first tensor of `vals` with a non-finite value.
fn first_bad<'a>(vals: impl Iterator<Item = (String, &'a [f32])>) -> Option<String> {
    vals.into_iter().find_map(|(name, v)| {
        let k = v.iter().filter(|x| !x.is_finite()).count();
        (k > 0).then(|| format!("{name} ({k} of {} values non-finite)", v.len()))
    })
}

/// Whether the model's weights, optimizer state, weight average or state tensors hold a
/// NaN or an infinity, counted on the GPU (only the counts are read back). Returns the
/// first offending tensor, by checkpoint name, when one does.
pub fn non_finite(gpu: &Gpu, model: &dyn Trainable) -> Result<Option<String>> {
    let store = model.store();
    let (state, avg) = (model.state_tensors(), model.state_average());
    let mut tensors: Vec<&Tensor> = Vec::new();
    for which in ARENAS {
        tensors.extend(arena(store, which).chunks.iter());
    }
    tensors.extend(state.iter().map(|(_, t)| t));
    tensors.extend(avg.iter().map(|(_, t)| t));
    let counts = finite::count_each(gpu, &tensors)?;
    if counts.iter().all(|&c| c == 0) {
        return Ok(None);
    }
    // Rare path: read the offending tensors back to name one.
    let mut slot = 0;
    for which in ARENAS {
        let a = arena(store, which);
        let bad = counts[slot..slot + a.chunks.len()].iter().any(|&c| c > 0);
        slot += a.chunks.len();
        if bad {
            let vals = read_arena(gpu, store, a)?;
            let found = first_bad(
                store
                    .defs
                    .iter()
                    .zip(&vals)
                    .map(|(d, v)| (format!("{which}/{}", d.name), &v[..])),
            );
            if found.is_some() {
                return Ok(found);
            }
        }
    }
    for (prefix, list) in [(STATE, &state), (STATE_AVG, &avg)] {
        for (name, t) in list.iter() {
            if counts[slot] > 0 {
                let v = gpu.read(t)?;
                return Ok(first_bad(std::iter::once((
                    format!("{prefix}/{name}"),
                    &v[..],
                ))));
            }
            slot += 1;
        }
    }
    Ok(Some("a parameter arena (padding)".into()))
}

/// Save a checkpoint of the model (weights, optimizer state, average, state tensors and
/// their averages, [`Trainable::batches_tracked`]) and `meta`. Refuses, writing nothing,
/// when any value is non-finite, so the previous checkpoint stays the last good one.
pub fn save(
    path: &Path,
    gpu: &Gpu,
    model: &dyn Trainable,
    mut meta: BTreeMap<String, String>,
) -> Result<()> {
    if let Some(bad) = non_finite(gpu, model)? {
        return Err(Error::file(
            path,
            format!("not written: the model holds non-finite values in {bad}"),
        ));
    }
    let store = model.store();
    meta.insert(
        META_BATCHES_TRACKED.into(),
        model.batches_tracked().to_string(),
    );
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
    for (prefix, list) in [
        (STATE, model.state_tensors()),
        (STATE_AVG, model.state_average()),
    ] {
        for (name, t) in list {
            st.insert(format!("{prefix}/{name}"), t.shape(), gpu.read(&t)?);
        }
    }
    st.save(path)
}

/// Load a checkpoint into the model and return its metadata. Every tensor must be present
/// with the right shape and finite values, else the error lists what differs. Checkpoints
/// written before the state averages existed load with the averages set to the raw state.
/// Derived state is rebuilt from the loaded weights.
pub fn load(path: &Path, gpu: &Gpu, model: &mut dyn Trainable) -> Result<BTreeMap<String, String>> {
    let st = SafeTensors::load(path)?;
    let store = model.store();
    let mut problems = Vec::new();
    let mut writes: Vec<(Tensor, &[f32])> = Vec::new();
    let mut check = |name: &str, shape: &[usize], t: &Tensor, optional: Option<&str>| {
        let found = st
            .tensors
            .get(name)
            .map(|x| (name, x))
            .or_else(|| optional.and_then(|o| st.tensors.get(o).map(|x| (o, x))));
        match found {
            None => problems.push(format!("missing {name}")),
            Some((n, x)) if x.shape != shape => problems.push(format!(
                "{n}: shape {:?} in the file, the model needs {shape:?}",
                x.shape
            )),
            Some((_, x)) => writes.push((t.clone(), &x.data)),
        }
    };
    for which in ARENAS {
        let a = arena(store, which);
        for (i, d) in store.defs.iter().enumerate() {
            let t = store.tensor_of(a, ParamId(i));
            check(&format!("{which}/{}", d.name), &d.shape, t, None);
        }
    }
    let (state, avg) = (model.state_tensors(), model.state_average());
    for (name, t) in &state {
        check(&format!("{STATE}/{name}"), t.shape(), t, None);
    }
    for (name, t) in &avg {
        let raw = format!("{STATE}/{name}");
        check(&format!("{STATE_AVG}/{name}"), t.shape(), t, Some(&raw));
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
    if let Some(bad) = first_bad(st.tensors.iter().map(|(n, t)| (n.clone(), &t.data[..]))) {
        return Err(Error::file(
            path,
            format!(
                "holds non-finite values in {bad}: the checkpoint is corrupt (or was written \
                 by an effnet that did not check). Use an intact copy, or start over with \
                 --overwrite"
            ),
        ));
    }
    let tracked = match st.metadata.get(META_BATCHES_TRACKED) {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| Error::file(path, format!("bad {META_BATCHES_TRACKED} metadata '{s}'")))?,
    };
    for (t, v) in writes {
        gpu.write_f32(&t, v)?;
    }
    model.set_batches_tracked(tracked);
    model.rebuild_derived(gpu)?;
    Ok(st.metadata)
}
