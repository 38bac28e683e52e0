//! The HTTP routes: Triton's Open Inference Protocol endpoints and its model repository
//! extension, every error as `{"error": "..."}` with Triton's status codes. Inference routes
//! check the invoke token and repository routes the admin token first (`auth.rs`); every
//! body passes through `codec.rs` (size limit, compression).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State as Shared};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tensorlet_host::{Error, ErrorKind, FailureReason, InferenceRequest, ModelStats};

use crate::auth::Need;
use crate::deploy::Deployment;
use crate::{State, api};

/// The router of a server over `state`, accepting bodies up to `body_limit` bytes.
pub fn router(state: Arc<State>, body_limit: usize) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(live))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(model_stats_v),
        )
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            body_limit,
            crate::codec::bodies,
        ))
        .with_state(state)
}

/// The router of the metrics listener: `GET /metrics`, Prometheus text with Triton's
/// metric names and `model`/`version` labels, so Triton dashboards work unchanged.
pub fn metrics_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn metrics(Shared(state): Shared<Arc<State>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(&state.registry().stats(None)),
    )
        .into_response()
}

/// A metric family: name, type, help text, and its value for one version's statistics.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ModelStats) -> u64,
);

/// `stats` as Prometheus text with Triton's names: per model version (labels `model`,
/// `version`) the success and failure counts (failures also by `reason`: `REJECTED`,
/// `BACKEND`, `OTHER`), inference and execution counts, cumulative request, queue and
/// compute durations in microseconds, and the requests waiting in the queue now.
pub fn render_metrics(stats: &[ModelStats]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let families: [Family; 8] = [
        (
            "nv_inference_request_success",
            "counter",
            "Number of successful inference requests",
            |s| s.success,
        ),
        (
            "nv_inference_request_failure",
            "counter",
            "Number of failed inference requests",
            |s| s.fail,
        ),
        (
            "nv_inference_count",
            "counter",
            "Number of inferences performed",
            |s| s.success,
        ),
        (
            "nv_inference_exec_count",
            "counter",
            "Number of model executions performed",
            |s| s.executions,
        ),
        (
            "nv_inference_request_duration_us",
            "counter",
            "Cumulative inference request duration in microseconds",
            |s| (s.success_ns + s.fail_ns) / 1000,
        ),
        (
            "nv_inference_queue_duration_us",
            "counter",
            "Cumulative inference queuing duration in microseconds",
            |s| s.queue_ns / 1000,
        ),
        (
            "nv_inference_compute_infer_duration_us",
            "counter",
            "Cumulative compute inference duration in microseconds",
            |s| s.compute_ns / 1000,
        ),
        (
            "nv_inference_pending_request_count",
            "gauge",
            "Instantaneous number of pending requests awaiting execution per-model",
            |s| s.pending,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in stats {
            let labels = format!("model=\"{}\",version=\"{}\"", s.name, s.version);
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(s));
            if name == "nv_inference_request_failure" {
                for (reason, n) in FailureReason::ALL.iter().zip(s.fail_by_reason) {
                    let _ = writeln!(out, "{name}{{{labels},reason=\"{}\"}} {n}", reason.label());
                }
            }
        }
    }
    out
}

/// A failed request: a status and the message of its `{"error": ...}` body.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// A failure with `status` and `message`.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.0
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.1
    }

    /// A failure to build a model from deployed files: a bad component, bad weights or a
    /// bad configuration is the caller's to fix (400), whatever kind of error the build
    /// reported; only server-side failures keep their status.
    pub(crate) fn deploy(e: Error) -> Self {
        match e.kind() {
            ErrorKind::Io | ErrorKind::Internal | ErrorKind::Unavailable => e.into(),
            _ => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.kind() {
            ErrorKind::InvalidInput | ErrorKind::ShapeMismatch | ErrorKind::LimitExceeded => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Trap | ErrorKind::Io | ErrorKind::Internal => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, json_body(&json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type Reply = Result<Response, ApiError>;

/// `value` as a JSON response body.
fn json_body(value: &Value) -> impl IntoResponse + use<> {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

fn ok_json(value: Value) -> Reply {
    Ok(json_body(&value).into_response())
}

async fn server_metadata() -> Reply {
    let m = api::server_metadata();
    ok_json(json!({
        "name": m.name,
        "version": m.version,
        "extensions": m.extensions,
    }))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint; see the Open Inference Protocol's /v2/... routes".into(),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method".into(),
    )
}

fn tensors_json(tensors: &[api::TensorInfo]) -> Value {
    tensors
        .iter()
        .map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape }))
        .collect()
}

fn metadata(state: &State, name: &str, v: Option<u64>) -> Reply {
    let m = api::model_info(state, name, v)?;
    ok_json(json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors_json(&m.inputs),
        "outputs": tensors_json(&m.outputs),
    }))
}

async fn model_metadata(Shared(state): Shared<Arc<State>>, Path(model): Path<String>) -> Reply {
    metadata(&state, &model, None)
}

async fn model_metadata_v(
    Shared(state): Shared<Arc<State>>,
    Path((model, v)): Path<(String, String)>,
) -> Reply {
    metadata(&state, &model, Some(api::version(&v)?))
}

