//! Criterion benches of the fused normalization kernels (BN+SiLU, GN(4)+SiLU and
//! LN+PN(SiLU), forward and backward) at a small batch of EfficientNet-B0 activation
//! shapes on the adapter at hand (`EFFNET_ADAPTER` picks it), with the copy kernel over
//! the same bytes as the bandwidth reference. `effnet bench norm` prints the full table.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use effnet::bench::norm::{bench_specs, BenchLayer};
use effnet::gpu::Recorder;
use effnet::ops::act::{self, Act};
use effnet::{Gpu, GpuOptions};

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new(&GpuOptions::from_env()).expect("a GPU adapter");
    let batch = 2;
    for (hw, ch) in [(56 * 56, 144), (7 * 7, 1152)] {
        let side = (hw as f64).sqrt().round() as usize;
        let shape = format!("[{batch},{side},{side},{ch}]");
        let mut g = c.benchmark_group(format!("norm{shape}"));
        g.sample_size(10);
        let n = batch * hw * ch;
        let x = gpu.zeros(&[n]).unwrap();
        let y = gpu.zeros(&[n]).unwrap();
        g.throughput(Throughput::Bytes(8 * n as u64));
        g.bench_function("copy", |b| {
            b.iter(|| {
                let mut r = Recorder::new(&gpu);
                act::forward(&mut r, Act::Identity, &x, &y).unwrap();
                r.submit().unwrap().wait(&gpu).unwrap();
            })
        });
        for spec in bench_specs(batch, hw, ch) {
            let layer = BenchLayer::new(&gpu, spec, 1).unwrap();
            let name = format!("{}_{}", spec.kind_name(), spec.act.name());
            g.throughput(Throughput::Bytes(layer.forward_bytes() as u64));
            g.bench_function(format!("{name}_fwd"), |b| {
                b.iter(|| {
                    let mut r = Recorder::new(&gpu);
                    layer.record_forward(&mut r).unwrap();
                    r.submit().unwrap().wait(&gpu).unwrap();
                })
            });
            g.throughput(Throughput::Bytes(layer.backward_bytes() as u64));
            g.bench_function(format!("{name}_bwd"), |b| {
                b.iter(|| {
                    let mut r = Recorder::new(&gpu);
                    layer.record_backward(&mut r).unwrap();
                    r.submit().unwrap().wait(&gpu).unwrap();
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
