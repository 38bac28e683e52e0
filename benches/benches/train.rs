//! Training kernels against the same-run peak-FMA probe: the seed CNN's second convolution
//! (x `[128, 32, 13, 13]`, w `[64, 32, 3, 3]`, stride 1, no padding, output
//! `[128, 64, 11, 11]`) forward, input gradient and weight gradient, at batch 128 on one
//! thread, at the detected SIMD level and at AVX2; and the dense layer's backward products
//! as the trainer runs them (the seed CNN's fc1, 1600 → 128, at batch 128): the input
//! gradient as a dense layer of the transposed weights, the weight gradient through `matmul`.
//! Weights the trainer prepares once per optimizer step are prepared outside the timed calls.
//!
//! Run with `cargo bench -p tensorlet-benches --bench train`. After criterion's own output it
//! prints a table of medians and shares of peak beside the target (≥ 70% for the
//! three convolution products at both levels).
//!
//! All three run as Winograd F(4 × 4, 3 × 3) (about a quarter of the multiply-adds; the input
//! gradient as the forward pass on `dy` with the weights turned, 13 × 13 as 3 × 3 tiles and a
//! strip of single pixels); their throughput counts the direct convolution's FLOPs, so their
//! shares of peak are effective ones and can pass 100%.

use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, SystemTime};
use tensorlet_benches::report::{Results, Table, Work};
use tensorlet_benches::{
    avx2_fma_flops, avx2_fma_probe, lanes, peak_fma_flops, peak_fma_probe, single_threaded, values,
};
use tensorlet_kernels::{Activation, Conv2dParams, Kernels, Level, conv2d_out_shape};

/// Rounds of the peak-FMA probe per call (about 0.1 ms with AVX-512).
const PEAK_ITERATIONS: usize = 100_000;
/// The seed CNN's second convolution at the trainer's batch.
const X: [usize; 4] = [128, 32, 13, 13];
const W: [usize; 4] = [64, 32, 3, 3];
/// The seed CNN's fc1 at batch 128: (batch, in, out).
const FC: (usize, usize, usize) = (128, 1600, 128);
/// The share of peak each convolution product should reach.
const CONV_TARGET: f64 = 0.70;

/// The three convolution products, as (benchmark name, table label).
const PRODUCTS: [(&str, &str); 3] = [
    ("forward", "forward (Winograd, direct FLOPs)"),
    ("backward-input", "input gradient (Winograd, direct FLOPs)"),
    (
        "backward-weights",
        "weight gradient (Winograd, direct FLOPs)",
    ),
];

/// The levels measured: the detected one and AVX2 (if this CPU has it and it is not the
/// detected one already).
fn levels() -> Vec<Kernels> {
    let best = Kernels::detect();
    let mut levels = vec![best.clone()];
    if best.level() != Level::Avx2
        && let Some(avx2) = Kernels::with_level(Level::Avx2)
    {
        levels.push(avx2);
    }
    levels
}

/// Multiply-adds × 2 of one product of the convolution (all three are the same count).
fn conv_flops() -> u64 {
    let os = conv2d_out_shape(X, W, &Conv2dParams::default()).expect("valid geometry");
    let taps = W[1] * W[2] * W[3];
    (2 * os.iter().product::<usize>() * taps) as u64
}

/// The peak-FMA probes, as benchmarks `peak-fma/<when>` of group `probes` and, when AVX2
/// rows are measured (see [`levels`]), `peak-fma-avx2/<when>`.
fn peak(c: &mut Criterion, when: &str) {
    let mut g = c.benchmark_group("probes");
    g.throughput(Throughput::Elements(peak_fma_flops(PEAK_ITERATIONS)));
    g.bench_function(BenchmarkId::new("peak-fma", when), |b| {
        b.iter(|| peak_fma_probe(black_box(PEAK_ITERATIONS)))
    });
    if levels().len() > 1 {
        g.throughput(Throughput::Elements(avx2_fma_flops(PEAK_ITERATIONS)));
        g.bench_function(BenchmarkId::new("peak-fma-avx2", when), |b| {
            b.iter(|| avx2_fma_probe(black_box(PEAK_ITERATIONS)))
        });
    }
    g.finish();
}

