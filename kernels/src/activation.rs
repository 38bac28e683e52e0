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
    let mut t = x;
    let mut r = x;
    for ((t, r), &x) in t.iter_mut().zip(&mut r).zip(&x) {
        (*t, *r) = exp_reduce(simd, simd.min_f32s(simd.max_f32s(x, lo), hi));
    }
    // e^r by Horner: alone, `exp` is bound by throughput, not by this chain.
    let mut p = [simd.splat_f32s(EXP_POLY[5]); N];
    for &c in EXP_POLY[..5].iter().rev() {
        let c = simd.splat_f32s(c);
        for (p, &r) in p.iter_mut().zip(&r) {
            *p = simd.mul_add_e_f32s(*p, r, c);
        }
    }
    // Below `EXP_LO` the result is zero.
    let mut y = p;
    for ((y, &t), &x) in y.iter_mut().zip(&t).zip(&x) {
        let v = simd.mul_f32s(*y, exp_scale(simd, t));
        let underflow = simd.less_than_f32s(x, lo);
        *y = simd.select_f32s(underflow, simd.splat_f32s(0.0), v);
    }
    y
}

/// `e^r` on `[-ln2/2, ln2/2]`: the coefficients of `r⁰ … r⁵` of a degree-5 polynomial with
/// `e^0 = 1` exactly, fitted for least maximum relative error (9.2e-8; 1.6e-7 in f32 with the
/// reduction of [`exp_reduce`]).
const EXP_POLY: [f32; 6] = [
    1.0,
    0.999_999_7,
    0.499_991_5,
    0.166_676_36,
    4.189_792_3e-2,
    8.290_303e-3,
];

/// `exp`'s range reduction of `a` (within `[EXP_LO, EXP_HI]`): `(t, r)` with `a = n·ln2 + r`,
/// `|r| ≤ ln2/2`, and `n` held in the low mantissa bits of `t` (for [`exp_scale`]).
#[inline(always)]
fn exp_reduce<S: Simd>(simd: S, a: S::f32s) -> (S::f32s, S::f32s) {
    // Round a·log2(e) to the nearest integer n by adding 1.5·2^23.
    let magic = simd.splat_f32s(f32::from_bits(MAGIC_BITS));
    let t = simd.mul_add_e_f32s(a, simd.splat_f32s(core::f32::consts::LOG2_E), magic);
    // r = a - n·ln2, with ln2 split in two for accuracy.
    let n = simd.sub_f32s(t, magic);
    let r = simd.mul_add_e_f32s(n, simd.splat_f32s(-0.693_359_4), a);
    (
        t,
        simd.mul_add_e_f32s(n, simd.splat_f32s(2.121_944_4e-4), r),
    )
}

/// `2^n` for the `t` of [`exp_reduce`]: `t`'s bits are magic's bits + n, so one wrapping add
/// gives the biased exponent n + 127 and a shift (not a multiply: `vpmulld` is two µops on
/// the FMA port) puts it in the exponent field.
#[inline(always)]
fn exp_scale<S: Simd>(simd: S, t: S::f32s) -> S::f32s {
    let bias = simd.splat_u32s(127u32.wrapping_sub(MAGIC_BITS));
    let biased = simd.add_u32s(simd.transmute_u32s_f32s(t), bias);
    simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23)))
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
/// for `x ≥ 0` and `erfc/2` below, so the negative tail keeps its relative accuracy (within
/// a few 1e-6 in f32, from the rounding of `x²/2`) down to `x = -12.6`; below that, where
/// `|x·Φ(x)| < 1e-34`, a finite `x` gives `-0.0`.
#[inline(always)]
pub(crate) fn gelu_erf<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    gelu_erf_n(simd, [x])[0]
}

