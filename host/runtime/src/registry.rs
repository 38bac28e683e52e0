//! Named, versioned models, and the registry that serves them.
//!
//! A [`Model`] is a name, a version, a compiled [`Function`], a prepared [`Weights`] set and
//! its [`ModelSettings`]. It is built completely — component compiled and linked, weights
//! read, hashed and prepared, the weights checked against what the function declares —
//! before a [`Registry`] ever sees it; [`Registry::publish`] then makes it visible with one
//! write under the registry's lock, so the swap is atomic: a request that already holds a
//! [`ModelRef`] finishes on the version it started with, the next one gets the new
//! version, and a version that fails to build never replaces the one serving.
//! [`Registry::unload`] removes a model and waits for its requests in flight.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::batching::Batcher;
use crate::error::{Error, Result};
use crate::limits::Permit;
use crate::runtime::{Function, Runtime, Timing};
use crate::tensor::Tensor;
use crate::weights::Weights;

/// How long a version's requests may compute, on recent average, for
/// [`ModelRef::try_infer_request_binary_quick`] to run them on the calling thread: a few
/// hundred microseconds, what an I/O thread may spend before its other connections notice.
pub const QUICK_COMPUTE: Duration = Duration::from_micros(250);

/// Settings of one model version: what a server needs beyond the function and weights.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelSettings {
    /// Largest batch a server may form for this model; 0 leaves batching off.
    pub max_batch_size: u32,
    /// Batch sizes a dynamic batcher should aim for.
    pub preferred_batch_sizes: Vec<u32>,
    /// How long a dynamic batcher may hold a request to fill a batch.
    pub max_queue_delay: Duration,
    /// Whether requests are batched dynamically (`dynamic_batching` in the configuration,
    /// with a `max_batch_size` of 2 or more); see `batching.rs`.
    pub dynamic_batching: bool,
}

/// A model version, ready to serve.
#[derive(Clone, Debug)]
pub struct Model {
    name: String,
    version: u64,
    function: Function,
    weights: Arc<Weights>,
    settings: ModelSettings,
}

/// Checks a model or file name: 1–128 characters of letters, digits, `-`, `_` and `.`,
/// not starting with `.` (so never `..`, a path separator or an absolute path).
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "{what} `{name}` is not allowed; use 1-128 letters, digits, `-`, `_` or `.`, not \
             starting with `.`"
        )))
    }
}

impl Model {
    /// A model version from a compiled function and a prepared weights set. Fails if the
    /// name is not a valid model name, the version is 0, or the weights lack a weight the
    /// function declares (one whose description does not say "optional") or hold one with
    /// another rank than declared.
    pub fn new(
        name: &str,
        version: u64,
        function: Function,
        weights: Arc<Weights>,
        settings: ModelSettings,
    ) -> Result<Self> {
        validate_name("model name", name)?;
        if version == 0 {
            return Err(Error::invalid_input(format!(
                "model `{name}`: versions are positive integers, got 0"
            )));
        }
        for spec in &function.metadata().weights {
            match weights.get(&spec.name) {
                Some(w) if w.tensor.shape().len() != spec.shape.len() => {
                    return Err(Error::shape_mismatch(format!(
                        "model `{name}` version {version}: weight `{}` has shape {:?}; function \
                         `{}` expects rank {} ({:?})",
                        spec.name,
                        w.tensor.shape(),
                        function.name(),
                        spec.shape.len(),
                        spec.shape
                    )));
                }
                None if !spec.description.to_lowercase().contains("optional") => {
                    return Err(Error::not_found(format!(
                        "model `{name}` version {version}: the weights set `{}` has no `{}`, \
                         which function `{}` needs",
                        weights.source(),
                        spec.name,
                        function.name()
                    )));
                }
                _ => {}
            }
        }
        Ok(Model {
            name: name.to_string(),
            version,
            function,
            weights,
            settings,
        })
    }

