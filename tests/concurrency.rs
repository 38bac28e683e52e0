//! Many threads of mixed requests over both bundled functions while a version swap
//! happens: every output equals the sequential result of the version the request got, bit
//! for bit. And the registry's other promises: a version that fails to load leaves the old
//! one serving, and unloading waits for requests in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tensorlet_host::{
    ErrorKind, Model, ModelSettings, Registry, Runtime, RuntimeConfig, Tensor, bundled,
};

mod common;

/// Inputs of each model: (input name, shape, values).
fn inputs(model: &str) -> Vec<(String, Tensor)> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..4)
        .map(|i| {
            let (name, shape) = match model {
                "mlp" => ("x", vec![1 + i, 10]),
                _ => ("image", vec![1 + i % 2, 1, 28, 28]),
            };
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| next()).collect();
            (name.to_string(), Tensor::from_f32(shape, data).unwrap())
        })
        .collect()
}

/// Model `name` version `version` with the weights in `weights` (bundled if `None`).
fn model(rt: &Runtime, name: &str, version: u64, weights: Option<&str>) -> Model {
    let b = bundled::find(name).unwrap();
    let function = rt.load_function(b.name, b.component).unwrap();
    let weights = match weights {
        Some(file) => rt.load_weights_file(&common::fixture(file)).unwrap(),
        None => rt.load_weights(name, b.weights().unwrap()).unwrap(),
    };
    Model::new(name, version, function, weights, ModelSettings::default()).unwrap()
}

fn bits(outputs: &[(String, Tensor)]) -> Vec<(String, Vec<u32>)> {
    outputs
        .iter()
        .map(|(n, t)| {
            let v = t.f32s(n).unwrap().iter().map(|x| x.to_bits()).collect();
            (n.clone(), v)
        })
        .collect()
}

