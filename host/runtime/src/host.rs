//! The host side of the WIT imports: tensors, this request's weights, and the kernels.
//!
//! [`State`] is the per-request store data (fresh for every request): the WASI context
//! and its resource table, the limiter, the bound weights set, and the request's kernel
//! [`Session`]. The generated `Host` traits are implemented here once, for every backend:
//! each call turns the function's handles into session ids, calls the session, and turns
//! the result back into a handle or a WIT error. A trap inside the backend (the kernels
//! component's deadline or memory limit) is kept and re-raised in the function's store.

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::backend::{Failure, Op, Session, TensorHandle, TensorId};
use crate::error::{Error, Result};
use crate::limits::{LimitHit, Limiter};
use crate::tensor::Tensor;
use crate::weights::Weights;
use crate::wit::tensorlet::nn::{ops, tensors, weights};
use crate::wit::{Activation, Conv2dParams, Dtype, Pool2dParams, TensorInfo, WitError};

/// Bytes a function may leave in its captured stderr (panic messages and logs).
const STDERR_CAPACITY: usize = 16 * 1024;

/// Store data for one request.
pub(crate) struct State {
    table: ResourceTable,
    /// The WASI context, built on the function's first WASI call (most requests make
    /// none: a function that returns without printing never needs one).
    wasi: Option<WasiCtx>,
    /// Where the function's stderr goes, made with the WASI context.
    stderr: Option<MemoryOutputPipe>,
    pub(crate) limiter: Limiter,
    weights: Arc<Weights>,
    session: Box<dyn Session>,
    /// A trap inside the backend, to re-raise when the failed call returns.
    trap: Option<wasmtime::Error>,
}

impl State {
    /// Store data binding `weights` and `session`, with `memory_bytes` per linear memory.
    pub(crate) fn new(
        weights: Arc<Weights>,
        session: Box<dyn Session>,
        memory_bytes: usize,
    ) -> Self {
        State {
            table: ResourceTable::new(),
            wasi: None,
            stderr: None,
            limiter: Limiter::new(memory_bytes),
            weights,
            session,
            trap: None,
        }
    }