    /// Compiles the component at `function` and prepares the weights at `weights` in
    /// `runtime`, then builds the model as [`Model::new`] does.
    pub fn from_files(
        runtime: &Runtime,
        name: &str,
        version: u64,
        function: &Path,
        weights: &Path,
        settings: ModelSettings,
    ) -> Result<Self> {
        let f = runtime.load_function_file(function)?;
        let w = runtime.load_weights_file(weights)?;
        Self::new(name, version, f, w, settings)
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version (a positive integer).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The compiled function.
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The prepared weights set.
    pub fn weights(&self) -> &Arc<Weights> {
        &self.weights
    }

    /// The settings.
    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    /// Runs the function on `inputs` with the model's weights, in a fresh instance.
    pub fn infer(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
        self.function.infer(&self.weights, inputs)
    }

    /// Runs an Open Inference Protocol request; the response names this model and version.
    pub fn infer_request(
        &self,
        request: &crate::InferenceRequest,
    ) -> Result<crate::InferenceResponse> {
        Ok(self.infer_request_binary(request, |_| false)?.0)
    }

    /// Runs an Open Inference Protocol request with the outputs `binary` picks as binary
    /// data (see [`Function::infer_request_binary`]); the response names this model and
    /// version.
    pub fn infer_request_binary(
        &self,
        request: &crate::InferenceRequest,
        binary: impl Fn(&str) -> bool,
    ) -> Result<(crate::InferenceResponse, Vec<u8>)> {
        self.infer_request_binary_timed(request, binary, &mut Timing::default())
    }

    /// [`Model::infer_request_binary`], recording where the time went in `timing`.
    fn infer_request_binary_timed(
        &self,
        request: &crate::InferenceRequest,
        binary: impl Fn(&str) -> bool,
        timing: &mut Timing<'_>,
    ) -> Result<(crate::InferenceResponse, Vec<u8>)> {
        let inputs = self.function.request_tensors(request)?;
        let outputs = self.function.infer_timed(&self.weights, inputs, timing)?;
        self.respond(request, outputs, binary)
    }

    /// The response to `request` from the function's `outputs`, naming this model and
    /// version.
    fn respond(
        &self,
        request: &crate::InferenceRequest,
        outputs: Vec<(String, Tensor)>,
        binary: impl Fn(&str) -> bool,
    ) -> Result<(crate::InferenceResponse, Vec<u8>)> {
        let (mut response, tail) = self.function.respond(request, outputs, binary)?;
        response.model_name = self.name.clone();
        response.model_version = Some(self.version.to_string());
        Ok((response, tail))
    }
}

/// A published model version, the count of requests using it, and its statistics.
#[derive(Debug)]
struct Entry {
    model: Model,
    in_flight: Mutex<InFlight>,
    /// Signalled when the last request of a retired version ends.
    idle: Condvar,
    counters: Counters,
    /// Present when the model's settings ask for dynamic batching.
    batcher: Option<Batcher>,
}

/// Request counts and times of one published version.
#[derive(Debug, Default)]
struct Counters {
    success: AtomicU64,
    success_ns: AtomicU64,
    /// Of the successful requests: time waiting for a slot, and time running.
    queue_ns: AtomicU64,
    compute_ns: AtomicU64,
    fail: AtomicU64,
    fail_ns: AtomicU64,
    /// Failures by [`FailureReason`], in its order.
    fail_by_reason: [AtomicU64; 3],
    /// Requests waiting in the admission queue now.
    waiting: AtomicU64,
    /// Calls of the function (a batch of requests is one).
    executions: AtomicU64,
    /// Milliseconds since the Unix epoch of the last request's end (0: none yet).
    last_ms: AtomicU64,
    /// Recent compute time per request in nanoseconds, a moving average that weighs each
    /// new request 1/8 (0: none yet), for [`ModelRef::try_infer_request_binary_quick`].
    recent_compute_ns: AtomicU64,
    /// Recent input elements per Open Inference Protocol request, averaged the same way.
    recent_elements: AtomicU64,
}

/// `average` moved 1/8 of the way to `sample`; the first sample (`average` 0) is taken
/// as it is.
fn moving_average(average: &AtomicU64, sample: u64) {
    let recent = average.load(Ordering::Relaxed);
    let next = if recent == 0 {
        sample
    } else {
        recent - recent / 8 + sample / 8
    };
    average.store(next, Ordering::Relaxed);
}

/// The elements of a request's inputs, as their shapes declare them.
fn input_elements(request: &crate::InferenceRequest) -> u64 {
    request
        .inputs
        .iter()
        .map(|i| {
            i.shape
                .iter()
                .fold(1u64, |n, &d| n.saturating_mul(d as u64))
        })
        .fold(0u64, u64::saturating_add)
}

/// What a published model version has served, as Triton's statistics report it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// The model's name.
    pub name: String,
    /// The version.
    pub version: u64,
    /// Requests that succeeded.
    pub success: u64,
    /// Their total time, in nanoseconds.
    pub success_ns: u64,
    /// Of the successful requests: their total time waiting in the admission queue, in
    /// nanoseconds.
    pub queue_ns: u64,
    /// Of the successful requests: their total time from admission to outputs
    /// (instantiating and running the function), in nanoseconds.
    pub compute_ns: u64,
    /// Requests that failed.
    pub fail: u64,
    /// Their total time, in nanoseconds.
    pub fail_ns: u64,
    /// Failures by reason, in [`FailureReason::ALL`]'s order.
    pub fail_by_reason: [u64; 3],
    /// Requests of this version waiting now: for a batch to form, or in the admission
    /// queue.
    pub pending: u64,
    /// Successful calls of the function; with dynamic batching one call serves a batch of
    /// requests.
    pub executions: u64,
    /// When the last request ended, in milliseconds since the Unix epoch (0: none yet).
    pub last_inference_ms: u64,
}

