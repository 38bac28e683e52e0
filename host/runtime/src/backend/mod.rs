//! The kernel backend seam: who runs a function's `tensors` and `ops` calls.
//!
//! A [`Backend`] is chosen once, when the [`crate::Runtime`] is built ([`new`] is the one
//! place that matches on [`KernelBackend`]), and opens one [`Session`] per request. The
//! function's WIT `tensor` handles are [`TensorHandle`] resources whose rep is an id in
//! the session's own table ([`Slab`]), so each backend keeps its tensors in its own type
//! (host tensors for [`native`], the kernels component's resources for [`wasm`]) and the
//! compiler checks every access; the host side of the WIT ([`crate::host`]) only forwards.
//!
//! Adding a backend (say, a GPU plugin) is one new module implementing [`Backend`] and
//! [`Session`], and one arm in [`new`].

pub(crate) mod native;
pub(crate) mod wasm;

use std::sync::Arc;

use tensorlet_kernels::{Activation, Conv2dParams, Kernels, Pool2dParams};

use crate::error::{Error, Result};
use crate::limits::{LimitHit, TensorBudget};
use crate::tensor::{DType, Tensor};

/// Which kernels run a function's `ops` calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KernelBackend {
    /// The native plugin: `tensorlet-kernels` compiled into the host (AVX-512, AVX2, NEON).
    #[default]
    Native,
    /// The kernels component, instantiated per request beside the function (wasm simd128
    /// + relaxed-simd): for hosts without a native plugin, and to check one.
    Wasm,
}

impl KernelBackend {
    /// The name the CLI uses: `native` or `wasm`.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelBackend::Native => "native",
            KernelBackend::Wasm => "wasm",
        }
    }
}

impl std::str::FromStr for KernelBackend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "native" => Ok(KernelBackend::Native),
            "wasm" => Ok(KernelBackend::Wasm),
            other => Err(Error::invalid_input(format!(
                "unknown kernel backend `{other}`; expected `native` or `wasm`"
            ))),
        }
    }
}

impl std::fmt::Display for KernelBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The WIT `tensor` resource on the host side. It has no values: a
/// `Resource<TensorHandle>`'s rep is a [`TensorId`] in the request's [`Session`].
#[derive(Debug)]
pub enum TensorHandle {}

/// A tensor's id within one [`Session`].
pub(crate) type TensorId = u32;

/// How a session call failed: a typed error the function sees as a WIT `error`, or a
/// trap inside the backend (the kernels component's deadline, memory limit or a bug) that
/// must abort the request.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An error returned to the function.
    Error(Error),
    /// A trap, re-raised in the function's store.
    Trap(wasmtime::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

impl From<LimitHit> for Failure {
    fn from(hit: LimitHit) -> Self {
        Failure::Error(hit.into())
    }
}

/// What a session call returns.
pub(crate) type Outcome<T> = std::result::Result<T, Failure>;

/// One kernel op on tensors of a session.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// `act(x · wᵀ + b)`.
    Dense {
        x: TensorId,
        w: TensorId,
        b: Option<TensorId>,
        act: Activation,
    },
    /// 2-D convolution over NCHW `x`.
    Conv2d {
        x: TensorId,
        w: TensorId,
        b: Option<TensorId>,
        params: Conv2dParams,
        act: Activation,
    },
    /// Max pooling over NCHW `x`.
    MaxPool2d { x: TensorId, params: Pool2dParams },
    /// Average pooling over NCHW `x`.
    AvgPool2d { x: TensorId, params: Pool2dParams },
    /// Mean over H and W.
    GlobalAvgPool { x: TensorId },
    /// `act` element-wise.
    Activate { x: TensorId, act: Activation },
    /// Softmax over the last dimension.
    Softmax { x: TensorId },
    /// `a + b`, b broadcast over a's leading dimensions.
    Add { a: TensorId, b: TensorId },
    /// `a × b`, b broadcast over a's leading dimensions.
    Mul { a: TensorId, b: TensorId },
    /// Layer normalisation over the last dimension.
    LayerNorm {
        x: TensorId,
        gamma: TensorId,
        beta: TensorId,
        eps: f32,
    },
    /// Rows `ids` of `table`.
    Embedding { table: TensorId, ids: Vec<u32> },
    /// Multi-head attention over `[batch, seq, width]` q, k, v with real lengths.
    Attention {
        q: TensorId,
        k: TensorId,
        v: TensorId,
        heads: u32,
        lengths: Vec<u32>,
    },
    /// Mean over each sequence's first `lengths[b]` positions.
    MeanPool { x: TensorId, lengths: Vec<u32> },
    /// Rows of the last dimension divided by their norm (at least `eps`).
    L2Normalize { x: TensorId, eps: f32 },
}

