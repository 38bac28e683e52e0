//! The gRPC transport: KServe's `inference.GRPCInferenceService` as Triton serves it (and
//! `tritonclient.grpc` calls it) — health, metadata, configuration, statistics, `ModelInfer`
//! and the repository RPCs — over the operations of `api.rs`, so every answer and every
//! failure is the HTTP route's, in protobuf. Failures map from their HTTP status to the
//! gRPC code (400 `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404
//! `NOT_FOUND`, 501 `UNIMPLEMENTED`, 503 `UNAVAILABLE`, others `INTERNAL`). Tokens come as
//! `authorization: Bearer <token>` metadata. Messages are limited to the server's body
//! limit both ways (tonic's default is 4 MB).
//!
//! Tensors: a request's inputs come as `raw_input_contents` (little-endian elements, what
//! tritonclient sends) or as typed `contents`; every output goes back as raw contents.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Map, Value};
use tensorlet_host::InferenceRequest;
use tensorlet_host::oip::{RequestInput, RequestedOutput};
use tensorlet_host::repository::VersionPolicy;
use tonic::{Code, Request, Response, Status};

use crate::State;
use crate::api;
use crate::deploy::{Deployment, Parameter};
use crate::http::ApiError;

/// The messages and service generated from `proto/grpc_service.proto` by `build.rs`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::{
    infer_parameter::ParameterChoice, model_repository_parameter::ParameterChoice as RepoChoice,
};

/// The gRPC service over `state`, as a router for the accept loop, with messages up to
/// `message_limit` bytes both ways.
pub fn grpc_router(state: Arc<State>, message_limit: usize) -> axum::Router {
    let service = GrpcInferenceServiceServer::new(Grpc { state })
        .max_decoding_message_size(message_limit)
        .max_encoding_message_size(message_limit);
    tonic::service::Routes::new(service)
        .prepare()
        .into_axum_router()
}

/// The service: the server's shared state.
struct Grpc {
    state: Arc<State>,
}

type Reply<T> = Result<Response<T>, Status>;

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match e.status() {
            StatusCode::BAD_REQUEST => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
            StatusCode::NOT_IMPLEMENTED => Code::Unimplemented,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            _ => Code::Internal,
        };
        Status::new(code, e.message())
    }
}

fn bad(message: String) -> Status {
    Status::invalid_argument(message)
}

fn tensors(ts: Vec<api::TensorInfo>) -> Vec<proto::model_metadata_response::TensorMetadata> {
    ts.into_iter()
        .map(|t| proto::model_metadata_response::TensorMetadata {
            name: t.name,
            datatype: t.datatype.to_string(),
            shape: t.shape,
        })
        .collect()
}

/// Triton's configuration datatype of a wire datatype.
fn config_datatype(datatype: &str) -> proto::DataType {
    use proto::DataType as D;
    match datatype {
        "FP32" => D::TypeFp32,
        "FP16" => D::TypeFp16,
        "BF16" => D::TypeBf16,
        "UINT8" => D::TypeUint8,
        _ => D::TypeInvalid,
    }
}

