//! A broken or malicious function is contained: a trap, a panic, an endless loop, unbounded
//! guest memory and unbounded host tensors each end as a typed error, and the same runtime
//! keeps serving afterwards. Every request runs in a fresh instance.

mod common;

use std::time::{Duration, Instant};

use tensorlet_host::{ErrorKind, Function, Runtime, RuntimeConfig, Tensor, Weights};

fn setup() -> (Runtime, Function) {
    misbehave(RuntimeConfig {
        deadline: Duration::from_millis(500),
        memory_limit: 64 << 20,
        tensor_budget: 64 << 20,
        ..RuntimeConfig::default()
    })
}

/// A runtime with `config` and the misbehaving test function loaded in it.
fn misbehave(config: RuntimeConfig) -> (Runtime, Function) {
    let rt = common::runtime(config);
    let f = rt
        .load_function_file(tensorlet_host::test_programs::MISBEHAVE.as_ref())
        .unwrap();
    (rt, f)
}

fn call(f: &Function, input: &str) -> tensorlet_host::Result<Vec<(String, Tensor)>> {
    let x = Tensor::from_f32(vec![1], vec![0.0]).unwrap();
    f.infer(
        &std::sync::Arc::new(Weights::empty()),
        vec![(input.to_string(), x)],
    )
}

fn assert_still_serving(f: &Function) {
    let out = call(f, "count").expect("runtime still serves");
    assert_eq!(
        out[0].1.f32s("count").unwrap(),
        &[1.0],
        "fresh instance per request"
    );
}

#[test]
fn each_misbehaviour_is_a_typed_error_and_the_host_survives() {
    let (_rt, f) = setup();
    let cases = [
        ("trap", ErrorKind::Trap, "unreachable"),
        ("panic", ErrorKind::Trap, "deliberate panic in misbehave"),
        ("loop", ErrorKind::DeadlineExceeded, "deadline"),
        ("alloc", ErrorKind::LimitExceeded, "memory"),
        ("host-alloc", ErrorKind::LimitExceeded, "limit"),
    ];
    for (input, kind, needle) in cases {
        let start = Instant::now();
        let err = call(&f, input).expect_err(input);
        assert_eq!(err.kind(), kind, "{input}: {err}");
        assert!(err.message().contains(needle), "{input}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{input} took {:?}",
            start.elapsed()
        );
        assert_still_serving(&f);
    }
}

#[test]
fn the_deadline_stops_an_endless_loop_on_time() {
    let (_rt, f) = setup();
    let start = Instant::now();
    let err = call(&f, "loop").unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    // 500 ms deadline; epoch ticks are 5 ms. Generous upper bound for a loaded machine.
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn unknown_inputs_and_bad_components_are_rejected() {
    let (rt, f) = setup();
    let err = call(&f, "nonsense").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("no input `nonsense`"), "{err}");
    let err = rt
        .load_function("garbage", b"\0asm\x0d\0\x01\0garbage")
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("function `garbage`"), "{err}");
    assert_still_serving(&f);
}

#[test]
fn precompiled_artifacts_are_refused_by_load_function() {
    let (rt, f) = setup();
    let wasm = std::fs::read(tensorlet_host::test_programs::MISBEHAVE).unwrap();
    let artifact = rt.precompile(&wasm).unwrap();
    let err = rt.load_function("uploaded", &artifact).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.message().contains("precompiled artifact")
            && err.message().contains("only `.wasm` components"),
        "{err}"
    );
    // The trusted path loads the same artifact from a local file the caller vouches for.
    let path = std::env::temp_dir().join(format!("misbehave-{}.cwasm", std::process::id()));
    std::fs::write(&path, &artifact).unwrap();
    // SAFETY: this test just wrote the file with `Runtime::precompile`.
    let trusted = unsafe { rt.load_precompiled_file(&path) }.unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_still_serving(&trusted);
    assert_still_serving(&f);
}

#[test]
fn a_component_importing_what_the_host_lacks_is_refused_at_load() {
    let (rt, f) = setup();
    let err = rt
        .load_function_file(tensorlet_host::test_programs::FOREIGN_IMPORT.as_ref())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.message()
            .contains("imports `tensorlet-test:foreign/gpu-device@0.1.0`"),
        "{err}"
    );
    assert_still_serving(&f);
}

/// A runtime with one request slot, `queue` waiting places and a `deadline`.
fn one_slot(queue: u32, deadline: Duration) -> (Runtime, Function) {
    misbehave(RuntimeConfig {
        deadline,
        max_concurrent_requests: 1,
        max_queued_requests: queue,
        ..RuntimeConfig::default()
    })
}

#[test]
fn a_full_queue_is_unavailable_and_the_runtime_serves_the_next_request() {
    let (rt, f) = one_slot(0, Duration::from_millis(800));
    // A kernel session holds the only slot for as long as it lives.
    let held = rt.kernel_session().unwrap();
    assert_eq!(rt.requests_in_flight(), 1);
    let err = call(&f, "count").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("0 waiting"), "{err}");
    drop(held);
    assert_still_serving(&f);
}

#[test]
fn a_deadline_passing_in_the_queue_is_unavailable_and_the_runtime_serves_the_next() {
    let (rt, f) = one_slot(4, Duration::from_millis(300));
    let held = rt.kernel_session().unwrap();
    let start = Instant::now();
    let err = call(&f, "count").unwrap_err();
    let waited = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains("deadline passed while it waited"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    drop(held);
    assert_still_serving(&f);
}
