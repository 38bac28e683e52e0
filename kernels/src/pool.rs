//! NCHW pooling: max, average (`count_include_pad=True`) and global average.
//!
//! Each output vector (`lanes` outputs of one row) is made in registers straight from the
//! input. The window's rows are reduced first (vector max/add of the same columns of each
//! row), a vector block of columns at a time; the column taps then come from those blocks —
//! for stride 2 split into their even and odd lanes (one permute each on AVX-512 and AVX2),
//! and the taps past the first `stride` shifted across the next block in registers on AVX-512
//! (one permute per tap; the next block is carried to the next output vector, so each input
//! element is loaded once per window row) or reloaded at the shifted column elsewhere. Strides
//! above 2 go element by element. Loads that cross a border are masked loads (AVX-512; a
//! masked load and a blend on AVX2) that fill the padding with the identity (`-inf` for max,
//! `0` for the sum); their masks depend only on the column, so they are computed once per
//! call. Borders need no scalar path: PyTorch's rule that padding is at most half the window
//! guarantees every window holds a real element. Nothing is written but the output.
//!
//! Rows are visited plane by plane: the rows at the top and bottom borders (windows cut by
//! the padding) one at a time, the rows in between — whole windows — as one run with nothing
//! recomputed per row but the row's address; when the rows step as the columns do and windows
//! are 2 or 3 rows tall, the run goes two output rows at a time and the rows their windows
//! share are reduced once (3×3 stride 1: 4 loads per 2 output vectors instead of 6). Narrow
//! planes (a row shorter than a vector, such as 26 columns for 13 outputs) are thus not
//! dominated by per-row overhead.

use pulp::Simd;

use crate::shape::Pool2dParams;
use crate::vmem::{lane_bits, load, load_masked, masked_loads, store};

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

/// Which lanes of the `lanes`-element block starting at signed column `c` of a `w`-wide row lie
/// inside the row, as a bit mask (bit `i` is lane `i`; `lanes ≤ 16`).
#[inline(always)]
fn lanes_inside(c: isize, w: usize, lanes: usize) -> u16 {
    // min/max rather than `clamp` (whose bounds check is a call, not inlined under the
    // SIMD level's target features).
    let lanes = lanes as isize;
    let lo = (-c).max(0).min(lanes);
    let hi = (w as isize).saturating_sub(c).max(lo).min(lanes);
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
}

/// How many block masks [`RowGeom`] keeps (rows of up to `MASKS·lanes` columns, with the
/// padding and the blocks read past the end; longer rows compute the rest as they go).
const MASKS: usize = 64;

/// The column geometry of one output row, the same for every row, channel and image: the input
/// row width, the left padding, the output blocks per row, and the load masks
/// ([`lanes_inside`]) of the vector blocks the row is read in — block `m` starts at column
/// `m·lanes - pad` — computed once per call.
struct RowGeom {
    w: usize,
    pad: usize,
    lanes: usize,
    /// Outputs per row.
    ow: usize,
    /// Output vectors per row (the last may be partial).
    blocks: usize,
    /// Which lanes of the last output vector are in the row.
    out_tail: u16,
    /// Masks of blocks `0..used`.
    masks: [u16; MASKS],
    used: usize,
}

impl RowGeom {
    /// The geometry for input rows `w` wide with `pad` columns of padding on the left and
    /// `ow` outputs, read `stride` blocks per output block plus `stride + 1` ahead.
    fn new(w: usize, pad: usize, ow: usize, stride: usize, lanes: usize) -> Self {
        let blocks = ow.div_ceil(lanes);
        let mut masks = [0; MASKS];
        let used = (stride * (blocks + 1)).min(MASKS);
        for (m, mask) in masks[..used].iter_mut().enumerate() {
            *mask = lanes_inside((m * lanes) as isize - pad as isize, w, lanes);
        }
        Self {
            w,
            pad,
            lanes,
            ow,
            blocks,
            out_tail: lanes_inside(((blocks.max(1) - 1) * lanes) as isize, ow, lanes),
            masks,
            used,
        }
    }

    /// First column of block `m` (negative inside the left padding).
    #[inline(always)]
    fn col(&self, m: usize) -> isize {
        (m * self.lanes) as isize - self.pad as isize
    }

    /// The load mask of block `m`.
    #[inline(always)]
    fn mask(&self, m: usize) -> u16 {
        match self.masks[..self.used].get(m) {
            Some(&mask) => mask,
            None => lanes_inside(self.col(m), self.w, self.lanes),
        }
    }
}

/// `lanes` elements of row `r` of `rows` (rows `w` long) from the signed column `c`, the identity
/// in the lanes outside `mask` (which must be [`lanes_inside`]`(c, w, lanes)`: the padding).
/// A plain load inside the row, [`vmem::load_masked_or`](crate::vmem::load_masked_or) at a
/// border (one masked load on AVX-512, a masked load and a blend on AVX2: no copy through a
/// buffer, which at every row's end of a row that is not whole vectors — 26 columns are three
/// vectors and two — cost a store, a `memcpy` call and a load waiting on both).
#[inline(always)]
fn load_block<S: Simd, R: Reduce>(
    simd: S,
    rows: &[f32],
    r: usize,
    w: usize,
    c: isize,
    mask: u16,
) -> S::f32s {
    let lanes = S::F32_LANES;
    debug_assert_eq!(mask, lanes_inside(c, w, lanes));
    debug_assert!((r + 1) * w <= rows.len());
    let row = &rows[r * w..(r + 1) * w];
    if u32::from(mask) == (1u32 << lanes) - 1 {
        let c = c as usize;
        let v = &row[c..c + lanes];
        // SAFETY: `v` holds `lanes` floats.
        return unsafe { v.as_ptr().cast::<S::f32s>().read_unaligned() };
    }
    // SAFETY: only the lanes under `mask` are read, which are columns of row `r` (inside
    // `rows`, see the caller).
    unsafe {
        crate::vmem::load_masked_or(
            simd,
            row.as_ptr().wrapping_offset(c),
            u32::from(mask),
            R::IDENTITY,
        )
    }
}