fn duration(count: u64, ns: u64) -> Option<proto::StatisticDuration> {
    Some(proto::StatisticDuration { count, ns })
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: Request<proto::ServerLiveRequest>,
    ) -> Reply<proto::ServerLiveResponse> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<proto::ServerReadyRequest>,
    ) -> Reply<proto::ServerReadyResponse> {
        Ok(Response::new(proto::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<proto::ModelReadyRequest>,
    ) -> Reply<proto::ModelReadyResponse> {
        let r = request.into_inner();
        let v = api::optional_version(&r.version)?;
        Ok(Response::new(proto::ModelReadyResponse {
            ready: api::ready(&self.state, &r.name, v),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<proto::ServerMetadataRequest>,
    ) -> Reply<proto::ServerMetadataResponse> {
        let m = api::server_metadata();
        Ok(Response::new(proto::ServerMetadataResponse {
            name: m.name.into(),
            version: m.version.into(),
            extensions: m.extensions.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<proto::ModelMetadataRequest>,
    ) -> Reply<proto::ModelMetadataResponse> {
        let r = request.into_inner();
        let v = api::optional_version(&r.version)?;
        let m = api::model_info(&self.state, &r.name, v)?;
        Ok(Response::new(proto::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<proto::ModelInferRequest>,
    ) -> Reply<proto::ModelInferResponse> {
        let started = std::time::Instant::now();
        let headers = request.metadata().clone().into_headers();
        let r = request.into_inner();
        let (model, version) = (r.model_name.clone(), r.model_version.clone());
        let result: Result<_, Status> = async {
            let v = api::optional_version(&r.model_version)?;
            let request = infer_request(r)?;
            let (response, tail) = api::infer(
                self.state.clone(),
                &headers,
                model.clone(),
                v,
                request,
                |_, _| true,
            )
            .await?;
            Ok(infer_response(response, tail)?)
        }
        .await;
        let (code, error) = match &result {
            Ok(_) => (Code::Ok, None),
            Err(e) => (e.code(), Some(e.message())),
        };
        let version = Some(version.as_str()).filter(|v| !v.is_empty());
        api::log_infer(
            "grpc",
            &model,
            version,
            started,
            i64::from(code as i32),
            error,
        );
        result.map(Response::new)
    }

    async fn model_config(
        &self,
        request: Request<proto::ModelConfigRequest>,
    ) -> Reply<proto::ModelConfigResponse> {
        let r = request.into_inner();
        let config = self.state.config(&r.name).map_err(ApiError::from)?;
        let info = api::model_info(&self.state, &r.name, None).ok();
        let (inputs, outputs) = info.map(|m| (m.inputs, m.outputs)).unwrap_or_default();
        let policy = match &config.version_policy {
            VersionPolicy::Latest { num_versions } => {
                proto::model_version_policy::PolicyChoice::Latest(
                    proto::model_version_policy::Latest {
                        num_versions: *num_versions,
                    },
                )
            }
            VersionPolicy::All {} => {
                proto::model_version_policy::PolicyChoice::All(proto::model_version_policy::All {})
            }
            VersionPolicy::Specific { versions } => {
                proto::model_version_policy::PolicyChoice::Specific(
                    proto::model_version_policy::Specific {
                        versions: versions.iter().map(|&v| v as i64).collect(),
                    },
                )
            }
        };
        let config = proto::ModelConfig {
            name: r.name,
            platform: api::PLATFORM.into(),
            backend: "tensorlet".into(),
            version_policy: Some(proto::ModelVersionPolicy {
                policy_choice: Some(policy),
            }),
            max_batch_size: i32::try_from(config.max_batch_size).unwrap_or(i32::MAX),
            input: inputs
                .into_iter()
                .map(|t| proto::ModelInput {
                    name: t.name,
                    data_type: config_datatype(t.datatype).into(),
                    dims: t.shape,
                })
                .collect(),
            output: outputs
                .into_iter()
                .map(|t| proto::ModelOutput {
                    name: t.name,
                    data_type: config_datatype(t.datatype).into(),
                    dims: t.shape,
                })
                .collect(),
            dynamic_batching: config
                .dynamic_batching
                .map(|b| proto::ModelDynamicBatching {
                    preferred_batch_size: b
                        .preferred_batch_size
                        .iter()
                        .map(|&s| i32::try_from(s).unwrap_or(i32::MAX))
                        .collect(),
                    max_queue_delay_microseconds: b.max_queue_delay_microseconds,
                }),
        };
        Ok(Response::new(proto::ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<proto::ModelStatisticsRequest>,
    ) -> Reply<proto::ModelStatisticsResponse> {
        let r = request.into_inner();
        let v = api::optional_version(&r.version)?;
        let name = Some(r.name.as_str()).filter(|n| !n.is_empty());
        let model_stats = api::stats(&self.state, name, v)?
            .into_iter()
            .map(|s| proto::ModelStatistics {
                name: s.name,
                version: s.version.to_string(),
                last_inference: s.last_inference_ms,
                inference_count: s.success,
                execution_count: s.executions,
                inference_stats: Some(proto::InferStatistics {
                    success: duration(s.success, s.success_ns),
                    fail: duration(s.fail, s.fail_ns),
                    queue: duration(s.success, s.queue_ns),
                    compute_input: duration(0, 0),
                    compute_infer: duration(s.success, s.compute_ns),
                    compute_output: duration(0, 0),
                }),
            })
            .collect();
        Ok(Response::new(proto::ModelStatisticsResponse {
            model_stats,
        }))
    }

    async fn repository_index(
        &self,
        request: Request<proto::RepositoryIndexRequest>,
    ) -> Reply<proto::RepositoryIndexResponse> {
        let headers = request.metadata().clone().into_headers();
        let ready_only = request.get_ref().ready;
        let models = api::index(&self.state, &headers)?
            .into_iter()
            .filter(|e| !ready_only || e.version.is_some())
            .map(|e| proto::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version.map(|v| v.to_string()).unwrap_or_default(),
                state: e.state.into(),
                reason: String::new(),
            })
            .collect();
        Ok(Response::new(proto::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<proto::RepositoryModelLoadRequest>,
    ) -> Reply<proto::RepositoryModelLoadResponse> {
        let headers = request.metadata().clone().into_headers();
        let r = request.into_inner();
        let name = r.model_name.clone();
        let parameters = r.parameters;
        let deployment = (!parameters.is_empty()).then_some(move || {
            let entries = parameters.iter().map(|(key, p)| {
                let value = match &p.parameter_choice {
                    Some(RepoChoice::StringParam(s)) => Parameter::Text(s),
                    Some(RepoChoice::BytesParam(b)) => Parameter::Bytes(b),
                    Some(RepoChoice::BoolParam(_)) => Parameter::Other("a boolean"),
                    Some(RepoChoice::Int64Param(_)) => Parameter::Other("a number"),
                    None => Parameter::Other("no value"),
                };
                (key.as_str(), value)
            });
            Ok(Deployment::from_entries(&name, entries)?)
        });
        api::load(self.state.clone(), &headers, r.model_name, deployment).await?;
        Ok(Response::new(proto::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<proto::RepositoryModelUnloadRequest>,
    ) -> Reply<proto::RepositoryModelUnloadResponse> {
        let headers = request.metadata().clone().into_headers();
        api::unload(
            self.state.clone(),
            &headers,
            request.into_inner().model_name,
        )
        .await?;
        Ok(Response::new(proto::RepositoryModelUnloadResponse {}))
    }
}

/// A parameter as the JSON value the HTTP protocol would carry.
fn parameter_json(p: &proto::InferParameter) -> Value {
    match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Value::from(*b),
        Some(ParameterChoice::Int64Param(i)) => Value::from(*i),
        Some(ParameterChoice::StringParam(s)) => Value::from(s.as_str()),
        Some(ParameterChoice::DoubleParam(d)) => Value::from(*d),
        Some(ParameterChoice::Uint64Param(u)) => Value::from(*u),
        None => Value::Null,
    }
}

fn parameters_json(ps: &HashMap<String, proto::InferParameter>) -> Map<String, Value> {
    ps.iter()
        .map(|(k, p)| (k.clone(), parameter_json(p)))
        .collect()
}

/// The Open Inference Protocol request of a `ModelInfer` message: raw contents become
/// each input's binary data, typed contents its JSON data.
fn infer_request(r: proto::ModelInferRequest) -> Result<InferenceRequest, Status> {
    let raw = r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in input \
             order, or typed contents for every input",
            raw.len(),
            r.inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for input in r.inputs {
        let shape = input
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| {
                bad(format!(
                    "input `{}`: shape {:?} has a negative dimension",
                    input.name, input.shape
                ))
            })?;
        let (data, binary) = match raw.next() {
            Some(bytes) => (Value::Null, Some(bytes)),
            None => contents(&input.name, &input.datatype, input.contents)?,
        };
        inputs.push(RequestInput {
            name: input.name,
            shape,
            datatype: input.datatype,
            data,
            parameters: parameters_json(&input.parameters),
            binary,
        });
    }
    Ok(InferenceRequest {
        id: Some(r.id).filter(|id| !id.is_empty()),
        inputs,
        outputs: r
            .outputs
            .into_iter()
            .map(|o| RequestedOutput {
                parameters: parameters_json(&o.parameters),
                name: o.name,
            })
            .collect(),
        parameters: parameters_json(&r.parameters),
    })
}

/// Typed contents as JSON data, or (BYTES) as binary data, each element length-prefixed.
fn contents(
    name: &str,
    datatype: &str,
    c: Option<proto::InferTensorContents>,
) -> Result<(Value, Option<Vec<u8>>), Status> {
    let c = c.unwrap_or_default();
    let numbers = |v: Vec<Value>| Ok((Value::Array(v), None));
    match datatype {
        "FP32" => numbers(c.fp32_contents.into_iter().map(Value::from).collect()),
        "FP64" => numbers(c.fp64_contents.into_iter().map(Value::from).collect()),
        "INT8" | "INT16" | "INT32" => {
            numbers(c.int_contents.into_iter().map(Value::from).collect())
        }
        "INT64" => numbers(c.int64_contents.into_iter().map(Value::from).collect()),
        "UINT8" | "UINT16" | "UINT32" => {
            numbers(c.uint_contents.into_iter().map(Value::from).collect())
        }
        "UINT64" => numbers(c.uint64_contents.into_iter().map(Value::from).collect()),
        "BYTES" => {
            // Every element framed as in binary data: a 4-byte length, then its bytes.
            let mut framed = Vec::new();
            for bytes in c.bytes_contents {
                let len = u32::try_from(bytes.len())
                    .map_err(|_| bad(format!("input `{name}`: a BYTES element of over 4 GiB")))?;
                framed.extend_from_slice(&len.to_le_bytes());
                framed.extend_from_slice(&bytes);
            }
            Ok((Value::Null, Some(framed)))
        }
        other => Err(bad(format!(
            "input `{name}`: datatype `{other}` has no typed contents; send it as \
             raw_input_contents"
        ))),
    }
}

/// The `ModelInfer` answer of a response whose outputs are all binary data (`tail`).
fn infer_response(
    r: tensorlet_host::InferenceResponse,
    tail: Vec<u8>,
) -> Result<proto::ModelInferResponse, ApiError> {
    let mut raw = Vec::with_capacity(r.outputs.len());
    let mut rest = tail.as_slice();
    let mut outputs = Vec::with_capacity(r.outputs.len());
    for o in r.outputs {
        let size = o
            .parameters
            .get("binary_data_size")
            .and_then(Value::as_u64)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s <= rest.len())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("output `{}` has no binary data", o.name),
                )
            })?;
        let (bytes, tail) = rest.split_at(size);
        raw.push(bytes.to_vec());
        rest = tail;
        outputs.push(proto::model_infer_response::InferOutputTensor {
            name: o.name,
            datatype: o.datatype,
            shape: o.shape.iter().map(|&d| d as i64).collect(),
            parameters: HashMap::new(),
            contents: None,
        });
    }
    Ok(proto::ModelInferResponse {
        model_name: r.model_name,
        model_version: r.model_version.unwrap_or_default(),
        id: r.id.unwrap_or_default(),
        parameters: HashMap::new(),
        outputs,
        raw_output_contents: raw,
    })
}
