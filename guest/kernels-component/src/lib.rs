//! tensorlet's kernels as a WASI component: the `kernel-provider` world of
//! `wit/tensorlet.wit`, which exports the same `tensors` and `ops` interfaces that an
//! inference function imports.
//!
//! Tensors live in this component's linear memory (a shape plus reference-counted data, so
//! `reshape` does not copy); every op validates shapes exactly as the host's native plugin
//! does (same error kinds, same messages) and calls `tensorlet-kernels` at
//! [`Level::Simd128`]. Built with `+simd128,+relaxed-simd` (see `guest/.cargo/config.toml`).
//! The host instantiates it beside a function when run with `--kernels wasm` and forwards
//! the function's calls here; the function cannot tell the difference.

use std::rc::Rc;

use tensorlet_kernels::{Kernels, Level};

mod bindings {
    //! The bindings generated from `wit/tensorlet.wit` (world `kernel-provider`).
    #![allow(missing_docs)]

    wit_bindgen::generate!({
        path: "../../wit",
        world: "kernel-provider",
    });

    use super::Provider;
    export!(Provider);
}

use bindings::exports::tensorlet::nn::ops::{
    self, Activation, Conv2dParams, Pool2dParams, TensorBorrow,
};
use bindings::exports::tensorlet::nn::tensors::{self, Dtype, Error, Tensor};

type Result<T, E = Error> = core::result::Result<T, E>;

/// The exported world.
struct Provider;

/// A tensor's elements.
enum Data {
    F32(Vec<f32>),
    U8(Vec<u8>),
    Bytes(Vec<Vec<u8>>),
}

impl Data {
    /// The element type's name in messages.
    fn name(&self) -> &'static str {
        match self {
            Data::F32(_) => "f32",
            Data::U8(_) => "u8",
            Data::Bytes(_) => "bytes",
        }
    }
}

/// The component's `tensor` resource: a shape and its row-major data.
pub struct KTensor {
    shape: Vec<usize>,
    data: Rc<Data>,
}

/// The kernels at the widest level this build has (pulp's `Simd128` when compiled with
/// `+simd128`, as the guest workspace is; scalar otherwise).
fn kernels() -> Kernels {
    Kernels::with_level(Level::Simd128).unwrap_or_else(Kernels::detect)
}

/// The number of elements of `shape`, or `limit-exceeded` if it overflows.
fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::LimitExceeded(format!("shape {shape:?} has too many elements")))
}

