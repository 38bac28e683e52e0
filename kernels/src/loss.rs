//! Loss functions with their gradients, as PyTorch defines them with `reduction='mean'`:
//! softmax cross-entropy on logits with class labels (`CrossEntropyLoss`), mean squared error
//! (`MSELoss`) and binary cross-entropy on logits (`BCEWithLogitsLoss`). Each op writes the
//! gradient of the mean loss with respect to its input and returns the loss.
//!
//! Per-element terms are vector code (the `exp` of [`activation`](crate::activation), and
//! `ln(1 + e^{-|z|})` by [`ln_1p_unit`]); sums are taken per vector in `f32` and added up in
//! `f64` per row or block, so long inputs lose no precision to the running total.

use pulp::Simd;

use crate::activation::{exp, ln_1p_unit};
use crate::vmem::{first_lanes, load, store};

/// Elements per block whose vector sum is folded into the `f64` total.
const BLOCK: usize = 1024;

/// `Σ f(i, values at i)` over `len` elements in vector steps: `f` gets the element offset and
/// the lane count and returns the vector of terms (lanes past the count must be zero).
#[inline(always)]
fn sum_blocks<S: Simd>(simd: S, len: usize, mut f: impl FnMut(usize, usize) -> S::f32s) -> f64 {
    let lanes = S::F32_LANES;
    let mut total = 0.0f64;
    let mut b0 = 0;
    while b0 < len {
        let b1 = (b0 + BLOCK).min(len);
        let mut acc = [simd.splat_f32s(0.0); 2];
        let mut c = b0;
        let mut i = 0;
        while c < b1 {
            let n = lanes.min(b1 - c);
            acc[i & 1] = simd.add_f32s(acc[i & 1], f(c, n));
            c += lanes;
            i += 1;
        }
        total += f64::from(simd.reduce_sum_f32s(simd.add_f32s(acc[0], acc[1])));
        b0 = b1;
    }
    total
}

/// The [`pulp::WithSimd`] op behind
/// [`Kernels::softmax_cross_entropy`](crate::Kernels::softmax_cross_entropy); lengths and
/// labels are validated by the caller (`classes > 0`, at least one row). Returns the mean loss.
pub(crate) struct SoftmaxCrossEntropy<'a> {
    pub(crate) logits: &'a [f32],
    pub(crate) labels: &'a [u32],
    pub(crate) classes: usize,
    pub(crate) grad: &'a mut [f32],
}

impl pulp::WithSimd for SoftmaxCrossEntropy<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let Self {
            logits,
            labels,
            classes,
            grad,
        } = self;
        let lanes = S::F32_LANES;
        let rows = labels.len();
        let inv_rows = 1.0 / rows as f32;
        let mut loss = 0.0f64;
        for ((z, g), &label) in logits
            .chunks_exact(classes)
            .zip(grad.chunks_exact_mut(classes))
            .zip(labels)
        {
            let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mv = simd.splat_f32s(max);
            // g = e^(z - max), summed.
            let sum = sum_blocks(simd, classes, |c, n| {
                let e = exp(simd, simd.sub_f32s(load(simd, &z[c..c + n]), mv));
                store(simd, &mut g[c..c + n], e);
                first_lanes(simd, e, n)
            });
            // loss = ln Σ e^z - z[label]; grad = (softmax - onehot) / rows.
            loss += sum.ln() + f64::from(max) - f64::from(z[label as usize]);
            let scale = simd.splat_f32s((1.0 / sum) as f32 * inv_rows);
            let mut c = 0;
            while c < classes {
                let n = lanes.min(classes - c);
                let v = simd.mul_f32s(load(simd, &g[c..c + n]), scale);
                store(simd, &mut g[c..c + n], v);
                c += lanes;
            }
            g[label as usize] -= inv_rows;
        }
        (loss / rows as f64) as f32
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::mse`](crate::Kernels::mse); lengths are
/// validated by the caller (equal, non-zero). Returns the mean loss.
pub(crate) struct Mse<'a> {
    pub(crate) pred: &'a [f32],
    pub(crate) target: &'a [f32],
    pub(crate) grad: &'a mut [f32],
}

impl pulp::WithSimd for Mse<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let Self { pred, target, grad } = self;
        let len = pred.len();
        let scale = simd.splat_f32s(2.0 / len as f32);
        let total = sum_blocks(simd, len, |c, n| {
            let d = simd.sub_f32s(load(simd, &pred[c..c + n]), load(simd, &target[c..c + n]));
            store(simd, &mut grad[c..c + n], simd.mul_f32s(d, scale));
            // Lanes past `n` loaded as zeros on both sides: their difference is zero.
            simd.mul_f32s(d, d)
        });
        (total / len as f64) as f32
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::bce_with_logits`](crate::Kernels::bce_with_logits);
/// lengths are validated by the caller (equal, non-zero). Returns the mean loss.
///
/// Per element, in the form that neither overflows nor cancels: `loss = max(z, 0) - z·t +
/// ln(1 + e^{-|z|})` and `grad = (σ(z) - t) / len`, with `σ(z)` from the same `e^{-|z|}`.
pub(crate) struct BceWithLogits<'a> {
    pub(crate) logits: &'a [f32],
    pub(crate) target: &'a [f32],
    pub(crate) grad: &'a mut [f32],
}

impl pulp::WithSimd for BceWithLogits<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let Self {
            logits,
            target,
            grad,
        } = self;
        let len = logits.len();
        let inv = simd.splat_f32s(1.0 / len as f32);
        let zero = simd.splat_f32s(0.0);
        let one = simd.splat_f32s(1.0);
        let total = sum_blocks(simd, len, |c, n| {
            let z = load(simd, &logits[c..c + n]);
            let t = load(simd, &target[c..c + n]);
            let e = exp(simd, simd.neg_f32s(simd.abs_f32s(z)));
            let s = simd.div_f32s(one, simd.add_f32s(one, e));
            let nonneg = simd.greater_than_or_equal_f32s(z, zero);
            let sigma = simd.select_f32s(nonneg, s, simd.mul_f32s(e, s));
            store(
                simd,
                &mut grad[c..c + n],
                simd.mul_f32s(simd.sub_f32s(sigma, t), inv),
            );
            let term = simd.add_f32s(
                simd.sub_f32s(simd.max_f32s(z, zero), simd.mul_f32s(z, t)),
                ln_1p_unit(simd, e),
            );
            // Padding lanes (z = 0) would add ln 2 each.
            first_lanes(simd, term, n)
        });
        (total / len as f64) as f32
    }
}
