//! The matrix-multiply core shared by [`dense`](crate::Kernels::dense) and
//! [`conv2d`](crate::Kernels::conv2d).
//!
//! `C[m,n] = act(A[m,k] · B[n,k]ᵀ + bias)`. `A` is packed into blocks of [`MR`] rows with the
//! rows interleaved (`a[kk·MR + i]`), `B` into panels of `NR = NV·lanes` columns
//! (`b[kk·NR + j]`, zero-padded). The microkernel keeps an `MR × NV` tile of vector
//! accumulators in registers: per `kk` it loads `NV` vectors of the `B` panel, broadcasts `MR`
//! values of `A` and issues `MR·NV` FMAs. Bias and activation are applied to the tile as it is
//! stored. Batch-1 dense uses a GEMV instead: dot products along `k`, four output rows in flight
//! with two accumulators each.

use pulp::Simd;

use crate::activation::{Activation, apply, apply_slice};

/// Rows of `A` per microkernel tile.
pub(crate) const MR: usize = 6;
/// SIMD vectors of `B` columns per microkernel tile (`NR = NV · lanes`).
pub(crate) const NV: usize = 2;

/// Columns of `B` per packed panel for the SIMD type `S`.
#[inline(always)]
pub(crate) fn nr<S: Simd>() -> usize {
    NV * S::F32_LANES
}

/// Where the bias of the GEMM output comes from.
#[derive(Clone, Copy)]
pub(crate) enum Bias<'a> {
    /// No bias.
    None,
    /// One value per output row (conv: per output channel).
    PerRow(&'a [f32]),
    /// One value per output column (dense: per output feature).
    PerCol(&'a [f32]),
}

/// Packs row-major `a` (`m × k`) into `MR`-row blocks, zero-padding the last block.
#[inline(always)]
pub(crate) fn pack_a(a: &[f32], m: usize, k: usize, dst: &mut Vec<f32>) {
    let blocks = m.div_ceil(MR);
    dst.clear();
    dst.resize(blocks * MR * k, 0.0);
    if k == 0 {
        return;
    }
    for (blk, block) in dst.chunks_exact_mut(MR * k).enumerate() {
        for i in 0..MR.min(m - blk * MR) {
            let row = &a[(blk * MR + i) * k..][..k];
            for (kk, &v) in row.iter().enumerate() {
                block[kk * MR + i] = v;
            }
        }
    }
}

/// Packs row-major `b` (`n × k`, i.e. PyTorch Linear weights) into panels of `nr` columns.
#[inline(always)]
pub(crate) fn pack_b(b: &[f32], n: usize, k: usize, nr: usize, dst: &mut Vec<f32>) {
    let panels = n.div_ceil(nr);
    dst.clear();
    dst.resize(panels * nr * k, 0.0);
    if k == 0 {
        return;
    }
    for (p, panel) in dst.chunks_exact_mut(nr * k).enumerate() {
        for j in 0..nr.min(n - p * nr) {
            let row = &b[(p * nr + j) * k..][..k];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * nr + j] = v;
            }
        }
    }
}

/// The `MR × NV` register tile: `Σ_kk a[kk·MR + i] · b[kk·NV + v]`.
#[inline(always)]
fn microkernel<S: Simd>(simd: S, a: &[f32], b: &[S::f32s]) -> [[S::f32s; NV]; MR] {
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; NV]; MR];
    for (av, bv) in a.chunks_exact(MR).zip(b.chunks_exact(NV)) {
        let (b0, b1) = (bv[0], bv[1]);
        for (row, &ai) in acc.iter_mut().zip(av) {
            let ai = simd.splat_f32s(ai);
            row[0] = simd.mul_add_e_f32s(ai, b0, row[0]);
            row[1] = simd.mul_add_e_f32s(ai, b1, row[1]);
        }
    }
    acc
}

/// `out[m,n] = act(A·Bᵀ + bias)` from packed operands (see [`pack_a`], [`pack_b`]).
///
/// `a` holds `ceil(m/MR)` blocks of `MR·k`, `b` holds `ceil(n/NR)` panels of `NR·k`, `out` is
/// row-major with exactly `m·n` elements.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn gemm_packed<S: Simd>(
    simd: S,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    bias: Bias<'_>,
    act: Activation,
    out: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    let lanes = S::F32_LANES;
    let nr = nr::<S>();
    let panels = n.div_ceil(nr);
    let (b, _) = S::as_simd_f32s(&b[..panels * nr * k]);
    let col_bias = match bias {
        Bias::PerCol(bias) => {
            let mut padded = vec![0.0f32; panels * nr];
            padded[..n].copy_from_slice(&bias[..n]);
            padded
        }
        _ => Vec::new(),
    };
    let (col_bias, _) = S::as_simd_f32s(&col_bias);
    let zero = simd.splat_f32s(0.0);

    for p in 0..panels {
        let panel = &b[p * k * NV..(p + 1) * k * NV];
        let j0 = p * nr;
        for blk in 0..m.div_ceil(MR) {
            let acc = microkernel(simd, &a[blk * MR * k..(blk + 1) * MR * k], panel);
            let r0 = blk * MR;
            for (i, tile_row) in acc.iter().enumerate().take(MR.min(m - r0)) {
                let row_bias = match bias {
                    Bias::PerRow(bias) => simd.splat_f32s(bias[r0 + i]),
                    _ => zero,
                };
                let out_row = &mut out[(r0 + i) * n..(r0 + i + 1) * n];
                for (v, &t) in tile_row.iter().enumerate() {
                    let c0 = j0 + v * lanes;
                    if c0 >= n {
                        break;
                    }
                    let mut val = simd.add_f32s(t, row_bias);
                    if let Bias::PerCol(_) = bias {
                        val = simd.add_f32s(val, col_bias[p * NV + v]);
                    }
                    let val = apply(simd, act, val);
                    let end = (c0 + lanes).min(n);
                    simd.partial_store_f32s(&mut out_row[c0..end], val);
                }
            }
        }
    }
}

