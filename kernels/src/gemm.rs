//! The matrix-multiply core shared by [`dense`](crate::Kernels::dense),
//! [`dense_packed`](crate::Kernels::dense_packed) and the convolutions.
//!
//! `C[m,n] = act(A[m,k] · B[k,n] + bias)`, blocked like BLIS:
//!
//! - `B` is packed ([`pack_b`]) into blocks of [`KC`] rows of `k`; inside a block, panels of
//!   `NR = NV·lanes` columns, each `kc × NR` contiguous (`b[kk·NR + j]`, zero-padded past `n`).
//!   Dense weights are packed once ([`PackedDense`](crate::PackedDense)); conv packs its
//!   im2col patches straight into this layout.
//! - `A` is read in place: row `r`, column `kk` at `a[r·rs + kk]` for rows `rs ≥ k` apart
//!   (`cs = 1`: dense activations, or one attention head's columns of wider rows), or at
//!   `a[(r / MR)·MR·k + (r % MR)·rs + kk·cs]` for `MR`-interleaved blocks (`rs = 1, cs = MR`,
//!   packed conv weights), or gathered through two offset tables (`data[rows[r] + cols[kk]]`:
//!   a convolution's patches read from the image in place, see [`AView`]), which runs
//!   8 × 2 tiles on AVX-512 (one pointer per row; 12 spilled the accumulators).
//! - Loop nest: slabs of rows, then `KC` blocks of `k`, then column blocks of [`nc`]
//!   columns (the `kc × nc` block of `B`, at most 512 KiB, stays in L2), then `MR` row blocks, then
//!   the panels of the column block; or, for a slab of a few row-major rows (at most
//!   [`PANEL_MAJOR_A`] bytes per block: a sentence-sized dense layer, whose weights come from
//!   memory), panels then row blocks, each tile prefetching the next panel, so that `B`'s
//!   stream from memory is spread over every tile rather than the first row block's. When `A` serves four or more panels and its rows are at
//!   least 256 long, each `KC` block's slice of a slab of rows (at most [`A_SLAB`] bytes) is
//!   first copied once (row by row, vector copies) into a buffer whose rows are one cache
//!   line more than `KC` apart, so rows
//!   whose stride is a multiple of 4 KiB stop evicting each other in L1, and every column
//!   block reads that copy. The next tile's rows of `C` are prefetched while a tile runs
//!   (they are far apart: no hardware prefetcher follows them), and so is, spread over the
//!   tiles, what the caller says it touches next ([`Ahead`]: a convolution's output and
//!   next image).
//!   The register tile is `MR × NV` vectors: 12 × 2 (24 accumulators; measured ahead of
//!   8 × 3 on Zen 4, and `NR = 32` wastes no columns on power-of-two widths) where the level
//!   has 32 vector registers, 4 × 4 in wasm (a tile shaped for wasmtime's code, see
//!   `tile_wasm`; the copied `A` is interleaved by 4 rows there), 6 × 2 otherwise; row
//!   tails run a tile with fewer rows (one row — batch-1 GEMV — runs the same chain per
//!   output as any other row, so that a row's result does not depend on its batch), narrow
//!   last panels a one-vector tile, column tails are masked at the store. An `f32` `A` interleaved by `MR` gets a tile instance whose strides are
//!   constants (every row's value at a fixed offset from one pointer: no address arithmetic
//!   per step, which AVX2's 6 × 2 tile cannot spare); only the level's own tile sizes are
//!   compiled (inline-const guards).
//! - The first `KC` block adds the bias, the last applies the activation, both on the
//!   registers before the store; blocks in between accumulate into `C`. In accumulate mode
//!   ([`Gemm::accumulate`], the training products) the first block adds into `C` too.
//! - `B` given row-major as `[k, n]` (a `matmul` operand, the conv weights of an input
//!   gradient) is packed by [`pack_b_rows`]: each panel row is a vector copy of part of a
//!   row of `B`.
//! - `C` is row-major (`ldc`), or scattered through two offset tables ([`Gemm::scatter`]:
//!   `out[rows[r] + cols[c]]`, each panel's columns side by side), so that a convolution's
//!   input gradient adds each tile of patch gradients into the image it belongs to.

use pulp::Simd;

use crate::activation::{Activation, apply, apply_n, apply_slice};
use crate::elem::{Elem, Scratch, take_scratch};
use crate::vmem::{copy, load, store, transpose8, zero};

/// Rows of `k` per packed block of `B`. One block up to 1024 deep saves a second pass over
/// `C` (load and store) per 512 rows: with the column blocks of [`nc`], 1024³ best-of-25
/// 89.4-90.7% -> 93.0-93.7% of peak against `KC = 512`, 512³ unchanged.
pub(crate) const KC: usize = 1024;
/// Most columns per column block.
pub(crate) const NC: usize = 256;
/// Bytes of `f32` `B` per `kc × nc` block: half of L2, so it stays there while every row
/// block reads it. Blocks up to 512 deep get [`NC`] columns (`KC = 512` with `NC = 256`
/// measured ahead of 256 × 512 and 512 × 192 at 512³ and 1024³), deeper ones fewer.
const B_BLOCK: usize = 512 << 10;

/// Columns per column block for blocks of `kc` rows of `k`: whole panels of `nr`, at most
/// [`NC`], the block within [`B_BLOCK`].
#[inline(always)]
pub(crate) fn nc(kc: usize, nr: usize) -> usize {
    (B_BLOCK / 4 / kc.max(1) / nr).clamp(1, NC.div_ceil(nr)) * nr
}

/// Row stride of the copied `A` block: `KC` plus one cache line, so that the rows of the
/// block sit in different L1 sets.
const A_STRIDE: usize = KC + 16;

/// The `CS` of [`tile`] for `A` read from the copied slab, rows [`A_STRIDE`] apart: with the
/// stride a constant, a row's address is a displacement from one pointer, and the tile does
/// no address arithmetic per row (12 rows of it per step of `k` kept AVX-512's 12 × 2 tile
/// from issuing its FMAs every cycle). Never an `MR`.
const A_COPY: usize = A_STRIDE;

/// The `CS` of [`tile`] for a gathered `A` (see [`AView`]). Never an `MR` or a stride.
const GATHER: usize = usize::MAX;

/// What [`Gemm::run_tile`] instantiates tiles for: every kind of `A`,
const ANY_A: u8 = 0;
/// only a gathered one (see [`AView`]),
const GATHERED: u8 = 1;
/// or only one read from memory (in place, or copied to a slab).
const IN_PLACE: u8 = 2;

/// Most bytes of `A` copied at once: a slab of rows of one `KC` block (about 1000 rows at
/// the `A_STRIDE` of `KC = 1024`), copied once and read by every column block instead of
/// copied once per column block, which took 4 points of peak at 1024³.
const A_SLAB: usize = 4 << 20;

/// Whether the copied slab of `A` is stored as blocks of `MR` interleaved rows
/// (`a[kk·MR + i]`, what `tile_wasm` reads) rather than row by row at [`A_STRIDE`].
const INTERLEAVE_A: bool = cfg!(target_arch = "wasm32");

/// How far ahead of the tile's reads of `B` its cache lines are asked for (see [`tile`]),
/// when tiles go row block by row block.
const B_PREFETCH: usize = 2048;

