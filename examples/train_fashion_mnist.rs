//! Train G16-EfficientNet-B0 with LayerNorm + Proxy Norm on Fashion-MNIST at 32 px on the
//! local GPU (or lavapipe), then fine-tune the head at 64 px (FixRes, 32 % 32 == 64 % 32).
//!
//!     cargo run --release --example train_fashion_mnist -- [epochs] [batch] [train flags...]
//!
//! Further arguments go to `effnet train` (e.g. `--resume` to continue the example's run,
//! `--overwrite` to start it over). Needs the Debian package `dataset-fashion-mnist` (or
//! set --data-dir).

use clap::Parser;
use effnet::cli::train::{run, TrainArgs};
use effnet::{Gpu, GpuOptions};

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    args: TrainArgs,
}

fn main() -> effnet::Result<()> {
    let mut argv: Vec<String> = vec!["train_fashion_mnist".into()];
    let extra: Vec<String> = std::env::args().skip(1).collect();
    let epochs = extra.first().cloned().unwrap_or_else(|| "10".into());
    let batch = extra.get(1).cloned().unwrap_or_else(|| "128".into());
    argv.extend(
        [
            "--model",
            "b0-g16",
            "--norm",
            "ln-pn",
            "--image-size",
            "32",
            "--epochs",
            &epochs,
            "--batch",
            &batch,
            "--run-dir",
            "runs/example-fashion-mnist",
            "--finetune-size",
            "64",
            "--finetune-epochs",
            "1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    argv.extend(extra.iter().skip(2).cloned());
    let a = Wrap::parse_from(argv).args;
    let gpu = Gpu::new(&GpuOptions::from_env())?;
    for (phase, s) in run(&gpu, &a)? {
        if let Some(e) = s.eval {
            println!(
                "{phase}: test top-1 {:.2}% at {:.0} img/s",
                100.0 * e.top1,
                s.img_per_s
            );
        }
    }
    Ok(())
}
