//! `effnet selftest`: every op's forward, backward and gradient checks on the chosen adapter.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::{self, CheckResult};

/// Seed used by the selftest (fixed, so a failure reproduces).
pub const SEED: u64 = 0x5EED_0001;

/// Run every case whose name contains `filter` (all when `None`).
pub fn run(
    gpu: &Gpu,
    filter: Option<&str>,
    mut on_result: impl FnMut(&CheckResult),
) -> Result<Vec<CheckResult>> {
    let mut all = Vec::new();
    for case in ops::cases() {
        let name = case.name();
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        for r in ops::check(gpu, case.as_ref(), SEED)? {
            on_result(&r);
            all.push(r);
        }
    }
    Ok(all)
}

/// One human-readable line for a result.
pub fn format_line(r: &CheckResult) -> String {
    format!(
        "{:<4} {:<44} {:<9} err {:>9.2e}  tol {:>7.0e}",
        if r.pass { "ok" } else { "FAIL" },
        r.op,
        r.direction,
        r.error,
        r.tolerance
    )
}