/// `op` over the `n` window rows (`rows`, each `w` long) of the block at column `c` (see
/// [`load_block`]): one block of the window-reduced row. `N` is `n` when known at compile time
/// (windows of 2 or 3 rows), else 0.
#[inline(always)]
fn column<S: Simd, R: Reduce, const N: usize>(
    simd: S,
    rows: &[f32],
    n: usize,
    w: usize,
    c: isize,
    mask: u16,
) -> S::f32s {
    let n = if N > 0 { N } else { n };
    let mut v = load_block::<S, R>(simd, rows, 0, w, c, mask);
    for r in 1..n {
        v = R::op(simd, v, load_block::<S, R>(simd, rows, r, w, c, mask));
    }
    v
}
/// [`column()`] for `P` output rows (1 or 2) at once. For a pair, `rows` holds the `N + SH`
/// input rows of two windows of `N` rows that start `SH` rows apart (`N` and `SH` known at
/// compile time); the rows the windows share are reduced once.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn columns<S: Simd, R: Reduce, const N: usize, const SH: usize, const P: usize>(
    simd: S,
    rows: &[f32],
    n: usize,
    w: usize,
    c: isize,
    mask: u16,
) -> [S::f32s; P] {
    let mut v = [simd.splat_f32s(R::IDENTITY); P];
    if P == 1 {
        v[0] = column::<S, R, N>(simd, rows, n, w, c, mask);
        return v;
    }
    if SH < N {
        // Rows `SH..N` are in both windows.
        let mut shared = load_block::<S, R>(simd, rows, SH, w, c, mask);
        for r in SH + 1..N {
            shared = R::op(simd, shared, load_block::<S, R>(simd, rows, r, w, c, mask));
        }
        v[0] = shared;
        for r in 0..SH {
            v[0] = R::op(simd, v[0], load_block::<S, R>(simd, rows, r, w, c, mask));
        }
        v[1] = shared;
        for r in N..N + SH {
            v[1] = R::op(simd, v[1], load_block::<S, R>(simd, rows, r, w, c, mask));
        }
    } else {
        v[0] = load_block::<S, R>(simd, rows, 0, w, c, mask);
        v[1] = load_block::<S, R>(simd, rows, SH, w, c, mask);
        for r in 1..N {
            v[0] = R::op(simd, v[0], load_block::<S, R>(simd, rows, r, w, c, mask));
            v[1] = R::op(
                simd,
                v[1],
                load_block::<S, R>(simd, rows, SH + r, w, c, mask),
            );
        }
    }
    v
}

/// The inverse of [`even_odd`]: the `2·lanes` elements `e0 o0 e1 o1 …` of the lanes of `e`
/// and `o` taken in turn, as two vectors, in order.
#[inline(always)]
fn interleave<S: Simd>(simd: S, e: S::f32s, o: S::f32s) -> (S::f32s, S::f32s) {
    let lanes = S::F32_LANES;
    #[cfg(target_arch = "x86_64")]
    {
        use crate::elem::{downcast, reinterpret};
        use core::arch::x86_64::{__m256, __m512, __m512i};
        if let Some(v4) = downcast::<S, pulp::x86::V4>(simd) {
            let f = v4.avx512f;
            // SAFETY: S is V4, so the register types match; the index vectors are plain data.
            unsafe {
                let (e, o): (__m512, __m512) = (reinterpret(e), reinterpret(o));
                let first: __m512i = core::mem::transmute([
                    0i32, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                ]);
                let second: __m512i = core::mem::transmute([
                    8i32, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31,
                ]);
                return (
                    reinterpret(f._mm512_permutex2var_ps(e, first, o)),
                    reinterpret(f._mm512_permutex2var_ps(e, second, o)),
                );
            }
        }
        if let Some(v3) = downcast::<S, pulp::x86::V3>(simd) {
            let avx = v3.avx;
            // SAFETY: S is V3, so the register types match.
            unsafe {
                let (e, o): (__m256, __m256) = (reinterpret(e), reinterpret(o));
                // Per 128-bit half: e0 o0 e1 o1 | e4 o4 e5 o5 and e2 o2 e3 o3 | e6 o6 e7 o7;
                // then the halves in order.
                let lo = avx._mm256_unpacklo_ps(e, o);
                let hi = avx._mm256_unpackhi_ps(e, o);
                return (
                    reinterpret(avx._mm256_permute2f128_ps::<0x20>(lo, hi)),
                    reinterpret(avx._mm256_permute2f128_ps::<0x31>(lo, hi)),
                );
            }
        }
    }
    let _ = simd;
    pick_lanes::<S>(e, o, |k, i| {
        let j = k * lanes + i;
        j / 2 + (j % 2) * lanes
    })
}

/// The even and odd lanes of the `2·lanes` elements in `a` then `b`, as two vectors, in order.
#[inline(always)]
fn even_odd<S: Simd>(simd: S, a: S::f32s, b: S::f32s) -> (S::f32s, S::f32s) {
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
    pick_lanes::<S>(a, b, |k, i| 2 * i + k)
}

/// Two vectors picked lane by lane through a buffer from the `2·lanes` elements of `a` then
/// `b` (levels without a two-source permute): lane `i` of output `k` (0 or 1) is element
/// `src(k, i)`. The fallback of [`even_odd`] and [`interleave`].
#[inline(always)]
fn pick_lanes<S: Simd>(
    a: S::f32s,
    b: S::f32s,
    src: impl Fn(usize, usize) -> usize,
) -> (S::f32s, S::f32s) {
    let lanes = S::F32_LANES;
    let mut both = [0.0f32; 32];
    // SAFETY: `both` holds 32 ≥ 2·lanes floats.
    unsafe {
        both.as_mut_ptr().cast::<S::f32s>().write_unaligned(a);
        both.as_mut_ptr()
            .add(lanes)
            .cast::<S::f32s>()
            .write_unaligned(b);
    }
    let mut out = [[0.0f32; 16]; 2];
    for (k, out) in out.iter_mut().enumerate() {
        for (i, o) in out.iter_mut().enumerate().take(lanes) {
            *o = both[src(k, i)];
        }
    }
    // SAFETY: each half holds 16 ≥ lanes floats.
    unsafe {
        (
            out[0].as_ptr().cast::<S::f32s>().read_unaligned(),
            out[1].as_ptr().cast::<S::f32s>().read_unaligned(),
        )
    }
}