/// Dot product of two equal-length vectors, several accumulators.
#[inline(always)]
fn dot<S: Simd>(simd: S, x: &[f32], y: &[f32]) -> f32 {
    let (xh, xt) = S::as_simd_f32s(x);
    let (yh, yt) = S::as_simd_f32s(y);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [zero; 4];
    let (xc, xr) = xh.split_at(xh.len() / 4 * 4);
    let (yc, yr) = yh.split_at(xc.len());
    for (xv, yv) in xc.chunks_exact(4).zip(yc.chunks_exact(4)) {
        for ((a, &xi), &yi) in acc.iter_mut().zip(xv).zip(yv) {
            *a = simd.mul_add_e_f32s(xi, yi, *a);
        }
    }
    for (&xi, &yi) in xr.iter().zip(yr) {
        acc[0] = simd.mul_add_e_f32s(xi, yi, acc[0]);
    }
    if !xt.is_empty() {
        let xv = simd.partial_load_f32s(xt);
        let yv = simd.partial_load_f32s(yt);
        acc[1] = simd.mul_add_e_f32s(xv, yv, acc[1]);
    }
    let s = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    simd.reduce_sum_f32s(s)
}

/// Batch-1 dense: `out[j] = act(x · w[j,:] + bias[j])` with `w` row-major `n × k`.
#[inline(always)]
pub(crate) fn gemv<S: Simd>(
    simd: S,
    x: &[f32],
    w: &[f32],
    k: usize,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
) {
    const ROWS: usize = 4;
    let n = out.len();
    let (xh, xt) = S::as_simd_f32s(x);
    let zero = simd.splat_f32s(0.0);
    let full = if k == 0 { 0 } else { n / ROWS * ROWS };
    for j0 in (0..full).step_by(ROWS) {
        let rows: [&[f32]; ROWS] = core::array::from_fn(|r| &w[(j0 + r) * k..(j0 + r + 1) * k]);
        let split: [(&[S::f32s], &[f32]); ROWS] = rows.map(S::as_simd_f32s);
        // Two accumulators per row (even and odd vectors): eight independent FMA chains.
        let mut acc = [[zero; 2]; ROWS];
        let pairs = xh.len() / 2;
        for c in 0..pairs {
            let x0 = xh[2 * c];
            let x1 = xh[2 * c + 1];
            for (a, (wh, _)) in acc.iter_mut().zip(&split) {
                a[0] = simd.mul_add_e_f32s(x0, wh[2 * c], a[0]);
                a[1] = simd.mul_add_e_f32s(x1, wh[2 * c + 1], a[1]);
            }
        }
        if xh.len() % 2 == 1 {
            let c = xh.len() - 1;
            for (a, (wh, _)) in acc.iter_mut().zip(&split) {
                a[0] = simd.mul_add_e_f32s(xh[c], wh[c], a[0]);
            }
        }
        if !xt.is_empty() {
            let xv = simd.partial_load_f32s(xt);
            for (a, (_, wt)) in acc.iter_mut().zip(&split) {
                a[1] = simd.mul_add_e_f32s(xv, simd.partial_load_f32s(wt), a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[j0 + r] = simd.reduce_sum_f32s(simd.add_f32s(a[0], a[1]));
        }
    }
    for (j, o) in out.iter_mut().enumerate().skip(full) {
        *o = dot(simd, x, &w[j * k..(j + 1) * k]);
    }
    if let Some(bias) = bias {
        let (oh, ot) = S::as_mut_simd_f32s(out);
        let (bh, bt) = S::as_simd_f32s(bias);
        for (o, &b) in oh.iter_mut().zip(bh) {
            *o = simd.add_f32s(*o, b);
        }
        for (o, &b) in ot.iter_mut().zip(bt) {
            *o += b;
        }
    }
    apply_slice(simd, act, out);
}

/// The [`pulp::WithSimd`] op behind [`Kernels::dense`](crate::Kernels::dense); lengths are
/// validated by the caller.
pub(crate) struct Dense<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) w: &'a [f32],
    pub(crate) n: usize,
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) act: Activation,
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for Dense<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            m,
            k,
            w,
            n,
            bias,
            act,
            out,
        } = self;
        if m == 0 || n == 0 {
            return;
        }
        if m == 1 {
            gemv(simd, x, w, k, bias, act, out);
            return;
        }
        let mut a = Vec::new();
        let mut b = Vec::new();
        pack_a(x, m, k, &mut a);
        pack_b(w, n, k, nr::<S>(), &mut b);
        let bias = bias.map_or(Bias::None, Bias::PerCol);
        gemm_packed(simd, m, n, k, &a, &b, bias, act, out);
    }
}
