//! The wasm backend: the kernels component (`guest/kernels-component`, world
//! `kernel-provider`) runs a function's ops inside the sandbox instead of the native plugin.
//!
//! The component is compiled once per [`crate::Runtime`] into an `InstancePre` of the
//! `kernel-provider` world's `bindgen!` ([`crate::wit::provider`]), so every call below is
//! type-checked against the WIT. Each request's session instantiates it in a store of its
//! own, with the request's memory limit (per linear memory) and epoch deadline; the
//! function's tensor ids map to the component's `tensor` resources. Request inputs are
//! uploaded with `tensor.from-f32`/`from-u8`, outputs read back with `shape`, `dtype`
//! and `to-f32`/`to-u8`, and a weight is uploaded on its first `weights.get` in the
//! request (later `get`s share that upload). The function cannot tell the backends apart.

use std::collections::HashMap;

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{Backend, Failure, KernelBackend, Op, Outcome, Session, SessionLimits, Slab, TensorId};
use crate::error::{Error, Result};
use crate::limits::{LimitHit, Limiter};
use crate::tensor::{DType, Tensor, TensorData};
use crate::wit::provider::{KernelProviderPre, kops, ktensors};

/// The kernels component, built from `guest/kernels-component` by `build.rs`.
#[cfg(feature = "wasm-kernels")]
pub(crate) const KERNELS_COMPONENT: Option<&[u8]> =
    Some(include_bytes!(env!("TENSORLET_KERNELS_COMPONENT_WASM")));
/// Built without the `wasm-kernels` feature: no kernels component.
#[cfg(not(feature = "wasm-kernels"))]
pub(crate) const KERNELS_COMPONENT: Option<&[u8]> = None;

/// Store data of a kernels instance.
pub(crate) struct KernelState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
}

impl WasiView for KernelState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The kernels component, compiled and linked once per runtime.
pub(crate) struct WasmBackend {
    engine: Engine,
    pre: KernelProviderPre<KernelState>,
}

impl WasmBackend {
    /// Links the compiled kernels `component` against WASI.
    pub(crate) fn new(engine: &Engine, component: &Component) -> Result<Self> {
        let internal = |what: &str, e: wasmtime::Error| {
            Error::internal(format!("kernels component: {what}: {e:#}"))
        };
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| internal("linker", e))?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| internal("link", e))?;
        let pre = KernelProviderPre::new(pre).map_err(|e| internal("exports", e))?;
        Ok(WasmBackend {
            engine: engine.clone(),
            pre,
        })
    }

    /// A session with its own store, memory limit and deadline.
    pub(crate) fn open(&self, memory_bytes: usize, epoch_ticks: u64) -> Outcome<WasmSession> {
        let state = KernelState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_bytes),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(epoch_ticks);
        store.epoch_deadline_trap();
        let provider = self.pre.instantiate(&mut store).map_err(Failure::Trap)?;
        Ok(WasmSession {
            tensors: provider.tensorlet_nn_tensors().clone(),
            ops: provider.tensorlet_nn_ops().clone(),
            store,
            handles: Slab::default(),
            weights: HashMap::new(),
        })
    }
}

impl Backend for WasmBackend {
    fn kind(&self) -> KernelBackend {
        KernelBackend::Wasm
    }

    fn session(&self, limits: SessionLimits) -> Outcome<Box<dyn Session>> {
        Ok(Box::new(
            self.open(limits.memory_bytes, limits.epoch_ticks)?,
        ))
    }
}

/// A function's handle: one of the kernels instance's tensors.
#[derive(Clone, Copy)]
struct Handle {
    resource: ResourceAny,
    /// Whether dropping the handle drops the resource (false for shared weight uploads).
    owned: bool,
}

/// One request's kernels instance and the handles into it.
pub(crate) struct WasmSession {
    store: Store<KernelState>,
    tensors: ktensors::Guest,
    ops: kops::Guest,
    handles: Slab<Handle>,
    /// Weights uploaded in this request, by name.
    weights: HashMap<String, ResourceAny>,
}

/// A call into the kernels instance: a trap aborts the request, a WIT error is returned.
fn called<T>(r: wasmtime::Result<std::result::Result<T, ktensors::Error>>) -> Outcome<T> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Error(e.into())),
        Err(trap) => Err(Failure::Trap(trap)),
    }
}

