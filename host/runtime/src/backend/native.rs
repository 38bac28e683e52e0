//! The native backend: `tensorlet-kernels` compiled into the host (AVX-512, AVX2+FMA,
//! NEON), run on host tensors.
//!
//! A session's tensors are host [`Tensor`]s (shape + reference-counted data), so a weight
//! handle or a reshape is a pointer copy. Weights run on their packed form, prepared once
//! per weights set ([`crate::prepared`]). Every output is charged to the request's
//! [`TensorBudget`] before it is allocated, and so is every handle. The f32 buffers of
//! tensors the function releases are kept for the request's later outputs of the same
//! length (every kernel writes all of its output): an encoder's layers allocate the same
//! few shapes again and again, and a fresh large allocation costs page faults and zeroing.
//! Large buffers a request still held when it ended go to the backend's [`SparePool`],
//! shared by all requests, for later requests' outputs: a server running the same network
//! request after request allocates each of its large activations once, not every time.
//! Since every kernel writes all of its output, nothing an earlier request held (another
//! tenant's data) is ever visible in a reused buffer.

use std::sync::{Arc, Mutex, PoisonError};

use tensorlet_kernels::{Activation, Conv2dParams, Kernels, Pool2dParams};

use super::{Backend, KernelBackend, Op, Outcome, Session, SessionLimits, Slab, TensorId};
use crate::error::{Error, Result};
use crate::limits::{LimitHit, TensorBudget};
use crate::tensor::{DType, Tensor, element_count};

/// Bytes charged per tensor handle on top of its data, so handles count against the budget.
const HANDLE_COST: usize = 64;

/// Most released buffers a session keeps for reuse.
const SPARE_BUFFERS: usize = 16;

/// Smallest buffer, in bytes, worth keeping between requests: below it the allocator
/// serves from memory it already has (glibc's default `mmap` threshold is 128 KiB), so a
/// shared pool's lock would cost more than it saves.
const POOLED_BYTES: usize = 128 << 10;

/// Most buffers the between-requests pool keeps, whatever their size.
const POOLED_BUFFERS: usize = 32;

/// The native plugin: one set of kernels at the level chosen for the runtime.
pub(crate) struct NativeBackend {
    kernels: Kernels,
    pool: Arc<SparePool>,
}

impl NativeBackend {
    /// The backend running `kernels`, keeping at most `pool_bytes` of buffers between
    /// requests.
    pub(crate) fn new(kernels: Kernels, pool_bytes: usize) -> Self {
        NativeBackend {
            kernels,
            pool: Arc::new(SparePool::new(pool_bytes)),
        }
    }
}

/// Large f32 buffers of finished requests, kept (at most `cap` bytes, the most recently
/// returned) for later requests' outputs of the same length.
pub(crate) struct SparePool {
    cap: usize,
    spares: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    /// Oldest first.
    buffers: Vec<Arc<[f32]>>,
    bytes: usize,
}

impl SparePool {
    /// An empty pool keeping at most `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        SparePool {
            cap,
            spares: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // The state is a list of buffers, whole after any panic.
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept buffer of exactly `elements` f32s, if there is one.
    fn take(&self, elements: usize) -> Option<Arc<[f32]>> {
        let mut state = self.lock();
        let i = state.buffers.iter().rposition(|b| b.len() == elements)?;
        let buf = state.buffers.remove(i);
        state.bytes -= elements * 4;
        Some(buf)
    }

    /// Keeps `buffers` (each with no other owner), dropping the oldest kept ones beyond
    /// the pool's bounds.
    fn give(&self, buffers: impl IntoIterator<Item = Arc<[f32]>>) {
        let mut state = self.lock();
        for buf in buffers {
            let bytes = buf.len() * 4;
            if bytes > self.cap {
                continue;
            }
            state.bytes += bytes;
            state.buffers.push(buf);
        }
        while state.bytes > self.cap || state.buffers.len() > POOLED_BUFFERS {
            let old = state.buffers.remove(0);
            state.bytes -= old.len() * 4;
        }
    }

    /// Bytes kept now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Backend for NativeBackend {
    fn kind(&self) -> KernelBackend {
        KernelBackend::Native
    }

