//! Make an ImageNet-style image folder of synthetic 500x375 JPEGs for `effnet bench data`
//! and folder-dataset training runs (photos are not packaged; never commit the output):
//!
//!     cargo run --release --example gen_jpegs -- /tmp/effnet-jpegs [classes] [train-per-class] [val-per-class]
//!
//! writes `/tmp/effnet-jpegs/{train,val}/class_NNN/NNNNN.jpg` (default 10 classes, 100 and
//! 10 images each).

use effnet::data::synth::{write_tree, SynthSpec};

fn main() -> effnet::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(root) = args.first() else {
        eprintln!("usage: gen_jpegs OUT_DIR [classes] [train-per-class] [val-per-class]");
        std::process::exit(2);
    };
    let num = |i: usize, d: usize| -> usize {
        args.get(i).map_or(d, |s| {
            s.parse().unwrap_or_else(|_| {
                eprintln!("not a count: {s}");
                std::process::exit(2)
            })
        })
    };
    let d = SynthSpec::default();
    let spec = SynthSpec {
        classes: num(1, d.classes),
        train_per_class: num(2, d.train_per_class),
        val_per_class: num(3, d.val_per_class),
        ..d
    };
    let t = std::time::Instant::now();
    let n = write_tree(std::path::Path::new(root), &spec)?;
    println!(
        "wrote {n} {}x{} JPEGs under {root} in {:.1} s",
        spec.width,
        spec.height,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