/// Most bytes of one `KC` block's slab of `A` for which tiles go panel by panel (see
/// `Gemm::run_tile`): the slab is read once per panel, from L2.
const PANEL_MAJOR_A: usize = 128 << 10;

/// Asks for the cache line holding `p` in L1 (a hint: never faults, no-op off x86-64).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address; SSE is baseline on x86-64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for the cache line holding `p` in L2 (a hint, as [`prefetch`]): for a stream read
/// a whole panel ahead, which would evict the panel and `A` being read from L1.
#[inline(always)]
fn prefetch_l2(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address; SSE is baseline on x86-64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether `S` gets the 12 × 2 register tile (32 vector registers, never in wasm).
#[inline(always)]
pub(crate) const fn wide_tile<S: Simd>() -> bool {
    S::REGISTER_COUNT >= 32 && !cfg!(target_arch = "wasm32")
}

/// `(MR, NV)` of the register tile for `S`: 12 × 2 with 32 vector registers, 4 × 4 in wasm
/// (see `tile_wasm`), 6 × 2 otherwise.
#[inline(always)]
pub(crate) fn tile_dims<S: Simd>() -> (usize, usize) {
    if wide_tile::<S>() {
        (12, 2)
    } else if cfg!(target_arch = "wasm32") {
        (4, 4)
    } else {
        (6, 2)
    }
}

/// Columns per packed panel of `B` for `S`.
#[inline(always)]
pub(crate) fn nr<S: Simd>() -> usize {
    tile_dims::<S>().1 * S::F32_LANES
}

/// Where the bias of the GEMM output comes from.
#[derive(Clone, Copy)]
pub(crate) enum Bias<'a> {
    /// No bias.
    None,
    /// One value per output row (conv: per output channel).
    PerRow(&'a [f32]),
    /// One value per output column (dense: per output feature), zero-padded to whole panels.
    PerCol(&'a [f32]),
}

/// Number of elements of packed `B` for `k × n` with panels of `nr` columns.
pub(crate) fn packed_b_len(k: usize, n: usize, nr: usize) -> usize {
    k * n.div_ceil(nr) * nr
}

/// Offset of row `kk`'s block in packed `B` with `panels` panels of `nr`: `(k0, kc, offset)`.
#[inline(always)]
fn b_block(kk: usize, k: usize, panels: usize, nr: usize) -> (usize, usize, usize) {
    let k0 = kk / KC * KC;
    (k0, KC.min(k - k0), k0 * panels * nr)
}

/// Packs the columns `cols` of `B[k, ·]` given as the rows of `w` (`B[kk, j] = w[j·ldw + kk]`,
/// row stride `ldw ≥ k`: PyTorch Linear weights with `ldw = k`) into the [`KC`]-blocked panel
/// layout, converting with `conv`; the columns of the last panel past `cols.end` are zeroed.
/// `dst` has `packed_b_len(k, cols.len(), nr)` elements. `f32` into `f32` (where `conv` must
/// be the identity) goes by 8 × 8 blocks transposed in registers where the level has them
/// ([`transpose8`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn pack_b<S: Simd, T: Copy + 'static, E: Elem>(
    simd: S,
    w: &[T],
    ldw: usize,
    k: usize,
    cols: core::ops::Range<usize>,
    nr: usize,
    dst: &mut [E],
    conv: impl Fn(T) -> E,
) {
    use core::any::TypeId;
    let plain =
        TypeId::of::<T>() == TypeId::of::<f32>() && TypeId::of::<E>() == TypeId::of::<f32>();
    let ncols = cols.len();
    let panels = ncols.div_ceil(nr);
    for k0 in (0..k).step_by(KC) {
        let (_, kc, off) = b_block(k0, k, panels, nr);
        for p in 0..panels {
            let panel = &mut dst[off + p * kc * nr..][..kc * nr];
            let valid = nr.min(ncols - p * nr);
            let row0 = cols.start + p * nr;
            // Whole 8 × 8 blocks: 8 columns (rows of `w`) by 8 steps of `k`.
            let mut j0 = 0;
            if plain && kc >= 8 {
                while j0 + 8 <= valid {
                    let mut kk = 0;
                    while kk + 8 <= kc {
                        let src: [*const f32; 8] = core::array::from_fn(|r| {
                            w[(row0 + j0 + r) * ldw + k0 + kk..][..8]
                                .as_ptr()
                                .cast::<f32>()
                        });
                        let at = panel[kk * nr + j0..][..7 * nr + 8]
                            .as_mut_ptr()
                            .cast::<f32>();
                        // SAFETY: the 8 rows of 8 elements of `w` and the 8 panel rows of 8
                        // columns from `j0` are inside the slices taken above; `T` and `E` are
                        // `f32`.
                        if !unsafe { transpose8(simd, src, at, nr) } {
                            break;
                        }
                        kk += 8;
                    }
                    if kk == 0 {
                        break;
                    }
                    for j in j0..j0 + 8 {
                        let row = &w[(row0 + j) * ldw + k0..][..kc];
                        for (kk, &v) in row.iter().enumerate().skip(kk) {
                            panel[kk * nr + j] = conv(v);
                        }
                    }
                    j0 += 8;
                }
            }
            for j in j0..valid {
                let row = &w[(row0 + j) * ldw + k0..][..kc];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * nr + j] = conv(v);
                }
            }
            if valid < nr {
                for row in panel.chunks_exact_mut(nr) {
                    row[valid..].fill(E::default());
                }
            }
        }
    }
}

/// Packs the columns `cols` of `B[k, n]` given row-major with row stride `ldb`
/// (`B[kk, j] = b[kk·ldb + j]`) into the [`KC`]-blocked panel layout of [`pack_b`]: every
/// panel row is a vector copy of `nr` consecutive elements of a row of `B`, the columns past
/// `cols.end` zeroed. `dst` has `packed_b_len(k, cols.len(), nr)` elements.
#[inline(always)]
pub(crate) fn pack_b_rows<S: Simd>(
    simd: S,
    b: &[f32],
    ldb: usize,
    k: usize,
    cols: core::ops::Range<usize>,
    nr: usize,
    dst: &mut [f32],
) {
    let ncols = cols.len();
    let panels = ncols.div_ceil(nr);
    for k0 in (0..k).step_by(KC) {
        let (_, kc, off) = b_block(k0, k, panels, nr);
        for p in 0..panels {
            let panel = &mut dst[off + p * kc * nr..][..kc * nr];
            let c0 = cols.start + p * nr;
            let valid = nr.min(cols.end - c0);
            for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                let src = &b[(k0 + kk) * ldb + c0..][..valid];
                copy(simd, &mut row[..valid], src);
                zero(simd, &mut row[valid..]);
            }
        }
    }
}

/// The `A` operand: rows `rs ≥ k` apart when `cs = 1` (`a[r·rs + kk]`: row-major, or the
/// rows of a wider matrix, such as one attention head's columns), otherwise
/// `a[(r / MR)·MR·k + (r % MR)·rs + kk·cs]` (`MR`-interleaved blocks; see the module docs).
///
/// With `gather`, `A` is read through offset tables instead: `A[r, kk] =
/// data[rows[r] + cols[kk]]` (`rs` and `cs` unused). That is an implicit im2col read
/// straight from the image: for a convolution's forward pass, a row per output pixel (where
/// its window starts) and a column per tap (where the tap sits from the window's start);
/// for its weight gradient, the same two tables the other way round.
#[derive(Clone, Copy)]
pub(crate) struct AView<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
    pub(crate) gather: Option<OffsetTables<'a>>,
}

