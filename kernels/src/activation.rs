//! Element-wise activations and the vectorised transcendental functions behind them.
//!
//! `exp` reduces by `ln 2` (as Cephes `expf`), takes a degree-5 polynomial fitted for
//! relative error and builds `2^n` in the exponent bits; `tanh` uses the Cephes odd
//! polynomial for `|x| < 0.625` and `(1 - e^{-2|x|}) / (1 + e^{-2|x|})` beyond it; the
//! sigmoid is evaluated on `e^{-|x|}` so that neither tail cancels. All of them are written
//! once, generic over [`pulp::Simd`].

use pulp::Simd;

/// Element-wise activation, fused into [`dense`](crate::Kernels::dense) and
/// [`conv2d`](crate::Kernels::conv2d).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^{-x})`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// GELU, tanh approximation: `0.5x(1 + tanh(sqrt(2/π)(x + 0.044715x³)))`.
    Gelu,
    /// GELU, exact: `x·Φ(x) = 0.5x(1 + erf(x/√2))` (PyTorch's default, BERT's `gelu`).
    GeluErf,
}

impl Activation {
    /// Whether the activation costs tens of instructions per vector (an `exp`, a division, a
    /// polynomial), rather than one or none.
    #[inline(always)]
    pub(crate) fn is_transcendental(self) -> bool {
        !matches!(self, Activation::None | Activation::Relu)
    }
}

/// Below this, `e^x` is flushed to zero (`e^-87.3` is close to the smallest normal `f32`).
const EXP_LO: f32 = -87.3;
/// Above this, `e^x` saturates (keeps `2^n` within the exponent range).
const EXP_HI: f32 = 88.0;

/// `1.5·2^23` (12,582,912.0) as bits: added to `x·log2(e)`, rounds it to an integer held
/// in the low mantissa bits.
const MAGIC_BITS: u32 = 0x4b40_0000;

/// Vectorised `e^x`, within 1.6e-7 relative (about 3 ulp) in the normal range.
#[inline(always)]
pub(crate) fn exp<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    exp_n(simd, [x])[0]
}

/// [`exp`] of `N` vectors at once, step by step across all of them: one vector's `exp` is a
/// chain of about fifteen dependent operations, longer than the FP scheduler can look ahead
/// past, so a loop of single `exp`s waits on latency; interleaved, the `N` chains fill it.
#[inline(always)]
pub(crate) fn exp_n<S: Simd, const N: usize>(simd: S, x: [S::f32s; N]) -> [S::f32s; N] {
    let (lo, hi) = (simd.splat_f32s(EXP_LO), simd.splat_f32s(EXP_HI));
    let mut clamped = x;
    for v in &mut clamped {
        *v = simd.min_f32s(simd.max_f32s(*v, lo), hi);
    }
    // Round x·log2(e) to the nearest integer n by adding 1.5·2^23: n ends up in the low
    // mantissa bits of `t`.
    let magic = simd.splat_f32s(f32::from_bits(MAGIC_BITS));
    let log2e = simd.splat_f32s(core::f32::consts::LOG2_E);
    let mut t = clamped;
    for v in &mut t {
        *v = simd.mul_add_e_f32s(*v, log2e, magic);
    }
    // r = x - n·ln2, with ln2 split in two for accuracy.
    let mut r = clamped;
    for (r, &t) in r.iter_mut().zip(&t) {
        let n = simd.sub_f32s(t, magic);
        *r = simd.mul_add_e_f32s(n, simd.splat_f32s(-0.693_359_4), *r);
        *r = simd.mul_add_e_f32s(n, simd.splat_f32s(2.121_944_4e-4), *r);
    }
    // e^r on [-ln2/2, ln2/2]: a degree-5 polynomial with e^0 = 1 exactly, fitted for least
    // maximum relative error (9.2e-8; 1.6e-7 in f32 with the reduction above).
    let mut p = [simd.splat_f32s(8.290_303e-3); N];
    for c in [4.189_792_3e-2, 0.166_676_36, 0.499_991_5, 0.999_999_7, 1.0] {
        let c = simd.splat_f32s(c);
        for (p, &r) in p.iter_mut().zip(&r) {
            *p = simd.mul_add_e_f32s(*p, r, c);
        }
    }
    // 2^n: biased exponent (n + 127) shifted into place; `t`'s bits are magic's bits + n, so
    // one wrapping add gives n + 127 and a shift (not a multiply: `vpmulld` is two µops on
    // the FMA port) puts it in the exponent field. Below `EXP_LO` the result is zero.
    let bias = simd.splat_u32s(127u32.wrapping_sub(MAGIC_BITS));
    let mut y = p;
    for ((y, &t), &x) in y.iter_mut().zip(&t).zip(&x) {
        let biased = simd.add_u32s(simd.transmute_u32s_f32s(t), bias);
        let bits = simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23));
        let v = simd.mul_f32s(*y, simd.transmute_f32s_u32s(bits));
        let underflow = simd.less_than_f32s(x, lo);
        *y = simd.select_f32s(underflow, simd.splat_f32s(0.0), v);
    }
    y
}

