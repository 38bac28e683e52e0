//! End-to-end through the library: every fixture case of `tests/fixtures/manifest.json`
//! (weights, request, and the numpy reference's response) run through `tensorlet-host`
//! with the bundled `mlp` and `mnist-cnn` components.

mod common;

use common::{Case, assert_outputs_close, cases, fixture, json};
use tensorlet_host::{InferenceRequest, KernelBackend, Runtime, RuntimeConfig};

fn run(rt: &Runtime, case: &Case) -> tensorlet_host::Result<serde_json::Value> {
    let function = rt.load_bundled(&case.model)?;
    let weights = match &case.weights {
        Some(w) => rt.load_weights_file(&fixture(w))?,
        None => std::sync::Arc::new(tensorlet_host::Weights::empty()),
    };
    let request = InferenceRequest::from_json(&json(&case.request).to_string())?;
    let response = function.infer_request(&weights, &request)?;
    Ok(serde_json::to_value(response).expect("response serialises"))
}

#[test]
fn every_good_case_matches_the_numpy_reference() {
    let rt = common::runtime(RuntimeConfig::default());
    let good: Vec<_> = cases()
        .into_iter()
        .filter(|c| c.expect_error.is_none())
        .collect();
    assert!(
        good.len() >= 10,
        "manifest lists too few cases: {}",
        good.len()
    );
    for case in &good {
        let actual = run(&rt, case).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_outputs_close(&case.name, &json(&case.expected), &actual);
    }
}

#[test]
fn a_batch_larger_than_a_chunk_matches_the_numpy_reference_row_by_row() {
    // mnist-cnn runs a batch of more than 16 images in chunks of 16; 37 images make two
    // whole chunks and a partial one. Each image is one of the `cnn_mnist` case's two, in an
    // order that does not repeat with the chunk length, and each output row must be the
    // numpy reference's row for that image. The function gathers the chunks with the
    // `embedding` op, so both kernel backends run it.
    let request = json("cnn_mnist.request.json");
    let expected = json("cnn_mnist.expected.json");
    let images = common::floats(&request["inputs"][0]["data"]);
    let probs = common::floats(&expected["outputs"][0]["data"]);
    assert_eq!((images.len(), probs.len()), (2 * 784, 2 * 10));
    let pick = |i: usize| (i * i / 3 + i / 5) % 2;
    let n = 37;
    let batch: Vec<f32> = (0..n)
        .flat_map(|i| images[pick(i) * 784..][..784].iter().copied())
        .collect();
    let big = serde_json::json!({"inputs": [{
        "name": "image", "shape": [n, 1, 28, 28], "datatype": "FP32", "data": batch,
    }]});
    let want: Vec<f32> = (0..n)
        .flat_map(|i| probs[pick(i) * 10..][..10].iter().copied())
        .collect();
    let want = serde_json::json!({"outputs": [{
        "name": "probs", "shape": [n, 10], "data": want,
    }]});
    assert!((0..n).any(|i| pick(i) == 0) && (0..n).any(|i| pick(i) == 1));
    let request = InferenceRequest::from_json(&big.to_string()).unwrap();
    for kernels in [KernelBackend::Native, KernelBackend::Wasm] {
        let rt = common::runtime(RuntimeConfig {
            kernels,
            ..RuntimeConfig::default()
        });
        let function = rt.load_bundled("mnist-cnn").unwrap();
        let weights = rt
            .load_weights_file(&fixture("cnn_mnist.weights.safetensors"))
            .unwrap();
        let response = function.infer_request(&weights, &request).unwrap();
        let actual = serde_json::to_value(response).unwrap();
        assert_outputs_close(&format!("cnn_mnist × 37, {kernels:?}"), &want, &actual);
    }
}

#[test]
fn every_bad_case_is_a_typed_error_and_the_runtime_keeps_serving() {
    let rt = common::runtime(RuntimeConfig::default());
    let all = cases();
    let good = all
        .iter()
        .find(|c| c.name == "cnn_mnist")
        .expect("cnn_mnist case");
    let bad: Vec<_> = all.iter().filter(|c| c.expect_error.is_some()).collect();
    assert!(
        bad.len() >= 8,
        "manifest lists too few bad cases: {}",
        bad.len()
    );
    for case in bad {
        let err = run(&rt, case).expect_err(&case.name);
        assert_eq!(
            Some(err.kind().as_str()),
            case.expect_error.as_deref(),
            "{}: wrong error kind: {err}",
            case.name
        );
        assert!(
            err.message().len() > 20,
            "{}: message too terse: {err}",
            case.name
        );
        // The same runtime still serves a good request after each failure.
        let actual = run(&rt, good).unwrap();
        assert_outputs_close(&good.name, &json(&good.expected), &actual);
    }
}

