//! Pages of uniform memory for kernel parameters: each dispatch gets a 256-byte slot, the
//! slots of one recorder are written with one `write_buffer` per page just before submit,
//! and pages are reused across steps (queue order makes the reuse safe).

use std::sync::Mutex;

use super::kernel::PARAMS_BYTES;

/// Slots per page.
pub(crate) const SLOTS_PER_PAGE: u64 = 256;

/// A pool of uniform pages.
#[derive(Default)]
pub(crate) struct UniformPool {
    free: Mutex<Vec<wgpu::Buffer>>,
}

impl UniformPool {
    pub(crate) fn take(&self, device: &wgpu::Device) -> wgpu::Buffer {
        if let Some(b) = self.free.lock().unwrap().pop() {
            return b;
        }
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: SLOTS_PER_PAGE * PARAMS_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn give_back(&self, pages: impl IntoIterator<Item = wgpu::Buffer>) {
        self.free.lock().unwrap().extend(pages);
    }
}