/// A wasmtime call without a WIT error.
fn trapped<T>(r: wasmtime::Result<T>) -> Outcome<T> {
    r.map_err(Failure::Trap)
}

fn u32_pair(what: &str, (a, b): (usize, usize)) -> Result<(u32, u32)> {
    match (u32::try_from(a), u32::try_from(b)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(Error::invalid_input(format!(
            "{what} ({a}, {b}) does not fit in u32"
        ))),
    }
}

fn conv_params(p: &tensorlet_kernels::Conv2dParams) -> Result<kops::Conv2dParams> {
    Ok(kops::Conv2dParams {
        stride: u32_pair("stride", p.stride)?,
        padding: u32_pair("padding", p.padding)?,
        dilation: u32_pair("dilation", p.dilation)?,
        groups: u32::try_from(p.groups).map_err(|_| {
            Error::invalid_input(format!("groups {} does not fit in u32", p.groups))
        })?,
    })
}

fn pool_params(p: &tensorlet_kernels::Pool2dParams) -> Result<kops::Pool2dParams> {
    Ok(kops::Pool2dParams {
        kernel: u32_pair("kernel", p.kernel)?,
        stride: u32_pair("stride", p.stride)?,
        padding: u32_pair("padding", p.padding)?,
    })
}

impl WasmSession {
    fn resource(&self, id: TensorId) -> Result<ResourceAny> {
        Ok(self.handles.get(id)?.resource)
    }

    fn hand_out(&mut self, resource: ResourceAny, owned: bool) -> Outcome<TensorId> {
        Ok(self.handles.insert(Handle { resource, owned })?)
    }

    /// Copies `tensor` into the kernels instance.
    fn upload(&mut self, tensor: &Tensor) -> Outcome<ResourceAny> {
        let shape = tensor
            .shape()
            .iter()
            .map(|&d| u32::try_from(d))
            .collect::<std::result::Result<Vec<u32>, _>>()
            .map_err(|_| {
                Error::limit_exceeded(format!(
                    "tensor of shape {:?} has a dimension over u32::MAX",
                    tensor.shape()
                ))
            })?;
        let t = self.tensors.tensor();
        called(match tensor.data() {
            TensorData::F32(d) => t.call_from_f32(&mut self.store, &shape, d),
            TensorData::U8(d) => t.call_from_u8(&mut self.store, &shape, d),
            TensorData::Bytes(d) => t.call_from_bytes(&mut self.store, &shape, d),
        })
    }

    fn run_op(&mut self, op: Op) -> Outcome<TensorId> {
        let ops = &self.ops;
        let handles = &self.handles;
        let r = |id| handles.get(id).map(|h| h.resource);
        let store = &mut self.store;
        let result = match op {
            Op::Dense { x, w, b, act } => {
                let b = b.map(r).transpose()?;
                ops.call_dense(store, r(x)?, r(w)?, b, act.into())
            }
            Op::Conv2d {
                x,
                w,
                b,
                params,
                act,
            } => {
                let b = b.map(r).transpose()?;
                let p = conv_params(&params)?;
                ops.call_conv2d(store, r(x)?, r(w)?, b, p, act.into())
            }
            Op::MaxPool2d { x, params } => ops.call_max_pool2d(store, r(x)?, pool_params(&params)?),
            Op::AvgPool2d { x, params } => ops.call_avg_pool2d(store, r(x)?, pool_params(&params)?),
            Op::GlobalAvgPool { x } => ops.call_global_avg_pool(store, r(x)?),
            Op::Activate { x, act } => ops.call_activate(store, r(x)?, act.into()),
            Op::Softmax { x } => ops.call_softmax(store, r(x)?),
            Op::Add { a, b } => ops.call_add(store, r(a)?, r(b)?),
            Op::Mul { a, b } => ops.call_mul(store, r(a)?, r(b)?),
            Op::LayerNorm {
                x,
                gamma,
                beta,
                eps,
            } => ops.call_layer_norm(store, r(x)?, r(gamma)?, r(beta)?, eps),
            Op::Embedding { table, ids } => ops.call_embedding(store, r(table)?, &ids),
            Op::Attention {
                q,
                k,
                v,
                heads,
                lengths,
            } => ops.call_attention(store, r(q)?, r(k)?, r(v)?, heads, &lengths),
            Op::MeanPool { x, lengths } => ops.call_mean_pool(store, r(x)?, &lengths),
            Op::L2Normalize { x, eps } => ops.call_l2_normalize(store, r(x)?, eps),
        };
        let out = called(result)?;
        self.hand_out(out, true)
    }
}

