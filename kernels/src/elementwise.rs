//! Row-wise softmax, broadcasting add/mul, column sums over rows (a dense layer's bias
//! gradient), and the vector reductions they share.

use pulp::Simd;

use crate::activation::{exp, exp_n};
use crate::vmem::{load, store};

/// Sum of `x`, four vector accumulators.
#[inline(always)]
pub(crate) fn sum<S: Simd>(simd: S, x: &[f32]) -> f32 {
    let (head, tail) = S::as_simd_f32s(x);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [zero; 4];
    let chunks = head.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = simd.add_f32s(*a, v);
        }
    }
    for &v in rest {
        acc[0] = simd.add_f32s(acc[0], v);
    }
    acc[1] = simd.add_f32s(acc[1], crate::vmem::partial_load(simd, tail));
    let s = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    simd.reduce_sum_f32s(s)
}

/// Maximum of `x` (`-inf` if empty).
#[inline(always)]
fn max<S: Simd>(simd: S, x: &[f32]) -> f32 {
    let (head, tail) = S::as_simd_f32s(x);
    let mut acc = [simd.splat_f32s(f32::NEG_INFINITY); 4];
    let chunks = head.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = simd.max_f32s(*a, v);
        }
    }
    for &v in rest {
        acc[0] = simd.max_f32s(acc[0], v);
    }
    let m = simd.max_f32s(simd.max_f32s(acc[0], acc[1]), simd.max_f32s(acc[2], acc[3]));
    // The tail is folded in as scalars: a partial load would pad with zeros.
    tail.iter().fold(simd.reduce_max_f32s(m), |a, &b| a.max(b))
}

/// The [`pulp::WithSimd`] op behind [`Kernels::softmax`](crate::Kernels::softmax);
/// `x.len()` is a multiple of the non-zero `row_len`.
pub(crate) struct Softmax<'a> {
    pub(crate) x: &'a mut [f32],
    pub(crate) row_len: usize,
}

impl pulp::WithSimd for Softmax<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        softmax_rows(simd, self.x, self.row_len);
    }
}

/// `softmax(row)` of every row of `row_len` elements of `x`, in place.
#[inline(always)]
fn softmax_rows<S: Simd>(simd: S, x: &mut [f32], row_len: usize) {
    for row in x.chunks_exact_mut(row_len) {
        let inv = 1.0 / exp_row(simd, row, 1.0);
        scale(simd, row, inv);
    }
}

/// `x *= by`, element by element.
#[inline(always)]
pub(crate) fn scale<S: Simd>(simd: S, x: &mut [f32], by: f32) {
    let (head, tail) = S::as_mut_simd_f32s(x);
    let by_v = simd.splat_f32s(by);
    for v in head {
        *v = simd.mul_f32s(*v, by_v);
    }
    for v in tail {
        *v *= by;
    }
}

/// `exp(scale · (x - max x))` of every element of `row`, in place, and their sum: softmax
/// without its last division (attention divides its much narrower output rows instead).
/// `scale > 0`; the sum is at least 1 (the maximum's term) unless the row holds a NaN.
#[inline(always)]
pub(crate) fn exp_row<S: Simd>(simd: S, row: &mut [f32], scale: f32) -> f32 {
    let scale_v = simd.splat_f32s(scale);
    // scale·x - scale·max in one multiply-add.
    let shift = simd.splat_f32s(-scale * max(simd, row));
    let (head, tail) = S::as_mut_simd_f32s(row);
    // Two sums, each in a register (an array indexed by `i % 2` lives on the stack, every
    // add waiting on the store of the one before it).
    let (mut acc0, mut acc1) = (simd.splat_f32s(0.0), simd.splat_f32s(0.0));
    let mut quads = head.chunks_exact_mut(4);
    for quad in &mut quads {
        let mut x = [quad[0], quad[1], quad[2], quad[3]];
        for x in &mut x {
            *x = simd.mul_add_e_f32s(*x, scale_v, shift);
        }
        let [a, b, c, d] = exp_n(simd, x);
        quad.copy_from_slice(&[a, b, c, d]);
        acc0 = simd.add_f32s(acc0, simd.add_f32s(a, c));
        acc1 = simd.add_f32s(acc1, simd.add_f32s(b, d));
    }
    for v in quads.into_remainder() {
        *v = exp(simd, simd.mul_add_e_f32s(*v, scale_v, shift));
        acc0 = simd.add_f32s(acc0, *v);
    }
    let mut total = simd.reduce_sum_f32s(simd.add_f32s(acc0, acc1));
    if !tail.is_empty() {
        let v = crate::vmem::partial_load(simd, tail);
        let v = exp(simd, simd.mul_add_e_f32s(v, scale_v, shift));
        crate::vmem::partial_store(simd, tail, v);
        total += tail.iter().sum::<f32>();
    }
    total
}

