//! The embedding API: [`Runtime`] → [`Function`] × [`Weights`] → outputs.
//!
//! Three lifetimes of state are kept apart. Set up once per [`Runtime`] (the engine
//! lifetime): the wasmtime `Engine` (pooling allocator, epoch interruption), the `Linker`
//! with WASI and the tensorlet imports, the kernel [`Backend`], the epoch ticker thread,
//! the admission queue, the host-memory budget, and the weights and compiled-code caches.
//! Per model: a [`Function`] (the compiled component as an `InstancePre`, its metadata,
//! checked imports) and a prepared [`Weights`] set, shared by every request. Per request:
//! a fresh `Store` and instance bound to one weights set, with a kernel session, a
//! deadline, a memory limit and a tensor budget, dropped when the request ends — so
//! requests cannot see each other.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tensorlet_kernels::{Kernels, ThreadPool};
use wasmtime::component::{
    Component, ComponentExportIndex, HasSelf, Instance, Linker, Resource, TypedFunc,
};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::backend::wasm::{KERNELS_COMPONENT, KernelSession, WasmBackend};
use crate::backend::{self, Backend, Failure, KernelBackend, SessionLimits};
use crate::compile_cache::CompileCache;
use crate::error::{Error, ErrorKind, Result};
use crate::host::State;
use crate::limits::{Admission, HostMemory, LimitHit, Permit, TensorBudget};
use crate::tensor::Tensor;
use crate::weights::{Weights, WeightsCache};
use crate::wit::{
    FunctionMetadata, InferenceFunction, InferenceFunctionPre, NamedTensor, WitError,
};

/// Bytes of each pooled linear memory kept resident between instances (a Rust function's
/// stack, data and first heap pages).
const KEEP_RESIDENT_BYTES: usize = 4 << 20;
/// Bytes of each pooled table kept resident between instances.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// Freed pool slots whose memory waits for decommit before the queue is flushed.
const DECOMMIT_BATCH: usize = 32;

/// How often the epoch ticker advances the engine's epoch.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings of a [`Runtime`]. `Default` gives production values.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Wall-clock limit of one request, from its arrival: time waiting for a slot,
    /// instantiation and `infer`.
    pub deadline: Duration,
    /// Maximum linear memory of a function instance, in bytes. With
    /// [`KernelBackend::Wasm`] the kernels instance beside it has the same limit, apart.
    pub memory_limit: usize,
    /// Maximum bytes of tensors one request may hold in the host, in total.
    pub tensor_budget: usize,
    /// Maximum bytes of tensors all requests in flight may hold in the host together.
    /// The native backend also keeps up to a sixteenth of it (at most 128 MiB) of large
    /// buffers of finished requests, for later requests' outputs.
    pub host_memory_budget: usize,
    /// Most requests running at once (sizes the pooling allocator).
    pub max_concurrent_requests: u32,
    /// Most requests waiting for a slot; one more is refused as
    /// [`ErrorKind::Unavailable`], as is one whose deadline passes while it waits.
    pub max_queued_requests: u32,
    /// The kernels' SIMD level; `None` picks the best the CPU has.
    pub kernel_level: Option<tensorlet_kernels::Level>,
    /// Which kernels run the functions' ops: the native plugin (default) or the kernels
    /// component beside each request's function.
    pub kernels: KernelBackend,
    /// Threads one native dense op may use: the runtime starts one pool of this many
    /// (counting the calling thread) that every request's ops share (see
    /// `tensorlet_kernels::ThreadPool`: only large products are split, and an op that finds
    /// every worker busy runs on its own thread). 1 (the default) starts no pool.
    pub kernel_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            deadline: Duration::from_secs(30),
            memory_limit: 256 << 20,
            tensor_budget: 2 << 30,
            host_memory_budget: 8 << 30,
            max_concurrent_requests: 32,
            max_queued_requests: 1024,
            kernel_level: None,
            kernels: KernelBackend::Native,
            kernel_threads: 1,
        }
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<State>,
    config: RuntimeConfig,
    kernels: Kernels,
    backend: Arc<dyn Backend>,
    /// The kernels component, linked on first use (at start-up with the wasm backend).
    wasm: OnceLock<Arc<WasmBackend>>,
    admission: Arc<Admission>,
    host_memory: Arc<HostMemory>,
    weights: WeightsCache,
    compile_cache: Option<CompileCache>,
}

