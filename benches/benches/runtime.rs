//! The sandbox's cost: component instantiation, and whole requests through the library.
//!
//! Run with `cargo bench -p tensorlet-benches --bench runtime`. `instantiate` is a fresh
//! store + instance of `mnist-cnn` (what every request pays); `request/*` are complete
//! `infer` calls on the bundled weights, the kernels' time included.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tensorlet_host::{Runtime, RuntimeConfig, Tensor};

fn runtime(c: &mut Criterion) {
    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let cnn = rt.load_bundled("mnist-cnn").expect("bundled mnist-cnn");
    let mlp = rt.load_bundled("mlp").expect("bundled mlp");
    let bundled = |name| tensorlet_host::bundled::find(name).expect("bundled");
    let cnn_w = rt
        .load_weights("mnist-cnn", bundled("mnist-cnn").weights)
        .expect("weights");
    let mlp_w = rt
        .load_weights("mlp", bundled("mlp").weights)
        .expect("weights");

    c.bench_function("instantiate/mnist-cnn", |b| {
        b.iter(|| cnn.instantiate_once(&cnn_w).expect("instantiate"))
    });
    let image: Vec<f32> = (0..784).map(|i| (i % 17) as f32 / 17.0).collect();
    c.bench_function("request/mnist-cnn-1x28x28", |b| {
        b.iter(|| {
            let x = Tensor::from_f32(vec![1, 1, 28, 28], image.clone()).expect("tensor");
            black_box(cnn.infer(&cnn_w, vec![("image".into(), x)]).expect("infer"))
        })
    });
    let x: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
    c.bench_function("request/mlp-1x10", |b| {
        b.iter(|| {
            let t = Tensor::from_f32(vec![1, 10], x.clone()).expect("tensor");
            black_box(mlp.infer(&mlp_w, vec![("x".into(), t)]).expect("infer"))
        })
    });
}

criterion_group!(benches, runtime);
criterion_main!(benches);