/// The offset tables of a gathered `A` (see [`AView`]).
#[derive(Clone, Copy)]
pub(crate) struct OffsetTables<'a> {
    /// Per row of `A`: the offset in `data` of its column 0 before `cols`.
    pub(crate) rows: &'a [usize],
    /// Per column of `A`: the offset added to every row's.
    pub(crate) cols: &'a [usize],
}

/// What a tile reads a gathered `A` through: its rows' and its `KC` block's columns' entries
/// of the [`OffsetTables`] (null for the other layouts).
#[derive(Clone, Copy)]
struct GatherAt {
    rows: *const usize,
    cols: *const usize,
}

impl GatherAt {
    const NONE: Self = Self {
        rows: core::ptr::null(),
        cols: core::ptr::null(),
    };
}

impl AView<'_> {
    /// Where row `r0` (a multiple of `MR`) starts, for `k` columns.
    #[inline(always)]
    fn row_block(&self, r0: usize, k: usize) -> usize {
        if self.cs == 1 { r0 * self.rs } else { r0 * k }
    }
}

/// One GEMM call on a packed block of `B` covering `n` columns.
pub(crate) struct Gemm<'a, E> {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) a: AView<'a>,
    /// Packed `B` for these `n` columns ([`pack_b`] layout).
    pub(crate) b: &'a [E],
    pub(crate) bias: Bias<'a>,
    pub(crate) act: Activation,
    /// Row stride of `out`; `out[r·ldc + c]` for `r < m`, `c < n`.
    pub(crate) ldc: usize,
    /// Whether the product is added to what `out` holds (`C += A·B`) rather than stored.
    pub(crate) accumulate: bool,
    /// `Some((first, panels))`: `b` was packed for `panels` panels of `nr` columns and this
    /// product computes the `n` columns from panel `first` on (a column split of one packed
    /// `B` over threads); `None`: `b` holds exactly these `n` columns.
    pub(crate) b_window: Option<(usize, usize)>,
    /// Memory the caller reads or writes right after this product (see [`Ahead`]).
    pub(crate) ahead: Ahead<'a>,
    /// `Some`: `C` is scattered, `C[r, c]` at `out[rows[r] + cols[c]]` (`ldc` unused), and
    /// each panel's columns are consecutive (`cols[p·nr + j] = cols[p·nr] + j`), so that a
    /// tile's row is one run of `out`. A convolution's input gradient adds its patch
    /// gradients (a row per output pixel, a column per tap and channel) into the image this
    /// way, in accumulate mode: the rows of one panel must then be `nr` apart or more, or a
    /// tile's rows would add into the same elements and one sum would be lost.
    pub(crate) scatter: Option<OffsetTables<'a>>,
}

/// Memory a caller touches right after a product (the output it transposes the product
/// into, the next image's input) and that is probably not in cache: the product's first
/// tiles ask for those cache lines into L2, one line per step of `k` (as tiles going panel
/// by panel ask for the next panel), and the later tiles for nothing, so that the lines
/// arrive while the tiles compute and the caller's pass that follows does not stall on them
/// one miss after another.
#[derive(Clone, Copy)]
pub(crate) struct Ahead<'a> {
    regions: [&'a [f32]; 4],
}

impl<'a> Ahead<'a> {
    /// Nothing asked for.
    pub(crate) const NONE: Self = Self { regions: [&[]; 4] };

    /// The memory of `regions` (up to four; past that, hints are dropped).
    pub(crate) fn of(regions: &[&'a [f32]]) -> Self {
        let mut a = Self::NONE;
        for (slot, r) in a.regions.iter_mut().zip(regions) {
            *slot = r;
        }
        a
    }

    /// Cache lines in all the regions.
    fn lines(&self) -> usize {
        self.regions.iter().map(|r| lines_of(r)).sum()
    }

    /// The address of line `i` (counting through the regions in order) and how many of
    /// the `count` lines from there lie in its region; `None` past the last line.
    fn span(&self, mut i: usize, count: usize) -> Option<(usize, usize)> {
        for r in &self.regions {
            let n = lines_of(r);
            if i < n {
                return Some((r.as_ptr() as usize + i * 64, count.min(n - i)));
            }
            i -= n;
        }
        None
    }
}

/// Cache lines from the start of `r` to its end (whole lines from its first address).
fn lines_of(r: &[f32]) -> usize {
    (core::mem::size_of_val(r)).div_ceil(64)
}

/// The `R × NV` register tile over `kc` steps: returns `acc[i][v] + Σ a[i, kk] · b[kk, v]`
/// (accumulators in and out by value, so that they stay in registers).
///
/// `CS` says what is known of `A`'s strides at compile time: with `CS = A_COPY`, `A` is the
/// copied slab (`cs = 1`, rows [`A_STRIDE`] apart: every row's value at a constant offset
/// from one pointer plus one index); with other `CS > 1`, `A` is `MR`-interleaved with
/// `MR = CS` (`rs = 1`, `cs = CS`: every row's value is at a constant offset from one
/// pointer); with `CS = 1` it is row-major (`cs = 1`, rows `rs` apart: each row's pointer
/// plus one index); with `CS = 0` the strides are the arguments; with `CS = GATHER`, row `i`,
/// step `kk` is at `a + g.rows[i] + g.cols[kk]` (a gathered `A`, see [`AView`]): one pointer
/// per row and one table entry per step.
///
/// # Safety
/// Rows `0..R` of `a` (`a + i·rs + kk·cs`, or through `g` with `CS = GATHER`: `R` entries
/// of `g.rows`, `kc` of `g.cols`) and `kc·NV·lanes` elements of `b` are readable.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile<S: Simd, E: Elem, const R: usize, const NV: usize, const CS: usize>(
    simd: S,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    g: GatherAt,
    b: *const E,
    nr: usize,
    pre: Prefetch,
    acc: [[S::f32s; NV]; R],
) -> [[S::f32s; NV]; R] {
    let lanes = S::F32_LANES;
    let (rs, cs) = match CS {
        0 => (rs, cs),
        1 => (rs, 1),
        A_COPY => (A_STRIDE, 1),
        GATHER => (0, 0),
        _ => (1, CS),
    };
    // SAFETY (all pointer arithmetic below): within the bounds the caller guarantees.
    unsafe {
        // One row (batch 1, or the last row of a batch) runs the same chain as every other
        // row: one multiply-add per step of `k`, in order, so a row's result does not depend
        // on how many rows share its product (dynamic batching answers bit for bit). At
        // batch 1 that leaves `NV` chains to cover the FMA latency.
        #[cfg(target_arch = "wasm32")]
        if R == 4 && S::F32_LANES == 4 && rs == 1 && cs == R {
            return tile_wasm::<S, E, R, NV>(simd, kc, a, b, nr, acc);
        }
        let rows: [*const f32; R] = core::array::from_fn(|i| {
            if CS == GATHER {
                a.add(*g.rows.add(i))
            } else {
                a.add(i * rs)
            }
        });
        let mut c = acc;
        let mut b = b;
        let mut off = 0;
        let mut cols = g.cols;
        // `B` streams from memory the first time a block is read; the hardware prefetchers
        // stop at page ends, so the tile asks for cache lines ahead of its reads: near
        // ([`Prefetch::Near`]: as many lines per step as it reads, into L1) or its share of
        // the next panel ([`Prefetch::Panel`]: fewer bytes per step, into L2).
        // The mode is chosen once, outside the loop (two copies of it): a test per step cost
        // the 12 × 2 tile a few percent.
        macro_rules! steps {
            ($ask:block) => {
                for _ in 0..kc {
                    $ask
                    if CS == GATHER {
                        off = *cols;
                        cols = cols.add(1);
                    }
                    // A loop, not `array::from_fn`: a closure does not take the level's
                    // target features, and where it stayed out of line (the 5-row f16 tile)
                    // the f16 conversion's intrinsics were calls.
                    let mut bv = [simd.splat_f32s(0.0); NV];
                    for (v, bv) in bv.iter_mut().enumerate() {
                        *bv = E::load(simd, b.add(v * lanes));
                    }
                    for (row, &ap) in c.iter_mut().zip(&rows) {
                        let ai = simd.splat_f32s(*ap.add(off));
                        for (c, &bb) in row.iter_mut().zip(&bv) {
                            *c = simd.mul_add_e_f32s(ai, bb, *c);
                        }
                    }
                    b = b.add(nr);
                    if CS != GATHER {
                        off += cs;
                    }
                }
            };
        }
        match pre {
            // The full tiles of the x86 levels (12 and 6 rows, and the gathered 8): the hot
            // ones, without a third copy of the loop in every tail tile's instance.
            Prefetch::None if CS == GATHER || R == 6 || R == 12 => steps!({}),
            Prefetch::Near(_) | Prefetch::None => {
                let bytes = match pre {
                    Prefetch::Near(bytes) => bytes,
                    _ => B_PREFETCH,
                };
                // As many lines per step as the step reads (a constant).
                let lines = (NV * lanes * core::mem::size_of::<E>()).div_ceil(64);
                steps!({
                    let at = b.cast::<u8>().wrapping_add(bytes);
                    for l in 0..lines {
                        prefetch(at.wrapping_add(l * 64).cast());
                    }
                })
            }
            Prefetch::Panel { from, step } => {
                // One line per step: `step` is at most 64 bytes (a panel row of at most 128
                // bytes shared by two or more row blocks).
                let mut at = b.cast::<u8>().wrapping_add(from);
                steps!({
                    prefetch_l2(at.cast());
                    at = at.wrapping_add(step);
                })
            }
        }
        c
    }
}