/// [`gelu_erf`] of `N` vectors at once, step by step across all of them. One vector's chain
/// (a division, the erfc polynomial, an `exp`) is far longer than the FP scheduler looks
/// ahead, so both polynomials are evaluated by Estrin's scheme (powers of `t` and `r` beside
/// pairs of terms) rather than by Horner's, which halves the chain for three more multiplies;
/// and the `exp` argument is clamped through `z²` (off the chain) instead of at the `exp`.
/// Zen 3 AVX2, 128 × 1536 values (old and new builds alternated): 1.06–1.20 → 0.90–0.92 ns
/// each.
#[inline(always)]
pub(crate) fn gelu_erf_n<S: Simd, const N: usize>(simd: S, x: [S::f32s; N]) -> [S::f32s; N] {
    // Numerical Recipes' `erfcc`: erfc(z) = t·e^{P(t) - z²}, t = 1/(1 + z/2), coefficients
    // of t⁰ … t⁹.
    const ERFC_POLY: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_23,
        0.170_872_77,
    ];
    // P(t) lies in [-1.27, 0.001], so with z² clamped to 80 the exponent stays above
    // `EXP_LO`. Beyond it (|x| > 12.6, erfc/2 < 1e-35) the tail is taken as zero: not
    // clamped to a subnormal, which costs a microcode assist per product on AMD cores.
    const Z2_MAX: f32 = 80.0;
    let one = simd.splat_f32s(1.0);
    let half = simd.splat_f32s(0.5);
    let c = |i: usize| simd.splat_f32s(ERFC_POLY[i]);
    let e = |i: usize| simd.splat_f32s(EXP_POLY[i]);
    let inv_sqrt2 = simd.splat_f32s(core::f32::consts::FRAC_1_SQRT_2);
    // z = |x|/√2, t = 1/(1 + z/2); z² (clamped) is all that is kept of z, and where it was
    // clamped.
    let (mut t, mut z2) = (x, x);
    let zero = simd.splat_f32s(0.0);
    // All lanes false until computed below.
    let mut far = [simd.less_than_f32s(zero, zero); N];
    for (((t, z2), far), &x) in t.iter_mut().zip(&mut z2).zip(&mut far).zip(&x) {
        let z = simd.mul_f32s(simd.abs_f32s(x), inv_sqrt2);
        *t = simd.div_f32s(one, simd.mul_add_e_f32s(half, z, one));
        let zz = simd.mul_f32s(z, z);
        *far = simd.greater_than_or_equal_f32s(zz, simd.splat_f32s(Z2_MAX));
        *z2 = simd.min_f32s(zz, simd.splat_f32s(Z2_MAX));
    }
    // a = P(t) - z² (in [EXP_LO, 0.001]).
    let mut a = x;
    for ((a, &t), &z2) in a.iter_mut().zip(&t).zip(&z2) {
        let t2 = simd.mul_f32s(t, t);
        let t4 = simd.mul_f32s(t2, t2);
        let q0 = simd.mul_add_e_f32s(c(1), t, simd.sub_f32s(c(0), z2));
        let q1 = simd.mul_add_e_f32s(c(3), t, c(2));
        let q2 = simd.mul_add_e_f32s(c(5), t, c(4));
        let q3 = simd.mul_add_e_f32s(c(7), t, c(6));
        let q4 = simd.mul_add_e_f32s(c(9), t, c(8));
        let low = simd.mul_add_e_f32s(q1, t2, q0);
        let high = simd.mul_add_e_f32s(q4, t4, simd.mul_add_e_f32s(q3, t2, q2));
        *a = simd.mul_add_e_f32s(high, t4, low);
    }
    // erfc(z)/2 = (t/2 · 2^n) · e^r; Φ(x) = 1 - erfc/2 for x ≥ 0 and erfc/2 below, so the
    // negative tail keeps its relative accuracy (and x = ±∞ gives x·1 or x·0 as the oracle).
    let mut y = x;
    for (((y, &a), &t), &far) in y.iter_mut().zip(&a).zip(&t).zip(&far) {
        let (n, r) = exp_reduce(simd, a);
        let r2 = simd.mul_f32s(r, r);
        let r4 = simd.mul_f32s(r2, r2);
        let p01 = simd.mul_add_e_f32s(e(1), r, e(0));
        let p23 = simd.mul_add_e_f32s(e(3), r, e(2));
        let p45 = simd.mul_add_e_f32s(e(5), r, e(4));
        let p = simd.mul_add_e_f32s(p45, r4, simd.mul_add_e_f32s(p23, r2, p01));
        let tail = simd.mul_f32s(simd.mul_f32s(simd.mul_f32s(t, half), exp_scale(simd, n)), p);
        let tail = simd.select_f32s(far, zero, tail);
        let nonneg = simd.greater_than_or_equal_f32s(*y, zero);
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

/// `act` on every vector of a tile. ReLU (the activation a first conv layer fuses) and
/// none index the tile only by unrolled constants, so its vectors stay in registers; the
/// others work on a copy, which LLVM loops over in memory (their arithmetic outweighs that).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(crate) fn activate_tile<S: Simd, const R: usize, const P: usize>(
    simd: S,
    act: Activation,
    acc: &mut [[S::f32s; P]; R],
) {
    match act {
        Activation::None => {}
        Activation::Relu => {
            let zero = simd.splat_f32s(0.0);
            for r in 0..R {
                for p in 0..P {
                    acc[r][p] = simd.max_f32s(acc[r][p], zero);
                }
            }
        }
        _ => {
            let mut tile = *acc;
            for row in &mut tile {
                *row = apply_n(simd, act, *row);
            }
            *acc = tile;
        }
    }
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
