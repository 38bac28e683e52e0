//! Kernel benchmarks, each beside a limit or a peer measured in the same run: the
//! peak-FMA, streaming-read and memcpy probes; dense (square GEMMs and the bundled models'
//! layers) against peak and the `gemm` crate; batch-1 GEMV (f32, f16, bf16 weights)
//! against streaming the same weight bytes (f16 also against converting them); conv2d
//! against peak and candle, and on an AVX-512 CPU also at AVX2 against the AVX2 probe;
//! max-pool against memcpy; the seed CNN's five heavy layers on one 16-image chunk (as the
//! `mnist-cnn` function runs a batch; group `chunk`, criterion's output only), to see which
//! layer an eval's time goes to.
//!
//! Run with `cargo bench -p tensorlet-benches --features peers --bench kernels` (without
//! `--features peers` the peer rows are left out). After criterion's own output it prints
//! a table of medians, ratios and the targets; see the README's "Benchmarks".

use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, SystemTime};
use tensorlet_benches::report::{Results, Table, Work};
use tensorlet_benches::{
    avx2_fma_flops, avx2_fma_probe, f16_convert_probe, lanes, memcpy_probe, peak_fma_flops,
    peak_fma_probe, single_threaded, stream_read_probe, values,
};
use tensorlet_kernels::half::{bf16, f16};
use tensorlet_kernels::{
    Activation, Conv2dParams, Kernels, Level, Pool2dParams, conv2d_out_shape, pool2d_out_shape,
};

/// Rounds of the peak-FMA probe per call (about 0.1 ms with AVX-512).
const PEAK_ITERATIONS: usize = 100_000;
/// Square GEMM sizes (M = N = K).
const SQUARE: [usize; 7] = [16, 32, 64, 128, 256, 512, 1024];
/// Square sizes whose share of peak has a target (≥ 92%).
const SQUARE_PEAK_TARGET: [usize; 3] = [256, 512, 1024];
/// The bundled models' dense layers: (name, in, out), each at batch 1 and 32.
const LAYERS: [(&str, usize, usize); 4] = [
    ("mnist-cnn fc1", 1600, 128),
    ("mnist-cnn fc2", 128, 10),
    ("mlp fc1", 10, 10),
    ("mlp fc2", 10, 1),
];
/// Batch-1 GEMV weights (rows, cols): 768 KiB of f32 (inside a 1 MiB L2; 192 rows are
/// whole 48-row panels, so the packed layout has no padding) and 64 MiB (beyond L2 and L3).
const GEMV: [(usize, usize); 2] = [(192, 1024), (4096, 4096)];
/// L2 size the GEMV cases are placed against (Zen 4: 1 MiB per core).
const L2_BYTES: usize = 1 << 20;
/// conv2d cases (c_in, c_out, side), 3×3, stride 1, no padding, batch 1: the seed CNN's
/// two layers, its 3-channel 100×100 variant, a ResNet-style 56×56 layer. Those with a
/// share-of-peak target (≥ 75%) are those with ≥ 32 input channels.
const CONV: [(usize, usize, usize); 4] = [(1, 32, 28), (32, 64, 13), (3, 32, 100), (64, 64, 56)];
/// Max-pool 2×2/2 inputs (NCHW).
const POOL: [[usize; 4]; 2] = [[1, 64, 112, 112], [1, 32, 26, 26]];

fn dense_id(m: usize, k: usize, n: usize) -> String {
    format!("{m}x{k}x{n}")
}

fn conv_id(ci: usize, co: usize, hw: usize) -> String {
    format!("{ci}to{co}_{hw}x{hw}")
}

fn shape_id(s: [usize; 4]) -> String {
    format!("{}x{}x{}x{}", s[0], s[1], s[2], s[3])
}

fn conv_flops(ci: usize, co: usize, hw: usize) -> u64 {
    let o = hw - 2;
    (2 * o * o * co * ci * 9) as u64
}

