//! Shared helpers of the integration tests: fixture paths, the fixture manifest written by
//! `tests/reference/reference.py`, and the tolerance every numeric comparison uses.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub mod temp;

/// Relative tolerance of every comparison against the numpy reference.
pub const RTOL: f32 = 1e-4;
/// Absolute tolerance floor (for values near zero).
pub const ATOL: f32 = 1e-6;

/// The path of a file in `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The path of a file under the repository root.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Parses a JSON fixture.
pub fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One case of `tests/fixtures/manifest.json`.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub model: String,
    pub weights: Option<String>,
    pub request: String,
    pub expected: String,
    pub expect_error: Option<String>,
}

/// Every case of the manifest.
pub fn cases() -> Vec<Case> {
    let m = json("manifest.json");
    let s = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    m["cases"]
        .as_array()
        .expect("manifest has cases")
        .iter()
        .map(|c| Case {
            name: s(c, "name").expect("case name"),
            model: s(c, "model").expect("case model"),
            weights: s(c, "weights"),
            request: s(c, "request").expect("case request"),
            expected: s(c, "expected").expect("case expected"),
            expect_error: s(c, "expect_error"),
        })
        .collect()
}

/// Asserts that two OIP responses' outputs agree within [`RTOL`]/[`ATOL`], element by
/// element, with the same names and shapes.
pub fn assert_outputs_close(case: &str, expected: &Value, actual: &Value) {
    let exp = expected["outputs"].as_array().expect("expected outputs");
    let act = actual["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no outputs in {actual}"));
    assert_eq!(exp.len(), act.len(), "{case}: number of outputs");
    for (e, a) in exp.iter().zip(act) {
        assert_eq!(e["name"], a["name"], "{case}: output name");
        assert_eq!(e["shape"], a["shape"], "{case}: shape of {}", e["name"]);
        let ev: Vec<f32> = floats(&e["data"]);
        let av: Vec<f32> = floats(&a["data"]);
        assert_eq!(ev.len(), av.len(), "{case}: element count");
        for (i, (x, y)) in ev.iter().zip(&av).enumerate() {
            assert!(
                (x - y).abs() <= ATOL + RTOL * x.abs(),
                "{case}: element {i}: expected {x}, got {y} (rtol {RTOL}, atol {ATOL})"
            );
        }
    }
}

/// The numbers of a flat or nested JSON array.
pub fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        other => panic!("not a number: {other}"),
    }
}

/// One HTTP/1.1 request to `addr` without a Content-Type (as tritonclient sends them), with
/// `headers`: the status, the response's headers (lowercase) and its body.
pub fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    // A server that never answers fails the test here, naming the request, instead of
    // hanging the suite.
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        addr,
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: no answer ({e})"));
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}

/// The target folder the tests' `tensorlet` binary was built in (`<target>`, above
/// `<target>/<profile>/tensorlet`): where project-local virtualenvs and fetched data go.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tensorlet"))
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in <target>/<profile>")
        .to_path_buf()
}

/// The python of the project-local virtualenv `<target>/<name>`, creating it and installing
/// `packages` (pinned) if `import MODULES` fails there; needs `python3` with `venv` and
/// access to PyPI once.
pub fn venv_python(name: &str, packages: &[&str], modules: &str) -> PathBuf {
    let venv = target_dir().join(name);
    let python = venv.join("bin").join("python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {modules}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    eprintln!(
        "installing {} into {} (one time)",
        packages.join(" "),
        venv.display()
    );
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 is needed to make the test's virtualenv");
    assert!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            // No byte-compiling of every installed module (seconds for numpy and grpc):
            // Python compiles what the tests import when they import it.
            "--no-compile",
        ])
        .args(packages)
        .status()
        .expect("run pip");
    assert!(
        status.success(),
        "pip install {} failed",
        packages.join(" ")
    );
    assert!(ready(&python), "{modules} do not import after pip install");
    python
}

/// `tensorlet serve` on a free HTTP port, with gRPC and metrics off (compiled components
/// cached in [`compile_cache`]).
pub fn serve_http_only() -> Command {
    let mut cmd = tensorlet_command();
    cmd.args([
        "serve",
        "--http",
        "127.0.0.1:0",
        "--metrics",
        "none",
        "--grpc",
        "none",
    ]);
    cmd
}

/// The test-only folder of compiled components that the tests' runtimes and `tensorlet`
/// processes share, under the system temp dir.
pub fn compile_cache() -> PathBuf {
    std::env::temp_dir().join("tensorlet-test-cache")
}

/// A runtime with `config` that keeps compiled components in [`compile_cache`], so the
/// tests compile each component (the kernels component takes seconds) once, not once per
/// runtime. Tests of compiling itself use `Runtime::new`.
pub fn runtime(config: tensorlet_host::RuntimeConfig) -> tensorlet_host::Runtime {
    // SAFETY: only the tests' runtimes and `tensorlet` processes write to this folder.
    unsafe { tensorlet_host::Runtime::with_compile_cache(config, &compile_cache()) }
        .expect("runtime")
}

/// A command for the `tensorlet` binary with compiled components cached in
/// [`compile_cache`].
pub fn tensorlet_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tensorlet"));
    cmd.env("TENSORLET_CACHE_DIR", compile_cache());
    cmd
}

/// Runs [`tensorlet_command`] with `args` and returns its output.
pub fn tensorlet(args: &[&str]) -> std::process::Output {
    tensorlet_command()
        .args(args)
        .output()
        .expect("run tensorlet")
}
