//! End-to-end through the library: every fixture case of `tests/fixtures/manifest.json`
//! (weights, request, and the numpy reference's response) run through `tensorlet-host`
//! with the bundled `mlp` and `mnist-cnn` components.

mod common;

use common::{Case, assert_outputs_close, cases, fixture, json};
use tensorlet_host::{InferenceRequest, Runtime, RuntimeConfig};

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
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
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
fn every_bad_case_is_a_typed_error_and_the_runtime_keeps_serving() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
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
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
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
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
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