/// The requests using a version, and whether it was unloaded (only then does anyone wait
/// for them to end: the last one's end wakes the waiter, otherwise it makes no system call).
#[derive(Debug, Default)]
struct InFlight {
    requests: usize,
    retired: bool,
}

impl Entry {
    fn count(&self) -> MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A model version in use by one request: it stays valid (and counted in flight) until
/// dropped, even if the registry swaps or unloads the version meanwhile.
#[derive(Debug)]
pub struct ModelRef {
    entry: Arc<Entry>,
}

impl ModelRef {
    /// Counts one request of `started`'s duration that ended with `result`, of which
    /// `timing` says where the time went.
    fn record<T>(
        &self,
        started: Instant,
        timing: &Timing<'_>,
        executed: bool,
        result: Result<T>,
    ) -> Result<T> {
        let c = &self.entry.counters;
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let total = ns(started.elapsed());
        // Failures count too: a request that ran into its deadline was slow.
        let compute = ns(timing.compute);
        if compute > 0 {
            moving_average(&c.recent_compute_ns, compute);
        }
        match &result {
            Ok(_) => {
                c.success.fetch_add(1, Ordering::Relaxed);
                c.success_ns.fetch_add(total, Ordering::Relaxed);
                c.queue_ns.fetch_add(ns(timing.queue), Ordering::Relaxed);
                c.compute_ns
                    .fetch_add(ns(timing.compute), Ordering::Relaxed);
                if executed {
                    c.executions.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                c.fail.fetch_add(1, Ordering::Relaxed);
                c.fail_ns.fetch_add(total, Ordering::Relaxed);
                let reason = FailureReason::of(e.kind());
                c.fail_by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        c.last_ms.store(now, Ordering::Relaxed);
        result
    }

    /// A fresh timing record that counts the request as waiting while it is queued.
    fn timing(&self) -> Timing<'_> {
        Timing {
            waiting: Some(&self.entry.counters.waiting),
            ..Timing::default()
        }
    }

    /// [`Model::infer`], counted in the version's statistics.
    pub fn infer(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
        let started = Instant::now();
        let mut timing = self.timing();
        let m = &self.entry.model;
        let result = m.function.infer_timed(&m.weights, inputs, &mut timing);
        self.record(started, &timing, true, result)
    }

    /// [`Model::infer_request`], counted in the version's statistics.
    pub fn infer_request(
        &self,
        request: &crate::InferenceRequest,
    ) -> Result<crate::InferenceResponse> {
        Ok(self.infer_request_binary(request, |_| false)?.0)
    }

    /// [`ModelRef::infer_request_binary`] on the calling thread, but only if it is quick and
    /// can start at once: the version does not batch, its recent requests computed for less
    /// than [`QUICK_COMPUTE`] each on average, this request's inputs have at most twice the
    /// elements its recent requests had on average (a much larger batch is not known to be
    /// quick), and a request slot is free with none waiting. `None` when it did not run;
    /// then call [`ModelRef::infer_request_binary`] where blocking is allowed.
    ///
    /// An async server calls this on its I/O threads to skip the hand-off to a blocking
    /// thread (two thread wake-ups, which cost more than a small model's whole request),
    /// without ever making an I/O thread wait in the admission queue. A version's first
    /// request is never quick: nothing is known of it yet.
    pub fn try_infer_request_binary_quick(
        &self,
        request: &crate::InferenceRequest,
        binary: impl Fn(&str) -> bool,
    ) -> Option<Result<(crate::InferenceResponse, Vec<u8>)>> {
        let c = &self.entry.counters;
        let recent = c.recent_compute_ns.load(Ordering::Relaxed);
        let quick = recent > 0 && u128::from(recent) < QUICK_COMPUTE.as_nanos();
        let elements = input_elements(request);
        let usual = elements <= c.recent_elements.load(Ordering::Relaxed).saturating_mul(2);
        if !quick || !usual || self.entry.batcher.is_some() {
            return None;
        }
        let permit = self.entry.model.function.runtime().try_admit()?;
        moving_average(&c.recent_elements, elements);
        Some(self.infer_alone(Instant::now(), request, binary, Some(permit)))
    }

    /// Runs `request` unbatched, in `permit` if the caller already holds a slot (otherwise
    /// it waits in the admission queue), counted in the version's statistics as a request
    /// that began at `started`.
    fn infer_alone(
        &self,
        started: Instant,
        request: &crate::InferenceRequest,
        binary: impl Fn(&str) -> bool,
        permit: Option<Permit>,
    ) -> Result<(crate::InferenceResponse, Vec<u8>)> {
        let mut timing = self.timing();
        timing.permit = permit;
        let m = &self.entry.model;
        let result = m.infer_request_binary_timed(request, binary, &mut timing);
        self.record(started, &timing, true, result)
    }

    /// [`Model::infer_request_binary`], counted in the version's statistics, batched with
    /// other requests when the model's settings ask for dynamic batching.
    pub fn infer_request_binary(
        &self,
        request: &crate::InferenceRequest,
        binary: impl Fn(&str) -> bool,
    ) -> Result<(crate::InferenceResponse, Vec<u8>)> {
        let started = Instant::now();
        moving_average(
            &self.entry.counters.recent_elements,
            input_elements(request),
        );
        let Some(batcher) = &self.entry.batcher else {
            return self.infer_alone(started, request, binary, None);
        };
        let m = &self.entry.model;
        let mut timing = Timing::default();
        let mut executed = false;
        let batched = || {
            let inputs = m.function.request_tensors(request)?;
            let call = |inputs: Vec<(String, Tensor)>| {
                let mut t = self.timing();
                let outputs = m.function.infer_timed(&m.weights, inputs, &mut t);
                (outputs, t.queue, t.compute)
            };
            let served = batcher.run(inputs, &call);
            executed = served.executed;
            timing.queue = served.batch_wait + served.queue;
            timing.compute = served.compute;
            m.respond(request, served.outputs?, binary)
        };
        let result = batched();
        self.record(started, &timing, executed, result)
    }
}

/// Why a request failed, as Triton's `nv_inference_request_failure` metric labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Refused before running: the admission queue was full, or the request's deadline
    /// passed while it waited (`REJECTED`).
    Rejected = 0,
    /// The function failed while running: a trap, a limit, its deadline, a host fault
    /// (`BACKEND`).
    Backend = 1,
    /// Anything else, chiefly a bad request (`OTHER`).
    Other = 2,
}

impl FailureReason {
    /// Every reason, in the order of [`ModelStats::fail_by_reason`].
    pub const ALL: [FailureReason; 3] = [
        FailureReason::Rejected,
        FailureReason::Backend,
        FailureReason::Other,
    ];