#[test]
fn weights_are_prepared_once_per_content() {
    let rt = common::runtime(RuntimeConfig::default());
    let a = rt
        .load_weights_file(&fixture("cnn_mnist.weights.safetensors"))
        .unwrap();
    let bytes = std::fs::read(fixture("cnn_mnist.weights.safetensors")).unwrap();
    let b = rt.load_weights("copy", &bytes).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&a, &b),
        "same digest must share one prepared set"
    );
    assert_eq!(a.digest().len(), 64);
}

#[test]
fn metadata_describes_inputs_outputs_and_weights() {
    let rt = common::runtime(RuntimeConfig::default());
    let cnn = rt.load_bundled("mnist-cnn").unwrap();
    let m = cnn.metadata();
    assert_eq!(m.name, "mnist-cnn");
    let inputs: Vec<_> = m.inputs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(inputs, ["image", "png"]);
    assert_eq!(m.outputs[0].name, "probs");
    assert!(m.weights.iter().any(|w| w.name == "conv1.weight"));
    let mlp = rt.load_bundled("mlp").unwrap();
    assert_eq!(mlp.metadata().outputs[0].name, "y");
}

#[test]
fn the_compile_cache_reuses_artifacts_and_replaces_broken_ones() {
    let dir = std::env::temp_dir().join(format!("tensorlet-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let artifacts = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for engine in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(engine.path()).unwrap().flatten() {
                found.push(f.path());
            }
        }
        found
    };
    let x = || {
        let t = tensorlet_host::Tensor::from_f32(vec![1, 10], vec![0.5; 10]).unwrap();
        vec![("x".to_string(), t)]
    };
    let run = || {
        // SAFETY: the folder is this test's own, fresh temporary folder.
        let rt = unsafe { Runtime::with_compile_cache(RuntimeConfig::default(), &dir) }.unwrap();
        let f = rt.load_bundled("mlp").unwrap();
        let w = rt
            .load_weights(
                "mlp",
                tensorlet_host::bundled::find("mlp")
                    .unwrap()
                    .weights()
                    .unwrap(),
            )
            .unwrap();
        f.infer(&w, x()).unwrap()
    };
    let first = run();
    let files = artifacts(&dir);
    assert_eq!(files.len(), 1, "one artifact for one component: {files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    // A second process (runtime) loads the artifact instead of writing a new one.
    assert_eq!(run(), first);
    assert_eq!(artifacts(&dir), files);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written
    );
    // A broken artifact is compiled again and replaced, with the same results.
    std::fs::write(&files[0], b"not an artifact").unwrap();
    assert_eq!(run(), first);
    assert!(std::fs::read(&files[0]).unwrap().len() > 1000);
    // Without the cache the results are the same too.
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let w = rt
        .load_weights(
            "mlp",
            tensorlet_host::bundled::find("mlp")
                .unwrap()
                .weights()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        rt.load_bundled("mlp").unwrap().infer(&w, x()).unwrap(),
        first
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_weights_file_is_prepared_again() {
    let rt = common::runtime(RuntimeConfig::default());
    let path = std::env::temp_dir().join(format!("tensorlet-w-{}.safetensors", std::process::id()));
    std::fs::copy(fixture("mlp_basic.weights.safetensors"), &path).unwrap();
    let a = rt.load_weights_file(&path).unwrap();
    let b = rt.load_weights_file(&path).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&a, &b),
        "a known, unchanged file is a hit"
    );
    // New content under the same path: another length or modification time, another set.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(fixture("mlp_f16.weights.safetensors"), &path).unwrap();
    let c = rt.load_weights_file(&path).unwrap();
    assert_ne!(a.digest(), c.digest());
    assert_eq!(
        c.get("fc1.weight").unwrap().stored,
        tensorlet_host::DType::F16
    );
    std::fs::remove_file(&path).unwrap();
}

/// The in-place reset is reported as the kernel allows: `PAGEMAP_SCAN` exists from Linux
/// 6.7 (the version read independently from `/proc`).
#[test]
#[cfg(target_os = "linux")]
fn in_place_reset_is_reported_as_the_kernel_version_allows() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap());
    let version = (numbers.next().unwrap(), numbers.next().unwrap());
    assert_eq!(
        Runtime::resets_instances_in_place(),
        version >= (6, 7),
        "kernel {}",
        release.trim()
    );
}