/// Vectorised logistic sigmoid, accurate in both tails.
#[inline(always)]
pub(crate) fn sigmoid<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let one = simd.splat_f32s(1.0);
    let e = exp(simd, simd.neg_f32s(simd.abs_f32s(x)));
    let s = simd.div_f32s(one, simd.add_f32s(one, e));
    let nonneg = simd.greater_than_or_equal_f32s(x, simd.splat_f32s(0.0));
    simd.select_f32s(nonneg, s, simd.mul_f32s(e, s))
}

/// Vectorised hyperbolic tangent.
#[inline(always)]
pub(crate) fn tanh<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let one = simd.splat_f32s(1.0);
    let a = simd.abs_f32s(x);
    // Small |x|: odd polynomial (Cephes tanhf).
    let z = simd.mul_f32s(x, x);
    let mut p = simd.splat_f32s(-5.704_988_7e-3);
    for c in [2.063_909e-2, -5.373_971_6e-2, 0.133_314_42, -0.333_332_8] {
        p = simd.mul_add_e_f32s(p, z, simd.splat_f32s(c));
    }
    let small = simd.mul_add_e_f32s(simd.mul_f32s(p, z), x, x);
    // Large |x|: from e^{-2|x|}, then restore the sign.
    let e = exp(simd, simd.mul_f32s(a, simd.splat_f32s(-2.0)));
    let t = simd.div_f32s(simd.sub_f32s(one, e), simd.add_f32s(one, e));
    let negative = simd.less_than_f32s(x, simd.splat_f32s(0.0));
    let large = simd.select_f32s(negative, simd.neg_f32s(t), t);
    let is_small = simd.less_than_f32s(a, simd.splat_f32s(0.625));
    simd.select_f32s(is_small, small, large)
}

/// Vectorised GELU (tanh approximation), computed as `x · sigmoid(2u)`, which equals
/// `0.5x(1 + tanh(u))` but does not cancel for negative `x`.
#[inline(always)]
pub(crate) fn gelu<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    // 2·sqrt(2/π) and 2·sqrt(2/π)·0.044715.
    const C1: f32 = 1.595_769;
    const C3: f32 = C1 * 0.044_715;
    let x2 = simd.mul_f32s(x, x);
    let inner = simd.mul_add_e_f32s(simd.splat_f32s(C3), x2, simd.splat_f32s(C1));
    let two_u = simd.mul_f32s(inner, x);
    simd.mul_f32s(x, sigmoid(simd, two_u))
}

/// Vectorised exact GELU, `x·Φ(x)`, with `erfc(|x|/√2)` from the Chebyshev fit of
/// Numerical Recipes' `erfcc` (relative error below 1.2e-7 everywhere): `Φ(x) = 1 - erfc/2`
/// for `x ≥ 0` and `erfc/2` below, so the negative tail keeps its relative accuracy.
#[inline(always)]
pub(crate) fn gelu_erf<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    gelu_erf_n(simd, [x])[0]
}

/// [`gelu_erf`] of `N` vectors at once, step by step across all of them (as [`exp_n`]: one
/// vector's chain, a division, ten multiply-adds and an `exp`, is far longer than the FP
/// scheduler looks ahead).
#[inline(always)]
pub(crate) fn gelu_erf_n<S: Simd, const N: usize>(simd: S, x: [S::f32s; N]) -> [S::f32s; N] {
    let one = simd.splat_f32s(1.0);
    let half = simd.splat_f32s(0.5);
    let inv_sqrt2 = simd.splat_f32s(core::f32::consts::FRAC_1_SQRT_2);
    // z = |x|/√2, t = 1/(1 + z/2); z² is all that is kept of z.
    let (mut t, mut z2) = (x, x);
    for ((t, z2), &x) in t.iter_mut().zip(&mut z2).zip(&x) {
        let z = simd.mul_f32s(simd.abs_f32s(x), inv_sqrt2);
        *t = simd.div_f32s(one, simd.mul_add_e_f32s(half, z, one));
        *z2 = simd.mul_f32s(z, z);
    }
    let mut p = [simd.splat_f32s(0.170_872_77); N];
    for c in [
        -0.822_152_23,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
        -1.265_512_2,
    ] {
        let c = simd.splat_f32s(c);
        for (p, &t) in p.iter_mut().zip(&t) {
            *p = simd.mul_add_e_f32s(*p, t, c);
        }
    }
    // erfc(z)/2 = t·e^{p - z²}/2.
    for (p, &z2) in p.iter_mut().zip(&z2) {
        *p = simd.sub_f32s(*p, z2);
    }
    let e = exp_n(simd, p);
    let mut y = x;
    for ((y, &t), &e) in y.iter_mut().zip(&t).zip(&e) {
        let tail = simd.mul_f32s(simd.mul_f32s(t, e), half);
        let nonneg = simd.greater_than_or_equal_f32s(*y, simd.splat_f32s(0.0));
        let phi = simd.select_f32s(nonneg, simd.sub_f32s(one, tail), tail);
        *y = simd.mul_f32s(*y, phi);
    }
    y
}