/// Lanes `t..t + lanes` of `a` followed by `b` (`t ≤ lanes`), in registers: one permute on
/// AVX-512, `None` elsewhere (the caller then reloads at the shifted column).
#[inline(always)]
fn shifted<S: Simd>(simd: S, a: S::f32s, b: S::f32s, t: usize) -> Option<S::f32s> {
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = crate::elem::downcast::<S, pulp::x86::V4>(simd) {
        use crate::elem::reinterpret;
        use core::arch::x86_64::{__m512, __m512i};
        let f = v4.avx512f;
        // SAFETY: S is V4, so the register types match; the index vector is plain data.
        return Some(unsafe {
            let (a, b): (__m512, __m512) = (reinterpret(a), reinterpret(b));
            let iota: __m512i =
                core::mem::transmute([0i32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
            let idx = f._mm512_add_epi32(iota, f._mm512_set1_epi32(t as i32));
            reinterpret(f._mm512_permutex2var_ps(a, idx, b))
        });
    }
    let _ = (simd, a, b, t);
    None
}

/// Whether the taps past the first `stride` are taken from registers ([`shifted`]) rather than
/// reloaded: on AVX-512, for windows reaching at most one vector further.
#[inline(always)]
fn taps_in_registers<S: Simd>(simd: S, stride: usize, kw: usize) -> bool {
    kw > stride
        && (kw - 1) / stride <= S::F32_LANES
        && shifted(simd, simd.splat_f32s(0.0), simd.splat_f32s(0.0), 0).is_some()
}

/// The window-reduced rows (see [`columns`]) at columns `c..c + stride·lanes`, split by phase:
/// `[block, block]` for stride 1, `[even columns, odd columns]` for stride 2. `masks` are the
/// load masks at `c` and `c + lanes`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn phases<S: Simd, R: Reduce, const N: usize, const ST: usize, const P: usize>(
    simd: S,
    rows: &[f32],
    n: usize,
    w: usize,
    c: isize,
    masks: (u16, u16),
) -> [[S::f32s; 2]; P] {
    let a = columns::<S, R, N, ST, P>(simd, rows, n, w, c, masks.0);
    // Plain loops rather than `map`/`from_fn`, whose closures are not always inlined (and
    // then run without the SIMD level's target features).
    let mut v = [[a[0]; 2]; P];
    if ST == 1 {
        for p in 0..P {
            v[p] = [a[p], a[p]];
        }
        return v;
    }
    let b = columns::<S, R, N, ST, P>(simd, rows, n, w, c + S::F32_LANES as isize, masks.1);
    for p in 0..P {
        let (e, o) = even_odd(simd, a[p], b[p]);
        v[p] = [e, o];
    }
    v
}

/// [`phases`] of output block `j` (row blocks `ST·j` and `ST·j + 1`).
#[inline(always)]
fn block<S: Simd, R: Reduce, const N: usize, const ST: usize, const P: usize>(
    simd: S,
    rows: &[f32],
    n: usize,
    g: &RowGeom,
    j: usize,
) -> [[S::f32s; 2]; P] {
    let m = ST * j;
    phases::<S, R, N, ST, P>(simd, rows, n, g.w, g.col(m), (g.mask(m), g.mask(m + 1)))
}

/// Stores `v` as output block `j` of a row (`g.ow` long) starting at `out[at]`: a whole vector,
/// or the row's last, partial block (a masked store on AVX-512).
#[inline(always)]
fn store_block<S: Simd>(simd: S, out: &mut [f32], at: usize, g: &RowGeom, j: usize, v: S::f32s) {
    let o = j * S::F32_LANES;
    let row = &mut out[at..at + g.ow];
    let mask = if j + 1 < g.blocks {
        ((1u32 << S::F32_LANES) - 1) as u16
    } else {
        g.out_tail
    };
    let end = o + (16 - mask.leading_zeros() as usize);
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = crate::elem::downcast::<S, pulp::x86::V4>(simd) {
        debug_assert!(end <= row.len());
        // SAFETY: the lanes under `mask` are outputs `o..end` of `row`; S is V4.
        unsafe {
            v4.avx512f._mm512_mask_storeu_ps(
                row.as_mut_ptr().wrapping_add(o),
                mask,
                crate::elem::reinterpret(v),
            );
        }
        return;
    }
    store(simd, &mut row[o..end], v);
}

/// `count` groups of `P` consecutive output rows (`P` = 1, or 2 when their windows are whole),
/// for column stride `ST` ∈ {1, 2}: `out[o] = op` over the window rows and `kx < kw` of
/// `row[o·ST + kx - pad]` (padding is the identity), times `scale` for averages. `rows` starts
/// at the first window row of the first group; group `i` starts `i·P·sh` rows further and its
/// outputs `i·P` rows further into `out` (rows `g.ow` long). A single row's window has `n`
/// rows; a pair's windows have `N` and share their rows as in [`columns`] (pairs need
/// `sh = ST`). `N` is `n` when known at compile time (2 or 3; always for pairs), else 0; `KW` is
/// `kw` when known, else 0.
///
/// The window's rows are reduced first, one vector block of columns at a time (block `m` of
/// [`RowGeom`]); output block `j` reads blocks `ST·j..ST·j + ST`, whose phases (see [`phases`])
/// are tap `kx < ST`, and tap `kx` is phase `kx % ST` shifted by `kx / ST` lanes. With
/// [`taps_in_registers`] the shifted taps come from this block's phases and the next block's
/// (carried to the next iteration, so every input element is loaded once per window row);
/// otherwise they are reloaded at the shifted column. Everything that depends on the column
/// only (masks, offsets) is computed once per call, so a group costs its loads, its
/// arithmetic and its stores.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_rows<
    S: Simd,
    R: Reduce,
    const N: usize,
    const ST: usize,
    const KW: usize,
    const P: usize,
>(
    simd: S,
    rows: &[f32],
    n: usize,
    sh: usize,
    count: usize,
    g: &RowGeom,
    kw: usize,
    scale: f32,
    out: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let kw = if KW > 0 { KW } else { kw };
    let (w, ow) = (g.w, g.ow);
    let need = if P == 2 { N + ST } else { n };
    let scale_v = simd.splat_f32s(scale);
    let in_regs = taps_in_registers(simd, ST, kw);
    let first = (g.mask(0), g.mask(1));
    for i in 0..count {
        let rows = &rows[i * P * sh * w..(i * P * sh + need) * w];
        let out = &mut out[i * P * ow..(i + 1) * P * ow];
        let mut cur = phases::<S, R, N, ST, P>(simd, rows, n, w, g.col(0), first);
        for j in 0..g.blocks {
            let next = if in_regs {
                block::<S, R, N, ST, P>(simd, rows, n, g, j + 1)
            } else {
                cur
            };
            let mut acc = [cur[0][0]; P];
            for p in 1..P {
                acc[p] = cur[p][0];
            }
            for kx in 1..kw {
                let (ph, t) = (kx % ST, kx / ST);
                if t == 0 {
                    for p in 0..P {
                        acc[p] = R::op(simd, acc[p], cur[p][ph]);
                    }
                } else if in_regs {
                    for p in 0..P {
                        let tap = shifted(simd, cur[p][ph], next[p][ph], t).unwrap_or(cur[p][ph]);
                        acc[p] = R::op(simd, acc[p], tap);
                    }
                } else {
                    let c = g.col(ST * j) + (ST * t) as isize;
                    let masks = (
                        lanes_inside(c, w, lanes),
                        lanes_inside(c + lanes as isize, w, lanes),
                    );
                    let taps = phases::<S, R, N, ST, P>(simd, rows, n, w, c, masks);
                    for p in 0..P {
                        acc[p] = R::op(simd, acc[p], taps[p][ph]);
                    }
                }
            }
            for (p, &acc) in acc.iter().enumerate() {
                let v = if R::AVG {
                    simd.mul_f32s(acc, scale_v)
                } else {
                    acc
                };
                store_block(simd, out, p * ow, g, j, v);
            }
            cur = if in_regs {
                next
            } else if j + 1 < g.blocks {
                block::<S, R, N, ST, P>(simd, rows, n, g, j + 1)
            } else {
                cur
            };
        }
    }
}

/// `row` (at most two vectors long) as its first vector and the rest, zeros past its end.
/// A function, not a closure: a closure does not take the level's target features.
#[inline(always)]
fn halves<S: Simd>(simd: S, row: &[f32]) -> (S::f32s, S::f32s) {
    let (a, b) = row.split_at(row.len().min(S::F32_LANES));
    (load(simd, a), load(simd, b))
}

/// The row at `p`, longer than a vector: its first vector, and the lanes under `tail` after
/// it (zeros above).
///
/// # Safety
/// `p` is readable for a vector's lanes, and for the lanes under `tail` after them.
#[inline(always)]
unsafe fn whole_and_tail<S: Simd>(simd: S, p: *const f32, tail: u32) -> (S::f32s, S::f32s) {
    // SAFETY: the caller's guarantee.
    unsafe {
        (
            p.cast::<S::f32s>().read_unaligned(),
            load_masked(simd, p.add(S::F32_LANES), tail),
        )
    }
}

/// One output row for strides above 2, element by element: `rows` are its window's rows (each
/// `w` long), otherwise as [`output_rows`].
#[allow(clippy::too_many_arguments)]
fn output_row_strided<R: Reduce>(
    rows: &[f32],
    w: usize,
    stride: usize,
    kw: usize,
    pad: usize,
    scale: f32,
    out: &mut [f32],
) {
    for (o, v) in out.iter_mut().enumerate() {
        let mut acc = R::IDENTITY;
        for row in rows.chunks_exact(w) {
            for kx in 0..kw {
                let x = (o * stride + kx).wrapping_sub(pad);
                if x < w {
                    acc = R::op1(acc, row[x]);
                }
            }
        }
        *v = if R::AVG { acc * scale } else { acc };
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
        if self.p.kernel == (2, 2)
            && self.p.stride == (2, 2)
            && self.p.padding == (0, 0)
            && w <= 2 * S::F32_LANES
            && oh * ow > 0
            && h * w > 0
        {
            return self.narrow_pairs::<S, R>(simd);
        }
        match (self.p.stride.1, self.p.kernel.1) {
            (1, 2) => self.simd_rows::<S, R, 1, 2>(simd),
            (1, 3) => self.simd_rows::<S, R, 1, 3>(simd),
            (1, _) => self.simd_rows::<S, R, 1, 0>(simd),
            (2, 2) => self.simd_rows::<S, R, 2, 2>(simd),
            (2, 3) => self.simd_rows::<S, R, 2, 3>(simd),
            (2, _) => self.simd_rows::<S, R, 2, 0>(simd),
            (sw, kw) => {
                let pw = self.p.padding.1;
                let w = self.x_shape[3];
                let sh = self.p.stride.0;
                let ow = self.out_shape[3];
                self.each_row::<R>(false, |rows, n, _, _, scale, out| {
                    for (i, orow) in out.chunks_exact_mut(ow).enumerate() {
                        let rows = &rows[i * sh * w..(i * sh + n) * w];
                        output_row_strided::<R>(rows, w, sw, kw, pw, scale, orow);
                    }
                })
            }
        }
    }

    /// 2 × 2 windows with stride 2 and no padding on rows of at most two vectors (the seed
    /// CNN's pools: 26 → 13 and 11 → 5 columns), one output row at a time with nothing
    /// computed per row but its address: the two window rows' (up to) two vectors each, the
    /// vertical reduction, the even and odd columns of the result ([`even_odd`]) reduced
    /// into the row's outputs, one store. The lanes past a row's end (zeros, or the next
    /// row's first elements) only reach outputs past `ow`, which are not stored. The general
    /// path ([`Pool2d::simd_rows`]) spent about 90 cycles on each 11 × 11 plane on its
    /// border masks, its carried blocks and loop structure, for 25 outputs.
    #[inline(always)]
    fn narrow_pairs<S: Simd, R: Reduce>(self, simd: S) {
        let [_, _, h, w] = self.x_shape;
        let [_, _, oh, ow] = self.out_shape;
        let quarter = simd.splat_f32s(0.25);
        // Rows longer than a vector, where loads take masks (AVX-512, AVX2): a whole vector
        // and a tail under the same mask for every row, no test of the row's length.
        let tail =
            (masked_loads::<S>() && w > S::F32_LANES).then(|| lane_bits(0, w - S::F32_LANES));
        for (plane, out) in self
            .x
            .chunks_exact(h * w)
            .zip(self.out.chunks_exact_mut(oh * ow))
        {
            for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
                let rows = &plane[2 * oy * w..][..2 * w];
                let ((t0, t1), (b0, b1)) = match tail {
                    // SAFETY: each of the two rows is `w` long, more than a vector: a whole
                    // vector from its start, and the `w − lanes` lanes under `bits` after it.
                    Some(bits) => unsafe {
                        let p = rows.as_ptr();
                        (
                            whole_and_tail(simd, p, bits),
                            whole_and_tail(simd, p.add(w), bits),
                        )
                    },
                    None => (halves(simd, &rows[..w]), halves(simd, &rows[w..])),
                };
                let (e, o) = even_odd(simd, R::op(simd, t0, b0), R::op(simd, t1, b1));
                let v = R::op(simd, e, o);
                let v = if R::AVG { simd.mul_f32s(v, quarter) } else { v };
                store(simd, orow, v);
            }
        }
    }

    /// Every output row with [`output_rows`], for column stride `ST` ∈ {1, 2} and window width
    /// `KW` (0: not known at compile time).
    #[inline(always)]
    fn simd_rows<S: Simd, R: Reduce, const ST: usize, const KW: usize>(self, simd: S) {
        let g = RowGeom::new(
            self.x_shape[3],
            self.p.padding.1,
            self.out_shape[3],
            ST,
            S::F32_LANES,
        );
        let (kh, kw) = self.p.kernel;
        // Pairs of rows share their windows' common rows when the rows step as the columns do.
        let pairs = self.p.stride.0 == ST && (kh == 2 || kh == 3);
        let sh = self.p.stride.0;
        self.each_row::<R>(
            pairs,
            #[inline(always)]
            |rows, n, two, count, scale, out| {
                let g = &g;
                match (n, two) {
                    (2, true) => output_rows::<S, R, 2, ST, KW, 2>(
                        simd, rows, n, sh, count, g, kw, scale, out,
                    ),
                    (3, true) => output_rows::<S, R, 3, ST, KW, 2>(
                        simd, rows, n, sh, count, g, kw, scale, out,
                    ),
                    (2, _) => output_rows::<S, R, 2, ST, KW, 1>(
                        simd, rows, n, sh, count, g, kw, scale, out,
                    ),
                    (3, _) => output_rows::<S, R, 3, ST, KW, 1>(
                        simd, rows, n, sh, count, g, kw, scale, out,
                    ),
                    _ => output_rows::<S, R, 0, ST, KW, 1>(
                        simd, rows, n, sh, count, g, kw, scale, out,
                    ),
                }
            },
        )
    }

    /// Calls `f(rows, n, two, count, scale, out)` for runs of output rows, plane by plane:
    /// `rows` is the plane from the first window row of the run on, `out` the run's output rows,
    /// `scale` is `1/(kh·kw)`. A run is `count` rows whose windows have `n` rows (padding rows
    /// left out), each `sh` rows after the previous one — the rows at the top and bottom
    /// borders one by one, the rest (whole windows, `n = kh`) together — or, with `pairs` and
    /// `two`, `count` pairs of such rows.
    #[inline(always)]
    fn each_row<R: Reduce>(
        self,
        pairs: bool,
        mut f: impl FnMut(&[f32], usize, bool, usize, f32, &mut [f32]),
    ) {
        let [_, _, h, w] = self.x_shape;
        let [_, _, oh, ow] = self.out_shape;
        let (kh, kw) = self.p.kernel;
        let sh = self.p.stride.0;
        let ph = self.p.padding.0;
        if oh * ow == 0 {
            return;
        }
        let scale = 1.0 / (kh * kw) as f32;
        // Rows `top..bottom` have whole windows: `oy·sh ≥ ph` and `oy·sh - ph + kh ≤ h`.
        let top = ph.div_ceil(sh).min(oh);
        let bottom = if h + ph >= kh {
            ((h + ph - kh) / sh + 1).max(top).min(oh)
        } else {
            top
        };
        for (plane, out) in self
            .x
            .chunks_exact(h * w)
            .zip(self.out.chunks_exact_mut(oh * ow))
        {
            let mut oy = 0;
            while oy < oh {
                let y0 = (oy * sh).max(ph) - ph;
                let y1 = (oy * sh + kh).min(h + ph) - ph;
                if oy == top && bottom > top {
                    let whole = bottom - top;
                    let (two, count) = if pairs {
                        (true, whole / 2)
                    } else {
                        (false, whole)
                    };
                    if count > 0 {
                        let rows_out = if two { 2 * count } else { count };
                        let out = &mut out[oy * ow..(oy + rows_out) * ow];
                        f(&plane[y0 * w..], kh, two, count, scale, out);
                        oy += rows_out;
                        continue;
                    }
                }
                let orow = &mut out[oy * ow..(oy + 1) * ow];
                if y1 <= y0 {
                    // Unreachable with padding ≤ kernel/2.
                    orow.fill(R::IDENTITY);
                } else {
                    f(&plane[y0 * w..], y1 - y0, false, 1, scale, orow);
                }
                oy += 1;
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

/// The [`pulp::WithSimd`] op behind max/avg pooling backward
/// ([`Kernels::max_pool2d_backward`](crate::Kernels::max_pool2d_backward),
/// [`Kernels::avg_pool2d_backward`](crate::Kernels::avg_pool2d_backward)); shapes are
/// validated by the caller, `x` is given for max pooling.
///
/// `dx` is zeroed, then each output's gradient goes to its window: for max pooling all of it
/// to the window's first maximum in row-major order (as PyTorch's CPU kernel: a NaN wins over
/// any number and a later NaN over an earlier one; padding never wins), for average pooling
/// `1/(kh·kw)` of it to every element inside the input. Overlapping windows add.
pub(crate) struct Pool2dBackward<'a> {
    pub(crate) x: Option<&'a [f32]>,
    pub(crate) x_shape: [usize; 4],
    pub(crate) out_shape: [usize; 4],
    pub(crate) p: Pool2dParams,
    pub(crate) dy: &'a [f32],
    pub(crate) dx: &'a mut [f32],
}

impl pulp::WithSimd for Pool2dBackward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            x_shape,
            out_shape,
            p,
            dy,
            dx,
        } = self;
        let [_, _, h, w] = x_shape;
        let [_, _, oh, ow] = out_shape;
        if oh * ow == 0 || h * w == 0 {
            crate::vmem::zero(simd, dx);
            return;
        }
        let (kh, kw) = p.kernel;
        let (sh, sw) = p.stride;
        let (ph, pw) = p.padding;
        let scale = 1.0 / (kh * kw) as f32;
        // Window rows `y0..y1` and columns `x0..x1` inside the input, per output row / column.
        let span = |o: usize, s: usize, k: usize, pad: usize, len: usize| {
            let start = o * s;
            (
                start.max(pad) - pad,
                (start + k).min(len + pad).saturating_sub(pad),
            )
        };
        if let Some(x) = x
            && (sh, sw) == (kh, kw)
            && (ph, pw) == (0, 0)
            && kh * kw <= TILED_TAPS
        {
            tiled_max_backward(simd, x, [h, w], [oh, ow], [kh, kw], dy, dx);
            return;
        }
        crate::vmem::zero(simd, dx);
        let cols: Vec<(usize, usize)> = (0..ow).map(|ox| span(ox, sw, kw, pw, w)).collect();
        for (plane, (dyp, dxp)) in dy
            .chunks_exact(oh * ow)
            .zip(dx.chunks_exact_mut(h * w))
            .enumerate()
        {
            let xp = x.map(|x| &x[plane * h * w..(plane + 1) * h * w]);
            for (oy, dyr) in dyp.chunks_exact(ow).enumerate() {
                let (y0, y1) = span(oy, sh, kh, ph, h);
                for (&(x0, x1), &g) in cols.iter().zip(dyr) {
                    if let Some(xp) = xp {
                        let mut best = y0 * w + x0;
                        let mut max = f32::NEG_INFINITY;
                        // Branch-free selects: on real activations which element wins is
                        // unpredictable, and a mispredicted branch per compare cost more than
                        // the rest of the backward pass.
                        for y in y0..y1 {
                            for (i, &v) in xp[y * w + x0..y * w + x1].iter().enumerate() {
                                let wins = (v > max) | v.is_nan();
                                max = if wins { v } else { max };
                                best = if wins { y * w + x0 + i } else { best };
                            }
                        }
                        if y1 > y0 && x1 > x0 {
                            dxp[best] += g;
                        }
                    } else {
                        let g = g * scale;
                        for y in y0..y1 {
                            for d in &mut dxp[y * w + x0..y * w + x1] {
                                *d += g;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The most taps (window elements) [`tiled_max_backward`] takes: a 4 × 4 window.
const TILED_TAPS: usize = 16;

/// One tap of [`tiled_max_backward`]'s windows: where `v` wins, `max` takes it and `arg` the
/// tap's offset `at`. A later tap wins if greater or NaN (a NaN over any number, a later NaN
/// over an earlier one), as the scalar rule in row-major order; the first tap always wins
/// over the initial -inf unless it is -inf, and then its offset 0 is already the winner.
///
/// A function rather than a closure: a closure does not take the level's target features,
/// so the intrinsics under `simd`'s methods were calls (a quarter of a seed CNN training
/// step on AVX2).
#[inline(always)]
fn max_tap<S: Simd>(simd: S, v: S::f32s, at: f32, max: &mut S::f32s, arg: &mut S::f32s) {
    let nan = simd.not_m32s(simd.equal_f32s(v, v));
    let wins = simd.or_m32s(simd.greater_than_f32s(v, *max), nan);
    *max = simd.select_f32s(wins, v, *max);
    *arg = simd.select_f32s(wins, simd.splat_f32s(at), *arg);
}

/// Max pooling's input gradient when the windows tile the input (stride = window, no
/// padding, at most [`TILED_TAPS`] taps); `dx` is overwritten. A vector's worth of windows
/// (output columns) at a time: each tap of those windows becomes one vector (for 2-wide
/// windows the even and odd lanes of the window row, [`even_odd`]; otherwise gathered
/// element by element), the first maximum of each window is found with vector compares and
/// selects (with the scalar rule's NaN order), and each window's gradient is stored at its
/// winner, into rows of `dx` zeroed just before (zeroing all of `dx` first, then scattering
/// into it, took every line from memory twice once a batch outgrew the caches). Branch-free:
/// on real activations which element wins is unpredictable, and a scalar compare-and-branch
/// per tap cost more than the convolutions around it. Planes of 2 × 2 windows without NaNs
/// take [`pairs_plane`] instead, which needs neither the split nor the per-tap offsets.
#[inline(always)]
fn tiled_max_backward<S: Simd>(
    simd: S,
    x: &[f32],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    [kh, kw]: [usize; 2],
    dy: &[f32],
    dx: &mut [f32],
) {
    let lanes = S::F32_LANES;
    debug_assert!(lanes <= 16 && kh * kw <= TILED_TAPS);
    let mut winner = [0.0f32; 16];
    let mut gathered = [0.0f32; 16];
    // The odd lanes, for `window_pairs`.
    let odd = simd.greater_than_f32s(load(simd, &PARITY[..lanes]), simd.splat_f32s(0.5));
    let pairs = (kh, kw) == (2, 2) && lanes >= 4;
    for ((xp, dyp), dxp) in x
        .chunks_exact(h * w)
        .zip(dy.chunks_exact(oh * ow))
        .zip(dx.chunks_exact_mut(h * w))
    {
        if pairs && pairs_plane(simd, xp, w, dyp, ow, odd, dxp) {
            continue;
        }
        for (oy, dyr) in dyp.chunks_exact(ow).enumerate() {
            let top = oy * kh * w;
            // 2-wide windows store whole window rows below; columns past the last window, and
            // the rows of other windows' scattered gradients, are zeroed first.
            if kw != 2 || w != ow * kw {
                crate::vmem::zero(simd, &mut dxp[top..top + kh * w]);
            }
            for (c, grads) in dyr.chunks(lanes).enumerate() {
                let left = top + c * lanes * kw;
                let n = grads.len();
                let mut max = simd.splat_f32s(f32::NEG_INFINITY);
                let mut arg = simd.splat_f32s(0.0);
                for y in 0..kh {
                    let row = &xp[left + y * w..][..n * kw];
                    // Offsets from the window's first element, exact in f32.
                    let at = |i: usize| (y * w + i) as f32;
                    if kw == 2 {
                        let a = load(simd, &row[..row.len().min(lanes)]);
                        let b = load(simd, row.get(lanes..).unwrap_or(&[]));
                        let (even, odd) = even_odd(simd, a, b);
                        max_tap(simd, even, at(0), &mut max, &mut arg);
                        max_tap(simd, odd, at(1), &mut max, &mut arg);
                    } else {
                        for i in 0..kw {
                            for (l, g) in gathered[..n].iter_mut().enumerate() {
                                *g = row[l * kw + i];
                            }
                            let v = load(simd, &gathered[..lanes]);
                            max_tap(simd, v, at(i), &mut max, &mut arg);
                        }
                    }
                }
                if kw == 2 {
                    // Each window row's two taps as vectors (the gradient where that tap won,
                    // else zero), interleaved back into the `2·n` columns of the row: vector
                    // stores instead of one scalar store per window.
                    let g = load(simd, grads);
                    let zero = simd.splat_f32s(0.0);
                    for y in 0..kh {
                        let at = simd.splat_f32s((y * w) as f32);
                        let next = simd.splat_f32s((y * w + 1) as f32);
                        let t0 = simd.select_f32s(simd.equal_f32s(arg, at), g, zero);
                        let t1 = simd.select_f32s(simd.equal_f32s(arg, next), g, zero);
                        let (first, second) = interleave(simd, t0, t1);
                        let row = &mut dxp[left + y * w..][..2 * n];
                        let (a, b) = row.split_at_mut(lanes.min(2 * n));
                        store(simd, a, first);
                        if !b.is_empty() {
                            store(simd, b, second);
                        }
                    }
                    continue;
                }
                store(simd, &mut winner[..lanes], arg);
                for (l, &g) in grads.iter().enumerate() {
                    dxp[left + l * kw + winner[l] as usize] = g;
                }
            }
        }
        // Rows below the last window get no gradient.
        crate::vmem::zero(simd, &mut dxp[oh * kh * w..]);
    }
}

/// `1.0` in the odd lanes, `0.0` in the even ones.
const PARITY: [f32; 16] = [
    0., 1., 0., 1., 0., 1., 0., 1., 0., 1., 0., 1., 0., 1., 0., 1.,
];

/// [`tiled_max_backward`] for one plane of 2 × 2 windows, by [`window_pairs`]: returns false
/// when a window holds a NaN (the plane is then redone by the general rule; `dx` is written
/// whole either way).
#[inline(always)]
fn pairs_plane<S: Simd>(
    simd: S,
    x: &[f32],
    w: usize,
    dy: &[f32],
    ow: usize,
    odd: S::m32s,
    dx: &mut [f32],
) -> bool {
    let lanes = S::F32_LANES;
    let oh = dy.len() / ow;
    if w != 2 * ow {
        // The column past the last window gets no gradient.
        crate::vmem::zero(simd, &mut dx[..oh * 2 * w]);
    }
    for (oy, dyr) in dy.chunks_exact(ow).enumerate() {
        let top = 2 * oy * w;
        let (full, tail) = dyr.split_at(ow - ow % lanes);
        for (c, grads) in full.chunks_exact(lanes).enumerate() {
            let at = top + 2 * c * lanes;
            if !window_pairs::<S, true>(simd, &x[at..], w, grads, odd, dx, at) {
                return false;
            }
        }
        if tail.is_empty() {
            continue;
        }
        // The last windows as a whole vector ending at the row's last window when the row has
        // one (the windows it shares with the vector before are written twice, alike).
        let done = if let Some(last) = ow.checked_sub(lanes) {
            let at = top + 2 * last;
            window_pairs::<S, true>(simd, &x[at..], w, &dyr[last..], odd, dx, at)
        } else {
            window_pairs::<S, false>(simd, &x[top..], w, tail, odd, dx, top)
        };
        if !done {
            return false;
        }
    }
    // Rows below the last window get no gradient.
    crate::vmem::zero(simd, &mut dx[oh * 2 * w..]);
    true
}

/// [`tiled_max_backward`]'s step for 2 × 2 windows, in the rows' own layout: the `n =
/// grads.len()` windows whose top-left elements are `x[0], x[2], …` (their second row `w`
/// further on) send their gradients to `dx[at..]` and `dx[at + w..]` (written, not added);
/// returns false, having written nothing, when a NaN is among the window elements (or a
/// `+inf` and a `-inf` meet in the lane sum that looks for one), for the general rule to
/// decide.
///
/// Without NaNs the winner is the first element in row-major order equal to the window's
/// maximum. Each vector holds `lanes / 2` windows' row as (left, right) pairs: the maximum
/// comes from the pair-swapped rows, a right element wins its row if it equals the maximum
/// and its left one does not, and the bottom row wins only where the top row has no
/// maximum. No even/odd split, no re-interleaving and no per-tap index vectors: the
/// general path's cost on the seed CNN's first pool.
#[inline(always)]
fn window_pairs<S: Simd, const FULL: bool>(
    simd: S,
    x: &[f32],
    w: usize,
    grads: &[f32],
    odd: S::m32s,
    dx: &mut [f32],
    at: usize,
) -> bool {
    let lanes = S::F32_LANES;
    // A whole vector of windows: `FULL` makes every length below a constant.
    let n2 = if FULL { 2 * lanes } else { 2 * grads.len() };
    let half = |row: &[f32], k: usize| {
        load(
            simd,
            row.get(k * lanes..n2.min((k + 1) * lanes)).unwrap_or(&[]),
        )
    };
    let (t, b) = (&x[..n2], &x[w..w + n2]);
    let rows = [[half(t, 0), half(t, 1)], [half(b, 0), half(b, 1)]];
    let sum = simd.add_f32s(
        simd.add_f32s(rows[0][0], rows[0][1]),
        simd.add_f32s(rows[1][0], rows[1][1]),
    );
    if has_nan(simd, sum) {
        return false;
    }
    let g = load(simd, &grads[..n2 / 2]);
    let g = interleave(simd, g, g);
    let zero = simd.splat_f32s(0.0);
    let mut out = [[zero; 2]; 2];
    for k in 0..2 {
        if k * lanes >= n2 {
            break;
        }
        let gk = if k == 0 { g.0 } else { g.1 };
        let [top, bottom] = [rows[0][k], rows[1][k]];
        let (st, sb) = (swap_pairs(simd, top), swap_pairs(simd, bottom));
        let m = simd.max_f32s(simd.max_f32s(top, bottom), simd.max_f32s(st, sb));
        let (et, est) = (simd.equal_f32s(top, m), simd.equal_f32s(st, m));
        let (eb, esb) = (simd.equal_f32s(bottom, m), simd.equal_f32s(sb, m));
        let wt = simd.and_m32s(et, simd.not_m32s(simd.and_m32s(est, odd)));
        let taken = simd.or_m32s(et, est);
        let wb = simd.and_m32s(
            simd.and_m32s(eb, simd.not_m32s(simd.and_m32s(esb, odd))),
            simd.not_m32s(taken),
        );
        out[0][k] = simd.select_f32s(wt, gk, zero);
        out[1][k] = simd.select_f32s(wb, gk, zero);
    }
    for (y, out) in out.iter().enumerate() {
        let row = &mut dx[at + y * w..][..n2];
        let (a, b) = row.split_at_mut(lanes.min(n2));
        store(simd, a, out[0]);
        if !b.is_empty() {
            store(simd, b, out[1]);
        }
    }
    true
}

/// Whether any lane of `v` is NaN.
#[inline(always)]
fn has_nan<S: Simd>(simd: S, v: S::f32s) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::elem::{downcast, reinterpret};
        use core::arch::x86_64::{__m256, __m512, _CMP_UNORD_Q};
        if let Some(v4) = downcast::<S, pulp::x86::V4>(simd) {
            // SAFETY: S is V4, so the register types match.
            let v: __m512 = unsafe { reinterpret(v) };
            return v4.avx512f._mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v) != 0;
        }
        if let Some(v3) = downcast::<S, pulp::x86::V3>(simd) {
            // SAFETY: S is V3, so the register types match.
            let v: __m256 = unsafe { reinterpret(v) };
            let avx = v3.avx;
            return avx._mm256_movemask_ps(avx._mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) != 0;
        }
    }
    // A NaN lane makes the sum NaN (as do +inf and -inf together: a harmless false positive).
    simd.reduce_sum_f32s(v).is_nan()
}

/// `v` with each pair of lanes (`2i`, `2i + 1`) swapped: one in-lane permute on AVX-512 and
/// AVX2.
#[inline(always)]
fn swap_pairs<S: Simd>(simd: S, v: S::f32s) -> S::f32s {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::elem::{downcast, reinterpret};
        use core::arch::x86_64::{__m256, __m512};
        if let Some(v4) = downcast::<S, pulp::x86::V4>(simd) {
            // SAFETY: S is V4, so the register types match.
            return unsafe {
                reinterpret(
                    v4.avx512f
                        ._mm512_permute_ps::<0b10_11_00_01>(reinterpret::<_, __m512>(v)),
                )
            };
        }
        if let Some(v3) = downcast::<S, pulp::x86::V3>(simd) {
            // SAFETY: S is V3, so the register types match.
            return unsafe {
                reinterpret(
                    v3.avx
                        ._mm256_permute_ps::<0b10_11_00_01>(reinterpret::<_, __m256>(v)),
                )
            };
        }
    }
    let _ = simd;
    pick_lanes::<S>(v, v, |_, i| i ^ 1).0
}
