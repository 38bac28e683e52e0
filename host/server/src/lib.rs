//! tensorlet's edge inference server: the Open Inference Protocol (KServe v2) over HTTP and
//! gRPC, as Triton implements it, on a [`Registry`] of models.
//!
//! What the server does is transport-independent (`api.rs`); `http.rs` renders it as
//! Triton's REST routes and `grpc.rs` as `inference.GRPCInferenceService` (protobuf code
//! generated at build time from `proto/grpc_service.proto`, without a system `protoc`).
//! Every listener runs the same accept loop ([`serve`]): a connection limit, a header read
//! timeout (HTTP/1.1) or ping timeout (HTTP/2), and a graceful stop.
//!
//! The routes (`http.rs`) are Triton's: server metadata and health, model metadata,
//! readiness, configuration and `infer`, and the model repository extension (index, load,
//! unload), where a load request may also deploy new files (`deploy.rs`). Every error is
//! `{"error": "..."}` with Triton's status codes (400 invalid argument, 401 no token, 403
//! wrong token, 404 unknown model or version, 405 wrong method, 413 body too large, 501
//! unsupported, 503 unavailable, 500 internal). Inference is blocking CPU work: it runs on
//! tokio's blocking threads, bounded by the runtime's admission queue (a full queue answers
//! 503 at once), except quick requests that can start at once, which run on the async
//! thread that parsed them
//! ([`ModelRef::try_infer_request_binary_quick`](tensorlet_host::ModelRef::try_infer_request_binary_quick)).
//! Requests need no `Content-Type` (`tritonclient` sends none); bodies may be
//! gzip- or deflate-compressed both ways (`codec.rs`). Who may call what is [`Access`]
//! (`auth.rs`): an admin token for the repository routes, an invoke token for inference.
//!
//! What the server serves comes from a [`Source`]: a model repository folder in Triton's
//! layout ([`Repository`]), or the functions bundled with tensorlet.

mod api;
mod auth;
mod codec;
mod deploy;
mod grpc;
mod http;
mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tensorlet_host::{
    Error, ModelConfig, ModelSettings, Registry, Repository, Result, Runtime, bundled,
};

pub use auth::{Access, read_token_file};
pub use deploy::{Deployment, Parameter};
pub use grpc::{grpc_router, proto};
pub use http::{metrics_router, render_metrics, router};
pub use tls::{Tls, read_certificates};

/// Where the server's models come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A model repository folder (Triton's layout).
    Repository(Repository),
    /// The bundled functions with their default weights, each as version 1.
    Bundled,
}

/// Settings of the server ([`serve`]).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where the HTTP listener binds.
    pub http: SocketAddr,
    /// Where the gRPC listener binds (KServe's `inference.GRPCInferenceService`), if
    /// anywhere.
    pub grpc: Option<SocketAddr>,
    /// Where the metrics listener binds (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The largest request body accepted, in bytes, both as sent and once decoded.
    pub body_limit: usize,
    /// Most client connections open at once on each listener; further clients wait in the
    /// listen backlog until a connection closes, so idle or slow clients cannot exhaust the
    /// server's memory or file descriptors.
    pub max_connections: usize,
    /// How long a client has to send a request's headers — from connecting, or from the
    /// previous response on a kept-alive connection — before its connection is closed, so a
    /// client that trickles headers (or idles) does not hold a connection slot forever.
    pub header_read_timeout: Duration,
    /// TLS on every listener (HTTP, gRPC and metrics), if given.
    pub tls: Option<Tls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 8000)),
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 8001))),
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 8002))),
            body_limit: 64 << 20,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// What every request handler shares: the registry, where models come from, and who may
/// do what.
#[derive(Debug)]
pub struct State {
    registry: Registry,
    source: Source,
    access: Access,
    /// Held while the served models change (load, deploy, unload), one change at a time.
    changes: Mutex<()>,
}

impl State {
    /// Serves the models of `source` in `runtime`, loading all of them now, with `access`
    /// guarding the routes. A model that fails to load is reported in the returned list and
    /// not served; the others are.
    pub fn load(
        runtime: Runtime,
        source: Source,
        access: Access,
    ) -> (Arc<State>, Vec<(String, Error)>) {
        let state = State {
            registry: Registry::new(runtime),
            source,
            access,
            changes: Mutex::new(()),
        };
        let mut failed = Vec::new();
        for name in state.model_names() {
            if let Err(e) = state.load_model(&name) {
                failed.push((name, e));
            }
        }
        (Arc::new(state), failed)
    }

    /// The registry of served models.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Who may call which routes.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Every model the source has (served or not).
    pub fn model_names(&self) -> Vec<String> {
        match &self.source {
            Source::Repository(r) => r.model_names().unwrap_or_default(),
            // Only the bundled functions whose weights are bundled too.
            Source::Bundled => bundled::BUNDLED
                .iter()
                .filter(|b| b.default_weights.is_some())
                .map(|b| b.name.to_string())
                .collect(),
        }
    }

