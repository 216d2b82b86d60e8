//! GPU tensors (f32 or u32 data, NHWC by convention), arenas that pack many tensors into
//! few buffers without crossing the adapter's binding limit, and readback.

use std::sync::{Arc, Mutex};

use super::context::Gpu;
use crate::error::{Error, Result};

/// A tensor's shape (row-major; activations are NHWC).
pub type Shape = Vec<usize>;

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A view of `len` 4-byte elements at `offset` bytes into a storage buffer.
///
/// Cloning is cheap (the buffer is reference counted); clones alias the same memory.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u64,
    len: usize,
    shape: Shape,
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

fn padded_bytes(len: usize) -> u64 {
    // Bindings must be non-empty and a multiple of 4 bytes; keep 16-byte granularity.
    ((len.max(1) * 4) as u64).div_ceil(16) * 16
}

impl Tensor {
    /// Element count.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.len as u64 * 4
    }

    /// The same memory under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.len {
            return Err(Error::Shape(format!(
                "cannot view {:?} ({} elements) as {:?}",
                self.shape, self.len, shape
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// The `len` elements from element `start` on, as a view for copies only: its byte
    /// offset need not meet the storage-binding alignment, so it must never be bound.
    pub(crate) fn copy_view(&self, start: usize, len: usize) -> Result<Tensor> {
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::Shape(format!(
                "elements {start}..{} of a tensor of {} elements",
                start.saturating_add(len),
                self.len
            )));
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            offset: self.offset + 4 * start as u64,
            len,
            shape: vec![len],
        })
    }

    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(
                padded_bytes(self.len).min(self.buffer.size() - self.offset),
            ),
        })
    }

    /// True when both views share memory.
    pub fn aliases(&self, other: &Tensor) -> bool {
        self.buffer == other.buffer
            && self.offset < other.offset + other.bytes().max(4)
            && other.offset < self.offset + self.bytes().max(4)
    }
}

impl Gpu {
    fn check_fits(&self, bytes: u64, what: &str) -> Result<()> {
        let max = self.max_binding_bytes();
        if bytes > max {
            return Err(Error::TooLarge(format!(
                "{what} needs {:.1} MiB but this adapter ('{}') binds at most {:.1} MiB per \
                 buffer. Reduce the batch size or image size, or use an adapter with a larger \
                 max_storage_buffer_binding_size (see `effnet info`)",
                bytes as f64 / 1048576.0,
                self.info.name,
                max as f64 / 1048576.0
            )));
        }
        Ok(())
    }

    fn raw_buffer(&self, bytes: u64, label: &str) -> Result<wgpu::Buffer> {
        self.check_fits(bytes, label)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: USAGE,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::TooLarge(format!(
                "out of GPU memory allocating {:.1} MiB for {label}: {e}. Reduce the batch size",
                bytes as f64 / 1048576.0
            )));
        }
        self.allocated
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(buffer)
    }

    /// A zero-filled tensor of the given shape in its own buffer.
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        let len = numel(shape);
        let buffer = self.raw_buffer(padded_bytes(len), "tensor")?;
        Ok(Tensor {
            buffer,
            offset: 0,
            len,
            shape: shape.to_vec(),
        })
    }

    /// Upload f32 data as a new tensor.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload_bytes(bytemuck::cast_slice(data), data.len(), shape)
    }

    /// Upload u32 data (labels, indices) as a new tensor.
    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        self.upload_bytes(bytemuck::cast_slice(data), data.len(), shape)
    }

    fn upload_bytes(&self, bytes: &[u8], len: usize, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != len {
            return Err(Error::Shape(format!(
                "{len} values do not fill shape {shape:?}"
            )));
        }
        let t = self.zeros(shape)?;
        self.write(&t, bytes)?;
        Ok(t)
    }

    /// Overwrite a tensor's contents with f32 data (queued before the next submission).
    pub fn write_f32(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        self.write(t, bytemuck::cast_slice(data))
    }

    /// Overwrite a tensor's contents with u32 data.
    pub fn write_u32(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        self.write(t, bytemuck::cast_slice(data))
    }

    /// Overwrite a tensor's contents with raw bytes (e.g. u8 pixels packed four per word);
    /// `bytes` must fill the tensor exactly.
    pub fn write_bytes(&self, t: &Tensor, bytes: &[u8]) -> Result<()> {
        self.write(t, bytes)
    }

    fn write(&self, t: &Tensor, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 != t.bytes() {
            return Err(Error::Shape(format!(
                "writing {} bytes into a tensor of {} bytes",
                bytes.len(),
                t.bytes()
            )));
        }
        if !bytes.is_empty() {
            self.queue.write_buffer(&t.buffer, t.offset, bytes);
        }
        Ok(())
    }

    /// Start an asynchronous readback of `t`: the copy is submitted now; poll the handle
    /// (or `wait` on it) later. The GPU never waits for the host.
    pub fn read_async(&self, t: &Tensor) -> Result<Readback> {
        let bytes = t.bytes().max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.div_ceil(4) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read"),
            });
        if t.bytes() > 0 {
            enc.copy_buffer_to_buffer(&t.buffer, t.offset, &staging, 0, t.bytes());
        }
        self.queue.submit([enc.finish()]);
        let state: Arc<Mutex<Option<Result<(), String>>>> = Arc::default();
        let s2 = state.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            *s2.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
        });
        Ok(Readback {
            staging,
            len: t.len(),
            state,
        })
    }

    /// Read a tensor back as f32 (blocks until the GPU is done with it).
    pub fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.read_async(t)?.wait(self)
    }

    /// Read a tensor back as u32.
    pub fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        Ok(self.read(t)?.into_iter().map(f32::to_bits).collect())
    }
}

