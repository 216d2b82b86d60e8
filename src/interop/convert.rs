//! Import timm state dicts into effnet models and export effnet models as timm state
//! dicts (safetensors), on the host and to or from a built [`EfficientNet`].

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::interop::arch::{timm_equivalent, TimmEquivalent};
use crate::interop::layout::tensor_maps;
use crate::models::efficientnet::EfficientNet;
use crate::models::{ModelConfig, NormChoice};
use crate::nn::model::Trainable;
use crate::nn::ParamId;
use crate::util::safetensors::{SafeTensors, StTensor};

/// Tensors in effnet's layouts by name: every parameter and the BatchNorm running
/// statistics (`<norm>.running_mean`, `<norm>.running_var`), and optionally each
/// BatchNorm's `<norm>.num_batches_tracked` as one value.
pub type Weights = BTreeMap<String, Vec<f32>>;

/// Tensor shapes by name, as a file stores them.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// Metadata key holding the effnet [`ModelConfig`] (JSON) in exported files.
pub const META_CONFIG: &str = "effnet_model_config";
/// Metadata key holding the timm model name in exported files.
pub const META_ARCH: &str = "timm_arch";
/// Metadata key holding the Python expression that builds the matching timm module.
pub const META_CREATE: &str = "timm_create";

/// Suffix of the timm buffers effnet ignores.
const IGNORED_SUFFIX: &str = ".num_batches_tracked";

/// Convert a timm state dict to effnet's layouts for `cfg`. Every tensor the model needs
/// must be present with timm's shape and nothing else may be (besides the optional
/// `num_batches_tracked` buffers, kept as one value each); otherwise one error lists each
/// missing, unexpected and mis-shaped tensor.
pub fn from_timm(cfg: &ModelConfig, st: &SafeTensors) -> Result<Weights> {
    let maps = tensor_maps(cfg)?;
    let mut problems = Vec::new();
    let mut out = Weights::new();
    for m in &maps {
        match st.tensors.get(&m.name) {
            None => problems.push(format!("missing {} {:?}", m.name, m.timm_shape)),
            Some(t) if t.shape != m.timm_shape => problems.push(format!(
                "{}: shape {:?} in the file, the model needs {:?}",
                m.name, t.shape, m.timm_shape
            )),
            Some(t) => {
                out.insert(m.name.clone(), m.layout.to_effnet(&t.data));
            }
        }
    }
    // PyTorch's BatchNorm step counters, kept so an export gives them back.
    for m in maps.iter().filter(|m| m.running) {
        if let Some(layer) = m.name.strip_suffix(".running_var") {
            let name = format!("{layer}{IGNORED_SUFFIX}");
            if let Some(t) = st.tensors.get(&name).filter(|t| t.data.len() == 1) {
                out.insert(name, t.data.clone());
            }
        }
    }
    let known: std::collections::BTreeSet<&str> = maps.iter().map(|m| m.name.as_str()).collect();
    for (name, t) in &st.tensors {
        if !known.contains(name.as_str()) && !name.ends_with(IGNORED_SUFFIX) {
            problems.push(format!("unexpected {name} {:?}", t.shape));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(format!(
            "the weights do not match {} ({} classes, width {}, depth {}, {} norm): {} \
             problem(s):\n  {}",
            cfg.name,
            cfg.classes,
            cfg.width,
            cfg.depth,
            cfg.norm.name(),
            problems.len(),
            problems.join("\n  ")
        )));
    }
    Ok(out)
}