#[test]
fn mixed_concurrent_requests_during_a_swap_equal_the_sequential_results() {
    let rt = common::runtime(RuntimeConfig {
        max_concurrent_requests: 4,
        ..RuntimeConfig::default()
    });
    let v1 = [model(&rt, "mlp", 1, None), model(&rt, "mnist-cnn", 1, None)];
    let v2 = [
        model(&rt, "mlp", 2, Some("mlp_basic.weights.safetensors")),
        model(&rt, "mnist-cnn", 2, Some("cnn_mnist.weights.safetensors")),
    ];
    // The sequential results, one request at a time.
    let mut expected = HashMap::new();
    for m in v1.iter().chain(&v2) {
        for (i, input) in inputs(m.name()).into_iter().enumerate() {
            let out = bits(&m.infer(vec![input]).unwrap());
            expected.insert((m.name().to_string(), m.version(), i), out);
        }
    }
    // The two versions really differ, so a mix-up could not pass.
    for name in ["mlp", "mnist-cnn"] {
        assert_ne!(
            expected[&(name.to_string(), 1, 0)],
            expected[&(name.to_string(), 2, 0)]
        );
    }
    let registry = Arc::new(Registry::new(rt.clone()));
    for m in v1 {
        registry.publish(m);
    }
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(HashMap::<(String, u64), usize>::new()));
    let expected = Arc::new(expected);
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (registry, done, stop) = (registry.clone(), done.clone(), stop.clone());
            let (seen, expected) = (seen.clone(), expected.clone());
            std::thread::spawn(move || {
                let models = ["mlp", "mnist-cnn"];
                let all: Vec<_> = models.iter().map(|m| inputs(m)).collect();
                let mut k = t;
                while !stop.load(Ordering::Relaxed) {
                    let which = k % 2;
                    let i = (k / 2) % 4;
                    k += 1;
                    let m = registry.get(models[which], None).unwrap();
                    let out = bits(&m.infer(vec![all[which][i].clone()]).unwrap());
                    let key = (models[which].to_string(), m.version(), i);
                    assert_eq!(
                        out, expected[&key],
                        "{key:?} differs from the sequential run"
                    );
                    *seen.lock().unwrap().entry((key.0, key.1)).or_default() += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let wait_for = |n: usize| {
        while done.load(Ordering::Relaxed) < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for(80);
    for m in v2 {
        assert!(
            registry.publish(m).is_none(),
            "a new version adds, it replaces nothing"
        );
    }
    let swapped_at = done.load(Ordering::Relaxed);
    wait_for(swapped_at + 160);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a worker failed");
    }
    let seen = seen.lock().unwrap();
    for name in ["mlp", "mnist-cnn"] {
        for version in [1, 2] {
            assert!(
                seen.get(&(name.to_string(), version)).copied().unwrap_or(0) > 0,
                "no request ran on {name} version {version}: {seen:?}"
            );
        }
    }
    assert_eq!(rt.requests_in_flight(), 0);
    assert_eq!(
        rt.host_memory_in_use(),
        0,
        "every request gave its bytes back"
    );
}

#[test]
fn a_failed_load_leaves_the_old_version_serving() {
    let rt = common::runtime(RuntimeConfig::default());
    let registry = Registry::new(rt.clone());
    registry.publish(model(&rt, "mnist-cnn", 1, None));
    let b = bundled::find("mnist-cnn").unwrap();
    let dir = std::env::temp_dir().join(format!("tensorlet-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("function.wasm");
    std::fs::write(&wasm, b.component).unwrap();
    // Weights missing `conv2.*`, and a truncated file: neither replaces version 1.
    for (file, kind) in [
        (
            "bad_cnn_missing_conv2.weights.safetensors",
            ErrorKind::NotFound,
        ),
        ("bad_truncated.weights.safetensors", ErrorKind::InvalidInput),
    ] {
        let err = registry
            .load_files(
                "mnist-cnn",
                1,
                &wasm,
                &common::fixture(file),
                ModelSettings::default(),
            )
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{file}: {err}");
        let m = registry.get("mnist-cnn", None).unwrap();
        assert_eq!(m.version(), 1);
        assert!(Arc::ptr_eq(
            m.weights(),
            &rt.load_weights("x", b.weights().unwrap()).unwrap()
        ));
        m.infer(vec![inputs("mnist-cnn").remove(0)]).unwrap();
    }
    // A good load of the same version replaces it.
    registry
        .load_files(
            "mnist-cnn",
            1,
            &wasm,
            &common::fixture("cnn_mnist.weights.safetensors"),
            ModelSettings::default(),
        )
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let m = registry.get("mnist-cnn", Some(1)).unwrap();
    assert!(
        m.weights()
            .source()
            .ends_with("cnn_mnist.weights.safetensors")
    );
}

#[test]
fn unload_waits_for_requests_in_flight() {
    let rt = common::runtime(RuntimeConfig::default());
    let registry = Arc::new(Registry::new(rt.clone()));
    registry.publish(model(&rt, "mlp", 3, None));
    let held = registry.get("mlp", Some(3)).unwrap();
    let r = registry.clone();
    let unloading =
        std::thread::spawn(move || r.unload("mlp", None, Duration::from_secs(30)).unwrap());
    // The model disappears for new requests at once...
    while registry.get("mlp", None).is_ok() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let err = registry.get("mlp", None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // ...but the request holding it finishes on it, and unload returns only after.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !unloading.is_finished(),
        "unload returned with a request in flight"
    );
    held.infer(vec![inputs("mlp").remove(0)]).unwrap();
    drop(held);
    assert_eq!(unloading.join().unwrap(), 1);
    assert!(registry.models().is_empty());
}

/// Dynamic batching: concurrent one-row requests to a model whose settings ask for it run as
/// fewer calls of the function, and each gets its own rows back, equal bit for bit to the
/// unbatched answer. A request that cannot join the batch (other trailing dimensions) gets
/// its own answer: here its own shape error, while the batch succeeds.
#[test]
fn dynamic_batching_runs_fewer_calls_and_splits_the_answers_back() {
    let rt = common::runtime(RuntimeConfig::default());
    let b = bundled::find("mlp").unwrap();
    let function = rt.load_function(b.name, b.component).unwrap();
    let weights = rt.load_weights("mlp", b.weights().unwrap()).unwrap();
    let settings = ModelSettings {
        max_batch_size: 8,
        preferred_batch_sizes: vec![6],
        max_queue_delay: Duration::from_millis(300),
        dynamic_batching: true,
    };
    let registry = Registry::new(rt.clone());
    registry.publish(Model::new("mlp", 1, function.clone(), weights.clone(), settings).unwrap());
    let plain = Model::new("mlp", 1, function, weights, ModelSettings::default()).unwrap();

    let request = |i: usize, features: usize| {
        let data: Vec<f32> = (0..features)
            .map(|j| ((i * 7 + j) % 11) as f32 - 5.0)
            .collect();
        let text = serde_json::json!({
            "inputs": [{"name": "x", "shape": [1, features], "datatype": "FP32", "data": data}]
        })
        .to_string();
        tensorlet_host::InferenceRequest::from_json(&text).unwrap()
    };
    let barrier = std::sync::Barrier::new(7);
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..7)
            .map(|i| {
                let (registry, barrier) = (&registry, &barrier);
                // Request 6 has 7 features: it cannot join (nor run).
                let req = request(i, if i == 6 { 7 } else { 10 });
                s.spawn(move || {
                    barrier.wait();
                    let m = registry.get("mlp", None).unwrap();
                    (req.clone(), m.infer_request(&req))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (req, answer)) in answers.iter().enumerate() {
        if i == 6 {
            let e = answer.as_ref().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ShapeMismatch, "{e}");
            continue;
        }
        let got = answer.as_ref().unwrap();
        let want = plain.infer_request(req).unwrap();
        // JSON numbers are the shortest text of the f32: equal text, equal bits.
        assert_eq!(
            got.outputs[0].data, want.outputs[0].data,
            "request {i}: batched and alone differ"
        );
        assert_eq!(got.outputs[0].shape, [1, 1]);
    }
    let stats = &registry.stats(Some("mlp"))[0];
    assert_eq!((stats.success, stats.fail), (6, 1), "{stats:?}");
    assert!(
        stats.executions < 6,
        "six one-row requests ran as {} calls",
        stats.executions
    );
    assert_eq!(stats.pending, 0);
}
