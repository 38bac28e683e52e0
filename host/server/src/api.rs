//! What the server does, whatever the transport: model metadata, readiness, statistics,
//! the repository index, load (and deploy), unload and inference, as typed results with
//! [`ApiError`]s. The HTTP routes (`http.rs`) render them as JSON and the gRPC service
//! (`grpc.rs`) as protobuf messages, so both protocols answer the same questions the same
//! way and fail with the same classification.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use tensorlet_host::{DType, InferenceRequest, InferenceResponse, IoSpec, ModelStats};

use crate::State;
use crate::auth::Need;
use crate::deploy::Deployment;
use crate::http::ApiError;

/// A declared input or output of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    pub name: String,
    /// The wire datatype (`FP32`, ...).
    pub datatype: &'static str,
    /// Dimensions; -1 varies.
    pub shape: Vec<i64>,
}

/// A model's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ModelInfo {
    pub name: String,
    /// The versions served, ascending.
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

/// One line of the repository index: a model and one served version, or a model of the
/// repository that is not served (`version` `None`, state `UNAVAILABLE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub name: String,
    pub version: Option<u64>,
    pub state: &'static str,
}

/// What the server says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: &'static [&'static str],
}

/// The server's metadata.
pub(crate) fn server_metadata() -> ServerInfo {
    ServerInfo {
        name: "tensorlet",
        version: env!("CARGO_PKG_VERSION"),
        extensions: &["model_repository", "statistics", "binary_tensor_data"],
    }
}

/// One structured line per inference request on stderr: when, over which protocol, which
/// model and version, the status (HTTP status or gRPC code), how long it took, and the
/// error if any. Written straight into one buffer (a `serde_json::Value` would allocate
/// each key and value); the strings are escaped by serde_json.
pub(crate) fn log_infer(
    protocol: &str,
    model: &str,
    version: Option<&str>,
    started: std::time::Instant,
    status: i64,
    error: Option<&str>,
) {
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let duration_us = started.elapsed().as_micros();
    log_line(&infer_line(
        time_ms,
        protocol,
        model,
        version,
        status,
        duration_us,
        error,
    ));
}

/// The request log's line (newline included) for one inference request.
fn infer_line(
    time_ms: u128,
    protocol: &str,
    model: &str,
    version: Option<&str>,
    status: i64,
    duration_us: u128,
    error: Option<&str>,
) -> Vec<u8> {
    use std::io::Write;
    let mut line = Vec::with_capacity(160 + error.map_or(0, str::len));
    let string = |line: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(line, s).expect("a string serializes into a Vec")
    };
    let _ = write!(line, r#"{{"time_ms":{time_ms},"event":"infer","protocol":"#);
    string(&mut line, protocol);
    line.extend_from_slice(br#","model":"#);
    string(&mut line, model);
    if let Some(v) = version {
        line.extend_from_slice(br#","version":"#);
        string(&mut line, v);
    }
    let _ = write!(line, r#","status":{status},"duration_us":{duration_us}"#);
    if let Some(e) = error {
        line.extend_from_slice(br#","error":"#);
        string(&mut line, e);
    }
    line.extend_from_slice(b"}\n");
    line
}

/// The request log: lines are appended to a buffer that a writer thread writes to stderr
/// every [`LOG_INTERVAL`], so a request never waits on a `write` system call (or a slow
/// reader of stderr) and never wakes a thread.
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// How often the request log's buffer is written out.
const LOG_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// The most the buffer holds while stderr is not being read (a full pipe blocks the
/// writer): further lines are dropped and counted, so a stuck reader costs log lines, never
/// memory without bound or a stalled request.
const LOG_CAP: usize = 8 << 20;

/// Lines dropped since the last write because the buffer was full.
static LOG_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes out what the request log's buffer holds.
fn write_log() {
    use std::io::Write;
    let mut text = std::mem::take(&mut *LOG.lock().unwrap_or_else(|p| p.into_inner()));
    let dropped = LOG_DROPPED.swap(0, std::sync::atomic::Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(
            text,
            "tensorlet: {dropped} request log lines dropped: stderr was not read fast enough"
        );
    }
    if !text.is_empty() {
        let _ = std::io::stderr().lock().write_all(&text);
    }
}

/// Queues one line of the request log, newline included (starting the writer thread on
/// first use).
fn log_line(line: &[u8]) {
    static WRITER: std::sync::Once = std::sync::Once::new();
    WRITER.call_once(|| {
        // Without a writer thread the lines wait for `flush_log`.
        let _ = std::thread::Builder::new()
            .name("tensorlet-log".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(LOG_INTERVAL);
                    write_log();
                }
            });
    });
    let mut buffer = LOG.lock().unwrap_or_else(|p| p.into_inner());
    if buffer.len() + line.len() > LOG_CAP {
        LOG_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    buffer.extend_from_slice(line);
}

/// Writes every queued line of the request log (at shutdown).
pub(crate) fn flush_log() {
    write_log();
}

/// The platform name models report.
pub(crate) const PLATFORM: &str = "tensorlet_wasm";

/// A version as a path segment or protobuf field: a positive integer; empty means "the
/// latest" for protocols (gRPC) that send an empty string for it.
pub(crate) fn version(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>().ok().filter(|&v| v > 0).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("model version `{v}` is not a positive integer"),
        )
    })
}

/// [`version`], with an empty string meaning none.
pub(crate) fn optional_version(v: &str) -> Result<Option<u64>, ApiError> {
    if v.is_empty() {
        Ok(None)
    } else {
        version(v).map(Some)
    }
}

