//! Kernel throughput (GFLOP/s as criterion's `elem/s`) beside the peak-FMA probe.
//!
//! Run with `cargo bench -p tensorlet-benches --bench kernels`; a kernel's share of the
//! machine's limit is its throughput divided by the `peak-fma` line of the same run.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tensorlet_benches::{peak_fma_flops, peak_fma_probe};
use tensorlet_kernels::{Activation, Conv2dParams, Kernels, conv2d_out_shape};

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn peak(c: &mut Criterion) {
    let iterations = 100_000;
    let mut g = c.benchmark_group("peak-fma");
    g.throughput(Throughput::Elements(peak_fma_flops(iterations)));
    g.bench_function("probe", |b| {
        b.iter(|| peak_fma_probe(black_box(iterations)))
    });
    g.finish();
}

fn dense(c: &mut Criterion) {
    let k = Kernels::detect();
    let mut g = c.benchmark_group("dense");
    // (m, k, n): square GEMMs and the bundled models' layers at batch 1 and 32.
    let shapes = [
        (64, 64, 64),
        (256, 256, 256),
        (512, 512, 512),
        (1, 1600, 128),
        (32, 1600, 128),
        (1, 128, 10),
        (32, 128, 10),
    ];
    for (m, kk, n) in shapes {
        let (x, w, bias) = (values(m * kk, 1), values(n * kk, 2), values(n, 3));
        let mut out = vec![0.0; m * n];
        g.throughput(Throughput::Elements((2 * m * kk * n) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{m}x{kk}x{n}")),
            &(),
            |b, _| {
                b.iter(|| {
                    k.dense(&x, m, kk, &w, n, Some(&bias), Activation::Relu, &mut out)
                        .expect("valid shapes");
                    black_box(&out);
                })
            },
        );
    }
    g.finish();
}

fn conv2d(c: &mut Criterion) {
    let k = Kernels::detect();
    let mut g = c.benchmark_group("conv2d");
    // (c_in, c_out, size): the seed CNN's layers, the 3-channel variant, a ResNet-style layer.
    for (ci, co, hw) in [(1, 32, 28), (32, 64, 13), (3, 32, 100), (64, 64, 56)] {
        let xs = [1, ci, hw, hw];
        let ws = [co, ci, 3, 3];
        let p = Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        };
        let os = conv2d_out_shape(xs, ws, &p).expect("valid geometry");
        let (x, w, bias) = (
            values(ci * hw * hw, 4),
            values(co * ci * 9, 5),
            values(co, 6),
        );
        let mut out = vec![0.0; os.iter().product()];
        let flops = 2 * os[1] * os[2] * os[3] * ci * 9;
        g.throughput(Throughput::Elements(flops as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{ci}to{co}_{hw}x{hw}")),
            &(),
            |b, _| {
                b.iter(|| {
                    k.conv2d(&x, xs, &w, ws, Some(&bias), &p, Activation::Relu, &mut out)
                        .expect("valid shapes");
                    black_box(&out);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, peak, dense, conv2d);
criterion_main!(benches);