fn readiness(state: &State, name: &str, v: Option<u64>) -> StatusCode {
    if api::ready(state, name, v) {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn model_ready(Shared(state): Shared<Arc<State>>, Path(model): Path<String>) -> StatusCode {
    readiness(&state, &model, None)
}

async fn model_ready_v(
    Shared(state): Shared<Arc<State>>,
    Path((model, v)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    Ok(readiness(&state, &model, Some(api::version(&v)?)))
}

async fn model_config(Shared(state): Shared<Arc<State>>, Path(model): Path<String>) -> Reply {
    let config = state.config(&model)?;
    let mut value = serde_json::to_value(&config).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the configuration: {e}"),
        )
    })?;
    value["name"] = json!(model);
    ok_json(value)
}

/// The binary tensor data extension's header: the length of the JSON part of a body.
const HEADER_LENGTH: &str = "inference-header-content-length";

async fn run_infer(
    state: Arc<State>,
    model: String,
    v: Option<&str>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let v = v.map(api::version).transpose()?;
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(h) => Some(
            h.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("the {HEADER_LENGTH} header is not a byte count: {h:?}"),
                    )
                })?,
        ),
    };
    let request = InferenceRequest::from_body(&body, header_length)?;
    let (response, tail) = api::infer(state, &headers, model, v, request, |request, name| {
        request.wants_binary(name)
    })
    .await?;
    let json = serde_json::to_vec(&response).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the response: {e}"),
        )
    })?;
    let binary = response.outputs.iter().any(|o| !o.parameters.is_empty());
    if !binary {
        return Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response());
    }
    let json_len = json.len();
    let mut body = json;
    body.extend_from_slice(&tail);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                json_len.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

async fn infer(
    Shared(state): Shared<Arc<State>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let started = std::time::Instant::now();
    let reply = run_infer(state, model.clone(), None, headers, body).await;
    log_infer(&model, None, started, &reply);
    reply
}

async fn infer_v(
    Shared(state): Shared<Arc<State>>,
    Path((model, v)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let started = std::time::Instant::now();
    let reply = run_infer(state, model.clone(), Some(&v), headers, body).await;
    log_infer(&model, Some(&v), started, &reply);
    reply
}

fn log_infer(model: &str, version: Option<&str>, started: std::time::Instant, reply: &Reply) {
    let (status, error) = match reply {
        Ok(r) => (r.status().as_u16(), None),
        Err(e) => (e.status().as_u16(), Some(e.1.as_str())),
    };
    api::log_infer("http", model, version, started, i64::from(status), error);
}

/// Triton's statistics object for `stats`.
fn stats_json(stats: Vec<ModelStats>) -> Value {
    let models: Vec<Value> = stats
        .into_iter()
        .map(|s| {
            let duration = |count: u64, ns: u64| json!({ "count": count, "ns": ns });
            json!({
                "name": s.name,
                "version": s.version.to_string(),
                "last_inference": s.last_inference_ms,
                "inference_count": s.success,
                "execution_count": s.executions,
                "inference_stats": {
                    "success": duration(s.success, s.success_ns),
                    "fail": duration(s.fail, s.fail_ns),
                    "queue": duration(s.success, s.queue_ns),
                    "compute_input": duration(0, 0),
                    "compute_infer": duration(s.success, s.compute_ns),
                    "compute_output": duration(0, 0),
                },
            })
        })
        .collect();
    json!({ "model_stats": models })
}

async fn all_stats(Shared(state): Shared<Arc<State>>) -> Reply {
    ok_json(stats_json(api::stats(&state, None, None)?))
}

fn one_model_stats(state: &State, model: &str, v: Option<u64>) -> Reply {
    ok_json(stats_json(api::stats(state, Some(model), v)?))
}

async fn model_stats(Shared(state): Shared<Arc<State>>, Path(model): Path<String>) -> Reply {
    one_model_stats(&state, &model, None)
}

async fn model_stats_v(
    Shared(state): Shared<Arc<State>>,
    Path((model, v)): Path<(String, String)>,
) -> Reply {
    one_model_stats(&state, &model, Some(api::version(&v)?))
}

async fn repository_index(Shared(state): Shared<Arc<State>>, headers: HeaderMap) -> Reply {
    let index = api::index(&state, &headers)?
        .into_iter()
        .map(|e| match e.version {
            Some(v) => json!({ "name": e.name, "version": v.to_string(), "state": e.state }),
            None => json!({ "name": e.name, "state": e.state }),
        })
        .collect();
    ok_json(Value::Array(index))
}

/// Triton's load: an empty body (or no `parameters`) (re)loads the model from the
/// repository; `parameters` with `config` and/or `file:<version>/<file>` deploy new files
/// first (`deploy.rs`). Answers the versions now served.
async fn repository_load(
    Shared(state): Shared<Arc<State>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    state.access().authorize(&headers, Need::Admin)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the load request is not UTF-8 JSON ({e})"),
            )
        })?
        .trim();
    let parameters = if text.is_empty() {
        None
    } else {
        let parsed: Value = serde_json::from_str(text).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the load request is not JSON ({e})"),
            )
        })?;
        match parsed.get("parameters") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) if p.is_empty() => None,
            Some(Value::Object(p)) => Some(p.clone()),
            Some(other) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("the load request's `parameters` must be an object, got {other}"),
                ));
            }
        }
    };
    let name = model.clone();
    let deployment = parameters.map(|p| move || Ok(Deployment::from_parameters(&name, &p)?));
    let versions = api::load(state, &headers, model.clone(), deployment).await?;
    let versions: Vec<String> = versions.iter().map(u64::to_string).collect();
    ok_json(json!({ "name": model, "versions": versions }))
}

async fn repository_unload(
    Shared(state): Shared<Arc<State>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Reply {
    api::unload(state, &headers, model).await?;
    ok_json(json!({}))
}
