//! NCHW 2-D convolution as im2col + GEMM.
//!
//! Per image and group, the input patches are written straight into packed `B` panels (one
//! column per output pixel, one row per `(channel, ky, kx)` tap, zeros at padded positions),
//! the group's weights `[oc/g, c/g·kh·kw]` are the packed `A`, and the shared GEMM core
//! ([`gemm_packed`]) stores `[oc/g, oh·ow]` directly into the NCHW output with the
//! per-channel bias and the activation fused into the store.

use pulp::Simd;

use crate::activation::Activation;
use crate::gemm::{Bias, gemm_packed, nr, pack_a};
use crate::shape::Conv2dParams;

/// Geometry of one group's im2col, all in elements.
struct Im2col {
    h: usize,
    w: usize,
    cg: usize,
    kh: usize,
    kw: usize,
    ow: usize,
    pixels: usize,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
}

impl Im2col {
    /// Writes the patches of `x` (one group of one image, `[cg, h, w]`) as packed panels of
    /// `nr` output pixels × `cg·kh·kw` taps into `dst`.
    #[inline(always)]
    fn pack(&self, x: &[f32], nr: usize, dst: &mut [f32]) {
        let taps = self.cg * self.kh * self.kw;
        let plane = self.h * self.w;
        // Top-left input coordinate of each pixel's window (may be negative: padding).
        let mut origin = vec![(0isize, 0isize); nr];
        for (pi, panel) in dst.chunks_exact_mut(taps * nr).enumerate() {
            let j0 = pi * nr;
            let valid = nr.min(self.pixels - j0);
            for (jj, o) in origin.iter_mut().enumerate().take(valid) {
                let (oy, ox) = ((j0 + jj) / self.ow, (j0 + jj) % self.ow);
                *o = (
                    (oy * self.stride.0) as isize - self.padding.0 as isize,
                    (ox * self.stride.1) as isize - self.padding.1 as isize,
                );
            }
            let mut rows = panel.chunks_exact_mut(nr);
            for ci in 0..self.cg {
                let xc = &x[ci * plane..(ci + 1) * plane];
                for ky in 0..self.kh {
                    let dy = (ky * self.dilation.0) as isize;
                    for kx in 0..self.kw {
                        let dx = (kx * self.dilation.1) as isize;
                        let Some(row) = rows.next() else { return };
                        for (dst, &(y0, x0)) in row.iter_mut().zip(&origin[..valid]) {
                            let (y, xx) = (y0 + dy, x0 + dx);
                            *dst = if y >= 0
                                && (y as usize) < self.h
                                && xx >= 0
                                && (xx as usize) < self.w
                            {
                                xc[y as usize * self.w + xx as usize]
                            } else {
                                0.0
                            };
                        }
                        row[valid..].fill(0.0);
                    }
                }
            }
        }
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::conv2d`](crate::Kernels::conv2d); shapes are
/// validated by the caller and `out_shape` is `conv2d_out_shape(x_shape, w_shape, p)`.
pub(crate) struct Conv2d<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) x_shape: [usize; 4],
    pub(crate) w: &'a [f32],
    pub(crate) w_shape: [usize; 4],
    pub(crate) out_shape: [usize; 4],
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) p: Conv2dParams,
    pub(crate) act: Activation,
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for Conv2d<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let [batch, c, h, w] = self.x_shape;
        let [oc, cg, kh, kw] = self.w_shape;
        let [_, _, oh, ow] = self.out_shape;
        let groups = self.p.groups;
        let ocg = oc / groups;
        let taps = cg * kh * kw;
        let pixels = oh * ow;
        if batch == 0 || ocg == 0 || pixels == 0 {
            return;
        }
        let nr = nr::<S>();
        let geometry = Im2col {
            h,
            w,
            cg,
            kh,
            kw,
            ow,
            pixels,
            stride: self.p.stride,
            padding: self.p.padding,
            dilation: self.p.dilation,
        };
        // Packed weights per group: the A operand, reused for every image.
        let a_packs: Vec<Vec<f32>> = (0..groups)
            .map(|g| {
                let mut a = Vec::new();
                pack_a(
                    &self.w[g * ocg * taps..(g + 1) * ocg * taps],
                    ocg,
                    taps,
                    &mut a,
                );
                a
            })
            .collect();
        let mut b = vec![0.0f32; pixels.div_ceil(nr) * nr * taps];
        for img in 0..batch {
            for (g, a) in a_packs.iter().enumerate() {
                let xg = &self.x[(img * c + g * cg) * h * w..][..cg * h * w];
                if taps > 0 {
                    geometry.pack(xg, nr, &mut b);
                }
                let out = &mut self.out[(img * oc + g * ocg) * pixels..][..ocg * pixels];
                let bias = self
                    .bias
                    .map_or(Bias::None, |b| Bias::PerRow(&b[g * ocg..(g + 1) * ocg]));
                gemm_packed(simd, ocg, pixels, taps, a, &b, bias, self.act, out);
            }
        }
    }
}
