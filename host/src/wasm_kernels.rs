//! The `wasm` kernel backend: the kernels component (`guest/kernels-component`, world
//! `kernel-provider`) runs a function's ops inside the sandbox instead of the native plugin.
//!
//! With [`KernelBackend::Wasm`] every request's store holds two instances: the function,
//! and the kernels component, instantiated first from an `InstancePre` compiled once per
//! [`crate::Runtime`]. The function still imports the host's `tensors`, `weights` and `ops`
//! (it cannot tell the backends apart), but the linker defines those imports with the
//! functions in this module, which have the store at hand and forward every call to the
//! kernels instance:
//!
//! - Each of the function's `tensor` handles is an entry of the store's resource table
//!   holding a [`KernelTensor`] (the kernels instance's own `tensor` resource) instead of a
//!   host [`Tensor`]; the WIT resource type stays `Tensor`, so the function's component type
//!   is the same under both backends.
//! - Request inputs are uploaded with the component's `tensor.from-f32`/`from-u8` before
//!   `infer`; outputs are read back with `shape`, `dtype` and `to-f32`/`to-u8` after it.
//! - `weights.get` uploads a weight on its first use in the request; later `get`s of the
//!   same name share that upload (cached per store, dropped with it).
//!
//! Limits hold unchanged: the kernels instance's linear memory is capped by the same
//! per-memory limit as the function's (so tensors are bounded by it instead of by the host
//! tensor budget), and the epoch deadline interrupts kernel loops like any other wasm.

use std::collections::HashMap;

use wasmtime::component::{Component, Linker, Resource, ResourceAny, ResourceType};
use wasmtime::{AsContextMut, Engine, Store, StoreContextMut};

use crate::error::{Error, Result};
use crate::host::State;
use crate::tensor::Tensor;
use crate::wit::provider::{KernelProvider, KernelProviderPre, kops, ktensors};
use crate::wit::tensorlet::nn::weights::Host as WeightsHost;
use crate::wit::{Activation, Conv2dParams, Dtype, Pool2dParams, TensorInfo, WitError};

/// The kernels component, built from `guest/kernels-component` by `host/build.rs`.
pub(crate) const KERNELS_COMPONENT: &[u8] =
    include_bytes!(env!("TENSORLET_KERNELS_COMPONENT_WASM"));

/// The WIT interfaces this module defines in wasm mode.
const TENSORS: &str = "tensorlet:nn/tensors@0.1.0";
const WEIGHTS: &str = "tensorlet:nn/weights@0.1.0";
const OPS: &str = "tensorlet:nn/ops@0.1.0";

/// Which kernels run a function's `ops` calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KernelBackend {
    /// The native plugin: `tensorlet-kernels` compiled into the host (AVX-512, AVX2, NEON).
    #[default]
    Native,
    /// The kernels component, instantiated in each request's store beside the function
    /// (wasm simd128 + relaxed-simd): for hosts without a native plugin, and to check one.
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

/// Compiles the kernels component and pre-instantiates it against WASI: once per runtime.
pub(crate) fn compile(engine: &Engine) -> Result<KernelProviderPre<State>> {
    let internal = |what: &str, e: wasmtime::Error| {
        Error::internal(format!("kernels component: {what}: {e:#}"))
    };
    let component =
        Component::new(engine, KERNELS_COMPONENT).map_err(|e| internal("compile", e))?;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| internal("linker", e))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| internal("link", e))?;
    KernelProviderPre::new(pre).map_err(|e| internal("exports", e))
}

/// The kernels instance of one store, and the weights it has uploaded.
pub(crate) struct KernelInstance {
    tensors: ktensors::Guest,
    ops: kops::Guest,
    weights: HashMap<String, ResourceAny>,
}

impl KernelInstance {
    /// Instantiates the kernels component in `store`.
    pub(crate) fn instantiate(
        pre: &KernelProviderPre<State>,
        store: impl AsContextMut<Data = State>,
    ) -> wasmtime::Result<Self> {
        let provider: KernelProvider = pre.instantiate(store)?;
        Ok(KernelInstance {
            tensors: provider.tensorlet_nn_tensors().clone(),
            ops: provider.tensorlet_nn_ops().clone(),
            weights: HashMap::new(),
        })
    }
}

