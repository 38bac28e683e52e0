//! The `tensorlet` binary, end to end: `run` on JSON, stdin and images against the numpy
//! reference; `inspect`; `compile` and running the artifact; clear failures; and that the
//! README's `cargo run --release -- ...` has exactly one binary to run.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{assert_outputs_close, fixture, json, repo, tensorlet};

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "tensorlet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn path(name: &str) -> String {
    fixture(name).display().to_string()
}

/// `cargo run` at the workspace root (the README's first command) stops with "could not
/// determine which binary to run" as soon as any member adds a second `[[bin]]`; tools
/// beside the product are examples. Asked of `cargo metadata`, which reads the manifests
/// without building anything.
#[test]
fn the_workspace_has_exactly_one_binary_for_cargo_run() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo(""))
        .output()
        .expect("cargo metadata runs");
    let meta = stdout_json(&out);
    let mut bins = Vec::new();
    for package in meta["packages"].as_array().expect("packages") {
        for target in package["targets"].as_array().expect("targets") {
            if target["kind"]
                .as_array()
                .expect("kind")
                .iter()
                .any(|k| k == "bin")
            {
                bins.push(format!(
                    "{} in {}",
                    target["name"].as_str().expect("name"),
                    package["name"].as_str().expect("package name")
                ));
            }
        }
    }
    assert_eq!(
        bins,
        ["tensorlet in tensorlet-cli"],
        "binaries in the workspace"
    );
}

#[test]
fn run_matches_the_reference_for_both_functions() {
    for (function, case, threads) in [
        ("mlp", "mlp_basic", "1"),
        ("mnist-cnn", "cnn_mnist", "1"),
        ("mnist-cnn", "cnn_rgb100", "1"),
        ("mnist-cnn", "cnn_mnist", "2"),
    ] {
        let out = tensorlet(&[
            "run",
            function,
            "--weights",
            &path(&format!("{case}.weights.safetensors")),
            "--input",
            &path(&format!("{case}.request.json")),
            "--threads",
            threads,
        ]);
        assert_outputs_close(
            case,
            &json(&format!("{case}.expected.json")),
            &stdout_json(&out),
        );
    }
}

#[test]
fn run_takes_an_image_file_and_stdin() {
    let out = tensorlet(&[
        "run",
        "mnist-cnn",
        "--weights",
        &path("cnn_mnist.weights.safetensors"),
        "--input",
        &path("png_rgb.png"),
    ]);
    assert_outputs_close(
        "png_rgb",
        &json("png_rgb.expected.json"),
        &stdout_json(&out),
    );

    let mut child = common::tensorlet_command()
        .args([
            "run",
            "mlp",
            "--weights",
            &path("mlp_basic.weights.safetensors"),
            "--input",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request = std::fs::read(fixture("mlp_basic.request.json")).unwrap();
    child.stdin.take().unwrap().write_all(&request).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_outputs_close(
        "mlp_basic (stdin)",
        &json("mlp_basic.expected.json"),
        &stdout_json(&out),
    );
}

#[test]
fn run_on_the_bundled_default_matches_its_recorded_reference() {
    let sample = repo("models/mnist-cnn/sample.png").display().to_string();
    let out = tensorlet(&["run", "mnist-cnn", "--input", &sample]);
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("models/mnist-cnn/sample.expected.json")).unwrap(),
    )
    .unwrap();
    assert_outputs_close("bundled sample.png", &expected, &stdout_json(&out));
}

