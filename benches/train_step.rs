//! Criterion bench of a whole training step (forward, loss, backward, fused optimizer,
//! Proxy Norm statistics, weight average) of a tiny G16-B0 on the adapter at hand.
//! Reports images per second through criterion's throughput.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use effnet::cli::bench_train::Bencher;
use effnet::gpu::Precision;
use effnet::models::{ModelConfig, NormChoice};
use effnet::{Gpu, GpuOptions};

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new(&GpuOptions::from_env()).expect("a GPU adapter");
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    let batch = 8;
    g.throughput(Throughput::Elements(batch as u64));
    for norm in ["bn", "gn", "ln-pn"] {
        let mut cfg = ModelConfig::preset("b0-g16").unwrap();
        cfg.width = 0.25;
        cfg.depth = 0.25;
        cfg.norm = NormChoice::parse(norm).unwrap();
        cfg.classes = 10;
        let mut b = Bencher::from_config(&gpu, &cfg, batch, 32, Precision::F32).unwrap();
        let mut step = 1;
        g.bench_function(format!("g16-b0-w0.25-{norm}-b{batch}-32px"), |bb| {
            bb.iter(|| {
                step += 1;
                b.train_step(&gpu, step).unwrap().wait(&gpu).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