    /// The reason of a failure of kind `kind`.
    pub fn of(kind: crate::ErrorKind) -> Self {
        use crate::ErrorKind as K;
        match kind {
            K::Unavailable => FailureReason::Rejected,
            K::Trap | K::LimitExceeded | K::DeadlineExceeded | K::Io | K::Internal => {
                FailureReason::Backend
            }
            K::InvalidInput | K::ShapeMismatch | K::NotFound | K::Unsupported => {
                FailureReason::Other
            }
        }
    }

    /// Triton's label for it.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Rejected => "REJECTED",
            FailureReason::Backend => "BACKEND",
            FailureReason::Other => "OTHER",
        }
    }
}

impl std::ops::Deref for ModelRef {
    type Target = Model;

    fn deref(&self) -> &Model {
        &self.entry.model
    }
}

impl Drop for ModelRef {
    fn drop(&mut self) {
        let mut n = self.entry.count();
        n.requests -= 1;
        if n.requests == 0 && n.retired {
            self.entry.idle.notify_all();
        }
    }
}

/// The ready versions of every model, by name.
#[derive(Debug)]
pub struct Registry {
    runtime: Runtime,
    models: RwLock<BTreeMap<String, BTreeMap<u64, Arc<Entry>>>>,
}

impl Registry {
    /// An empty registry whose models run in `runtime`.
    pub fn new(runtime: Runtime) -> Self {
        Registry {
            runtime,
            models: RwLock::new(BTreeMap::new()),
        }
    }