/// A function's tensor handle in wasm mode: a tensor of the kernels instance.
pub(crate) struct KernelTensor {
    resource: ResourceAny,
    /// Whether dropping the handle drops the resource (false for cached weights).
    owned: bool,
}

type Handle = Resource<Tensor>;
/// What a forwarded call returns to the function: a trap, or a WIT result.
type Forwarded<T> = wasmtime::Result<(std::result::Result<T, WitError>,)>;

/// The store's kernels instance's `tensors` and `ops` exports (cheap clones).
fn guests(store: &StoreContextMut<'_, State>) -> wasmtime::Result<(ktensors::Guest, kops::Guest)> {
    let k =
        store.data().kernel.as_ref().ok_or_else(|| {
            wasmtime::Error::msg("internal error: the store has no kernels instance")
        })?;
    Ok((k.tensors.clone(), k.ops.clone()))
}

/// The kernels resource behind one of the function's handles.
fn resource(store: &mut StoreContextMut<'_, State>, h: &Handle) -> Result<ResourceAny> {
    store
        .data_mut()
        .table_mut()
        .get_any_mut(h.rep())
        .ok()
        .and_then(|e| e.downcast_ref::<KernelTensor>())
        .map(|k| k.resource)
        .ok_or_else(|| Error::invalid_input(format!("bad tensor handle {}", h.rep())))
}

/// Gives the function a handle to `resource`.
fn push(
    store: &mut StoreContextMut<'_, State>,
    resource: ResourceAny,
    owned: bool,
) -> Result<Handle> {
    let entry = store
        .data_mut()
        .table_mut()
        .push(KernelTensor { resource, owned })
        .map_err(|e| Error::internal(format!("resource table: {e}")))?;
    Ok(Resource::new_own(entry.rep()))
}

/// Hands a kernel call's result to the function as a new handle, or its error as a WIT
/// error.
fn returned(
    store: &mut StoreContextMut<'_, State>,
    result: std::result::Result<ResourceAny, ktensors::Error>,
) -> Forwarded<Handle> {
    Ok((match result {
        Ok(r) => push(store, r, true).map_err(WitError::from),
        Err(e) => Err(WitError::from(Error::from(e))),
    },))
}

/// A host error as the function sees it.
fn failed<T>(e: Error) -> Forwarded<T> {
    Ok((Err(WitError::from(e)),))
}

/// Moves `tensor` into the kernels instance of `store`.
fn upload_resource(
    store: &mut StoreContextMut<'_, State>,
    tensor: &Tensor,
) -> wasmtime::Result<Result<ResourceAny>> {
    let (tensors, _) = guests(store)?;
    let shape: Vec<u32> = match tensor.shape().iter().map(|&d| u32::try_from(d)).collect() {
        Ok(s) => s,
        Err(_) => {
            return Ok(Err(Error::limit_exceeded(format!(
                "tensor of shape {:?} has a dimension over u32::MAX",
                tensor.shape()
            ))));
        }
    };
    let r = match tensor.data() {
        crate::TensorData::F32(d) => tensors.tensor().call_from_f32(&mut *store, &shape, d)?,
        crate::TensorData::U8(d) => tensors.tensor().call_from_u8(&mut *store, &shape, d)?,
    };
    Ok(r.map_err(Error::from))
}

/// Moves a request input into the kernels instance and returns the function's handle.
pub(crate) fn upload(
    store: &mut Store<State>,
    tensor: &Tensor,
) -> wasmtime::Result<Result<Handle>> {
    let mut store = store.as_context_mut();
    Ok(upload_resource(&mut store, tensor)?.and_then(|r| push(&mut store, r, true)))
}

