//! `train --init FILE`: start a model from a timm state dict (or an `effnet export` file)
//! or an effnet training checkpoint, tensor by tensor.
//!
//! Every model tensor the file holds with the model's shape is loaded; the classifier is
//! left at its fresh initialization when the class count differs; a 3-channel stem is
//! summed to the model's single input channel (timm's `adapt_input_conv`); model tensors
//! the file lacks keep their fresh initialization and file tensors the model lacks are
//! left out — all listed in the [`InitReport`]. A file that matches no tensor, a shape
//! that disagrees anywhere else, or a non-finite value is refused, naming the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::interop::convert::{checkpoint_weights, Weights};
use crate::interop::layout::tensor_maps;
use crate::models::efficientnet::EfficientNet;
use crate::nn::model::Trainable;
use crate::nn::ParamId;
use crate::util::safetensors::SafeTensors;

/// What [`init_from_file`] did with each tensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InitReport {
    /// The file read.
    pub path: PathBuf,
    /// `timm state dict` or `effnet checkpoint`.
    pub kind: &'static str,
    /// Tensors loaded from the file (with a note where converted, e.g. the summed stem).
    pub loaded: Vec<String>,
    /// Model tensors kept at their fresh initialization, each with the reason.
    pub reinitialized: Vec<String>,
    /// File tensors the model has no use for.
    pub left_out: Vec<String>,
    /// `num_batches_tracked` taken from the file.
    pub batches_tracked: u64,
}

impl InitReport {
    /// The summary `effnet train` prints: counts, then every re-initialized and left-out
    /// tensor by name (the loaded ones are the rest of the model).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "init from {} ({}): {} tensor(s) loaded, {} re-initialized, {} left out of the \
             file; num_batches_tracked {}",
            self.path.display(),
            self.kind,
            self.loaded.len(),
            self.reinitialized.len(),
            self.left_out.len(),
            self.batches_tracked
        );
        for l in self.loaded.iter().filter(|l| l.contains(" (")) {
            s += &format!("\n  loaded {l}");
        }
        for r in &self.reinitialized {
            s += &format!("\n  re-initialized {r}");
        }
        for l in &self.left_out {
            s += &format!("\n  left out {l}");
        }
        s
    }
}

/// Suffix of PyTorch's BatchNorm step counters.
const TRACKED: &str = ".num_batches_tracked";

/// Whether a tensor is the classifier's (re-initialized when the class count differs).
fn is_classifier(name: &str) -> bool {
    name.starts_with("classifier.")
}

/// A file's tensors as candidates in effnet's layouts: name -> (effnet-layout values,
/// the file's shape shown in messages, whether that shape fits the model, a note).
struct Candidate {
    data: Vec<f32>,
    shape: Vec<usize>,
    fits: bool,
    note: Option<String>,
}