/// What a request's session needs from the runtime.
pub(crate) struct SessionLimits {
    /// This request's share of host memory (tensors the kernels make in the host).
    pub budget: TensorBudget,
    /// Maximum linear memory of an instance, in bytes.
    pub memory_bytes: usize,
    /// Epoch ticks until the request's deadline (for stores a backend owns).
    pub epoch_ticks: u64,
}

/// A kernel backend, chosen once per runtime.
pub(crate) trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> KernelBackend;
    /// A fresh session for one request.
    fn session(&self, limits: SessionLimits) -> Outcome<Box<dyn Session>>;
}

/// One request's tensors and kernels. Every tensor the function holds is an id here.
pub(crate) trait Session: Send {
    /// Takes a host tensor (a request input, or data the function created) into the
    /// session, charging its bytes.
    fn put(&mut self, tensor: Tensor) -> Outcome<TensorId>;
    /// A handle to the weight `name` of the request's weights set (`tensor` is its
    /// prepared host tensor); no copy where the backend can share it.
    fn weight(&mut self, name: &str, tensor: &Tensor) -> Outcome<TensorId>;
    /// The tensor behind `id`, as a host tensor.
    fn get(&mut self, id: TensorId) -> Outcome<Tensor>;
    /// The dimensions of `id`.
    fn shape(&mut self, id: TensorId) -> Outcome<Vec<usize>>;
    /// The element type of `id`.
    fn dtype(&mut self, id: TensorId) -> Outcome<DType>;
    /// The same data under a new shape.
    fn reshape(&mut self, id: TensorId, shape: &[usize]) -> Outcome<TensorId>;
    /// Drops the handle `id`.
    fn release(&mut self, id: TensorId) -> Outcome<()>;
    /// Runs `op` and returns its output.
    fn run(&mut self, op: Op) -> Outcome<TensorId>;
    /// The first limit this session ran into, if any.
    fn limit_hit(&self) -> Option<LimitHit>;
}

/// The backend `kind`, set up once: the one place that chooses between backends. `wasm`
/// links the kernels component (the runtime keeps it for kernel sessions too); the native
/// backend keeps at most `pool_bytes` of large buffers between requests.
pub(crate) fn new(
    kind: KernelBackend,
    kernels: &Kernels,
    pool_bytes: usize,
    wasm: impl FnOnce() -> Result<Arc<wasm::WasmBackend>>,
) -> Result<Arc<dyn Backend>> {
    Ok(match kind {
        KernelBackend::Native => Arc::new(native::NativeBackend::new(kernels.clone(), pool_bytes)),
        KernelBackend::Wasm => wasm()?,
    })
}

/// A table of values indexed by small ids, reusing freed ids: a session's tensors.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<TensorId>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// An empty slab with room for `n` values before it grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Slab {
            entries: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
        }
    }

    /// Stores `value` and returns its id.
    pub(crate) fn insert(&mut self, value: T) -> Result<TensorId> {
        if let Some(id) = self.free.pop() {
            self.entries[id as usize] = Some(value);
            return Ok(id);
        }
        let id = TensorId::try_from(self.entries.len())
            .map_err(|_| Error::limit_exceeded("a request holds more than 2^32 tensor handles"))?;
        self.entries.push(Some(value));
        Ok(id)
    }

    /// The value behind `id`.
    pub(crate) fn get(&self, id: TensorId) -> Result<&T> {
        self.entries
            .get(id as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| bad_handle(id))
    }

    /// Removes and returns every value.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.free.clear();
        self.entries.drain(..).flatten()
    }

    /// Removes and returns the value behind `id`.
    pub(crate) fn remove(&mut self, id: TensorId) -> Result<T> {
        let value = self
            .entries
            .get_mut(id as usize)
            .and_then(Option::take)
            .ok_or_else(|| bad_handle(id))?;
        self.free.push(id);
        Ok(value)
    }
}

fn bad_handle(id: TensorId) -> Error {
    Error::internal(format!("tensor handle {id} is not live in this request"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_reuses_ids_and_rejects_dead_ones() {
        let mut s = Slab::default();
        let a = s.insert("a").unwrap();
        let b = s.insert("b").unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(s.remove(a).unwrap(), "a");
        assert!(s.get(a).is_err());
        assert!(s.remove(a).is_err());
        assert_eq!(s.insert("c").unwrap(), a);
        assert_eq!(*s.get(b).unwrap(), "b");
    }
}
