//! Helpers shared by the kernel test suites: deterministic random data, the list of levels
//! to test, and tolerance checks against the oracle.

#![allow(dead_code)]

use tensorlet_kernels::{Activation, Conv2dParams, Kernels};

/// Every activation, for iterating and for proptest's `select`.
pub const ACTIVATIONS: [Activation; 6] = [
    Activation::None,
    Activation::Relu,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Gelu,
    Activation::GeluErf,
];

/// A kernel set for every level this CPU supports (scalar first).
pub fn all_kernels() -> Vec<Kernels> {
    Kernels::available_levels()
        .into_iter()
        .map(|l| Kernels::with_level(l).expect("listed level is available"))
        .collect()
}

/// Dense tolerance, and conv2d's off the Winograd path ([`conv_tol`]):
/// `|got - ref| <= 1e-4 · (1 + |ref|)` (f32 sums of up to a few hundred terms).
pub const TOL: f32 = 1e-4;

/// Whether the kernels run a convolution with weights `w_shape` and parameters `p` as
/// Winograd F(4 × 4, 3 × 3) (forward and weight gradient): 3 × 3 kernels, stride and
/// dilation 1, one group, at least 16 channels in and out (and an output that fills most of
/// its tiles, which the tolerances below do not need to know).
pub fn winograd_runs(w_shape: [usize; 4], p: &Conv2dParams) -> bool {
    let [oc, cg, kh, kw] = w_shape;
    (kh, kw) == (3, 3)
        && p.stride == (1, 1)
        && p.dilation == (1, 1)
        && p.groups == 1
        && cg >= 16
        && oc >= 16
}

/// Conv2d forward tolerance, `|got - ref| <= tol · (1 + |ref|)`, for weights `w_shape` and
/// parameters `p`: [`TOL`], and 5e-4 where the kernels run Winograd ([`winograd_runs`]),
/// whose transforms scale the products' rounding: measured up to 2.4e-4 against an `f64`
/// reference on outputs of scale 5.
pub fn conv_tol(w_shape: [usize; 4], p: &Conv2dParams) -> f32 {
    if winograd_runs(w_shape, p) { 5e-4 } else { TOL }
}

/// `len` values uniform in `[lo, hi)` from a seed (SplitMix64).
pub fn random(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * unit
        })
        .collect()
}

/// Largest `|got - want| / (abs_tol + rel_tol·|want|)` ratio; `<= 1` means within tolerance.
/// Errors (as a message) if the lengths differ or any value is not finite where `want` is.
pub fn check_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    abs_tol: f32,
    rel_tol: f32,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: length {} != {}", got.len(), want.len()));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = abs_tol + rel_tol * w.abs();
        let ok = if w.is_finite() {
            (g - w).abs() <= tol
        } else {
            g == w || (g.is_nan() && w.is_nan())
        };
        if !ok {
            return Err(format!(
                "{what}: element {i}: got {g}, want {w} (|diff| {} > tol {tol})",
                (g - w).abs()
            ));
        }
    }
    Ok(())
}