/// A readback in flight (see [`Gpu::read_async`]).
pub struct Readback {
    staging: wgpu::Buffer,
    len: usize,
    state: Arc<Mutex<Option<Result<(), String>>>>,
}

impl Readback {
    /// The data if the copy has finished, without blocking.
    pub fn try_take(&self, gpu: &Gpu) -> Result<Option<Vec<f32>>> {
        let _ = gpu.device.poll(wgpu::PollType::Poll);
        self.take_if_ready()
    }

    fn take_if_ready(&self) -> Result<Option<Vec<f32>>> {
        match self.state.lock().unwrap().take() {
            None => Ok(None),
            Some(Err(e)) => Err(Error::Device(format!("readback failed: {e}"))),
            Some(Ok(())) => {
                let view = self
                    .staging
                    .get_mapped_range(..)
                    .map_err(|e| Error::Device(format!("readback map failed: {e}")))?;
                let v: Vec<f32> = bytemuck::cast_slice::<u8, f32>(&view)[..self.len].to_vec();
                drop(view);
                self.staging.unmap();
                Ok(Some(v))
            }
        }
    }

    /// Block until the data is there.
    pub fn wait(self, gpu: &Gpu) -> Result<Vec<f32>> {
        let state = self.state.clone();
        gpu.wait_for(move || state.lock().unwrap().is_some())?;
        self.take_if_ready()?
            .ok_or_else(|| Error::Device("readback did not complete".into()))
    }
}

/// Packs many tensors into as few buffers as the adapter's binding limit allows, each at an
/// offset aligned for storage binding. Parameters, gradients and optimizer state each live
/// in one arena so an update is one dispatch per chunk.
#[derive(Debug)]
pub struct Arena {
    /// The tensors, in the order of the requested shapes.
    pub tensors: Vec<Tensor>,
    /// The chunks: (buffer, element count including alignment padding).
    pub chunks: Vec<Tensor>,
}

impl Arena {
    /// Index of the chunk holding `t` (a tensor of this arena).
    pub fn chunk_index(&self, t: &Tensor) -> usize {
        self.chunks
            .iter()
            .position(|c| c.buffer == t.buffer)
            .expect("tensor belongs to this arena")
    }

    /// Allocate zero-filled tensors for `shapes`.
    pub fn new(gpu: &Gpu, shapes: &[Shape]) -> Result<Arena> {
        let align = gpu.limits.min_storage_buffer_offset_alignment.max(16) as u64;
        let max = gpu.max_binding_bytes() / align * align;
        // Plan chunks: (chunk index, byte offset) per tensor.
        let mut plan = Vec::with_capacity(shapes.len());
        let mut sizes = vec![0u64];
        for s in shapes {
            let bytes = padded_bytes(numel(s)).div_ceil(align) * align;
            if bytes > max {
                return Err(Error::TooLarge(format!(
                    "one tensor of shape {s:?} ({:.1} MiB) exceeds this adapter's binding \
                     limit of {:.1} MiB; reduce the model width or batch size",
                    bytes as f64 / 1048576.0,
                    max as f64 / 1048576.0
                )));
            }
            if *sizes.last().unwrap() + bytes > max {
                sizes.push(0);
            }
            let c = sizes.len() - 1;
            plan.push((c, sizes[c]));
            sizes[c] += bytes;
        }
        let mut buffers = Vec::new();
        let mut chunks = Vec::new();
        for &bytes in &sizes {
            let b = gpu.raw_buffer(bytes.max(16), "arena")?;
            chunks.push(Tensor {
                buffer: b.clone(),
                offset: 0,
                len: (bytes / 4) as usize,
                shape: vec![(bytes / 4) as usize],
            });
            buffers.push(b);
        }
        let tensors = shapes
            .iter()
            .zip(plan)
            .map(|(s, (c, off))| Tensor {
                buffer: buffers[c].clone(),
                offset: off,
                len: numel(s),
                shape: s.clone(),
            })
            .collect();
        Ok(Arena { tensors, chunks })
    }
}
