//! Criterion benches of the elementwise and reduction kernels on the adapter at hand
//! (`EFFNET_ADAPTER` picks it): the selftest's activation and reduction cases prepared at
//! an EfficientNet-B0 activation shape (batch 8 x 112 x 112 x 32), the code
//! `effnet bench` runs. Throughput is in bytes as the launchers declare them.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use effnet::gpu::Recorder;
use effnet::ops::act::{Act, ActCase};
use effnet::ops::reduce::ReduceCase;
use effnet::ops::{HostTensor, OpCase};
use effnet::util::Rng;
use effnet::{Gpu, GpuOptions};

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new(&GpuOptions::from_env()).expect("a GPU adapter");
    let shape = vec![8usize, 112, 112, 32];
    let mut cases: Vec<Box<dyn OpCase>> = Vec::new();
    for act in [Act::Identity, Act::Silu] {
        cases.push(Box::new(ActCase {
            act,
            shape: shape.clone(),
            dtype: effnet::gpu::Dtype::F32,
        }));
    }
    // Global average pooling over H, W.
    cases.push(Box::new(ReduceCase {
        shape: shape.clone(),
        from: 1,
        to: 3,
        mean: true,
        dtype: effnet::gpu::Dtype::F32,
    }));
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(10);
    for case in cases {
        let mut rng = Rng::new(1);
        let inputs: Vec<HostTensor> = case
            .inputs(&mut rng)
            .into_iter()
            .map(|i| i.tensor)
            .collect();
        let p = case.prepare(&gpu, &inputs, None).unwrap();
        let mut rec = Recorder::new(&gpu);
        p.record_forward(&mut rec).unwrap();
        g.throughput(Throughput::Bytes(rec.total_cost().bytes as u64));
        drop(rec);
        g.bench_function(format!("{}_fwd", case.name()), |b| {
            b.iter(|| {
                let mut r = Recorder::new(&gpu);
                p.record_forward(&mut r).unwrap();
                r.submit().unwrap().wait(&gpu).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