    fn session(&self, limits: SessionLimits) -> Outcome<Box<dyn Session>> {
        Ok(Box::new(NativeSession {
            kernels: self.kernels.clone(),
            // Room for a small network's handles (weights, inputs, intermediates): growing
            // from empty reallocated the slab several times per request.
            tensors: Slab::with_capacity(32),
            budget: limits.budget,
            spare: Vec::new(),
            pool: self.pool.clone(),
        }))
    }
}

/// One request's host tensors.
struct NativeSession {
    kernels: Kernels,
    tensors: Slab<Tensor>,
    budget: TensorBudget,
    /// Buffers of released tensors that nothing else shared, for later outputs.
    spare: Vec<Arc<[f32]>>,
    /// Where large buffers go when the request ends, and come from when `spare` has none.
    pool: Arc<SparePool>,
}

impl Drop for NativeSession {
    fn drop(&mut self) {
        let held = self
            .tensors
            .drain()
            .filter_map(Tensor::into_unshared_f32s)
            .chain(self.spare.drain(..))
            .filter(|b| b.len() * 4 >= POOLED_BYTES);
        self.pool.give(held);
    }
}

impl NativeSession {
    /// Stores `tensor`, charging `new_bytes` (data it newly allocated) plus the handle.
    fn push(&mut self, tensor: Tensor, new_bytes: usize) -> Result<TensorId> {
        self.budget.charge(new_bytes.saturating_add(HANDLE_COST))?;
        self.tensors.insert(tensor)
    }

    /// A cheap clone (data shared) of the tensor behind `id`.
    fn tensor(&self, id: TensorId) -> Result<Tensor> {
        self.tensors.get(id).cloned()
    }

    /// Storage for an op's output of `elements` f32s, charged first (as if new, so the
    /// budget counts what a request asks for, whatever is reused): a spare buffer of that
    /// length, holding what an earlier output of this request (or, for a large one, of an
    /// earlier request) held, or a zeroed allocation. Either way it is the tensor's own
    /// shared buffer (no copy when the output becomes a tensor); [`elems`] gives the
    /// kernels its elements, all of which they write.
    fn output(&mut self, elements: usize) -> Result<Arc<[f32]>> {
        self.budget.charge(elements.saturating_mul(4))?;
        if let Some(i) = self.spare.iter().position(|b| b.len() == elements) {
            return Ok(self.spare.swap_remove(i));
        }
        if elements * 4 >= POOLED_BYTES
            && let Some(buf) = self.pool.take(elements)
        {
            return Ok(buf);
        }
        // One zeroed allocation (fresh pages come zeroed from the OS): collecting zeros
        // element by element cost a tenth of a convolutional network's request.
        let zeroed = Arc::<[f32]>::new_zeroed_slice(elements);
        // SAFETY: every element is zero bits, which is 0.0f32.
        Ok(unsafe { zeroed.assume_init() })
    }

    /// Stores an op's f32 output of `shape` (its bytes were charged by `output`).
    fn push_f32(&mut self, shape: Vec<usize>, data: Arc<[f32]>) -> Result<TensorId> {
        self.push(Tensor::from_f32(shape, data)?, 0)
    }

