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
        Activation::GeluErf => 0.5 * x * erfc(-x / core::f64::consts::SQRT_2),
    }
}

/// The complementary error function in `f64`: the Maclaurin series of `erf` for `|x| < 3`
/// (all terms summed until they vanish), the continued fraction of `erfc` (60 levels,
/// evaluated from the bottom) beyond; `erfc(-x) = 2 - erfc(x)`.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 3.0 {
        // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)).
        let (mut term, mut sum, mut n) = (x, x, 0.0f64);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        return 1.0 - 2.0 / core::f64::consts::PI.sqrt() * sum;
    }
    // erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))).
    let mut k = x;
    for n in (1..=60).rev() {
        k = x + (n as f64 / 2.0) / k;
    }
    (-x * x).exp() / (core::f64::consts::PI.sqrt() * k)
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

/// Calls `f(plane, output index, window)` for every output of a pooling, with the input
/// indices (within the plane) of the window's elements inside the input, in row-major order.
fn pool2d_windows(
    x_shape: [usize; 4],
    out_shape: [usize; 4],
    p: &Pool2dParams,
    mut f: impl FnMut(usize, usize, &[usize]),
) {
    let [n, c, h, w] = x_shape;
    let [_, _, oh, ow] = out_shape;
    let mut window = Vec::with_capacity(p.kernel.0 * p.kernel.1);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                window.clear();
                for ky in 0..p.kernel.0 {
                    for kx in 0..p.kernel.1 {
                        let y = (oy * p.stride.0 + ky) as isize - p.padding.0 as isize;
                        let xx = (ox * p.stride.1 + kx) as isize - p.padding.1 as isize;
                        if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                            window.push(y as usize * w + xx as usize);
                        }
                    }
                }
                f(plane, (plane * oh + oy) * ow + ox, &window);
            }
        }
    }
}

/// The window element a max pooling picks: the first maximum in row-major order, a NaN
/// counting as a maximum (a later NaN over an earlier one), as PyTorch's CPU kernel.
fn arg_max<T: Real>(xp: &[T], window: &[usize]) -> usize {
    let mut best = window[0];
    let mut max = f64::NEG_INFINITY;
    for &i in window {
        let v = xp[i].to_f64();
        if v > max || v.is_nan() {
            max = v;
            best = i;
        }
    }
    best
}

/// Reference [`Kernels::max_pool2d`](crate::Kernels::max_pool2d).
pub fn max_pool2d<T: Real>(
    x: &[T],
    x_shape: [usize; 4],
    p: &Pool2dParams,
    out: &mut [T],
) -> Result<(), KernelError> {
    let out_shape = validate::pool2d(x.len(), x_shape, p, out.len())?;
    let plane = x_shape[2] * x_shape[3];
    pool2d_windows(x_shape, out_shape, p, |pl, o, window| {
        let xp = &x[pl * plane..(pl + 1) * plane];
        let max = window
            .iter()
            .fold(f64::NEG_INFINITY, |m, &i| m.max(xp[i].to_f64()));
        out[o] = T::from_f64(max);
    });
    Ok(())
}

/// Reference [`Kernels::avg_pool2d`](crate::Kernels::avg_pool2d) (`count_include_pad=True`).
pub fn avg_pool2d<T: Real>(
    x: &[T],
    x_shape: [usize; 4],
    p: &Pool2dParams,
    out: &mut [T],
) -> Result<(), KernelError> {
    let out_shape = validate::pool2d(x.len(), x_shape, p, out.len())?;
    let plane = x_shape[2] * x_shape[3];
    let count = (p.kernel.0 * p.kernel.1) as f64;
    pool2d_windows(x_shape, out_shape, p, |pl, o, window| {
        let s: f64 = window.iter().map(|&i| x[pl * plane + i].to_f64()).sum();
        out[o] = T::from_f64(s / count);
    });
    Ok(())
}

