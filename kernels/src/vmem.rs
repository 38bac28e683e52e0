//! Vector loads and stores of `f32` slices shorter than a vector: masked loads and stores on
//! AVX-512 (one instruction each), pulp's partial loads and stores elsewhere. Every kernel's
//! row and column tails go through these, as do the vector copy and zero fill of a run and the
//! masked loads of lane ranges; and the 8 × 8 transpose that packs a transposed operand and
//! transposes whole matrices ([`transpose`]).

use pulp::Simd;

/// Loads `x` (`len < lanes`) into the low lanes of a vector, zeros above.
#[inline(always)]
pub(crate) fn partial_load<S: Simd>(simd: S, x: &[f32]) -> S::f32s {
    #[cfg(target_arch = "x86_64")]
    if masked_loads::<S>() {
        if x.is_empty() {
            // An empty slice's pointer is dangling (often in page 0): a masked load with no
            // lane set does not fault there, but takes a microcode assist of hundreds of
            // cycles.
            return simd.splat_f32s(0.0);
        }
        // SAFETY: lanes `0..x.len()` (fewer than a vector's) are read, all inside `x`.
        return unsafe { load_lanes(simd, x.as_ptr(), 0, x.len().min(S::F32_LANES)) };
    }
    simd.partial_load_f32s(x)
}

/// `v` with the lanes from `n` on zeroed (`v` itself when `n` covers every lane).
#[inline(always)]
pub(crate) fn first_lanes<S: Simd>(simd: S, v: S::f32s, n: usize) -> S::f32s {
    if n >= S::F32_LANES {
        return v;
    }
    let mut buf = [0.0f32; 16];
    store(simd, &mut buf[..S::F32_LANES], v);
    partial_load(simd, &buf[..n])
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

/// Whether [`load_lanes`] is one masked load at this level (AVX-512, AVX2) rather than a copy
/// through a buffer. Off x86-64 the answer is `false` whatever `S` is, so `S` goes unused there.
#[inline(always)]
#[cfg_attr(
    not(target_arch = "x86_64"),
    allow(clippy::extra_unused_type_parameters)
)]
pub(crate) fn masked_loads<S: Simd>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use core::any::TypeId;
        TypeId::of::<S>() == TypeId::of::<pulp::x86::V4>()
            || TypeId::of::<S>() == TypeId::of::<pulp::x86::V3>()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The AVX2 vector whose lane `i` is all ones where bit `i` of `bits` (< 256) is set, else
/// zero: an `and` with it zeroes the other lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn v3_lane_mask(bits: u32) -> core::arch::x86_64::__m256 {
    // SAFETY: a table row is 8 plain i32s, the size of the vector.
    unsafe { core::mem::transmute(V3_MASKS[bits as usize & 255]) }
}