/// Reads the tensor behind `resource` back into the host.
fn download_resource(
    store: &mut StoreContextMut<'_, State>,
    resource: ResourceAny,
) -> wasmtime::Result<Result<Tensor>> {
    let (tensors, _) = guests(store)?;
    let t = tensors.tensor();
    let shape: Vec<usize> = t
        .call_shape(&mut *store, resource)?
        .into_iter()
        .map(|d| d as usize)
        .collect();
    Ok(match t.call_dtype(&mut *store, resource)? {
        ktensors::Dtype::U8 => t
            .call_to_u8(&mut *store, resource)?
            .map_err(Error::from)
            .and_then(|d| Tensor::from_u8(shape, d)),
        _ => t
            .call_to_f32(&mut *store, resource)?
            .map_err(Error::from)
            .and_then(|d| Tensor::from_f32(shape, d)),
    })
}

/// Takes a function output out of the table and reads it back into the host.
pub(crate) fn download(
    store: &mut Store<State>,
    handle: Handle,
) -> wasmtime::Result<Result<Tensor>> {
    let mut store = store.as_context_mut();
    let entry = store
        .data_mut()
        .table_mut()
        .delete(Resource::<KernelTensor>::new_own(handle.rep()));
    let k = match entry {
        Ok(k) => k,
        Err(e) => return Ok(Err(Error::internal(format!("resource table: {e}")))),
    };
    let t = download_resource(&mut store, k.resource)?;
    if k.owned {
        k.resource.resource_drop(&mut store)?;
    }
    Ok(t)
}

/// Defines the function's `tensors`, `weights` and `ops` imports as forwarders to the
/// store's kernels instance (instead of `InferenceFunction::add_to_linker`).
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    add_tensors(linker)?;
    add_weights(linker)?;
    add_ops(linker)
}

fn add_tensors(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    let mut i = linker.instance(TENSORS)?;
    i.resource(
        "tensor",
        ResourceType::host::<Tensor>(),
        |mut store, rep| {
            let k = store
                .data_mut()
                .table_mut()
                .delete(Resource::<KernelTensor>::new_own(rep))?;
            if k.owned {
                k.resource.resource_drop(&mut store)?;
            }
            Ok(())
        },
    )?;
    i.func_wrap(
        "[static]tensor.from-f32",
        |mut store, (shape, data): (Vec<u32>, Vec<f32>)| {
            let (tensors, _) = guests(&store)?;
            let r = tensors.tensor().call_from_f32(&mut store, &shape, &data)?;
            returned(&mut store, r)
        },
    )?;
    i.func_wrap(
        "[static]tensor.from-u8",
        |mut store, (shape, data): (Vec<u32>, Vec<u8>)| {
            let (tensors, _) = guests(&store)?;
            let r = tensors.tensor().call_from_u8(&mut store, &shape, &data)?;
            returned(&mut store, r)
        },
    )?;
    i.func_wrap("[method]tensor.shape", |mut store, (h,): (Handle,)| {
        let (tensors, _) = guests(&store)?;
        let r = resource(&mut store, &h)?;
        Ok((tensors.tensor().call_shape(&mut store, r)?,))
    })?;
    i.func_wrap("[method]tensor.dtype", |mut store, (h,): (Handle,)| {
        let (tensors, _) = guests(&store)?;
        let r = resource(&mut store, &h)?;
        Ok((Dtype::from(tensors.tensor().call_dtype(&mut store, r)?),))
    })?;
    i.func_wrap(
        "[method]tensor.to-f32",
        |mut store, (h,): (Handle,)| -> Forwarded<Vec<f32>> {
            let (tensors, _) = guests(&store)?;
            let r = resource(&mut store, &h)?;
            let data = tensors.tensor().call_to_f32(&mut store, r)?;
            Ok((data.map_err(|e| WitError::from(Error::from(e))),))
        },
    )?;
    i.func_wrap(
        "[method]tensor.to-u8",
        |mut store, (h,): (Handle,)| -> Forwarded<Vec<u8>> {
            let (tensors, _) = guests(&store)?;
            let r = resource(&mut store, &h)?;
            let data = tensors.tensor().call_to_u8(&mut store, r)?;
            Ok((data.map_err(|e| WitError::from(Error::from(e))),))
        },
    )?;
    i.func_wrap(
        "[method]tensor.reshape",
        |mut store, (h, shape): (Handle, Vec<u32>)| {
            let (tensors, _) = guests(&store)?;
            let r = resource(&mut store, &h)?;
            let r = tensors.tensor().call_reshape(&mut store, r, &shape)?;
            returned(&mut store, r)
        },
    )?;
    Ok(())
}

