//! NCHW pooling: max, average (`count_include_pad=True`) and global average.
//!
//! Each output vector (`lanes` outputs of one row) is made in registers straight from the
//! input: for every tap column, the window's rows are combined with vector max/add, then the
//! taps are combined — as shifted loads when the stride is 1, as the even and odd lanes of two
//! vectors when it is 2 (one permute each on AVX-512 and AVX2), element by element for larger
//! strides. Loads inside the row are plain; the few that cross a border are masked loads
//! (AVX-512) that fill the padding with the identity (`-inf` for max, `0` for the sum), so
//! borders need no scalar path: PyTorch's rule that padding is at most half the window
//! guarantees every window holds a real element. Nothing is written but the output.

use pulp::Simd;

use crate::shape::Pool2dParams;
use crate::vmem::store;

/// Which reduction a pooling op performs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// Maximum over the valid (non-padding) window elements.
    Max,
    /// Sum over the window divided by `kh·kw` (padding counts as zeros).
    Avg,
}

/// A pooling reduction at the type level, so that the loops are compiled per reduction.
trait Reduce: Copy {
    /// The value padding stands for (never wins a max, adds nothing to a sum).
    const IDENTITY: f32;
    /// Whether the result is divided by the window size.
    const AVG: bool;
    fn op<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s;
    fn op1(a: f32, b: f32) -> f32;
}

#[derive(Clone, Copy)]
struct MaxOp;

impl Reduce for MaxOp {
    const IDENTITY: f32 = f32::NEG_INFINITY;
    const AVG: bool = false;
    #[inline(always)]
    fn op<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        simd.max_f32s(a, b)
    }
    #[inline(always)]
    fn op1(a: f32, b: f32) -> f32 {
        a.max(b)
    }
}

#[derive(Clone, Copy)]
struct SumOp;

impl Reduce for SumOp {
    const IDENTITY: f32 = 0.0;
    const AVG: bool = true;
    #[inline(always)]
    fn op<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> S::f32s {
        simd.add_f32s(a, b)
    }
    #[inline(always)]
    fn op1(a: f32, b: f32) -> f32 {
        a + b
    }
}