/// A host for inference functions: one engine, linker, kernel backend, admission queue and
/// weights cache. Cheap to clone; clones share everything. `Send + Sync`: share one
/// across threads.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with `config`; every component is compiled in this process.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        Self::build(config, None)
    }

    /// A runtime with `config` that keeps compiled components in `dir` and loads them from
    /// there in later processes (an artifact is keyed by the digest of the component and a hash of the engine configuration, so a stale one is never used),
    /// so that no request waits for Cranelift.
    ///
    /// # Safety
    ///
    /// Artifacts in `dir` are loaded as native code without further checks beyond
    /// wasmtime's compatibility check. The caller vouches that only this program (a
    /// runtime given the same `dir`) writes to `dir`: a directory other users or uploads
    /// can write to would let them run code in this process.
    pub unsafe fn with_compile_cache(config: RuntimeConfig, dir: &Path) -> Result<Self> {
        Self::build(config, Some(dir))
    }

    fn build(config: RuntimeConfig, cache_dir: Option<&Path>) -> Result<Self> {
        let mut kernels = match config.kernel_level {
            None => Kernels::detect(),
            Some(level) => Kernels::with_level(level).ok_or_else(|| {
                Error::unsupported(format!("this CPU cannot run kernel level {level:?}"))
            })?,
        };
        if config.kernel_threads > 1 {
            // The runtime's one pool: every request's large ops share its workers.
            let pool = ThreadPool::new(config.kernel_threads).map_err(|e| {
                Error::internal(format!(
                    "failed to start {} kernel threads: {e}",
                    config.kernel_threads
                ))
            })?;
            kernels = kernels.with_pool(Arc::new(pool));
        }
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| Error::internal(format!("failed to create the engine: {e:#}")))?;
        let compile_cache = cache_dir.map(|d| CompileCache::new(&engine, d));
        let mut linker = Linker::new(&engine);
        let link_err = |e: wasmtime::Error| Error::internal(format!("linker: {e:#}"));
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        InferenceFunction::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(link_err)?;
        spawn_epoch_ticker(&engine)
            .map_err(|e| Error::internal(format!("failed to start the epoch thread: {e}")))?;
        let wasm = OnceLock::new();
        // Large buffers kept between requests: a sixteenth of the host budget, at most
        // 128 MiB (a convolutional network's activations at batch 256 are about 40 MiB).
        let pool_bytes = (config.host_memory_budget / 16).min(128 << 20);
        let backend = backend::new(config.kernels, &kernels, pool_bytes, || {
            let w = Arc::new(link_kernels_component(&engine, compile_cache.as_ref())?);
            let _ = wasm.set(w.clone());
            Ok(w)
        })?;
        let admission = Arc::new(Admission::new(
            config.max_concurrent_requests as usize,
            config.max_queued_requests as usize,
        ));
        let host_memory = Arc::new(HostMemory::new(config.host_memory_budget));
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                kernels,
                backend,
                wasm,
                admission,
                host_memory,
                weights: WeightsCache::default(),
                compile_cache,
            }),
        })
    }

    /// The kernels component, linked on first use.
    fn wasm_backend(&self) -> Result<&Arc<WasmBackend>> {
        if let Some(w) = self.inner.wasm.get() {
            return Ok(w);
        }
        let w = Arc::new(link_kernels_component(
            &self.inner.engine,
            self.inner.compile_cache.as_ref(),
        )?);
        Ok(self.inner.wasm.get_or_init(|| w))
    }

    /// The kernels component in a fresh store of its own (whatever the runtime's backend),
    /// for calling its ops directly: see [`KernelSession`]. It holds one of the runtime's
    /// request slots while it lives.
    pub fn kernel_session(&self) -> Result<KernelSession> {
        let wasm = self.wasm_backend()?.clone();
        let deadline = Instant::now() + self.inner.config.deadline;
        let permit = self.admit(deadline)?;
        let session = wasm
            .open(self.inner.config.memory_limit, self.epoch_ticks(deadline))
            .map_err(|f| match f {
                Failure::Error(e) => e,
                Failure::Trap(t) => classify_trap("the kernels component", t, None, None, ""),
            })?;
        Ok(KernelSession::new(session, permit))
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Which kernels run the functions' ops.
    pub fn kernel_backend(&self) -> KernelBackend {
        self.inner.backend.kind()
    }

    /// The SIMD level the native kernels run at.
    pub fn kernel_level(&self) -> tensorlet_kernels::Level {
        self.inner.kernels.level()
    }

    /// Requests running now (holding a slot).
    pub fn requests_in_flight(&self) -> usize {
        self.inner.admission.running()
    }

    /// Bytes of host memory the tensors of all requests in flight hold now.
    pub fn host_memory_in_use(&self) -> usize {
        self.inner.host_memory.used()
    }

    /// Compiles the component `bytes` (a `.wasm` file's contents); `name` identifies it in
    /// errors. Only WebAssembly is accepted: precompiled artifacts (native code) are
    /// refused here whatever their origin, and load only through
    /// [`Runtime::load_precompiled_file`]. The component's imports are checked against what
    /// the host provides.
    pub fn load_function(&self, name: &str, bytes: &[u8]) -> Result<Function> {
        if Engine::detect_precompiled(bytes).is_some() {
            return Err(Error::invalid_input(format!(
                "function `{name}` is a precompiled artifact (native code), not a WebAssembly \
                 component; only `.wasm` components are accepted here (a local `.cwasm` the \
                 user trusts loads through `Runtime::load_precompiled_file`)"
            )));
        }
        let engine = &self.inner.engine;
        let digest = crate::weights::digest(bytes);
        let component = match &self.inner.compile_cache {
            Some(cache) => cache.load_or_compile(engine, bytes, &digest),
            None => Component::new(engine, bytes),
        }
        .map_err(|e| {
            Error::invalid_input(format!(
                "function `{name}`: not a loadable WebAssembly component: {e:#}"
            ))
        })?;
        self.function_from_component(name, component)
    }

    /// Reads and compiles the component file at `path` (see [`Runtime::load_function`]).
    pub fn load_function_file(&self, path: &Path) -> Result<Function> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.load_function(&path.display().to_string(), &bytes)
    }

    /// Loads an artifact of [`Runtime::precompile`] from `path`.
    ///
    /// # Safety
    ///
    /// The file is mapped into the process and run as native code; wasmtime checks only
    /// that a compatible engine produced it. The caller vouches that the file was written
    /// by `Runtime::precompile` (e.g. `tensorlet compile`) on a trusted machine and not
    /// modified since: never pass a file received from someone else.
    pub unsafe fn load_precompiled_file(&self, path: &Path) -> Result<Function> {
        let name = path.display().to_string();
        // SAFETY: the caller vouches for the file (this function's contract).
        let component =
            unsafe { Component::deserialize_file(&self.inner.engine, path) }.map_err(|e| {
                Error::invalid_input(format!(
                    "`{name}` is not a precompiled component for this tensorlet and CPU: {e:#}"
                ))
            })?;
        self.function_from_component(&name, component)
    }

    /// Whether a finished request's sandbox is reset in place with Linux's `PAGEMAP_SCAN`
    /// (kernel 6.7 or later), touching only the pages it used. Without it the pool
    /// `memset`s the resident part of every freed linear memory: several times the cost
    /// of instantiation, paid by every request (see docs/ARCHITECTURE.md).
    pub fn resets_instances_in_place() -> bool {
        PoolingAllocationConfig::is_pagemap_scan_available()
    }

    /// Compiles one of the functions bundled with tensorlet (see [`crate::bundled`]).
    #[cfg(feature = "bundled")]
    pub fn load_bundled(&self, name: &str) -> Result<Function> {
        let b = crate::bundled::find(name)?;
        self.load_function(b.name, b.component)
    }

    /// Compiles a component ahead of time into an artifact that
    /// [`Runtime::load_precompiled_file`] accepts.
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        self.inner
            .engine
            .precompile_component(bytes)
            .map_err(|e| Error::invalid_input(format!("not a compilable component: {e:#}")))
    }

    fn function_from_component(&self, name: &str, component: Component) -> Result<Function> {
        check_imports(&self.inner.engine, name, &component)?;
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            Error::invalid_input(format!(
                "function `{name}` does not fit the tensorlet `inference-function` world: {e:#}"
            ))
        })?;
        let pre = InferenceFunctionPre::new(pre).map_err(|e| {
            Error::invalid_input(format!(
                "function `{name}` does not export `tensorlet:nn/function`: {e:#}"
            ))
        })?;
        let interface = format!("tensorlet:nn/function@{WIT_VERSION}");
        let infer = component
            .get_export_index(None, &interface)
            .and_then(|i| component.get_export_index(Some(&i), "infer"))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "function `{name}` does not export `{interface}#infer`"
                ))
            })?;
        let mut function = FunctionInner {
            runtime: self.clone(),
            name: name.to_string(),
            component,
            pre,
            infer,
            // Replaced right below by what the function itself reports.
            metadata: FunctionMetadata {
                name: name.to_string(),
                description: String::new(),
                inputs: Vec::new(),
                outputs: Vec::new(),
                weights: Vec::new(),
            },
        };
        let empty = Arc::new(Weights::empty());
        // The one full binding of the exports, which checks the types of `metadata` and
        // `infer` against the WIT: every request after this one relies on that check.
        let metadata = function.with_instance(&empty, |store, instance| {
            let bindings = InferenceFunction::new(&mut *store, instance)?;
            Ok(bindings.tensorlet_nn_function().call_metadata(store)?)
        })?;
        function.metadata = metadata;
        Ok(Function {
            inner: Arc::new(function),
        })
    }

    /// Prepares the safetensors file at `path`, or returns the cached set. The cache knows
    /// a file by its path, length and modification time: a hit neither reads nor hashes it
    /// again. A new or changed file is hashed once, and shares the prepared set of any file
    /// with the same content digest.
    pub fn load_weights_file(&self, path: &Path) -> Result<Arc<Weights>> {
        self.inner.weights.load_file(path)
    }

    /// Prepares safetensors `bytes` (named `source` in errors), or returns the cached set
    /// with the same content digest.
    pub fn load_weights(&self, source: &str, bytes: &[u8]) -> Result<Arc<Weights>> {
        self.inner.weights.load_bytes(source, bytes)
    }

    /// A request slot, waiting in the admission queue until `deadline` if need be.
    fn admit(&self, deadline: Instant) -> Result<Permit> {
        self.inner.admission.acquire(deadline)
    }

    /// A request slot if one is free now and no request waits for one; never waits.
    pub(crate) fn try_admit(&self) -> Option<Permit> {
        self.inner.admission.try_acquire()
    }

    /// Epoch ticks from now until `deadline` (at least one).
    fn epoch_ticks(&self, deadline: Instant) -> u64 {
        let left = deadline.saturating_duration_since(Instant::now());
        (left.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1) + 1
    }
}

