//! The ImageNet train layout at full size, for measuring how long listing it takes and
//! how much memory the file list holds (the loader only needs the names, so the files are
//! empty):
//!
//!     cargo run --release --example imagenet_listing -- make /tmp/effnet-imagenet-tree
//!     cargo run --release --example imagenet_listing -- list /tmp/effnet-imagenet-tree
//!
//! `make` writes `train/nNNNNNNNN/nNNNNNNNN_K.JPEG`, 1000 classes x 1281 files (1,281,000,
//! about ImageNet-1k's 1,281,167); optional arguments: classes, files per class. `list`
//! runs `effnet::data::load_folder` on `train/` and prints the wall time and the growth
//! of the process's resident memory (Linux: /proc/self/status).

use std::path::Path;
use std::time::Instant;

fn status_kib(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU seconds of this process so far (Linux: /proc/self/stat, fields 14
/// and 15 in clock ticks, assumed 100 per second).
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // rest starts at field 3 (state, not numeric, skipped): utime is field 14.
    f.get(10).copied().unwrap_or(0.0) / 100.0 + f.get(11).copied().unwrap_or(0.0) / 100.0
}

fn main() -> effnet::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(root)) = (args.first(), args.get(1)) else {
        eprintln!("usage: imagenet_listing make|list DIR [classes] [files-per-class]");
        std::process::exit(2);
    };
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let train = Path::new(root).join("train");
    match mode.as_str() {
        "make" => {
            let (classes, per) = (num(2, 1000), num(3, 1281));
            let t = Instant::now();
            for c in 0..classes {
                let wnid = format!("n{:08}", 1_440_764 + c * 7919);
                let dir = train.join(&wnid);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| effnet::Error::file(&dir, format!("cannot create: {e}")))?;
                for k in 0..per {
                    let p = dir.join(format!("{wnid}_{k}.JPEG"));
                    std::fs::File::create(&p)
                        .map_err(|e| effnet::Error::file(&p, format!("cannot create: {e}")))?;
                }
            }
            println!(
                "made {} empty files in {classes} class folders under {} in {:.1} s",
                classes * per,
                train.display(),
                t.elapsed().as_secs_f64()
            );
        }
        "list" => {
            let rss0 = status_kib("VmRSS:").unwrap_or(0);
            let (t, cpu0) = (Instant::now(), cpu_seconds());
            let ds = effnet::data::load_folder(&train, 224)?;
            let secs = t.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            let rss1 = status_kib("VmRSS:").unwrap_or(0);
            let hwm = status_kib("VmHWM:").unwrap_or(0);
            println!(
                "listed {} images in {} classes in {secs:.2} s ({cpu:.2} s of CPU); resident \
                 memory +{:.1} MiB \
                 ({:.0} bytes per image), peak {:.1} MiB",
                ds.len(),
                ds.classes.len(),
                (rss1.saturating_sub(rss0)) as f64 / 1024.0,
                (rss1.saturating_sub(rss0)) as f64 * 1024.0 / ds.len().max(1) as f64,
                hwm as f64 / 1024.0
            );
        }
        m => {
            eprintln!("unknown mode {m}: use make or list");
            std::process::exit(2);
        }
    }
    Ok(())
}
