//! The embedding API: [`Runtime`] → [`Function`] × [`Weights`] → outputs.
//!
//! Three lifetimes of state are kept apart. Set up once per [`Runtime`]: the wasmtime
//! `Engine` (pooling allocator, epoch interruption), the `Linker` with WASI and the
//! tensorlet imports, the epoch ticker thread, and the weights cache. Per function: the
//! compiled component as an `InstancePre` plus its metadata. Per request: a fresh `Store`
//! and instance bound to one weights set, with a deadline, a memory limit and a tensor
//! budget, dropped when the request ends — so requests cannot see each other.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tensorlet_kernels::Kernels;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::error::{Error, ErrorKind, Result};
use crate::host::{RequestLimits, State};
use crate::tensor::Tensor;
use crate::wasm_kernels::{self, KernelBackend, KernelInstance, KernelSession};
use crate::weights::{self, Weights};
use crate::wit::provider::KernelProviderPre;
use crate::wit::{FunctionMetadata, InferenceFunction, InferenceFunctionPre, NamedTensor};

/// How often the epoch ticker advances the engine's epoch.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings of a [`Runtime`]. `Default` gives production values.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Wall-clock limit of one request (instantiation and `infer`).
    pub deadline: Duration,
    /// Maximum linear memory of a function instance, in bytes. With
    /// [`KernelBackend::Wasm`] the kernels instance beside it has the same limit, apart.
    pub memory_limit: usize,
    /// Maximum bytes of tensors one request may allocate in the host, in total.
    pub tensor_budget: usize,
    /// Most requests in flight at once (sizes the pooling allocator).
    pub max_concurrent_requests: u32,
    /// The kernels' SIMD level; `None` picks the best the CPU has.
    pub kernel_level: Option<tensorlet_kernels::Level>,
    /// Which kernels run the functions' ops: the native plugin (default) or the kernels
    /// component inside each request's store.
    pub kernels: KernelBackend,
    /// Threads one native dense op may use (see `tensorlet_kernels::Kernels::with_threads`:
    /// only large products are split). 1 (the default) suits a server, whose requests
    /// already run in parallel; more shortens a lone large request.
    pub kernel_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            deadline: Duration::from_secs(30),
            memory_limit: 256 << 20,
            tensor_budget: 2 << 30,
            max_concurrent_requests: 32,
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
    /// The kernels component, compiled on first use (at start-up in wasm mode).
    kernels_component: OnceLock<KernelProviderPre<State>>,
    weights_cache: Mutex<HashMap<String, Weak<Weights>>>,
}