fn add_weights(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    let mut i = linker.instance(WEIGHTS)?;
    i.func_wrap(
        "entries",
        |mut store, (): ()| -> wasmtime::Result<(Vec<TensorInfo>,)> {
            Ok((store.data_mut().entries()?,))
        },
    )?;
    i.func_wrap(
        "info",
        |mut store, (name,): (String,)| -> wasmtime::Result<(Option<TensorInfo>,)> {
            Ok((store.data_mut().info(name)?,))
        },
    )?;
    i.func_wrap(
        "get",
        |mut store, (name,): (String,)| -> Forwarded<Handle> {
            let cached = store
                .data()
                .kernel
                .as_ref()
                .and_then(|k| k.weights.get(&name).copied());
            let resource = match cached {
                Some(r) => r,
                None => {
                    // The native `get` finds the weight (or builds the not-found error);
                    // its handle is taken straight back out of the table.
                    let weight = match WeightsHost::get(store.data_mut(), name.clone())
                        .and_then(|h| store.data_mut().take(h))
                    {
                        Ok(w) => w,
                        Err(e) => return failed(e),
                    };
                    let r = match upload_resource(&mut store, &weight)? {
                        Ok(r) => r,
                        Err(e) => return failed(e.context(format!("weight `{name}`"))),
                    };
                    if let Some(k) = store.data_mut().kernel.as_mut() {
                        k.weights.insert(name, r);
                    }
                    r
                }
            };
            Ok((push(&mut store, resource, false).map_err(WitError::from),))
        },
    )?;
    Ok(())
}

/// What a call into the kernels component's `ops` returns.
type OpResult = wasmtime::Result<std::result::Result<ResourceAny, ktensors::Error>>;