/// The wasm register tile: 4 rows of `A` interleaved (`a[kk·4 + i]`: one vector load per
/// step, each row's value splatted with a lane shuffle) × `NV` vectors of `B`.
///
/// Written for what wasmtime makes of it. Every loop back-edge carries the epoch check,
/// whose cold path is a call that clobbers every vector register, so Cranelift keeps the
/// accumulators in stack slots across the back-edge: one reload and one store per
/// accumulator per iteration, whatever the loop does. So each iteration runs two steps of
/// `k` into fresh partial sums and adds them to the accumulators once: the store-to-load
/// latency through the stack slot is paid once per two steps and off the FMA chains.
/// Cranelift computes each accumulator's chain in one piece, after all of the iteration's
/// loads, so the loads must be few: two `A` vectors and `2·NV` of `B`, with `A`'s rows in
/// one vector instead of four general-purpose registers.
///
/// # Safety
/// `a` holds `kc` steps of 4 interleaved rows (`4·kc` readable `f32`); `b` as in [`tile`].
#[cfg(target_arch = "wasm32")]
#[inline(always)]
unsafe fn tile_wasm<S: Simd, E: Elem, const R: usize, const NV: usize>(
    simd: S,
    kc: usize,
    a: *const f32,
    b: *const E,
    nr: usize,
    acc: [[S::f32s; NV]; R],
) -> [[S::f32s; NV]; R] {
    use crate::elem::reinterpret;
    use core::arch::wasm32::{i32x4_shuffle, v128, v128_load};

    let lanes = S::F32_LANES;
    let splat = |v: v128, i: usize| -> S::f32s {
        let s = match i {
            0 => i32x4_shuffle::<0, 0, 0, 0>(v, v),
            1 => i32x4_shuffle::<1, 1, 1, 1>(v, v),
            2 => i32x4_shuffle::<2, 2, 2, 2>(v, v),
            _ => i32x4_shuffle::<3, 3, 3, 3>(v, v),
        };
        // SAFETY: `v128` and a 4-lane `S::f32s` are the same 16 bytes of plain data.
        unsafe { reinterpret(s) }
    };
    // SAFETY (all pointer arithmetic below): within the bounds the caller guarantees.
    unsafe {
        let step = |t: &mut [[S::f32s; NV]; R], a: *const f32, b: *const E, first: bool| {
            let av = v128_load(a.cast());
            let bv: [S::f32s; NV] = core::array::from_fn(|v| E::load(simd, b.add(v * lanes)));
            for (i, row) in t.iter_mut().enumerate() {
                let ai = splat(av, i);
                for (t, &bb) in row.iter_mut().zip(&bv) {
                    *t = if first {
                        simd.mul_f32s(ai, bb)
                    } else {
                        simd.mul_add_e_f32s(ai, bb, *t)
                    };
                }
            }
        };
        let mut c = acc;
        let (mut a, mut b) = (a, b);
        let zero = simd.splat_f32s(0.0);
        for _ in 0..kc / 2 {
            let mut t = [[zero; NV]; R];
            step(&mut t, a, b, true);
            step(&mut t, a.add(R), b.add(nr), false);
            for (cr, tr) in c.iter_mut().zip(&t) {
                for (cv, &tv) in cr.iter_mut().zip(tr) {
                    *cv = simd.add_f32s(*cv, tv);
                }
            }
            a = a.add(2 * R);
            b = b.add(2 * nr);
        }
        if kc % 2 == 1 {
            step(&mut c, a, b, false);
        }
        c
    }
}

/// What a tile asks the cache for ahead of its reads of `B` (see [`tile`]).
#[derive(Clone, Copy)]
enum Prefetch {
    /// The lines this many bytes ahead of each step's reads, into L1 (tiles going row block
    /// by row block: the next panel's first lines are the next tile's).
    Near(usize),
    /// `step` bytes per step of `k` from `from` bytes past the tile's first read of `B`
    /// (wrapping: any address), into L2: for tiles going panel by panel, this tile's share
    /// of the next panel (the whole next panel asked for into L1 by one tile evicted the
    /// panel and `A` being read, and left the other tiles of the panel no stream to
    /// overlap); otherwise its share of the caller's [`Ahead`].
    Panel { from: usize, step: usize },
    /// Nothing: a `B` that stays in L2 (an implicit im2col's weights, a caller's product
    /// given an [`Ahead`]) while other tiles ask for the caller's lines. The tiles without
    /// this loop (tails) ask as [`Prefetch::Near`] with [`B_PREFETCH`].
    None,
}

