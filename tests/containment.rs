//! A broken or malicious function is contained: a trap, a panic, an endless loop, unbounded
//! guest memory and unbounded host tensors each end as a typed error, and the same runtime
//! keeps serving afterwards. Every request runs in a fresh instance.

use std::time::{Duration, Instant};

use tensorlet_host::{ErrorKind, Function, Runtime, RuntimeConfig, Tensor, Weights};

fn setup() -> (Runtime, Function) {
    let rt = Runtime::new(RuntimeConfig {
        deadline: Duration::from_millis(500),
        memory_limit: 64 << 20,
        tensor_budget: 64 << 20,
        ..RuntimeConfig::default()
    })
    .unwrap();
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