/// Where one request's time went, filled in as it runs (for a model's statistics).
#[derive(Debug, Default)]
pub(crate) struct Timing<'a> {
    /// Waiting for a request slot in the admission queue.
    pub queue: Duration,
    /// From admission to the outputs: instantiating and running the function.
    pub compute: Duration,
    /// Counts the request while it waits in the admission queue.
    pub waiting: Option<&'a std::sync::atomic::AtomicU64>,
    /// A slot the caller already holds ([`Runtime::try_admit`]): the request runs in it
    /// without queueing.
    pub permit: Option<Permit>,
}

/// Compiles (or loads from the cache) the embedded kernels component and links it.
fn link_kernels_component(engine: &Engine, cache: Option<&CompileCache>) -> Result<WasmBackend> {
    let bytes = KERNELS_COMPONENT.ok_or_else(|| {
        Error::unsupported(
            "the wasm kernel backend needs tensorlet-host built with its `wasm-kernels` feature",
        )
    })?;
    let digest = crate::weights::digest(bytes);
    let component = match cache {
        Some(cache) => cache.load_or_compile(engine, bytes, &digest),
        None => Component::new(engine, bytes),
    }
    .map_err(|e| Error::internal(format!("kernels component: compile: {e:#}")))?;
    WasmBackend::new(engine, &component)
}

