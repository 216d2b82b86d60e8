//! `effnet info`: every adapter, the chosen one with its limits and features.

use clap::Args;

use crate::error::Result;
use crate::gpu::{Gpu, GpuOptions};

/// Options of `effnet info`.
#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `effnet info`.
pub fn run(opts: &GpuOptions, a: &InfoArgs) -> Result<()> {
    let gpu = Gpu::new(opts)?;
    let rep = gpu.report()?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rep).expect("serializable")
        );
        return Ok(());
    }
    println!("adapters:");
    for a in &rep.adapters {
        println!(
            "  {} [{}; {}; {}]",
            a.name, a.backend, a.device_type, a.driver
        );
    }
    println!("chosen: {} ({})", rep.chosen.name, rep.chosen.backend);
    let l = &rep.limits;
    println!("limits:");
    println!(
        "  max_storage_buffer_binding_size {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    println!("  max_buffer_size {} MiB", l.max_buffer_size >> 20);
    println!(
        "  max_storage_buffers_per_shader_stage {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroups_per_dimension {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_compute_workgroup_storage_size {} KiB",
        l.max_compute_workgroup_storage_size >> 10
    );
    println!(
        "  max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  subgroup size {}..{}",
        l.subgroup_size.0, l.subgroup_size.1
    );
    let f = rep.features;
    println!(
        "features: timestamp_query {}, subgroup {}, shader_f16 {}",
        f.timestamp_query, f.subgroup, f.shader_f16
    );
    println!(
        "shader runtime checks: {} (EFFNET_SHADER_CHECKS=1 turns them on)",
        if rep.shader_checks { "on" } else { "off" }
    );
    Ok(())
}