/// A host for inference functions: one engine, linker, kernels and weights cache.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// A runtime with `config`.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let kernels = match config.kernel_level {
            None => Kernels::detect(),
            Some(level) => Kernels::with_level(level).ok_or_else(|| {
                Error::unsupported(format!("this CPU cannot run kernel level {level:?}"))
            })?,
        }
        .with_threads(config.kernel_threads);
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| Error::internal(format!("failed to create the engine: {e:#}")))?;
        let mut linker = Linker::new(&engine);
        let link_err = |e: wasmtime::Error| Error::internal(format!("linker: {e:#}"));
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        match config.kernels {
            KernelBackend::Native => {
                InferenceFunction::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
                    .map_err(link_err)?
            }
            KernelBackend::Wasm => wasm_kernels::add_to_linker(&mut linker).map_err(link_err)?,
        }
        spawn_epoch_ticker(&engine)
            .map_err(|e| Error::internal(format!("failed to start the epoch thread: {e}")))?;
        let runtime = Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                kernels,
                kernels_component: OnceLock::new(),
                weights_cache: Mutex::new(HashMap::new()),
            }),
        };
        if runtime.inner.config.kernels == KernelBackend::Wasm {
            runtime.kernels_component()?;
        }
        Ok(runtime)
    }

    /// The kernels component, compiled and pre-instantiated on first use.
    fn kernels_component(&self) -> Result<&KernelProviderPre<State>> {
        if let Some(pre) = self.inner.kernels_component.get() {
            return Ok(pre);
        }
        let pre = wasm_kernels::compile(&self.inner.engine)?;
        Ok(self.inner.kernels_component.get_or_init(|| pre))
    }

    /// The kernels component in a fresh store of its own (whatever the runtime's backend),
    /// for calling its ops directly: see [`KernelSession`].
    pub fn kernel_session(&self) -> Result<KernelSession> {
        let pre = self.kernels_component()?;
        KernelSession::new(pre, self.new_store(&Arc::new(Weights::empty())))
    }

    /// A fresh store bound to `weights`, with the memory limit, tensor budget and deadline.
    fn new_store(&self, weights: &Arc<Weights>) -> Store<State> {
        let inner = &self.inner;
        let config = &inner.config;
        let state = State::new(
            weights.clone(),
            inner.kernels,
            RequestLimits {
                memory_bytes: config.memory_limit,
                tensor_bytes: config.tensor_budget,
            },
        );
        let mut store = Store::new(&inner.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = config.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// The runtime's settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Which kernels run the functions' ops.
    pub fn kernel_backend(&self) -> KernelBackend {
        self.inner.config.kernels
    }

    /// The SIMD level the native kernels run at.
    pub fn kernel_level(&self) -> tensorlet_kernels::Level {
        self.inner.kernels.level()
    }

    /// Compiles a component (a `.wasm` file, or an artifact of [`Runtime::precompile`])
    /// from `bytes`; `name` identifies it in errors.
    pub fn load_function(&self, name: &str, bytes: &[u8]) -> Result<Function> {
        let engine = &self.inner.engine;
        let component = if Engine::detect_precompiled(bytes).is_some() {
            // SAFETY: `deserialize` requires trusted input produced by `precompile` of a
            // compatible engine; wasmtime checks the version and configuration and
            // rejects a mismatched artifact with an error.
            unsafe { Component::deserialize(engine, bytes) }
        } else {
            Component::new(engine, bytes)
        }
        .map_err(|e| {
            Error::invalid_input(format!(
                "function `{name}`: not a loadable component: {e:#}"
            ))
        })?;
        self.function_from_component(name, component)
    }

    /// Compiles the component file at `path`.
    pub fn load_function_file(&self, path: &Path) -> Result<Function> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.load_function(&path.display().to_string(), &bytes)
    }

    /// Compiles one of the functions bundled with tensorlet (see [`crate::bundled`]).
    pub fn load_bundled(&self, name: &str) -> Result<Function> {
        let b = crate::bundled::find(name)?;
        self.load_function(b.name, b.component)
    }

    /// Compiles a component ahead of time into an artifact `load_function` accepts.
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        self.inner
            .engine
            .precompile_component(bytes)
            .map_err(|e| Error::invalid_input(format!("not a compilable component: {e:#}")))
    }

    fn function_from_component(&self, name: &str, component: Component) -> Result<Function> {
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
        let mut function = Function {
            runtime: self.clone(),
            name: name.to_string(),
            component,
            pre,
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
        let metadata = function.with_instance(&empty, |store, bindings| {
            Ok(bindings.tensorlet_nn_function().call_metadata(store)?)
        })?;
        function.metadata = metadata;
        Ok(function)
    }

    /// Prepares the safetensors file at `path`, or returns the cached set with the same
    /// content digest.
    pub fn load_weights_file(&self, path: &Path) -> Result<Arc<Weights>> {
        let (map, digest) = weights::map_file(path)?;
        self.cached_weights(digest, |digest| {
            Weights::prepare(&map, &path.display().to_string(), digest)
        })
    }

    /// Prepares safetensors `bytes` (named `source` in errors), or returns the cached set
    /// with the same content digest.
    pub fn load_weights(&self, source: &str, bytes: &[u8]) -> Result<Arc<Weights>> {
        self.cached_weights(weights::digest(bytes), |digest| {
            Weights::prepare(bytes, source, digest)
        })
    }

    fn cached_weights(
        &self,
        digest: String,
        prepare: impl FnOnce(String) -> Result<Weights>,
    ) -> Result<Arc<Weights>> {
        let mut cache = self
            .inner
            .weights_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(w) = cache.get(&digest).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let w = Arc::new(prepare(digest.clone())?);
        cache.retain(|_, v| v.strong_count() > 0);
        cache.insert(digest, Arc::downgrade(&w));
        Ok(w)
    }
}

/// A compiled inference function, ready to instantiate per request.
#[derive(Clone)]
pub struct Function {
    runtime: Runtime,
    name: String,
    component: Component,
    pre: InferenceFunctionPre<State>,
    metadata: FunctionMetadata,
}

impl Function {
    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the function accepts and produces (read once, at load).
    pub fn metadata(&self) -> &FunctionMetadata {
        &self.metadata
    }

    /// The compiled component (for introspection of its imports and exports).
    pub fn component(&self) -> &Component {
        &self.component
    }

