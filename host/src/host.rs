//! The host side of the WIT imports: tensors, this request's weights, and the kernels.
//!
//! [`State`] is the per-request store data (fresh for every request): the resource table
//! that holds tensor handles, the bound weights set, the kernels, WASI context, limits and
//! a byte budget. Each `ops` call borrows its operands from the table, validates shapes,
//! calls `tensorlet-kernels`, and pushes the result as a new handle.

use std::sync::Arc;

use tensorlet_kernels::Kernels;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::error::{Error, Result};
use crate::tensor::{Tensor, element_count};
use crate::weights::Weights;
use crate::wit::tensorlet::nn::{ops, tensors, weights};
use crate::wit::{Activation, Conv2dParams, Dtype, Pool2dParams, TensorInfo, WitError};

/// Bytes a function may leave in its captured stderr (panic messages and logs).
const STDERR_CAPACITY: usize = 16 * 1024;

/// Bytes charged per tensor handle on top of its data, so handles count against the budget.
const HANDLE_COST: usize = 64;

/// A `Kernels` method of the shape of `add`/`mul`.
type ElementwiseKernel = fn(&Kernels, &[f32], &[f32], &mut [f32]) -> KernelResult;

/// A `Kernels` method of the shape of `max_pool2d`/`avg_pool2d`.
type PoolKernel =
    fn(&Kernels, &[f32], [usize; 4], &tensorlet_kernels::Pool2dParams, &mut [f32]) -> KernelResult;

type KernelResult = std::result::Result<(), tensorlet_kernels::KernelError>;

/// Per-request limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestLimits {
    /// Maximum linear memory of the function instance, in bytes.
    pub memory_bytes: usize,
    /// Maximum bytes of tensors the request may create in the host, in total.
    pub tensor_bytes: usize,
}

/// Store data for one request.
pub(crate) struct State {
    table: ResourceTable,
    wasi: WasiCtx,
    stderr: MemoryOutputPipe,
    pub(crate) limits: StoreLimits,
    weights: Arc<Weights>,
    kernels: Kernels,
    tensor_budget: usize,
    tensor_bytes_used: usize,
    /// The kernels component's instance in this store (`KernelBackend::Wasm` only).
    pub(crate) kernel: Option<crate::wasm_kernels::KernelInstance>,
}

