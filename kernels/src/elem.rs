//! Storage element types of packed weights (`f32`, IEEE half, bfloat16), the 64-byte aligned
//! buffer packed operands live in, and the per-level loads that widen 16-bit weights to `f32`
//! inside the kernel.
//!
//! Widening: AVX-512 uses `vcvtph2ps zmm` for `f16` and a zero-extend + shift for `bf16`,
//! AVX2 uses the same zero-extend + shift for `bf16` and a short integer sequence for `f16`
//! (pulp's AVX2 level does not promise F16C); the other levels widen lane by lane.

use pulp::Simd;

/// Element type of packed dense weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// 32-bit float.
    F32,
    /// IEEE 754 binary16 ([`half::f16`]), widened to `f32` in the kernel.
    F16,
    /// bfloat16 ([`half::bf16`]), widened to `f32` in the kernel.
    Bf16,
}

/// A packed storage element: loads `S::F32_LANES` consecutive elements as one `f32` vector.
pub(crate) trait Elem: Copy + Default + Send + Sync + 'static {
    /// Whether this is `f32` itself (no widening).
    const IS_F32: bool = false;

    /// Loads `S::F32_LANES` elements starting at `p`, widened to `f32`.
    ///
    /// # Safety
    /// `p .. p + S::F32_LANES` must be readable.
    unsafe fn load<S: Simd>(simd: S, p: *const Self) -> S::f32s;
}

impl Elem for f32 {
    const IS_F32: bool = true;

    #[inline(always)]
    unsafe fn load<S: Simd>(_simd: S, p: *const f32) -> S::f32s {
        // SAFETY: the caller guarantees `F32_LANES` readable elements.
        unsafe { p.cast::<S::f32s>().read_unaligned() }
    }
}

/// `S` as the concrete SIMD type `T`, if they are the same type (resolved at compile time).
#[inline(always)]
#[allow(dead_code)]
pub(crate) fn downcast<S: Simd, T: Simd>(simd: S) -> Option<T> {
    if core::any::TypeId::of::<S>() == core::any::TypeId::of::<T>() {
        // SAFETY: `S` and `T` are the same type.
        Some(unsafe { core::mem::transmute_copy::<S, T>(&simd) })
    } else {
        None
    }
}

/// Reinterprets a register of the concrete level as `S::f32s` (same size when `S` is that level).
#[inline(always)]
#[allow(dead_code)]
pub(crate) unsafe fn reinterpret<T: Copy, U: Copy>(v: T) -> U {
    debug_assert_eq!(core::mem::size_of::<T>(), core::mem::size_of::<U>());
    // SAFETY: the caller passes same-sized plain-data register types.
    unsafe { core::mem::transmute_copy::<T, U>(&v) }
}

/// Widens lane by lane through a stack buffer (levels without a conversion instruction).
#[inline(always)]
unsafe fn load_lanes<S: Simd>(simd: S, p: *const u16, widen: impl Fn(u16) -> f32) -> S::f32s {
    let mut buf = [0.0f32; 16];
    let lanes = S::F32_LANES.min(16);
    for (i, b) in buf.iter_mut().enumerate().take(lanes) {
        // SAFETY: the caller guarantees `F32_LANES` readable elements.
        *b = widen(unsafe { *p.add(i) });
    }
    crate::vmem::partial_load(simd, &buf[..lanes])
}

impl Elem for half::f16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(simd: S, p: *const half::f16) -> S::f32s {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{__m128i, __m256i};
            if let Some(v4) = downcast::<S, pulp::x86::V4>(simd) {
                // SAFETY: 16 readable halves (caller); S is V4, so the register sizes match.
                unsafe {
                    let h = p.cast::<__m256i>().read_unaligned();
                    return reinterpret(v4.avx512f._mm512_cvtph_ps(h));
                }
            }
            if let Some(v3) = downcast::<S, pulp::x86::V3>(simd) {
                // SAFETY: 8 readable halves (caller); S is V3, so the register sizes match.
                unsafe {
                    let h = v3
                        .avx2
                        ._mm256_cvtepu16_epi32(p.cast::<__m128i>().read_unaligned());
                    return reinterpret(f16_bits_to_f32_avx2(v3, h));
                }
            }
        }
        // SAFETY: forwarded caller guarantee.
        unsafe { load_lanes(simd, p.cast::<u16>(), |b| half::f16::from_bits(b).to_f32()) }
    }
}

