//! The step recorder: many dispatches, copies and clears recorded into one command encoder
//! and submitted once, with linearised grids, optional per-dispatch timestamps, and the
//! FLOPs and bytes each dispatch's launcher declares (what `effnet profile` and the
//! benchmarks hold against the adapter's measured peaks).

use serde::Serialize;

use super::context::Gpu;
use super::kernel::{Kernel, PARAMS_BYTES};
use super::tensor::Tensor;
use super::uniform::Uniform;
use super::uniforms::SLOTS_PER_PAGE;
use crate::error::{Error, Result};

/// The work one dispatch must do, as its launcher counts it (in the spirit of ggml's
/// test-backend-ops perf mode): floating-point operations (a multiply-add is 2; for
/// elementwise and reduction kernels a nominal count per element, a transcendental
/// counting as one) and the bytes it must move if each tensor it reads is read once and
/// each it writes is written once (re-reads, partial sums and placeholder bindings are not
/// counted). Achieved GFLOP/s and GB/s are these over the measured time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Cost {
    /// Floating-point operations.
    pub flops: f64,
    /// Bytes moved to or from memory.
    pub bytes: f64,
}

impl Cost {
    /// `flops` operations reading `read` and writing `written` 4-byte elements.
    pub fn f32s(flops: f64, read: usize, written: usize) -> Self {
        Self {
            flops,
            bytes: 4.0 * (read + written) as f64,
        }
    }

    /// The sum of two costs.
    pub fn plus(self, o: Cost) -> Cost {
        Cost {
            flops: self.flops + o.flops,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), Cost::plus)
    }
}

/// Workgroup grid of a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// `n` workgroups, laid out as (x, y) with x at most the grid-dimension cap; shaders
    /// recover the linear index as `wid.x + wid.y * nwg.x` and skip indices `>= n`.
    Linear(u32),
    /// An explicit 3-D grid (each dimension must fit the adapter's limit).
    Dims(u32, u32, u32),
}

impl Grid {
    /// The (x, y, z) dispatched for this grid under a per-dimension cap.
    pub fn dims(self, cap: u32) -> (u32, u32, u32) {
        match self {
            Grid::Linear(0) => (0, 0, 0),
            Grid::Linear(n) if n <= cap => (n, 1, 1),
            Grid::Linear(n) => (cap, n.div_ceil(cap), 1),
            Grid::Dims(x, y, z) => (x, y, z),
        }
    }
}

/// Workgroups needed for `n` items at `per_group` items per workgroup.
pub fn groups_for(n: usize, per_group: usize) -> u32 {
    n.div_ceil(per_group) as u32
}

enum Op {
    Dispatch {
        pipeline: wgpu::ComputePipeline,
        bind_group: wgpu::BindGroup,
        dims: (u32, u32, u32),
        label: &'static str,
    },
    Copy {
        src: Tensor,
        dst: Tensor,
    },
    Clear(Tensor),
}

/// One kernel's measured GPU time (see [`Recorder::with_profiling`]).
#[derive(Clone, Debug)]
pub struct KernelTiming {
    /// Kernel (entry point) name.
    pub label: &'static str,
    /// Caller-supplied tag (e.g. the layer), if any.
    pub tag: String,
    /// GPU time in nanoseconds.
    pub ns: f64,
    /// The work the launcher declared for this dispatch.
    pub cost: Cost,
}

/// Records a whole step's work; [`Recorder::submit`] sends it in one command buffer.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    ops: Vec<Op>,
    tags: Vec<String>,
    costs: Vec<(&'static str, Cost)>,
    pages: Vec<wgpu::Buffer>,
    page_data: Vec<Vec<u8>>,
    slot: u64,
    profile: bool,
    tag: String,
}

