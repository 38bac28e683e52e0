//! `tensorlet serve`: the edge inference server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tensorlet_host::{Error, Repository, Result, Runtime};
use tensorlet_server::{Access, Listeners, ServerConfig, Source, State, Tls, read_token_file};

use super::RuntimeArgs;

/// Serve models with the Open Inference Protocol (KServe v2) over HTTP and gRPC, as
/// Triton does: `tritonclient.http` and `tritonclient.grpc` work unchanged.
///
/// Without --repository it serves the bundled functions (`mlp`, `mnist-cnn`) with their
/// bundled weights, as version 1. With a repository (`DIR/<model>/<version>/function.wasm`
/// and `weights.safetensors`, optional `DIR/<model>/config.json`) it serves the versions each
/// model's policy selects; `POST /v2/repository/models/NAME/load` with files deploys new
/// versions into it (`tensorlet deploy`). It prints one line per listener when ready and
/// stops on SIGINT/SIGTERM after the requests in flight finish.
///
/// The repository routes need `Authorization: Bearer <admin token>` when
/// --admin-token-file is given; without it they are open only if the server listens on
/// loopback. With --invoke-token-file, inference needs that token (or the admin token).
/// Bodies may be gzip or deflate compressed, both ways. With --tls-cert and --tls-key every
/// listener speaks TLS (rustls).
#[derive(Args, Debug)]
pub struct ServeCommand {
    /// A model repository folder (Triton's layout).
    #[arg(long, value_name = "DIR")]
    repository: Option<PathBuf>,
    /// Where the HTTP listener binds (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR:PORT")]
    http: SocketAddr,
    /// Where the gRPC listener binds (`inference.GRPCInferenceService`); `none` turns it
    /// off.
    #[arg(long, default_value = "127.0.0.1:8001", value_name = "ADDR:PORT|none")]
    grpc: String,
    /// Where the metrics listener binds (`GET /metrics`, Prometheus text with Triton's
    /// names); `none` turns it off.
    #[arg(long, default_value = "127.0.0.1:8002", value_name = "ADDR:PORT|none")]
    metrics: String,
    /// Most requests running at once.
    #[arg(long, default_value_t = 2, value_name = "N")]
    max_concurrency: u32,
    /// Most requests waiting for a slot; beyond it a request is refused with 503 at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_queue: u32,
    /// The largest request body, in MiB (as sent, and once decompressed).
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    body_limit: usize,
    /// Most client connections open at once; further clients wait until one closes.
    #[arg(long, default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a client has to send a request's headers (from connecting, or after the
    /// previous response on a kept-alive connection) before its connection is closed.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    header_timeout: f64,
    /// A file holding the admin token, which the repository routes (index, load, deploy,
    /// unload) then require as `Authorization: Bearer <token>`.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// A file holding the invoke token, which inference then requires (the admin token is
    /// accepted too); health and metadata stay open.
    #[arg(long, value_name = "FILE")]
    invoke_token_file: Option<PathBuf>,
    /// A PEM certificate chain (the server's certificate first): with --tls-key, every
    /// listener (HTTP, gRPC, metrics) speaks TLS only.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

impl ServeCommand {
    /// Loads the models and serves until a signal.
    pub fn execute(self) -> Result<()> {
        let mut config = self.runtime.config()?;
        config.max_concurrent_requests = self.max_concurrency.max(1);
        config.max_queued_requests = self.max_queue;
        let runtime = self.runtime.runtime_with(config)?;
        let source = match &self.repository {
            Some(dir) => Source::Repository(Repository::open(dir)?),
            None => Source::Bundled,
        };
        let token = |file: &Option<PathBuf>| file.as_deref().map(read_token_file).transpose();
        // The repository routes and RPCs are open without a token only if no listener that
        // serves them (HTTP, gRPC) is reachable beyond loopback.
        let grpc = optional_addr("--grpc", &self.grpc)?;
        let loopback_only =
            self.http.ip().is_loopback() && grpc.is_none_or(|a| a.ip().is_loopback());
        let access = Access::new(
            token(&self.admin_token_file)?,
            token(&self.invoke_token_file)?,
            loopback_only,
        )?;
        if !Runtime::resets_instances_in_place() {
            eprintln!(
                "tensorlet: warning: this Linux kernel lacks PAGEMAP_SCAN (6.7 or later has \
                 it), so every request's sandbox is reset with memset: expect tens of \
                 microseconds more per request"
            );
        }
        let (state, failed) = State::load(runtime, source, access);
        for (name, e) in &failed {
            eprintln!("tensorlet: model `{name}` is not served: {e}");
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::from_pem_files(cert, key)?),
            _ => None,
        };
        let (web, rpc) = if tls.is_some() {
            ("https", "grpcs")
        } else {
            ("http", "grpc")
        };
        let server = ServerConfig {
            http: self.http,
            grpc,
            metrics: optional_addr("--metrics", &self.metrics)?,
            body_limit: self.body_limit.saturating_mul(1 << 20),
            max_connections: self.max_connections as usize,
            header_read_timeout: std::time::Duration::try_from_secs_f64(self.header_timeout)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::invalid_input(format!(
                        "--header-timeout must be a positive number of seconds, got {}",
                        self.header_timeout
                    ))
                })?,
            tls,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("failed to start the async runtime: {e}")))?;
        rt.block_on(async move {
            let (http, addr) = bind(server.http).await?;
            let grpc = match server.grpc {
                Some(a) => Some(bind(a).await?),
                None => None,
            };
            let metrics = match server.metrics {
                Some(a) => Some(bind(a).await?),
                None => None,
            };
            announce(&format!(
                "tensorlet: HTTP (Open Inference Protocol v2) on {web}://{addr}"
            ));
            if let Some((_, bound)) = &metrics {
                announce(&format!(
                    "tensorlet: metrics (Prometheus) on {web}://{bound}/metrics"
                ));
            }
            if let Some((_, bound)) = &grpc {
                announce(&format!(
                    "tensorlet: gRPC (inference.GRPCInferenceService) on {rpc}://{bound}"
                ));
            }
            let listeners = Listeners {
                http,
                grpc: grpc.map(|(l, _)| l),
                metrics: metrics.map(|(l, _)| l),
            };
            tensorlet_server::serve(
                state,
                listeners,
                &server,
                tensorlet_server::shutdown_signal(),
            )
            .await
            .map_err(|e| io_error(&addr, e))
        })?;
        eprintln!("tensorlet: stopped");
        Ok(())
    }
}

fn io_error(addr: &SocketAddr, e: std::io::Error) -> Error {
    Error::new(
        tensorlet_host::ErrorKind::Io,
        format!("listener on `{addr}`: {e}"),
    )
}

/// Prints a ready line on stdout. A closed stdout (a supervisor that read what it needed and
/// went away) does not stop the server.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// A listener bound to `addr`, and the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| io_error(&addr, e))?;
    let bound = listener.local_addr().map_err(|e| io_error(&addr, e))?;
    Ok((listener, bound))
}

/// The address of an `ADDR:PORT|none` option.
fn optional_addr(flag: &str, value: &str) -> Result<Option<SocketAddr>> {
    match value {
        "none" => Ok(None),
        addr => addr.parse::<SocketAddr>().map(Some).map_err(|e| {
            Error::invalid_input(format!(
                "{flag} must be ADDR:PORT or `none`, got `{addr}`: {e}"
            ))
        }),
    }
}