/// Every dense case: (m, k, n) for the square sizes, then each layer at batch 1 and 32.
fn dense_cases() -> Vec<(usize, usize, usize)> {
    let square = SQUARE.iter().map(|&s| (s, s, s));
    let layers = LAYERS.iter().flat_map(|&(_, k, n)| [(1, k, n), (32, k, n)]);
    square.chain(layers).collect()
}

/// AVX2 kernels when this CPU has AVX2 but detects a higher level (AVX-512): the conv2d
/// cases also run at AVX2, against the AVX2 peak-FMA probe.
fn avx2() -> Option<Kernels> {
    if Kernels::detect().level() == Level::Avx2 {
        return None;
    }
    Kernels::with_level(Level::Avx2)
}

/// The peak-FMA probe, as benchmark `peak-fma/<when>` of group `probes`, and the AVX2 one
/// as `peak-fma-avx2/<when>` when [`avx2`] measures that level.
fn peak(c: &mut Criterion, when: &str) {
    let mut g = c.benchmark_group("probes");
    g.throughput(Throughput::Elements(peak_fma_flops(PEAK_ITERATIONS)));
    g.bench_function(BenchmarkId::new("peak-fma", when), |b| {
        b.iter(|| peak_fma_probe(black_box(PEAK_ITERATIONS)))
    });
    if avx2().is_some() {
        g.throughput(Throughput::Elements(avx2_fma_flops(PEAK_ITERATIONS)));
        g.bench_function(BenchmarkId::new("peak-fma-avx2", when), |b| {
            b.iter(|| avx2_fma_probe(black_box(PEAK_ITERATIONS)))
        });
    }
    g.finish();
}

fn probes(c: &mut Criterion) {
    peak(c, "first");
    let mut g = c.benchmark_group("probes");
    for (rows, cols) in GEMV {
        let data = values(rows * cols, 7);
        let bytes = (rows * cols * 4) as u64;
        g.throughput(Throughput::Bytes(bytes));
        g.bench_with_input(BenchmarkId::new("stream", bytes), &data, |b, data| {
            b.iter(|| stream_read_probe(black_box(data)))
        });
        let mut dst = vec![0.0; data.len()];
        g.bench_with_input(BenchmarkId::new("memcpy", bytes), &data, |b, data| {
            b.iter(|| {
                memcpy_probe(black_box(data), &mut dst);
                black_box(&dst);
            })
        });
    }
    g.finish();
}

