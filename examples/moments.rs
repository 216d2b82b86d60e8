//! Moments of signal and sensitivity at initialization (paper 3) through the library API:
//! a batch-normalized feed-forward net, then a residual one, each written to
//! `runs/moments/example-<net>/` (moments.csv, summary.json, PNG figures).
//!
//!     cargo run --release --example moments -- [depth] [width] [batch] [sims] [input]
//!
//! Defaults (50, 64, 32, 10, gaussian) run in about a minute on lavapipe; the paper's
//! sizes are `200 512 64 1000` on a real GPU (`effnet moments` has every option).

use std::path::Path;

use effnet::moments::{self, output, InputKind, InputSource, Net, NetConfig};
use effnet::{Gpu, GpuOptions};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> effnet::Result<()> {
    let depth = arg(1, 50);
    let width = arg(2, 64);
    let batch = arg(3, 32);
    let sims = arg(4, 10);
    let kind = std::env::args()
        .nth(5)
        .map(|s| InputKind::parse(&s))
        .transpose()?
        .unwrap_or(InputKind::Gaussian);
    let input = match kind {
        InputKind::Gaussian => InputSource::gaussian(28, 28, 1),
        InputKind::FashionMnist => {
            InputSource::fashion_mnist(Path::new(effnet::data::FASHION_MNIST_DIR))?
        }
    };
    let gpu = Gpu::new(&GpuOptions::from_env())?;
    println!("adapter: {} ({:?})", gpu.info.name, gpu.info.backend);
    for net in [Net::BnFf, Net::BnRes] {
        let mut cfg = NetConfig::new(net);
        cfg.depth = depth;
        cfg.width = width;
        cfg.batch = batch;
        cfg.every = 1;
        let t0 = std::time::Instant::now();
        let run = moments::run_net(&gpu, &cfg, &input, sims, |_, _| {})?;
        let dir = Path::new("runs/moments").join(format!("example-{}", net.name()));
        output::write_net(&dir, &cfg, &run.table, &run.fits)?;
        let f = &run.fits;
        println!(
            "{} depth {depth} width {width} batch {batch} sims {sims}: {:.1} s -> {}",
            net.name(),
            t0.elapsed().as_secs_f64(),
            dir.display()
        );
        println!(
            "  chi(last) {:.4e}, ln chi vs depth: slope {:.4} (x{:.4} per layer), R^2 {:.5}; \
             ln chi vs ln depth: slope {:.4}, R^2 {:.5}",
            f.chi_last,
            f.log_chi_vs_depth.slope,
            f.chi_factor_per_layer,
            f.log_chi_vs_depth.r2,
            f.log_chi_vs_log_depth.slope,
            f.log_chi_vs_log_depth.r2
        );
        println!(
            "  dchi first {:.4} / deep half {:.4}; norm step {:.4} / {:.4}; act step {:.4} / \
             {:.4}",
            f.dchi_first,
            f.dchi_last_half,
            f.dchi_norm_first,
            f.dchi_norm_last_half,
            f.dchi_act_first,
            f.dchi_act_last_half
        );
        println!(
            "  reff(x) {:.3} -> {:.3}, reff(dx) {:.3} -> {:.3}, mu4(z) {:.3} -> {:.3}, \
             nu1(|z|) {:.3} -> {:.3}{}",
            f.reff_x.0,
            f.reff_x.1,
            f.reff_dx.0,
            f.reff_dx.1,
            f.mu4_z.0,
            f.mu4_z.1,
            f.nu1_z.0,
            f.nu1_z.1,
            f.tau.map_or(String::new(), |t| format!(", tau {t:.3}"))
        );
    }
    Ok(())
}
