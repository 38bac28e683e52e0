//! NCHW pooling: max, average (`count_include_pad=True`) and global average.
//!
//! A 2-D window is separable for both max and sum, so each plane is reduced in two passes:
//! horizontally (every input row → `ow` window results; contiguous shifted slices when the
//! stride is 1) and then vertically, combining whole rows of the horizontal result with
//! vector max/add.

use pulp::Simd;

use crate::shape::Pool2dParams;

/// Which reduction a pooling op performs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// Maximum over the valid (non-padding) window elements.
    Max,
    /// Sum over the window divided by `kh·kw` (padding counts as zeros).
    Avg,
}

impl PoolKind {
    fn identity(self) -> f32 {
        match self {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Avg => 0.0,
        }
    }
}

/// `dst[i] = op(dst[i], src[i])` for equal-length slices.
#[inline(always)]
fn combine<S: Simd>(simd: S, kind: PoolKind, dst: &mut [f32], src: &[f32]) {
    let (dh, dt) = S::as_mut_simd_f32s(dst);
    let (sh, st) = S::as_simd_f32s(src);
    match kind {
        PoolKind::Max => {
            for (d, &s) in dh.iter_mut().zip(sh) {
                *d = simd.max_f32s(*d, s);
            }
            for (d, &s) in dt.iter_mut().zip(st) {
                *d = d.max(s);
            }
        }
        PoolKind::Avg => {
            for (d, &s) in dh.iter_mut().zip(sh) {
                *d = simd.add_f32s(*d, s);
            }
            for (d, &s) in dt.iter_mut().zip(st) {
                *d += s;
            }
        }
    }
}

/// Output indices `o` in `0..out_len` with `0 <= o·stride + tap - pad < len`, as a range.
fn valid_range(
    len: usize,
    out_len: usize,
    stride: usize,
    tap: usize,
    pad: usize,
) -> core::ops::Range<usize> {
    let lo = if tap >= pad {
        0
    } else {
        (pad - tap).div_ceil(stride)
    };
    let hi = if len + pad > tap {
        ((len + pad - 1 - tap) / stride + 1).min(out_len)
    } else {
        0
    };
    lo..hi.max(lo)
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
        let [_, _, h, w] = self.x_shape;
        let [_, _, oh, ow] = self.out_shape;
        let (kh, kw) = self.p.kernel;
        let (sh, sw) = self.p.stride;
        let (ph, pw) = self.p.padding;
        let kind = self.kind;
        if oh * ow == 0 {
            return;
        }
        let col_ranges: Vec<_> = (0..kw).map(|kx| valid_range(w, ow, sw, kx, pw)).collect();
        let mut hbuf = vec![0.0f32; h * ow];
        let scale = simd.splat_f32s(1.0 / (kh * kw) as f32);
        for (plane, out) in self
            .x
            .chunks_exact(h * w)
            .zip(self.out.chunks_exact_mut(oh * ow))
        {
            // Horizontal pass.
            for (row, hrow) in plane.chunks_exact(w).zip(hbuf.chunks_exact_mut(ow)) {
                hrow.fill(kind.identity());
                for (kx, range) in col_ranges.iter().enumerate() {
                    if range.is_empty() {
                        continue;
                    }
                    let first = range.start * sw + kx - pw;
                    if sw == 1 {
                        let len = range.len();
                        combine(
                            simd,
                            kind,
                            &mut hrow[range.clone()],
                            &row[first..first + len],
                        );
                    } else {
                        let src = row[first..].iter().step_by(sw);
                        for (d, &s) in hrow[range.clone()].iter_mut().zip(src) {
                            *d = match kind {
                                PoolKind::Max => d.max(s),
                                PoolKind::Avg => *d + s,
                            };
                        }
                    }
                }
            }
            // Vertical pass.
            for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
                orow.fill(kind.identity());
                for ky in 0..kh {
                    let y = (oy * sh + ky).wrapping_sub(ph);
                    if y < h {
                        combine(simd, kind, orow, &hbuf[y * ow..(y + 1) * ow]);
                    }
                }
                if kind == PoolKind::Avg {
                    let (head, tail) = S::as_mut_simd_f32s(orow);
                    for v in head {
                        *v = simd.mul_f32s(*v, scale);
                    }
                    let s = 1.0 / (kh * kw) as f32;
                    for v in tail {
                        *v *= s;
                    }
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