    /// Runs the function on `inputs` with `weights` bound, in a fresh instance.
    pub fn infer(
        &self,
        weights: &Arc<Weights>,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>> {
        self.check_inputs(&inputs)?;
        self.with_instance(weights, |store, bindings| {
            let wasm = store.data().kernel.is_some();
            let mut handles = Vec::with_capacity(inputs.len());
            for (name, tensor) in inputs {
                let value = if wasm {
                    wasm_kernels::upload(store, &tensor)?
                } else {
                    let bytes = tensor.byte_len();
                    store.data_mut().push(tensor, bytes)
                }
                .map_err(|e| e.context(format!("input `{name}`")))?;
                handles.push(NamedTensor { name, value });
            }
            let outputs = bindings
                .tensorlet_nn_function()
                .call_infer(&mut *store, &handles)?
                .map_err(Error::from)?;
            outputs
                .into_iter()
                .map(|NamedTensor { name, value }| {
                    let t = if wasm {
                        wasm_kernels::download(store, value)?
                    } else {
                        store.data_mut().take(value)
                    }
                    .map_err(|e| e.context(format!("output `{name}`")))?;
                    Ok((name, t))
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
                self.name,
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
                    self.name,
                    want.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Instantiates the function in a fresh store bound to `weights` and runs `body`;
    /// traps, deadline and limit violations become typed [`Error`]s.
    fn with_instance<R>(
        &self,
        weights: &Arc<Weights>,
        body: impl FnOnce(&mut Store<State>, &InferenceFunction) -> Result<R, CallError>,
    ) -> Result<R> {
        let mut store = self.runtime.new_store(weights);
        let result = self
            .instantiate_kernels(&mut store)
            .and_then(|()| self.pre.instantiate(&mut store).map_err(CallError::Wasm))
            .and_then(|bindings| body(&mut store, &bindings));
        result.map_err(|e| match e {
            CallError::Host(e) => e.context(format!("function `{}`", self.name)),
            CallError::Wasm(e) => self.classify(e, &store),
        })
    }

    /// In wasm mode, instantiates the kernels component in `store` first.
    fn instantiate_kernels(&self, store: &mut Store<State>) -> Result<(), CallError> {
        if self.runtime.inner.config.kernels == KernelBackend::Wasm {
            let pre = self.runtime.kernels_component()?;
            let kernel = KernelInstance::instantiate(pre, &mut *store)?;
            store.data_mut().kernel = Some(kernel);
        }
        Ok(())
    }

    fn classify(&self, e: wasmtime::Error, store: &Store<State>) -> Error {
        let stderr = store.data().stderr();
        let detail = if stderr.is_empty() {
            String::new()
        } else {
            format!("\nfunction stderr:\n{stderr}")
        };
        let name = &self.name;
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
            && *trap == wasmtime::Trap::Interrupt
        {
            return Error::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "function `{name}` ran past its deadline of {:?} and was stopped",
                    self.runtime.inner.config.deadline
                ),
            );
        }
        let text = format!("{e:#}");
        if text.contains("forcing trap when growing memory") {
            return Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "function `{name}` tried to grow its memory past the limit of {} bytes{detail}",
                    self.runtime.inner.config.memory_limit
                ),
            );
        }
        // Lead with the cause (the trap), then what the function printed, then the
        // wasm backtrace for whoever debugs it.
        let cause = e.root_cause().to_string();
        let backtrace = e
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(|bt| format!("\n{bt}"))
            .unwrap_or_default();
        Error::new(
            ErrorKind::Trap,
            format!("function `{name}` trapped: {cause}{detail}{backtrace}"),
        )
    }
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
    // In wasm mode each request instantiates two components (the kernels beside the
    // function), each with its own memory.
    let per_request = match config.kernels {
        KernelBackend::Native => 1,
        KernelBackend::Wasm => 2,
    };
    let n = config.max_concurrent_requests.max(1) * per_request;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 8)
        .max_memory_size(config.memory_limit)
        .total_stacks(n);
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

impl Function {
    /// Runs an Open Inference Protocol request and builds the response.
    pub fn infer_request(
        &self,
        weights: &Arc<Weights>,
        request: &crate::InferenceRequest,
    ) -> Result<crate::InferenceResponse> {
        for input in &request.inputs {
            let spec = self.input_spec(&input.name)?;
            let accepted: &[&str] = match crate::tensor::DType::from(spec.dtype) {
                crate::DType::U8 => &["UINT8", "BYTES"],
                _ => &["FP32", "FP64", "FP16"],
            };
            if !accepted.contains(&input.datatype.as_str()) {
                return Err(Error::invalid_input(format!(
                    "input `{}` has datatype `{}`; function `{}` expects {}",
                    input.name,
                    input.datatype,
                    self.name,
                    accepted.join(" or ")
                )));
            }
        }
        let outputs = self.infer(weights, request.to_tensors()?)?;
        Ok(crate::InferenceResponse::from_tensors(
            &self.metadata().name,
            request.id.clone(),
            &outputs,
        ))
    }
}

impl Function {
    /// The names of the component's imports (WIT interfaces).
    pub fn imports(&self) -> Vec<String> {
        let engine = &self.runtime.inner.engine;
        self.component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The names of the component's exports.
    pub fn exports(&self) -> Vec<String> {
        let engine = &self.runtime.inner.engine;
        self.component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

impl Function {
    /// Instantiates the function in a fresh store bound to `weights` and drops it: the
    /// fixed cost every request pays (used by the benchmarks).
    #[doc(hidden)]
    pub fn instantiate_once(&self, weights: &Arc<Weights>) -> Result<()> {
        self.with_instance(weights, |_, _| Ok(()))
    }
}