/// What a profiled submission reads back: the timestamp staging buffer, and each
/// dispatch's (kernel label, tag, declared cost) in order.
type TimingReadback = (wgpu::Buffer, Vec<(&'static str, String, Cost)>);

/// A submitted step: wait on it, or read its kernel timings when profiling.
pub struct Submitted {
    /// The queue submission.
    pub index: wgpu::SubmissionIndex,
    timing: Option<TimingReadback>,
}

impl<'g> Recorder<'g> {
    /// A new, empty recorder.
    pub fn new(gpu: &'g Gpu) -> Self {
        Self {
            gpu,
            ops: Vec::new(),
            tags: Vec::new(),
            costs: Vec::new(),
            pages: Vec::new(),
            page_data: Vec::new(),
            slot: SLOTS_PER_PAGE,
            profile: false,
            tag: String::new(),
        }
    }

    /// Time every dispatch with timestamp queries (if the adapter supports them).
    pub fn with_profiling(mut self, on: bool) -> Self {
        self.profile = on && self.gpu.features.timestamp_query;
        self
    }

    /// Tag later dispatches (e.g. with the layer name) for profiles.
    pub fn set_tag(&mut self, tag: impl Into<String>) {
        self.tag = tag.into();
    }

    /// The device this recorder records for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Number of recorded dispatches.
    pub fn dispatch_count(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o, Op::Dispatch { .. }))
            .count()
    }

    /// The (kernel entry point, declared cost) of every dispatch recorded so far, in order.
    pub fn costs(&self) -> &[(&'static str, Cost)] {
        &self.costs
    }

    /// The summed cost of every dispatch recorded so far.
    pub fn total_cost(&self) -> Cost {
        self.costs.iter().map(|(_, c)| *c).sum()
    }

    fn param_slot(&mut self, params: &[u8]) -> Result<(usize, u64)> {
        // Every parameter block fits its slot: `uniform_block!` asserts it at compile time.
        debug_assert!(params.len() as u64 <= PARAMS_BYTES);
        if self.slot == SLOTS_PER_PAGE {
            self.pages.push(self.gpu.uniforms.take(&self.gpu.device));
            self.page_data
                .push(vec![0u8; (SLOTS_PER_PAGE * PARAMS_BYTES) as usize]);
            self.slot = 0;
        }
        let page = self.pages.len() - 1;
        let off = self.slot * PARAMS_BYTES;
        self.page_data[page][off as usize..off as usize + params.len()].copy_from_slice(params);
        self.slot += 1;
        Ok((page, off))
    }

    /// Record one dispatch of `kernel` (with override `constants`): its parameter block,
    /// its storage bindings in order, its grid, and the work it does (see [`Cost`]).
    pub fn dispatch<P: Uniform>(
        &mut self,
        kernel: &'static Kernel<P>,
        constants: &[(&str, f64)],
        params: &P,
        bindings: &[&Tensor],
        grid: Grid,
        cost: Cost,
    ) -> Result<()> {
        let def = kernel.def();
        let p = self.gpu.pipeline(def, constants)?;
        if bindings.len() != def.bindings.len() {
            return Err(Error::Config(format!(
                "kernel {} takes {} buffers, got {}",
                def.entry,
                def.bindings.len(),
                bindings.len()
            )));
        }
        let cap = self.gpu.grid_dim_cap();
        let dims = grid.dims(cap);
        let max = self.gpu.limits.max_compute_workgroups_per_dimension;
        if dims.0 > max || dims.1 > max || dims.2 > max {
            return Err(Error::TooLarge(format!(
                "kernel {} needs a grid of {dims:?} workgroups, over this adapter's {max} per \
                 dimension; reduce the batch size",
                def.entry
            )));
        }
        if dims.0 == 0 || dims.1 == 0 || dims.2 == 0 {
            return Ok(());
        }
        let (page, off) = self.param_slot(bytemuck::bytes_of(params))?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.pages[page],
                offset: off,
                size: std::num::NonZeroU64::new(PARAMS_BYTES),
            }),
        }];
        for (i, t) in bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: t.binding(),
            });
        }
        let bind_group = self
            .gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(p.label),
                layout: &p.layout,
                entries: &entries,
            });
        self.ops.push(Op::Dispatch {
            pipeline: p.pipeline.clone(),
            bind_group,
            dims,
            label: p.label,
        });
        self.tags.push(self.tag.clone());
        self.costs.push((p.label, cost));
        Ok(())
    }

    /// Record a copy of `src` into `dst` (same element count).
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::Shape(format!(
                "copy of {} elements into {}",
                src.len(),
                dst.len()
            )));
        }
        self.ops.push(Op::Copy {
            src: src.clone(),
            dst: dst.clone(),
        });
        Ok(())
    }

    /// Record a copy of all of `src` into `dst` from element `at` on (`dst` must hold
    /// `at + src.len()` elements).
    pub fn copy_into(&mut self, src: &Tensor, dst: &Tensor, at: usize) -> Result<()> {
        let view = dst.copy_view(at, src.len())?;
        self.copy(src, &view)
    }

    /// Record zero-filling `t`.
    pub fn clear(&mut self, t: &Tensor) {
        self.ops.push(Op::Clear(t.clone()));
    }

    /// Encode everything and submit it in one command buffer.
    pub fn submit(self) -> Result<Submitted> {
        let gpu = self.gpu;
        for (page, data) in self.pages.iter().zip(&self.page_data) {
            let used = if std::ptr::eq(data, self.page_data.last().unwrap()) {
                (self.slot * PARAMS_BYTES) as usize
            } else {
                data.len()
            };
            if used > 0 {
                gpu.queue.write_buffer(page, 0, &data[..used]);
            }
        }
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        let n_dispatch = self
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Dispatch { .. }))
            .count() as u32;
        let query = if self.profile && n_dispatch > 0 {
            let count = (n_dispatch * 2).min(4096);
            Some(gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }))
        } else {
            None
        };
        let mut labels = Vec::new();
        let mut qi = 0u32;
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        let mut tags = self.tags.into_iter();
        let mut costs = self.costs.into_iter();
        for op in self.ops {
            match op {
                Op::Dispatch {
                    pipeline,
                    bind_group,
                    dims,
                    label,
                } => {
                    let tag = tags.next().unwrap_or_default();
                    let cost = costs.next().map(|(_, c)| c).unwrap_or_default();
                    let timed = query.as_ref().filter(|q| qi + 2 <= q.count());
                    if let Some(q) = timed {
                        drop(pass.take());
                        let mut p = enc
                            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                                label: Some(label),
                                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                                    query_set: q,
                                    beginning_of_pass_write_index: Some(qi),
                                    end_of_pass_write_index: Some(qi + 1),
                                }),
                            })
                            .forget_lifetime();
                        p.set_pipeline(&pipeline);
                        p.set_bind_group(0, &bind_group, &[]);
                        p.dispatch_workgroups(dims.0, dims.1, dims.2);
                        drop(p);
                        qi += 2;
                        labels.push((label, tag, cost));
                    } else {
                        let p = pass.get_or_insert_with(|| {
                            enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                                label: Some("step"),
                                timestamp_writes: None,
                            })
                            .forget_lifetime()
                        });
                        p.set_pipeline(&pipeline);
                        p.set_bind_group(0, &bind_group, &[]);
                        p.dispatch_workgroups(dims.0, dims.1, dims.2);
                    }
                }
                Op::Copy { src, dst } => {
                    drop(pass.take());
                    if src.bytes() > 0 {
                        enc.copy_buffer_to_buffer(
                            &src.buffer,
                            src.offset,
                            &dst.buffer,
                            dst.offset,
                            src.bytes(),
                        );
                    }
                }
                Op::Clear(t) => {
                    drop(pass.take());
                    if t.bytes() > 0 {
                        enc.clear_buffer(&t.buffer, t.offset, Some(t.bytes().div_ceil(4) * 4));
                    }
                }
            }
        }
        drop(pass);
        let timing = match &query {
            Some(q) if qi > 0 => {
                let bytes = qi as u64 * 8;
                let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("ts-resolve"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("ts-read"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                enc.resolve_query_set(q, 0..qi, &resolve, 0);
                enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
                Some((staging, labels))
            }
            _ => None,
        };
        let index = gpu.queue.submit([enc.finish()]);
        gpu.uniforms.give_back(self.pages);
        gpu.check_errors()?;
        Ok(Submitted { index, timing })
    }
}