/// The interfaces the host provides to functions: tensorlet's own, and WASI 0.2's
/// (`wasmtime_wasi::p2::add_to_linker_sync`), as `(package, interface)`.
const PROVIDED: &[(&str, &[&str])] = &[
    ("tensorlet:nn", &["tensors", "weights", "ops"]),
    ("wasi:io", &["error", "poll", "streams"]),
    ("wasi:clocks", &["monotonic-clock", "wall-clock"]),
    ("wasi:random", &["random", "insecure", "insecure-seed"]),
    ("wasi:filesystem", &["types", "preopens"]),
    (
        "wasi:sockets",
        &[
            "network",
            "instance-network",
            "udp",
            "udp-create-socket",
            "tcp",
            "tcp-create-socket",
            "ip-name-lookup",
        ],
    ),
    (
        "wasi:cli",
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
    ),
];

/// The version of the `tensorlet:nn` WIT package this host provides (`wit/tensorlet.wit`).
pub const WIT_VERSION: &str = "0.2.0";

/// Checks that the host provides every import of `component`, naming the first it lacks.
/// (Type mismatches of a provided import are found by linking, right after.)
fn check_imports(engine: &Engine, name: &str, component: &Component) -> Result<()> {
    for (import, _) in component.component_type().imports(engine) {
        // `package:name/interface@version`
        let unversioned = import.split('@').next().unwrap_or(import);
        let provided = unversioned
            .split_once('/')
            .and_then(|(package, interface)| {
                PROVIDED
                    .iter()
                    .find(|(p, _)| *p == package)
                    .map(|(_, interfaces)| interfaces.contains(&interface))
            })
            .unwrap_or(false);
        let version_ok = match import.split_once('@') {
            Some((_, v)) if unversioned.starts_with("tensorlet:") => v == WIT_VERSION,
            Some((_, v)) if unversioned.starts_with("wasi:") => v.starts_with("0.2."),
            _ => false,
        };
        if provided && !version_ok && unversioned.starts_with("tensorlet:") {
            return Err(Error::unsupported(format!(
                "function `{name}` imports `{import}`, but this host provides \
                 `tensorlet:nn@{WIT_VERSION}`: rebuild the function against the current \
                 tensorlet-sdk (`wit/tensorlet.wit`)"
            )));
        }
        if !(provided && version_ok) {
            return Err(Error::unsupported(format!(
                "function `{name}` imports `{import}`, which this host does not provide; a \
                 function may import `tensorlet:nn/{{tensors,weights,ops}}@{WIT_VERSION}` and \
                 WASI 0.2 interfaces"
            )));
        }
    }
    Ok(())
}