    fn run_op(&mut self, op: Op) -> Result<TensorId> {
        match op {
            Op::Dense { x, w, b, act } => self.dense(x, w, b, act),
            Op::Conv2d {
                x,
                w,
                b,
                params,
                act,
            } => self.conv2d(x, w, b, &params, act),
            Op::MaxPool2d { x, params } => self.pool("max-pool2d", x, &params, Kernels::max_pool2d),
            Op::AvgPool2d { x, params } => self.pool("avg-pool2d", x, &params, Kernels::avg_pool2d),
            Op::GlobalAvgPool { x } => {
                let x = self.tensor(x)?;
                let xs = tensorlet_kernels::rank4("global-avg-pool: x", x.shape())?;
                let mut out = self.output(element_count(&xs[..2])?)?;
                self.kernels
                    .global_avg_pool(x.f32s("global-avg-pool: x")?, xs, elems(&mut out))
                    .map_err(|e| Error::from(e).context("global-avg-pool"))?;
                self.push_f32(vec![xs[0], xs[1]], out)
            }
            Op::Activate { x, act } => {
                let x = self.tensor(x)?;
                let xd = x.f32s("activate: x")?;
                let mut out = self.output(xd.len())?;
                elems(&mut out).copy_from_slice(xd);
                self.kernels.activate(elems(&mut out), act);
                self.push_f32(x.shape().to_vec(), out)
            }
            Op::Softmax { x } => {
                let x = self.tensor(x)?;
                let Some(&row) = x.shape().last() else {
                    return Err(Error::shape_mismatch(
                        "softmax: x must have rank ≥ 1, got a scalar",
                    ));
                };
                let xd = x.f32s("softmax: x")?;
                let mut out = self.output(xd.len())?;
                elems(&mut out).copy_from_slice(xd);
                if !out.is_empty() {
                    self.kernels
                        .softmax(elems(&mut out), row)
                        .map_err(|e| Error::from(e).context("softmax"))?;
                }
                self.push_f32(x.shape().to_vec(), out)
            }
            Op::Add { a, b } => self.elementwise("add", a, b, Kernels::add),
            Op::Mul { a, b } => self.elementwise("mul", a, b, Kernels::mul),
            Op::LayerNorm {
                x,
                gamma,
                beta,
                eps,
            } => {
                let (x, g, b) = (self.tensor(x)?, self.tensor(gamma)?, self.tensor(beta)?);
                let d = tensorlet_kernels::layer_norm_dims(x.shape(), g.shape(), b.shape())?;
                let xd = x.f32s("layer-norm: x")?;
                let mut out = self.output(xd.len())?;
                if !xd.is_empty() {
                    let (gd, bd) = (g.f32s("layer-norm: gamma")?, b.f32s("layer-norm: beta")?);
                    self.kernels
                        .layer_norm(xd, d, gd, bd, eps, elems(&mut out))
                        .map_err(|e| Error::from(e).context("layer-norm"))?;
                }
                self.push_f32(x.shape().to_vec(), out)
            }
            Op::Embedding { table, ids } => {
                let table = self.tensor(table)?;
                let shape = tensorlet_kernels::embedding_dims(table.shape(), ids.len())?;
                let mut out = self.output(element_count(&shape)?)?;
                self.kernels
                    .gather_rows(
                        table.f32s("embedding: table")?,
                        shape[1],
                        &ids,
                        elems(&mut out),
                    )
                    .map_err(|e| Error::from(e).context("embedding"))?;
                self.push_f32(shape.to_vec(), out)
            }
            Op::Attention {
                q,
                k,
                v,
                heads,
                lengths,
            } => {
                let (q, k, v) = (self.tensor(q)?, self.tensor(k)?, self.tensor(v)?);
                let dims = tensorlet_kernels::attention_dims(
                    q.shape(),
                    k.shape(),
                    v.shape(),
                    heads as usize,
                    lengths.len(),
                )?;
                let lengths: Vec<usize> = lengths.iter().map(|&l| l as usize).collect();
                let qd = q.f32s("attention: q")?;
                let mut out = self.output(qd.len())?;
                self.kernels
                    .attention(
                        qd,
                        k.f32s("attention: k")?,
                        v.f32s("attention: v")?,
                        dims,
                        &lengths,
                        elems(&mut out),
                    )
                    .map_err(|e| Error::from(e).context("attention"))?;
                self.push_f32(q.shape().to_vec(), out)
            }
            Op::MeanPool { x, lengths } => {
                let x = self.tensor(x)?;
                let [batch, seq, d] = tensorlet_kernels::mean_pool_dims(x.shape(), lengths.len())?;
                let lengths: Vec<usize> = lengths.iter().map(|&l| l as usize).collect();
                let mut out = self.output(element_count(&[batch, d])?)?;
                self.kernels
                    .mean_pool(
                        x.f32s("mean-pool: x")?,
                        batch,
                        seq,
                        d,
                        &lengths,
                        elems(&mut out),
                    )
                    .map_err(|e| Error::from(e).context("mean-pool"))?;
                self.push_f32(vec![batch, d], out)
            }
            Op::L2Normalize { x, eps } => {
                let x = self.tensor(x)?;
                let Some(&d) = x.shape().last() else {
                    return Err(Error::shape_mismatch(
                        "l2-normalize: x must have rank ≥ 1, got a scalar",
                    ));
                };
                let xd = x.f32s("l2-normalize: x")?;
                let mut out = self.output(xd.len())?;
                elems(&mut out).copy_from_slice(xd);
                self.kernels
                    .l2_normalize(elems(&mut out), d, eps)
                    .map_err(|e| Error::from(e).context("l2-normalize"))?;
                self.push_f32(x.shape().to_vec(), out)
            }
        }
    }

