//! Criterion benches of the grouped-convolution family on the adapter at hand
//! (`EFFNET_ADAPTER` picks it), at batch 1 so lavapipe finishes: the depthwise (direct)
//! and G16 (implicit GEMM) kernels at two B0 layer shapes each, and two 1x1 GEMMs, each in
//! forward, backward-data and backward-weight. Criterion's throughput is in FLOPs
//! (multiply-add = 2), so its "elem/s" reads as FLOP/s; a table with GFLOP/s and GB/s
//! from GPU timestamps is printed first.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use effnet::bench::conv::{bench_shape, ConvBenchShape};
use effnet::bench::print_table;
use effnet::gpu::Recorder;
use effnet::ops::conv::{self, ConvSpec};
use effnet::ops::linear::{self, LinearSpec};
use effnet::{Gpu, GpuOptions};
use std::time::Duration;

fn conv_spec(c: usize, h: usize, k: usize, stride: usize, per_group: usize) -> ConvSpec {
    ConvSpec {
        n: 1,
        h,
        w: h,
        cin: c,
        cout: c,
        k,
        stride,
        groups: c / per_group,
        bias: false,
    }
}

fn shapes() -> Vec<ConvBenchShape> {
    let lin = |h: usize, cin: usize, cout: usize| {
        ConvBenchShape::Pointwise(
            LinearSpec {
                rows: h * h,
                cin,
                cout,
                bias: false,
            },
            h,
        )
    };
    vec![
        ConvBenchShape::Conv(conv_spec(96, 112, 3, 2, 1)),
        ConvBenchShape::Conv(conv_spec(240, 28, 5, 1, 1)),
        ConvBenchShape::Conv(conv_spec(64, 112, 3, 2, 16)),
        ConvBenchShape::Conv(conv_spec(160, 28, 5, 1, 16)),
        lin(112, 16, 96),
        lin(7, 192, 1152),
    ]
}

fn run(gpu: &Gpu, f: impl Fn(&mut Recorder)) {
    let mut r = Recorder::new(gpu);
    f(&mut r);
    r.submit().unwrap().wait(gpu).unwrap();
}

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new(&GpuOptions::from_env()).expect("a GPU adapter");
    let mut rows = Vec::new();
    for s in shapes() {
        rows.extend(bench_shape(&gpu, &s, 3).unwrap());
    }
    println!(
        "conv family on {} (batch 1, GPU timestamps where available):",
        gpu.info.name
    );
    print_table(&rows, None);

    let mut g = c.benchmark_group("conv");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for shape in shapes() {
        match shape {
            ConvBenchShape::Conv(s) => {
                let x = gpu.zeros(&s.in_shape()).unwrap();
                let w = gpu.zeros(&s.weight_shape()).unwrap();
                let y = gpu.zeros(&s.out_shape()).unwrap();
                let scratch = gpu.zeros(&[s.scratch_len().max(1)]).unwrap();
                let name = s.label().replace(' ', "_");
                g.throughput(Throughput::Elements(2 * s.macs() as u64));
                g.bench_function(format!("{name}/fwd"), |b| {
                    b.iter(|| run(&gpu, |r| conv::forward(r, &s, &x, &w, None, &y).unwrap()))
                });
                g.bench_function(format!("{name}/bwd_data"), |b| {
                    b.iter(|| run(&gpu, |r| conv::backward_data(r, &s, &y, &w, &x).unwrap()))
                });
                g.bench_function(format!("{name}/bwd_weight"), |b| {
                    b.iter(|| {
                        run(&gpu, |r| {
                            conv::backward_weight(r, &s, &x, &y, &w, None, Some(&scratch)).unwrap()
                        })
                    })
                });
            }
            ConvBenchShape::Pointwise(s, h) => {
                let x = gpu.zeros(&[s.rows, s.cin]).unwrap();
                let w = gpu.zeros(&[s.cin, s.cout]).unwrap();
                let y = gpu.zeros(&[s.rows, s.cout]).unwrap();
                let scratch = gpu.zeros(&[s.scratch_len().max(1)]).unwrap();
                let name = format!("conv1x1_{}->{}_@{h}x{h}", s.cin, s.cout);
                g.throughput(Throughput::Elements(2 * s.macs() as u64));
                g.bench_function(format!("{name}/fwd"), |b| {
                    b.iter(|| run(&gpu, |r| linear::forward(r, &s, &x, &w, None, &y).unwrap()))
                });
                g.bench_function(format!("{name}/bwd_data"), |b| {
                    b.iter(|| run(&gpu, |r| linear::backward_data(r, &s, &y, &w, &x).unwrap()))
                });
                g.bench_function(format!("{name}/bwd_weight"), |b| {
                    b.iter(|| {
                        run(&gpu, |r| {
                            linear::backward_weight(r, &s, &x, &y, &w, None, Some(&scratch))
                                .unwrap()
                        })
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
