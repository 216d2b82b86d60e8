//! Criterion benches of the elementwise and reduction kernels on the adapter at hand
//! (`EFFNET_ADAPTER` picks it). Each prints achieved GB/s beside the copy kernel.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use effnet::gpu::Recorder;
use effnet::ops::act::{self, Act};
use effnet::ops::reduce::{self, Axes};
use effnet::{Gpu, GpuOptions};

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new(&GpuOptions::from_env()).expect("a GPU adapter");
    // An EfficientNet-B0 activation at batch 8: 8 x 112 x 112 x 32.
    let shape = [8usize, 112, 112, 32];
    let n: usize = shape.iter().product();
    let x = gpu.zeros(&shape).unwrap();
    let y = gpu.zeros(&shape).unwrap();
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(8 * n as u64));
    for act in [Act::Identity, Act::Silu] {
        g.bench_function(format!("{}_fwd{:?}", act.name(), shape), |b| {
            b.iter(|| {
                let mut r = Recorder::new(&gpu);
                act::forward(&mut r, act, &x, &y).unwrap();
                r.submit().unwrap().wait(&gpu).unwrap();
            })
        });
    }
    let ax = Axes::of(&shape, 1, 3).unwrap();
    let out = gpu.zeros(&[shape[0], shape[3]]).unwrap();
    g.throughput(Throughput::Bytes(4 * n as u64));
    g.bench_function(format!("gap{:?}", shape), |b| {
        b.iter(|| {
            let mut r = Recorder::new(&gpu);
            reduce::sum_axis(&mut r, &x, None, &out, ax, 1.0, None).unwrap();
            r.submit().unwrap().wait(&gpu).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