/// Forwards one of the function's `ops` calls to the kernels instance: resolves the
/// function's `operands` (and optional `bias`) to the kernels' resources — a bad handle is
/// the function's error, not a trap — calls `op` with them, and hands the result back to
/// the function as a new handle.
fn forward(
    store: &mut StoreContextMut<'_, State>,
    operands: &[&Handle],
    bias: Option<&Handle>,
    op: impl FnOnce(
        &kops::Guest,
        &mut StoreContextMut<'_, State>,
        &[ResourceAny],
        Option<ResourceAny>,
    ) -> OpResult,
) -> Forwarded<Handle> {
    let (_, ops) = guests(store)?;
    let resolved = operands
        .iter()
        .map(|h| resource(store, h))
        .collect::<Result<Vec<_>>>()
        .and_then(|r| Ok((r, bias.map(|b| resource(store, b)).transpose()?)));
    let (r, b) = match resolved {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let result = op(&ops, store, &r, b)?;
    returned(store, result)
}

fn add_ops(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    let mut i = linker.instance(OPS)?;
    i.func_wrap(
        "dense",
        |mut store, (x, w, b, act): (Handle, Handle, Option<Handle>, Activation)| {
            forward(&mut store, &[&x, &w], b.as_ref(), |ops, s, r, b| {
                ops.call_dense(s, r[0], r[1], b, act.into())
            })
        },
    )?;
    i.func_wrap(
        "conv2d",
        |mut store,
         (x, w, b, p, act): (Handle, Handle, Option<Handle>, Conv2dParams, Activation)| {
            forward(&mut store, &[&x, &w], b.as_ref(), |ops, s, r, b| {
                ops.call_conv2d(s, r[0], r[1], b, p.into(), act.into())
            })
        },
    )?;
    i.func_wrap("max-pool2d", |mut store, (x, p): (Handle, Pool2dParams)| {
        forward(&mut store, &[&x], None, |ops, s, r, _| {
            ops.call_max_pool2d(s, r[0], p.into())
        })
    })?;
    i.func_wrap("avg-pool2d", |mut store, (x, p): (Handle, Pool2dParams)| {
        forward(&mut store, &[&x], None, |ops, s, r, _| {
            ops.call_avg_pool2d(s, r[0], p.into())
        })
    })?;
    i.func_wrap("global-avg-pool", |mut store, (x,): (Handle,)| {
        forward(&mut store, &[&x], None, |ops, s, r, _| {
            ops.call_global_avg_pool(s, r[0])
        })
    })?;
    i.func_wrap("activate", |mut store, (x, act): (Handle, Activation)| {
        forward(&mut store, &[&x], None, |ops, s, r, _| {
            ops.call_activate(s, r[0], act.into())
        })
    })?;
    i.func_wrap("softmax", |mut store, (x,): (Handle,)| {
        forward(&mut store, &[&x], None, |ops, s, r, _| {
            ops.call_softmax(s, r[0])
        })
    })?;
    i.func_wrap("add", |mut store, (a, b): (Handle, Handle)| {
        forward(&mut store, &[&a, &b], None, |ops, s, r, _| {
            ops.call_add(s, r[0], r[1])
        })
    })?;
    i.func_wrap("mul", |mut store, (a, b): (Handle, Handle)| {
        forward(&mut store, &[&a, &b], None, |ops, s, r, _| {
            ops.call_mul(s, r[0], r[1])
        })
    })?;
    Ok(())
}

/// The kernels component instantiated in a store of its own, for calling its `ops`
/// directly on host tensors: what the conformance tests and the in-wasm benchmarks use.
/// Obtain one with [`crate::Runtime::kernel_session`]; it has the runtime's deadline
/// (counted from its creation) and memory limit.
///
/// Tensors uploaded to or produced in the session are [`SessionTensor`] handles; they live
/// until [`KernelSession::release`] or until the session is dropped.
pub struct KernelSession {
    store: Store<State>,
    ops: kops::Guest,
}

/// A tensor inside a [`KernelSession`]'s kernels instance.
#[derive(Clone, Copy, Debug)]
pub struct SessionTensor(ResourceAny);

/// A wasmtime error from a session call as a typed [`Error`].
fn session_error(e: wasmtime::Error) -> Error {
    use crate::ErrorKind;
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        return Error::new(
            ErrorKind::DeadlineExceeded,
            "the kernels component ran past its deadline and was stopped",
        );
    }
    let text = format!("{e:#}");
    if text.contains("forcing trap when growing memory") {
        return Error::new(
            ErrorKind::LimitExceeded,
            "the kernels component tried to grow its memory past the limit",
        );
    }
    Error::new(
        ErrorKind::Trap,
        format!("the kernels component trapped: {}", e.root_cause()),
    )
}

fn pair_u32(what: &str, (a, b): (usize, usize)) -> Result<(u32, u32)> {
    match (u32::try_from(a), u32::try_from(b)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(Error::invalid_input(format!(
            "{what} ({a}, {b}) does not fit in u32"
        ))),
    }
}

impl KernelSession {
    pub(crate) fn new(pre: &KernelProviderPre<State>, mut store: Store<State>) -> Result<Self> {
        let k = KernelInstance::instantiate(pre, &mut store).map_err(session_error)?;
        let ops = k.ops.clone();
        store.data_mut().kernel = Some(k);
        Ok(KernelSession { store, ops })
    }

    fn finish(
        &mut self,
        r: wasmtime::Result<std::result::Result<ResourceAny, ktensors::Error>>,
    ) -> Result<SessionTensor> {
        Ok(SessionTensor(
            r.map_err(session_error)?.map_err(Error::from)?,
        ))
    }

    /// Copies `tensor` into the kernels instance.
    pub fn upload(&mut self, tensor: &Tensor) -> Result<SessionTensor> {
        let mut store = self.store.as_context_mut();
        let r = upload_resource(&mut store, tensor).map_err(session_error)??;
        Ok(SessionTensor(r))
    }