struct FunctionInner {
    runtime: Runtime,
    name: String,
    component: Component,
    pre: InferenceFunctionPre<State>,
    /// The component's `tensorlet:nn/function#infer` export.
    infer: ComponentExportIndex,
    metadata: FunctionMetadata,
}

/// The type of `tensorlet:nn/function#infer`.
type InferFunc<'a> = TypedFunc<(&'a [NamedTensor],), (Result<Vec<NamedTensor>, WitError>,)>;

/// A compiled inference function, ready to instantiate per request. Cheap to clone;
/// `Send + Sync`.
#[derive(Clone)]
pub struct Function {
    inner: Arc<FunctionInner>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl Function {
    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What the function accepts and produces (read once, at load).
    pub fn metadata(&self) -> &FunctionMetadata {
        &self.inner.metadata
    }

    /// The compiled component (for introspection of its imports and exports).
    pub fn component(&self) -> &Component {
        &self.inner.component
    }

    /// The runtime it was loaded into.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Runs the function on `inputs` with `weights` bound, in a fresh instance.
    pub fn infer(
        &self,
        weights: &Arc<Weights>,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>> {
        self.infer_timed(weights, inputs, &mut Timing::default())
    }

    /// [`Function::infer`], recording where the time went in `timing`.
    pub(crate) fn infer_timed(
        &self,
        weights: &Arc<Weights>,
        inputs: Vec<(String, Tensor)>,
        timing: &mut Timing<'_>,
    ) -> Result<Vec<(String, Tensor)>> {
        self.check_inputs(&inputs)?;
        self.inner
            .with_instance_timed(weights, timing, |store, instance| {
                let mut handles = Vec::with_capacity(inputs.len());
                for (name, tensor) in inputs {
                    let id = match store.data_mut().session().put(tensor) {
                        Ok(id) => id,
                        Err(Failure::Error(e)) => {
                            return Err(CallError::Host(e.context(format!("input `{name}`"))));
                        }
                        Err(Failure::Trap(t)) => return Err(CallError::Wasm(t)),
                    };
                    handles.push(NamedTensor {
                        name,
                        value: Resource::new_own(id),
                    });
                }
                let (outputs,) = self
                    .inner
                    .infer(store, instance)?
                    .call(&mut *store, (&handles,))?;
                let outputs = outputs.map_err(Error::from)?;
                let session = store.data_mut().session();
                outputs
                    .into_iter()
                    .map(|NamedTensor { name, value }| {
                        let id = value.rep();
                        let t = session
                            .get(id)
                            .and_then(|t| session.release(id).map(|()| t));
                        match t {
                            Ok(t) => Ok((name, t)),
                            Err(Failure::Error(e)) => {
                                Err(CallError::Host(e.context(format!("output `{name}`"))))
                            }
                            Err(Failure::Trap(t)) => Err(CallError::Wasm(t)),
                        }
                    })
                    .collect()
            })
    }

    /// The metadata's spec of input `name`, or an error listing the inputs there are.
    fn input_spec(&self, name: &str) -> Result<&crate::IoSpec> {
        let specs = &self.metadata().inputs;
        specs.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<_> = specs.iter().map(|s| format!("`{}`", s.name)).collect();
            Error::invalid_input(format!(
                "function `{}` has no input `{name}`; its inputs are {}",
                self.inner.name,
                known.join(", ")
            ))
        })
    }