/// `f16` bit patterns (zero-extended to 32 bits) to `f32`: the magnitude shifted into place
/// and rescaled by `2^112` (exact for normals and subnormals), infinities and NaNs re-flagged,
/// the sign copied.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn f16_bits_to_f32_avx2(
    v3: pulp::x86::V3,
    h: core::arch::x86_64::__m256i,
) -> core::arch::x86_64::__m256 {
    let avx2 = v3.avx2;
    let avx = v3.avx;
    let mag = avx2._mm256_and_si256(h, avx._mm256_set1_epi32(0x7fff));
    let scaled = avx._mm256_mul_ps(
        avx._mm256_castsi256_ps(avx2._mm256_slli_epi32::<13>(mag)),
        avx._mm256_set1_ps(f32::from_bits(0x7780_0000)), // 2^112
    );
    let inf_nan = avx2._mm256_cmpgt_epi32(mag, avx._mm256_set1_epi32(0x7bff));
    let flag = avx2._mm256_and_si256(inf_nan, avx._mm256_set1_epi32(0x7f80_0000));
    let sign =
        avx2._mm256_slli_epi32::<16>(avx2._mm256_and_si256(h, avx._mm256_set1_epi32(0x8000)));
    let bits = avx2._mm256_or_si256(
        avx2._mm256_or_si256(avx._mm256_castps_si256(scaled), flag),
        sign,
    );
    avx._mm256_castsi256_ps(bits)
}

impl Elem for half::bf16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(simd: S, p: *const half::bf16) -> S::f32s {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{__m128i, __m256i};
            if let Some(v4) = downcast::<S, pulp::x86::V4>(simd) {
                // SAFETY: 16 readable halves (caller); S is V4, so the register sizes match.
                unsafe {
                    let h = v4
                        .avx512f
                        ._mm512_cvtepu16_epi32(p.cast::<__m256i>().read_unaligned());
                    return reinterpret(v4.avx512f._mm512_slli_epi32::<16>(h));
                }
            }
            if let Some(v3) = downcast::<S, pulp::x86::V3>(simd) {
                // SAFETY: 8 readable halves (caller); S is V3, so the register sizes match.
                unsafe {
                    let h = v3
                        .avx2
                        ._mm256_cvtepu16_epi32(p.cast::<__m128i>().read_unaligned());
                    return reinterpret(v3.avx2._mm256_slli_epi32::<16>(h));
                }
            }
        }
        // SAFETY: forwarded caller guarantee.
        unsafe {
            load_lanes(simd, p.cast::<u16>(), |b| {
                f32::from_bits(u32::from(b) << 16)
            })
        }
    }
}

/// One 64-byte line of an [`AlignedBuf`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A zero-initialised buffer of `len` elements of `E`, 64-byte aligned.
#[derive(Clone)]
pub(crate) struct AlignedBuf<E> {
    lines: Vec<Line>,
    len: usize,
    _elem: core::marker::PhantomData<E>,
}

impl<E: Elem> AlignedBuf<E> {
    /// `len` zeroed elements (all-zero bits are `0.0` for every [`Elem`]).
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len * core::mem::size_of::<E>();
        Self {
            lines: vec![Line([0; 64]); bytes.div_ceil(64)],
            len,
            _elem: core::marker::PhantomData,
        }
    }

    pub(crate) fn as_slice(&self) -> &[E] {
        // SAFETY: the lines hold at least `len` elements' bytes, suitably aligned (64 ≥ align
        // of E), and every bit pattern is a valid `E` (plain floats / 16-bit patterns).
        unsafe { core::slice::from_raw_parts(self.lines.as_ptr().cast::<E>(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [E] {
        // SAFETY: as in `as_slice`, and `&mut self` is exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<E>(), self.len) }
    }
}

/// A per-thread scratch buffer kept between calls (the im2col patches, the copied block of the
/// GEMM's `A`): no allocation or page faults per call once it has grown to the largest need.
pub(crate) type Scratch = core::cell::Cell<Option<AlignedBuf<f32>>>;

/// Takes this thread's buffer out of `cell`, or a new zeroed one if there is none or it is
/// shorter than `need`; hand it back with `cell.set(Some(buf))`. Its contents are whatever the
/// last user left: callers write every element they read.
pub(crate) fn take_scratch(
    cell: &'static std::thread::LocalKey<Scratch>,
    need: usize,
) -> AlignedBuf<f32> {
    cell.take()
        .filter(|b| b.as_slice().len() >= need)
        .unwrap_or_else(|| AlignedBuf::zeroed(need))
}