fn to_usizes(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

fn to_u32s(shape: &[usize]) -> Vec<u32> {
    shape.iter().map(|&d| d as u32).collect()
}

fn kernel_error(op: &str, e: tensorlet_kernels::KernelError) -> Error {
    Error::ShapeMismatch(format!("{op}: {e}"))
}

/// A violated shape rule (the shared rules of `tensorlet-kernels`, whose messages name the
/// op themselves).
fn shape_error(e: tensorlet_kernels::KernelError) -> Error {
    Error::ShapeMismatch(e.message)
}

/// Adds `op: ` in front of an error's message.
fn context(op: &str, e: Error) -> Error {
    let prefix = |m: String| format!("{op}: {m}");
    match e {
        Error::InvalidInput(m) => Error::InvalidInput(prefix(m)),
        Error::NotFound(m) => Error::NotFound(prefix(m)),
        Error::ShapeMismatch(m) => Error::ShapeMismatch(prefix(m)),
        Error::Unsupported(m) => Error::Unsupported(prefix(m)),
        Error::LimitExceeded(m) => Error::LimitExceeded(prefix(m)),
        Error::Internal(m) => Error::Internal(prefix(m)),
    }
}

impl KTensor {
    fn new(shape: Vec<usize>, data: Data) -> Result<Self> {
        let len = match &data {
            Data::F32(d) => d.len(),
            Data::U8(d) => d.len(),
            Data::Bytes(d) => d.len(),
        };
        let expected = element_count(&shape)?;
        if expected != len {
            return Err(Error::ShapeMismatch(format!(
                "shape {shape:?} needs {expected} elements, got {len}"
            )));
        }
        Ok(KTensor {
            shape,
            data: Rc::new(data),
        })
    }

    fn f32_tensor(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        Ok(Tensor::new(Self::new(shape, Data::F32(data))?))
    }

    fn f32s(&self, what: &str) -> Result<&[f32]> {
        match &*self.data {
            Data::F32(d) => Ok(d),
            other => Err(Error::InvalidInput(format!(
                "{what}: expected an f32 tensor, got {} with shape {:?}",
                other.name(),
                self.shape
            ))),
        }
    }

    fn rank4(&self, what: &str) -> Result<[usize; 4]> {
        tensorlet_kernels::rank4(what, &self.shape).map_err(shape_error)
    }
}

impl tensors::Guest for Provider {
    type Tensor = KTensor;
}

impl tensors::GuestTensor for KTensor {
    fn from_f32(shape: Vec<u32>, data: Vec<f32>) -> Result<Tensor> {
        Self::new(to_usizes(&shape), Data::F32(data))
            .map(Tensor::new)
            .map_err(|e| context("tensor.from-f32", e))
    }

    fn from_u8(shape: Vec<u32>, data: Vec<u8>) -> Result<Tensor> {
        Self::new(to_usizes(&shape), Data::U8(data))
            .map(Tensor::new)
            .map_err(|e| context("tensor.from-u8", e))
    }

    fn from_bytes(shape: Vec<u32>, data: Vec<Vec<u8>>) -> Result<Tensor> {
        Self::new(to_usizes(&shape), Data::Bytes(data))
            .map(Tensor::new)
            .map_err(|e| context("tensor.from-bytes", e))
    }

    fn shape(&self) -> Vec<u32> {
        to_u32s(&self.shape)
    }

    fn dtype(&self) -> Dtype {
        match &*self.data {
            Data::F32(_) => Dtype::F32,
            Data::U8(_) => Dtype::U8,
            Data::Bytes(_) => Dtype::Bytes,
        }
    }

    fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(self.f32s("tensor.to-f32")?.to_vec())
    }

    fn to_u8(&self) -> Result<Vec<u8>> {
        match &*self.data {
            Data::U8(d) => Ok(d.clone()),
            other => Err(Error::InvalidInput(format!(
                "tensor.to-u8: expected a u8 tensor, got {} with shape {:?}",
                other.name(),
                self.shape
            ))),
        }
    }

    fn to_bytes(&self) -> Result<Vec<Vec<u8>>> {
        match &*self.data {
            Data::Bytes(d) => Ok(d.clone()),
            other => Err(Error::InvalidInput(format!(
                "tensor.to-bytes: expected a bytes tensor, got {} with shape {:?}",
                other.name(),
                self.shape
            ))),
        }
    }

    fn reshape(&self, shape: Vec<u32>) -> Result<Tensor> {
        let shape = tensorlet_kernels::reshape_dims(&self.shape, &to_usizes(&shape))
            .map_err(shape_error)?;
        Ok(Tensor::new(KTensor {
            shape,
            data: Rc::clone(&self.data),
        }))
    }
}