/// Reference [`Kernels::max_pool2d_backward`](crate::Kernels::max_pool2d_backward).
pub fn max_pool2d_backward<T: Real>(
    x: &[T],
    x_shape: [usize; 4],
    p: &Pool2dParams,
    dy: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    let out_shape = validate::pool2d_backward(Some(x.len()), x_shape, p, dy.len(), dx.len())?;
    let plane = x_shape[2] * x_shape[3];
    let mut acc = vec![0.0; dx.len()];
    pool2d_windows(x_shape, out_shape, p, |pl, o, window| {
        if !window.is_empty() {
            let best = arg_max(&x[pl * plane..(pl + 1) * plane], window);
            acc[pl * plane + best] += dy[o].to_f64();
        }
    });
    store(&acc, dx);
    Ok(())
}

/// Reference [`Kernels::avg_pool2d_backward`](crate::Kernels::avg_pool2d_backward).
pub fn avg_pool2d_backward<T: Real>(
    x_shape: [usize; 4],
    p: &Pool2dParams,
    dy: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    let out_shape = validate::pool2d_backward(None, x_shape, p, dy.len(), dx.len())?;
    let plane = x_shape[2] * x_shape[3];
    let count = (p.kernel.0 * p.kernel.1) as f64;
    let mut acc = vec![0.0; dx.len()];
    pool2d_windows(x_shape, out_shape, p, |pl, o, window| {
        for &i in window {
            acc[pl * plane + i] += dy[o].to_f64() / count;
        }
    });
    store(&acc, dx);
    Ok(())
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

/// Reference [`Kernels::activation_backward`](crate::Kernels::activation_backward): `dx = dy ·
/// act'` with the derivative written in terms of the output `y`.
pub fn activation_backward<T: Real>(
    y: &[T],
    dy: &[T],
    act: Activation,
    dx: &mut [T],
) -> Result<(), KernelError> {
    validate::activation_backward(y.len(), dy.len(), act, dx.len())?;
    for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
        let (y, g) = (y.to_f64(), g.to_f64());
        let slope = match act {
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            Activation::None | Activation::Gelu | Activation::GeluErf => 1.0,
        };
        *d = T::from_f64(g * slope);
    }
    Ok(())
}

/// Reference [`Kernels::softmax_cross_entropy`](crate::Kernels::softmax_cross_entropy):
/// per row `loss = ln Σ e^z - z[label]` (the maximum subtracted first), the mean over rows,
/// and its gradient `(softmax - onehot) / rows`.
pub fn softmax_cross_entropy<T: Real>(
    logits: &[T],
    labels: &[u32],
    classes: usize,
    grad: &mut [T],
) -> Result<T, KernelError> {
    validate::softmax_cross_entropy(logits.len(), labels, classes, grad.len())?;
    let rows = labels.len() as f64;
    let mut loss = 0.0;
    for ((z, g), &label) in logits
        .chunks_exact(classes)
        .zip(grad.chunks_exact_mut(classes))
        .zip(labels)
    {
        let max = z.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
        let total: f64 = z.iter().map(|v| (v.to_f64() - max).exp()).sum();
        loss += total.ln() + max - z[label as usize].to_f64();
        for (j, (g, v)) in g.iter_mut().zip(z).enumerate() {
            let onehot = if j == label as usize { 1.0 } else { 0.0 };
            *g = T::from_f64(((v.to_f64() - max).exp() / total - onehot) / rows);
        }
    }
    Ok(T::from_f64(loss / rows))
}

/// Reference [`Kernels::mse`](crate::Kernels::mse).
pub fn mse<T: Real>(pred: &[T], target: &[T], grad: &mut [T]) -> Result<T, KernelError> {
    validate::elementwise_loss("pred", pred.len(), target.len(), grad.len())?;
    let len = pred.len() as f64;
    let mut loss = 0.0;
    for ((g, p), t) in grad.iter_mut().zip(pred).zip(target) {
        let d = p.to_f64() - t.to_f64();
        loss += d * d;
        *g = T::from_f64(2.0 * d / len);
    }
    Ok(T::from_f64(loss / len))
}

