//! `tensorlet serve` over a real socket: Triton's Open Inference Protocol routes, answers
//! equal to `tensorlet run` and to the numpy reference, errors as `{"error": ...}` with
//! Triton's status codes, repository load and unload, deploying new versions through
//! `load` (and `tensorlet deploy`) while requests run, admin and invoke tokens, gzip and
//! deflate bodies, and a clean stop on SIGTERM.

mod common;

use common::{exchange, serve_http_only};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running server, stopped with SIGTERM when dropped. Its stderr (one log line per
/// request) is drained as it comes, so a busy test never fills the pipe.
struct Server {
    child: Child,
    addr: String,
    metrics: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", args)
    }

    /// A server whose HTTP listener binds `http` (reached through 127.0.0.1).
    fn start_on(http: &str, args: &[&str]) -> Server {
        let mut child = common::tensorlet_command()
            .args(["serve", "--http", http, "--metrics", "127.0.0.1:0"])
            .args(["--grpc", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tensorlet serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut ready = |what: &str| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert!(
                line.contains(what),
                "expected a ready line for {what}: {line:?}"
            );
            line.trim()
                .rsplit("://")
                .next()
                .and_then(|a| a.split('/').next())
                .map(|a| a.replace("0.0.0.0:", "127.0.0.1:"))
                .filter(|a| a.starts_with("127.0.0.1:"))
                .unwrap_or_else(|| panic!("no address in {line:?}"))
        };
        let addr = ready("Open Inference Protocol");
        let metrics = ready("metrics");
        let mut grpc = String::new();
        out.read_line(&mut grpc).unwrap();
        assert!(grpc.contains("gRPC"), "expected the gRPC line: {grpc:?}");
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Server {
            child,
            addr,
            metrics,
            stderr: Some(stderr),
        }
    }

    /// One HTTP/1.1 request without a Content-Type (as tritonclient sends them), with
    /// `headers`: the status, the response's headers (lowercase) and its body.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        exchange(&self.addr, method, path, headers, body)
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let (status, _, body) = self.exchange(method, path, &[], body);
        (status, String::from_utf8(body).unwrap())
    }

    fn json(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let (status, text) = self.request(method, path, body);
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (status, value)
    }

    /// SIGTERM, then the exit status and what the server printed on stderr. A server that
    /// has not stopped within a minute fails the test (and is killed).
    fn stop(mut self) -> (bool, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // The process is gone: its stderr ends.
        let stderr = self.stderr.take().map(|t| t.join().unwrap());
        (status.success(), stderr.unwrap_or_default())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn bundled_models_answer_as_tensorlet_run_does() {
    let server = Server::start(&[]);
    assert_eq!(server.request("GET", "/v2/health/live", b"").0, 200);
    assert_eq!(server.request("GET", "/v2/health/ready", b"").0, 200);
    assert_eq!(
        server.request("GET", "/v2/models/mnist-cnn/ready", b"").0,
        200
    );
    let (status, meta) = server.json("GET", "/v2", b"");
    assert_eq!((status, meta["name"].as_str()), (200, Some("tensorlet")));
    let (status, meta) = server.json("GET", "/v2/models/mnist-cnn", b"");
    assert_eq!(status, 200);
    assert_eq!(meta["versions"], serde_json::json!(["1"]));
    assert_eq!(meta["inputs"][0]["name"], "image");
    assert_eq!(meta["outputs"][0]["datatype"], "FP32");

    let request = std::fs::read(common::repo("models/mnist-cnn/sample.json")).unwrap();
    let (status, served) = server.json("POST", "/v2/models/mnist-cnn/infer", &request);
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["model_version"], "1");
    let run = common::tensorlet_command()
        .args(["run", "mnist-cnn", "--input"])
        .arg(common::repo("models/mnist-cnn/sample.json"))
        .output()
        .unwrap();
    let cli: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        served["outputs"], cli["outputs"],
        "the server and the CLI disagree"
    );

    // Errors: Triton's codes, `{"error": ...}` bodies.
    let cases: [(&str, &str, &[u8], u16); 11] = [
        // Nested rows that do not follow the shape, though the element count is right.
        (
            "POST",
            "/v2/models/mlp/infer",
            br#"{"inputs":[{"name":"x","shape":[2,5],"datatype":"FP32","data":[[1,2,3,4,5,6],[7,8,9,10]]}]}"#,
            400,
        ),
        // A shape whose element count overflows, and one far beyond its data.
        (
            "POST",
            "/v2/models/mlp/infer",
            br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,10],"datatype":"FP32","data":[1]}]}"#,
            400,
        ),
        (
            "POST",
            "/v2/models/mlp/infer",
            br#"{"inputs":[{"name":"x","shape":[100000000000,10],"datatype":"FP32","data":[1]}]}"#,
            400,
        ),
        // Not UTF-8.
        ("POST", "/v2/models/mlp/infer", b"{\"inputs\": \xff\xfe}", 400),
        ("POST", "/v2/models/nope/infer", &request, 404),
        (
            "POST",
            "/v2/models/mnist-cnn/versions/7/infer",
            &request,
            404,
        ),
        (
            "POST",
            "/v2/models/mnist-cnn/versions/x/infer",
            &request,
            400,
        ),
        ("POST", "/v2/models/mnist-cnn/infer", b"{not json", 400),
        (
            "POST",
            "/v2/models/mnist-cnn/infer",
            br#"{"inputs":[{"name":"image","shape":[1,1,28,28],"datatype":"FP32","data":[1,2]}]}"#,
            400,
        ),
        ("DELETE", "/v2/models/mnist-cnn/infer", b"", 405),
        ("GET", "/v3/nothing", b"", 404),
    ];
    for (method, path, body, want) in cases {
        let (status, value) = server.json(method, path, body);
        assert_eq!(status, want, "{method} {path}: {value}");
        assert!(
            value["error"].as_str().is_some_and(|m| m.len() > 10),
            "{method} {path}: {value}"
        );
    }
    binary_tensor_data(&server, &served);

    // Statistics count what the server answered: 2 mnist-cnn successes (JSON and
    // binary) and the failures that reached the model (wrong element count, broken
    // binary sizes are refused before it).
    let (status, stats) = server.json("GET", "/v2/models/mnist-cnn/stats", b"");
    assert_eq!(status, 200, "{stats}");
    let s = &stats["model_stats"][0];
    assert_eq!(
        (s["name"].as_str(), s["version"].as_str()),
        (Some("mnist-cnn"), Some("1"))
    );
    assert_eq!(s["inference_stats"]["success"]["count"], 2, "{stats}");
    assert_eq!(s["inference_stats"]["fail"]["count"], 1, "{stats}");
    assert!(s["inference_stats"]["success"]["ns"].as_u64().unwrap() > 0);
    let (status, _, text) = exchange(&server.metrics, "GET", "/metrics", &[], b"");
    let text = String::from_utf8(text).unwrap();
    assert_eq!(status, 200);
    for line in [
        "nv_inference_request_success{model=\"mnist-cnn\",version=\"1\"} 2",
        "nv_inference_request_failure{model=\"mnist-cnn\",version=\"1\"} 1",
        "nv_inference_request_success{model=\"mlp\",version=\"1\"} 0",
        "# TYPE nv_inference_count counter",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    let (_, all) = server.json("GET", "/v2/models/stats", b"");
    assert_eq!(all["model_stats"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(server.request("GET", "/v2/models/nope/stats", b"").0, 404);

    // Deploying files needs a repository.
    let (status, refused) = server.json(
        "POST",
        "/v2/repository/models/mlp/load",
        br#"{"parameters": {"file:1/function.wasm": "AAAA"}}"#,
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("--repository")),
        "{refused}"
    );
    let load = "/v2/repository/models/mlp/load";
    assert_eq!(server.exchange("POST", load, &[], &[0xff, 0xfe]).0, 400);

    // Unload, then load again from the source.
    assert_eq!(
        server
            .request("POST", "/v2/repository/models/mlp/unload", b"")
            .0,
        200
    );
    assert_eq!(server.request("GET", "/v2/models/mlp/ready", b"").0, 400);
    let (_, index) = server.json("POST", "/v2/repository/index", b"");
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "mlp" && m["state"] == "UNAVAILABLE")
    );
    assert_eq!(
        server
            .request("POST", "/v2/repository/models/mlp/load", b"")
            .0,
        200
    );
    assert_eq!(
        server
            .request("GET", "/v2/models/mlp/versions/1/ready", b"")
            .0,
        200
    );

    let (clean, stderr) = server.stop();
    assert!(clean, "SIGTERM must stop the server cleanly: {stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    // One structured line per inference request.
    let logged: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["event"] == "infer")
        .collect();
    assert!(
        logged
            .iter()
            .any(|l| l["model"] == "mnist-cnn" && l["status"] == 200 && l["duration_us"].is_u64()),
        "{stderr}"
    );
    assert!(
        logged
            .iter()
            .any(|l| l["model"] == "nope" && l["status"] == 404 && l["error"].is_string()),
        "{stderr}"
    );
}