#[test]
fn compile_then_run_the_artifact() {
    let dir = std::env::temp_dir().join(format!("tensorlet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("mlp.wasm");
    std::fs::write(
        wasm.as_path(),
        tensorlet_host::bundled::find("mlp").unwrap().component,
    )
    .unwrap();
    let cwasm = dir.join("mlp.cwasm");
    let out = tensorlet(&[
        "compile",
        wasm.to_str().unwrap(),
        "-o",
        cwasm.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for component in [&wasm, &cwasm] {
        let out = tensorlet(&[
            "run",
            component.to_str().unwrap(),
            "--weights",
            &path("mlp_basic.weights.safetensors"),
            "--input",
            &path("mlp_basic.request.json"),
        ]);
        assert_outputs_close(
            "mlp via file",
            &json("mlp_basic.expected.json"),
            &stdout_json(&out),
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inspect_describes_weights_and_components() {
    let out = tensorlet(&["inspect", &path("mlp_f16.weights.safetensors")]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        text.contains("fc1.weight") && text.contains("F16") && text.contains("[10, 10]"),
        "{text}"
    );
    assert!(
        text.contains("4 tensors, 121 parameters, 242 bytes"),
        "{text}"
    );

    let out = tensorlet(&["inspect", "mnist-cnn"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("tensorlet:nn/ops@0.2.0"), "{text}");
    assert!(text.contains("tensorlet:nn/function@0.2.0"), "{text}");
    assert!(text.contains("probs"), "{text}");
}

#[test]
fn bad_inputs_fail_with_a_clear_message_and_exit_code_1() {
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "run",
                "mnist-cnn",
                "--weights",
                &path("bad_truncated.weights.safetensors"),
                "--input",
                &path("cnn_mnist.request.json"),
            ],
            "tensor `fc1.weight`: data offsets [40, 440] do not fit",
        ),
        (
            &[
                "run",
                "mnist-cnn",
                "--input",
                &path("bad_request_shape.request.json"),
                "--weights",
                &path("cnn_mnist.weights.safetensors"),
            ],
            "shape-mismatch",
        ),
        (
            &[
                "run",
                "no-such-function",
                "--input",
                &path("mlp_basic.request.json"),
            ],
            "no bundled function `no-such-function`",
        ),
        (
            &["run", "mlp", "--input", "/nonexistent/request.json"],
            "/nonexistent/request.json",
        ),
        (
            &["run", "mnist-cnn", "--input", &path("bad_png_zlib.png")],
            "invalid-input",
        ),
    ];
    for (args, needle) in cases {
        let out = tensorlet(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Whether a demangled symbol is a SIMD intrinsic compiled as a function of its own
/// (`core::core_arch::x86::avx2::_mm256_or_si256`): called, not inlined.
fn outlined_intrinsic(name: &str) -> bool {
    name.strip_prefix("core::core_arch::x86::")
        .is_some_and(|rest| {
            ["avx", "fma", "sse", "f16c"]
                .iter()
                .any(|m| rest.starts_with(m))
        })
}

/// No SIMD intrinsic in the `tensorlet` binary is left as a call: each is inlined into a
/// function compiled for its level. An intrinsic reached through a closure inside a kernel
/// (a closure does not take the level's target features) became a function call per vector:
/// the max-pool backward's cost a quarter of a seed CNN training step at AVX2, the f16 GEMM
/// tile's every weight load.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn simd_intrinsics_are_inlined() {
    use object::{Object, ObjectSymbol};
    assert!(outlined_intrinsic(
        "core::core_arch::x86::avx2::_mm256_or_si256"
    ));
    assert!(outlined_intrinsic(
        "core::core_arch::x86::avx512f::_mm512_add_ps"
    ));
    assert!(!outlined_intrinsic("core::core_arch::x86::xsave::_xgetbv"));
    assert!(!outlined_intrinsic("tensorlet_kernels::pool::max_tap"));
    let path = env!("CARGO_BIN_EXE_tensorlet");
    let bytes = std::fs::read(path).expect("read the tensorlet binary");
    let file = object::File::parse(&*bytes).expect("parse the tensorlet binary");
    let names: Vec<String> = file
        .symbols()
        .filter_map(|s| s.name().ok())
        .map(|n| format!("{:#}", rustc_demangle::demangle(n)))
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("tensorlet_kernels::")),
        "{path} has no symbol table to check (stripped?)"
    );
    let outlined: Vec<&String> = names.iter().filter(|n| outlined_intrinsic(n)).collect();
    assert!(
        outlined.is_empty(),
        "SIMD intrinsics compiled as calls (a closure in a kernel?): {outlined:?}"
    );
}