    fn dense(
        &mut self,
        x: TensorId,
        w: TensorId,
        b: Option<TensorId>,
        act: Activation,
    ) -> Result<TensorId> {
        let (x, w) = (self.tensor(x)?, self.tensor(w)?);
        let b = b.map(|b| self.tensor(b)).transpose()?;
        let tensorlet_kernels::DenseDims { m, k, n, out_shape } =
            tensorlet_kernels::dense_dims(x.shape(), w.shape(), b.as_ref().map(|b| b.shape()))?;
        let mut out = self.output(m * n)?;
        let xs = x.f32s("dense: x")?;
        // Weights run on their packed form, prepared once per weights set.
        let packed = match w.prepared() {
            Some(p) => p.dense(&self.kernels, &w, n, k, b.as_ref())?,
            None => None,
        };
        match packed {
            Some(p) => self.kernels.dense_packed(xs, m, &p, act, elems(&mut out)),
            None => {
                let bias = b.as_ref().map(|b| b.f32s("dense: bias")).transpose()?;
                let ws = w.f32s("dense: w")?;
                self.kernels
                    .dense(xs, m, k, ws, n, bias, act, elems(&mut out))
            }
        }
        .map_err(|e| Error::from(e).context("dense"))?;
        self.push_f32(out_shape, out)
    }

    fn conv2d(
        &mut self,
        x: TensorId,
        w: TensorId,
        b: Option<TensorId>,
        p: &Conv2dParams,
        act: Activation,
    ) -> Result<TensorId> {
        let (x, w) = (self.tensor(x)?, self.tensor(w)?);
        let b = b.map(|b| self.tensor(b)).transpose()?;
        let [xs, ws, out_shape] =
            tensorlet_kernels::conv2d_dims(x.shape(), w.shape(), b.as_ref().map(|b| b.shape()), p)?;
        let mut out = self.output(element_count(&out_shape)?)?;
        let xd = x.f32s("conv2d: x")?;
        let packed = match w.prepared() {
            Some(prep) => prep.conv2d(&self.kernels, &w, ws, b.as_ref(), p)?,
            None => None,
        };
        match packed {
            Some(pw) => self
                .kernels
                .conv2d_packed(xd, xs, &pw, act, elems(&mut out)),
            None => {
                let bias = b.as_ref().map(|b| b.f32s("conv2d: bias")).transpose()?;
                let wd = w.f32s("conv2d: w")?;
                self.kernels
                    .conv2d(xd, xs, wd, ws, bias, p, act, elems(&mut out))
            }
        }
        .map_err(|e| Error::from(e).context("conv2d"))?;
        self.push_f32(out_shape.to_vec(), out)
    }

    fn pool(&mut self, op: &str, x: TensorId, p: &Pool2dParams, f: PoolKernel) -> Result<TensorId> {
        let x = self.tensor(x)?;
        let what = format!("{op}: x");
        let xs = tensorlet_kernels::rank4(&what, x.shape())?;
        let out_shape =
            tensorlet_kernels::pool2d_out_shape(xs, p).map_err(|e| Error::from(e).context(op))?;
        let mut out = self.output(element_count(&out_shape)?)?;
        f(&self.kernels, x.f32s(&what)?, xs, p, elems(&mut out))
            .map_err(|e| Error::from(e).context(op))?;
        self.push_f32(out_shape.to_vec(), out)
    }

    fn elementwise(
        &mut self,
        op: &str,
        a: TensorId,
        b: TensorId,
        f: ElementwiseKernel,
    ) -> Result<TensorId> {
        let (a, b) = (self.tensor(a)?, self.tensor(b)?);
        let (ad, bd) = (
            a.f32s(format_args!("{op}: a"))?,
            b.f32s(format_args!("{op}: b"))?,
        );
        tensorlet_kernels::broadcast_dims(op, a.shape(), b.shape())?;
        let mut out = self.output(ad.len())?;
        f(&self.kernels, ad, bd, elems(&mut out)).map_err(|e| Error::from(e).context(op))?;
        self.push_f32(a.shape().to_vec(), out)
    }
}