/// The binary tensor data extension: the sample image as FP32 bytes after the JSON
/// header, the output asked for as binary; the result equals the JSON answer `json`.
fn binary_tensor_data(server: &Server, json: &Value) {
    let sample: Value = serde_json::from_slice(
        &std::fs::read(common::repo("models/mnist-cnn/sample.json")).unwrap(),
    )
    .unwrap();
    let input = &sample["inputs"][0];
    let mut flat = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    walk(&input["data"], &mut flat);
    let bytes: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
    let header = serde_json::json!({
        "inputs": [{"name": "image", "shape": input["shape"], "datatype": "FP32",
                    "parameters": {"binary_data_size": bytes.len()}}],
        "outputs": [{"name": "probs", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&bytes);
    let length = [("Inference-Header-Content-Length", header.len().to_string())];
    let path = "/v2/models/mnist-cnn/infer";
    let (status, head, response) = server.exchange("POST", path, &length, &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
    let json_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("inference-header-content-length: "))
        .expect("the response says where its JSON ends")
        .trim()
        .parse()
        .unwrap();
    let meta: Value = serde_json::from_slice(&response[..json_len]).unwrap();
    let out = &meta["outputs"][0];
    assert_eq!(out["parameters"]["binary_data_size"], 40, "{meta}");
    let probs: Vec<f32> = response[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let expected: Vec<f32> = json["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(probs, expected, "binary and JSON answers differ");
    // Broken framing: a header length past the body, or binary sizes that disagree.
    let long = [(
        "Inference-Header-Content-Length",
        (body.len() + 1).to_string(),
    )];
    assert_eq!(server.exchange("POST", path, &long, &body).0, 400);
    let (status, _, msg) = server.exchange("POST", path, &length, &body[..body.len() - 4]);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&msg).contains("binary_data_size"));
}

#[test]
fn a_repository_model_matches_the_numpy_reference() {
    let repo = std::env::temp_dir().join(format!("tensorlet-serve-repo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo);
    let weights = common::fixture("cnn_mnist.weights.safetensors");
    let pack = |version: &str, weights: &Path| {
        let out = common::tensorlet_command()
            .args(["pack", "mnist-cnn", "--weights"])
            .arg(weights)
            .arg("-o")
            .arg(repo.join("digits").join(version))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pack("1", &weights);
    let server = Server::start(&["--repository", repo.to_str().unwrap()]);
    let request = std::fs::read(common::fixture("cnn_mnist.request.json")).unwrap();
    let (status, response) = server.json("POST", "/v2/models/digits/versions/1/infer", &request);
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["model_name"], "digits");
    common::assert_outputs_close(
        "served cnn_mnist",
        &common::json("cnn_mnist.expected.json"),
        &response,
    );
    let (status, config) = server.json("GET", "/v2/models/digits/config", b"");
    assert_eq!((status, config["name"].as_str()), (200, Some("digits")));
    drop(server);
    std::fs::remove_dir_all(&repo).unwrap();
}

/// A fresh empty folder under the temporary directory.
fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tensorlet-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `tensorlet pack FUNCTION [--weights W] -o OUT`, which must succeed.
fn pack(function: &str, weights: Option<&Path>, out: &Path) {
    let mut cmd = common::tensorlet_command();
    cmd.args(["pack", function, "-o"]).arg(out);
    if let Some(w) = weights {
        cmd.arg("--weights").arg(w);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every entry of `dir` (hidden ones too), sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A load request body deploying `files` (`(parameter path, bytes)`) and `config`.
fn deploy_body(files: &[(&str, &[u8])], config: Option<&str>) -> Vec<u8> {
    let mut parameters = serde_json::Map::new();
    for (path, bytes) in files {
        parameters.insert(
            format!("file:{path}"),
            Value::String(tensorlet_host::oip::base64_encode(bytes)),
        );
    }
    if let Some(c) = config {
        parameters.insert("config".into(), Value::String(c.into()));
    }
    serde_json::json!({ "parameters": parameters })
        .to_string()
        .into_bytes()
}

/// The outputs of `tensorlet run mlp` (bundled weights) on `request`.
fn run_mlp(request: &Path) -> Value {
    let run = common::tensorlet_command()
        .args(["run", "mlp", "--input"])
        .arg(request)
        .output()
        .unwrap();
    assert!(run.status.success());
    serde_json::from_slice::<Value>(&run.stdout).unwrap()["outputs"].clone()
}

#[test]
fn deploying_a_version_swaps_it_in_while_requests_run() {
    let repo = temp_dir("deploy-repo");
    let staging = temp_dir("deploy-staging");
    pack("mlp", None, &repo.join("mlp/1"));
    let basic = common::fixture("mlp_basic.weights.safetensors");
    pack("mlp", Some(&basic), &staging.join("mlp/2"));
    let server = Server::start(&["--repository", repo.to_str().unwrap()]);
    let request_path = common::fixture("mlp_basic.request.json");
    let request = std::fs::read(&request_path).unwrap();
    let infer = |path: &str| server.json("POST", path, &request);

    // Version 1 serves the bundled weights: the same answer as `tensorlet run mlp`.
    let (status, v1) = infer("/v2/models/mlp/infer");
    assert_eq!(
        (status, v1["model_version"].as_str()),
        (200, Some("1")),
        "{v1}"
    );
    assert_eq!(v1["outputs"], run_mlp(&request_path));

    // Deploy version 2 (other weights) while a client keeps inferring: every request
    // succeeds, on version 1 or on version 2, never on anything in between.
    let function = std::fs::read(staging.join("mlp/2/function.wasm")).unwrap();
    let weights = std::fs::read(staging.join("mlp/2/weights.safetensors")).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answers, (status, deployed)) = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || answers.len() < 20 {
                let (status, answer) = infer("/v2/models/mlp/infer");
                assert_eq!(status, 200, "a request failed during the deploy: {answer}");
                answers.push(answer);
            }
            answers
        });
        let body = deploy_body(
            &[
                ("2/function.wasm", &function),
                ("2/weights.safetensors", &weights),
            ],
            None,
        );
        let deployed = server.json("POST", "/v2/repository/models/mlp/load", &body);
        // Keep the client going a little on the new version.
        std::thread::sleep(std::time::Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (client.join().unwrap(), deployed)
    });
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(deployed["versions"], serde_json::json!(["2"]), "{deployed}");
    let (status, v2) = infer("/v2/models/mlp/infer");
    assert_eq!(
        (status, v2["model_version"].as_str()),
        (200, Some("2")),
        "{v2}"
    );
    common::assert_outputs_close(
        "deployed mlp v2",
        &common::json("mlp_basic.expected.json"),
        &v2,
    );
    let mut seen = [0usize; 2];
    for a in &answers {
        let (i, want) = match a["model_version"].as_str() {
            Some("1") => (0, &v1),
            Some("2") => (1, &v2),
            other => panic!("answer from version {other:?}: {a}"),
        };
        assert_eq!(a["outputs"], want["outputs"], "a torn answer: {a}");
        seen[i] += 1;
    }
    assert!(seen[1] > 0, "no request reached version 2: {seen:?}");
    // The default policy serves the latest version only; the files are in the repository,
    // with no temporary folder left.
    assert_eq!(
        server
            .request("GET", "/v2/models/mlp/versions/1/ready", b"")
            .0,
        400
    );
    assert_eq!(entries(&repo.join("mlp")), ["1", "2"]);
    assert_eq!(
        std::fs::read(repo.join("mlp/2/weights.safetensors")).unwrap(),
        weights
    );

    // Refused deploys: the right status, a reason, version 2 still serving and the
    // repository unchanged.
    let component = tensorlet_host::bundled::find("mlp").unwrap().component;
    let runtime = tensorlet_host::Runtime::new(tensorlet_host::RuntimeConfig::default()).unwrap();
    let cwasm = runtime.precompile(component).unwrap();
    let truncated = std::fs::read(common::fixture("bad_truncated.weights.safetensors")).unwrap();
    // Valid safetensors without any of mlp's weights.
    let mut header =
        r#"{"unrelated":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut unrelated = (header.len() as u64).to_le_bytes().to_vec();
    unrelated.extend_from_slice(header.as_bytes());
    unrelated.extend_from_slice(&1f32.to_le_bytes());
    let load = "/v2/repository/models/mlp/load";
    let v3 = |f: &[u8], w: &[u8]| {
        deploy_body(
            &[("3/function.wasm", f), ("3/weights.safetensors", w)],
            None,
        )
    };
    let refused: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "a component that is not one",
            load.into(),
            v3(b"\0asm not really", &weights),
            "not a loadable WebAssembly component",
        ),
        (
            "precompiled native code",
            load.into(),
            v3(&cwasm, &weights),
            "precompiled",
        ),
        (
            "a .cwasm file",
            load.into(),
            deploy_body(&[("3/function.cwasm", &cwasm)], None),
            "precompiled",
        ),
        (
            "truncated weights",
            load.into(),
            v3(&function, &truncated),
            "weights.safetensors",
        ),
        (
            "weights the function lacks",
            load.into(),
            v3(&function, &unrelated),
            "which function",
        ),
        (
            "an existing version",
            load.into(),
            deploy_body(
                &[
                    ("2/function.wasm", &function),
                    ("2/weights.safetensors", &weights),
                ],
                None,
            ),
            "immutable",
        ),
        (
            "a version without weights",
            load.into(),
            deploy_body(&[("3/function.wasm", &function)], None),
            "needs both",
        ),
        (
            "a parent folder",
            load.into(),
            deploy_body(&[("../x", &function)], None),
            "refused",
        ),
        (
            "a nested path",
            load.into(),
            deploy_body(&[("3/a/b", &function)], None),
            "refused",
        ),
        (
            "an absolute path",
            load.into(),
            deploy_body(&[("/etc/x", &function)], None),
            "refused",
        ),
        (
            "a model name with a parent folder",
            "/v2/repository/models/..%2Fx/load".into(),
            v3(&function, &weights),
            "not allowed",
        ),
        (
            "a model name with a separator",
            "/v2/repository/models/a%2Fb/load".into(),
            v3(&function, &weights),
            "not allowed",
        ),
        (
            "an absolute model name",
            "/v2/repository/models/%2Fabs/load".into(),
            v3(&function, &weights),
            "not allowed",
        ),
        (
            "a configuration with a typo",
            load.into(),
            deploy_body(&[], Some(r#"{"version_polcy": {"all": {}}}"#)),
            "version_polcy",
        ),
        (
            "a configuration that selects no version",
            load.into(),
            deploy_body(
                &[],
                Some(r#"{"version_policy": {"specific": {"versions": [9]}}}"#),
            ),
            "no version to serve",
        ),
    ];
    for (what, path, body, says) in refused {
        let (status, answer) = server.json("POST", &path, &body);
        assert_eq!(status, 400, "{what}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {says:?} not in {answer}");
        let (status, now) = infer("/v2/models/mlp/infer");
        assert_eq!(status, 200, "{what}: {now}");
        assert_eq!(
            (now["model_version"].as_str(), &now["outputs"]),
            (Some("2"), &v2["outputs"]),
            "{what}"
        );
        assert_eq!(entries(&repo.join("mlp")), ["1", "2"], "{what}");
        assert_eq!(entries(&repo), ["mlp"], "{what}");
    }

    // A configuration alone: both versions served now, and written to config.json.
    let all = r#"{"version_policy": {"all": {}}}"#;
    let (status, answer) = server.json("POST", load, &deploy_body(&[], Some(all)));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["versions"], serde_json::json!(["1", "2"]));
    assert_eq!(
        std::fs::read_to_string(repo.join("mlp/config.json")).unwrap(),
        all
    );
    let (_, again) = infer("/v2/models/mlp/versions/1/infer");
    assert_eq!(again["outputs"], v1["outputs"]);
    // A configuration that then fails to load is undone: the old one is back.
    let (status, _) = server.json(
        "POST",
        load,
        &deploy_body(
            &[],
            Some(r#"{"version_policy": {"specific": {"versions": [7]}}}"#),
        ),
    );
    assert_eq!(status, 400);
    assert_eq!(
        std::fs::read_to_string(repo.join("mlp/config.json")).unwrap(),
        all
    );
    // A new model in one request.
    let (status, answer) = server.json(
        "POST",
        "/v2/repository/models/fresh/load",
        &deploy_body(
            &[
                ("5/function.wasm", &function),
                ("5/weights.safetensors", &weights),
            ],
            None,
        ),
    );
    assert_eq!(
        (status, &answer["versions"]),
        (200, &serde_json::json!(["5"]))
    );
    let (_, fresh) = infer("/v2/models/fresh/infer");
    assert_eq!(
        (fresh["model_name"].as_str(), &fresh["outputs"]),
        (Some("fresh"), &v2["outputs"])
    );
    drop(server);
    // A restart serves what was deployed.
    let server = Server::start(&["--repository", repo.to_str().unwrap()]);
    let (_, index) = server.json("POST", "/v2/repository/index", b"");
    assert_eq!(
        index,
        serde_json::json!([
            {"name": "fresh", "version": "5", "state": "READY"},
            {"name": "mlp", "version": "1", "state": "READY"},
            {"name": "mlp", "version": "2", "state": "READY"},
        ])
    );
    drop(server);
    std::fs::remove_dir_all(&repo).unwrap();
    std::fs::remove_dir_all(&staging).unwrap();
}

#[test]
fn a_deploy_killed_midway_leaves_the_old_version() {
    // What a process killed while writing leaves behind: hidden temporary folders and
    // files, half written. The server must ignore them and serve version 1.
    let repo = temp_dir("killed");
    pack("mlp", None, &repo.join("mlp/1"));
    let stray = repo.join("mlp/.2.tmp-4242");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("function.wasm"), b"\0asm").unwrap();
    std::fs::write(stray.join("weights.safetensors"), [1, 2, 3]).unwrap();
    std::fs::write(repo.join("mlp/.config.json.tmp-4242"), "{\"version_pol").unwrap();
    std::fs::create_dir_all(repo.join(".new.tmp-4242/.1.tmp-4242")).unwrap();
    let server = Server::start(&["--repository", repo.to_str().unwrap()]);
    let (status, index) = server.json("POST", "/v2/repository/index", b"");
    assert_eq!(status, 200);
    assert_eq!(
        index,
        serde_json::json!([{"name": "mlp", "version": "1", "state": "READY"}])
    );
    let request = common::fixture("mlp_basic.request.json");
    let (status, answer) = server.json(
        "POST",
        "/v2/models/mlp/infer",
        &std::fs::read(&request).unwrap(),
    );
    assert_eq!((status, answer["model_version"].as_str()), (200, Some("1")));
    assert_eq!(answer["outputs"], run_mlp(&request));
    let (_, stderr) = server.stop();
    assert!(!stderr.contains("is not served"), "{stderr}");
    std::fs::remove_dir_all(&repo).unwrap();
}

/// `Authorization: Bearer <token>`.
fn bearer(token: &str) -> [(&'static str, String); 1] {
    [("Authorization", format!("Bearer {token}"))]
}

#[test]
fn tokens_guard_the_repository_and_inference() {
    let dir = temp_dir("tokens");
    let (admin, invoke) = (dir.join("admin"), dir.join("invoke"));
    std::fs::write(&admin, "adm1n-s3cret\n").unwrap();
    std::fs::write(&invoke, "1nvoke-t0ken").unwrap();
    let server = Server::start(&[
        "--admin-token-file",
        admin.to_str().unwrap(),
        "--invoke-token-file",
        invoke.to_str().unwrap(),
    ]);
    let request = std::fs::read(common::repo("models/mnist-cnn/sample.json")).unwrap();
    let infer = "/v2/models/mnist-cnn/infer";
    let index = "/v2/repository/index";
    let (admin_t, invoke_t) = (Some("adm1n-s3cret"), Some("1nvoke-t0ken"));
    let cases: [(&str, Option<&str>, u16); 9] = [
        (infer, None, 401),
        (infer, Some("adm1n"), 403),
        (infer, invoke_t, 200),
        (infer, admin_t, 200),
        (index, None, 401),
        (index, invoke_t, 403),
        (index, admin_t, 200),
        ("/v2/repository/models/mlp/unload", invoke_t, 403),
        ("/v2/repository/models/mlp/load", None, 401),
    ];
    for (path, token, want) in cases {
        let body: &[u8] = if path == infer { &request } else { b"" };
        let headers = token.map(bearer);
        let headers = headers.as_ref().map_or(&[][..], |h| &h[..]);
        let (status, head, answer) = server.exchange("POST", path, headers, body);
        assert_eq!(
            status,
            want,
            "{path} with {token:?}: {}",
            String::from_utf8_lossy(&answer)
        );
        if want != 200 {
            let v: Value = serde_json::from_slice(&answer).unwrap();
            assert!(v["error"].as_str().is_some_and(|m| m.len() > 10), "{v}");
        }
        assert_eq!(
            head.contains("www-authenticate: bearer"),
            want == 401,
            "{path} with {token:?}: {head}"
        );
    }
    // Health and metadata stay open.
    for path in [
        "/v2",
        "/v2/health/ready",
        "/v2/models/mnist-cnn",
        "/v2/models/mnist-cnn/ready",
        "/v2/models/mnist-cnn/config",
    ] {
        assert_eq!(server.request("GET", path, b"").0, 200, "{path}");
    }
    // The admin token unloads and loads.
    for op in ["unload", "load"] {
        let path = format!("/v2/repository/models/mlp/{op}");
        let ok = server.exchange("POST", &path, &bearer("adm1n-s3cret"), b"");
        assert_eq!(ok.0, 200, "{op}: {}", String::from_utf8_lossy(&ok.2));
    }
    drop(server);

    // Beyond loopback without an admin token, repository routes are refused; inference
    // is not.
    let open = Server::start_on("0.0.0.0:0", &[]);
    let (status, refused) = open.json("POST", index, b"");
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("--admin-token-file")
    );
    assert_eq!(open.request("POST", infer, &request).0, 200);
    drop(open);
    // A token file that is empty stops the server at start.
    std::fs::write(&admin, "\n").unwrap();
    let out = serve_http_only()
        .arg("--admin-token-file")
        .arg(&admin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bytes` compressed as `coding` (`gzip` or `deflate`, the zlib format).
fn compress(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::default();
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
        _ => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }
    }
}

fn decompress(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out),
        _ => flate2::read::ZlibDecoder::new(bytes).read_to_end(&mut out),
    }
    .unwrap();
    out
}

#[test]
fn compressed_bodies_both_ways() {
    let server = Server::start(&["--body-limit", "1"]);
    let request = std::fs::read(common::repo("models/mnist-cnn/sample.json")).unwrap();
    let path = "/v2/models/mnist-cnn/infer";
    let (status, plain) = server.json("POST", path, &request);
    assert_eq!(status, 200, "{plain}");
    for coding in ["gzip", "deflate"] {
        let headers = [
            ("Content-Encoding", coding.to_string()),
            ("Accept-Encoding", coding.to_string()),
        ];
        let packed = compress(coding, &request);
        assert!(packed.len() < request.len());
        let (status, head, body) = server.exchange("POST", path, &headers, &packed);
        assert_eq!(status, 200, "{coding}: {}", String::from_utf8_lossy(&body));
        assert!(
            head.contains(&format!("content-encoding: {coding}")),
            "{coding}: {head}"
        );
        let answer: Value = serde_json::from_slice(&decompress(coding, &body)).unwrap();
        assert_eq!(answer, plain, "{coding}");
        // A compressed request, a plain answer.
        let (status, head, body) = server.exchange("POST", path, &headers[..1], &packed);
        assert_eq!(status, 200);
        assert!(!head.contains("content-encoding"), "{head}");
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), plain);
    }
    // Errors are compressed too, and still `{"error": ...}`.
    let gzip = [("Accept-Encoding", "gzip".to_string())];
    let (status, _, body) = server.exchange("GET", "/v2/models/nope", &gzip, b"");
    assert_eq!(status, 404);
    let e: Value = serde_json::from_slice(&decompress("gzip", &body)).unwrap();
    assert!(e["error"].as_str().unwrap().contains("nope"), "{e}");
    // Broken or unknown codings are 400; a body past the limit (1 MiB), as sent or once
    // decoded, is 413.
    let gzipped = [("Content-Encoding", "gzip".to_string())];
    let mut broken = compress("gzip", &request);
    broken.truncate(broken.len() / 2);
    let bomb = compress("gzip", &vec![b' '; 16 << 20]);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let big = vec![b' '; (1 << 20) + 1];
    // (request headers, body, status, what the error says)
    type Case<'a> = (&'a [(&'a str, String)], &'a [u8], u16, &'a str);
    let cases: [Case; 4] = [
        (&gzipped, &broken, 400, "not valid gzip"),
        (
            &[("Content-Encoding", "br".to_string())],
            &request,
            400,
            "Content-Encoding",
        ),
        (&gzipped, &bomb, 413, "decodes to more than"),
        (&[], &big, 413, "larger than"),
    ];
    for (headers, body, want, says) in cases {
        let (status, _, answer) = server.exchange("POST", path, headers, body);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, want, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
    assert_eq!(server.request("GET", "/v2/health/live", b"").0, 200);
}

/// `tensorlet deploy` to an https:// server: with `--ca-cert` trusting its (self-signed)
/// certificate the upload lands; with the public web roots the certificate is refused, and
/// nothing is sent.
#[test]
fn tensorlet_deploy_over_tls() {
    let repo = temp_dir("tls-repo");
    let staging = temp_dir("tls-staging");
    pack("mlp", None, &repo.join("mlp/1"));
    pack("mlp", None, &staging.join("mlp/2"));
    let token = staging.join("token");
    std::fs::write(&token, "t1s-token\n").unwrap();
    let cert = common::repo("tests/fixtures/tls/cert.pem");
    let key = common::repo("tests/fixtures/tls/key.pem");
    let server = Server::start(&[
        "--repository",
        repo.to_str().unwrap(),
        "--admin-token-file",
        token.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = format!("https://{}", server.addr);
    let deploy = |ca: Option<&Path>| {
        let mut cmd = common::tensorlet_command();
        cmd.args(["deploy", "--server", &url, "--token-file"])
            .arg(&token);
        if let Some(ca) = ca {
            cmd.arg("--ca-cert").arg(ca);
        }
        cmd.arg("mlp").arg(staging.join("mlp/2")).output().unwrap()
    };
    let out = deploy(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert_eq!(entries(&repo.join("mlp")), ["1"]);
    let out = deploy(Some(&cert));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["versions"], serde_json::json!(["2"]), "{answer}");
    drop(server);
    std::fs::remove_dir_all(&repo).unwrap();
    std::fs::remove_dir_all(&staging).unwrap();
}

#[test]
fn tensorlet_deploy_uploads_a_packed_folder() {
    let repo = temp_dir("cli-repo");
    let staging = temp_dir("cli-staging");
    pack("mlp", None, &repo.join("mlp/1"));
    let basic = common::fixture("mlp_basic.weights.safetensors");
    pack("mlp", Some(&basic), &staging.join("mlp/2"));
    std::fs::write(
        staging.join("mlp/config.json"),
        r#"{"version_policy": {"all": {}}}"#,
    )
    .unwrap();
    let token = staging.join("token");
    std::fs::write(&token, "d3ploy\n").unwrap();
    let server = Server::start(&[
        "--repository",
        repo.to_str().unwrap(),
        "--admin-token-file",
        token.to_str().unwrap(),
    ]);
    let url = format!("http://{}", server.addr);
    let deploy = |token: Option<&Path>| {
        let mut cmd = common::tensorlet_command();
        cmd.args(["deploy", "--server", &url]);
        if let Some(t) = token {
            cmd.arg("--token-file").arg(t);
        }
        cmd.arg("mlp").arg(staging.join("mlp/2")).output().unwrap()
    };
    let out = deploy(Some(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["versions"],
        serde_json::json!(["1", "2"]),
        "{answer}"
    );
    let request = std::fs::read(common::fixture("mlp_basic.request.json")).unwrap();
    let (status, v2) = server.json("POST", "/v2/models/mlp/versions/2/infer", &request);
    assert_eq!(status, 200, "{v2}");
    common::assert_outputs_close(
        "tensorlet deploy",
        &common::json("mlp_basic.expected.json"),
        &v2,
    );
    // Again: the version exists. Without the token: 401. Both say why and exit 1.
    let failed = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = failed(deploy(Some(&token)));
    assert!(e.contains("HTTP 400") && e.contains("immutable"), "{e}");
    let e = failed(deploy(None));
    assert!(e.contains("HTTP 401") && e.contains("Bearer"), "{e}");
    drop(server);
    std::fs::remove_dir_all(&repo).unwrap();
    std::fs::remove_dir_all(&staging).unwrap();
}

#[test]
fn slow_and_idle_clients_cannot_hold_the_server() {
    use std::time::{Duration, Instant};
    // Two connection slots; headers must arrive within 0.5 s.
    let server = Server::start(&["--max-connections", "2", "--header-timeout", "0.5"]);
    // A client that sends half a request line and stalls is cut off after the header
    // timeout (read returns end of file), not held open.
    let started = Instant::now();
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.write_all(b"GET /v2/health/li").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "a stalled header should be cut off after about 0.5 s, took {waited:?}"
    );
    // Two idle connections take both slots: a third client is not answered while they
    // last...
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut third = TcpStream::connect(&server.addr).unwrap();
    third
        .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut first = [0u8; 1];
    assert!(
        third.read(&mut first).is_err(),
        "a third connection was served while both slots were taken"
    );
    // ... and is answered once the idle ones are closed by their header timeout.
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = Vec::new();
    third.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(idle);
    // The server still serves after all of it.
    let (status, _) = server.request("GET", "/v2/health/ready", b"");
    assert_eq!(status, 200);
    let (ok, _) = server.stop();
    assert!(ok, "the server did not stop cleanly");
}

/// The value of the metric line that starts with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
        .parse()
        .unwrap()
}

/// With one request slot and no queue, a request that arrives while a (looping) function
/// holds the slot is refused at once with 503 "queue is full"; the server then serves the
/// next request, and the metrics count exactly what happened: the refusals as `REJECTED`,
/// the looping function's deadline as `BACKEND`, the successes with their queue and compute
/// times, and no request pending at the end.
#[test]
fn a_full_queue_refuses_at_once_and_the_metrics_say_why() {
    let dir = temp_dir("queue");
    let repo = dir.join("repo");
    pack("mlp", None, &repo.join("mlp").join("1"));
    // The misbehaving test function has no weights: an empty safetensors file.
    let empty = dir.join("empty.safetensors");
    let mut st = 2u64.to_le_bytes().to_vec();
    st.extend_from_slice(b"{}");
    std::fs::write(&empty, st).unwrap();
    pack(
        tensorlet_host::test_programs::MISBEHAVE,
        Some(&empty),
        &repo.join("slow").join("1"),
    );
    let server = Server::start(&[
        "--repository",
        repo.to_str().unwrap(),
        "--max-concurrency",
        "1",
        "--max-queue",
        "0",
        "--timeout",
        "1.5",
    ]);
    let mlp = br#"{"inputs":[{"name":"x","shape":[1,10],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10]}]}"#;
    let addr = server.addr.clone();
    // The looping request, sent again while it finds the slot taken by an mlp request.
    let slow = std::thread::spawn(move || {
        let body = br#"{"inputs":[{"name":"loop","shape":[1],"datatype":"FP32","data":[0]}]}"#;
        let mut refused = 0u64;
        loop {
            let (status, head, body) = exchange(&addr, "POST", "/v2/models/slow/infer", &[], body);
            if status == 503 && String::from_utf8_lossy(&body).contains("queue is full") {
                refused += 1;
                continue;
            }
            return (status, head, body, refused);
        }
    });
    let (mut ok, mut rejected) = (0u64, 0u64);
    while !slow.is_finished() {
        let (status, text) = server.request("POST", "/v2/models/mlp/infer", mlp);
        match status {
            200 => ok += 1,
            503 => {
                assert!(text.contains("queue is full"), "{text}");
                assert!(text.starts_with("{\"error\":"), "{text}");
                rejected += 1;
            }
            other => panic!("status {other}: {text}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, _, body, slow_refused) = slow.join().unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("deadline"), "{body}");
    assert!(
        rejected > 0,
        "no request was refused while the slot was held"
    );
    // The slot is free again: the next request runs.
    assert_eq!(server.request("POST", "/v2/models/mlp/infer", mlp).0, 200);
    ok += 1;

    let (_, _, text) = exchange(&server.metrics, "GET", "/metrics", &[], b"");
    let text = String::from_utf8(text).unwrap();
    let mlp_labels = "{model=\"mlp\",version=\"1\"";
    let slow_labels = "{model=\"slow\",version=\"1\"";
    let m =
        |name: &str, labels: &str, extra: &str| metric(&text, &format!("{name}{labels}{extra}}}"));
    assert_eq!(m("nv_inference_request_success", mlp_labels, ""), ok);
    assert_eq!(m("nv_inference_request_failure", mlp_labels, ""), rejected);
    assert_eq!(
        m(
            "nv_inference_request_failure",
            mlp_labels,
            ",reason=\"REJECTED\""
        ),
        rejected
    );
    assert_eq!(
        m(
            "nv_inference_request_failure",
            slow_labels,
            ",reason=\"BACKEND\""
        ),
        1
    );
    assert_eq!(
        m(
            "nv_inference_request_failure",
            slow_labels,
            ",reason=\"REJECTED\""
        ),
        slow_refused
    );
    assert_eq!(
        m(
            "nv_inference_request_failure",
            slow_labels,
            ",reason=\"OTHER\""
        ),
        0
    );
    for labels in [mlp_labels, slow_labels] {
        assert_eq!(m("nv_inference_pending_request_count", labels, ""), 0);
    }
    // Successful mlp requests spent their time queued or computing, never more than in all.
    let total = m("nv_inference_request_duration_us", mlp_labels, "");
    let queue = m("nv_inference_queue_duration_us", mlp_labels, "");
    let compute = m("nv_inference_compute_infer_duration_us", mlp_labels, "");
    assert!(
        compute > 0 && queue + compute <= total,
        "queue {queue} compute {compute} total {total}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bad TLS files stop the server at start with an error naming the file; a certificate
/// without its key is refused by the argument parser.
#[test]
fn bad_tls_files_are_refused_at_start() {
    let cert = common::repo("tests/fixtures/tls/cert.pem");
    let serve = |args: &[&str]| serve_http_only().args(args).output().unwrap();
    let cert = cert.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--tls-cert", cert, "--tls-key", "/no/such/key.pem"],
            "/no/such/key.pem",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", cert],
            "holds no PEM private key",
        ),
        (vec!["--tls-cert", cert], "--tls-key"),
    ] {
        let out = serve(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// A model whose configuration asks for dynamic batching: concurrent requests over HTTP run
/// as fewer calls (`nv_inference_exec_count` below `nv_inference_count`), each answer equal
/// to the unbatched one bit for bit.
#[test]
fn dynamic_batching_over_http() {
    let dir = temp_dir("batching");
    let repo = dir.join("repo");
    pack("mlp", None, &repo.join("mlp").join("1"));
    std::fs::write(
        repo.join("mlp").join("config.json"),
        r#"{"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [4], "max_queue_delay_microseconds": 200000}}"#,
    )
    .unwrap();
    let plain = Server::start(&[]);
    let server = Server::start(&[
        "--repository",
        repo.to_str().unwrap(),
        "--max-concurrency",
        "4",
    ]);
    let body = |i: usize| {
        let data: Vec<f32> = (0..10).map(|j| ((i * 3 + j) % 7) as f32 - 3.0).collect();
        serde_json::json!({"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32", "data": data}]})
            .to_string()
            .into_bytes()
    };
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (server, body) = (&server, body(i));
                s.spawn(move || server.json("POST", "/v2/models/mlp/infer", &body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (status, answer)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{answer}");
        let (_, alone) = plain.json("POST", "/v2/models/mlp/infer", &body(i));
        let got = answer["outputs"][0]["data"][0].as_f64().unwrap();
        let want = alone["outputs"][0]["data"][0].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
    let (_, _, text) = exchange(&server.metrics, "GET", "/metrics", &[], b"");
    let text = String::from_utf8(text).unwrap();
    let labels = "{model=\"mlp\",version=\"1\"}";
    let count = metric(&text, &format!("nv_inference_count{labels}"));
    let executions = metric(&text, &format!("nv_inference_exec_count{labels}"));
    assert_eq!(count, 4);
    assert!(executions < count, "4 requests ran as {executions} calls");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A server whose stderr nobody reads (a full pipe blocks every write to it) keeps
/// answering: the request log waits in a bounded buffer instead of blocking requests.
#[test]
fn an_unread_stderr_does_not_stall_the_server() {
    let mut child = serve_http_only()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("://").next().unwrap().to_string();
    // Each request logs a line of about 150 bytes: 1,500 of them overflow a 64 KiB pipe
    // several times over.
    let body = br#"{"inputs":[{"name":"x","shape":[1,10],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10]}]}"#;
    for i in 0..1500 {
        let (status, _, answer) = exchange(&addr, "POST", "/v2/models/mlp/infer", &[], body);
        assert_eq!(
            status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