fn get<'a>(t: &'a TensorBorrow<'_>) -> &'a KTensor {
    t.get::<KTensor>()
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

fn activation(a: Activation) -> tensorlet_kernels::Activation {
    use tensorlet_kernels::Activation as A;
    match a {
        Activation::None => A::None,
        Activation::Relu => A::Relu,
        Activation::Sigmoid => A::Sigmoid,
        Activation::Tanh => A::Tanh,
        Activation::Gelu => A::Gelu,
        Activation::GeluErf => A::GeluErf,
    }
}

/// A zeroed output of `elements` f32s.
fn output(elements: usize) -> Vec<f32> {
    vec![0.0; elements]
}

/// A `Kernels` method of the shape of `max_pool2d`/`avg_pool2d`.
type PoolKernel = fn(
    &Kernels,
    &[f32],
    [usize; 4],
    &tensorlet_kernels::Pool2dParams,
    &mut [f32],
) -> core::result::Result<(), tensorlet_kernels::KernelError>;

/// A `Kernels` method of the shape of `add`/`mul`.
type ElementwiseKernel = fn(
    &Kernels,
    &[f32],
    &[f32],
    &mut [f32],
) -> core::result::Result<(), tensorlet_kernels::KernelError>;

fn pool(op: &str, x: TensorBorrow<'_>, params: Pool2dParams, f: PoolKernel) -> Result<Tensor> {
    let x = get(&x);
    let xs = x.rank4(&format!("{op}: x"))?;
    let p = pool_params(params);
    let out_shape = tensorlet_kernels::pool2d_out_shape(xs, &p).map_err(|e| kernel_error(op, e))?;
    let mut out = output(element_count(&out_shape)?);
    f(&kernels(), x.f32s(&format!("{op}: x"))?, xs, &p, &mut out)
        .map_err(|e| kernel_error(op, e))?;
    KTensor::f32_tensor(out_shape.to_vec(), out)
}

fn elementwise(
    op: &str,
    a: TensorBorrow<'_>,
    b: TensorBorrow<'_>,
    f: ElementwiseKernel,
) -> Result<Tensor> {
    let (a, b) = (get(&a), get(&b));
    let (ad, bd) = (a.f32s(&format!("{op}: a"))?, b.f32s(&format!("{op}: b"))?);
    tensorlet_kernels::broadcast_dims(op, &a.shape, &b.shape).map_err(shape_error)?;
    let mut out = output(ad.len());
    f(&kernels(), ad, bd, &mut out).map_err(|e| kernel_error(op, e))?;
    KTensor::f32_tensor(a.shape.clone(), out)
}

impl ops::Guest for Provider {
    fn dense(
        x: TensorBorrow<'_>,
        w: TensorBorrow<'_>,
        b: Option<TensorBorrow<'_>>,
        act: Activation,
    ) -> Result<Tensor> {
        let (x, w) = (get(&x), get(&w));
        let b = b.as_ref().map(get);
        let tensorlet_kernels::DenseDims { m, k, n, out_shape } =
            tensorlet_kernels::dense_dims(&x.shape, &w.shape, b.map(|b| b.shape.as_slice()))
                .map_err(shape_error)?;
        let mut out = output(m * n);
        let bias = b.map(|b| b.f32s("dense: bias")).transpose()?;
        kernels()
            .dense(
                x.f32s("dense: x")?,
                m,
                k,
                w.f32s("dense: w")?,
                n,
                bias,
                activation(act),
                &mut out,
            )
            .map_err(|e| kernel_error("dense", e))?;
        KTensor::f32_tensor(out_shape, out)
    }

    fn conv2d(
        x: TensorBorrow<'_>,
        w: TensorBorrow<'_>,
        b: Option<TensorBorrow<'_>>,
        params: Conv2dParams,
        act: Activation,
    ) -> Result<Tensor> {
        let (x, w) = (get(&x), get(&w));
        let b = b.as_ref().map(get);
        let p = tensorlet_kernels::Conv2dParams {
            stride: pair(params.stride),
            padding: pair(params.padding),
            dilation: pair(params.dilation),
            groups: params.groups as usize,
        };
        let [xs, ws, out_shape] =
            tensorlet_kernels::conv2d_dims(&x.shape, &w.shape, b.map(|b| b.shape.as_slice()), &p)
                .map_err(shape_error)?;
        let mut out = output(element_count(&out_shape)?);
        let bias = b.map(|b| b.f32s("conv2d: bias")).transpose()?;
        kernels()
            .conv2d(
                x.f32s("conv2d: x")?,
                xs,
                w.f32s("conv2d: w")?,
                ws,
                bias,
                &p,
                activation(act),
                &mut out,
            )
            .map_err(|e| kernel_error("conv2d", e))?;
        KTensor::f32_tensor(out_shape.to_vec(), out)
    }

    fn max_pool2d(x: TensorBorrow<'_>, params: Pool2dParams) -> Result<Tensor> {
        pool("max-pool2d", x, params, Kernels::max_pool2d)
    }

    fn avg_pool2d(x: TensorBorrow<'_>, params: Pool2dParams) -> Result<Tensor> {
        pool("avg-pool2d", x, params, Kernels::avg_pool2d)
    }

    fn global_avg_pool(x: TensorBorrow<'_>) -> Result<Tensor> {
        let x = get(&x);
        let xs = x.rank4("global-avg-pool: x")?;
        let mut out = output(element_count(&xs[..2])?);
        kernels()
            .global_avg_pool(x.f32s("global-avg-pool: x")?, xs, &mut out)
            .map_err(|e| kernel_error("global-avg-pool", e))?;
        KTensor::f32_tensor(vec![xs[0], xs[1]], out)
    }

    fn activate(x: TensorBorrow<'_>, act: Activation) -> Result<Tensor> {
        let x = get(&x);
        let mut out = x.f32s("activate: x")?.to_vec();
        kernels().activate(&mut out, activation(act));
        KTensor::f32_tensor(x.shape.clone(), out)
    }

    fn softmax(x: TensorBorrow<'_>) -> Result<Tensor> {
        let x = get(&x);
        let Some(&row) = x.shape.last() else {
            return Err(Error::ShapeMismatch(
                "softmax: x must have rank ≥ 1, got a scalar".to_owned(),
            ));
        };
        let mut out = x.f32s("softmax: x")?.to_vec();
        if !out.is_empty() {
            kernels()
                .softmax(&mut out, row)
                .map_err(|e| kernel_error("softmax", e))?;
        }
        KTensor::f32_tensor(x.shape.clone(), out)
    }

    fn add(a: TensorBorrow<'_>, b: TensorBorrow<'_>) -> Result<Tensor> {
        elementwise("add", a, b, Kernels::add)
    }

    fn mul(a: TensorBorrow<'_>, b: TensorBorrow<'_>) -> Result<Tensor> {
        elementwise("mul", a, b, Kernels::mul)
    }

    fn layer_norm(
        x: TensorBorrow<'_>,
        gamma: TensorBorrow<'_>,
        beta: TensorBorrow<'_>,
        eps: f32,
    ) -> Result<Tensor> {
        let (x, g, b) = (get(&x), get(&gamma), get(&beta));
        let d = tensorlet_kernels::layer_norm_dims(&x.shape, &g.shape, &b.shape)
            .map_err(shape_error)?;
        let xd = x.f32s("layer-norm: x")?;
        let mut out = output(xd.len());
        if !xd.is_empty() {
            let (gd, bd) = (g.f32s("layer-norm: gamma")?, b.f32s("layer-norm: beta")?);
            kernels()
                .layer_norm(xd, d, gd, bd, eps, &mut out)
                .map_err(|e| kernel_error("layer-norm", e))?;
        }
        KTensor::f32_tensor(x.shape.clone(), out)
    }

    fn embedding(table: TensorBorrow<'_>, ids: Vec<u32>) -> Result<Tensor> {
        let table = get(&table);
        let shape =
            tensorlet_kernels::embedding_dims(&table.shape, ids.len()).map_err(shape_error)?;
        let mut out = output(element_count(&shape)?);
        kernels()
            .gather_rows(table.f32s("embedding: table")?, shape[1], &ids, &mut out)
            .map_err(|e| kernel_error("embedding", e))?;
        KTensor::f32_tensor(shape.to_vec(), out)
    }

    fn attention(
        q: TensorBorrow<'_>,
        k: TensorBorrow<'_>,
        v: TensorBorrow<'_>,
        heads: u32,
        lengths: Vec<u32>,
    ) -> Result<Tensor> {
        let (q, k, v) = (get(&q), get(&k), get(&v));
        let dims = tensorlet_kernels::attention_dims(
            &q.shape,
            &k.shape,
            &v.shape,
            heads as usize,
            lengths.len(),
        )
        .map_err(shape_error)?;
        let lengths: Vec<usize> = lengths.iter().map(|&l| l as usize).collect();
        let qd = q.f32s("attention: q")?;
        let mut out = output(qd.len());
        kernels()
            .attention(
                qd,
                k.f32s("attention: k")?,
                v.f32s("attention: v")?,
                dims,
                &lengths,
                &mut out,
            )
            .map_err(|e| kernel_error("attention", e))?;
        KTensor::f32_tensor(q.shape.clone(), out)
    }

    fn mean_pool(x: TensorBorrow<'_>, lengths: Vec<u32>) -> Result<Tensor> {
        let x = get(&x);
        let [batch, seq, d] =
            tensorlet_kernels::mean_pool_dims(&x.shape, lengths.len()).map_err(shape_error)?;
        let lengths: Vec<usize> = lengths.iter().map(|&l| l as usize).collect();
        let mut out = output(element_count(&[batch, d])?);
        kernels()
            .mean_pool(x.f32s("mean-pool: x")?, batch, seq, d, &lengths, &mut out)
            .map_err(|e| kernel_error("mean-pool", e))?;
        KTensor::f32_tensor(vec![batch, d], out)
    }

    fn l2_normalize(x: TensorBorrow<'_>, eps: f32) -> Result<Tensor> {
        let x = get(&x);
        let Some(&d) = x.shape.last() else {
            return Err(Error::ShapeMismatch(
                "l2-normalize: x must have rank ≥ 1, got a scalar".to_owned(),
            ));
        };
        let mut out = x.f32s("l2-normalize: x")?.to_vec();
        kernels()
            .l2_normalize(&mut out, d, eps)
            .map_err(|e| kernel_error("l2-normalize", e))?;
        KTensor::f32_tensor(x.shape.clone(), out)
    }
}
