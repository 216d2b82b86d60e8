//! Moments of signal and sensitivity through depth at initialization (paper 3, SPEC §D;
//! paper 2's LayerNorm collapse, SPEC §C.3).
//!
//! An input batch `x` and an infinitesimal perturbation `dx ~ N(0, 1)` are propagated
//! together through freshly initialized networks (a Jacobian-vector product: the same
//! linear operations on `dx`, normalizations divide `dx` by the batch or sample standard
//! deviation of `x` without centering, ReLU masks `dx` by `x > 0`). At chosen depths the
//! moments `nu1(|x|)`, `nu2(x)`, `mu2(x)`, `mu4(x)`, `mu2(dx)`, the normalized sensitivity
//! `chi^l = sqrt((mu2(dx^l) / mu2(x^l)) / (mu2(dx^0) / mu2(x^0)))`, its increments split
//! into the convolution/normalization step and the activation step, the effective ranks of
//! signal and perturbation (`trace / lambda_max` of the channel covariance), and the power
//! decomposition of pre-activations (channel-wise constant share: paper 2's LN collapse)
//! are summarized over independent simulations.
//!
//! - [`nets`]: the paper's networks (`vanilla`, `bn-ff`, `bn-res`, `ln-ff`, `gn-ff`,
//!   `ln-pn-ff`) and the GPU propagation;
//! - [`effnet`]: the same statistics through an EfficientNet at initialization;
//! - [`kernels`]: the WGSL launchers (periodic padding, perturbation steps, reductions);
//! - [`stats`]: percentiles, effective rank (Lanczos), fits, f64 references;
//! - [`analysis`]: per-depth tables and the fits of the paper's checks;
//! - [`output`]: CSV, JSON and PNG files.
//!
//! `effnet moments` (`src/cli/moments.rs`) drives it; docs/moments.md has the commands of
//! every figure and the comparison with SPEC §D.4.

pub mod analysis;
pub mod effnet;
pub mod kernels;
pub mod nets;
pub mod output;
pub mod stats;

pub use analysis::{net_fits, net_table, NetFits, Table};
pub use nets::{
    Divergence, InputKind, InputSource, Loc, Net, NetConfig, Propagator, SimRecord, Standardize,
};

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Everything a paper-network analysis produces.
pub struct NetRun {
    /// Per-depth summaries.
    pub table: Table,
    /// Fits of the paper's checks.
    pub fits: NetFits,
    /// The per-simulation records.
    pub sims: Vec<SimRecord>,
}

impl NetRun {
    /// The simulations that diverged: `(simulation, where)`.
    pub fn diverged(&self) -> Vec<(usize, &Divergence)> {
        self.sims
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.diverged.as_ref().map(|d| (i, d)))
            .collect()
    }

    /// A warning for a run in which some simulations diverged (None when none did).
    pub fn divergence_warning(&self) -> Option<String> {
        let div = self.diverged();
        let (sim, first) = div.iter().min_by_key(|(_, d)| d.depth)?;
        Some(format!(
            "{} of {} simulations diverged (the earliest, simulation {sim}, {first}); rows \
             from there on are summarized over the simulations still finite, or are NaN. {}",
            div.len(),
            self.sims.len(),
            first.hint()
        ))
    }
}

/// Run `sims` simulations of `cfg` on `input`, calling `progress(done, total)` after each.
pub fn run_net(
    gpu: &Gpu,
    cfg: &NetConfig,
    input: &InputSource,
    sims: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<NetRun> {
    let mut prop = Propagator::new(gpu, cfg, input)?;
    let mut records = Vec::with_capacity(sims);
    for s in 0..sims {
        records.push(prop.simulate(s, input)?);
        progress(s + 1, sims);
    }
    // A network that diverges before the first recorded row has nothing to show.
    let first = cfg.depths().first().copied().unwrap_or(1);
    if let Some(d) = records
        .iter()
        .map(|r| r.diverged.as_ref())
        .collect::<Option<Vec<_>>>()
        .filter(|d| d.iter().all(|d| d.depth == first))
        .and_then(|d| d.first().copied())
    {
        return Err(Error::Config(format!(
            "{} diverges in every simulation before any statistic is usable ({d}). {}",
            cfg.net.name(),
            d.hint()
        )));
    }
    let table = net_table(cfg, &records);
    let fits = net_fits(cfg, &table, &records);
    Ok(NetRun {
        table,
        fits,
        sims: records,
    })
}