/// Context of one tile's load/store of `C`.
struct Store<'a> {
    /// Elements per `kk` step of the packed panel.
    nr: usize,
    /// What the tile asks for ahead of its reads of `B`.
    pre: Prefetch,
    /// The first `KC` block: adds the bias.
    first: bool,
    /// Whether the tile starts from `C` (every block after the first, and in accumulate mode
    /// the first too) rather than from zero.
    load: bool,
    last: bool,
    /// Valid columns of this panel (≤ NR).
    valid: usize,
    /// Column bias for this panel (padded to NR), if any.
    col_bias: Option<&'a [f32]>,
    /// Row bias for the tile's rows, if any.
    row_bias: Option<&'a [f32]>,
    act: Activation,
    /// Where the tile's rows of `C` start.
    rows: RowsAt,
}

/// Where row `i` of a tile of `C` starts, from the tile's `out`.
#[derive(Clone, Copy)]
enum RowsAt {
    /// `out + i·ldc`: a row-major `C`.
    Strided(usize),
    /// `out + table[i]`: a scattered `C` ([`Gemm::scatter`]), `table` pointing at the
    /// tile's first row's entry.
    Table(*const usize),
}

impl RowsAt {
    /// Row `i`'s start.
    ///
    /// # Safety
    /// For `Table`, entry `i` is readable; row `i` starts inside `out`'s allocation.
    #[inline(always)]
    unsafe fn row<T>(self, out: *const T, i: usize) -> *const T {
        // SAFETY: the caller's guarantee.
        unsafe {
            match self {
                Self::Strided(ldc) => out.add(i * ldc),
                Self::Table(t) => out.add(*t.add(i)),
            }
        }
    }
}

/// Computes one `R`-row tile of `C` at `out` (rows as `st.rows` says; `ldc` apart for the
/// activation) over one `KC` block.
///
/// # Safety
/// As [`tile`]; `st.rows` covers `R` rows and row `i < R` of `C` is readable and writable
/// for `st.valid` elements.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block<S: Simd, E: Elem, const R: usize, const NV: usize, const CS: usize>(
    simd: S,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    g: GatherAt,
    b: *const E,
    out: *mut f32,
    ldc: usize,
    st: &Store<'_>,
) {
    // A tile whose `NV` vectors all hold columns (every one but a last, narrower panel)
    // loads and stores with the tile's loops unrolled and the accumulators in registers;
    // with the width a run-time value the loops stay loops, over accumulators spilled to
    // the stack (about a tenth of a tile's time at `k = 32`).
    let full = st.valid >= NV * S::F32_LANES;
    let mut acc = [[simd.splat_f32s(0.0); NV]; R];
    // SAFETY (all four): `C`'s rows are readable and writable for `st.valid` columns, and
    // the rest is the caller's guarantee, forwarded.
    unsafe {
        if st.load {
            acc = if full {
                load_tile::<S, R, NV, true>(simd, out, st.rows, st.valid)
            } else {
                load_tile::<S, R, NV, false>(simd, out, st.rows, st.valid)
            };
        }
        let acc = tile::<S, E, R, NV, CS>(simd, kc, a, rs, cs, g, b, st.nr, st.pre, acc);
        if full {
            store_tile::<S, R, NV, true>(simd, acc, out, st);
        } else {
            store_tile::<S, R, NV, false>(simd, acc, out, st);
        }
    }
    // A scattered `C` takes no transcendental activation (asserted by `run_tile`).
    if st.last && st.act.is_transcendental() {
        simd.vectorize(ActivateRows {
            out,
            rows: R,
            cols: st.valid,
            ldc,
            act: st.act,
        });
    }
}

/// The `R × NV` tile of `C` whose rows start as `rows` says: columns `0..valid`, or all
/// `NV` vectors when `FULL`; zero beyond `valid`.
///
/// # Safety
/// `rows` covers `R` rows; each row `i < R` is readable for `valid` elements (`NV·lanes`
/// when `FULL`).
#[inline(always)]
unsafe fn load_tile<S: Simd, const R: usize, const NV: usize, const FULL: bool>(
    simd: S,
    out: *const f32,
    rows: RowsAt,
    valid: usize,
) -> [[S::f32s; NV]; R] {
    let lanes = S::F32_LANES;
    let valid = if FULL { NV * lanes } else { valid };
    let mut acc = [[simd.splat_f32s(0.0); NV]; R];
    for (i, row) in acc.iter_mut().enumerate() {
        // SAFETY: row `i`, within the rows the caller guarantees.
        let at = unsafe { rows.row(out, i) };
        for (v, c) in row.iter_mut().enumerate() {
            let c0 = v * lanes;
            if c0 >= valid {
                break;
            }
            let w = lanes.min(valid - c0);
            // SAFETY: within the columns the caller guarantees.
            *c = load(simd, unsafe { core::slice::from_raw_parts(at.add(c0), w) });
        }
    }
    acc
}

/// Stores the tile `acc` (rows as `st.rows` says) as [`block`] finishes it: the bias on
/// the first `KC` block, ReLU on the last; columns `0..st.valid`, or all `NV` vectors when
/// `FULL`.
///
/// # Safety
/// `st.rows` covers `R` rows; each row `i < R` is writable for `st.valid` elements
/// (`NV·lanes` when `FULL`).
#[inline(always)]
unsafe fn store_tile<S: Simd, const R: usize, const NV: usize, const FULL: bool>(
    simd: S,
    acc: [[S::f32s; NV]; R],
    out: *mut f32,
    st: &Store<'_>,
) {
    let lanes = S::F32_LANES;
    let valid = if FULL { NV * lanes } else { st.valid };
    let zero = simd.splat_f32s(0.0);
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: row `i`, within the rows the caller guarantees.
        let at = unsafe { st.rows.row(out.cast_const(), i) }.cast_mut();
        let rb = match (st.first, st.row_bias) {
            (true, Some(rb)) => simd.splat_f32s(rb[i]),
            _ => zero,
        };
        for (v, &c) in row.iter().enumerate() {
            let c0 = v * lanes;
            if c0 >= valid {
                break;
            }
            let mut val = c;
            if st.first {
                if let Some(cb) = st.col_bias {
                    val = simd.add_f32s(val, load(simd, &cb[c0..c0 + lanes]));
                }
                if st.row_bias.is_some() {
                    val = simd.add_f32s(val, rb);
                }
            }
            if st.last && st.act == Activation::Relu {
                // A constant `act`: only ReLU's arm of `apply` is compiled here.
                val = apply(simd, Activation::Relu, val);
            }
            let w = lanes.min(valid - c0);
            // SAFETY: within the columns the caller guarantees.
            store(
                simd,
                unsafe { core::slice::from_raw_parts_mut(at.add(c0), w) },
                val,
            );
        }
    }
}

/// Dispatches a tile of `rows ≤ MR` rows to its const-sized instance (`CS` as in [`tile`]).
/// Instances with more rows than `MR` are never reached and never compiled: the arms are
/// guarded by inline consts.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block_rows<S: Simd, E: Elem, const MR: usize, const NV: usize, const CS: usize>(
    simd: S,
    rows: usize,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    g: GatherAt,
    b: *const E,
    out: *mut f32,
    ldc: usize,
    st: &Store<'_>,
) {
    if const { NV > 1 } && st.valid <= S::F32_LANES {
        // A narrow last panel: only its first vector holds columns.
        // SAFETY: forwarded; the one-vector tile reads a subset of the panel.
        unsafe { block_rows::<S, E, MR, 1, CS>(simd, rows, kc, a, rs, cs, g, b, out, ldc, st) };
        return;
    }
    macro_rules! by_rows {
        ($($r:literal)*) => {
            match rows {
                $($r if const { $r < MR } => block::<S, E, $r, NV, CS>(simd, kc, a, rs, cs, g, b, out, ldc, st),)*
                _ => block::<S, E, MR, NV, CS>(simd, kc, a, rs, cs, g, b, out, ldc, st),
            }
        };
    }
    // SAFETY: forwarded caller guarantee, for exactly `rows` rows.
    unsafe { by_rows!(1 2 3 4 5 6 7 8 9 10 11) }
}

