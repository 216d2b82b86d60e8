//! The parameter store: every trainable tensor of a model, laid out in one arena (split
//! only at the adapter's binding limit) with gradient, optimizer-state and weight-average
//! arenas of the same layout. Tensors that take weight decay (conv/linear weights and the
//! Proxy Norm shift/scale, SPEC §B.3, §C.2) come first, the rest (norm gamma/beta, biases)
//! after, so the optimizer is one dispatch per chunk and decay segment.

use serde::Serialize;

use crate::error::Result;
use crate::gpu::{Arena, Gpu, Tensor};
use crate::util::Rng;

/// What a parameter is (decides weight decay and initialization).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ParamKind {
    /// Convolution or linear weight (decayed).
    Weight,
    /// Bias (not decayed).
    Bias,
    /// Norm scale gamma (not decayed).
    Gamma,
    /// Norm shift beta (not decayed).
    Beta,
    /// Proxy Norm shift or scale (decayed, SPEC §C.2).
    Proxy,
}

impl ParamKind {
    /// Whether weight decay applies.
    pub fn decayed(self) -> bool {
        matches!(self, ParamKind::Weight | ParamKind::Proxy)
    }
}

/// How a parameter is initialized.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Normal(0, std).
    Normal(f64),
    /// Uniform(-bound, bound).
    Uniform(f64),
}

/// Index of a parameter in its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// A registered parameter.
#[derive(Clone, Debug, Serialize)]
pub struct ParamDef {
    /// Name (timm-like, e.g. `blocks.1.0.conv_dw.weight`).
    pub name: String,
    /// Shape in effnet's layout.
    pub shape: Vec<usize>,
    /// Kind.
    pub kind: ParamKind,
    /// Initialization.
    pub init: Init,
}

/// Parameters being registered (before allocation).
#[derive(Default, Debug)]
pub struct ParamBuilder {
    defs: Vec<ParamDef>,
}

impl ParamBuilder {
    /// Register a parameter.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        kind: ParamKind,
        init: Init,
    ) -> ParamId {
        self.defs.push(ParamDef {
            name: name.into(),
            shape: shape.to_vec(),
            kind,
            init,
        });
        ParamId(self.defs.len() - 1)
    }

    /// Registered parameters.
    pub fn defs(&self) -> &[ParamDef] {
        &self.defs
    }
}

/// A contiguous element range of one arena chunk with its weight decay: the unit of one
/// fused optimizer dispatch.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Chunk index in the arenas.
    pub chunk: usize,
    /// First element.
    pub start: usize,
    /// One past the last element.
    pub end: usize,
    /// Weight decay for this range (0 for norm, bias parameters).
    pub decay: bool,
}

/// Allocated parameters with gradients, two optimizer-state slots and a weight average.
pub struct ParamStore {
    /// Definitions in registration order.
    pub defs: Vec<ParamDef>,
    /// Arena slot of each parameter (registration index -> arena index).
    slot: Vec<usize>,
    /// Weights.
    pub w: Arena,
    /// Gradients.
    pub g: Arena,
    /// Optimizer state 1 (momentum / first moment).
    pub s1: Arena,
    /// Optimizer state 2 (mean square / second moment).
    pub s2: Arena,
    /// Exponential weight average.
    pub ema: Arena,
    /// Decay segments for the optimizer.
    pub segments: Vec<Segment>,
}

impl ParamStore {
    /// Allocate the arenas. Decayed tensors first, then the others.
    pub fn new(gpu: &Gpu, b: ParamBuilder) -> Result<ParamStore> {
        let defs = b.defs;
        let mut order: Vec<usize> = (0..defs.len()).collect();
        order.sort_by_key(|&i| (!defs[i].kind.decayed(), i));
        let mut slot = vec![0; defs.len()];
        for (k, &i) in order.iter().enumerate() {
            slot[i] = k;
        }
        let shapes: Vec<Vec<usize>> = order.iter().map(|&i| defs[i].shape.clone()).collect();
        let w = Arena::new(gpu, &shapes)?;
        let g = Arena::new(gpu, &shapes)?;
        let s1 = Arena::new(gpu, &shapes)?;
        let s2 = Arena::new(gpu, &shapes)?;
        let ema = Arena::new(gpu, &shapes)?;
        let mut store = ParamStore {
            defs,
            slot,
            w,
            g,
            s1,
            s2,
            ema,
            segments: Vec::new(),
        };
        // Per chunk, the element range of decayed tensors and of the others.
        store.segments = store.segments_for(|_| true);
        Ok(store)
    }

    /// Optimizer segments covering only the parameters `keep` selects (for fine-tuning a
    /// subset, e.g. the head); adjacent ranges are merged.
    pub fn segments_for(&self, keep: impl Fn(&ParamDef) -> bool) -> Vec<Segment> {
        let mut idx: Vec<usize> = (0..self.defs.len())
            .filter(|&i| keep(&self.defs[i]))
            .collect();
        idx.sort_by_key(|&i| self.slot[i]);
        let mut out: Vec<Segment> = Vec::new();
        let mut last_slot = usize::MAX;
        for i in idx {
            let t = self.w(ParamId(i));
            let chunk = self.w.chunk_index(t);
            let start = (t.offset / 4) as usize;
            let end = start + t.len();
            let decay = self.defs[i].kind.decayed();
            let adjacent = last_slot.wrapping_add(1) == self.slot[i];
            last_slot = self.slot[i];
            match out.last_mut() {
                // Merge only neighbours in the arena (only alignment padding in between).
                Some(s) if adjacent && s.chunk == chunk && s.decay == decay => s.end = end,
                _ => out.push(Segment {
                    chunk,
                    start,
                    end,
                    decay,
                }),
            }
        }
        out
    }

    /// Weight tensor.
    pub fn w(&self, id: ParamId) -> &Tensor {
        &self.w.tensors[self.slot[id.0]]
    }

    /// Gradient tensor.
    pub fn g(&self, id: ParamId) -> &Tensor {
        &self.g.tensors[self.slot[id.0]]
    }

    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.defs
            .iter()
            .map(|d| d.shape.iter().product::<usize>())
            .sum()
    }

    /// Id of a parameter by name.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.defs.iter().position(|d| d.name == name).map(ParamId)
    }

    /// Draw initial values with `rng` (registration order, so the same seed gives the same
    /// model on every adapter), upload them, and copy them into the weight average.
    pub fn initialize(&self, gpu: &Gpu, rng: &mut Rng, s2_init: f32) -> Result<()> {
        for (i, d) in self.defs.iter().enumerate() {
            let n: usize = d.shape.iter().product();
            let v: Vec<f32> = match d.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Normal(s) => (0..n).map(|_| (rng.normal() * s) as f32).collect(),
                Init::Uniform(b) => (0..n)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * b) as f32)
                    .collect(),
            };
            gpu.write_f32(self.w(ParamId(i)), &v)?;
            gpu.write_f32(&self.ema.tensors[self.slot[i]], &v)?;
        }
        for c in &self.s2.chunks {
            gpu.write_f32(c, &vec![s2_init; c.len()])?;
        }
        Ok(())
    }

    /// The arena tensor of `which` (w, g, s1, s2, ema) for a parameter.
    pub fn tensor_of<'a>(&'a self, arena: &'a Arena, id: ParamId) -> &'a Tensor {
        &arena.tensors[self.slot[id.0]]
    }
}