fn dense(c: &mut Criterion) {
    let k = Kernels::detect();
    let mut g = c.benchmark_group("dense");
    for (m, kk, n) in dense_cases() {
        let (x, w) = (values(m * kk, 1), values(n * kk, 2));
        let mut out = vec![0.0; m * n];
        let id = dense_id(m, kk, n);
        let packed = k.pack_dense(&w, n, kk, None).expect("valid shapes");
        g.throughput(Throughput::Elements((2 * m * kk * n) as u64));
        g.bench_function(BenchmarkId::new("tensorlet", &id), |b| {
            b.iter(|| {
                k.dense_packed(black_box(&x), m, &packed, Activation::None, &mut out)
                    .expect("valid shapes");
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("unpacked", &id), |b| {
            b.iter(|| {
                let none = Activation::None;
                k.dense(black_box(&x), m, kk, &w, n, None, none, &mut out)
                    .expect("valid shapes");
                black_box(&out);
            })
        });
        #[cfg(feature = "peers")]
        g.bench_function(BenchmarkId::new("gemm", &id), |b| {
            b.iter(|| {
                tensorlet_benches::peers::gemm_dense(black_box(&x), m, kk, &w, n, &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
}

fn gemv(c: &mut Criterion) {
    let k = Kernels::detect();
    let mut g = c.benchmark_group("gemv");
    for (n, kk) in GEMV {
        let (x, w) = (values(kk, 1), values(n * kk, 2));
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let packed = [
            ("f32", k.pack_dense(&w, n, kk, None)),
            ("f16", k.pack_dense_f16(&w16, n, kk, None)),
            ("bf16", k.pack_dense_bf16(&wb16, n, kk, None)),
        ];
        let mut out = vec![0.0; n];
        let id = format!("{n}x{kk}");
        for (ty, p) in &packed {
            let p = p.as_ref().expect("valid shapes");
            let bytes = n * kk * if *ty == "f32" { 4 } else { 2 };
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_function(BenchmarkId::new(format!("tensorlet-{ty}"), &id), |b| {
                b.iter(|| {
                    k.dense_packed(black_box(&x), 1, p, Activation::None, &mut out)
                        .expect("valid shapes");
                    black_box(&out);
                })
            });
        }
        g.throughput(Throughput::Bytes((n * kk * 4) as u64));
        g.bench_function(BenchmarkId::new("unpacked-f32", &id), |b| {
            b.iter(|| {
                k.dense(
                    black_box(&x),
                    1,
                    kk,
                    &w,
                    n,
                    None,
                    Activation::None,
                    &mut out,
                )
                .expect("valid shapes");
                black_box(&out);
            })
        });
        // The limits: streaming the f32 weight buffer itself, and its first half (as many
        // bytes as the 16-bit weights).
        g.bench_function(BenchmarkId::new("stream-f32", &id), |b| {
            b.iter(|| stream_read_probe(black_box(&w)))
        });
        g.throughput(Throughput::Bytes((n * kk * 2) as u64));
        g.bench_function(BenchmarkId::new("stream-16bit", &id), |b| {
            b.iter(|| stream_read_probe(black_box(&w[..n * kk / 2])))
        });
        // The f16 weights themselves, widened and summed: what converting costs.
        g.bench_function(BenchmarkId::new("convert-f16", &id), |b| {
            b.iter(|| f16_convert_probe(black_box(&w16)))
        });
    }
    g.finish();
}

fn conv2d(c: &mut Criterion) {
    let k = Kernels::detect();
    let mut g = c.benchmark_group("conv2d");
    let p = Conv2dParams::default();
    for (ci, co, hw) in CONV {
        let (xs, ws) = ([1, ci, hw, hw], [co, ci, 3, 3]);
        let os = conv2d_out_shape(xs, ws, &p).expect("valid geometry");
        let (x, w, bias) = (
            values(ci * hw * hw, 4),
            values(co * ci * 9, 5),
            values(co, 6),
        );
        let mut out = vec![0.0; os.iter().product()];
        let id = conv_id(ci, co, hw);
        let packed = k
            .pack_conv2d(&w, ws, Some(&bias), &p)
            .expect("valid shapes");
        g.throughput(Throughput::Elements(conv_flops(ci, co, hw)));
        g.bench_function(BenchmarkId::new("tensorlet", &id), |b| {
            b.iter(|| {
                k.conv2d_packed(black_box(&x), xs, &packed, Activation::None, &mut out)
                    .expect("valid shapes");
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("unpacked", &id), |b| {
            b.iter(|| {
                k.conv2d(
                    black_box(&x),
                    xs,
                    &w,
                    ws,
                    Some(&bias),
                    &p,
                    Activation::None,
                    &mut out,
                )
                .expect("valid shapes");
                black_box(&out);
            })
        });
        if let Some(k2) = avx2() {
            let packed = k2
                .pack_conv2d(&w, ws, Some(&bias), &p)
                .expect("valid shapes");
            g.bench_function(BenchmarkId::new("tensorlet-avx2", &id), |b| {
                b.iter(|| {
                    k2.conv2d_packed(black_box(&x), xs, &packed, Activation::None, &mut out)
                        .expect("valid shapes");
                    black_box(&out);
                })
            });
        }
        #[cfg(feature = "peers")]
        {
            let candle = tensorlet_benches::peers::CandleConv2d::new(&x, xs, &w, ws, &bias)
                .expect("candle layer");
            g.bench_function(BenchmarkId::new("candle", &id), |b| {
                b.iter(|| black_box(candle.forward().expect("candle conv2d")))
            });
        }
    }
    g.finish();
}

fn max_pool(c: &mut Criterion) {
    let k = Kernels::detect();
    let mut g = c.benchmark_group("maxpool");
    let p = Pool2dParams {
        kernel: (2, 2),
        stride: (2, 2),
        padding: (0, 0),
    };
    for xs in POOL {
        let x = values(xs.iter().product(), 8);
        let os = pool2d_out_shape(xs, &p).expect("valid geometry");
        let mut out = vec![0.0; os.iter().product()];
        let mut copy = vec![0.0; x.len()];
        let id = shape_id(xs);
        g.throughput(Throughput::Bytes((x.len() * 4) as u64));
        g.bench_function(BenchmarkId::new("tensorlet", &id), |b| {
            b.iter(|| {
                k.max_pool2d(black_box(&x), xs, &p, &mut out)
                    .expect("valid shapes");
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("memcpy", &id), |b| {
            b.iter(|| {
                memcpy_probe(black_box(&x), &mut copy);
                black_box(&copy);
            })
        });
    }
    g.finish();
}

fn table(r: &Results) -> Table {
    let peers = cfg!(feature = "peers");
    let mut t = Table::new("kernels (single thread, medians of this run)");
    // The probe runs first and last; the faster of the two is the limit (a probe slowed by
    // other work on the machine would flatter every kernel).
    let peak_work = Work::Flops(peak_fma_flops(PEAK_ITERATIONS) as f64);
    let (first, last) = (
        r.median_ns("probes", "peak-fma/first"),
        r.median_ns("probes", "peak-fma/last"),
    );
    let peak_ns = first.into_iter().chain(last).reduce(f64::min);
    t.row("peak-FMA probe, first", first, peak_work);
    t.row("peak-FMA probe, last", last, peak_work);
    let avx2_work = Work::Flops(avx2_fma_flops(PEAK_ITERATIONS) as f64);
    let avx2_peak_ns = if avx2().is_some() {
        let (first, last) = (
            r.median_ns("probes", "peak-fma-avx2/first"),
            r.median_ns("probes", "peak-fma-avx2/last"),
        );
        t.row("peak-FMA probe AVX2, first", first, avx2_work);
        t.row("peak-FMA probe AVX2, last", last, avx2_work);
        first.into_iter().chain(last).reduce(f64::min)
    } else {
        None
    };
    for (rows, cols) in GEMV {
        let bytes = rows * cols * 4;
        let mib = bytes as f64 / (1 << 20) as f64;
        let stream = r.median_ns("probes", &format!("stream/{bytes}"));
        t.row(
            format!("stream-read probe {mib} MiB"),
            stream,
            Work::Bytes(bytes as f64),
        );
        t.row(
            format!("memcpy probe {mib} MiB"),
            r.median_ns("probes", &format!("memcpy/{bytes}")),
            Work::Bytes(bytes as f64),
        )
        .vs_limit("stream-read", stream, Work::Bytes(bytes as f64), None);
    }

    for (m, kk, n) in dense_cases() {
        let id = dense_id(m, kk, n);
        let square = m == kk && kk == n;
        let case = match LAYERS.iter().find(|l| (l.1, l.2) == (kk, n)) {
            Some((name, ..)) if !square => format!("dense {name} batch {m}"),
            _ => format!("dense {m}³"),
        };
        let get = |who: &str| r.median_ns("dense", &format!("{who}/{id}"));
        let row = t.row(case, get("tensorlet"), Work::Flops((2 * m * kk * n) as f64));
        let peak_target = (square && SQUARE_PEAK_TARGET.contains(&m)).then_some(0.92);
        row.vs_limit("peak-FMA", peak_ns, peak_work, peak_target);
        if peers {
            let target = if square && m <= 64 { 1.3 } else { 1.0 };
            row.vs_peer("gemm", get("gemm"), Some(target));
        }
        row.vs_peer("tensorlet unpacked", get("unpacked"), None);
    }

    for (n, kk) in GEMV {
        let id = format!("{n}x{kk}");
        let get = |who: &str| r.median_ns("gemv", &format!("{who}/{id}"));
        let f32_ns = get("tensorlet-f32");
        let beyond_l2 = n * kk * 4 > L2_BYTES;
        let place = if beyond_l2 { "beyond L2" } else { "in L2" };
        // (label, benchmark, 32-bit weights, has the share-of-streaming target)
        let cases = [
            ("f32", "tensorlet-f32", true, true),
            ("f16", "tensorlet-f16", false, true),
            ("bf16", "tensorlet-bf16", false, false),
            ("f32 unpacked", "unpacked-f32", true, false),
        ];
        for (label, bench, wide, targeted) in cases {
            let bytes = (n * kk * if wide { 4 } else { 2 }) as f64;
            let stream = get(if wide { "stream-f32" } else { "stream-16bit" });
            let row = t.row(
                format!("gemv {label} {n}×{kk} ({place})"),
                get(bench),
                Work::Rows {
                    rows: n as f64,
                    bytes,
                },
            );
            row.vs_limit(
                "stream-read, same bytes",
                stream,
                Work::Bytes(bytes),
                targeted.then_some(0.85),
            );
            if label == "f16" {
                // In cache the f16 GEMV is bound by the conversion, not by the reads.
                row.vs_limit(
                    "f16→f32 convert probe, same bytes",
                    get("convert-f16"),
                    Work::Bytes(bytes),
                    None,
                );
            }
            if !wide {
                let target = (label == "f16" && beyond_l2).then_some(1.7);
                row.vs_peer("f32 weights (rows/s)", f32_ns, target);
            }
        }
    }

    for (ci, co, hw) in CONV {
        let id = conv_id(ci, co, hw);
        let get = |who: &str| r.median_ns("conv2d", &format!("{who}/{id}"));
        let row = t.row(
            format!("conv2d {ci}→{co} {hw}×{hw}"),
            get("tensorlet"),
            Work::Flops(conv_flops(ci, co, hw) as f64),
        );
        // The share-of-peak target is for the layers with enough channels (32→64, 64→64).
        row.vs_limit("peak-FMA", peak_ns, peak_work, (ci >= 32).then_some(0.75));
        if peers {
            row.vs_peer("candle", get("candle"), Some(1.5));
        }
        row.vs_peer("tensorlet unpacked", get("unpacked"), None);
        if avx2().is_some() {
            t.row(
                format!("conv2d {ci}→{co} {hw}×{hw} at AVX2"),
                get("tensorlet-avx2"),
                Work::Flops(conv_flops(ci, co, hw) as f64),
            )
            .vs_limit(
                "AVX2 peak-FMA",
                avx2_peak_ns,
                avx2_work,
                (ci >= 32).then_some(0.75),
            );
        }
    }

    for xs in POOL {
        let id = shape_id(xs);
        let bytes = (xs.iter().product::<usize>() * 4) as f64;
        let memcpy = r.median_ns("maxpool", &format!("memcpy/{id}"));
        t.row(
            format!("max-pool 2×2/2 [{}]", id.replace('x', ",")),
            r.median_ns("maxpool", &format!("tensorlet/{id}")),
            Work::Bytes(bytes),
        )
        .vs_limit("memcpy, same bytes", memcpy, Work::Bytes(bytes), Some(0.8));
    }

    t.note(format!(
        "SIMD level {:?}, {} f32 lanes; one thread (peers pinned to one thread too)",
        Kernels::detect().level(),
        lanes()
    ));
    t.note(
        "dense (m×k×n): y = x·wᵀ, w [n,k] row-major, no bias, no activation; tensorlet = \
         dense_packed on weights packed once (as prepared weights are); gemm packs per call; \
         `tensorlet unpacked` = Kernels::dense, which packs per call too",
    );
    t.note(
        "gemv: batch 1, throughput = weight bytes read; f16/bf16 are packed 16-bit weights, \
         compared with streaming as many bytes and with the f32 weights' rows/s",
    );
    t.note(
        "conv2d: 3×3, stride 1, no padding, batch 1, bias, no activation; tensorlet = \
         conv2d_packed (weights packed once); candle = candle-nn Conv2d with bias",
    );
    t.note("max-pool: throughput = input bytes; memcpy reads and writes the same input bytes");
    if !peers {
        t.note("peers (gemm, candle) not built: add `--features peers`");
    }
    t
}

/// The seed CNN layer by layer on one chunk of 16 images (the batch the `mnist-cnn`
/// function runs at a time), with ReLU as the function has it.
fn chunk(c: &mut Criterion) {
    let k = Kernels::detect();
    let mut g = c.benchmark_group("chunk");
    let n = 16;
    let p = Conv2dParams::default();
    let pool = Pool2dParams {
        kernel: (2, 2),
        stride: (2, 2),
        padding: (0, 0),
    };
    let relu = Activation::Relu;
    let x = values(n * 28 * 28, 1);
    let w1 = values(32 * 9, 2);
    let w2 = values(64 * 32 * 9, 3);
    let f1 = values(128 * 1600, 4);
    let p1 = k
        .pack_conv2d(&w1, [32, 1, 3, 3], Some(&values(32, 5)), &p)
        .expect("conv1");
    let p2 = k
        .pack_conv2d(&w2, [64, 32, 3, 3], Some(&values(64, 6)), &p)
        .expect("conv2");
    let pf = k
        .pack_dense(&f1, 128, 1600, Some(&values(128, 7)))
        .expect("fc1");
    let mut c1 = vec![0.0; n * 32 * 26 * 26];
    let mut q1 = vec![0.0; n * 32 * 13 * 13];
    let mut c2 = vec![0.0; n * 64 * 11 * 11];
    let mut q2 = vec![0.0; n * 64 * 5 * 5];
    let mut h = vec![0.0; n * 128];
    g.bench_function("conv1", |b| {
        b.iter(|| {
            k.conv2d_packed(black_box(&x), [n, 1, 28, 28], &p1, relu, &mut c1)
                .expect("valid shapes")
        })
    });
    g.bench_function("pool1", |b| {
        b.iter(|| {
            k.max_pool2d(black_box(&c1), [n, 32, 26, 26], &pool, &mut q1)
                .expect("valid shapes")
        })
    });
    g.bench_function("conv2", |b| {
        b.iter(|| {
            k.conv2d_packed(black_box(&q1), [n, 32, 13, 13], &p2, relu, &mut c2)
                .expect("valid shapes")
        })
    });
    g.bench_function("pool2", |b| {
        b.iter(|| {
            k.max_pool2d(black_box(&c2), [n, 64, 11, 11], &pool, &mut q2)
                .expect("valid shapes")
        })
    });
    g.bench_function("fc1", |b| {
        b.iter(|| {
            k.dense_packed(black_box(&q2), n, &pf, relu, &mut h)
                .expect("valid shapes")
        })
    });
    g.finish();
}

fn main() {
    single_threaded();
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .without_plots()
        .configure_from_args();
    probes(&mut c);
    chunk(&mut c);
    dense(&mut c);
    gemv(&mut c);
    conv2d(&mut c);
    max_pool(&mut c);
    peak(&mut c, "last");
    c.final_summary();
    println!("{}", table(&Results::since(started)).render());
}