impl Session for WasmSession {
    fn put(&mut self, tensor: Tensor) -> Outcome<TensorId> {
        let r = self.upload(&tensor)?;
        self.hand_out(r, true)
    }

    fn weight(&mut self, name: &str, tensor: &Tensor) -> Outcome<TensorId> {
        let r = match self.weights.get(name) {
            Some(&r) => r,
            None => {
                let r = self.upload(tensor).map_err(|f| match f {
                    Failure::Error(e) => Failure::Error(e.context(format!("weight `{name}`"))),
                    trap => trap,
                })?;
                self.weights.insert(name.to_string(), r);
                r
            }
        };
        self.hand_out(r, false)
    }

    fn get(&mut self, id: TensorId) -> Outcome<Tensor> {
        let r = self.resource(id)?;
        let shape = self.shape(id)?;
        let t = self.tensors.tensor();
        let tensor = match trapped(t.call_dtype(&mut self.store, r))? {
            ktensors::Dtype::U8 => {
                Tensor::from_u8(shape, called(t.call_to_u8(&mut self.store, r))?)
            }
            ktensors::Dtype::Bytes => {
                Tensor::from_bytes(shape, called(t.call_to_bytes(&mut self.store, r))?)
            }
            _ => Tensor::from_f32(shape, called(t.call_to_f32(&mut self.store, r))?),
        };
        Ok(tensor?)
    }

    fn shape(&mut self, id: TensorId) -> Outcome<Vec<usize>> {
        let r = self.resource(id)?;
        let shape = trapped(self.tensors.tensor().call_shape(&mut self.store, r))?;
        Ok(shape.into_iter().map(|d| d as usize).collect())
    }

    fn dtype(&mut self, id: TensorId) -> Outcome<DType> {
        let r = self.resource(id)?;
        let d = trapped(self.tensors.tensor().call_dtype(&mut self.store, r))?;
        Ok(match d {
            ktensors::Dtype::F32 => DType::F32,
            ktensors::Dtype::F16 => DType::F16,
            ktensors::Dtype::Bf16 => DType::BF16,
            ktensors::Dtype::U8 => DType::U8,
            ktensors::Dtype::Bytes => DType::Bytes,
        })
    }

    fn reshape(&mut self, id: TensorId, shape: &[usize]) -> Outcome<TensorId> {
        let r = self.resource(id)?;
        let shape = shape
            .iter()
            .map(|&d| u32::try_from(d))
            .collect::<std::result::Result<Vec<u32>, _>>()
            .map_err(|_| Error::invalid_input(format!("shape {shape:?} does not fit in u32")))?;
        let out = called(
            self.tensors
                .tensor()
                .call_reshape(&mut self.store, r, &shape),
        )?;
        self.hand_out(out, true)
    }

    fn release(&mut self, id: TensorId) -> Outcome<()> {
        let h = self.handles.remove(id)?;
        if h.owned {
            trapped(h.resource.resource_drop(&mut self.store))?;
        }
        Ok(())
    }

    fn run(&mut self, op: Op) -> Outcome<TensorId> {
        self.run_op(op)
    }

    fn limit_hit(&self) -> Option<LimitHit> {
        self.store.data().limiter.hit()
    }
}

/// The kernels component in a store of its own, for calling its ops directly on host
/// tensors: what the conformance tests and the in-wasm benchmarks use. Obtain one with
/// [`crate::Runtime::kernel_session`]; it has the runtime's deadline (counted from its
/// creation) and memory limit.
///
/// Tensors uploaded to or produced in the session are [`SessionTensor`] handles; they live
/// until [`KernelSession::release`] or until the session is dropped.
pub struct KernelSession {
    session: WasmSession,
    _permit: crate::limits::Permit,
}