/// [`Gemm::run_raw`] as a [`pulp::WithSimd`] op; its caller upholds `run_raw`'s contract.
struct RunGemm<'g, 'a, E> {
    gemm: &'g Gemm<'a, E>,
    out: *mut f32,
    out_len: usize,
}

impl<E: Elem> pulp::WithSimd for RunGemm<'_, '_, E> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // SAFETY: built only by `run_raw`, whose caller vouches for `out..out + out_len`.
        unsafe { self.gemm.run_level(simd, self.out, self.out_len) }
    }
}

/// [`Gemm::run_raw`]'s never-inlined entries into [`RunGemm`], one module
/// each so that each is a codegen unit of its own (see `run_raw`).
mod entry {
    /// Defines `run` in a module: [`RunGemm`](super::RunGemm) entered at the level of `simd`.
    macro_rules! entry {
        ($($name:ident: $doc:literal;)*) => {$(
            #[doc = $doc]
            pub(super) mod $name {
                use super::super::{Elem, Gemm, RunGemm, Simd};

                /// `gemm` at the level of `simd`, into `out_len` elements at `out`.
                ///
                /// # Safety
                /// As [`Gemm::run_raw`].
                #[inline(never)]
                pub(in super::super) unsafe fn run<S: Simd, E: Elem>(
                    gemm: &Gemm<'_, E>,
                    simd: S,
                    out: *mut f32,
                    out_len: usize,
                ) {
                    simd.vectorize(RunGemm { gemm, out, out_len });
                }
            }
        )*};
    }
    entry! {
        wide_f32: "The 32-register levels' `f32` products.";
        wide_half: "The 32-register levels' `f16` and `bf16` products.";
        narrow: "Every other level's products.";
    }
}

/// Applies a transcendental activation to `rows` rows of `cols` values, `ldc` apart, at
/// `out`: a tile's epilogue, run as a loop over the stored tile (hot in L1) rather than
/// unrolled over its accumulators, and compiled once per level rather than in every tile
/// instance.
struct ActivateRows {
    out: *mut f32,
    rows: usize,
    cols: usize,
    ldc: usize,
    act: Activation,
}

impl pulp::WithSimd for ActivateRows {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let lanes = S::F32_LANES;
        let whole = self.cols / lanes * lanes;
        // The rows' whole vectors four at a time, across rows (a tile's row is one or two
        // vectors), so that [`apply_n`] interleaves four chains; then what is left.
        let mut quad = [core::ptr::null_mut::<f32>(); 4];
        let mut held = 0;
        for i in 0..self.rows {
            // SAFETY: built only by `block`, whose rows `i < R` hold `cols` writable values;
            // each vector below is within its row's first `whole` of them.
            let row = unsafe { self.out.add(i * self.ldc) };
            let mut c = 0;
            while c < whole {
                quad[held] = row.wrapping_add(c);
                held += 1;
                c += lanes;
                if held == 4 {
                    held = 0;
                    // SAFETY: as above; the four vectors do not overlap.
                    unsafe {
                        let mut x = [simd.splat_f32s(0.0); 4];
                        for (x, p) in x.iter_mut().zip(&quad) {
                            *x = p.cast::<S::f32s>().read_unaligned();
                        }
                        let y = apply_n(simd, self.act, x);
                        for (p, y) in quad.iter().zip(y) {
                            p.cast::<S::f32s>().write_unaligned(y);
                        }
                    }
                }
            }
        }
        for &p in &quad[..held] {
            // SAFETY: as above.
            unsafe {
                let v = apply(simd, self.act, p.cast::<S::f32s>().read_unaligned());
                p.cast::<S::f32s>().write_unaligned(v);
            }
        }
        if whole < self.cols {
            for i in 0..self.rows {
                // SAFETY: as above; columns `whole..cols` of row `i`.
                let tail = unsafe {
                    core::slice::from_raw_parts_mut(
                        self.out.add(i * self.ldc + whole),
                        self.cols - whole,
                    )
                };
                apply_slice(simd, self.act, tail);
            }
        }
    }
}