/// A broadcasting binary operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryKind {
    /// `a + b`.
    Add,
    /// `a * b`.
    Mul,
}

/// `out[i..][..len] = a op b` on equal-length slices.
#[inline(always)]
fn binary_same<S: Simd>(simd: S, kind: BinaryKind, a: &[f32], b: &[f32], out: &mut [f32]) {
    let (ah, at) = S::as_simd_f32s(a);
    let (bh, bt) = S::as_simd_f32s(b);
    let (oh, ot) = S::as_mut_simd_f32s(out);
    let op = |x, y| match kind {
        BinaryKind::Add => simd.add_f32s(x, y),
        BinaryKind::Mul => simd.mul_f32s(x, y),
    };
    for ((o, &x), &y) in oh.iter_mut().zip(ah).zip(bh) {
        *o = op(x, y);
    }
    for ((o, &x), &y) in ot.iter_mut().zip(at).zip(bt) {
        *o = match kind {
            BinaryKind::Add => x + y,
            BinaryKind::Mul => x * y,
        };
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::add`](crate::Kernels::add) and
/// [`Kernels::mul`](crate::Kernels::mul): `b` is non-empty, its length divides `a.len()`, and
/// `out.len() == a.len()`.
pub(crate) struct Binary<'a> {
    pub(crate) a: &'a [f32],
    pub(crate) b: &'a [f32],
    pub(crate) out: &'a mut [f32],
    pub(crate) kind: BinaryKind,
}

impl pulp::WithSimd for Binary<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { a, b, out, kind } = self;
        if b.len() == 1 {
            // Scalar broadcast: splat once.
            let bv = simd.splat_f32s(b[0]);
            let (ah, at) = S::as_simd_f32s(a);
            let (oh, ot) = S::as_mut_simd_f32s(out);
            for (o, &x) in oh.iter_mut().zip(ah) {
                *o = match kind {
                    BinaryKind::Add => simd.add_f32s(x, bv),
                    BinaryKind::Mul => simd.mul_f32s(x, bv),
                };
            }
            for (o, &x) in ot.iter_mut().zip(at) {
                *o = match kind {
                    BinaryKind::Add => x + b[0],
                    BinaryKind::Mul => x * b[0],
                };
            }
            return;
        }
        for (ac, oc) in a.chunks_exact(b.len()).zip(out.chunks_exact_mut(b.len())) {
            binary_same(simd, kind, ac, b, oc);
        }
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::sum_rows`](crate::Kernels::sum_rows):
/// `out[j] = Σ_i x[i·cols + j]`; lengths are validated by the caller. Columns go four vectors
/// at a time, their sums kept in registers over every row.
pub(crate) struct SumRows<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) cols: usize,
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for SumRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { x, cols, out } = self;
        if cols == 0 {
            return;
        }
        let lanes = S::F32_LANES;
        let zero = simd.splat_f32s(0.0);
        let mut c0 = 0;
        while c0 < cols {
            let mut acc = [zero; 4];
            let width = (4 * lanes).min(cols - c0);
            for row in x.chunks_exact(cols) {
                let row = &row[c0..c0 + width];
                for (v, a) in acc.iter_mut().enumerate() {
                    let c = v * lanes;
                    if c >= width {
                        break;
                    }
                    *a = simd.add_f32s(*a, load(simd, &row[c..width.min(c + lanes)]));
                }
            }
            for (v, &a) in acc.iter().enumerate() {
                let c = v * lanes;
                if c >= width {
                    break;
                }
                store(simd, &mut out[c0 + c..c0 + width.min(c + lanes)], a);
            }
            c0 += width;
        }
    }
}