/// Convert effnet-layout tensors to a timm state dict (PyTorch layouts, timm names) with
/// metadata: the timm name ([`META_ARCH`]), the Python that builds the matching module
/// ([`META_CREATE`]) and the effnet configuration ([`META_CONFIG`]). Errors when the
/// configuration has no timm equivalent or a tensor is missing or mis-sized.
pub fn to_timm(cfg: &ModelConfig, w: &Weights) -> Result<(SafeTensors, TimmEquivalent)> {
    let eq = timm_equivalent(cfg)?;
    let maps = tensor_maps(cfg)?;
    let mut st = SafeTensors::default();
    let mut problems = Vec::new();
    for m in &maps {
        match w.get(&m.name) {
            Some(v) if v.len() == m.effnet_shape.iter().product::<usize>() => {
                st.insert(m.name.clone(), &m.timm_shape, m.layout.to_timm(v));
            }
            Some(v) => problems.push(format!(
                "{}: {} values, the model needs {:?}",
                m.name,
                v.len(),
                m.effnet_shape
            )),
            None => problems.push(format!("missing {}", m.name)),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(format!(
            "cannot export {}:\n  {}",
            cfg.name,
            problems.join("\n  ")
        )));
    }
    // PyTorch's BatchNorm buffer: a one-value I64 tensor of shape [], as timm saves it
    // (effnet holds the count as f32 in between: exact up to 2^24 steps).
    for m in maps.iter().filter(|m| m.running) {
        if let Some(layer) = m.name.strip_suffix(".running_var") {
            let name = format!("{layer}{IGNORED_SUFFIX}");
            let n = w.get(&name).and_then(|v| v.first().copied()).unwrap_or(0.0);
            st.insert_i64(name, &[], vec![n]);
        }
    }
    st.metadata.insert(META_ARCH.into(), eq.name.into());
    st.metadata.insert(META_CREATE.into(), eq.python());
    st.metadata.insert(
        META_CONFIG.into(),
        serde_json::to_string(cfg).expect("config serializes"),
    );
    if cfg.norm == NormChoice::Bn {
        st.metadata.insert(
            crate::interop::arch::META_BN_MOMENTUM_PYTORCH.into(),
            eq.bn_momentum_pytorch.to_string(),
        );
        st.metadata.insert(
            "bn_momentum".into(),
            crate::interop::arch::bn_momentum_statement(cfg.bn_momentum),
        );
    }
    st.metadata.insert("format".into(), "pt".into());
    Ok((st, eq))
}

/// Read a model's weights and running statistics from the GPU.
pub fn read_model(gpu: &Gpu, model: &EfficientNet) -> Result<Weights> {
    let store = model.store();
    let mut out = Weights::new();
    for (i, d) in store.defs.iter().enumerate() {
        out.insert(d.name.clone(), gpu.read(store.w(ParamId(i)))?);
    }
    for (name, t) in model.state_tensors() {
        if let Some(layer) = name.strip_suffix(".running_mean") {
            let n = model.batches_tracked() as f32;
            out.insert(format!("{layer}{IGNORED_SUFFIX}"), vec![n]);
        }
        out.insert(name, gpu.read(&t)?);
    }
    Ok(out)
}

/// The weights of an effnet training checkpoint in effnet's layouts: its weight average
/// with the averaged BatchNorm statistics, or with `raw` its raw weights and statistics,
/// plus `num_batches_tracked` for each BatchNorm. Checkpoints from before the averaged
/// statistics existed give the raw statistics in both cases.
pub fn checkpoint_weights(
    tensors: BTreeMap<String, StTensor>,
    metadata: &BTreeMap<String, String>,
    raw: bool,
) -> (Weights, Shapes) {
    let (prefix, state) = if raw {
        ("w/", "state/")
    } else {
        ("ema/", "state_ema/")
    };
    let tracked: f32 = metadata
        .get(crate::train::checkpoint::META_BATCHES_TRACKED)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0) as f32;
    let mut w = Weights::new();
    let mut shapes = Shapes::new();
    let mut averaged = Vec::new();
    // Move the tensors out of the file's map: no second copy of the checkpoint.
    for (name, t) in tensors {
        if let Some(n) = name.strip_prefix(prefix) {
            shapes.insert(n.to_string(), t.shape);
            w.insert(n.to_string(), t.data);
        } else if let Some(n) = name.strip_prefix("state/") {
            if let Some(layer) = n.strip_suffix(".running_mean") {
                w.insert(format!("{layer}{IGNORED_SUFFIX}"), vec![tracked]);
            }
            shapes.entry(n.to_string()).or_insert(t.shape);
            w.entry(n.to_string()).or_insert(t.data);
        } else if let Some(n) = name.strip_prefix(state) {
            averaged.push((n.to_string(), t.shape, t.data));
        }
    }
    // The averaged statistics replace the raw ones (none in checkpoints that predate them).
    for (n, shape, data) in averaged {
        shapes.insert(n.clone(), shape);
        w.insert(n, data);
    }
    (w, shapes)
}