    /// What the function wrote to stderr (e.g. a panic message), lossily decoded.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.as_ref().map_or_else(String::new, |s| {
            String::from_utf8_lossy(&s.contents()).trim().to_string()
        })
    }

    /// The first limit the request ran into: its store's, or its session's.
    pub(crate) fn limit_hit(&self) -> Option<LimitHit> {
        self.limiter.hit().or_else(|| self.session.limit_hit())
    }

    /// The request's kernel session.
    pub(crate) fn session(&mut self) -> &mut dyn Session {
        &mut *self.session
    }

    /// A session failure as the error the function sees; a trap is kept for re-raising.
    fn failed(&mut self, f: Failure) -> Error {
        match f {
            Failure::Error(e) => e,
            Failure::Trap(trap) => {
                self.trap.get_or_insert(trap);
                Error::internal("the kernel backend trapped")
            }
        }
    }

    /// A session call that returns a new tensor, as a handle for the function.
    fn handle(&mut self, r: crate::backend::Outcome<TensorId>) -> Result<Resource<TensorHandle>> {
        r.map(Resource::new_own).map_err(|f| self.failed(f))
    }

    /// A session call that returns no error variant: a failure traps.
    fn infallible<T>(&mut self, r: crate::backend::Outcome<T>) -> wasmtime::Result<T> {
        r.map_err(|f| match f {
            Failure::Error(e) => wasmtime::Error::new(e),
            Failure::Trap(trap) => trap,
        })
    }

    fn op(&mut self, op: Op) -> Result<Resource<TensorHandle>> {
        let r = self.session.run(op);
        self.handle(r)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let stderr = &mut self.stderr;
        let ctx = self.wasi.get_or_insert_with(|| {
            let pipe = MemoryOutputPipe::new(STDERR_CAPACITY);
            *stderr = Some(pipe.clone());
            WasiCtx::builder().stderr(pipe).build()
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

fn to_u32s(shape: &[usize]) -> Vec<u32> {
    shape.iter().map(|&d| d as u32).collect()
}

fn to_usizes(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

fn pair((a, b): (u32, u32)) -> (usize, usize) {
    (a as usize, b as usize)
}

fn pool_params(p: Pool2dParams) -> tensorlet_kernels::Pool2dParams {
    tensorlet_kernels::Pool2dParams {
        kernel: pair(p.kernel),
        stride: pair(p.stride),
        padding: pair(p.padding),
    }
}

fn id<T: 'static>(h: &Resource<T>) -> TensorId {
    h.rep()
}

impl tensors::Host for State {
    fn convert_error(&mut self, err: Error) -> wasmtime::Result<WitError> {
        match self.trap.take() {
            Some(trap) => Err(trap),
            None => Ok(err.into()),
        }
    }
}

impl tensors::HostTensor for State {
    fn from_f32(&mut self, shape: Vec<u32>, data: Vec<f32>) -> Result<Resource<TensorHandle>> {
        let t =
            Tensor::from_f32(to_usizes(&shape), data).map_err(|e| e.context("tensor.from-f32"))?;
        let r = self.session.put(t);
        self.handle(r)
    }

    fn from_u8(&mut self, shape: Vec<u32>, data: Vec<u8>) -> Result<Resource<TensorHandle>> {
        let t =
            Tensor::from_u8(to_usizes(&shape), data).map_err(|e| e.context("tensor.from-u8"))?;
        let r = self.session.put(t);
        self.handle(r)
    }

    fn shape(&mut self, this: Resource<TensorHandle>) -> wasmtime::Result<Vec<u32>> {
        let r = self.session.shape(id(&this));
        Ok(to_u32s(&self.infallible(r)?))
    }

    fn dtype(&mut self, this: Resource<TensorHandle>) -> wasmtime::Result<Dtype> {
        let r = self.session.dtype(id(&this));
        Ok(self.infallible(r)?.into())
    }

    fn to_f32(&mut self, this: Resource<TensorHandle>) -> Result<Vec<f32>> {
        let r = self.session.get(id(&this));
        let t = r.map_err(|f| self.failed(f))?;
        Ok(t.f32s("tensor.to-f32")?.to_vec())
    }

    fn to_u8(&mut self, this: Resource<TensorHandle>) -> Result<Vec<u8>> {
        let r = self.session.get(id(&this));
        let t = r.map_err(|f| self.failed(f))?;
        Ok(t.u8s("tensor.to-u8")?.to_vec())
    }

    fn from_bytes(
        &mut self,
        shape: Vec<u32>,
        data: Vec<Vec<u8>>,
    ) -> Result<Resource<TensorHandle>> {
        let t = Tensor::from_bytes(to_usizes(&shape), data)
            .map_err(|e| e.context("tensor.from-bytes"))?;
        let r = self.session.put(t);
        self.handle(r)
    }

    fn to_bytes(&mut self, this: Resource<TensorHandle>) -> Result<Vec<Vec<u8>>> {
        let r = self.session.get(id(&this));
        let t = r.map_err(|f| self.failed(f))?;
        Ok(t.byte_strings("tensor.to-bytes")?.to_vec())
    }

    fn reshape(
        &mut self,
        this: Resource<TensorHandle>,
        shape: Vec<u32>,
    ) -> Result<Resource<TensorHandle>> {
        let r = self.session.reshape(id(&this), &to_usizes(&shape));
        self.handle(r)
    }

    fn drop(&mut self, rep: Resource<TensorHandle>) -> wasmtime::Result<()> {
        let r = self.session.release(id(&rep));
        self.infallible(r)
    }
}

impl weights::Host for State {
    fn entries(&mut self) -> wasmtime::Result<Vec<TensorInfo>> {
        Ok(self
            .weights
            .iter()
            .map(|(name, w)| TensorInfo {
                name: name.to_string(),
                shape: to_u32s(w.tensor.shape()),
                dtype: w.stored.into(),
            })
            .collect())
    }

    fn get(&mut self, name: String) -> Result<Resource<TensorHandle>> {
        let weights = self.weights.clone();
        let weight = weights.get(&name).ok_or_else(|| {
            Error::not_found(format!(
                "weight `{name}` is not in the weights set `{}`",
                weights.source()
            ))
        })?;
        let r = self.session.weight(&name, &weight.tensor);
        self.handle(r)
    }

    fn info(&mut self, name: String) -> wasmtime::Result<Option<TensorInfo>> {
        Ok(self.weights.get(&name).map(|w| TensorInfo {
            name,
            shape: to_u32s(w.tensor.shape()),
            dtype: w.stored.into(),
        }))
    }
}

impl ops::Host for State {
    fn dense(
        &mut self,
        x: Resource<TensorHandle>,
        w: Resource<TensorHandle>,
        b: Option<Resource<TensorHandle>>,
        act: Activation,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::Dense {
            x: id(&x),
            w: id(&w),
            b: b.as_ref().map(id),
            act: act.into(),
        })
    }

    fn conv2d(
        &mut self,
        x: Resource<TensorHandle>,
        w: Resource<TensorHandle>,
        b: Option<Resource<TensorHandle>>,
        params: Conv2dParams,
        act: Activation,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::Conv2d {
            x: id(&x),
            w: id(&w),
            b: b.as_ref().map(id),
            params: tensorlet_kernels::Conv2dParams {
                stride: pair(params.stride),
                padding: pair(params.padding),
                dilation: pair(params.dilation),
                groups: params.groups as usize,
            },
            act: act.into(),
        })
    }

    fn max_pool2d(
        &mut self,
        x: Resource<TensorHandle>,
        params: Pool2dParams,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::MaxPool2d {
            x: id(&x),
            params: pool_params(params),
        })
    }

    fn avg_pool2d(
        &mut self,
        x: Resource<TensorHandle>,
        params: Pool2dParams,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::AvgPool2d {
            x: id(&x),
            params: pool_params(params),
        })
    }

    fn global_avg_pool(&mut self, x: Resource<TensorHandle>) -> Result<Resource<TensorHandle>> {
        self.op(Op::GlobalAvgPool { x: id(&x) })
    }

    fn activate(
        &mut self,
        x: Resource<TensorHandle>,
        act: Activation,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::Activate {
            x: id(&x),
            act: act.into(),
        })
    }

    fn softmax(&mut self, x: Resource<TensorHandle>) -> Result<Resource<TensorHandle>> {
        self.op(Op::Softmax { x: id(&x) })
    }

    fn add(
        &mut self,
        a: Resource<TensorHandle>,
        b: Resource<TensorHandle>,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::Add {
            a: id(&a),
            b: id(&b),
        })
    }

    fn mul(
        &mut self,
        a: Resource<TensorHandle>,
        b: Resource<TensorHandle>,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::Mul {
            a: id(&a),
            b: id(&b),
        })
    }

    fn layer_norm(
        &mut self,
        x: Resource<TensorHandle>,
        gamma: Resource<TensorHandle>,
        beta: Resource<TensorHandle>,
        eps: f32,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::LayerNorm {
            x: id(&x),
            gamma: id(&gamma),
            beta: id(&beta),
            eps,
        })
    }

    fn embedding(
        &mut self,
        table: Resource<TensorHandle>,
        ids: Vec<u32>,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::Embedding {
            table: id(&table),
            ids,
        })
    }

    fn attention(
        &mut self,
        q: Resource<TensorHandle>,
        k: Resource<TensorHandle>,
        v: Resource<TensorHandle>,
        heads: u32,
        lengths: Vec<u32>,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::Attention {
            q: id(&q),
            k: id(&k),
            v: id(&v),
            heads,
            lengths,
        })
    }

    fn mean_pool(
        &mut self,
        x: Resource<TensorHandle>,
        lengths: Vec<u32>,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::MeanPool { x: id(&x), lengths })
    }

    fn l2_normalize(
        &mut self,
        x: Resource<TensorHandle>,
        eps: f32,
    ) -> Result<Resource<TensorHandle>> {
        self.op(Op::L2Normalize { x: id(&x), eps })
    }
}
