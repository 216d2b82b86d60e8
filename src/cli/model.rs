//! `effnet model`: a preset's layer table with parameters and multiply-accumulates.

use clap::Args;

use crate::error::Result;
use crate::models::{layer_table, totals, NormChoice, Preset};

/// Options of `effnet model`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Preset.
    pub preset: Preset,
    /// Input resolution (default: the preset's native one).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Normalization.
    #[arg(long, value_enum, default_value_t = NormChoice::Bn)]
    pub norm: NormChoice,
    /// Output classes.
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `effnet model`.
pub fn run(a: &ModelArgs) -> Result<()> {
    let mut cfg = a.preset.config();
    cfg.norm = a.norm;
    cfg.classes = a.classes;
    cfg.validate()?;
    let image = a.image_size.unwrap_or(cfg.resolution);
    let rows = layer_table(&cfg, image);
    let (params, macs) = totals(&cfg, image);
    if a.json {
        let v = serde_json::json!({
            "config": cfg, "image_size": image, "params": params, "macs": macs, "layers": rows
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("serializable")
        );
        return Ok(());
    }
    println!("{} ({}) at {image}x{image}", cfg.name, cfg.norm.name());
    println!(
        "{:<26} {:<22} {:>16} {:>10} {:>12}",
        "layer", "kind", "output HxWxC", "params", "MACs"
    );
    for r in &rows {
        println!(
            "{:<26} {:<22} {:>16} {:>10} {:>12}",
            r.name,
            r.kind,
            format!("{}x{}x{}", r.out[0], r.out[1], r.out[2]),
            r.params,
            r.macs
        );
    }
    println!(
        "total: {:.2}M parameters, {:.3}G MACs per image",
        params as f64 / 1e6,
        macs as f64 / 1e9
    );
    Ok(())
}