fn conv(c: &mut Criterion) {
    let p = Conv2dParams::default();
    let os = conv2d_out_shape(X, W, &p).expect("valid geometry");
    let x = values(X.iter().product(), 1);
    let w = values(W.iter().product(), 2);
    let bias = values(W[0], 3);
    let dy = values(os.iter().product(), 4);
    let mut g = c.benchmark_group("train-conv2");
    g.throughput(Throughput::Elements(conv_flops()));
    for k in levels() {
        let level = format!("{:?}", k.level());
        let packed = k.pack_conv2d(&w, W, Some(&bias), &p).expect("valid shapes");
        // As a trainer does: prepared once per optimizer step, outside the timed call.
        let packed_grad = k
            .pack_conv2d_backward_input(&w, W, &p)
            .expect("valid shapes");
        let mut out = vec![0.0; os.iter().product()];
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; W[0]];
        g.bench_function(BenchmarkId::new("forward", &level), |b| {
            b.iter(|| {
                k.conv2d_packed(black_box(&x), X, &packed, Activation::None, &mut out)
                    .expect("valid shapes");
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("backward-input", &level), |b| {
            b.iter(|| {
                k.conv2d_backward_input_packed(black_box(&dy), &packed_grad, X, &mut dx)
                    .expect("valid shapes");
                black_box(&dx);
            })
        });
        g.bench_function(BenchmarkId::new("backward-weights", &level), |b| {
            b.iter(|| {
                k.conv2d_backward_weights(black_box(&x), X, &dy, W, &p, &mut dw, Some(&mut db))
                    .expect("valid shapes");
                black_box(&dw);
            })
        });
    }
    g.finish();
}

fn dense(c: &mut Criterion) {
    let (m, k_in, n) = FC;
    let x = values(m * k_in, 5);
    let w = values(n * k_in, 6);
    let dy = values(m * n, 7);
    let mut dx = vec![0.0; m * k_in];
    let mut dw = vec![0.0; n * k_in];
    let mut g = c.benchmark_group("train-fc1");
    g.throughput(Throughput::Elements((2 * m * k_in * n) as u64));
    let k = Kernels::detect();
    // dx = dy·w ([m, n]·[n, k]) as the trainer runs it: a dense layer of wᵀ ([k, n]),
    // packed once per step outside the timed call; dw = dyᵀ·x ([n, m]ᵀ·[m, k]).
    let mut wt = vec![0.0; w.len()];
    for (o, row) in w.chunks_exact(k_in).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            wt[i * n + o] = v;
        }
    }
    let packed_t = k.pack_dense(&wt, k_in, n, None).expect("valid shapes");
    g.bench_function("input-gradient", |b| {
        b.iter(|| {
            k.dense_packed(black_box(&dy), m, &packed_t, Activation::None, &mut dx)
                .expect("valid shapes");
            black_box(&dx);
        })
    });
    g.bench_function("weight-gradient", |b| {
        b.iter(|| {
            k.matmul(black_box(&dy), true, &x, false, n, m, k_in, false, &mut dw)
                .expect("valid shapes");
            black_box(&dw);
        })
    });
    g.finish();
}

fn table(r: &Results) -> Table {
    let mut t = Table::new("training kernels (single thread, medians of this run)");
    // Each probe runs first and last; the faster of the two is the limit.
    let mut probe = |id: &str, label: &str, work: Work| {
        let (first, last) = (
            r.median_ns("probes", &format!("{id}/first")),
            r.median_ns("probes", &format!("{id}/last")),
        );
        t.row(format!("{label}, first"), first, work);
        t.row(format!("{label}, last"), last, work);
        first.into_iter().chain(last).reduce(f64::min)
    };
    let peak_work = Work::Flops(peak_fma_flops(PEAK_ITERATIONS) as f64);
    let peak_ns = probe("peak-fma", "peak-FMA probe", peak_work);
    let avx2_work = Work::Flops(avx2_fma_flops(PEAK_ITERATIONS) as f64);
    let avx2_ns = if levels().len() > 1 {
        probe("peak-fma-avx2", "peak-FMA probe Avx2", avx2_work)
    } else {
        None
    };
    let flops = Work::Flops(conv_flops() as f64);
    for (i, k) in levels().into_iter().enumerate() {
        let level = format!("{:?}", k.level());
        // The detected level against its own probe, AVX2 against the AVX2 probe.
        let (limit, ns, work) = if i == 0 {
            ("peak-FMA".to_string(), peak_ns, peak_work)
        } else {
            (format!("peak-FMA {level}"), avx2_ns, avx2_work)
        };
        for (bench, label) in PRODUCTS {
            t.row(
                format!("conv2 {label}, batch 128, {level}"),
                r.median_ns("train-conv2", &format!("{bench}/{level}")),
                flops,
            )
            .vs_limit(&limit, ns, work, Some(CONV_TARGET));
        }
    }
    let (m, k_in, n) = FC;
    let fc = Work::Flops((2 * m * k_in * n) as f64);
    for (bench, label) in [
        ("input-gradient", "input gradient (dense_packed of wᵀ)"),
        ("weight-gradient", "weight gradient (matmul)"),
    ] {
        t.row(
            format!("fc1 {label}, batch {m}"),
            r.median_ns("train-fc1", bench),
            fc,
        )
        .vs_limit("peak-FMA", peak_ns, peak_work, None);
    }
    t.note(format!(
        "peak-FMA probe at the detected level ({:?}, {} f32 lanes); AVX2 rows (where the \
         detected level is wider) against the same probe on 256-bit vectors, measured in the \
         same run: on cores with two 512-bit FMA units it is half the AVX-512 peak, on Zen 4 \
         (512-bit FMAs as two halves) the same",
        Kernels::detect().level(),
        lanes()
    ));
    t.note(format!(
        "conv2: x {X:?}, w {W:?}, stride 1, no padding; forward = conv2d_packed (bias, no \
         activation), input gradient = conv2d_backward_input_packed (weights prepared once, \
         as a trainer does per step), weight gradient = conv2d_backward_weights with the \
         bias gradient; each {:.0} MFLOP",
        conv_flops() as f64 / 1e6
    ));
    t.note(format!(
        "fc1: y = x·wᵀ with x [{m}, {k_in}], w [{n}, {k_in}]; input gradient = dy·w as \
         dense_packed of wᵀ (packed once, as a trainer does per step), weight gradient = \
         matmul(dyᵀ, x), detected level"
    ));
    t
}

fn main() {
    single_threaded();
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .without_plots()
        .configure_from_args();
    peak(&mut c, "first");
    conv(&mut c);
    dense(&mut c);
    peak(&mut c, "last");
    c.final_summary();
    println!("{}", table(&Results::since(started)).render());
}