    /// Rejects inputs the metadata does not list, or whose dtype disagrees with it.
    fn check_inputs(&self, inputs: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in inputs {
            let want: crate::tensor::DType = self.input_spec(name)?.dtype.into();
            if t.dtype() != want {
                return Err(Error::invalid_input(format!(
                    "input `{name}` has dtype {}; function `{}` expects {}",
                    t.dtype().as_str(),
                    self.inner.name,
                    want.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Runs an Open Inference Protocol request and builds the response (every output as
    /// JSON; only the outputs the request names, if it names any).
    pub fn infer_request(
        &self,
        weights: &Arc<Weights>,
        request: &crate::InferenceRequest,
    ) -> Result<crate::InferenceResponse> {
        Ok(self.infer_request_binary(weights, request, |_| false)?.0)
    }

    /// Runs an Open Inference Protocol request; the outputs for which `binary` says so come
    /// as binary data in the returned bytes (the binary tensor data extension; see
    /// [`crate::InferenceResponse::from_tensors_binary`]).
    pub fn infer_request_binary(
        &self,
        weights: &Arc<Weights>,
        request: &crate::InferenceRequest,
        binary: impl Fn(&str) -> bool,
    ) -> Result<(crate::InferenceResponse, Vec<u8>)> {
        self.infer_request_binary_timed(weights, request, binary, &mut Timing::default())
    }

    /// [`Function::infer_request_binary`], recording where the time went in `timing`.
    pub(crate) fn infer_request_binary_timed(
        &self,
        weights: &Arc<Weights>,
        request: &crate::InferenceRequest,
        binary: impl Fn(&str) -> bool,
        timing: &mut Timing<'_>,
    ) -> Result<(crate::InferenceResponse, Vec<u8>)> {
        let inputs = self.request_tensors(request)?;
        let outputs = self.infer_timed(weights, inputs, timing)?;
        self.respond(request, outputs, binary)
    }

    /// The input tensors of an Open Inference Protocol request, checking each input's wire
    /// datatype against what the function declares.
    pub(crate) fn request_tensors(
        &self,
        request: &crate::InferenceRequest,
    ) -> Result<Vec<(String, Tensor)>> {
        for input in &request.inputs {
            let spec = self.input_spec(&input.name)?;
            let accepted: &[&str] = match crate::tensor::DType::from(spec.dtype) {
                crate::DType::U8 => &["UINT8", "BYTES"],
                crate::DType::Bytes => &["BYTES"],
                _ => &["FP32", "FP64", "FP16", "BF16", "INT32", "INT64"],
            };
            if !accepted.contains(&input.datatype.as_str()) {
                return Err(Error::invalid_input(format!(
                    "input `{}` has datatype `{}`; function `{}` expects {}",
                    input.name,
                    input.datatype,
                    self.inner.name,
                    accepted.join(" or ")
                )));
            }
        }
        request.to_tensors_as(|name| {
            self.input_spec(name)
                .is_ok_and(|spec| crate::DType::from(spec.dtype) == crate::DType::Bytes)
        })
    }

    /// The response to `request` from the function's `outputs`: the outputs it asks for (all
    /// by default), those `binary` picks as binary data.
    pub(crate) fn respond(
        &self,
        request: &crate::InferenceRequest,
        mut outputs: Vec<(String, Tensor)>,
        binary: impl Fn(&str) -> bool,
    ) -> Result<(crate::InferenceResponse, Vec<u8>)> {
        if !request.outputs.is_empty() {
            let mut selected = Vec::with_capacity(request.outputs.len());
            for wanted in &request.outputs {
                let i = outputs
                    .iter()
                    .position(|(n, _)| *n == wanted.name)
                    .ok_or_else(|| {
                        let known: Vec<_> = outputs.iter().map(|(n, _)| format!("`{n}`")).collect();
                        Error::invalid_input(format!(
                            "the request asks for output `{}`; function `{}` produced {}",
                            wanted.name,
                            self.inner.name,
                            known.join(", ")
                        ))
                    })?;
                selected.push(outputs.swap_remove(i));
            }
            outputs = selected;
        }
        Ok(crate::InferenceResponse::from_tensors_binary(
            &self.metadata().name,
            request.id.clone(),
            &outputs,
            binary,
        ))
    }

    /// The names of the component's imports (WIT interfaces).
    pub fn imports(&self) -> Vec<String> {
        let engine = &self.inner.runtime.inner.engine;
        self.inner
            .component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The names of the component's exports.
    pub fn exports(&self) -> Vec<String> {
        let engine = &self.inner.runtime.inner.engine;
        self.inner
            .component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Instantiates the function in a fresh store bound to `weights` and drops it: the
    /// fixed cost every request pays (used by the benchmarks).
    #[doc(hidden)]
    pub fn instantiate_once(&self, weights: &Arc<Weights>) -> Result<()> {
        self.inner.with_instance(weights, |_, _| Ok(()))
    }

    /// wasmtime's own cost of what [`Function::instantiate_once`] does, as the floor to
    /// compare it with: `n` times, a fresh store with no host state instantiates this
    /// component on this runtime's engine (same pooling allocator), every import a stub
    /// that traps, and is dropped. Returns the time the `n` took (used by the benchmarks).
    #[doc(hidden)]
    pub fn instantiate_floor(&self, n: u64) -> Result<Duration> {
        let engine = &self.inner.runtime.inner.engine;
        let component = &self.inner.component;
        let floor = |e: wasmtime::Error| Error::internal(format!("instantiate floor: {e:#}"));
        let mut linker = Linker::<()>::new(engine);
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(floor)?;
        let pre = linker.instantiate_pre(component).map_err(floor)?;
        let started = Instant::now();
        for _ in 0..n {
            let mut store = Store::new(engine, ());
            store.set_epoch_deadline(u64::MAX / 2);
            pre.instantiate(&mut store).map_err(floor)?;
        }
        Ok(started.elapsed())
    }
}

impl FunctionInner {
    /// Instantiates the function in a fresh store bound to `weights` and runs `body`;
    /// traps, deadline and limit violations become typed [`Error`]s.
    fn with_instance<R>(
        &self,
        weights: &Arc<Weights>,
        body: impl FnOnce(&mut Store<State>, &Instance) -> Result<R, CallError>,
    ) -> Result<R> {
        self.with_instance_timed(weights, &mut Timing::default(), body)
    }

    /// [`FunctionInner::with_instance`], recording in `timing` how long the request waited
    /// for a slot and how long it then ran.
    fn with_instance_timed<R>(
        &self,
        weights: &Arc<Weights>,
        timing: &mut Timing<'_>,
        body: impl FnOnce(&mut Store<State>, &Instance) -> Result<R, CallError>,
    ) -> Result<R> {
        let rt = &self.runtime;
        let config = &rt.inner.config;
        let arrived = Instant::now();
        let deadline = arrived + config.deadline;
        let _permit = match timing.permit.take() {
            Some(permit) => permit,
            None => {
                if let Some(waiting) = timing.waiting {
                    waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let permit = rt.admit(deadline);
                if let Some(waiting) = timing.waiting {
                    waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                permit?
            }
        };
        let admitted = Instant::now();
        timing.queue = admitted - arrived;
        let result = self.run_instance(weights, deadline, body);
        timing.compute = admitted.elapsed();
        result
    }

    /// Instantiates the function under `deadline` and runs `body` (the request holds its
    /// slot).
    fn run_instance<R>(
        &self,
        weights: &Arc<Weights>,
        deadline: Instant,
        body: impl FnOnce(&mut Store<State>, &Instance) -> Result<R, CallError>,
    ) -> Result<R> {
        let rt = &self.runtime;
        let config = &rt.inner.config;
        let ticks = rt.epoch_ticks(deadline);
        let session = rt
            .inner
            .backend
            .session(SessionLimits {
                budget: TensorBudget::new(rt.inner.host_memory.clone(), config.tensor_budget),
                memory_bytes: config.memory_limit,
                epoch_ticks: ticks,
            })
            .map_err(|f| match f {
                Failure::Error(e) => e.context(format!("function `{}`", self.name)),
                Failure::Trap(t) => self.classify(t, None, ""),
            })?;
        let state = State::new(weights.clone(), session, config.memory_limit);
        let mut store = Store::new(&rt.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        // The bare instance: `InferenceFunctionPre::instantiate` would also look up and
        // type-check every export again, on each request.
        let result = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(CallError::Wasm)
            .and_then(|instance| body(&mut store, &instance));
        result.map_err(|e| match e {
            CallError::Host(e) => e.context(format!("function `{}`", self.name)),
            CallError::Wasm(e) => {
                let stderr = store.data().stderr();
                let detail = if stderr.is_empty() {
                    String::new()
                } else {
                    format!("\nfunction stderr:\n{stderr}")
                };
                self.classify(e, store.data().limit_hit(), &detail)
            }
        })
    }

    /// The `infer` export of `instance` (an instance of this function's component).
    fn infer<'a>(
        &self,
        store: &mut Store<State>,
        instance: &Instance,
    ) -> Result<InferFunc<'a>, CallError> {
        let func = instance.get_func(&mut *store, self.infer).ok_or_else(|| {
            Error::internal(format!("function `{}` lost its `infer` export", self.name))
        })?;
        // SAFETY: `self.infer` indexes this component's `infer`, and loading the function
        // bound its exports with `InferenceFunction::new`, which checked that export's type
        // against `InferFunc` (the WIT's). Every instance of a component has the types its
        // component has.
        Ok(unsafe { InferFunc::new_unchecked(func) })
    }

    fn classify(&self, e: wasmtime::Error, hit: Option<LimitHit>, detail: &str) -> Error {
        classify_trap(
            &format!("function `{}`", self.name),
            e,
            hit,
            Some(self.runtime.inner.config.deadline),
            detail,
        )
    }
}

/// A wasmtime failure of `who` as a typed [`Error`], by the types involved: a limit the
/// store or session recorded (or that is the error itself), the epoch interrupt, pool
/// exhaustion, a host error raised as a trap, or any other trap. `detail` (the function's
/// stderr) is appended.
pub(crate) fn classify_trap(
    who: &str,
    e: wasmtime::Error,
    hit: Option<LimitHit>,
    deadline: Option<Duration>,
    detail: &str,
) -> Error {
    if let Some(hit) = hit.or_else(|| e.downcast_ref::<LimitHit>().copied()) {
        return Error::new(ErrorKind::LimitExceeded, format!("{who} {hit}{detail}"));
    }
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        let limit = deadline.map(|d| format!(" of {d:?}")).unwrap_or_default();
        return Error::new(
            ErrorKind::DeadlineExceeded,
            format!("{who} ran past its deadline{limit} and was stopped"),
        );
    }
    if let Some(limit) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return Error::unavailable(format!(
            "{who}: no instance slot is free in the pooling allocator ({limit}); try again later"
        ));
    }
    if let Some(err) = e.downcast_ref::<Error>() {
        return err.clone().context(who);
    }
    // Lead with the cause (the trap), then what the function printed, then the wasm
    // backtrace for whoever debugs it.
    let cause = e.root_cause().to_string();
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| format!("\n{bt}"))
        .unwrap_or_default();
    Error::new(
        ErrorKind::Trap,
        format!("{who} trapped: {cause}{detail}{backtrace}"),
    )
}

/// A failure inside a request: a host error, or a wasmtime error to classify.
enum CallError {
    Host(Error),
    Wasm(wasmtime::Error),
}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        CallError::Host(e)
    }
}

impl From<wasmtime::Error> for CallError {
    fn from(e: wasmtime::Error) -> Self {
        CallError::Wasm(e)
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // With the wasm backend each request instantiates two components (the kernels beside
    // the function), each in a store of its own; a kernel session takes a slot too.
    let per_request = match config.kernels {
        KernelBackend::Native => 2,
        KernelBackend::Wasm => 3,
    };
    let n = config.max_concurrent_requests.max(1) * per_request;
    // A freed memory, table or stack slot waits in one of wasmtime's decommit queues (one
    // per CPU, up to 16) until that queue holds `batch` regions; an allocation that finds no
    // free slot flushes queues one by one and retries, and under concurrent requests another
    // thread could take the flushed slots first ("no instance slot is free" although
    // admission had left room). So each of those pools gets one batch per queue on top of
    // what the admitted requests can hold, and never depends on that retry.
    let queues = std::thread::available_parallelism().map_or(1, |p| p.get().min(16)) as u32;
    let batch = DECOMMIT_BATCH as u32;
    let slack = queues * batch;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2 + slack)
        .total_tables(n * 8 + slack)
        .max_memory_size(config.memory_limit)
        .total_stacks(n + slack)
        // A freed instance's memory and tables are reset in place (only the pages it
        // touched, found with PAGEMAP_SCAN where the kernel has it) instead of being
        // unmapped: the next request's instance starts without page faults, and no
        // `madvise` shoots down TLBs on the other cores.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
        .pagemap_scan(wasmtime::Enabled::Auto)
        // What must still be decommitted (memory and tables past the resident part) is
        // queued and released in batches, not with system calls on every request
        // (instantiate/mlp: 8.5 -> 7.3 µs).
        .decommit_batch_size(DECOMMIT_BATCH);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("tensorlet-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}

/// `Runtime` and `Function` are shared across threads (a server's workers).
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Runtime>();
    shared::<Function>();
    shared::<Weights>();
};