/// Initialize `model` (already freshly initialized) from `path`: see the module
/// documentation. Writes weights, their average and the running statistics (and their
/// average) of every loaded tensor, then rebuilds the derived state.
pub fn init_from_file(gpu: &Gpu, model: &mut EfficientNet, path: &Path) -> Result<InitReport> {
    let path = if path.is_dir() {
        crate::train::trainer::checkpoint_path(path)
    } else {
        path.to_path_buf()
    };
    let st = SafeTensors::load(&path)?;
    let cfg = model.cfg.clone();
    // The model's tensors with their effnet shapes.
    let store = model.store();
    let state = model.state_tensors();
    let mut want: BTreeMap<String, Vec<usize>> = store
        .defs
        .iter()
        .map(|d| (d.name.clone(), d.shape.clone()))
        .collect();
    for (n, t) in &state {
        want.insert(n.clone(), t.shape().to_vec());
    }
    let mut cands: BTreeMap<String, Candidate> = BTreeMap::new();
    let mut left_out = Vec::new();
    let mut tracked = 0u64;
    let kind;
    if st.metadata.contains_key("model_config") {
        kind = "effnet checkpoint";
        let (w, shapes): (Weights, _) = checkpoint_weights(st.tensors, &st.metadata, false);
        for (name, data) in w {
            if name.ends_with(TRACKED) {
                tracked = tracked.max(data.first().copied().unwrap_or(0.0).max(0.0) as u64);
                continue;
            }
            let shape = shapes.get(&name).cloned().unwrap_or_default();
            match want.get(&name) {
                Some(s) => {
                    let fits = *s == shape;
                    cands.insert(
                        name,
                        Candidate {
                            data,
                            shape,
                            fits,
                            note: None,
                        },
                    );
                }
                None => left_out.push(format!("{name} {shape:?}")),
            }
        }
    } else {
        kind = "timm state dict";
        let maps = tensor_maps(&cfg).map_err(|e| {
            Error::file(
                &path,
                format!(
                    "a timm state dict cannot initialize this model ({e}); give an effnet \
                     checkpoint of it instead"
                ),
            )
        })?;
        let by_name: BTreeMap<&str, _> = maps.iter().map(|m| (m.name.as_str(), m)).collect();
        for (name, t) in st.tensors {
            if name.ends_with(TRACKED) {
                tracked = tracked.max(t.data.first().copied().unwrap_or(0.0).max(0.0) as u64);
                continue;
            }
            let Some(m) = by_name.get(name.as_str()) else {
                left_out.push(format!("{name} {:?}", t.shape));
                continue;
            };
            // timm's adapt_input_conv: a 3-channel stem summed over its input channels for
            // a 1-channel model.
            if name == "conv_stem.weight"
                && cfg.in_channels == 1
                && t.shape.len() == 4
                && t.shape[1] == 3
                && t.shape[0] == m.timm_shape[0]
                && t.shape[2..] == m.timm_shape[2..]
            {
                let (co, k2) = (t.shape[0], t.shape[2] * t.shape[3]);
                let mut summed = vec![0.0f32; co * k2];
                for o in 0..co {
                    for c in 0..3 {
                        for i in 0..k2 {
                            summed[o * k2 + i] += t.data[(o * 3 + c) * k2 + i];
                        }
                    }
                }
                cands.insert(
                    name,
                    Candidate {
                        data: m.layout.to_effnet(&summed),
                        shape: t.shape,
                        fits: true,
                        note: Some("summed over its 3 input channels to 1".into()),
                    },
                );
                continue;
            }
            let fits = t.shape == m.timm_shape;
            let data = if fits {
                m.layout.to_effnet(&t.data)
            } else {
                Vec::new()
            };
            cands.insert(
                name,
                Candidate {
                    data,
                    shape: t.shape,
                    fits,
                    note: None,
                },
            );
        }
    }
    let shown = |name: &str| -> Vec<usize> {
        if kind == "timm state dict" {
            tensor_maps(&cfg)
                .ok()
                .and_then(|m| m.into_iter().find(|m| m.name == name))
                .map_or_else(Vec::new, |m| m.timm_shape)
        } else {
            want.get(name).cloned().unwrap_or_default()
        }
    };
    let mut problems = Vec::new();
    let mut reinitialized = Vec::new();
    let mut loaded = Vec::new();
    let mut load: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for name in want.keys() {
        match cands.remove(name) {
            None => reinitialized.push(format!("{name} (not in the file)")),
            Some(c) if !c.fits => {
                if is_classifier(name) {
                    reinitialized.push(format!(
                        "{name} (the file's {:?} is for another class count; the model has {} \
                         classes)",
                        c.shape, cfg.classes
                    ));
                } else {
                    problems.push(format!(
                        "{name}: shape {:?} in the file, the model needs {:?}",
                        c.shape,
                        shown(name)
                    ));
                }
            }
            Some(c) => {
                if let Some(i) = c.data.iter().position(|v| !v.is_finite()) {
                    problems.push(format!(
                        "{name}: value {} at index {i} is not finite",
                        c.data[i]
                    ));
                    continue;
                }
                loaded.push(match c.note {
                    Some(n) => format!("{name} ({n})"),
                    None => name.clone(),
                });
                load.insert(name.clone(), c.data);
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::file(
            &path,
            format!(
                "cannot initialize {} ({} classes, width {}, depth {}, {} norm) from this {kind}: \
                 {} tensor(s) disagree:\n  {}\n(pick the --model, --width, --depth and --norm \
                 the file was made with)",
                cfg.name,
                cfg.classes,
                cfg.width,
                cfg.depth,
                cfg.norm.name(),
                problems.len(),
                problems.join("\n  ")
            ),
        ));
    }
    if load.is_empty() {
        return Err(Error::file(
            &path,
            format!(
                "this {kind} matches no tensor of model {} (its names: {}...): not EfficientNet \
                 weights of this family",
                cfg.name,
                left_out
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for (i, d) in store.defs.iter().enumerate() {
        if let Some(v) = load.get(&d.name) {
            gpu.write_f32(store.w(ParamId(i)), v)?;
            gpu.write_f32(store.tensor_of(&store.ema, ParamId(i)), v)?;
        }
    }
    for ((name, t), (_, avg)) in state.iter().zip(&model.state_average()) {
        if let Some(v) = load.get(name) {
            gpu.write_f32(t, v)?;
            gpu.write_f32(avg, v)?;
        }
    }
    model.set_batches_tracked(tracked);
    model.rebuild_derived(gpu)?;
    Ok(InitReport {
        path,
        kind,
        loaded,
        reinitialized,
        left_out,
        batches_tracked: tracked,
    })
}