/// `lanes` elements of `row` from the signed offset `off`, identity where outside the row (the
/// padding). A plain load in the interior; a masked load (AVX-512) or a copy at the borders.
#[inline(always)]
fn window_load<S: Simd, R: Reduce>(simd: S, row: &[f32], off: isize) -> S::f32s {
    let lanes = S::F32_LANES;
    let w = row.len() as isize;
    if off >= 0 && off + lanes as isize <= w {
        // SAFETY: `off..off + lanes` is inside `row`.
        return unsafe { row.as_ptr().offset(off).cast::<S::f32s>().read_unaligned() };
    }
    let lo = (-off).clamp(0, lanes as isize) as usize;
    let hi = (w - off).clamp(lo as isize, lanes as isize) as usize;
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = crate::elem::downcast::<S, pulp::x86::V4>(simd) {
        let mask = (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16;
        let fill = v4.avx512f._mm512_set1_ps(R::IDENTITY);
        // SAFETY: only lanes `lo..hi` are read, which are inside `row`; S is V4.
        return unsafe {
            crate::elem::reinterpret(v4.avx512f._mm512_mask_loadu_ps(
                fill,
                mask,
                row.as_ptr().wrapping_offset(off),
            ))
        };
    }
    let _ = simd;
    let mut buf = [R::IDENTITY; 16];
    if hi > lo {
        let start = (off + lo as isize) as usize;
        buf[lo..hi].copy_from_slice(&row[start..start + hi - lo]);
    }
    // SAFETY: `buf` holds 16 ≥ lanes floats.
    unsafe { buf.as_ptr().cast::<S::f32s>().read_unaligned() }
}

/// `op` over the `n` window rows (`rows`, each `w` long) of the `lanes` elements from `off`
/// (see [`window_load`]). `N` is `n` when known at compile time (windows of 1–3 rows), else 0.
#[inline(always)]
fn column<S: Simd, R: Reduce, const N: usize>(
    simd: S,
    rows: &[f32],
    n: usize,
    w: usize,
    off: isize,
) -> S::f32s {
    let n = if N > 0 { N } else { n };
    let mut v = window_load::<S, R>(simd, &rows[..w], off);
    for r in 1..n {
        v = R::op(
            simd,
            v,
            window_load::<S, R>(simd, &rows[r * w..(r + 1) * w], off),
        );
    }
    v
}

/// The even and odd lanes of the `2·lanes` elements in `a` then `b`, as two vectors, in order.
#[inline(always)]
fn even_odd<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> (S::f32s, S::f32s) {
    let lanes = S::F32_LANES;
    #[cfg(target_arch = "x86_64")]
    {
        use crate::elem::{downcast, reinterpret};
        use core::arch::x86_64::{__m256, __m512, __m512i};
        if let Some(v4) = downcast::<S, pulp::x86::V4>(simd) {
            let f = v4.avx512f;
            // SAFETY: S is V4, so the register types match; the index vectors are plain data.
            unsafe {
                let (a, b): (__m512, __m512) = (reinterpret(a), reinterpret(b));
                let even: __m512i = core::mem::transmute([
                    0i32, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
                ]);
                let odd: __m512i = core::mem::transmute([
                    1i32, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                ]);
                return (
                    reinterpret(f._mm512_permutex2var_ps(a, even, b)),
                    reinterpret(f._mm512_permutex2var_ps(a, odd, b)),
                );
            }
        }
        if let Some(v3) = downcast::<S, pulp::x86::V3>(simd) {
            let (avx, avx2) = (v3.avx, v3.avx2);
            // SAFETY: S is V3, so the register types match.
            unsafe {
                let (a, b): (__m256, __m256) = (reinterpret(a), reinterpret(b));
                // Per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6; then order the 64-bit pairs.
                let e = avx._mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let o = avx._mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                let e = avx2._mm256_permute4x64_pd::<0b11_01_10_00>(avx._mm256_castps_pd(e));
                let o = avx2._mm256_permute4x64_pd::<0b11_01_10_00>(avx._mm256_castps_pd(o));
                return (reinterpret(e), reinterpret(o));
            }
        }
    }
    let _ = simd;
    let mut both = [0.0f32; 32];
    // SAFETY: `both` holds 32 ≥ 2·lanes floats.
    unsafe {
        both.as_mut_ptr().cast::<S::f32s>().write_unaligned(a);
        both.as_mut_ptr()
            .add(lanes)
            .cast::<S::f32s>()
            .write_unaligned(b);
    }
    let mut eo = [[0.0f32; 16]; 2];
    for i in 0..lanes {
        eo[0][i] = both[2 * i];
        eo[1][i] = both[2 * i + 1];
    }
    // SAFETY: each half holds 16 ≥ lanes floats.
    unsafe {
        (
            eo[0].as_ptr().cast::<S::f32s>().read_unaligned(),
            eo[1].as_ptr().cast::<S::f32s>().read_unaligned(),
        )
    }
}

/// One output row: `out[o] = op over the window rows `rows` (each `w` long) and
/// `kx < kw` of `row[o·stride + kx - pad]` (padding is the identity), times `scale` for averages.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_row<S: Simd, R: Reduce, const N: usize>(
    simd: S,
    rows: &[f32],
    n: usize,
    w: usize,
    stride: usize,
    kw: usize,
    pad: usize,
    scale: f32,
    out: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let ow = out.len();
    let scale_v = simd.splat_f32s(scale);
    let pad = pad as isize;
    match stride {
        1 => {
            for o in (0..ow).step_by(lanes) {
                let base = o as isize - pad;
                let mut acc = column::<S, R, N>(simd, rows, n, w, base);
                for kx in 1..kw {
                    acc = R::op(
                        simd,
                        acc,
                        column::<S, R, N>(simd, rows, n, w, base + kx as isize),
                    );
                }
                let v = if R::AVG {
                    simd.mul_f32s(acc, scale_v)
                } else {
                    acc
                };
                store(simd, &mut out[o..(o + lanes).min(ow)], v);
            }
        }
        2 => {
            for o in (0..ow).step_by(lanes) {
                let base = 2 * o as isize - pad;
                let mut acc = simd.splat_f32s(R::IDENTITY);
                for kx in (0..kw).step_by(2) {
                    let off = base + kx as isize;
                    let lo = column::<S, R, N>(simd, rows, n, w, off);
                    let hi = column::<S, R, N>(simd, rows, n, w, off + lanes as isize);
                    let (e, od) = even_odd(simd, lo, hi);
                    acc = R::op(simd, acc, e);
                    if kx + 1 < kw {
                        acc = R::op(simd, acc, od);
                    }
                }
                let v = if R::AVG {
                    simd.mul_f32s(acc, scale_v)
                } else {
                    acc
                };
                store(simd, &mut out[o..(o + lanes).min(ow)], v);
            }
        }
        _ => {
            // Larger strides: element by element.
            for (o, v) in out.iter_mut().enumerate() {
                let mut acc = R::IDENTITY;
                for row in rows.chunks_exact(w).take(n) {
                    for kx in 0..kw {
                        let x = (o * stride + kx).wrapping_sub(pad as usize);
                        if x < w {
                            acc = R::op1(acc, row[x]);
                        }
                    }
                }
                *v = if R::AVG { acc * scale } else { acc };
            }
        }
    }
}