/// Applies `act` to one vector.
#[inline(always)]
pub(crate) fn apply<S: Simd>(simd: S, act: Activation, x: S::f32s) -> S::f32s {
    match act {
        Activation::None => x,
        Activation::Relu => simd.max_f32s(x, simd.splat_f32s(0.0)),
        Activation::Sigmoid => sigmoid(simd, x),
        Activation::Tanh => tanh(simd, x),
        Activation::Gelu => gelu(simd, x),
        Activation::GeluErf => gelu_erf(simd, x),
    }
}

/// [`apply`] to `N` vectors; the exact GELU's chains interleaved ([`gelu_erf_n`]).
#[inline(always)]
pub(crate) fn apply_n<S: Simd, const N: usize>(
    simd: S,
    act: Activation,
    x: [S::f32s; N],
) -> [S::f32s; N] {
    if act == Activation::GeluErf {
        return gelu_erf_n(simd, x);
    }
    let mut y = x;
    for y in &mut y {
        *y = apply(simd, act, *y);
    }
    y
}

/// Applies `act` in place to every element of `x`.
#[inline(always)]
pub(crate) fn apply_slice<S: Simd>(simd: S, act: Activation, x: &mut [f32]) {
    if act == Activation::None {
        return;
    }
    let (head, tail) = S::as_mut_simd_f32s(x);
    let mut quads = head.chunks_exact_mut(4);
    for quad in &mut quads {
        let y = apply_n(simd, act, [quad[0], quad[1], quad[2], quad[3]]);
        quad.copy_from_slice(&y);
    }
    for v in quads.into_remainder() {
        *v = apply(simd, act, *v);
    }
    if !tail.is_empty() {
        let v = apply(simd, act, crate::vmem::partial_load(simd, tail));
        crate::vmem::partial_store(simd, tail, v);
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::activate`](crate::Kernels::activate).
pub(crate) struct Activate<'a> {
    pub(crate) x: &'a mut [f32],
    pub(crate) act: Activation,
}

impl pulp::WithSimd for Activate<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        apply_slice(simd, self.act, self.x);
    }
}

/// Vectorised `ln(1 + e)` for `e` in `[0, 1]`: `2·atanh(s)` with `s = e / (2 + e)` in
/// `[0, 1/3]`, summed to the `s¹⁵` term (the first term left out is below `1e-9`).
#[inline(always)]
pub(crate) fn ln_1p_unit<S: Simd>(simd: S, e: S::f32s) -> S::f32s {
    let s = simd.div_f32s(e, simd.add_f32s(simd.splat_f32s(2.0), e));
    let s2 = simd.mul_f32s(s, s);
    // 2·(1 + s²/3 + s⁴/5 + … + s¹⁴/15), by Horner in s².
    let mut p = simd.splat_f32s(2.0 / 15.0);
    for c in [
        2.0 / 13.0,
        2.0 / 11.0,
        2.0 / 9.0,
        2.0 / 7.0,
        2.0 / 5.0,
        2.0 / 3.0,
        2.0,
    ] {
        p = simd.mul_add_e_f32s(p, s2, simd.splat_f32s(c));
    }
    simd.mul_f32s(p, s)
}

/// The [`pulp::WithSimd`] op behind
/// [`Kernels::activation_backward`](crate::Kernels::activation_backward): `dx = dy ·
/// act'(x)` from the activation's output `y`. Lengths are validated by the caller and `act`
/// is not [`Activation::Gelu`] or [`Activation::GeluErf`].
pub(crate) struct ActivationBackward<'a> {
    pub(crate) y: &'a [f32],
    pub(crate) dy: &'a [f32],
    pub(crate) act: Activation,
    pub(crate) dx: &'a mut [f32],
}

impl pulp::WithSimd for ActivationBackward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { y, dy, act, dx } = self;
        let one = simd.splat_f32s(1.0);
        let zero = simd.splat_f32s(0.0);
        let grad = |y: S::f32s, g: S::f32s| match act {
            Activation::Relu => simd.select_f32s(simd.greater_than_f32s(y, zero), g, zero),
            Activation::Sigmoid => simd.mul_f32s(g, simd.mul_f32s(y, simd.sub_f32s(one, y))),
            Activation::Tanh => simd.mul_f32s(g, simd.mul_add_e_f32s(simd.neg_f32s(y), y, one)),
            Activation::None | Activation::Gelu | Activation::GeluErf => g,
        };
        let lanes = S::F32_LANES;
        let mut c = 0;
        while c < dx.len() {
            let n = lanes.min(dx.len() - c);
            let r = c..c + n;
            let v = grad(
                crate::vmem::load(simd, &y[r.clone()]),
                crate::vmem::load(simd, &dy[r.clone()]),
            );
            crate::vmem::store(simd, &mut dx[r], v);
            c += lanes;
        }
    }
}
