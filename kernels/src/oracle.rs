//! Naive scalar reference versions of every kernel, for tests and benches.
//!
//! Each function takes the same arguments as the [`Kernels`](crate::Kernels) method of the
//! same name, validates them the same way, and computes the result with plain loops
//! straight from the definition, accumulating in `f64`. No blocking, no SIMD, no cleverness.
//!
//! The training ops' oracles (and the forward ops their gradients are checked against) are
//! generic over [`Real`]: `f32`, the kernels' type, or `f64`, in which the tests check the
//! oracles' gradients against finite differences of their forward ops.

use crate::activation::Activation;
use crate::error::KernelError;
use crate::shape::{Conv2dParams, Pool2dParams};
use crate::validate;

mod sealed {
    /// Keeps [`Real`](super::Real) to the two types below.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// An element type of the generic oracles: `f32` or `f64`. Values are widened to `f64` for
/// the arithmetic and rounded once on the way out.
pub trait Real: Copy + Default + core::fmt::Debug + sealed::Sealed {
    /// The value as `f64` (exact).
    fn to_f64(self) -> f64;
    /// `v` rounded to this type.
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Reference [`Kernels::matmul`](crate::Kernels::matmul).
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Real>(
    a: &[T],
    trans_a: bool,
    b: &[T],
    trans_b: bool,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    out: &mut [T],
) -> Result<(), KernelError> {
    validate::matmul(a.len(), trans_a, b.len(), trans_b, m, k, n, out.len())?;
    for i in 0..m {
        for j in 0..n {
            let mut s = if accumulate {
                out[i * n + j].to_f64()
            } else {
                0.0
            };
            for kk in 0..k {
                let av = if trans_a {
                    a[kk * m + i]
                } else {
                    a[i * k + kk]
                };
                let bv = if trans_b {
                    b[j * k + kk]
                } else {
                    b[kk * n + j]
                };
                s += av.to_f64() * bv.to_f64();
            }
            out[i * n + j] = T::from_f64(s);
        }
    }
    Ok(())
}

/// `act(x)` in `f64`, from the textbook formulas.
pub fn activation(act: Activation, x: f64) -> f64 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Gelu => {
            let u = (2.0 / core::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        }
    }
}

/// Reference [`Kernels::dense`](crate::Kernels::dense).
#[allow(clippy::too_many_arguments)]
pub fn dense(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
) -> Result<(), KernelError> {
    validate::dense(x.len(), m, k, w.len(), n, bias.map(<[f32]>::len), out.len())?;
    for i in 0..m {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |b| f64::from(b[j]));
            for kk in 0..k {
                s += f64::from(x[i * k + kk]) * f64::from(w[j * k + kk]);
            }
            out[i * n + j] = activation(act, s) as f32;
        }
    }
    Ok(())
}

