//! Fully connected layers: [`PackedDense`] (weights packed once into the GEMM's panel layout,
//! `f32`, `f16` or `bf16`) and the ops behind [`Kernels::dense`](crate::Kernels::dense) and
//! [`Kernels::dense_packed`](crate::Kernels::dense_packed).
//!
//! Unpacked `dense` packs the weights one column block at a time into the same layout and runs
//! the same GEMM, except at batch 1, where packing would read and write the weights once more
//! than the product itself does: there it takes dot products along the rows of `w` in place.
//!
//! Products with fewer output features than a vector has lanes waste most of each of the
//! GEMM's multiply-adds on padding. At batch 1, or with a single output feature, they take
//! dot products instead ([`narrow`]): packed `f32` weights keep a row-major copy for it.

use pulp::Simd;

use crate::activation::{Activation, apply_slice};
use crate::dispatch::Level;
use crate::elem::{AlignedBuf, Elem, WeightType};
use crate::gemm::{AView, Bias, Gemm, NC, nr, pack_b, packed_b_len};

/// The packed weights of one storage type.
#[derive(Clone)]
pub(crate) enum PackedData {
    F32(AlignedBuf<f32>),
    F16(AlignedBuf<half::f16>),
    Bf16(AlignedBuf<half::bf16>),
}

/// Dense-layer weights `[n, k]` (PyTorch `Linear` layout) packed once for
/// [`Kernels::dense_packed`](crate::Kernels::dense_packed), with the bias alongside.
///
/// The layout is the GEMM's: blocks of 512 rows of `k`, inside each panels of `NR` output
/// features (`NR` = 32 on AVX-512, 16 on AVX2), 64-byte aligned, zero-padded. It depends on the
/// SIMD level, so a `PackedDense` records the [`Level`] it was packed for and
/// `dense_packed` refuses (with an error) kernels of another level: pack with the same
/// [`Kernels`](crate::Kernels) that runs the layer. `f16`/`bf16` weights stay 16-bit in
/// memory and are widened to `f32` in registers.
#[derive(Clone)]
pub struct PackedDense {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) level: Level,
    pub(crate) data: PackedData,
    /// Bias zero-padded to whole panels, if any.
    pub(crate) bias: Option<Vec<f32>>,
    /// For `f32` weights with fewer outputs than a vector has lanes: the weights row-major,
    /// for the dot-product path ([`narrow`]).
    pub(crate) rows: Option<Vec<f32>>,
}

impl core::fmt::Debug for PackedDense {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PackedDense")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("level", &self.level)
            .field("weight_type", &self.weight_type())
            .field("bias", &self.bias.is_some())
            .finish()
    }
}

impl PackedDense {
    /// Output features (rows of the original weights).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of the original weights).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The SIMD level the layout was packed for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The storage type of the packed weights.
    pub fn weight_type(&self) -> WeightType {
        self.data.type_of()
    }
}

/// The [`pulp::WithSimd`] op that packs `w` (`n × k`, validated) for the level it runs at.
pub(crate) struct PackDense<'a, T, E> {
    pub(crate) w: &'a [T],
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) conv: fn(T) -> E,
}

impl<T: Copy + 'static, E: Elem> pulp::WithSimd for PackDense<'_, T, E> {
    /// Panel width, vector lanes, and the packed weights.
    type Output = (usize, usize, AlignedBuf<E>);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let nr = nr::<S>();
        let mut buf = AlignedBuf::zeroed(packed_b_len(self.k, self.n, nr));
        pack_b(
            simd,
            self.w,
            self.k,
            self.k,
            0..self.n,
            nr,
            buf.as_mut_slice(),
            self.conv,
        );
        (nr, S::F32_LANES, buf)
    }
}

/// The bias zero-padded to whole panels of `nr`.
pub(crate) fn padded_bias(bias: &[f32], nr: usize) -> Vec<f32> {
    let mut padded = vec![0.0; bias.len().div_ceil(nr) * nr];
    padded[..bias.len()].copy_from_slice(bias);
    padded
}

/// The [`pulp::WithSimd`] op behind [`Kernels::dense_packed`](crate::Kernels::dense_packed);
/// lengths and level are validated by the caller.
pub(crate) struct DensePacked<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) m: usize,
    pub(crate) p: &'a PackedDense,
    pub(crate) act: Activation,
    pub(crate) out: &'a mut [f32],
}

impl DensePacked<'_> {
    #[inline(always)]
    fn run<S: Simd, E: Elem>(self, simd: S, b: &[E]) {
        let p = self.p;
        Gemm {
            m: self.m,
            n: p.n,
            k: p.k,
            a: AView {
                data: self.x,
                rs: p.k,
                cs: 1,
            },
            b,
            bias: p.bias.as_deref().map_or(Bias::None, Bias::PerCol),
            act: self.act,
            ldc: p.n,
            accumulate: false,
        }
        .run(simd, self.out);
    }
}