impl<E: Elem> Gemm<'_, E> {
    /// Runs the product into `out` (see [`Gemm::ldc`]) at the level of `simd`.
    #[inline(always)]
    pub(crate) fn run<S: Simd>(&self, simd: S, out: &mut [f32]) {
        // SAFETY: `out` is exclusively borrowed for the call and `out.len()` is its length.
        unsafe { self.run_raw(simd, out.as_mut_ptr(), out.len()) }
    }

    /// [`Gemm::run`] into `out_len` elements at `out`: writes (and, when accumulating or
    /// after the first `KC` block, reads) only `out[r·ldc + c]` for `r < m`, `c < n`, and
    /// creates no reference to the rest, so threads may run column windows of one output.
    ///
    /// The product is entered through [`Simd::vectorize`]: one function per level and
    /// weight type, with the level's target features, that every op calls. Inlined into
    /// each of them instead, its hundred tile instances were compiled a dozen times over.
    ///
    /// That function is pulp's and `#[inline]`, so rustc copies it into the codegen unit
    /// of each caller; it is called here only from [`entry`]'s never-inlined functions,
    /// one module each for the wide level's `f32` and 16-bit products and one for the
    /// other levels, so each is compiled once, and the three (the largest part of this
    /// crate's build) in parallel.
    ///
    /// # Safety
    /// `out..out + out_len` is valid for reads and writes for the call, and no other thread
    /// reads or writes the elements this product writes while it runs.
    #[inline(always)]
    pub(crate) unsafe fn run_raw<S: Simd>(&self, simd: S, out: *mut f32, out_len: usize) {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if const { wide_tile::<S>() && E::IS_F32 } {
                entry::wide_f32::run(self, simd, out, out_len)
            } else if const { wide_tile::<S>() } {
                entry::wide_half::run(self, simd, out, out_len)
            } else {
                entry::narrow::run(self, simd, out, out_len)
            }
        }
    }

    /// The body of [`Gemm::run_raw`], inside the level's target features.
    ///
    /// # Safety
    /// As [`Gemm::run_raw`].
    #[inline(always)]
    unsafe fn run_level<S: Simd>(&self, simd: S, out: *mut f32, out_len: usize) {
        // Inline consts, so that only the level's own tile is compiled.
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if const { wide_tile::<S>() } {
                if const { E::IS_F32 } && self.a.gather.is_some() {
                    // A gathered `A` takes 8 rows: with 12, its 12 broadcasts (one base
                    // register each) were all issued ahead of the FMAs and the accumulators
                    // spilled to the stack (a 12 × 2 tile at half the speed of 8 × 2).
                    self.run_tile::<S, 8, 2, GATHERED>(simd, out, out_len);
                } else {
                    self.run_tile::<S, 12, 2, IN_PLACE>(simd, out, out_len);
                }
            } else if const { cfg!(target_arch = "wasm32") } {
                self.run_tile::<S, 4, 4, ANY_A>(simd, out, out_len);
            } else {
                self.run_tile::<S, 6, 2, ANY_A>(simd, out, out_len);
            }
        }
    }

    /// The product with `MR × NV` register tiles, for the kinds of `A` that `KIND` allows
    /// ([`ANY_A`], [`GATHERED`] or [`IN_PLACE`]: the tile instances of the others are not
    /// compiled).
    ///
    /// # Safety
    /// As [`Gemm::run_raw`]; `A` is of a kind `KIND` allows.
    #[inline(always)]
    unsafe fn run_tile<S: Simd, const MR: usize, const NV: usize, const KIND: u8>(
        &self,
        simd: S,
        out_ptr: *mut f32,
        out_len: usize,
    ) {
        let Self {
            m,
            n,
            k,
            a,
            b,
            bias,
            act,
            ldc,
            accumulate,
            b_window,
            ahead,
            scatter,
        } = *self;
        if m == 0 || n == 0 {
            return;
        }
        // `run` picks the const tile; packing (conv's interleaved weights) uses `tile_dims`.
        debug_assert!((MR, NV) == tile_dims::<S>() || a.gather.is_some());
        let nr = NV * S::F32_LANES;
        let panels = n.div_ceil(nr);
        let (first_panel, b_panels) = b_window.unwrap_or((0, panels));
        // Bounds the unsafe tiles rely on, checked once.
        assert!(first_panel + panels <= b_panels);
        assert!(b.len() >= packed_b_len(k, b_panels * nr, nr));
        match scatter {
            // Every row's and every column's offset, checked once (the tiles add them), and
            // each panel's columns consecutive (a tile stores whole runs).
            Some(sc) => {
                assert!(sc.rows.len() >= m && sc.cols.len() >= n);
                assert!(!act.is_transcendental());
                let cols = &sc.cols[..n];
                assert!(
                    cols.iter()
                        .enumerate()
                        .all(|(c, &o)| c % nr == 0 || cols[c - 1].checked_add(1) == Some(o))
                );
                // Past the last column, a narrow last panel's tile stores nothing.
                let rmax = sc.rows[..m].iter().max().copied().unwrap_or(0);
                let cmax = cols.iter().max().copied().unwrap_or(0);
                assert!(rmax.checked_add(cmax).is_some_and(|last| last < out_len));
            }
            None => assert!(out_len >= (m - 1) * ldc + n),
        }
        let last_row = m.div_ceil(MR) - 1;
        let last_rows = m - last_row * MR;
        match a.gather {
            // Every row's and every column's offset, checked once (the tiles add them).
            Some(g) => {
                assert!(g.rows.len() >= m && g.cols.len() >= k);
                let (rmax, cmax) = (g.rows[..m].iter().max(), g.cols[..k].iter().max());
                assert!(
                    k == 0
                        || a.data.len() > rmax.copied().unwrap_or(0) + cmax.copied().unwrap_or(0)
                );
            }
            None => assert!(
                k == 0
                    || a.data.len()
                        > a.row_block(last_row * MR, k) + (last_rows - 1) * a.rs + (k - 1) * a.cs
            ),
        }
        if let Bias::PerCol(cb) = bias {
            assert!(cb.len() >= panels * nr);
        }
        if let Bias::PerRow(rb) = bias {
            assert!(rb.len() >= m);
        }
        // Rows of `A` read in place are `k` apart: when that is a multiple of 2 KiB they fall
        // into the same few L1 sets and evict each other, and rows of a large `A` come from
        // L3 as 12 interleaved streams. When `A` serves four or more panels, a slab of its
        // rows (at most `A_SLAB` bytes) is copied once per `KC` block, with vector row
        // copies, into this thread's buffer (kept between calls) at a row stride of
        // `A_STRIDE`, at which no two rows share sets; every column block then reads it.
        // Rows under 256 long are close enough together (an `MR`-row block is at most 12 KiB)
        // to be read in place, and such an `A` is usually one the caller just wrote.
        let copy_a = panels >= 4 && a.cs == 1 && a.gather.is_none() && k >= 256;
        let slab = if copy_a {
            (A_SLAB / (4 * A_STRIDE * MR)).max(1) * MR
        } else {
            m
        }
        .min(m);
        let mut a_buf = copy_a.then(|| take_scratch(&A_BLOCK, slab.div_ceil(MR) * MR * A_STRIDE));
        // Each tile's share of the lines of `ahead` (the tiles in their order, every `KC`
        // block's): a tile asks for lines `tile_no·share ..` of it, one line per step of
        // `k`, and the tiles past the last line ask for nothing. Spread over every tile
        // instead, a share was a few bytes per step (6 for the seed CNN's second conv), so
        // every step issued a prefetch, a load-port slot, for a line asked for ten times.
        let ahead_share = if ahead.lines() == 0 {
            0
        } else {
            k.clamp(1, KC)
        };
        let mut tile_no = 0;
        let mut m0 = 0;
        while m0 < m {
            let m1 = (m0 + slab).min(m);
            let mut k0 = 0;
            loop {
                let (_, kc, boff) = if k == 0 {
                    (0, 0, 0)
                } else {
                    b_block(k0, k, b_panels, nr)
                };
                let first = k0 == 0;
                let last = k0 + kc >= k;
                if let Some(buf) = a_buf.as_mut() {
                    let buf = buf.as_mut_slice();
                    let mut r0 = m0;
                    while r0 < m1 {
                        let rows = MR.min(m - r0);
                        let a_off = a.row_block(r0, k) + k0;
                        let src = a.data[a_off..].chunks(a.rs).take(rows).enumerate();
                        if INTERLEAVE_A {
                            let dst = &mut buf[(r0 - m0) * kc..][..MR * kc];
                            for (i, row) in src {
                                for (kk, &v) in row[..kc].iter().enumerate() {
                                    dst[kk * MR + i] = v;
                                }
                            }
                        } else {
                            for (i, row) in src {
                                buf[(r0 - m0 + i) * A_STRIDE..][..kc].copy_from_slice(&row[..kc]);
                            }
                        }
                        r0 += MR;
                    }
                }
                let panels_per_block = nc(kc, nr) / nr;
                let row_blocks = (m1 - m0).div_ceil(MR);
                // Tile order within a column block. Row-major (every panel for one row
                // block, then the next), the `MR`-row block of `A` stays in L1; but the
                // first row block then streams the whole `kc × nc` block of `B` from memory
                // at the FMAs' pace, faster than one core's memory bandwidth, and the other
                // row blocks find it in L2. With a few row blocks of row-major `A` (dense
                // layers on a sentence of a few dozen tokens, whose weights come from
                // memory on every call), that first pass is most of the time: then the
                // tiles go panel by panel (every row block of one panel, `A`'s slab in L2)
                // and each tile asks for the next panel one panel ahead, so the stream is
                // spread over all the panel's tiles.
                let panel_major = a.cs == 1
                    && a.gather.is_none()
                    && row_blocks > 1
                    && (m1 - m0) * kc * 4 <= PANEL_MAJOR_A;
                // Bytes of one panel of this block, and of each row block's share of it.
                let panel_bytes = kc * nr * core::mem::size_of::<E>();
                let share = panel_bytes.div_ceil(row_blocks);
                // A `while` rather than `step_by`, whose length is a 64-bit division: a
                // tenth of a batch-1 call on a tiny layer.
                let mut p0 = 0;
                while p0 < panels {
                    let p1 = (p0 + panels_per_block).min(panels);
                    // The tile (first row, panel) after `(r0, p)` in this column block's
                    // order, if any: stepped, not divided out of a tile count (a 64-bit
                    // division per tile, as above).
                    let after = |r0: usize, p: usize| {
                        let (r, q) = if panel_major {
                            if r0 + MR < m1 {
                                (r0 + MR, p)
                            } else {
                                (m0, p + 1)
                            }
                        } else if p + 1 < p1 {
                            (r0, p + 1)
                        } else {
                            (r0 + MR, p0)
                        };
                        (r < m1 && q < p1).then_some((r, q))
                    };
                    let mut next = Some((m0, p0));
                    while let Some((r0, p)) = next {
                        next = after(r0, p);
                        let rows = MR.min(m - r0);
                        let (a_ptr, rs, cs) = match a_buf.as_ref() {
                            // SAFETY: the slab holds rows `m0..m1`, interleaved by `MR`
                            // rows or at `A_STRIDE`.
                            Some(buf) if INTERLEAVE_A => (
                                unsafe { buf.as_slice().as_ptr().add((r0 - m0) * kc) },
                                1,
                                MR,
                            ),
                            // SAFETY: as above.
                            Some(buf) => (
                                unsafe { buf.as_slice().as_ptr().add((r0 - m0) * A_STRIDE) },
                                A_STRIDE,
                                1,
                            ),
                            // Gathered: the tile adds the tables' offsets.
                            None if a.gather.is_some() => (a.data.as_ptr(), 0, 0),
                            // SAFETY: the offset is within `a.data` (asserted above).
                            None => (
                                unsafe { a.data.as_ptr().add(a.row_block(r0, k) + k0 * a.cs) },
                                a.rs,
                                a.cs,
                            ),
                        };
                        let g = match a.gather {
                            // SAFETY: rows `r0..r0 + rows` and columns `k0..k0 + kc` are
                            // inside the tables (asserted above).
                            Some(g) => unsafe {
                                GatherAt {
                                    rows: g.rows.as_ptr().add(r0),
                                    cols: g.cols.as_ptr().add(k0),
                                }
                            },
                            None => GatherAt::NONE,
                        };
                        let c0 = p * nr;
                        // The tile after this one: its rows of `C` are far apart, so no
                        // prefetcher sees them. (A scattered `C` is an image the tiles
                        // keep adding to, in cache.)
                        if let Some((nr0, np)) = next.filter(|_| scatter.is_none()) {
                            let nc0 = np * nr;
                            for i in 0..MR.min(m - nr0) {
                                let row = out_ptr.wrapping_add((nr0 + i) * ldc + nc0);
                                prefetch(row);
                                prefetch(row.wrapping_add(nr - 1));
                            }
                        }
                        let ahead_at = (ahead_share > 0 && !panel_major)
                            .then(|| ahead.span(tile_no * ahead_share, ahead_share))
                            .flatten();
                        tile_no += 1;
                        let pre = if panel_major {
                            let j = (r0 - m0) / MR;
                            Prefetch::Panel {
                                from: panel_bytes + j * share,
                                step: share.div_ceil(kc.max(1)),
                            }
                        } else if let Some((at, lines)) = ahead_at {
                            // This tile's lines of `ahead`, spread over its steps (at most
                            // one line per step), instead of `B`'s next lines: the products
                            // given an `ahead` read a `B` that stays in L2.
                            let b_at = b.as_ptr().wrapping_add(boff + (first_panel + p) * kc * nr);
                            Prefetch::Panel {
                                from: at.wrapping_sub(b_at as usize),
                                step: (lines * 64).div_ceil(kc.max(1)).min(64),
                            }
                        } else if ahead_share > 0 {
                            Prefetch::None
                        } else {
                            Prefetch::Near(B_PREFETCH)
                        };
                        let st = Store {
                            nr,
                            pre,
                            first,
                            load: !first || accumulate,
                            last,
                            valid: nr.min(n - c0),
                            col_bias: match bias {
                                Bias::PerCol(cb) => Some(&cb[c0..c0 + nr]),
                                _ => None,
                            },
                            row_bias: match bias {
                                Bias::PerRow(rb) => Some(&rb[r0..r0 + rows]),
                                _ => None,
                            },
                            act,
                            rows: match scatter {
                                // SAFETY: rows `r0..r0 + rows` are inside the table.
                                Some(sc) => RowsAt::Table(unsafe { sc.rows.as_ptr().add(r0) }),
                                None => RowsAt::Strided(ldc),
                            },
                        };
                        // SAFETY: the asserts above bound every row of A, every block
                        // and panel of B and every written element of `out`.
                        unsafe {
                            let b = b.as_ptr().add(boff + (first_panel + p) * kc * nr);
                            let out = match scatter {
                                Some(sc) => out_ptr.add(sc.cols[c0]),
                                None => out_ptr.add(r0 * ldc + c0),
                            };
                            if const { E::IS_F32 && KIND != IN_PLACE } && a.gather.is_some() {
                                // An implicit im2col (conv on the image in place).
                                block_rows::<S, E, MR, NV, GATHER>(
                                    simd, rows, kc, a_ptr, rs, cs, g, b, out, ldc, &st,
                                );
                            } else if const { KIND == GATHERED } {
                                unreachable!("a gathered-only product given an `A` in place");
                            } else if const { S::IS_SCALAR } {
                                // One lane: strides known at compile time gain nothing, and
                                // every level's results are the same sums in the same order.
                                block_rows::<S, E, MR, NV, 0>(
                                    simd, rows, kc, a_ptr, rs, cs, g, b, out, ldc, &st,
                                );
                            } else if const { E::IS_F32 } && rs == 1 && cs == MR {
                                // `f32` weights interleaved by `MR` (packed conv weights, a
                                // transposed `A`): strides known at compile time.
                                block_rows::<S, E, MR, NV, MR>(
                                    simd, rows, kc, a_ptr, rs, cs, g, b, out, ldc, &st,
                                );
                            } else if rs == A_STRIDE && cs == 1 && a_buf.is_some() {
                                // The copied slab: its row stride known at compile time.
                                block_rows::<S, E, MR, NV, A_COPY>(
                                    simd, rows, kc, a_ptr, rs, cs, g, b, out, ldc, &st,
                                );
                            } else if cs == 1 {
                                // Row-major `A` read in place.
                                block_rows::<S, E, MR, NV, 1>(
                                    simd, rows, kc, a_ptr, rs, cs, g, b, out, ldc, &st,
                                );
                            } else {
                                block_rows::<S, E, MR, NV, 0>(
                                    simd, rows, kc, a_ptr, rs, cs, g, b, out, ldc, &st,
                                );
                            }
                        }
                    }
                    p0 = p1;
                }
                k0 += kc;
                if last {
                    break;
                }
            }
            m0 = m1;
        }
        if let Some(buf) = a_buf {
            A_BLOCK.set(Some(buf));
        }
    }
}

std::thread_local! {
    /// This thread's buffer for the copied slab of `A` (see [`A_STRIDE`], [`A_SLAB`]).
    static A_BLOCK: Scratch = const { Scratch::new(None) };
}
