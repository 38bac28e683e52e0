//! The kernels component (`--kernels wasm`) against the native plugin: every fixture case
//! of `tests/fixtures/manifest.json` through the unmodified bundled functions (numpy
//! reference, native outputs, error kinds), the CLI flag, op-by-op comparisons on random
//! shapes with odd tails, and the limits (deadline, memory, misbehaving functions).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Case, assert_outputs_close, cases, fixture, floats, json};
use tensorlet_host::{
    ErrorKind, InferenceRequest, KernelBackend, KernelSession, Runtime, RuntimeConfig, Tensor,
    Weights,
};
use tensorlet_kernels::{Activation, Conv2dParams, Kernels, Pool2dParams};

/// Relative agreement required between the two backends (plus an absolute floor for
/// values near zero): the same kernels at a different SIMD width, so only the summation
/// order and FMA contraction differ. For sums of products the relative part is taken of
/// the sum of the terms' magnitudes (see [`assert_close_sum`]), which bounds what a
/// different summation order can change.
const BACKEND_RTOL: f32 = 1e-5;
const BACKEND_ATOL: f32 = 1e-6;

fn runtime(kernels: KernelBackend) -> Runtime {
    common::runtime(RuntimeConfig {
        kernels,
        ..RuntimeConfig::default()
    })
}

fn run(rt: &Runtime, case: &Case) -> tensorlet_host::Result<serde_json::Value> {
    let function = rt.load_bundled(&case.model)?;
    let weights = match &case.weights {
        Some(w) => rt.load_weights_file(&fixture(w))?,
        None => Arc::new(Weights::empty()),
    };
    let request = InferenceRequest::from_json(&json(&case.request).to_string())?;
    let response = function.infer_request(&weights, &request)?;
    Ok(serde_json::to_value(response).expect("response serialises"))
}

/// Element `i` may differ by `BACKEND_ATOL + BACKEND_RTOL · |native|`.
fn assert_close(what: &str, native: &[f32], wasm: &[f32]) {
    assert_close_sum(what, native, wasm, &vec![0.0; native.len()]);
}

/// [`assert_close`] for sums of products: element `i` may differ by
/// `BACKEND_ATOL + BACKEND_RTOL · max(|native|, magnitude[i])`, where `magnitude[i]` is the
/// same sum over the terms' absolute values (the activations used here are at most about
/// 1-Lipschitz, so the bound carries through them).
fn assert_close_sum(what: &str, native: &[f32], wasm: &[f32], magnitude: &[f32]) {
    assert_eq!(native.len(), wasm.len(), "{what}: element count");
    assert_eq!(native.len(), magnitude.len(), "{what}: magnitudes");
    for (i, ((n, w), m)) in native.iter().zip(wasm).zip(magnitude).enumerate() {
        assert!(
            (n - w).abs() <= BACKEND_ATOL + BACKEND_RTOL * n.abs().max(*m),
            "{what}: element {i}: native {n}, wasm {w} (terms' magnitude {m})"
        );
    }
}

/// The same values with every sign dropped.
fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

