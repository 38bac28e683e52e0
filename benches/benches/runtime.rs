//! The sandbox's cost: component instantiation, whole requests through the library, and
//! the same requests' kernels called natively, so that the per-request overhead outside
//! the kernels (store, instance, marshalling, allocation) is request − kernels.
//!
//! Run with `cargo bench -p tensorlet-benches --bench runtime` (part of
//! `cargo bench -p tensorlet-benches --features peers`). After criterion's own output it
//! prints a table; see the README's "Benchmarks".

use criterion::{BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::{Duration, SystemTime};
use tensorlet_benches::report::{Results, Table, Work};
use tensorlet_benches::{single_threaded, values};
use tensorlet_host::{Runtime, RuntimeConfig, Tensor};
use tensorlet_kernels::{
    Activation, Conv2dParams, Kernels, PackedConv2d, PackedDense, Pool2dParams,
};

/// The design's budget for per-request overhead outside the kernels: "tens of
/// microseconds", i.e. under 100 µs.
const OVERHEAD_BUDGET_NS: f64 = 100_000.0;

/// mnist-cnn's kernels at batch 1, called natively in the order the function calls them
/// (conv1 + relu, pool, conv2 + relu, pool, fc1 + relu, fc2, softmax), into buffers
/// allocated once.
struct MnistKernels {
    k: Kernels,
    image: Vec<f32>,
    conv1: PackedConv2d,
    conv2: PackedConv2d,
    fc1: PackedDense,
    fc2: PackedDense,
    c1: Vec<f32>,
    p1: Vec<f32>,
    c2: Vec<f32>,
    p2: Vec<f32>,
    h: Vec<f32>,
    y: Vec<f32>,
}

impl MnistKernels {
    /// Packs the weights once, as the host's prepared weights are.
    fn new(image: &[f32]) -> Self {
        let k = Kernels::detect();
        let conv = Conv2dParams::default();
        let ok = "valid shapes";
        let conv1 = k
            .pack_conv2d(
                &values(32 * 9, 1),
                [32, 1, 3, 3],
                Some(&values(32, 2)),
                &conv,
            )
            .expect(ok);
        let conv2 = k
            .pack_conv2d(
                &values(64 * 32 * 9, 3),
                [64, 32, 3, 3],
                Some(&values(64, 4)),
                &conv,
            )
            .expect(ok);
        let fc1 = k
            .pack_dense(&values(128 * 1600, 5), 128, 1600, Some(&values(128, 6)))
            .expect(ok);
        let fc2 = k
            .pack_dense(&values(10 * 128, 7), 10, 128, Some(&values(10, 8)))
            .expect(ok);
        Self {
            k,
            image: image.to_vec(),
            conv1,
            conv2,
            fc1,
            fc2,
            c1: vec![0.0; 32 * 26 * 26],
            p1: vec![0.0; 32 * 13 * 13],
            c2: vec![0.0; 64 * 11 * 11],
            p2: vec![0.0; 64 * 5 * 5],
            h: vec![0.0; 128],
            y: vec![0.0; 10],
        }
    }

    fn run(&mut self) {
        let relu = Activation::Relu;
        let pool = Pool2dParams {
            kernel: (2, 2),
            stride: (2, 2),
            padding: (0, 0),
        };
        let k = &self.k;
        let ok = "valid shapes";
        k.conv2d_packed(&self.image, [1, 1, 28, 28], &self.conv1, relu, &mut self.c1)
            .expect(ok);
        k.max_pool2d(&self.c1, [1, 32, 26, 26], &pool, &mut self.p1)
            .expect(ok);
        k.conv2d_packed(&self.p1, [1, 32, 13, 13], &self.conv2, relu, &mut self.c2)
            .expect(ok);
        k.max_pool2d(&self.c2, [1, 64, 11, 11], &pool, &mut self.p2)
            .expect(ok);
        k.dense_packed(&self.p2, 1, &self.fc1, relu, &mut self.h)
            .expect(ok);
        k.dense_packed(&self.h, 1, &self.fc2, Activation::None, &mut self.y)
            .expect(ok);
        k.softmax(&mut self.y, 10).expect(ok);
    }
}

/// mlp's kernels at batch 1 (fc1 + sigmoid, fc2) on packed weights, called natively.
fn mlp_kernels(k: &Kernels, x: &[f32], w: &[PackedDense; 2], h: &mut [f32], y: &mut [f32]) {
    k.dense_packed(x, 1, &w[0], Activation::Sigmoid, h)
        .expect("valid shapes");
    k.dense_packed(h, 1, &w[1], Activation::None, y)
        .expect("valid shapes");
}

fn runtime(c: &mut Criterion) {
    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let cnn = rt.load_bundled("mnist-cnn").expect("bundled mnist-cnn");
    let mlp = rt.load_bundled("mlp").expect("bundled mlp");
    let bundled = |name| tensorlet_host::bundled::find(name).expect("bundled");
    let cnn_w = rt
        .load_weights("mnist-cnn", bundled("mnist-cnn").weights().unwrap())
        .expect("weights");
    let mlp_w = rt
        .load_weights("mlp", bundled("mlp").weights().unwrap())
        .expect("weights");

    let mut g = c.benchmark_group("runtime");
    g.bench_function(BenchmarkId::new("instantiate", "mnist-cnn"), |b| {
        b.iter(|| cnn.instantiate_once(&cnn_w).expect("instantiate"))
    });
    g.bench_function(BenchmarkId::new("instantiate", "mlp"), |b| {
        b.iter(|| mlp.instantiate_once(&mlp_w).expect("instantiate"))
    });
    for (name, f) in [("mnist-cnn", &cnn), ("mlp", &mlp)] {
        g.bench_function(BenchmarkId::new("wasmtime-floor", name), |b| {
            b.iter_custom(|n| f.instantiate_floor(n).expect("instantiate floor"))
        });
    }

    let image: Vec<f32> = (0..784).map(|i| (i % 17) as f32 / 17.0).collect();
    g.bench_function(BenchmarkId::new("request", "mnist-cnn"), |b| {
        b.iter(|| {
            let x = Tensor::from_f32(vec![1, 1, 28, 28], image.clone()).expect("tensor");
            black_box(cnn.infer(&cnn_w, vec![("image".into(), x)]).expect("infer"))
        })
    });
    let mut native = MnistKernels::new(&image);
    g.bench_function(BenchmarkId::new("kernels", "mnist-cnn"), |b| {
        b.iter(|| {
            native.run();
            black_box(&native.y);
        })
    });

    let x: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
    g.bench_function(BenchmarkId::new("request", "mlp"), |b| {
        b.iter(|| {
            let t = Tensor::from_f32(vec![1, 10], x.clone()).expect("tensor");
            black_box(mlp.infer(&mlp_w, vec![("x".into(), t)]).expect("infer"))
        })
    });
    let k = Kernels::detect();
    let w = [
        k.pack_dense(&values(100, 1), 10, 10, Some(&values(10, 2)))
            .expect("valid shapes"),
        k.pack_dense(&values(10, 3), 1, 10, Some(&values(1, 4)))
            .expect("valid shapes"),
    ];
    let (mut h, mut y) = (vec![0.0; 10], vec![0.0; 1]);
    g.bench_function(BenchmarkId::new("kernels", "mlp"), |b| {
        b.iter(|| {
            mlp_kernels(&k, black_box(&x), &w, &mut h, &mut y);
            black_box(&y);
        })
    });
    g.finish();
}

/// Issue targets: instantiation (a fresh store and instance) within 5 µs.
const INSTANTIATE_BUDGET_NS: f64 = 5_000.0;
/// A whole mlp request (fresh store and instance, input to output tensors) within 10 µs.
const MLP_REQUEST_BUDGET_NS: f64 = 10_000.0;
/// A mnist-cnn batch-1 request within 1.10× its kernels alone.
const CNN_REQUEST_OVER_KERNELS: f64 = 1.10;

fn table(r: &Results) -> Table {
    let mut t = Table::new("runtime (single request at a time, medians of this run)");
    for (name, input) in [("mnist-cnn", "[1,1,28,28]"), ("mlp", "[1,10]")] {
        let get = |what: &str| r.median_ns("runtime", &format!("{what}/{name}"));
        t.row(
            format!("{name}: instantiate"),
            get("instantiate"),
            Work::Latency,
        )
        .within("budget: 5 µs", INSTANTIATE_BUDGET_NS)
        .vs_peer("wasmtime alone", get("wasmtime-floor"), None);
        let (request, kernels) = (get("request"), get("kernels"));
        let row = t.row(format!("{name}: request {input}"), request, Work::Latency);
        if name == "mlp" {
            row.within("budget: 10 µs", MLP_REQUEST_BUDGET_NS);
        } else if let Some(k) = kernels {
            row.within("budget: 1.10 × its kernels", CNN_REQUEST_OVER_KERNELS * k);
        }
        t.row(
            format!("{name}: its kernels, native"),
            kernels,
            Work::Latency,
        );
        t.row(
            format!("{name}: overhead = request − kernels"),
            request.zip(kernels).map(|(r, k)| r - k),
            Work::Latency,
        )
        .within("budget: tens of µs", OVERHEAD_BUDGET_NS);
    }
    t.note("request: Function::infer on the bundled weights (input tensor built in the loop), a fresh store and instance each time");
    t.note("kernels, native: the same kernel calls on the same shapes, buffers allocated once; the overhead includes instantiation");
    t.note("wasmtime alone: the same component instantiated and dropped on the same engine and pool, in a store with no host state and every import a trapping stub (what the component's shape costs before tensorlet adds anything)");
    t.note("budgets: ratio = budget ÷ measured time, met at ≥ 1×");
    t
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
    runtime(&mut c);
    c.final_summary();
    println!("{}", table(&Results::since(started)).render());
}
