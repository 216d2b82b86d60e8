//! `effnet model`: a preset's or timm model's layer table with parameters and
//! multiply-accumulates.

use clap::Args;

use crate::error::Result;
use crate::interop::ModelName;
use crate::models::{layer_table, totals, NormChoice};

/// Options of `effnet model`.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = crate::interop::names::mapping_help())]
pub struct ModelArgs {
    /// An effnet preset (b0..b7, b0-g16..b7-g16) or a timm name (efficientnet_b0, ...).
    pub preset: ModelName,
    /// Input resolution (default: the preset's native one).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Normalization (default: bn for presets, the named model's for timm names).
    #[arg(long, value_enum)]
    pub norm: Option<NormChoice>,
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
    if let Some(n) = a.norm {
        if a.preset.is_timm() && n != cfg.norm {
            return Err(crate::error::Error::Config(format!(
                "--norm {}: {} has {} norm (give an effnet preset for another norm)",
                n.name(),
                a.preset,
                cfg.norm.name()
            )));
        }
        cfg.norm = n;
    }
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
