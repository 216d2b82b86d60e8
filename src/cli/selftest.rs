//! `effnet selftest`: every op's forward, backward and gradient checks on the chosen
//! adapter (see [`crate::selftest`]).

use clap::Args;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::selftest;

/// Options of `effnet selftest`.
#[derive(Args, Debug, Clone)]
pub struct SelftestArgs {
    /// Only ops whose name contains this.
    #[arg(long)]
    pub op: Option<String>,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Run the selftest; true when every check passed (and at least one ran).
pub fn run(gpu: &Gpu, a: &SelftestArgs) -> Result<bool> {
    if !a.json {
        println!(
            "selftest on {} ({:?}), shader runtime checks {}",
            gpu.info.name,
            gpu.info.backend,
            if gpu.shader_checks { "on" } else { "off" }
        );
    }
    if !a.json && !gpu.features.shader_f16 {
        println!("f16-storage cases (/f16) skipped: this adapter has no SHADER_F16");
    }
    let results = selftest::run(gpu, a.op.as_deref(), |r| {
        if a.json {
            println!("{}", serde_json::to_string(r).expect("serializable"));
        } else {
            println!("{}", selftest::format_line(r));
        }
    })?;
    let failed = results.iter().filter(|r| !r.pass).count();
    if results.is_empty() {
        let why = if gpu.features.shader_f16 {
            ""
        } else {
            " that this adapter can run (the f16 cases need SHADER_F16)"
        };
        eprintln!(
            "no op matches {:?}{why}",
            a.op.as_deref().unwrap_or_default()
        );
        return Ok(false);
    }
    if !a.json {
        println!("{} passed, {} failed", results.len() - failed, failed);
    }
    Ok(failed == 0)
}
