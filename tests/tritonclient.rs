//! `tensorlet serve` against NVIDIA's own client library: `tests/tritonclient/
//! check_server.py` drives a real server over real sockets with `tritonclient.http` and
//! `tritonclient.grpc` — health, metadata, configuration, JSON and binary inference, other
//! wire datatypes, errors with Triton's status codes, statistics, repository load, deploy
//! and unload, metrics counts — and checks every output against the independent numpy
//! reference (`tests/reference/reference.py`).
//!
//! The Python side runs in the project-local virtualenv `<target>/venv-triton`, which this
//! test creates and fills (`pip install tritonclient[http,grpc] numpy`, pinned) on first
//! use; it needs `python3` with `venv` and access to PyPI once.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::repo;

/// What the virtualenv gets (the versions this test was written against).
const PACKAGES: &[&str] = &["tritonclient[http,grpc]==2.73.0", "numpy>=1.26"];

/// The virtualenv's python, creating and filling the virtualenv if need be.
fn python() -> PathBuf {
    common::venv_python(
        "venv-triton",
        PACKAGES,
        "tritonclient.http, tritonclient.grpc, numpy",
    )
}

fn succeed(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tritonclient_http_and_grpc_work_unchanged() {
    let python = python();
    let dir = std::env::temp_dir().join(format!("tensorlet-tritonclient-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let models = dir.join("repository");
    for name in ["mlp", "mnist-cnn"] {
        succeed(
            common::tensorlet_command()
                .args(["pack", name, "-o"])
                .arg(models.join(name).join("1")),
        );
    }
    // The folder the repository checks deploy: mlp with other (fresh, seeded) weights.
    let weights = dir.join("deploy.safetensors");
    succeed(
        Command::new(&python)
            .arg(repo("tests/reference/reference.py"))
            .args(["init", "mlp", "--seed", "9", "-o"])
            .arg(&weights),
    );
    let deploy = dir.join("deploy").join("mlp").join("1");
    succeed(
        common::tensorlet_command()
            .args(["pack", "mlp", "--weights"])
            .arg(&weights)
            .arg("-o")
            .arg(&deploy),
    );

    let checks = Checks {
        python: &python,
        models: &models,
        deploy: &deploy,
    };
    let report = checks.run("tritonclient", &[], &[]);
    // Every check ran and passed over both protocols.
    for kind in ["http", "grpc"] {
        for check in [
            "health",
            "metadata",
            "config",
            "mlp_json_and_binary",
            "cnn_batch",
            "large_request",
            "other_datatypes",
            "errors",
            "statistics",
            "repository",
            "metrics",
        ] {
            let line = format!("ok   {kind} {check}");
            assert!(
                report.lines().any(|l| l == line),
                "no `{line}` in:\n{report}"
            );
        }
    }

    // Tokens, over both protocols: inference needs the invoke token, the repository the
    // admin token (as gRPC metadata `authorization: Bearer ...` too).
    let (admin, invoke) = (dir.join("admin.token"), dir.join("invoke.token"));
    std::fs::write(&admin, "admin-secret-1\n").unwrap();
    std::fs::write(&invoke, "invoke-secret-2\n").unwrap();
    let (admin, invoke) = (admin.to_str().unwrap(), invoke.to_str().unwrap());
    let report = checks.run(
        "tritonclient token",
        &["--admin-token-file", admin, "--invoke-token-file", invoke],
        &["--admin-token", admin, "--invoke-token", invoke],
    );
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        18,
        "every token check over both protocols:\n{report}"
    );

    // The same clients over TLS (a self-signed test certificate for localhost/127.0.0.1):
    // every listener speaks TLS, plain text gets nothing.
    let cert = repo("tests/fixtures/tls/cert.pem");
    let key = repo("tests/fixtures/tls/key.pem");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let report = checks.run(
        "tritonclient TLS",
        &["--tls-cert", cert, "--tls-key", key],
        &["--tls-cert", cert],
    );
    for line in [
        "ok   https health",
        "ok   https mlp_json_and_binary",
        "ok   grpcs health",
        "ok   grpcs cnn_batch",
        "ok   plain-text refused",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "no `{line}` in:\n{report}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What every run of `check_server.py` shares: the virtualenv's python, the repository the
/// server serves, and the packed folder the repository checks deploy.
struct Checks<'a> {
    python: &'a Path,
    models: &'a Path,
    deploy: &'a Path,
}

impl Checks<'_> {
    /// Serves the repository with `server_args`, runs `check_server.py` against it with
    /// `check_args`, and returns its report; the run must succeed (`what` names it).
    fn run(&self, what: &str, server_args: &[&str], check_args: &[&str]) -> String {
        let (server, [http, metrics, grpc]) = serve(self.models, server_args);
        let run = Command::new(self.python)
            .arg(repo("tests/tritonclient/check_server.py"))
            .args(["--http", &http, "--grpc", &grpc, "--metrics", &metrics])
            .arg("--models")
            .arg(self.models)
            .arg("--deploy")
            .arg(self.deploy)
            .args(check_args)
            .output()
            .expect("run check_server.py");
        drop(server);
        let report = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(
            run.status.success(),
            "{what} checks failed:\n{report}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        report
    }
}

/// `tensorlet serve` of the repository `models` with `extra` arguments, on free ports: the
/// server and its HTTP, metrics and gRPC addresses.
fn serve(models: &Path, extra: &[&str]) -> (Server, [String; 3]) {
    let mut child = common::tensorlet_command()
        .args(["serve", "--repository"])
        .arg(models)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(["--metrics", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tensorlet serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let server = Server(child);
    let mut addr = |what: &str| {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.contains(what), "expected the {what} line: {line:?}");
        let addr = line.trim().rsplit("://").next().unwrap();
        addr.split('/').next().unwrap().to_string()
    };
    let addrs = [addr("HTTP"), addr("metrics"), addr("gRPC")];
    (server, addrs)
}