/// A tensor inside a [`KernelSession`]'s kernels instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTensor(TensorId);

impl KernelSession {
    pub(crate) fn new(session: WasmSession, permit: crate::limits::Permit) -> Self {
        KernelSession {
            session,
            _permit: permit,
        }
    }

    /// A session failure as a typed error.
    fn check<T>(&self, r: Outcome<T>) -> Result<T> {
        r.map_err(|f| match f {
            Failure::Error(e) => e,
            Failure::Trap(trap) => crate::runtime::classify_trap(
                "the kernels component",
                trap,
                self.session.limit_hit(),
                None,
                "",
            ),
        })
    }

    fn op(&mut self, op: Op) -> Result<SessionTensor> {
        let r = self.session.run(op);
        self.check(r).map(SessionTensor)
    }

    /// Copies `tensor` into the kernels instance.
    pub fn upload(&mut self, tensor: &Tensor) -> Result<SessionTensor> {
        let r = self.session.put(tensor.clone());
        self.check(r).map(SessionTensor)
    }

    /// Copies the tensor behind `t` back into the host.
    pub fn download(&mut self, t: SessionTensor) -> Result<Tensor> {
        let r = self.session.get(t.0);
        self.check(r)
    }

    /// Frees the tensor behind `t` in the kernels instance.
    pub fn release(&mut self, t: SessionTensor) -> Result<()> {
        let r = self.session.release(t.0);
        self.check(r)
    }

    /// `ops.dense`: act(x · wᵀ + b).
    pub fn dense(
        &mut self,
        x: SessionTensor,
        w: SessionTensor,
        b: Option<SessionTensor>,
        act: tensorlet_kernels::Activation,
    ) -> Result<SessionTensor> {
        self.op(Op::Dense {
            x: x.0,
            w: w.0,
            b: b.map(|b| b.0),
            act,
        })
    }

    /// `ops.conv2d` over NCHW `x` with `w` [oc, c/groups, kh, kw].
    pub fn conv2d(
        &mut self,
        x: SessionTensor,
        w: SessionTensor,
        b: Option<SessionTensor>,
        p: &tensorlet_kernels::Conv2dParams,
        act: tensorlet_kernels::Activation,
    ) -> Result<SessionTensor> {
        self.op(Op::Conv2d {
            x: x.0,
            w: w.0,
            b: b.map(|b| b.0),
            params: *p,
            act,
        })
    }

    /// `ops.max-pool2d` over NCHW `x`.
    pub fn max_pool2d(
        &mut self,
        x: SessionTensor,
        p: &tensorlet_kernels::Pool2dParams,
    ) -> Result<SessionTensor> {
        self.op(Op::MaxPool2d { x: x.0, params: *p })
    }

    /// `ops.avg-pool2d` over NCHW `x`.
    pub fn avg_pool2d(
        &mut self,
        x: SessionTensor,
        p: &tensorlet_kernels::Pool2dParams,
    ) -> Result<SessionTensor> {
        self.op(Op::AvgPool2d { x: x.0, params: *p })
    }

    /// `ops.global-avg-pool` over NCHW `x`.
    pub fn global_avg_pool(&mut self, x: SessionTensor) -> Result<SessionTensor> {
        self.op(Op::GlobalAvgPool { x: x.0 })
    }

    /// `ops.activate`.
    pub fn activate(
        &mut self,
        x: SessionTensor,
        act: tensorlet_kernels::Activation,
    ) -> Result<SessionTensor> {
        self.op(Op::Activate { x: x.0, act })
    }

    /// `ops.softmax` over the last dimension.
    pub fn softmax(&mut self, x: SessionTensor) -> Result<SessionTensor> {
        self.op(Op::Softmax { x: x.0 })
    }

    /// `ops.add`, broadcasting `b` over `a`'s leading dimensions.
    pub fn add(&mut self, a: SessionTensor, b: SessionTensor) -> Result<SessionTensor> {
        self.op(Op::Add { a: a.0, b: b.0 })
    }

    /// `ops.mul`, broadcasting `b` over `a`'s leading dimensions.
    pub fn mul(&mut self, a: SessionTensor, b: SessionTensor) -> Result<SessionTensor> {
        self.op(Op::Mul { a: a.0, b: b.0 })
    }
}