/// Write effnet-layout weights into a model: parameters and running statistics (and
/// their weight averages, so averaged evaluation starts from them too), then rebuild the
/// derived state ([`Trainable::rebuild_derived`]). Every parameter and state tensor of the
/// model must be given with its size.
pub fn write_model(gpu: &Gpu, model: &mut EfficientNet, w: &Weights) -> Result<()> {
    let store = model.store();
    let state = model.state_tensors();
    let mut problems = Vec::new();
    let sizes = store
        .defs
        .iter()
        .map(|d| (d.name.clone(), d.shape.iter().product::<usize>()))
        .chain(state.iter().map(|(n, t)| (n.clone(), t.len())));
    for (name, n) in sizes {
        match w.get(&name) {
            None => problems.push(format!("missing {name}")),
            Some(v) if v.len() != n => {
                problems.push(format!("{name}: {} values, the model needs {n}", v.len()))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(format!(
            "weights do not fit model {}:\n  {}",
            model.cfg.name,
            problems.join("\n  ")
        )));
    }
    for (i, d) in store.defs.iter().enumerate() {
        let v = &w[&d.name];
        gpu.write_f32(store.w(ParamId(i)), v)?;
        gpu.write_f32(store.tensor_of(&store.ema, ParamId(i)), v)?;
    }
    for ((name, t), (_, avg)) in state.iter().zip(&model.state_average()) {
        gpu.write_f32(t, &w[name])?;
        gpu.write_f32(avg, &w[name])?;
    }
    // One count serves every layer (they all see the same forwards): the largest given.
    let tracked = w
        .iter()
        .filter(|(n, _)| n.ends_with(IGNORED_SUFFIX))
        .filter_map(|(_, v)| v.first().copied())
        .fold(0.0f32, f32::max);
    model.set_batches_tracked(tracked as u64);
    model.rebuild_derived(gpu)
}

/// Load a timm safetensors file into a built model (see [`from_timm`]).
pub fn load_timm(gpu: &Gpu, model: &mut EfficientNet, path: &Path) -> Result<()> {
    let st = SafeTensors::load(path)?;
    let w = from_timm(&model.cfg, &st).map_err(|e| Error::file(path, e.to_string()))?;
    write_model(gpu, model, &w)
}

/// Write a model's weights as a timm safetensors file (see [`to_timm`]).
pub fn save_timm(gpu: &Gpu, model: &EfficientNet, path: &Path) -> Result<TimmEquivalent> {
    let (st, eq) = to_timm(&model.cfg, &read_model(gpu, model)?)?;
    st.save(path)?;
    Ok(eq)
}

/// Export an effnet training checkpoint (from `effnet train`) as a timm safetensors file,
/// on the host: its weight average (`ema/`) with the averaged BatchNorm running statistics
/// (`state_ema/`), or its raw weights and statistics (`w/`, `state/`) when `raw`, and each
/// BatchNorm's `num_batches_tracked`.
pub fn export_checkpoint(ckpt: &Path, out: &Path, raw: bool) -> Result<TimmEquivalent> {
    let src = SafeTensors::load(ckpt)?;
    let cfg = checkpoint_config(ckpt, &src)?;
    let (w, _) = checkpoint_weights(src.tensors, &src.metadata, raw);
    let (st, eq) = to_timm(&cfg, &w).map_err(|e| Error::file(ckpt, e.to_string()))?;
    st.save(out)?;
    Ok(eq)
}

/// The model configuration stored in an effnet training checkpoint's metadata.
pub fn checkpoint_config(path: &Path, st: &SafeTensors) -> Result<ModelConfig> {
    let s = st.metadata.get("model_config").ok_or_else(|| {
        Error::file(
            path,
            "not an effnet training checkpoint (no model_config metadata)",
        )
    })?;
    parse_config(path, "model_config", s)
}

/// Parse a [`ModelConfig`] stored as JSON under metadata key `key` of `path`, and check
/// its ranges ([`ModelConfig::validate`]) before anything is planned from it.
pub fn parse_config(path: &Path, key: &str, json: &str) -> Result<ModelConfig> {
    let cfg: ModelConfig = serde_json::from_str(json)
        .map_err(|e| Error::file(path, format!("bad {key} metadata: {e}")))?;
    cfg.validate()
        .map_err(|e| Error::file(path, format!("{key} metadata: {e}")))?;
    Ok(cfg)
}