/// A `Kernels` method of the shape of `add`/`mul`.
type ElementwiseKernel = fn(&Kernels, &[f32], &[f32], &mut [f32]) -> KernelResult;

/// A `Kernels` method of the shape of `max_pool2d`/`avg_pool2d`.
type PoolKernel = fn(&Kernels, &[f32], [usize; 4], &Pool2dParams, &mut [f32]) -> KernelResult;

type KernelResult = std::result::Result<(), tensorlet_kernels::KernelError>;

/// The elements of a fresh output buffer of [`NativeSession::output`] (not yet shared).
fn elems(buf: &mut Arc<[f32]>) -> &mut [f32] {
    Arc::get_mut(buf).expect("a fresh output buffer has one owner")
}

impl Session for NativeSession {
    fn put(&mut self, tensor: Tensor) -> Outcome<TensorId> {
        let bytes = tensor.byte_len();
        Ok(self.push(tensor, bytes)?)
    }

    fn weight(&mut self, _name: &str, tensor: &Tensor) -> Outcome<TensorId> {
        Ok(self.push(tensor.clone(), 0)?)
    }

    fn get(&mut self, id: TensorId) -> Outcome<Tensor> {
        Ok(self.tensor(id)?)
    }

    fn shape(&mut self, id: TensorId) -> Outcome<Vec<usize>> {
        Ok(self.tensors.get(id)?.shape().to_vec())
    }

    fn dtype(&mut self, id: TensorId) -> Outcome<DType> {
        Ok(self.tensors.get(id)?.dtype())
    }

    fn reshape(&mut self, id: TensorId, shape: &[usize]) -> Outcome<TensorId> {
        let t = self.tensors.get(id)?.reshape(shape)?;
        Ok(self.push(t, 0)?)
    }

    fn release(&mut self, id: TensorId) -> Outcome<()> {
        let tensor = self.tensors.remove(id)?;
        if let Some(buf) = tensor.into_unshared_f32s() {
            if self.spare.len() == SPARE_BUFFERS {
                self.spare.remove(0);
            }
            self.spare.push(buf);
        }
        Ok(())
    }

    fn run(&mut self, op: Op) -> Outcome<TensorId> {
        Ok(self.run_op(op)?)
    }