    /// The runtime models are loaded into.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, BTreeMap<u64, Arc<Entry>>>> {
        self.models.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, BTreeMap<u64, Arc<Entry>>>> {
        self.models.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `model` visible, atomically replacing a published model of the same name and
    /// version (whose requests in flight finish on it). Returns the replaced model.
    pub fn publish(&self, model: Model) -> Option<Model> {
        let entry = Arc::new(Entry {
            batcher: Batcher::new(&model.settings),
            model,
            in_flight: Mutex::new(InFlight::default()),
            idle: Condvar::new(),
            counters: Counters::default(),
        });
        let name = entry.model.name.clone();
        let version = entry.model.version;
        self.write()
            .entry(name)
            .or_default()
            .insert(version, entry)
            .map(|old| old.model.clone())
    }

    /// Builds a model from files ([`Model::from_files`]) and publishes it. If building
    /// fails, nothing changes: the versions serving keep serving.
    pub fn load_files(
        &self,
        name: &str,
        version: u64,
        function: &Path,
        weights: &Path,
        settings: ModelSettings,
    ) -> Result<()> {
        let model = Model::from_files(&self.runtime, name, version, function, weights, settings)?;
        self.publish(model);
        Ok(())
    }

    /// Model `name` at `version`, or its latest version when `version` is `None`, held for
    /// one request.
    pub fn get(&self, name: &str, version: Option<u64>) -> Result<ModelRef> {
        let models = self.read();
        let versions = models.get(name).ok_or_else(|| {
            let known: Vec<_> = models.keys().map(|k| format!("`{k}`")).collect();
            Error::not_found(format!(
                "no model `{name}`; loaded: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        let entry = match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        }
        .ok_or_else(|| {
            let known: Vec<_> = versions.keys().map(u64::to_string).collect();
            Error::not_found(format!(
                "model `{name}` has no version {}; ready versions: {}",
                version.map_or("at all".to_string(), |v| v.to_string()),
                known.join(", ")
            ))
        })?;
        entry.count().requests += 1;
        Ok(ModelRef {
            entry: entry.clone(),
        })
    }

    /// Runs `inputs` through model `name` (latest version unless `version` is given).
    pub fn infer(
        &self,
        name: &str,
        version: Option<u64>,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>> {
        self.get(name, version)?.infer(inputs)
    }

    /// The statistics of every published version (of model `name` only, if given), by
    /// name and version. A version's counts start when it is published.
    pub fn stats(&self, name: Option<&str>) -> Vec<ModelStats> {
        self.read()
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| *n == want))
            .flat_map(|(n, versions)| {
                versions.iter().map(move |(v, e)| {
                    let c = &e.counters;
                    ModelStats {
                        name: n.clone(),
                        version: *v,
                        success: c.success.load(Ordering::Relaxed),
                        success_ns: c.success_ns.load(Ordering::Relaxed),
                        queue_ns: c.queue_ns.load(Ordering::Relaxed),
                        compute_ns: c.compute_ns.load(Ordering::Relaxed),
                        fail: c.fail.load(Ordering::Relaxed),
                        fail_ns: c.fail_ns.load(Ordering::Relaxed),
                        fail_by_reason: c
                            .fail_by_reason
                            .each_ref()
                            .map(|n| n.load(Ordering::Relaxed)),
                        pending: c.waiting.load(Ordering::Relaxed)
                            + e.batcher.as_ref().map_or(0, |b| b.queued() as u64),
                        executions: c.executions.load(Ordering::Relaxed),
                        last_inference_ms: c.last_ms.load(Ordering::Relaxed),
                    }
                })
            })
            .collect()
    }

    /// Every model's ready versions, by name.
    pub fn models(&self) -> Vec<(String, Vec<u64>)> {
        self.read()
            .iter()
            .map(|(name, v)| (name.clone(), v.keys().copied().collect()))
            .collect()
    }

    /// Removes model `name` (one version, or all when `version` is `None`) so no new request
    /// gets it, then waits until its requests in flight finish (at most `wait`). Returns how
    /// many versions were removed.
    pub fn unload(&self, name: &str, version: Option<u64>, wait: Duration) -> Result<usize> {
        let removed: Vec<Arc<Entry>> = {
            let mut models = self.write();
            let Some(versions) = models.get_mut(name) else {
                return Err(Error::not_found(format!("no model `{name}` to unload")));
            };
            let removed = match version {
                Some(v) => versions.remove(&v).into_iter().collect(),
                None => std::mem::take(versions).into_values().collect(),
            };
            if versions.is_empty() {
                models.remove(name);
            }
            removed
        };
        if removed.is_empty() {
            return Err(Error::not_found(format!(
                "model `{name}` has no version {} to unload",
                version.unwrap_or(0)
            )));
        }
        let until = Instant::now() + wait;
        for entry in &removed {
            let mut n = entry.count();
            n.retired = true;
            while n.requests > 0 {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::unavailable(format!(
                        "model `{name}` was unloaded, but {} of its requests were still running \
                         after {wait:?}",
                        n.requests
                    )));
                }
                n = entry
                    .idle
                    .wait_timeout(n, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        Ok(removed.len())
    }
}

const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Registry>();
    shared::<Model>();
    shared::<ModelRef>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_a_folder() {
        for ok in ["mnist-cnn", "mlp", "a.b_c-1", "X"] {
            validate_name("model name", ok).unwrap();
        }
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "/abs", "sp ace", "é"] {
            assert!(validate_name("model name", bad).is_err(), "{bad:?}");
        }
    }
}

/// Tests on the bundled mlp (the `bundled` feature, which the workspace's tests turn on).
#[cfg(all(test, feature = "bundled"))]
mod quick_tests {
    use super::*;
    use crate::{InferenceRequest, RuntimeConfig, bundled};

    /// A registry over a one-slot runtime serving the bundled mlp as version 1 with
    /// `settings`.
    fn mlp_registry(settings: ModelSettings) -> (Runtime, Registry) {
        let rt = Runtime::new(RuntimeConfig {
            max_concurrent_requests: 1,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let b = bundled::find("mlp").unwrap();
        let function = rt.load_function(b.name, b.component).unwrap();
        let weights = rt.load_weights("mlp", b.weights().unwrap()).unwrap();
        let registry = Registry::new(rt.clone());
        registry.publish(Model::new("mlp", 1, function, weights, settings).unwrap());
        (rt, registry)
    }

    fn mlp_request() -> InferenceRequest {
        InferenceRequest::from_json(
            r#"{"inputs":[{"name":"x","shape":[2,10],"datatype":"FP32",
                "data":[1,-2,3,-4,5,-6,7,-8,9,-10,0.5,0.25,-0.125,2,4,8,-1,-3,6,0]}]}"#,
        )
        .unwrap()
    }

    /// A quick request runs on the caller's thread only once its version is known to be
    /// quick, only while a slot is free, and never for a batching version; when it runs, it
    /// answers what the ordinary path answers and counts in the statistics the same way.
    #[test]
    fn quick_requests_run_here_only_when_known_quick_and_a_slot_is_free() {
        let (rt, registry) = mlp_registry(ModelSettings::default());
        let m = registry.get("mlp", None).unwrap();
        let request = mlp_request();
        let quick = || m.try_infer_request_binary_quick(&request, |_| false);
        assert!(quick().is_none(), "a version's first request is not quick");
        let (want, _) = m.infer_request_binary(&request, |_| false).unwrap();
        // The moving average forgets a slow (cold) first request within tens of requests.
        let mut ordinary = 1;
        while quick().is_none() {
            m.infer_request_binary(&request, |_| false).unwrap();
            ordinary += 1;
            assert!(ordinary < 200, "a small mlp never counted as quick");
        }
        let (got, tail) = quick().unwrap().unwrap();
        assert!(tail.is_empty());
        assert_eq!(got.outputs.len(), 1);
        assert_eq!(got.outputs[0].data, want.outputs[0].data);
        assert_eq!(
            (got.model_name.as_str(), got.model_version.as_deref()),
            ("mlp", Some("1"))
        );
        let stats = &registry.stats(Some("mlp"))[0];
        assert_eq!(
            (stats.success, stats.executions),
            (ordinary + 2, ordinary + 2)
        );

        // Every slot taken: it does not run (nor wait).
        let held = rt.try_admit().unwrap();
        assert!(quick().is_none(), "ran without a free slot");
        drop(held);
        assert!(quick().is_some());

        // A batch far larger than the recent requests: not known to be quick.
        let mut large = request.clone();
        large.inputs[0].shape = vec![5, 10];
        large.inputs[0].data = serde_json::json!(vec![0.5f32; 50]);
        assert!(
            m.try_infer_request_binary_quick(&large, |_| false)
                .is_none(),
            "ran a 5-row request quick after 2-row ones"
        );
        let (got, _) = m.infer_request_binary(&large, |_| false).unwrap();
        assert_eq!(got.outputs[0].shape, [5, 1]);

        // Recently slow: not quick.
        m.entry.counters.recent_compute_ns.store(
            u64::try_from(QUICK_COMPUTE.as_nanos()).unwrap(),
            Ordering::Relaxed,
        );
        assert!(quick().is_none(), "ran a version that is not quick");
    }

    #[test]
    fn batching_versions_are_never_quick() {
        let (_rt, registry) = mlp_registry(ModelSettings {
            max_batch_size: 4,
            preferred_batch_sizes: vec![],
            max_queue_delay: Duration::from_micros(10),
            dynamic_batching: true,
        });
        let m = registry.get("mlp", None).unwrap();
        let request = mlp_request();
        for _ in 0..20 {
            m.infer_request(&request).unwrap();
            assert!(
                m.try_infer_request_binary_quick(&request, |_| false)
                    .is_none()
            );
        }
    }
}