impl State {
    pub(crate) fn new(weights: Arc<Weights>, kernels: Kernels, limits: RequestLimits) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        State {
            table: ResourceTable::new(),
            wasi,
            stderr,
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            weights,
            kernels,
            tensor_budget: limits.tensor_bytes,
            tensor_bytes_used: 0,
            kernel: None,
        }
    }

    /// What the function wrote to stderr (e.g. a panic message), lossily decoded.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }

    /// The resource table of the store's handles.
    pub(crate) fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Puts `tensor` in the table, charging `new_bytes` (data it newly allocated).
    pub(crate) fn push(&mut self, tensor: Tensor, new_bytes: usize) -> Result<Resource<Tensor>> {
        let cost = new_bytes.saturating_add(HANDLE_COST);
        let used = self.tensor_bytes_used.saturating_add(cost);
        if used > self.tensor_budget {
            return Err(Error::limit_exceeded(format!(
                "request would allocate {used} bytes of tensors; the limit is {} bytes",
                self.tensor_budget
            )));
        }
        self.tensor_bytes_used = used;
        self.table
            .push(tensor)
            .map_err(|e| Error::internal(format!("resource table: {e}")))
    }

    /// Takes ownership of the tensor behind `handle` out of the table.
    pub(crate) fn take(&mut self, handle: Resource<Tensor>) -> Result<Tensor> {
        self.table
            .delete(handle)
            .map_err(|e| Error::internal(format!("resource table: {e}")))
    }

    /// A cheap clone (data shared) of the tensor behind `handle`.
    fn tensor(&self, handle: &Resource<Tensor>) -> Result<Tensor> {
        self.table
            .get(handle)
            .cloned()
            .map_err(|e| Error::invalid_input(format!("bad tensor handle: {e}")))
    }

    /// Checks the budget before allocating `elements` f32s for an op's output.
    fn output(&self, op: &str, elements: usize) -> Result<Vec<f32>> {
        let bytes = elements.saturating_mul(4);
        if self.tensor_bytes_used.saturating_add(bytes) > self.tensor_budget {
            return Err(Error::limit_exceeded(format!(
                "{op}: an output of {elements} elements exceeds the request's tensor budget \
                 of {} bytes ({} used)",
                self.tensor_budget, self.tensor_bytes_used
            )));
        }
        Ok(vec![0.0; elements])
    }

    /// Pushes an op's f32 output of `shape`.
    fn push_f32(&mut self, shape: Vec<usize>, data: Vec<f32>) -> Result<Resource<Tensor>> {
        let bytes = data.len() * 4;
        self.push(Tensor::from_f32(shape, data)?, bytes)
    }

    fn elementwise(
        &mut self,
        op: &str,
        a: Resource<Tensor>,
        b: Resource<Tensor>,
        f: ElementwiseKernel,
    ) -> Result<Resource<Tensor>> {
        let (a, b) = (self.tensor(&a)?, self.tensor(&b)?);
        let (ad, bd) = (a.f32s(&format!("{op}: a"))?, b.f32s(&format!("{op}: b"))?);
        tensorlet_kernels::broadcast_dims(op, a.shape(), b.shape())?;
        let mut out = self.output(op, ad.len())?;
        f(&self.kernels, ad, bd, &mut out).map_err(|e| Error::from(e).context(op))?;
        self.push_f32(a.shape().to_vec(), out)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
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

impl tensors::Host for State {
    fn convert_error(&mut self, err: Error) -> wasmtime::Result<WitError> {
        Ok(err.into())
    }
}

impl tensors::HostTensor for State {
    fn from_f32(&mut self, shape: Vec<u32>, data: Vec<f32>) -> Result<Resource<Tensor>> {
        let bytes = data.len() * 4;
        let t =
            Tensor::from_f32(to_usizes(&shape), data).map_err(|e| e.context("tensor.from-f32"))?;
        self.push(t, bytes)
    }

    fn from_u8(&mut self, shape: Vec<u32>, data: Vec<u8>) -> Result<Resource<Tensor>> {
        let bytes = data.len();
        let t =
            Tensor::from_u8(to_usizes(&shape), data).map_err(|e| e.context("tensor.from-u8"))?;
        self.push(t, bytes)
    }

    fn shape(&mut self, this: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(to_u32s(self.table.get(&this)?.shape()))
    }

    fn dtype(&mut self, this: Resource<Tensor>) -> wasmtime::Result<Dtype> {
        Ok(self.table.get(&this)?.dtype().into())
    }

    fn to_f32(&mut self, this: Resource<Tensor>) -> Result<Vec<f32>> {
        Ok(self.tensor(&this)?.f32s("tensor.to-f32")?.to_vec())
    }

    fn to_u8(&mut self, this: Resource<Tensor>) -> Result<Vec<u8>> {
        Ok(self.tensor(&this)?.u8s("tensor.to-u8")?.to_vec())
    }

    fn reshape(&mut self, this: Resource<Tensor>, shape: Vec<u32>) -> Result<Resource<Tensor>> {
        let t = self.tensor(&this)?.reshape(&to_usizes(&shape))?;
        self.push(t, 0)
    }

    fn drop(&mut self, rep: Resource<Tensor>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
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

    fn get(&mut self, name: String) -> Result<Resource<Tensor>> {
        let weight = self.weights.get(&name).ok_or_else(|| {
            Error::not_found(format!(
                "weight `{name}` is not in the weights set `{}`",
                self.weights.source()
            ))
        })?;
        let t = weight.tensor.clone();
        self.push(t, 0)
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
        x: Resource<Tensor>,
        w: Resource<Tensor>,
        b: Option<Resource<Tensor>>,
        act: Activation,
    ) -> Result<Resource<Tensor>> {
        let (x, w) = (self.tensor(&x)?, self.tensor(&w)?);
        let b = b.map(|b| self.tensor(&b)).transpose()?;
        let tensorlet_kernels::DenseDims { m, k, n, out_shape } =
            tensorlet_kernels::dense_dims(x.shape(), w.shape(), b.as_ref().map(|b| b.shape()))?;
        let mut out = self.output("dense", m * n)?;
        let xs = x.f32s("dense: x")?;
        // Weights run on their packed form, prepared once per weights set.
        let packed = match w.prepared() {
            Some(p) => p.dense(&self.kernels, &w, n, k, b.as_ref())?,
            None => None,
        };
        match packed {
            Some(p) => self.kernels.dense_packed(xs, m, &p, act.into(), &mut out),
            None => {
                let bias = b.as_ref().map(|b| b.f32s("dense: bias")).transpose()?;
                let ws = w.f32s("dense: w")?;
                self.kernels
                    .dense(xs, m, k, ws, n, bias, act.into(), &mut out)
            }
        }
        .map_err(|e| Error::from(e).context("dense"))?;
        self.push_f32(out_shape, out)
    }

    fn conv2d(
        &mut self,
        x: Resource<Tensor>,
        w: Resource<Tensor>,
        b: Option<Resource<Tensor>>,
        params: Conv2dParams,
        act: Activation,
    ) -> Result<Resource<Tensor>> {
        let (x, w) = (self.tensor(&x)?, self.tensor(&w)?);
        let b = b.map(|b| self.tensor(&b)).transpose()?;
        let p = tensorlet_kernels::Conv2dParams {
            stride: pair(params.stride),
            padding: pair(params.padding),
            dilation: pair(params.dilation),
            groups: params.groups as usize,
        };
        let [xs, ws, out_shape] = tensorlet_kernels::conv2d_dims(
            x.shape(),
            w.shape(),
            b.as_ref().map(|b| b.shape()),
            &p,
        )?;
        let mut out = self.output("conv2d", element_count(&out_shape)?)?;
        let xd = x.f32s("conv2d: x")?;
        let packed = match w.prepared() {
            Some(prep) => prep.conv2d(&self.kernels, &w, ws, b.as_ref(), &p)?,
            None => None,
        };
        match packed {
            Some(pw) => self
                .kernels
                .conv2d_packed(xd, xs, &pw, act.into(), &mut out),
            None => {
                let bias = b.as_ref().map(|b| b.f32s("conv2d: bias")).transpose()?;
                let wd = w.f32s("conv2d: w")?;
                self.kernels
                    .conv2d(xd, xs, wd, ws, bias, &p, act.into(), &mut out)
            }
        }
        .map_err(|e| Error::from(e).context("conv2d"))?;
        self.push_f32(out_shape.to_vec(), out)
    }

    fn max_pool2d(
        &mut self,
        x: Resource<Tensor>,
        params: Pool2dParams,
    ) -> Result<Resource<Tensor>> {
        self.pool("max-pool2d", x, params, Kernels::max_pool2d)
    }

    fn avg_pool2d(
        &mut self,
        x: Resource<Tensor>,
        params: Pool2dParams,
    ) -> Result<Resource<Tensor>> {
        self.pool("avg-pool2d", x, params, Kernels::avg_pool2d)
    }

    fn global_avg_pool(&mut self, x: Resource<Tensor>) -> Result<Resource<Tensor>> {
        let x = self.tensor(&x)?;
        let xs = tensorlet_kernels::rank4("global-avg-pool: x", x.shape())?;
        let mut out = self.output("global-avg-pool", element_count(&xs[..2])?)?;
        self.kernels
            .global_avg_pool(x.f32s("global-avg-pool: x")?, xs, &mut out)
            .map_err(|e| Error::from(e).context("global-avg-pool"))?;
        self.push_f32(vec![xs[0], xs[1]], out)
    }

    fn activate(&mut self, x: Resource<Tensor>, act: Activation) -> Result<Resource<Tensor>> {
        let x = self.tensor(&x)?;
        let mut out = self.output("activate", x.len())?;
        out.copy_from_slice(x.f32s("activate: x")?);
        self.kernels.activate(&mut out, act.into());
        self.push_f32(x.shape().to_vec(), out)
    }

    fn softmax(&mut self, x: Resource<Tensor>) -> Result<Resource<Tensor>> {
        let x = self.tensor(&x)?;
        let Some(&row) = x.shape().last() else {
            return Err(Error::shape_mismatch(
                "softmax: x must have rank ≥ 1, got a scalar",
            ));
        };
        let mut out = self.output("softmax", x.len())?;
        out.copy_from_slice(x.f32s("softmax: x")?);
        if !out.is_empty() {
            self.kernels
                .softmax(&mut out, row)
                .map_err(|e| Error::from(e).context("softmax"))?;
        }
        self.push_f32(x.shape().to_vec(), out)
    }

    fn add(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> Result<Resource<Tensor>> {
        self.elementwise("add", a, b, Kernels::add)
    }

    fn mul(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> Result<Resource<Tensor>> {
        self.elementwise("mul", a, b, Kernels::mul)
    }
}

impl State {
    fn pool(
        &mut self,
        op: &str,
        x: Resource<Tensor>,
        params: Pool2dParams,
        f: PoolKernel,
    ) -> Result<Resource<Tensor>> {
        let x = self.tensor(&x)?;
        let xs = tensorlet_kernels::rank4(&format!("{op}: x"), x.shape())?;
        let p = pool_params(params);
        let out_shape =
            tensorlet_kernels::pool2d_out_shape(xs, &p).map_err(|e| Error::from(e).context(op))?;
        let mut out = self.output(op, element_count(&out_shape)?)?;
        f(
            &self.kernels,
            x.f32s(&format!("{op}: x"))?,
            xs,
            &p,
            &mut out,
        )
        .map_err(|e| Error::from(e).context(op))?;
        self.push_f32(out_shape.to_vec(), out)
    }
}