impl Submitted {
    /// Block until this submission has finished.
    pub fn wait(&self, gpu: &Gpu) -> Result<()> {
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(self.index.clone()),
                timeout: None,
            })
            .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))?;
        gpu.check_errors()
    }

    /// Wait, then return per-dispatch GPU times (empty when not profiling).
    pub fn timings(self, gpu: &Gpu) -> Result<Vec<KernelTiming>> {
        self.wait(gpu)?;
        let Some((staging, labels)) = self.timing else {
            return Ok(Vec::new());
        };
        let done = std::sync::Arc::new(std::sync::Mutex::new(None));
        let d2 = done.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            *d2.lock().unwrap() = Some(r.is_ok());
        });
        let d3 = done.clone();
        gpu.wait_for(move || d3.lock().unwrap().is_some())?;
        if *done.lock().unwrap() != Some(true) {
            return Err(Error::Device("timestamp readback failed".into()));
        }
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Device(e.to_string()))?;
        let ts: &[u64] = bytemuck::cast_slice(&view);
        let period = gpu.queue.get_timestamp_period() as f64;
        let out = labels
            .into_iter()
            .enumerate()
            .map(|(i, (label, tag, cost))| KernelTiming {
                label,
                tag,
                ns: ts[2 * i + 1].saturating_sub(ts[2 * i]) as f64 * period,
                cost,
            })
            .collect();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}