#[test]
fn every_good_case_matches_the_reference_and_the_native_backend() {
    let (native, wasm) = (runtime(KernelBackend::Native), runtime(KernelBackend::Wasm));
    assert_eq!(wasm.kernel_backend(), KernelBackend::Wasm);
    let good: Vec<_> = cases()
        .into_iter()
        .filter(|c| c.expect_error.is_none())
        .collect();
    assert!(good.len() >= 10, "too few cases: {}", good.len());
    for case in &good {
        let actual = run(&wasm, case).unwrap_or_else(|e| panic!("{} (wasm): {e}", case.name));
        assert_outputs_close(&case.name, &json(&case.expected), &actual);
        let reference = run(&native, case).unwrap();
        for (n, w) in reference["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(actual["outputs"].as_array().unwrap())
        {
            assert_eq!(n["shape"], w["shape"], "{}", case.name);
            assert_close(&case.name, &floats(&n["data"]), &floats(&w["data"]));
        }
    }
}

#[test]
fn every_bad_case_fails_with_the_native_error_kind() {
    let (native, wasm) = (runtime(KernelBackend::Native), runtime(KernelBackend::Wasm));
    let bad: Vec<_> = cases()
        .into_iter()
        .filter(|c| c.expect_error.is_some())
        .collect();
    assert!(bad.len() >= 8, "too few bad cases: {}", bad.len());
    for case in &bad {
        let w = run(&wasm, case).expect_err(&case.name);
        let n = run(&native, case).expect_err(&case.name);
        assert_eq!(w.kind(), n.kind(), "{}: wasm {w} vs native {n}", case.name);
        assert_eq!(
            Some(w.kind().as_str()),
            case.expect_error.as_deref(),
            "{}: {w}",
            case.name
        );
    }
}

#[test]
fn the_cli_runs_with_wasm_kernels() {
    let out = common::tensorlet_command()
        .args(["run", "mnist-cnn", "--kernels", "wasm", "--weights"])
        .arg(fixture("cnn_mnist.weights.safetensors"))
        .arg("--input")
        .arg(fixture("cnn_mnist.request.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let actual: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_outputs_close("cnn_mnist", &json("cnn_mnist.expected.json"), &actual);

    let out = common::tensorlet_command()
        .args(["run", "mlp", "--kernels", "gpu", "--input", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("native") && stderr.contains("wasm"),
        "{stderr}"
    );
}

/// Deterministic pseudo-random numbers in [-1, 1) (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(
            shape.to_vec(),
            (0..n).map(|_| self.next()).collect::<Vec<_>>(),
        )
        .unwrap()
    }
}

/// Runs one op in the session on uploaded copies of `inputs` and downloads the result.
fn in_wasm(
    s: &mut KernelSession,
    inputs: &[&Tensor],
    op: impl FnOnce(
        &mut KernelSession,
        &[tensorlet_host::SessionTensor],
    ) -> tensorlet_host::Result<tensorlet_host::SessionTensor>,
) -> Tensor {
    let handles: Vec<_> = inputs.iter().map(|t| s.upload(t).unwrap()).collect();
    let out = op(s, &handles).unwrap();
    let t = s.download(out).unwrap();
    for h in handles.into_iter().chain([out]) {
        s.release(h).unwrap();
    }
    t
}

fn f32s(t: &Tensor) -> &[f32] {
    t.f32s("test").unwrap()
}

#[test]
fn each_op_matches_the_native_kernels_on_odd_shapes() {
    let rt = runtime(KernelBackend::Native);
    let mut s = rt.kernel_session().unwrap();
    let k = Kernels::detect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let acts = [
        Activation::None,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
    ];

    for (i, &(m, kk, n)) in [
        (1, 1, 1),
        (3, 37, 19),
        (7, 64, 33),
        (17, 129, 65),
        (1, 300, 10),
        // The wasm GEMM's copied A: two KC blocks, the last of odd depth, a row tail.
        (9, 1101, 70),
        // More rows than one copied slab holds.
        (1990, 20, 130),
    ]
    .iter()
    .enumerate()
    {
        let act = acts[i % acts.len()];
        let (x, w, b) = (rng.tensor(&[m, kk]), rng.tensor(&[n, kk]), rng.tensor(&[n]));
        let mut want = vec![0.0; m * n];
        k.dense(f32s(&x), m, kk, f32s(&w), n, Some(f32s(&b)), act, &mut want)
            .unwrap();
        let got = in_wasm(&mut s, &[&x, &w, &b], |s, h| {
            s.dense(h[0], h[1], Some(h[2]), act)
        });
        assert_eq!(got.shape(), [m, n]);
        let mut magnitude = vec![0.0; m * n];
        let (ax, aw, ab) = (abs(f32s(&x)), abs(f32s(&w)), abs(f32s(&b)));
        k.dense(
            &ax,
            m,
            kk,
            &aw,
            n,
            Some(&ab),
            Activation::None,
            &mut magnitude,
        )
        .unwrap();
        let what = format!("dense {m}x{kk}x{n} {act:?}");
        assert_close_sum(&what, &want, f32s(&got), &magnitude);
    }

    let convs = [
        ([1, 1, 9, 7], [3, 1, 3, 3], Conv2dParams::default()),
        (
            [2, 3, 11, 13],
            [5, 3, 3, 2],
            Conv2dParams {
                stride: (2, 1),
                padding: (1, 2),
                ..Conv2dParams::default()
            },
        ),
        (
            [1, 4, 10, 10],
            [6, 2, 3, 3],
            Conv2dParams {
                dilation: (2, 2),
                groups: 2,
                ..Conv2dParams::default()
            },
        ),
        (
            [1, 6, 8, 9],
            [6, 1, 3, 3],
            Conv2dParams {
                padding: (1, 1),
                groups: 6,
                ..Conv2dParams::default()
            },
        ),
        // Whole 4-row blocks of packed weights and 16-column panels with a tail.
        ([1, 16, 9, 9], [12, 16, 3, 3], Conv2dParams::default()),
    ];
    for (i, (xs, ws, p)) in convs.into_iter().enumerate() {
        let act = acts[i % acts.len()];
        let (x, w, b) = (rng.tensor(&xs), rng.tensor(&ws), rng.tensor(&ws[..1]));
        let out_shape = tensorlet_kernels::conv2d_out_shape(xs, ws, &p).unwrap();
        let mut want = vec![0.0; out_shape.iter().product()];
        k.conv2d(
            f32s(&x),
            xs,
            f32s(&w),
            ws,
            Some(f32s(&b)),
            &p,
            act,
            &mut want,
        )
        .unwrap();
        let got = in_wasm(&mut s, &[&x, &w, &b], |s, h| {
            s.conv2d(h[0], h[1], Some(h[2]), &p, act)
        });
        assert_eq!(got.shape(), out_shape);
        let mut magnitude = vec![0.0; want.len()];
        let (ax, aw, ab) = (abs(f32s(&x)), abs(f32s(&w)), abs(f32s(&b)));
        k.conv2d(
            &ax,
            xs,
            &aw,
            ws,
            Some(&ab),
            &p,
            Activation::None,
            &mut magnitude,
        )
        .unwrap();
        let what = format!("conv2d {xs:?} {ws:?}");
        assert_close_sum(&what, &want, f32s(&got), &magnitude);
    }

    for (xs, p) in [
        (
            [1, 3, 9, 7],
            Pool2dParams {
                kernel: (2, 2),
                stride: (2, 2),
                padding: (0, 0),
            },
        ),
        (
            [2, 5, 11, 6],
            Pool2dParams {
                kernel: (3, 2),
                stride: (2, 1),
                padding: (1, 1),
            },
        ),
    ] {
        let x = rng.tensor(&xs);
        let out_shape = tensorlet_kernels::pool2d_out_shape(xs, &p).unwrap();
        let mut want = vec![0.0; out_shape.iter().product()];
        k.max_pool2d(f32s(&x), xs, &p, &mut want).unwrap();
        let got = in_wasm(&mut s, &[&x], |s, h| s.max_pool2d(h[0], &p));
        assert_close(&format!("max-pool2d {xs:?}"), &want, f32s(&got));
        k.avg_pool2d(f32s(&x), xs, &p, &mut want).unwrap();
        let got = in_wasm(&mut s, &[&x], |s, h| s.avg_pool2d(h[0], &p));
        assert_close(&format!("avg-pool2d {xs:?}"), &want, f32s(&got));
        let mut want = vec![0.0; xs[0] * xs[1]];
        k.global_avg_pool(f32s(&x), xs, &mut want).unwrap();
        let got = in_wasm(&mut s, &[&x], |s, h| s.global_avg_pool(h[0]));
        assert_eq!(got.shape(), [xs[0], xs[1]]);
        assert_close(&format!("global-avg-pool {xs:?}"), &want, f32s(&got));
    }

    for shape in [vec![1, 1], vec![3, 7], vec![2, 5, 33], vec![4, 1000]] {
        let x = rng.tensor(&shape);
        let mut want = f32s(&x).to_vec();
        k.softmax(&mut want, *shape.last().unwrap()).unwrap();
        let got = in_wasm(&mut s, &[&x], |s, h| s.softmax(h[0]));
        assert_close(&format!("softmax {shape:?}"), &want, f32s(&got));
        for act in acts {
            let mut want = f32s(&x).to_vec();
            k.activate(&mut want, act);
            let got = in_wasm(&mut s, &[&x], |s, h| s.activate(h[0], act));
            assert_close(&format!("activate {act:?} {shape:?}"), &want, f32s(&got));
        }
        // b equal to a, and b a suffix of a (broadcast).
        for b_shape in [shape.clone(), shape[1..].to_vec()] {
            let b = rng.tensor(&b_shape);
            let mut want = vec![0.0; x.len()];
            k.add(f32s(&x), f32s(&b), &mut want).unwrap();
            let got = in_wasm(&mut s, &[&x, &b], |s, h| s.add(h[0], h[1]));
            assert_close(&format!("add {shape:?} {b_shape:?}"), &want, f32s(&got));
            k.mul(f32s(&x), f32s(&b), &mut want).unwrap();
            let got = in_wasm(&mut s, &[&x, &b], |s, h| s.mul(h[0], h[1]));
            assert_close(&format!("mul {shape:?} {b_shape:?}"), &want, f32s(&got));
        }
    }
}

#[test]
fn op_errors_have_the_native_kinds() {
    let rt = runtime(KernelBackend::Wasm);
    let mut s = rt.kernel_session().unwrap();
    let x = s
        .upload(&Tensor::from_f32(vec![2, 3], vec![0.0; 6]).unwrap())
        .unwrap();
    let w = s
        .upload(&Tensor::from_f32(vec![4, 5], vec![0.0; 20]).unwrap())
        .unwrap();
    let img = s
        .upload(&Tensor::from_u8(vec![4], vec![1, 2, 3, 4]).unwrap())
        .unwrap();
    let err = s.dense(x, w, None, Activation::None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShapeMismatch, "{err}");
    assert!(err.message().contains("last dimension must be 5"), "{err}");
    let err = s.max_pool2d(
        x,
        &Pool2dParams {
            kernel: (2, 2),
            stride: (2, 2),
            padding: (0, 0),
        },
    );
    assert_eq!(err.unwrap_err().kind(), ErrorKind::ShapeMismatch);
    let err = s.softmax(img).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(s.download(img).unwrap().u8s("img").unwrap(), [1, 2, 3, 4]);
}

#[test]
fn the_deadline_stops_a_huge_conv_inside_the_kernels_component() {
    let rt = common::runtime(RuntimeConfig {
        deadline: Duration::from_millis(200),
        memory_limit: 512 << 20,
        kernels: KernelBackend::Wasm,
        ..RuntimeConfig::default()
    });
    let mut s = rt.kernel_session().unwrap();
    // 8 × 512 × 64 × 25 × 60 × 60 × 2 ≈ 47 GFLOP: seconds even at full simd128 speed.
    let x = s.upload(&Tensor::from_f32(vec![8, 64, 64, 64], vec![0.5; 8 << 18]).unwrap());
    let w = s.upload(&Tensor::from_f32(vec![512, 64, 5, 5], vec![0.5; 512 * 64 * 25]).unwrap());
    let start = Instant::now();
    let err = s
        .conv2d(
            x.unwrap(),
            w.unwrap(),
            None,
            &Conv2dParams::default(),
            Activation::None,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn the_memory_limit_applies_to_the_kernels_instance() {
    let rt = common::runtime(RuntimeConfig {
        memory_limit: 16 << 20,
        kernels: KernelBackend::Wasm,
        ..RuntimeConfig::default()
    });
    let mut s = rt.kernel_session().unwrap();
    let big = Tensor::from_f32(vec![8 << 20], vec![0.0; 8 << 20]).unwrap(); // 32 MiB
    let err = s.upload(&big).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded, "{err}");
}

#[test]
fn misbehaving_functions_are_contained_in_wasm_mode() {
    let rt = common::runtime(RuntimeConfig {
        deadline: Duration::from_millis(500),
        memory_limit: 64 << 20,
        tensor_budget: 64 << 20,
        kernels: KernelBackend::Wasm,
        ..RuntimeConfig::default()
    });
    let f = rt
        .load_function_file(tensorlet_host::test_programs::MISBEHAVE.as_ref())
        .unwrap();
    let call = |input: &str| {
        let x = Tensor::from_f32(vec![1], vec![0.0]).unwrap();
        f.infer(&Arc::new(Weights::empty()), vec![(input.to_string(), x)])
    };
    for (input, kind) in [
        ("trap", ErrorKind::Trap),
        ("panic", ErrorKind::Trap),
        ("loop", ErrorKind::DeadlineExceeded),
        ("alloc", ErrorKind::LimitExceeded),
        ("host-alloc", ErrorKind::LimitExceeded),
    ] {
        let err = call(input).expect_err(input);
        assert_eq!(err.kind(), kind, "{input}: {err}");
        let out = call("count").expect("still serving");
        assert_eq!(out[0].1.f32s("count").unwrap(), &[1.0]);
    }
}