    /// Copies the tensor behind `t` back into the host.
    pub fn download(&mut self, t: SessionTensor) -> Result<Tensor> {
        let mut store = self.store.as_context_mut();
        download_resource(&mut store, t.0).map_err(session_error)?
    }

    /// Frees the tensor behind `t` in the kernels instance.
    pub fn release(&mut self, t: SessionTensor) -> Result<()> {
        t.0.resource_drop(&mut self.store).map_err(session_error)
    }

    /// `ops.dense`: act(x · wᵀ + b).
    pub fn dense(
        &mut self,
        x: SessionTensor,
        w: SessionTensor,
        b: Option<SessionTensor>,
        act: tensorlet_kernels::Activation,
    ) -> Result<SessionTensor> {
        let r = self
            .ops
            .call_dense(&mut self.store, x.0, w.0, b.map(|b| b.0), act.into());
        self.finish(r)
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
        let params = kops::Conv2dParams {
            stride: pair_u32("stride", p.stride)?,
            padding: pair_u32("padding", p.padding)?,
            dilation: pair_u32("dilation", p.dilation)?,
            groups: u32::try_from(p.groups).map_err(|_| {
                Error::invalid_input(format!("groups {} does not fit in u32", p.groups))
            })?,
        };
        let r = self.ops.call_conv2d(
            &mut self.store,
            x.0,
            w.0,
            b.map(|b| b.0),
            params,
            act.into(),
        );
        self.finish(r)
    }

    fn pool_params(p: &tensorlet_kernels::Pool2dParams) -> Result<kops::Pool2dParams> {
        Ok(kops::Pool2dParams {
            kernel: pair_u32("kernel", p.kernel)?,
            stride: pair_u32("stride", p.stride)?,
            padding: pair_u32("padding", p.padding)?,
        })
    }

    /// `ops.max-pool2d` over NCHW `x`.
    pub fn max_pool2d(
        &mut self,
        x: SessionTensor,
        p: &tensorlet_kernels::Pool2dParams,
    ) -> Result<SessionTensor> {
        let p = Self::pool_params(p)?;
        let r = self.ops.call_max_pool2d(&mut self.store, x.0, p);
        self.finish(r)
    }

    /// `ops.avg-pool2d` over NCHW `x`.
    pub fn avg_pool2d(
        &mut self,
        x: SessionTensor,
        p: &tensorlet_kernels::Pool2dParams,
    ) -> Result<SessionTensor> {
        let p = Self::pool_params(p)?;
        let r = self.ops.call_avg_pool2d(&mut self.store, x.0, p);
        self.finish(r)
    }

    /// `ops.global-avg-pool` over NCHW `x`.
    pub fn global_avg_pool(&mut self, x: SessionTensor) -> Result<SessionTensor> {
        let r = self.ops.call_global_avg_pool(&mut self.store, x.0);
        self.finish(r)
    }

    /// `ops.activate`.
    pub fn activate(
        &mut self,
        x: SessionTensor,
        act: tensorlet_kernels::Activation,
    ) -> Result<SessionTensor> {
        let r = self.ops.call_activate(&mut self.store, x.0, act.into());
        self.finish(r)
    }

    /// `ops.softmax` over the last dimension.
    pub fn softmax(&mut self, x: SessionTensor) -> Result<SessionTensor> {
        let r = self.ops.call_softmax(&mut self.store, x.0);
        self.finish(r)
    }

    /// `ops.add`, broadcasting `b` over `a`'s leading dimensions.
    pub fn add(&mut self, a: SessionTensor, b: SessionTensor) -> Result<SessionTensor> {
        let r = self.ops.call_add(&mut self.store, a.0, b.0);
        self.finish(r)
    }

    /// `ops.mul`, broadcasting `b` over `a`'s leading dimensions.
    pub fn mul(&mut self, a: SessionTensor, b: SessionTensor) -> Result<SessionTensor> {
        let r = self.ops.call_mul(&mut self.store, a.0, b.0);
        self.finish(r)
    }
}