    /// Model `name`'s configuration.
    pub fn config(&self, name: &str) -> Result<ModelConfig> {
        match &self.source {
            Source::Repository(r) => r.config(name),
            Source::Bundled => {
                bundled::find(name)?;
                Ok(ModelConfig::default())
            }
        }
    }

    /// The lock that makes changes to the served models one at a time.
    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (Re)loads model `name` from the source; what served before keeps serving if this
    /// fails. Returns the versions now served.
    pub fn load_model(&self, name: &str) -> Result<Vec<u64>> {
        let _changing = self.changing();
        match &self.source {
            Source::Repository(r) => self.registry.load_from_repository(r, name),
            Source::Bundled => {
                let b = bundled::find(name)?;
                let rt = self.registry.runtime();
                let function = rt.load_function(b.name, b.component)?;
                let weights =
                    rt.load_weights(&format!("bundled {} weights", b.name), b.weights()?)?;
                let model = tensorlet_host::Model::new(
                    b.name,
                    1,
                    function,
                    weights,
                    ModelSettings::default(),
                )?;
                self.registry.publish(model);
                Ok(vec![1])
            }
        }
    }

    /// Stops serving model `name` (every version), waiting for its requests in flight (at
    /// most the runtime's deadline). Returns how many versions were unloaded.
    pub fn unload_model(&self, name: &str) -> Result<usize> {
        let _changing = self.changing();
        let wait = self.registry.runtime().config().deadline;
        self.registry.unload(name, None, wait)
    }
}

/// The bound listeners of a server: HTTP, and optionally gRPC and metrics.
#[derive(Debug)]
pub struct Listeners {
    /// The Open Inference Protocol over HTTP/1.1.
    pub http: tokio::net::TcpListener,
    /// The gRPC service (HTTP/2).
    pub grpc: Option<tokio::net::TcpListener>,
    /// `GET /metrics`.
    pub metrics: Option<tokio::net::TcpListener>,
}

/// Serves `state` on `listeners` until `shutdown` completes; requests in flight then
/// finish before this returns.
pub async fn serve(
    state: Arc<State>,
    listeners: Listeners,
    config: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let limits = ConnectionLimits {
        max_connections: config.max_connections.max(1),
        header_read_timeout: config.header_read_timeout,
    };
    let tls = |http2: bool| config.tls.as_ref().map(|t| t.acceptor(http2));
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(serve_connections(
        listeners.http,
        router(state.clone(), config.body_limit),
        Protocol::Http1,
        limits,
        tls(false),
        stopped.clone(),
    ));
    if let Some(grpc) = listeners.grpc {
        servers.spawn(serve_connections(
            grpc,
            grpc_router(state.clone(), config.body_limit),
            Protocol::Http2,
            limits,
            tls(true),
            stopped.clone(),
        ));
    }
    if let Some(metrics) = listeners.metrics {
        servers.spawn(serve_connections(
            metrics,
            metrics_router(state),
            Protocol::Http1,
            limits,
            tls(false),
            stopped,
        ));
    }
    let mut result = Ok(());
    while let Some(done) = servers.join_next().await {
        let done = done.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        result = result.and(done);
    }
    api::flush_log();
    result
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.1 with keep-alive (the REST routes, metrics).
    Http1,
    /// HTTP/2 (gRPC).
    Http2,
}

/// The per-connection limits of [`serve_connections`].
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    max_connections: usize,
    header_read_timeout: Duration,
}

/// Accepts connections on `listener` and serves `app` on each in `protocol` (HTTP/1.1 with
/// keep-alive, or HTTP/2), over TLS when `tls` is given, at most `limits.max_connections` at a time. An HTTP/1.1
/// connection is closed if a request's headers take longer than
/// `limits.header_read_timeout`; an HTTP/2 connection whose client does not answer pings
/// within it. When `stopped` turns true it stops accepting, lets every connection finish
/// its requests in flight (idle ones close at once), and returns.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    protocol: Protocol,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    match protocol {
        Protocol::Http1 => {
            http = http.http1_only();
            http.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true);
        }
        Protocol::Http2 => {
            http = http.http2_only();
            http.http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.header_read_timeout)
                .keep_alive_timeout(limits.header_read_timeout);
        }
    }
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stop_requested(&mut stopped) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, a connection reset before it was accepted, ...:
                // this client is lost, the listener is not; back off a moment.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = stop_requested(&mut stopped) => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let connection = http
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    // A connection's own errors (a client gone, a header timeout) end only it.
                    let _ = connection.await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                // The handshake runs on the connection's task, bounded like a request's
                // headers, so a client that stalls it holds only its own slot.
                let handshake = acceptor.accept(stream);
                let (http, watcher) = (http.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let timeout = limits.header_read_timeout;
                    if let Ok(Ok(stream)) = tokio::time::timeout(timeout, handshake).await {
                        let connection = http
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = watcher.watch(connection).await;
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Resolves once `stopped` turns true (or its sender is gone).
async fn stop_requested(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