    fn limit_hit(&self) -> Option<LimitHit> {
        self.budget.hit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::HostMemory;

    fn session() -> NativeSession {
        pooled_session(&Arc::new(SparePool::new(1 << 20)))
    }

    fn pooled_session(pool: &Arc<SparePool>) -> NativeSession {
        let host = Arc::new(HostMemory::new(8 << 20));
        NativeSession {
            kernels: Kernels::detect(),
            tensors: Slab::with_capacity(32),
            budget: TensorBudget::new(host, 8 << 20),
            spare: Vec::new(),
            pool: pool.clone(),
        }
    }

    fn put(s: &mut NativeSession, shape: &[usize], data: &[f32]) -> TensorId {
        s.put(Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap())
            .unwrap()
    }

    /// The elements of `id` and where they live.
    fn read(s: &mut NativeSession, id: TensorId) -> (Vec<f32>, *const f32) {
        let t = s.get(id).unwrap();
        let data = t.f32s("test").unwrap();
        (data.to_vec(), data.as_ptr())
    }

    /// A released output's buffer serves the next output of its length, and the op
    /// writing there leaves nothing of what it held: ReLU of negatives and a dense layer
    /// (hand-computed) over buffers full of earlier sums.
    #[test]
    fn a_released_buffer_is_reused_and_written_over() {
        let mut s = session();
        let x = put(&mut s, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let sum = s.run(Op::Add { a: x, b: x }).unwrap();
        let (held, at) = read(&mut s, sum);
        assert_eq!(held, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        s.release(sum).unwrap();
        let neg = put(&mut s, &[2, 3], &[-1.0, -2.0, -0.5, -3.0, -4.0, -5.0]);
        let y = s
            .run(Op::Activate {
                x: neg,
                act: Activation::Relu,
            })
            .unwrap();
        assert_eq!(read(&mut s, y), (vec![0.0; 6], at));

        // A 2 × 2 buffer of sums, released, then x [2, 3] · wᵀ (w [2, 3]) + b into it.
        let small = put(&mut s, &[2, 2], &[7.0, 7.0, 7.0, 7.0]);
        let sum = s.run(Op::Add { a: small, b: small }).unwrap();
        let (_, at) = read(&mut s, sum);
        s.release(sum).unwrap();
        let w = put(&mut s, &[2, 3], &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5]);
        let b = put(&mut s, &[2], &[0.25, -1.0]);
        let d = s
            .run(Op::Dense {
                x,
                w,
                b: Some(b),
                act: Activation::None,
            })
            .unwrap();
        // Row 1: 1 - 3 + 0.25, (1 + 2 + 3)/2 - 1; row 2: 4 - 6 + 0.25, (4 + 5 + 6)/2 - 1.
        assert_eq!(read(&mut s, d), (vec![-1.75, 2.0, -1.75, 6.5], at));

        // A buffer another tensor still shares is never reused.
        let shared = s.run(Op::Add { a: small, b: small }).unwrap();
        let (_, shared_at) = read(&mut s, shared);
        let alias = s.reshape(shared, &[4]).unwrap();
        s.release(shared).unwrap();
        let again = s.run(Op::Add { a: small, b: small }).unwrap();
        assert_ne!(read(&mut s, again).1, shared_at);
        assert_eq!(read(&mut s, alias).0, [14.0; 4]);
    }

    /// A large buffer a request held when it ended serves a later request's output of its
    /// length, written over (a ReLU of negatives over an earlier request's sums); small
    /// buffers, buffers the caller still holds and buffers past the pool's size are not
    /// kept.
    #[test]
    fn a_finished_requests_large_buffers_serve_the_next_request() {
        let n = POOLED_BYTES / 4;
        let pool = Arc::new(SparePool::new(4 * POOLED_BYTES));
        let mut s = pooled_session(&pool);
        let ones = put(&mut s, &[n], &vec![1.0; n]);
        let sum = s.run(Op::Add { a: ones, b: ones }).unwrap();
        let (held, at) = read(&mut s, sum);
        assert_eq!(held, vec![2.0; n]);
        let small = put(&mut s, &[4], &[1.0; 4]);
        let _small_sum = s.run(Op::Add { a: small, b: small }).unwrap();
        let kept_by_caller = s.run(Op::Add { a: sum, b: sum }).unwrap();
        let result = s.get(kept_by_caller).unwrap();
        drop(s);
        // `sum`'s buffer is kept; `ones` (the caller's put is unshared too) as well.
        assert_eq!(pool.bytes(), 2 * POOLED_BYTES);

        let mut s = pooled_session(&pool);
        let neg = put(&mut s, &[n], &vec![-3.0; n]);
        let y = s
            .run(Op::Activate {
                x: neg,
                act: Activation::Relu,
            })
            .unwrap();
        let (relu, y_at) = read(&mut s, y);
        assert_eq!(relu, vec![0.0; n]);
        let (_, other_at) = read(&mut s, neg);
        let reused = [y_at, other_at];
        assert!(reused.contains(&at), "a kept buffer was not reused");
        assert_eq!(pool.bytes(), POOLED_BYTES);
        assert_eq!(result.f32s("result").unwrap(), vec![4.0; n].as_slice());
        drop(s);

        // A pool smaller than a buffer keeps nothing; past its size it drops the oldest.
        let tiny = Arc::new(SparePool::new(POOLED_BYTES - 4));
        let mut s = pooled_session(&tiny);
        let _ = put(&mut s, &[n], &vec![1.0; n]);
        drop(s);
        assert_eq!(tiny.bytes(), 0);
        let mut s = pooled_session(&pool);
        for _ in 0..6 {
            let _ = put(&mut s, &[n], &vec![1.0; n]);
        }
        drop(s);
        assert_eq!(pool.bytes(), 4 * POOLED_BYTES);
    }
}