impl pulp::WithSimd for DensePacked<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let p = self.p;
        // At batch 1 a `k` shorter than a vector leaves each dot product one partial vector
        // and a reduction: the panel's single multiply-add per step is cheaper there.
        if let Some(w) = &p.rows
            && ((self.m == 1 && p.k >= S::F32_LANES) || p.n == 1)
        {
            let bias = p.bias.as_deref().map(|b| &b[..p.n]);
            narrow(simd, self.x, self.m, p.k, w, p.n, bias, self.act, self.out);
            return;
        }
        match &self.p.data {
            PackedData::F32(b) => self.run(simd, b.as_slice()),
            PackedData::F16(b) => self.run(simd, b.as_slice()),
            PackedData::Bf16(b) => self.run(simd, b.as_slice()),
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
        let xv = crate::vmem::partial_load(simd, xt);
        let yv = crate::vmem::partial_load(simd, yt);
        acc[1] = simd.mul_add_e_f32s(xv, yv, acc[1]);
    }
    let s = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    simd.reduce_sum_f32s(s)
}

/// Unpacked batch-1 dense: `out[j] = act(x · w[j,:] + bias[j])` with `w` row-major `n × k`,
/// four rows in flight with two accumulators each, reading `w` once in place.
#[inline(always)]
fn gemv_rows<S: Simd>(
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
            let xv = crate::vmem::partial_load(simd, xt);
            for (a, (_, wt)) in acc.iter_mut().zip(&split) {
                a[1] = simd.mul_add_e_f32s(xv, crate::vmem::partial_load(simd, wt), a[1]);
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
        for (o, &b) in out.iter_mut().zip(bias) {
            *o += b;
        }
    }
    apply_slice(simd, act, out);
}

/// Dense products without the GEMM: at batch 1 (`m == 1`), dot products of `x` with the rows
/// of `w` ([`gemv_rows`]); with one output feature (`n == 1`), dot products of the rows of
/// `x` with `w`, the same kernel with the operands' roles swapped. Other shapes are not
/// handled: returns whether it ran.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn narrow<S: Simd>(
    simd: S,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
) -> bool {
    if m == 1 {
        gemv_rows(simd, x, w, k, bias, act, out);
    } else if n == 1 {
        gemv_rows(simd, w, x, k, None, Activation::None, out);
        if let Some(&b) = bias.and_then(|b| b.first()) {
            for o in out.iter_mut() {
                *o += b;
            }
        }
        apply_slice(simd, act, out);
    } else {
        return false;
    }
    true
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
        if narrow(simd, x, m, k, w, n, bias, act, out) {
            return;
        }
        // Pack one column block of the weights at a time (bounded scratch), same layout and
        // GEMM as `dense_packed`.
        let nr = nr::<S>();
        let block = NC.div_ceil(nr) * nr;
        let bias = bias.map(|b| padded_bias(b, nr));
        let mut b = vec![0.0f32; packed_b_len(k, block.min(n), nr)];
        for c0 in (0..n).step_by(block) {
            let cols = c0..(c0 + block).min(n);
            let len = packed_b_len(k, cols.len(), nr);
            pack_b(simd, w, k, k, cols.clone(), nr, &mut b[..len], |v| v);
            Gemm {
                m,
                n: cols.len(),
                k,
                a: AView {
                    data: x,
                    rs: k,
                    cs: 1,
                },
                b: &b[..len],
                bias: bias
                    .as_deref()
                    .map_or(Bias::None, |b| Bias::PerCol(&b[c0..])),
                act,
                ldc: n,
                accumulate: false,
            }
            .run(simd, &mut out[c0..]);
        }
    }
}

/// Packs validated weights at the level of `kernels`.
pub(crate) fn pack<T: Copy + 'static, E: Elem>(
    kernels: &crate::Kernels,
    w: &[T],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    conv: fn(T) -> E,
    wrap: fn(AlignedBuf<E>) -> PackedData,
) -> PackedDense {
    let (nr, lanes, buf) = kernels.run(PackDense { w, n, k, conv });
    let data = wrap(buf);
    // The dot-product path reads `f32` rows; half weights keep the widening panels only.
    let rows = match &data {
        PackedData::F32(panels) if n < lanes => Some(unpack_rows(panels.as_slice(), n, k, nr)),
        _ => None,
    };
    PackedDense {
        n,
        k,
        level: kernels.level(),
        data,
        bias: bias.map(|b| padded_bias(b, nr)),
        rows,
    }
}

/// The row-major `n × k` weights back out of one packed panel (`n ≤ nr`): in a single
/// panel, step `kk` of every `KC` block sits at `kk·nr`, so column `j`'s row is strided.
fn unpack_rows(panel: &[f32], n: usize, k: usize, nr: usize) -> Vec<f32> {
    debug_assert!(n <= nr);
    let mut rows = vec![0.0; n * k];
    for (j, row) in rows.chunks_exact_mut(k.max(1)).enumerate().take(n) {
        for (kk, v) in row.iter_mut().enumerate() {
            *v = panel[kk * nr + j];
        }
    }
    rows
}

impl PackedData {
    fn type_of(&self) -> WeightType {
        match self {
            PackedData::F32(_) => WeightType::F32,
            PackedData::F16(_) => WeightType::F16,
            PackedData::Bf16(_) => WeightType::Bf16,
        }
    }
}