/// AVX2 lane masks by bit pattern: entry `b` sets lane `i` where bit `i` of `b` is set.
#[cfg(target_arch = "x86_64")]
static V3_MASKS: [[i32; 8]; 256] = {
    let mut t = [[0; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if (b >> i) & 1 == 1 {
                t[b][i] = -1;
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// The lane mask of lanes `lo..hi` (`lo <= hi <= 16`) as bits (bit `i` is lane `i`).
#[inline(always)]
pub(crate) fn lane_bits(lo: usize, hi: usize) -> u32 {
    ((1u32 << hi) - 1) & !((1u32 << lo) - 1)
}

/// A vector whose lanes `lo..hi` (`lo <= hi <= lanes`) are `p[lo..hi]` and whose other lanes
/// are zero; only lanes `lo..hi` are read ([`load_masked`]).
///
/// # Safety
/// As [`load_masked`] for those lanes.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // only x86-64 has masked loads
pub(crate) unsafe fn load_lanes<S: Simd>(simd: S, p: *const f32, lo: usize, hi: usize) -> S::f32s {
    debug_assert!(lo <= hi && hi <= S::F32_LANES);
    // SAFETY: forwarded.
    unsafe { load_masked(simd, p, lane_bits(lo, hi)) }
}

/// A vector whose lanes under `bits` (bit `i` is lane `i`, no bit at or above `lanes`) are
/// `p[i]` and whose other lanes are zero; only those lanes are read. One masked load on
/// AVX-512 and AVX2 (see [`masked_loads`]; the AVX2 mask comes from a table), lane by lane
/// through a buffer elsewhere.
///
/// # Safety
/// `p + i` is readable for every lane `i` under `bits`; `p` itself may lie outside the
/// allocation (compute it with `wrapping_offset`).
#[inline(always)]
pub(crate) unsafe fn load_masked<S: Simd>(simd: S, p: *const f32, bits: u32) -> S::f32s {
    debug_assert!(S::F32_LANES >= 32 || bits >> S::F32_LANES == 0);
    #[cfg(target_arch = "x86_64")]
    {
        use crate::elem::{downcast, reinterpret};
        use core::arch::x86_64::__m256i;
        if let Some(v4) = downcast::<S, pulp::x86::V4>(simd) {
            // SAFETY: only the lanes under `bits` are read (caller); S is V4.
            return unsafe { reinterpret(v4.avx512f._mm512_maskz_loadu_ps(bits as u16, p)) };
        }
        if let Some(v3) = downcast::<S, pulp::x86::V3>(simd) {
            // SAFETY: `bits < 256` (8 lanes), an index of the table; only the lanes under the
            // mask are read (caller); S is V3.
            return unsafe {
                let mask = V3_MASKS[bits as usize & 255]
                    .as_ptr()
                    .cast::<__m256i>()
                    .read_unaligned();
                reinterpret(v3.avx._mm256_maskload_ps(p, mask))
            };
        }
    }
    let _ = simd;
    // SAFETY: forwarded (caller).
    unsafe { load_lanes_via_buffer::<S>(p, bits, 0.0) }
}

/// [`load_masked`] with `fill` instead of zero in the lanes outside `bits`: one masked load on
/// AVX-512, a masked load and a blend on AVX2 (none when `fill` is `+0.0`), lane by lane
/// through a buffer elsewhere.
///
/// # Safety
/// As [`load_masked`].
#[inline(always)]
pub(crate) unsafe fn load_masked_or<S: Simd>(
    simd: S,
    p: *const f32,
    bits: u32,
    fill: f32,
) -> S::f32s {
    debug_assert!(S::F32_LANES >= 32 || bits >> S::F32_LANES == 0);
    #[cfg(target_arch = "x86_64")]
    {
        use crate::elem::{downcast, reinterpret};
        use core::arch::x86_64::__m256;
        if let Some(v4) = downcast::<S, pulp::x86::V4>(simd) {
            let f = v4.avx512f;
            // SAFETY: only the lanes under `bits` are read (caller); S is V4.
            return unsafe {
                reinterpret(f._mm512_mask_loadu_ps(f._mm512_set1_ps(fill), bits as u16, p))
            };
        }
        if let Some(v3) = downcast::<S, pulp::x86::V3>(simd) {
            // SAFETY: forwarded (caller); S is V3, so the register types match.
            let v: __m256 = unsafe { reinterpret(load_masked(simd, p, bits)) };
            if fill.to_bits() == 0 {
                // SAFETY: S is V3.
                return unsafe { reinterpret(v) };
            }
            let avx = v3.avx;
            // SAFETY: S is V3.
            return unsafe {
                reinterpret(avx._mm256_blendv_ps(avx._mm256_set1_ps(fill), v, v3_lane_mask(bits)))
            };
        }
    }
    let _ = simd;
    // SAFETY: forwarded (caller).
    unsafe { load_lanes_via_buffer::<S>(p, bits, fill) }
}

/// The lane-by-lane fallback of [`load_masked`] and [`load_masked_or`]: `p[i]` for the lanes
/// under `bits`, `fill` elsewhere, through a stack buffer.
///
/// # Safety
/// As [`load_masked`].
#[inline(always)]
unsafe fn load_lanes_via_buffer<S: Simd>(p: *const f32, bits: u32, fill: f32) -> S::f32s {
    let mut buf = [fill; 16];
    for (i, b) in buf.iter_mut().enumerate().take(S::F32_LANES) {
        if (bits >> i) & 1 == 1 {
            // SAFETY: lane `i` is under `bits`: readable (caller).
            *b = unsafe { p.wrapping_add(i).read() };
        }
    }
    // SAFETY: `buf` holds 16 ≥ lanes floats.
    unsafe { buf.as_ptr().cast::<S::f32s>().read_unaligned() }
}

/// Writes the transpose of `src` (`rows × cols`, row-major) into `dst` (`cols` rows of
/// `rows` elements, `ldd ≥ rows` apart): 8 × 8 blocks in registers where the level has them
/// ([`transpose8`]), the rest element by element.
#[inline(always)]
pub(crate) fn transpose<S: Simd>(
    simd: S,
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    ldd: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(ldd >= rows);
    let (src, dst) = (&src[..rows * cols], &mut dst[..(cols - 1) * ldd + rows]);
    let whole = cols / 8 * 8;
    // Rows `0..blocked` went by blocks for their columns `0..whole`.
    let mut blocked = 0;
    'rows: while blocked + 8 <= rows && whole > 0 {
        for c0 in (0..whole).step_by(8) {
            // (A loop, not `array::from_fn`: its closure is compiled out of line.)
            let mut from = [src.as_ptr(); 8];
            for (i, row) in from.iter_mut().enumerate() {
                *row = src[(blocked + i) * cols + c0..][..8].as_ptr();
            }
            let to = dst[c0 * ldd + blocked..][..7 * ldd + 8].as_mut_ptr();
            // SAFETY: the eight rows of eight elements of `src` and of `dst` (`ldd` apart)
            // are inside the slices taken above.
            if !unsafe { transpose8(simd, from, to, ldd) } {
                break 'rows;
            }
        }
        blocked += 8;
    }
    for (r, row) in src.chunks_exact(cols).enumerate() {
        let skip = if r < blocked { whole } else { 0 };
        for (c, &v) in row.iter().enumerate().skip(skip) {
            dst[c * ldd + r] = v;
        }
    }
}

/// Transposes the 8 × 8 block whose row `r` is `src[r]` (8 readable `f32`) into rows
/// `dst + r·ld` (8 writable `f32` each) with AVX shuffles, on AVX2 and AVX-512; returns
/// `false` (nothing written) at other levels.
///
/// # Safety
/// As above: `src[r] .. src[r] + 8` readable, `dst + r·ld .. dst + r·ld + 8` writable.
#[inline(always)]
pub(crate) unsafe fn transpose8<S: Simd>(
    simd: S,
    src: [*const f32; 8],
    dst: *mut f32,
    ld: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = match crate::elem::downcast::<S, pulp::x86::V4>(simd) {
            Some(v4) => Some(*v4),
            None => crate::elem::downcast::<S, pulp::x86::V3>(simd),
        };
        if let Some(v3) = v3 {
            let avx = v3.avx;
            // SAFETY: the caller's bounds; AVX is enabled (S is V3 or V4).
            unsafe {
                let r = src.map(|p| avx._mm256_loadu_ps(p));
                // Pairs of rows interleaved, then quads, then the 128-bit halves swapped into
                // place: output row i holds column i.
                let t = [
                    avx._mm256_unpacklo_ps(r[0], r[1]),
                    avx._mm256_unpackhi_ps(r[0], r[1]),
                    avx._mm256_unpacklo_ps(r[2], r[3]),
                    avx._mm256_unpackhi_ps(r[2], r[3]),
                    avx._mm256_unpacklo_ps(r[4], r[5]),
                    avx._mm256_unpackhi_ps(r[4], r[5]),
                    avx._mm256_unpacklo_ps(r[6], r[7]),
                    avx._mm256_unpackhi_ps(r[6], r[7]),
                ];
                let q = [
                    avx._mm256_shuffle_ps::<0x44>(t[0], t[2]),
                    avx._mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                    avx._mm256_shuffle_ps::<0x44>(t[1], t[3]),
                    avx._mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                    avx._mm256_shuffle_ps::<0x44>(t[4], t[6]),
                    avx._mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                    avx._mm256_shuffle_ps::<0x44>(t[5], t[7]),
                    avx._mm256_shuffle_ps::<0xEE>(t[5], t[7]),
                ];
                for i in 0..4 {
                    let lo = avx._mm256_permute2f128_ps::<0x20>(q[i], q[i + 4]);
                    let hi = avx._mm256_permute2f128_ps::<0x31>(q[i], q[i + 4]);
                    avx._mm256_storeu_ps(dst.add(i * ld), lo);
                    avx._mm256_storeu_ps(dst.add((i + 4) * ld), hi);
                }
            }
            return true;
        }
    }
    let _ = (simd, src, dst, ld);
    false
}
