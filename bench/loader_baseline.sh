#!/usr/bin/env bash
# The loader baseline of issue 13: img/s of the single loader thread of effnet before the
# worker pool (commit 96ecc1e by default), on the same folder and settings as
# `effnet bench data`, so the two can be compared paired (A B A B) on a quiet machine:
#
#   bench/loader_baseline.sh /tmp/effnet-jpegs 224 64 20      # DIR SIZE BATCH BATCHES [COMMIT]
#   effnet bench data --data-dir /tmp/effnet-jpegs --image-size 224 --batch 64 --iters 20 --workers 1,2
#
# It checks the old commit out into a temporary worktree, adds a small example that times
# the old `Loader` (decode + random-resized-crop + f32 normalization on one thread) and
# runs it. Needs a release build of the old tree (a few minutes the first time; the
# worktree and its target/ are kept under $BASE_DIR for reruns).
set -euo pipefail
dir=${1:?usage: loader_baseline.sh DIR [SIZE] [BATCH] [BATCHES] [COMMIT]}
size=${2:-224}; batch=${3:-64}; batches=${4:-20}; commit=${5:-96ecc1e}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
base=${BASE_DIR:-/tmp/effnet-loader-baseline}
if [ ! -d "$base" ]; then
  git -C "$repo" worktree add --detach "$base" "$commit"
fi
train="$dir"; [ -d "$dir/train" ] && train="$dir/train"
cat > "$base/examples/loader_baseline.rs" <<'RS'
use std::sync::Arc;
use effnet::data::{self, Loader, LoaderConfig, Transform};
fn main() -> effnet::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (size, batch, batches): (usize, usize, usize) =
        (a[1].parse().unwrap(), a[2].parse().unwrap(), a[3].parse().unwrap());
    let ds = Arc::new(data::load_folder(std::path::Path::new(&a[0]), size)?);
    let cfg = LoaderConfig {
        batch, image_size: size, transform: Transform::RandomResizedCrop { min_area: 0.08 },
        shuffle: true, drop_last: true, seed: 0,
        mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225],
    };
    let t = std::time::Instant::now();
    let mut l = Loader::start(ds, cfg, 0, 0, None)?;
    for _ in 0..batches { l.next_batch()?.expect("batch"); }
    let s = t.elapsed().as_secs_f64();
    println!("baseline loader (1 thread): {:.1} img/s at {size}px over {} images", (batches * batch) as f64 / s, batches * batch);
    Ok(())
}
RS
(cd "$base" && cargo run --release --quiet --example loader_baseline -- "$train" "$size" "$batch" "$batches")