/// The [`pulp::WithSimd`] op behind max/avg pooling; shapes are validated by the caller.
pub(crate) struct Pool2d<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) x_shape: [usize; 4],
    pub(crate) out_shape: [usize; 4],
    pub(crate) p: Pool2dParams,
    pub(crate) kind: PoolKind,
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for Pool2d<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        match self.kind {
            PoolKind::Max => self.run::<S, MaxOp>(simd),
            PoolKind::Avg => self.run::<S, SumOp>(simd),
        }
    }
}

impl Pool2d<'_> {
    #[inline(always)]
    fn run<S: Simd, R: Reduce>(self, simd: S) {
        let [_, _, h, w] = self.x_shape;
        let [_, _, oh, ow] = self.out_shape;
        let (kh, kw) = self.p.kernel;
        let (sh, sw) = self.p.stride;
        let (ph, pw) = self.p.padding;
        if oh * ow == 0 {
            return;
        }
        let scale = 1.0 / (kh * kw) as f32;
        for (plane, out) in self
            .x
            .chunks_exact(h * w)
            .zip(self.out.chunks_exact_mut(oh * ow))
        {
            for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
                // Input rows y0..y1 of the window (padding rows left out).
                let y0 = (oy * sh).max(ph) - ph;
                let y1 = (oy * sh + kh).min(h + ph) - ph;
                if y1 <= y0 {
                    // Unreachable with padding ≤ kernel/2.
                    orow.fill(R::IDENTITY);
                    continue;
                }
                let rows = &plane[y0 * w..y1 * w];
                let n = y1 - y0;
                match n {
                    1 => output_row::<S, R, 1>(simd, rows, n, w, sw, kw, pw, scale, orow),
                    2 => output_row::<S, R, 2>(simd, rows, n, w, sw, kw, pw, scale, orow),
                    3 => output_row::<S, R, 3>(simd, rows, n, w, sw, kw, pw, scale, orow),
                    _ => output_row::<S, R, 0>(simd, rows, n, w, sw, kw, pw, scale, orow),
                }
            }
        }
    }
}

/// The [`pulp::WithSimd`] op behind global average pooling: one mean per `plane`-sized chunk.
pub(crate) struct GlobalAvgPool<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) plane: usize,
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for GlobalAvgPool<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let inv = 1.0 / self.plane as f32;
        for (plane, o) in self.x.chunks_exact(self.plane).zip(self.out.iter_mut()) {
            *o = crate::elementwise::sum(simd, plane) * inv;
        }
    }
}
