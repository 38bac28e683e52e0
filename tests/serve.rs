//! `tensorlet serve` over a real socket: Triton's Open Inference Protocol routes, answers
//! equal to `tensorlet run` and to the numpy reference, errors as `{"error": ...}` with
//! Triton's status codes, repository load and unload, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running server, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    addr: String,
    metrics: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tensorlet"))
            .args(["serve", "--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args(args)
            .env(
                "TENSORLET_CACHE_DIR",
                std::env::temp_dir().join("tensorlet-test-cache"),
            )
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
                .rsplit("http://")
                .next()
                .and_then(|a| a.split('/').next())
                .filter(|a| a.starts_with("127.0.0.1:"))
                .unwrap_or_else(|| panic!("no address in {line:?}"))
                .to_string()
        };
        let addr = ready("Open Inference Protocol");
        let metrics = ready("metrics");
        Server {
            child,
            addr,
            metrics,
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

    /// SIGTERM, then the exit status and what the server printed on stderr.
    fn stop(mut self) -> (bool, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.success(), err)
    }
}

/// One HTTP/1.1 request to `addr` without a Content-Type (as tritonclient sends them), with
/// `headers`: the status, the response's headers (lowercase) and its body.
fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
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
    s.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, response[split + 4..].to_vec())
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
    let run = Command::new(env!("CARGO_BIN_EXE_tensorlet"))
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
    let cases: [(&str, &str, &[u8], u16); 7] = [
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

    let (status, _) = server.json(
        "POST",
        "/v2/repository/models/mlp/load",
        br#"{"parameters": {"file:1/function.wasm": "AAAA"}}"#,
    );
    assert_eq!(status, 501);
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
        let out = Command::new(env!("CARGO_BIN_EXE_tensorlet"))
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