/// Calls `f(x index, w index, out index)` for every product term of a convolution: each
/// output element, input channel of its group and kernel tap that falls inside the input.
fn conv2d_terms(
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    out_shape: [usize; 4],
    p: &Conv2dParams,
    mut f: impl FnMut(usize, usize, usize),
) {
    let [n, c, h, wd] = x_shape;
    let [oc, cg, kh, kw] = w_shape;
    let [_, _, oh, ow] = out_shape;
    let ocg = oc / p.groups;
    for b in 0..n {
        for o in 0..oc {
            let g = o / ocg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let oi = ((b * oc + o) * oh + oy) * ow + ox;
                    for ci in 0..cg {
                        let ch = g * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let y = (oy * p.stride.0 + ky * p.dilation.0) as isize
                                    - p.padding.0 as isize;
                                let xx = (ox * p.stride.1 + kx * p.dilation.1) as isize
                                    - p.padding.1 as isize;
                                if y < 0 || xx < 0 || y as usize >= h || xx as usize >= wd {
                                    continue;
                                }
                                let xi = ((b * c + ch) * h + y as usize) * wd + xx as usize;
                                let wi = ((o * cg + ci) * kh + ky) * kw + kx;
                                f(xi, wi, oi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Rounds the `f64` sums `acc` into `out`.
fn store<T: Real>(acc: &[f64], out: &mut [T]) {
    for (o, &v) in out.iter_mut().zip(acc) {
        *o = T::from_f64(v);
    }
}

/// Reference [`Kernels::conv2d`](crate::Kernels::conv2d).
#[allow(clippy::too_many_arguments)]
pub fn conv2d<T: Real>(
    x: &[T],
    x_shape: [usize; 4],
    w: &[T],
    w_shape: [usize; 4],
    bias: Option<&[T]>,
    p: &Conv2dParams,
    act: Activation,
    out: &mut [T],
) -> Result<(), KernelError> {
    let out_shape = validate::conv2d(
        x.len(),
        x_shape,
        w.len(),
        w_shape,
        bias.map(<[T]>::len),
        p,
        out.len(),
    )?;
    let [_, oc, oh, ow] = out_shape;
    let mut acc: Vec<f64> = (0..out.len())
        .map(|i| bias.map_or(0.0, |b| b[i / (oh * ow) % oc].to_f64()))
        .collect();
    conv2d_terms(x_shape, w_shape, out_shape, p, |xi, wi, oi| {
        acc[oi] += x[xi].to_f64() * w[wi].to_f64();
    });
    for a in &mut acc {
        *a = activation(act, *a);
    }
    store(&acc, out);
    Ok(())
}

/// Reference [`Kernels::conv2d_backward_input`](crate::Kernels::conv2d_backward_input):
/// `dx[xi] = Σ dy[oi] · w[wi]` over the product terms that read `x[xi]`.
pub fn conv2d_backward_input<T: Real>(
    dy: &[T],
    w: &[T],
    w_shape: [usize; 4],
    x_shape: [usize; 4],
    p: &Conv2dParams,
    dx: &mut [T],
) -> Result<(), KernelError> {
    let out_shape =
        validate::conv2d_backward_input(dy.len(), w.len(), w_shape, x_shape, p, dx.len())?;
    let mut acc = vec![0.0; dx.len()];
    conv2d_terms(x_shape, w_shape, out_shape, p, |xi, wi, oi| {
        acc[xi] += dy[oi].to_f64() * w[wi].to_f64();
    });
    store(&acc, dx);
    Ok(())
}

/// Reference [`Kernels::conv2d_backward_weights`](crate::Kernels::conv2d_backward_weights):
/// `dw[wi] = Σ dy[oi] · x[xi]` over the product terms that use `w[wi]`, `db[o]` the sum of
/// `dy` over the batch and pixels of channel `o`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weights<T: Real>(
    x: &[T],
    x_shape: [usize; 4],
    dy: &[T],
    w_shape: [usize; 4],
    p: &Conv2dParams,
    dw: &mut [T],
    db: Option<&mut [T]>,
) -> Result<(), KernelError> {
    let out_shape = validate::conv2d_backward_weights(
        x.len(),
        x_shape,
        dy.len(),
        w_shape,
        p,
        dw.len(),
        db.as_deref().map(<[T]>::len),
    )?;
    let mut acc = vec![0.0; dw.len()];
    conv2d_terms(x_shape, w_shape, out_shape, p, |xi, wi, oi| {
        acc[wi] += dy[oi].to_f64() * x[xi].to_f64();
    });
    store(&acc, dw);
    if let Some(db) = db {
        let [_, oc, oh, ow] = out_shape;
        let mut sums = vec![0.0; oc];
        for (i, v) in dy.iter().enumerate() {
            sums[i / (oh * ow) % oc] += v.to_f64();
        }
        store(&sums, db);
    }
    Ok(())
}

/// Shared pooling loop: `reduce` folds the in-bounds window values, `finish` turns the
/// folded value into the output.
fn pool2d(
    x: &[f32],
    x_shape: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
    init: f64,
    reduce: impl Fn(f64, f64) -> f64,
    finish: impl Fn(f64) -> f64,
) -> Result<(), KernelError> {
    let [n, c, h, w] = x_shape;
    let [_, _, oh, ow] = validate::pool2d(x.len(), x_shape, p, out.len())?;
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = init;
                for ky in 0..p.kernel.0 {
                    for kx in 0..p.kernel.1 {
                        let y = (oy * p.stride.0 + ky) as isize - p.padding.0 as isize;
                        let xx = (ox * p.stride.1 + kx) as isize - p.padding.1 as isize;
                        if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                            let v = x[(plane * h + y as usize) * w + xx as usize];
                            acc = reduce(acc, f64::from(v));
                        }
                    }
                }
                out[(plane * oh + oy) * ow + ox] = finish(acc) as f32;
            }
        }
    }
    Ok(())
}

/// Reference [`Kernels::max_pool2d`](crate::Kernels::max_pool2d).
pub fn max_pool2d(
    x: &[f32],
    x_shape: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
) -> Result<(), KernelError> {
    pool2d(x, x_shape, p, out, f64::NEG_INFINITY, f64::max, |v| v)
}

/// Reference [`Kernels::avg_pool2d`](crate::Kernels::avg_pool2d) (`count_include_pad=True`).
pub fn avg_pool2d(
    x: &[f32],
    x_shape: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let count = (p.kernel.0 * p.kernel.1) as f64;
    pool2d(x, x_shape, p, out, 0.0, |a, b| a + b, |s| s / count)
}

/// Reference [`Kernels::global_avg_pool`](crate::Kernels::global_avg_pool).
pub fn global_avg_pool(x: &[f32], x_shape: [usize; 4], out: &mut [f32]) -> Result<(), KernelError> {
    let plane = validate::global_avg_pool(x.len(), x_shape, out.len())?;
    for (i, o) in out.iter_mut().enumerate() {
        let s: f64 = x[i * plane..(i + 1) * plane]
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        *o = (s / plane as f64) as f32;
    }
    Ok(())
}

/// Reference [`Kernels::activate`](crate::Kernels::activate).
pub fn activate(x: &mut [f32], act: Activation) {
    for v in x {
        *v = activation(act, f64::from(*v)) as f32;
    }
}

/// Reference [`Kernels::softmax`](crate::Kernels::softmax).
pub fn softmax(x: &mut [f32], row_len: usize) -> Result<(), KernelError> {
    validate::softmax(x.len(), row_len)?;
    for row in x.chunks_exact_mut(row_len) {
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let total: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for v in row {
            *v = ((f64::from(*v) - max).exp() / total) as f32;
        }
    }
    Ok(())
}

/// Reference [`Kernels::add`](crate::Kernels::add).
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    validate::broadcast(a.len(), b.len(), out.len())?;
    for (i, o) in out.iter_mut().enumerate() {
        *o = a[i] + b[i % b.len()];
    }
    Ok(())
}

/// Reference [`Kernels::mul`](crate::Kernels::mul).
pub fn mul(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    validate::broadcast(a.len(), b.len(), out.len())?;
    for (i, o) in out.iter_mut().enumerate() {
        *o = a[i] * b[i % b.len()];
    }
    Ok(())
}
