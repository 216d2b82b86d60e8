//! How much memory an adapter can give effnet's buffers, where that can be known.
//!
//! CPU adapters (lavapipe, WARP, SwiftShader) and integrated GPUs allocate buffers in host
//! memory, so their bound is the memory the host has available: `MemAvailable` of
//! /proc/meminfo, lowered to the cgroup (v2) limit's headroom in a container. wgpu reports
//! no memory size for discrete GPUs (gfx-rs/wgpu#2447); there the bound is the driver's
//! own out-of-memory error, which wgpu raises before the budget is exhausted on Vulkan
//! and DX12 (see `Gpu::new`) and effnet reports per buffer.

use super::context::Gpu;

/// Memory available for buffers, and where the number comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes.
    pub bytes: u64,
    /// Where the number comes from (for messages).
    pub source: String,
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The host memory available to this process (Linux; None elsewhere).
pub fn host_available() -> Option<MemoryBudget> {
    let mem = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(cur)) if max.saturating_sub(cur) < mem => Some(MemoryBudget {
            bytes: max.saturating_sub(cur),
            source: "host memory left under this container's cgroup limit".into(),
        }),
        _ => Some(MemoryBudget {
            bytes: mem,
            source: "host memory available (MemAvailable in /proc/meminfo)".into(),
        }),
    }
}

impl Gpu {
    /// The memory bound of this adapter, where one is known: host memory for CPU and
    /// integrated adapters, None for discrete and virtual GPUs (see the module docs).
    pub fn memory_budget(&self) -> Option<MemoryBudget> {
        match self.info.device_type {
            wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu => host_available(),
            _ => None,
        }
    }
}
