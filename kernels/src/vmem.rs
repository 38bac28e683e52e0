//! Vector loads and stores of `f32` slices shorter than a vector: masked loads and stores on
//! AVX-512 (one instruction each), pulp's partial loads and stores elsewhere. Every kernel's
//! row and column tails go through these, as do the vector copy and zero fill of a run.

use pulp::Simd;

/// Loads `x` (`len < lanes`) into the low lanes of a vector, zeros above.
#[inline(always)]
pub(crate) fn partial_load<S: Simd>(simd: S, x: &[f32]) -> S::f32s {
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = crate::elem::downcast::<S, pulp::x86::V4>(simd) {
        let mask = ((1u32 << x.len().min(16)) - 1) as u16;
        // SAFETY: only the `x.len()` lanes under the mask are read; S is V4 (same register).
        return unsafe {
            crate::elem::reinterpret(v4.avx512f._mm512_maskz_loadu_ps(mask, x.as_ptr()))
        };
    }
    simd.partial_load_f32s(x)
}

/// Stores the low `x.len()` (`< lanes`) lanes of `v` into `x`.
#[inline(always)]
pub(crate) fn partial_store<S: Simd>(simd: S, x: &mut [f32], v: S::f32s) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = crate::elem::downcast::<S, pulp::x86::V4>(simd) {
        let mask = ((1u32 << x.len().min(16)) - 1) as u16;
        // SAFETY: only the `x.len()` lanes under the mask are written; S is V4.
        unsafe {
            v4.avx512f
                ._mm512_mask_storeu_ps(x.as_mut_ptr(), mask, crate::elem::reinterpret(v));
        }
        return;
    }
    simd.partial_store_f32s(x, v);
}

/// Loads a vector from `x` (`len ≤ lanes`; a plain load when full, masked otherwise).
#[inline(always)]
pub(crate) fn load<S: Simd>(simd: S, x: &[f32]) -> S::f32s {
    if x.len() >= S::F32_LANES {
        // SAFETY: `x` holds at least one full vector.
        unsafe { x.as_ptr().cast::<S::f32s>().read_unaligned() }
    } else {
        partial_load(simd, x)
    }
}

/// Stores a vector into `x` (`len ≤ lanes`; a plain store when full, masked otherwise).
#[inline(always)]
pub(crate) fn store<S: Simd>(simd: S, x: &mut [f32], v: S::f32s) {
    if x.len() >= S::F32_LANES {
        // SAFETY: `x` holds at least one full vector.
        unsafe { x.as_mut_ptr().cast::<S::f32s>().write_unaligned(v) }
    } else {
        partial_store(simd, x, v);
    }
}

/// Copies `src` into `dst` (same length) with vector loads and stores (masked tail).
#[inline(always)]
pub(crate) fn copy<S: Simd>(simd: S, dst: &mut [f32], src: &[f32]) {
    let lanes = S::F32_LANES;
    let len = dst.len();
    let mut c = 0;
    while c < len {
        let w = lanes.min(len - c);
        store(simd, &mut dst[c..c + w], load(simd, &src[c..c + w]));
        c += lanes;
    }
}

/// Zeroes `dst` with vector stores (masked tail); no call for short runs.
#[inline(always)]
pub(crate) fn zero<S: Simd>(simd: S, dst: &mut [f32]) {
    let lanes = S::F32_LANES;
    let len = dst.len();
    let z = simd.splat_f32s(0.0);
    let mut c = 0;
    while c < len {
        let w = lanes.min(len - c);
        store(simd, &mut dst[c..c + w], z);
        c += lanes;
    }
}