/// Reference [`Kernels::bce_with_logits`](crate::Kernels::bce_with_logits): per element
/// `-(t·ln σ(z) + (1 - t)·ln(1 - σ(z)))` from the textbook formula (`ln σ(z) = -ln(1 +
/// e^{-z})`, `ln(1 - σ(z)) = -ln(1 + e^{z})`, both with `ln_1p`), the mean, and its gradient
/// `(σ(z) - t) / len`.
pub fn bce_with_logits<T: Real>(
    logits: &[T],
    target: &[T],
    grad: &mut [T],
) -> Result<T, KernelError> {
    validate::elementwise_loss("logits", logits.len(), target.len(), grad.len())?;
    let len = logits.len() as f64;
    let mut loss = 0.0;
    for ((g, z), t) in grad.iter_mut().zip(logits).zip(target) {
        let (z, t) = (z.to_f64(), t.to_f64());
        loss += t * (-z).exp().ln_1p() + (1.0 - t) * z.exp().ln_1p();
        *g = T::from_f64((1.0 / (1.0 + (-z).exp()) - t) / len);
    }
    Ok(T::from_f64(loss / len))
}

/// Reference [`Kernels::sum_rows`](crate::Kernels::sum_rows).
pub fn sum_rows<T: Real>(
    x: &[T],
    rows: usize,
    cols: usize,
    out: &mut [T],
) -> Result<(), KernelError> {
    validate::sum_rows(x.len(), rows, cols, out.len())?;
    for (j, o) in out.iter_mut().enumerate() {
        *o = T::from_f64((0..rows).map(|i| x[i * cols + j].to_f64()).sum());
    }
    Ok(())
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

/// Reference [`Kernels::layer_norm`](crate::Kernels::layer_norm), in `f64` (rows of `d`;
/// lengths as the kernel requires, unchecked beyond slicing).
pub fn layer_norm(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / d as f64;
        let inv = 1.0 / (var + f64::from(eps)).sqrt();
        for (j, o) in o.iter_mut().enumerate() {
            let norm = (f64::from(row[j]) - mean) * inv;
            *o = (norm * f64::from(gamma[j]) + f64::from(beta[j])) as f32;
        }
    }
}

/// Reference [`Kernels::attention`](crate::Kernels::attention), in `f64`: for every sequence
/// `b`, head `h` and real position `i`, the softmax of `q_i·k_j/√head_dim` over real keys
/// `j < lengths[b]` times `v_j`; padding rows are zero.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: crate::AttentionDims,
    lengths: &[usize],
    out: &mut [f32],
) {
    let crate::AttentionDims {
        batch,
        seq,
        heads,
        head_dim,
    } = dims;
    let width = heads * head_dim;
    out.fill(0.0);
    let scale = 1.0 / (head_dim as f64).sqrt();
    for b in 0..batch {
        let l = lengths[b];
        for h in 0..heads {
            let at = |t: &[f32], i: usize, c: usize| {
                f64::from(t[(b * seq + i) * width + h * head_dim + c])
            };
            for i in 0..l {
                let scores: Vec<f64> = (0..l)
                    .map(|j| {
                        (0..head_dim)
                            .map(|c| at(q, i, c) * at(k, j, c))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for c in 0..head_dim {
                    let o: f64 = (0..l).map(|j| exps[j] / total * at(v, j, c)).sum();
                    out[(b * seq + i) * width + h * head_dim + c] = o as f32;
                }
            }
        }
    }
}

/// Reference [`Kernels::mean_pool`](crate::Kernels::mean_pool), in `f64`.
pub fn mean_pool(
    x: &[f32],
    batch: usize,
    seq: usize,
    d: usize,
    lengths: &[usize],
    out: &mut [f32],
) {
    for b in 0..batch {
        for c in 0..d {
            let s: f64 = (0..lengths[b])
                .map(|i| f64::from(x[(b * seq + i) * d + c]))
                .sum();
            out[b * d + c] = (s / lengths[b] as f64) as f32;
        }
    }
}

/// Reference [`Kernels::l2_normalize`](crate::Kernels::l2_normalize), in `f64`.
pub fn l2_normalize(x: &mut [f32], d: usize, eps: f32) {
    for row in x.chunks_exact_mut(d) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = norm.max(f64::from(eps));
        for v in row {
            *v = (f64::from(*v) / norm) as f32;
        }
    }
}