/// The wire datatype of a function's declared dtype.
pub(crate) fn datatype(spec: &IoSpec) -> &'static str {
    match DType::from(spec.dtype) {
        DType::F32 => "FP32",
        DType::F16 => "FP16",
        DType::BF16 => "BF16",
        DType::U8 => "UINT8",
        DType::Bytes => "BYTES",
    }
}

fn tensors(specs: &[IoSpec]) -> Vec<TensorInfo> {
    specs
        .iter()
        .map(|s| TensorInfo {
            name: s.name.clone(),
            datatype: datatype(s),
            shape: s.shape.clone(),
        })
        .collect()
}

/// Model `name`'s metadata (version `v`, or the latest).
pub(crate) fn model_info(state: &State, name: &str, v: Option<u64>) -> Result<ModelInfo, ApiError> {
    let model = state.registry().get(name, v)?;
    let versions = state
        .registry()
        .models()
        .into_iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v)
        .map(|v| v.to_string())
        .collect();
    let m = model.function().metadata();
    Ok(ModelInfo {
        name: name.to_string(),
        versions,
        platform: PLATFORM,
        inputs: tensors(&m.inputs),
        outputs: tensors(&m.outputs),
    })
}

/// Whether model `name` (version `v`, or any) is served.
pub(crate) fn ready(state: &State, name: &str, v: Option<u64>) -> bool {
    state.registry().get(name, v).is_ok()
}

/// The statistics of every served version (`model` `None`), or of model `model` (version
/// `v`, or all its versions); an unknown model or version is an error, as for inference.
pub(crate) fn stats(
    state: &State,
    model: Option<&str>,
    v: Option<u64>,
) -> Result<Vec<ModelStats>, ApiError> {
    if let Some(m) = model {
        state.registry().get(m, v)?;
    }
    Ok(state
        .registry()
        .stats(model)
        .into_iter()
        .filter(|s| v.is_none_or(|v| s.version == v))
        .collect())
}

/// The repository index: every served version, and every model of the source not served.
pub(crate) fn index(state: &State, headers: &HeaderMap) -> Result<Vec<IndexEntry>, ApiError> {
    state.access().authorize(headers, Need::Admin)?;
    let served = state.registry().models();
    let mut index = Vec::new();
    for name in state.model_names() {
        match served.iter().find(|(n, _)| *n == name) {
            Some((_, versions)) => index.extend(versions.iter().map(|&v| IndexEntry {
                name: name.clone(),
                version: Some(v),
                state: "READY",
            })),
            None => index.push(IndexEntry {
                name,
                version: None,
                state: "UNAVAILABLE",
            }),
        }
    }
    Ok(index)
}

/// Runs blocking work (compiling, preparing, inferring, decoding and encoding bodies) off
/// the async threads; a worker that panicked answers 500.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request's worker thread failed: {e}"),
        )
    })?
}

/// Triton's load, after checking the admin token: with no `deployment` it (re)loads model
/// `name` from the source; otherwise — into a repository only: a server of bundled
/// functions refuses before parsing anything — `deployment` parses the request's files and
/// configuration, which are deployed first. Answers the versions now served.
pub(crate) async fn load(
    state: Arc<State>,
    headers: &HeaderMap,
    name: String,
    deployment: Option<impl FnOnce() -> Result<Deployment, ApiError>>,
) -> Result<Vec<u64>, ApiError> {
    state.access().authorize(headers, Need::Admin)?;
    let deployment = match deployment {
        Some(parse) => {
            state.deploy_target()?;
            parse()?
        }
        None => Deployment::default(),
    };
    blocking(move || {
        if deployment.is_empty() {
            Ok(state.load_model(&name)?)
        } else {
            state.deploy(&name, &deployment).map_err(ApiError::deploy)
        }
    })
    .await
}

/// Stops serving model `name`, once its requests in flight finish.
pub(crate) async fn unload(
    state: Arc<State>,
    headers: &HeaderMap,
    name: String,
) -> Result<(), ApiError> {
    state.access().authorize(headers, Need::Admin)?;
    blocking(move || Ok(state.unload_model(&name).map(drop)?)).await
}

/// Runs `request` on model `name` (version `v`, or the latest) after checking the invoke
/// token: the response and the little-endian bytes of the outputs `binary` picks.
pub(crate) async fn infer(
    state: Arc<State>,
    headers: &HeaderMap,
    name: String,
    v: Option<u64>,
    request: InferenceRequest,
    binary: impl Fn(&InferenceRequest, &str) -> bool + Send + 'static,
) -> Result<(InferenceResponse, Vec<u8>), ApiError> {
    state.access().authorize(headers, Need::Invoke)?;
    let m = state.registry().get(&name, v)?;
    // A quick request that can start at once runs here: handing it to a blocking thread
    // and back would cost it more than its computation.
    if let Some(result) = m.try_infer_request_binary_quick(&request, |o| binary(&request, o)) {
        return Ok(result?);
    }
    blocking(move || Ok(m.infer_request_binary(&request, |output| binary(&request, output))?)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log line is one JSON object per line, whatever the strings hold.
    #[test]
    fn infer_lines_are_json_objects() {
        let model = "m\"odel\\with\nnewline é";
        let error = "bad \"input\"\t\u{1}";
        let line = infer_line(17, "http", model, Some("3"), 400, 250, Some(error));
        let text = String::from_utf8(line).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time_ms": 17, "event": "infer", "protocol": "http", "model": model,
                "version": "3", "status": 400, "duration_us": 250, "error": error,
            })
        );
        let line = infer_line(1, "grpc", "mlp", None, 0, 9, None);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time_ms": 1, "event": "infer", "protocol": "grpc", "model": "mlp",
                "status": 0, "duration_us": 9,
            })
        );
    }
}
