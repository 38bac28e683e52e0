//! General matrix products for training ([`Kernels::matmul`](crate::Kernels::matmul)):
//! `out = op(a)·op(b)`, or `out += op(a)·op(b)`, with either operand transposed, on the GEMM
//! core of [`gemm`](crate::gemm).
//!
//! `A` is read in place when it is row-major `[m, k]`; `aᵀ` (`a` is `[k, m]`) is first copied
//! ([`PackTransposedA`]) into blocks of `MR` interleaved rows, the layout the register tile
//! reads best (each row of `a` is copied in runs of `MR` consecutive elements). `B` is packed
//! one column block ([`NC`] columns) at a time into the panel layout: from `[n, k]` rows
//! (`trans_b`) by [`pack_b`], from `[k, n]` rows by [`pack_b_rows`]. In accumulate mode every
//! tile starts from what `out` holds. `a·bᵀ` without accumulation is the dense layer's product
//! and runs as [`Dense`](crate::dense::Dense) (its batch-1 and single-output paths included).

use pulp::Simd;

use crate::activation::Activation;
use crate::elem::{AlignedBuf, Scratch, take_scratch};
use crate::gemm::{AView, Ahead, Bias, Gemm, NC, nr, pack_b, pack_b_rows, packed_b_len, tile_dims};
use crate::vmem::{copy, load, store};

/// The [`pulp::WithSimd`] op that copies `a` (`[k, m]` row-major, validated, `m, k > 0`),
/// transposed, into `MR`-interleaved blocks: `dst[(r / MR)·MR·k + kk·MR + r % MR] =
/// a[kk·m + r]`, the rows past `m` of the last block zeroed. Returns the buffer (this
/// thread's scratch, to be handed back with [`give_back_transposed_a`]) and `MR`.
pub(crate) struct PackTransposedA<'a> {
    pub(crate) a: &'a [f32],
    pub(crate) m: usize,
    pub(crate) k: usize,
}

impl pulp::WithSimd for PackTransposedA<'_> {
    type Output = (AlignedBuf<f32>, usize);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let Self { a, m, k } = self;
        let mr = tile_dims::<S>().0;
        let len = m.div_ceil(mr) * mr * k;
        let mut buf = take_scratch(&TRANSPOSED_A, len);
        pack_transposed(simd, a, m, (m, 0), m, k, mr, &mut buf.as_mut_slice()[..len]);
        (buf, mr)
    }
}

/// Copies `m` rows of `A` transposed into blocks of `mr` interleaved rows of `k`
/// (`dst[(r / mr)·mr·k + kk·mr + r % mr] = A[r, kk]`, `ceil(m / mr)·mr·k` elements), zeroing
/// the rows past `m` of the last block: the GEMM's `A` with `rs = 1`, `cs = mr`.
///
/// `a` holds `A` transposed, as matrices `[k, rows]` (rows `lda ≥ rows` apart) one after
/// another, `part` elements apart, with `(rows, part) = parts`: row `r` of `A` is column
/// `r % rows` of matrix `r / rows` (one matrix: `rows = m`; a batch of images' output
/// gradients, the `[channels, pixels]` planes of one group: `rows` = pixels, `part` = one
/// image's elements). A block within one matrix whose `mr` values per step fit a vector
/// is copied a vector per step: the lanes past `mr` land on the next step's run, written
/// after (a masked copy of six values — AVX2's masked store is slow — cost a third of the
/// conv input gradient's time outside its GEMM); the others a copy per step and run of
/// rows within one matrix.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn pack_transposed<S: Simd>(
    simd: S,
    a: &[f32],
    lda: usize,
    parts: (usize, usize),
    m: usize,
    k: usize,
    mr: usize,
    dst: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let (rows, part) = parts;
    let at = |r: usize| r / rows * part + r % rows;
    let dst = &mut dst[..m.div_ceil(mr) * mr * k];
    for (blk, d) in dst.chunks_exact_mut(mr * k).enumerate() {
        let r0 = blk * mr;
        let valid = mr.min(m - r0);
        let src = at(r0);
        let run = valid == mr && r0 % rows + mr <= rows;
        // Steps `0..k - 1` as whole vectors: each store stays inside `d` (`lanes ≤ 2·mr`)
        // and each load inside `a`; the last step copies `mr` values.
        let vector = run && mr <= lanes && lanes <= 2 * mr && k > 1;
        if vector && src + (k - 2) * lda + lanes <= a.len() {
            for kk in 0..k - 1 {
                let v = load(simd, &a[src + kk * lda..][..lanes]);
                store(simd, &mut d[kk * mr..][..lanes], v);
            }
            let kk = k - 1;
            copy(simd, &mut d[kk * mr..][..mr], &a[src + kk * lda..][..mr]);
        } else {
            // Per step, a copy per run of the block's rows within one matrix (more than one
            // where the block straddles images), zeros past `valid`.
            for (kk, d) in d.chunks_exact_mut(mr).enumerate() {
                let mut i = 0;
                while i < valid {
                    let r = r0 + i;
                    let len = (rows - r % rows).min(valid - i);
                    copy(simd, &mut d[i..i + len], &a[at(r) + kk * lda..][..len]);
                    i += len;
                }
                d[valid..].fill(0.0);
            }
        }
    }
}

/// Hands the buffer [`PackTransposedA`] returned back to this thread's scratch.
pub(crate) fn give_back_transposed_a(buf: AlignedBuf<f32>) {
    TRANSPOSED_A.set(Some(buf));
}

/// The [`pulp::WithSimd`] op for `out[m, n] (+)= A·op(b)` on rows of `A` given as a view:
/// `b` is `[n, k]` row-major when `trans_b`, else `[k, n]`; `out` has row stride `n`.
/// Lengths are validated by the caller; `k > 0`.
pub(crate) struct Matmul<'a> {
    pub(crate) a: AView<'a>,
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) b: &'a [f32],
    pub(crate) trans_b: bool,
    pub(crate) accumulate: bool,
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for Matmul<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            a,
            m,
            k,
            n,
            b,
            trans_b,
            accumulate,
            out,
        } = self;
        if m == 0 || n == 0 {
            return;
        }
        let nr = nr::<S>();
        let block = NC.div_ceil(nr) * nr;
        let mut buf = take_scratch(&PACKED_B, packed_b_len(k, block.min(n), nr));
        for c0 in (0..n).step_by(block) {
            let cols = c0..(c0 + block).min(n);
            let len = packed_b_len(k, cols.len(), nr);
            let packed = &mut buf.as_mut_slice()[..len];
            if trans_b {
                pack_b(simd, b, k, k, cols.clone(), nr, packed, |v| v);
            } else {
                pack_b_rows(simd, b, n, k, cols.clone(), nr, packed);
            }
            Gemm {
                m,
                n: cols.len(),
                k,
                a,
                b: packed,
                bias: Bias::None,
                act: Activation::None,
                ldc: n,
                accumulate,
                b_window: None,
                ahead: Ahead::NONE,
                scatter: None,
            }
            .run(simd, &mut out[c0..]);
        }
        PACKED_B.set(Some(buf));
    }
}

std::thread_local! {
    /// This thread's copy of a transposed `A` (see [`PackTransposedA`]).
    static TRANSPOSED_A: Scratch = const { Scratch::new(None) };
    /// This thread's packed column block of `B` (see [`Matmul`]).
    static PACKED_B: Scratch = const { Scratch::new(None) };
}
