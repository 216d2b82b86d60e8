//! Criterion benches of the fused normalization kernels (BN+SiLU, GN(4)+SiLU and
//! LN+PN(SiLU), forward and backward) at a small batch of EfficientNet-B0 activation
//! shapes on the adapter at hand (`EFFNET_ADAPTER` picks it): the selftest's norm cases
//! prepared at these shapes, the same code `effnet bench norm` runs (which prints the
//! full table with the adapter's ceilings). Throughput is in bytes as the launchers
//! declare them.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use effnet::bench::norm::{bench_specs, case, label};
use effnet::gpu::Recorder;
use effnet::ops::{HostTensor, OpCase};
use effnet::util::Rng;
use effnet::{Gpu, GpuOptions};

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new(&GpuOptions::from_env()).expect("a GPU adapter");
    let batch = 2;
    for (hw, ch) in [(56 * 56, 144), (7 * 7, 1152)] {
        let side = (hw as f64).sqrt().round() as usize;
        let mut g = c.benchmark_group(format!("norm[{batch},{side},{side},{ch}]"));
        g.sample_size(10);
        for spec in bench_specs(batch, hw, ch) {
            let case = case(spec, effnet::gpu::Dtype::F32);
            let mut rng = Rng::new(1);
            let inputs: Vec<HostTensor> = case
                .inputs(&mut rng)
                .into_iter()
                .map(|i| i.tensor)
                .collect();
            let dy: Vec<HostTensor> = case
                .output_shapes(&inputs)
                .iter()
                .map(|s| HostTensor::randn(s, 1.0, &mut rng))
                .collect();
            let p = case.prepare(&gpu, &inputs, Some(&dy)).unwrap();
            // One forward first: the backward reads the statistics it saves.
            let mut r = Recorder::new(&gpu);
            p.record_forward(&mut r).unwrap();
            r.submit().unwrap().wait(&gpu).unwrap();
            let name = label(&spec).replace(' ', "_");
            for (pass, backward) in [("fwd", false), ("bwd", true)] {
                let mut rec = Recorder::new(&gpu);
                if backward {
                    p.record_backward(&mut rec).unwrap();
                } else {
                    p.record_forward(&mut rec).unwrap();
                }
                g.throughput(Throughput::Bytes(rec.total_cost().bytes as u64));
                drop(rec);
                g.bench_function(format!("{name}_{pass}"), |b| {
                    b.iter(|| {
                        let mut r = Recorder::new(&gpu);
                        if backward {
                            p.record_backward(&mut r).unwrap();
                        } else {
                            p.record_forward(&mut r).unwrap();
                        }
                        r.submit().unwrap().wait(&gpu).unwrap();
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
