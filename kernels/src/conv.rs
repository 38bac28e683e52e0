//! NCHW 2-D convolution: [`PackedConv2d`] (weights packed once), an implicit im2col (the
//! patches read from the image in place), im2col written straight into the GEMM's packed
//! panels, and a direct depthwise kernel.
//!
//! Unpadded convolutions with at least twice as many taps as output channels per group (see
//! [`gathers`]; the seed CNN's second conv) run per image and group as `out[pixels, oc/g] =
//! P[pixels, taps] · Wᵀ[taps, oc/g]`: `P` is the GEMM's `A`, read through two offset tables
//! (where each pixel's window starts, where each tap sits from there), `Wᵀ` its `B`, packed
//! once like a dense layer's weights, the bias per column; each block of pixels is then
//! transposed into the NCHW output.
//!
//! The others run per image and group as `out[oc/g, pixels] = W[oc/g, taps] · P[taps, pixels]`: the packed
//! weights are the GEMM's `A` operand (blocks of `MR` rows interleaved per tap), the patches
//! `P` are written one block of about [`NC`] output pixels at a time (so the block stays in L2)
//! into the [`KC`]-blocked panel layout of `B`, panel by panel. On AVX-512 and AVX2, a vector
//! of a panel row whose columns are at most two runs of the input (stride 1, one row wrap, no
//! padding) is two unaligned loads and a blend; otherwise one permute of a two-vector input
//! window (stride 1: the window covers the row wraps), padding zeroed by the permute's mask;
//! panels whose windows do not fit (large strides, very narrow outputs) and the other levels
//! copy contiguous runs with vector loads and stores, padding written as zeros. The GEMM stores `[oc/g, oh·ow]` straight
//! into the NCHW output with the per-channel bias and the activation fused.
//!
//! 3 × 3 convolutions with stride 1, one group and at least 16 channels in and out run as
//! Winograd F(4 × 4, 3 × 3) ([`winograd`]) when the output fills most of its 4 × 4 tiles, a
//! last row or column of single pixels left to a strip ([`covers`]); their packed weights
//! keep the direct path's weights for outputs that do not.
//!
//! Unpadded convolutions with at most 27 taps per output and at least 8 output channels (a
//! first layer on gray or RGB images) run as a stencil ([`stencil`](crate::stencil)): no
//! patches, each tap's inputs loaded once per tile of a row's pixels and output channels.
//!
//! Depthwise convolutions (one input channel per group) skip im2col: each output row
//! accumulates `w · (shifted input row)` per tap, vectorised along the row when the stride is 1.

use pulp::Simd;

use crate::activation::{Activation, apply_slice};
use crate::dense::{PackedData, PackedDense};
use crate::dispatch::Level;
use crate::elem::{Scratch, take_scratch};
use crate::gemm::{AView, Ahead, Bias, Gemm, KC, NC, OffsetTables, nr, packed_b_len, tile_dims};
use crate::shape::Conv2dParams;
use crate::vmem::{copy, lane_bits, load_masked, masked_loads, store, transpose, zero};
use crate::winograd::{self, WinogradWeights, covers};

/// Conv2d weights `[oc, c/groups, kh, kw]` packed once for
/// [`Kernels::conv2d_packed`](crate::Kernels::conv2d_packed), with the bias, the geometry and
/// the [`Level`] they were packed for (the layout depends on the level's register tile; a
/// `PackedConv2d` is refused, with an error, by kernels of another level).
#[derive(Clone, Debug)]
pub struct PackedConv2d {
    pub(crate) w_shape: [usize; 4],
    pub(crate) params: Conv2dParams,
    pub(crate) level: Level,
    pub(crate) weights: ConvWeights,
}

/// The weights of a [`PackedConv2d`], in the layout of the forward path they were packed
/// for (one per path, chosen by [`Kernels::pack_conv2d`](crate::Kernels::pack_conv2d)).
#[derive(Clone, Debug)]
pub(crate) enum ConvWeights {
    /// For im2col: per group, `ceil(ocg / mr)` blocks of `mr × taps` (`w[kk·mr + i]`,
    /// zero-padded rows; `mr` is the level's `MR`), and the bias per output channel.
    Interleaved {
        mr: usize,
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    /// For the depthwise kernel: the weights as given, and the bias.
    Depthwise { w: Vec<f32>, bias: Option<Vec<f32>> },
    /// For the stencil kernel ([`stencil`](crate::stencil)): the weights in blocks of
    /// output channels, tap-major ([`stencil::pack`](crate::stencil::pack)), and the bias.
    Stencil { w: Vec<f32>, bias: Option<Vec<f32>> },
    /// For the implicit im2col ([`gathers`]): per group, the weights `[ocg, taps]` and the
    /// group's bias packed as a dense layer's.
    Gathered(Vec<PackedDense>),
    /// For Winograd F(4 × 4, 3 × 3) ([`winograd`](crate::winograd::winograd)): the
    /// transformed weights, and the weights packed for the direct path, which runs outputs
    /// too small for whole tiles ([`covers`]).
    Winograd {
        transformed: WinogradWeights,
        direct: Box<PackedConv2d>,
    },
}

/// Whether a convolution's patches can be read from the image in place, through offset
/// tables (a gathered `A`, see [`AView`]), instead of written by im2col: without padding
/// (every tap of every window inside the image), with a tile that keeps a pointer per row
/// (not wasm's, see `tile_wasm`).
pub(crate) fn in_place(p: &Conv2dParams) -> bool {
    p.padding == (0, 0) && !cfg!(target_arch = "wasm32")
}

/// Whether a convolution's forward pass runs as an implicit im2col: `out[pixels, ocg] = P ·
/// Wᵀ` with the patch matrix `P` read in place ([`in_place`]) and `Wᵀ` packed once like a
/// dense layer's weights, each block of the product transposed into NCHW.
///
/// This orientation puts the output channels (a multiple of 16 in most networks) on the
/// GEMM's columns, whole panels, where the pixels (121 for the seed CNN's second conv) left
/// part of the last panel empty, and writes no patches (an eighth of the time of that conv);
/// but it adds a transpose of the output, about as costly per output as a few taps. So it
/// is taken where the taps are at least twice the output channels: the seed CNN's second
/// conv (288 taps, 64 channels: 531 → 411 µs for 16 images on AVX-512, 795 → 668 µs on
/// AVX2), not its first (9 taps, 32 channels: 105 → 131 µs). Depthwise convolutions have
/// their own kernel.
pub(crate) fn gathers(w_shape: [usize; 4], p: &Conv2dParams) -> bool {
    let [oc, cg, kh, kw] = w_shape;
    let ocg = oc / p.groups.max(1);
    in_place(p) && !is_depthwise(w_shape, p) && cg * kh * kw >= 2 * ocg
}

/// Whether weights `w_shape` with geometry `p` are a depthwise convolution's (one input
/// channel per group).
pub(crate) fn is_depthwise(w_shape: [usize; 4], p: &Conv2dParams) -> bool {
    w_shape[1] == 1 && p.groups > 1
}

impl PackedConv2d {
    /// The weight shape `[oc, c/groups, kh, kw]`.
    pub fn w_shape(&self) -> [usize; 4] {
        self.w_shape
    }

    /// The geometry the weights were packed with.
    pub fn params(&self) -> &Conv2dParams {
        &self.params
    }

    /// The SIMD level the layout was packed for.
    pub fn level(&self) -> Level {
        self.level
    }
}

/// The [`pulp::WithSimd`] op that returns the level's `MR`.
pub(crate) struct TileRows;

impl pulp::WithSimd for TileRows {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) -> usize {
        tile_dims::<S>().0
    }
}

/// Interleaves validated weights `[groups · ocg, taps]` into blocks of `mr` rows per group.
pub(crate) fn pack_weights(
    w: &[f32],
    groups: usize,
    ocg: usize,
    taps: usize,
    mr: usize,
) -> Vec<f32> {
    let blocks = ocg.div_ceil(mr);
    let mut out = vec![0.0; groups * blocks * mr * taps];
    for g in 0..groups {
        for o in 0..ocg {
            let src = &w[(g * ocg + o) * taps..][..taps];
            let dst = &mut out[(g * blocks + o / mr) * mr * taps..][..mr * taps];
            for (kk, &v) in src.iter().enumerate() {
                dst[kk * mr + o % mr] = v;
            }
        }
    }
    out
}

/// A run of consecutive output pixels on one output row, inside one panel.
#[derive(Clone, Copy)]
pub(crate) struct Run {
    /// Column in the panel.
    pub(crate) jj: usize,
    pub(crate) oy: usize,
    pub(crate) ox: usize,
    pub(crate) len: usize,
}

/// Replaces `runs` with the runs of the `valid` output pixels from pixel `j0` on (rows `ow`
/// pixels long): one per output row they touch.
pub(crate) fn pixel_runs(j0: usize, valid: usize, ow: usize, runs: &mut Vec<Run>) {
    runs.clear();
    let (mut oy, mut ox) = (j0 / ow, j0 % ow);
    let mut jj = 0;
    while jj < valid {
        let len = (ow - ox).min(valid - jj);
        runs.push(Run { jj, oy, ox, len });
        jj += len;
        oy += 1;
        ox = 0;
    }
}

/// The masked loads of [`Im2col::panel_masked`] for one panel: per tap position `(ky, kx)`
/// and vector `v` of a panel row (`q = ky·kw + kx`), the entries
/// `list[starts[q·nv + v]..starts[q·nv + v + 1]]`, each `(offset of lane 0 in the input
/// plane, the lanes it loads as bits)`.
#[derive(Default)]
pub(crate) struct Segments {
    list: Vec<(isize, u32)>,
    starts: Vec<usize>,
}

/// Geometry of one group's im2col, all in elements.
pub(crate) struct Im2col {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cg: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ow: usize,
    pub(crate) stride: (usize, usize),
    pub(crate) padding: (usize, usize),
    pub(crate) dilation: (usize, usize),
}

/// Output positions `o` in `0..out_len` with `0 <= o·stride + tap - pad < len`, as a range.
pub(crate) fn valid_range(
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
    lo.min(out_len)..hi.max(lo.min(out_len))
}

impl Im2col {
    /// Writes the patches of `x` (one group of one image, `[cg, h, w]`) for output pixels
    /// `pixels` into `dst` in the packed `B` layout (panels of `nr`, blocks of `KC` taps).
    ///
    /// Panel by panel (each panel's `kc × nr` slices are written front to back): the panel's
    /// runs (one per output row it touches) are worked out once and reused by every tap. On
    /// AVX-512 and AVX2, a panel whose every vector reads from a window of at most two vectors
    /// of consecutive input elements per tap (stride 1 with short row wraps, the common case)
    /// is filled by [`Im2col::panel_window`] (by [`Im2col::fill_windows`] when unpadded and
    /// every vector is at most two runs); other stride-1 panels, at levels with masked loads,
    /// by [`Im2col::panel_masked`]; the rest go through [`Im2col::panel_runs`]. With
    /// `nr = pixels.len()` (one panel) `dst` is the row-major `[taps, pixels]` patch matrix
    /// ([`Im2col::rows_window`] where it applies).
    #[inline(always)]
    pub(crate) fn pack<S: Simd>(
        &self,
        simd: S,
        x: &[f32],
        pixels: core::ops::Range<usize>,
        nr: usize,
        dst: &mut [f32],
    ) {
        let ncols = pixels.len();
        let panels = ncols.div_ceil(nr);
        let mut runs = Vec::with_capacity(nr);
        let mut segs = Segments::default();
        #[cfg(target_arch = "x86_64")]
        let origins = TapOrigins::new(self);
        #[cfg(target_arch = "x86_64")]
        let mut masks = vec![0u32; self.kh + self.kw];
        for p in 0..panels {
            let j0 = pixels.start + p * nr;
            let valid = nr.min(pixels.end - j0);
            pixel_runs(j0, valid, self.ow, &mut runs);
            #[cfg(target_arch = "x86_64")]
            if panels == 1 {
                // One panel as wide as the block: the row-major patch matrix.
                if let Some(v4) = crate::elem::downcast::<S, pulp::x86::V4>(simd)
                    && self.rows_window(v4, x, &runs, &origins, nr, dst)
                {
                    continue;
                }
                if let Some(v3) = crate::elem::downcast::<S, pulp::x86::V3>(simd)
                    && self.rows_window(v3, x, &runs, &origins, nr, dst)
                {
                    continue;
                }
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(v4) = crate::elem::downcast::<S, pulp::x86::V4>(simd)
                && self.panel_window(
                    v4, x, &runs, &origins, valid, p, panels, nr, &mut masks, dst,
                )
            {
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(v3) = crate::elem::downcast::<S, pulp::x86::V3>(simd)
                && self.panel_window(
                    v3, x, &runs, &origins, valid, p, panels, nr, &mut masks, dst,
                )
            {
                continue;
            }
            if self.stride.1 == 1 && masked_loads::<S>() {
                self.panel_masked(simd, x, &runs, p, panels, nr, &mut segs, dst);
                continue;
            }
            self.panel_runs(simd, x, &runs, p, panels, nr, dst);
        }
    }

    /// Fills panel `p` of `panels` (all taps) of a stride-1 convolution vector by vector: each
    /// vector of a panel row is the sum of one masked load ([`load_masked`]) per run it covers
    /// (its lanes of that run that fall inside the image; the others load as zeros), then one
    /// store. Which lanes and offsets depend on the tap's `(ky, kx)` and the panel only, so
    /// they are worked out once per panel ([`Segments`]) and every input channel reuses them.
    /// A row whose last vector is partial is stored whole when the rows are written in order
    /// (one panel) and it fits in `dst`: the next row overwrites the excess.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn panel_masked<S: Simd>(
        &self,
        simd: S,
        xg: &[f32],
        runs: &[Run],
        p: usize,
        panels: usize,
        nr: usize,
        segs: &mut Segments,
        dst: &mut [f32],
    ) {
        let lanes = S::F32_LANES;
        let nv = nr.div_ceil(lanes);
        let (sh, ph) = (self.stride.0, self.padding.0);
        let (dh, dw) = self.dilation;
        let pw = self.padding.1;
        segs.list.clear();
        segs.starts.clear();
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let xs = valid_range(self.w, self.ow, 1, kx * dw, pw);
                // Runs are in column order: each vector looks only at the runs it overlaps
                // (a one-panel block of a whole image has dozens of runs and vectors).
                let mut first = 0;
                for v in 0..nv {
                    segs.starts.push(segs.list.len());
                    let (c0, c1) = (v * lanes, (v * lanes + lanes).min(nr));
                    while first < runs.len() && runs[first].jj + runs[first].len <= c0 {
                        first += 1;
                    }
                    for r in runs[first..].iter().take_while(|r| r.jj < c1) {
                        let y = (r.oy * sh + ky * dh).wrapping_sub(ph);
                        let a = xs.start.clamp(r.ox, r.ox + r.len);
                        let b = xs.end.clamp(a, r.ox + r.len);
                        let (lo, hi) = ((r.jj + a - r.ox).max(c0), (r.jj + b - r.ox).min(c1));
                        if y >= self.h || lo >= hi {
                            continue;
                        }
                        // Lane `i` is column `c0 + i`, input column `ox + c0 + i - jj + kx·dw - pw`.
                        let off =
                            (y * self.w + r.ox + c0 + kx * dw) as isize - (r.jj + pw) as isize;
                        segs.list.push((off, lane_bits(lo - c0, hi - c0)));
                    }
                }
            }
        }
        segs.starts.push(segs.list.len());
        let taps = self.cg * self.kh * self.kw;
        let plane = self.h * self.w;
        let zero = simd.splat_f32s(0.0);
        let mut kk = 0;
        for ci in 0..self.cg {
            let xc = xg[ci * plane..].as_ptr();
            for q in 0..self.kh * self.kw {
                let k0 = kk / KC * KC;
                let kc = KC.min(taps - k0);
                let row = k0 * panels * nr + p * kc * nr + (kk - k0) * nr;
                for v in 0..nv {
                    let mut acc = zero;
                    for &(off, bits) in
                        &segs.list[segs.starts[q * nv + v]..segs.starts[q * nv + v + 1]]
                    {
                        // SAFETY: the lanes under `bits` read input columns inside row `y` of
                        // channel `ci` (the run's columns inside the image, worked out above).
                        let part = unsafe { load_masked(simd, xc.wrapping_offset(off), bits) };
                        acc = simd.add_f32s(acc, part);
                    }
                    let c0 = row + v * lanes;
                    let end = c0 + lanes;
                    if end <= row + nr || (panels == 1 && end <= dst.len()) {
                        store(simd, &mut dst[c0..end], acc);
                    } else {
                        store(simd, &mut dst[c0..row + nr], acc);
                    }
                }
                kk += 1;
            }
        }
    }

    /// Fills panel `p` of `panels` (all taps) run by run: contiguous runs copied with vector
    /// loads and stores (strided ones element by element), padding and the columns past the
    /// last pixel written as zeros.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn panel_runs<S: Simd>(
        &self,
        simd: S,
        xg: &[f32],
        runs: &[Run],
        p: usize,
        panels: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        let taps = self.cg * self.kh * self.kw;
        let plane = self.h * self.w;
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        let (dh, dw) = self.dilation;
        let end = runs.last().map_or(0, |r| r.jj + r.len);
        let mut kk = 0;
        for ci in 0..self.cg {
            let xc = &xg[ci * plane..(ci + 1) * plane];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let xs = valid_range(self.w, self.ow, sw, kx * dw, pw);
                    let k0 = kk / KC * KC;
                    let kc = KC.min(taps - k0);
                    let row = &mut dst[k0 * panels * nr + p * kc * nr + (kk - k0) * nr..][..nr];
                    for run in runs {
                        let Run { jj, oy, ox, len } = *run;
                        let seg = &mut row[jj..jj + len];
                        let y = (oy * sh + ky * dh).wrapping_sub(ph);
                        if y >= self.h {
                            zero(simd, seg);
                            continue;
                        }
                        let lo = xs.start.clamp(ox, ox + len);
                        let hi = xs.end.clamp(lo, ox + len);
                        if lo > ox {
                            zero(simd, &mut seg[..lo - ox]);
                        }
                        if hi < ox + len {
                            zero(simd, &mut seg[hi - ox..]);
                        }
                        if hi > lo {
                            let xrow = &xc[y * self.w..][..self.w];
                            let first = lo * sw + kx * dw - pw;
                            let seg = &mut seg[lo - ox..hi - ox];
                            if sw == 1 {
                                copy(simd, seg, &xrow[first..first + seg.len()]);
                            } else {
                                for (d, &s) in seg.iter_mut().zip(xrow[first..].iter().step_by(sw))
                                {
                                    *d = s;
                                }
                            }
                        }
                    }
                    if end < nr {
                        zero(simd, &mut row[end..]);
                    }
                    kk += 1;
                }
            }
        }
    }

    /// Window fill of panel `p` of `panels` (all taps) on AVX-512 or AVX2, or `false`
    /// (nothing written) when the panel does not fit the scheme: `nr` is one or two vectors
    /// of `W::L` and, per vector, the input offsets of its columns (relative to the tap) span
    /// fewer than `2·W::L` elements.
    ///
    /// Per tap and vector: two unaligned loads of the `2·L`-element input window (masked
    /// where the window leaves `xg`), one two-source permute picking the columns
    /// ([`Window::pick`]: `vpermt2ps` on AVX-512; two `vpermps` and a blend on AVX2), and
    /// one store. Unpadded panels go through [`Im2col::fill_windows`] (a blend instead of
    /// the permute when every vector is at most two runs): the tap loop then does nothing
    /// per vector but the loads, the blend or permute and the store (the columns past the
    /// last pixel repeat it; the GEMM never stores them). Padded panels zero the lanes of
    /// padding (outside the image for this tap) and of columns past the last pixel, by
    /// per-`ky` / per-`kx` validity masks (`masks`, `kh + kw` entries) worked out once per
    /// panel.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn panel_window<W: Window>(
        &self,
        simd: W,
        xg: &[f32],
        runs: &[Run],
        origins: &TapOrigins,
        valid: usize,
        p: usize,
        panels: usize,
        nr: usize,
        masks: &mut [u32],
        dst: &mut [f32],
    ) -> bool {
        let l = W::L;
        let nv = nr / l;
        if !nr.is_multiple_of(l) || !(1..=2).contains(&nv) || valid == 0 {
            return false;
        }
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        let (dh, dw) = self.dilation;
        let w = self.w as isize;
        // Input offset of each column relative to the tap's origin (may be negative with
        // padding); columns past the last pixel repeat the last one.
        let mut off = [0isize; 32];
        for r in runs {
            let base =
                ((r.oy * sh) as isize - ph as isize) * w + (r.ox * sw) as isize - pw as isize;
            for (i, o) in off[r.jj..r.jj + r.len].iter_mut().enumerate() {
                *o = base + (i * sw) as isize;
            }
        }
        let last = off[valid - 1];
        off[valid..nr].fill(last);
        let taps = self.cg * self.kh * self.kw;
        // Unpadded panels whose vectors are at most two runs each need no permute indices or
        // masks: they are filled before those are worked out.
        let padded = ph > 0 || pw > 0;
        // Row of the first tap of the `KC` block from `k0`.
        let block = |k0: usize| k0 * panels * nr + p * KC.min(taps - k0) * nr;
        if !padded {
            let mut plan = [Shift::none(simd); 2];
            let mut all = true;
            for (v, s) in plan[..nv].iter_mut().enumerate() {
                match shift_of(simd, &off[..nr], valid, v) {
                    Some(shift) => *s = shift,
                    None => all = false,
                }
            }
            if all {
                self.fill_windows(simd, xg, origins, &plan[..nv], block, nr, dst);
                return true;
            }
        }
        // Each vector picked from its window.
        let mut picks = [Pick::none(simd); 2];
        for (v, pick) in picks[..nv].iter_mut().enumerate() {
            let Some(w) = Pick::of(simd, &off[v * l..(v + 1) * l]) else {
                return false;
            };
            *pick = w;
        }
        if !padded {
            // Vectors that cross two row wraps, by the same loop as the shifts.
            self.fill_windows(simd, xg, origins, &picks[..nv], block, nr, dst);
            return true;
        }
        let valid_mask = if valid >= 32 {
            u32::MAX
        } else {
            (1u32 << valid) - 1
        };
        // Padded from here on: per-`ky` and per-`kx` masks of the lanes inside the image.
        let (rowm, colm) = masks.split_at_mut(self.kh);
        for (ky, m) in rowm.iter_mut().enumerate() {
            *m = 0;
            for r in runs {
                let y = (r.oy * sh + ky * dh).wrapping_sub(ph);
                if y < self.h {
                    *m |= span_bits(r.jj, r.len);
                }
            }
        }
        for (kx, m) in colm.iter_mut().enumerate() {
            let xs = valid_range(self.w, self.ow, sw, kx * dw, pw);
            *m = 0;
            for r in runs {
                let a = xs.start.clamp(r.ox, r.ox + r.len);
                let b = xs.end.clamp(a, r.ox + r.len);
                *m |= span_bits(r.jj + a - r.ox, b - a);
            }
        }
        let plane = self.h * self.w;
        // Bounds the raw accesses below rely on, checked once.
        assert!(dst.len() >= taps * panels * nr);
        let len = xg.len() as isize;
        let xp = xg.as_ptr();
        let dp = dst.as_mut_ptr();
        let lane_bits = (1u32 << l) - 1;
        let mut kk = 0;
        for ci in 0..self.cg {
            for (ky, &rm) in rowm.iter().enumerate() {
                for (kx, &cm) in colm.iter().enumerate() {
                    let t = (ci * plane + ky * dh * self.w + kx * dw) as isize;
                    let m = rm & cm & valid_mask;
                    let k0 = kk / KC * KC;
                    let kc = KC.min(taps - k0);
                    let row = k0 * panels * nr + p * kc * nr + (kk - k0) * nr;
                    for (v, pick) in picks[..nv].iter().enumerate() {
                        let mv = (m >> (v * l)) & lane_bits;
                        let a = t + pick.lo;
                        // Every selected lane (under `mv`) reads `xg[t + off[j]]`, in bounds;
                        // the loads cover the window `a .. a + 2·l`, masked outside `xg`.
                        let r = if mv == 0 {
                            simd.zeros()
                        } else if a >= 0 && a + 2 * l as isize <= len {
                            // SAFETY: `a .. a + 2·l` is inside `xg`.
                            let (x0, x1) = unsafe { simd.load_window(xp.offset(a)) };
                            simd.pick(x0, x1, pick.idx, mv)
                        } else {
                            let first = (-a).clamp(0, 2 * l as isize) as u32;
                            let end = (len - a).clamp(0, 2 * l as isize) as u32;
                            let lm = span_bits(first as usize, end.saturating_sub(first) as usize);
                            // SAFETY: only lanes under the masks, all inside `xg`, are read.
                            let (x0, x1) =
                                unsafe { simd.load_window_masked(xp.wrapping_offset(a), lm) };
                            simd.pick(x0, x1, pick.idx, mv)
                        };
                        // SAFETY: `row + nr <= taps · panels · nr <= dst.len()` (asserted).
                        unsafe { simd.store(dp.add(row + v * l), r) };
                    }
                    kk += 1;
                }
            }
        }
        true
    }

    /// [`Im2col::panel_window`] for one panel as wide as the block (`nr` = every pixel,
    /// any number of vectors): the row-major `[taps, nr]` patch matrix of an unpadded
    /// convolution, each vector picked from its input window (`false`, nothing written, if
    /// there is padding or a vector's columns span `2·L` input elements or more). The last
    /// vector of a row is stored whole: its excess lanes land at the start of the next row,
    /// written after it, or in the vector of slack `dst` has past the last row.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn rows_window<W: Window>(
        &self,
        simd: W,
        xg: &[f32],
        runs: &[Run],
        origins: &TapOrigins,
        nr: usize,
        dst: &mut [f32],
    ) -> bool {
        let l = W::L;
        let nv = nr.div_ceil(l);
        if self.padding != (0, 0) || nr <= 2 * l {
            return false;
        }
        let taps = self.cg * self.kh * self.kw;
        if dst.len() < (taps - 1) * nr + nv * l {
            return false;
        }
        let (sh, sw) = self.stride;
        let (dh, dw) = self.dilation;
        let mut off = Vec::with_capacity(nv * l);
        for r in runs {
            let base = (r.oy * sh * self.w + r.ox * sw) as isize;
            off.extend((0..r.len).map(|i| base + (i * sw) as isize));
        }
        let Some(&last) = off.last() else {
            return false;
        };
        if off.len() != nr {
            // Columns past the last pixel would need zeros: the general paths write them.
            return false;
        }
        off.resize(nv * l, last);
        if let Some(plan) = (0..nv)
            .map(|v| shift_of(simd, &off, nr, v))
            .collect::<Option<Vec<_>>>()
        {
            self.fill_windows(simd, xg, origins, &plan, |k0| k0 * nr, nr, dst);
            return true;
        }
        let mut lo = Vec::with_capacity(nv);
        let mut idx = Vec::with_capacity(nv);
        for o in off.chunks_exact(l) {
            let Some((first, pick)) = simd.window_of(o) else {
                return false;
            };
            lo.push(first);
            idx.push(pick);
        }
        let plane = self.h * self.w;
        let len = xg.len() as isize;
        let xp = xg.as_ptr();
        let dp = dst.as_mut_ptr();
        let all = (1u32 << l) - 1;
        let mut kk = 0;
        for ci in 0..self.cg {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let t = (ci * plane + ky * dh * self.w + kx * dw) as isize;
                    let row = kk * nr;
                    for (v, (&lo, &idx)) in lo.iter().zip(&idx).enumerate() {
                        let a = t + lo;
                        // Unpadded: every column's input `t + off` is inside `xg`; the
                        // window `a .. a + 2·l` is loaded masked where it leaves `xg`.
                        let (x0, x1) = if a + 2 * l as isize <= len {
                            // SAFETY: `0 <= a` and `a + 2·l <= len`.
                            unsafe { simd.load_window(xp.offset(a)) }
                        } else {
                            let end = (len - a).clamp(0, 2 * l as isize) as usize;
                            // SAFETY: only lanes `0..end`, inside `xg`, are read.
                            unsafe { simd.load_window_masked(xp.offset(a), span_bits(0, end)) }
                        };
                        let r = simd.pick(x0, x1, idx, all);
                        // SAFETY: `row + v·l + l <= (taps - 1)·nr + nv·l <= dst.len()`
                        // (checked above).
                        unsafe { simd.store(dp.add(row + v * l), r) };
                    }
                    kk += 1;
                }
            }
        }
        true
    }

    /// Writes every tap's row of vectors planned by `plan` (one [`Plan`] per vector of a
    /// row: a [`Shift`] or a [`Pick`]), rows `nr` apart from `dst[block(k0)..]` for the taps
    /// of the `KC` block from `k0`: two unaligned loads and one blend or permute per vector,
    /// masked only for taps where a load would leave `xg`. The last vector is stored whole.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fill_windows<W: Window, P: Plan<W>>(
        &self,
        simd: W,
        xg: &[f32],
        origins: &TapOrigins,
        plan: &[P],
        block: impl Fn(usize) -> usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        let l = W::L as isize;
        let (lo, hi) = plan.iter().fold((isize::MAX, isize::MIN), |(lo, hi), s| {
            let (a, b) = s.loads();
            (lo.min(a).min(b), hi.max(a).max(b))
        });
        let len = xg.len() as isize;
        // The tap origins whose loads are all inside `xg`: `-lo ..= len - hi - l`.
        let inside = |t: isize| t + lo >= 0 && t + hi + l <= len;
        let xp = xg.as_ptr();
        for (b, taps) in origins.t.chunks(KC).enumerate() {
            let start = block(b * KC);
            // The raw stores below write `dst[start + i·nr ..][..plan.len()·L]` for tap `i`.
            let rows = &mut dst[start..][..(taps.len() - 1) * nr + plan.len() * W::L];
            let d = rows.as_mut_ptr();
            for (i, &t) in taps.iter().enumerate() {
                // SAFETY: row `i` is inside `rows` (sliced above).
                let d = unsafe { d.add(i * nr) };
                if !inside(t) {
                    for (v, s) in plan.iter().enumerate() {
                        let (a, b) = s.loads();
                        let (a, b) = (t + a, t + b);
                        let bits = |a: isize| {
                            let first = (-a).clamp(0, l) as usize;
                            let end = (len - a).clamp(0, l) as usize;
                            span_bits(first, end.saturating_sub(first))
                        };
                        // SAFETY: only lanes inside `xg` are read (the lanes a plan keeps
                        // are inside it); the store is inside `rows`.
                        unsafe {
                            let x0 = simd.load_masked(xp.wrapping_offset(a), bits(a));
                            let x1 = simd.load_masked(xp.wrapping_offset(b), bits(b));
                            simd.store(d.add(v * W::L), s.combine(simd, x0, x1));
                        }
                    }
                    continue;
                }
                // SAFETY: every load is inside `xg` (`inside`); the stores are inside `rows`.
                unsafe {
                    let x = xp.offset(t);
                    if let [s0, s1] = plan {
                        // The panel case, with the two vectors' plans kept in registers.
                        let ((a0, b0), (a1, b1)) = (s0.loads(), s1.loads());
                        let v0 = s0.combine(simd, simd.load(x.offset(a0)), simd.load(x.offset(b0)));
                        let v1 = s1.combine(simd, simd.load(x.offset(a1)), simd.load(x.offset(b1)));
                        simd.store(d, v0);
                        simd.store(d.add(W::L), v1);
                    } else {
                        for (v, s) in plan.iter().enumerate() {
                            let (a, b) = s.loads();
                            let r = s.combine(simd, simd.load(x.offset(a)), simd.load(x.offset(b)));
                            simd.store(d.add(v * W::L), r);
                        }
                    }
                }
            }
        }
    }
}

/// How [`Im2col::fill_windows`] makes one vector of a panel row from the input around a
/// tap's origin `t`: two vectors loaded at `t + loads().0` and `t + loads().1`, combined.
#[cfg(target_arch = "x86_64")]
trait Plan<W: Window>: Copy {
    /// The offsets of the two loads from the tap's origin.
    fn loads(&self) -> (isize, isize);
    /// The vector from the two loads.
    fn combine(&self, simd: W, x0: W::V, x1: W::V) -> W::V;
}

#[cfg(target_arch = "x86_64")]
impl<W: Window> Plan<W> for Shift<W> {
    #[inline(always)]
    fn loads(&self) -> (isize, isize) {
        (self.first, self.second)
    }
    #[inline(always)]
    fn combine(&self, simd: W, x0: W::V, x1: W::V) -> W::V {
        simd.blend(x0, x1, self.m)
    }
}

/// How one vector of a panel row is read when its columns are more than two runs but span
/// fewer than `2·L` input elements (a row narrower than a vector, stride 1): the window
/// `x[t + lo ..][..2·L]` loaded as two vectors, one two-source permute ([`Window::pick`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Pick<W: Window> {
    lo: isize,
    idx: W::I,
    /// The lanes kept (the others are zero).
    lanes: u32,
}

#[cfg(target_arch = "x86_64")]
impl<W: Window> Pick<W> {
    /// A placeholder (every lane zero).
    #[inline(always)]
    fn none(simd: W) -> Self {
        Self {
            lo: 0,
            idx: simd.indices(&[0; 16]),
            lanes: 0,
        }
    }

    /// The pick of one vector's `L` column offsets `o` (relative to the tap's origin), every
    /// lane kept, or `None` if they span `2·L` elements or more.
    #[inline(always)]
    fn of(simd: W, o: &[isize]) -> Option<Self> {
        let (lo, idx) = simd.window_of(o)?;
        Some(Self {
            lo,
            idx,
            lanes: u32::MAX,
        })
    }
}

#[cfg(target_arch = "x86_64")]
impl<W: Window> Plan<W> for Pick<W> {
    #[inline(always)]
    fn loads(&self) -> (isize, isize) {
        (self.lo, self.lo + W::L as isize)
    }
    #[inline(always)]
    fn combine(&self, simd: W, x0: W::V, x1: W::V) -> W::V {
        simd.pick(x0, x1, self.idx, self.lanes)
    }
}

/// The register operations of [`Im2col::panel_window`] at one x86 level: a window of
/// `2·L` consecutive floats loaded as two vectors, and a two-source permute that picks one
/// vector of columns from it.
#[cfg(target_arch = "x86_64")]
trait Window: Copy {
    /// Lanes per vector.
    const L: usize;
    /// A vector of `L` floats.
    type V: Copy;
    /// A vector of `L` permute indices (each below `2·L`).
    type I: Copy;
    /// The first `L` of `idx` as an index vector.
    fn indices(self, idx: &[i32; 16]) -> Self::I;
    /// For one vector's `L` column offsets `o`: the window's first offset and the permute
    /// indices into it, or `None` if the offsets span `2·L` elements or more.
    #[inline(always)]
    fn window_of(self, o: &[isize]) -> Option<(isize, Self::I)> {
        let (mn, mx) = o
            .iter()
            .fold((isize::MAX, isize::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if mx - mn >= 2 * Self::L as isize {
            return None;
        }
        let mut rel = [0i32; 16];
        for (d, &x) in rel.iter_mut().zip(o) {
            *d = (x - mn) as i32;
        }
        Some((mn, self.indices(&rel)))
    }
    /// All lanes zero.
    fn zeros(self) -> Self::V;
    /// `p[0..L]` and `p[L..2L]`.
    ///
    /// # Safety
    /// `p .. p + 2L` is readable.
    unsafe fn load_window(self, p: *const f32) -> (Self::V, Self::V);
    /// As [`Window::load_window`] with only the lanes under `bits` (bit `i`: `p[i]`) read,
    /// the others zero.
    ///
    /// # Safety
    /// `p + i` is readable for every `i` under `bits`; `p` itself may be out of bounds.
    unsafe fn load_window_masked(self, p: *const f32, bits: u32) -> (Self::V, Self::V);
    /// Lane `j` is `x[idx[j]]` of the `2L` lanes `x0` then `x1` if bit `j` of `lanes` is
    /// set, else zero.
    fn pick(self, x0: Self::V, x1: Self::V, idx: Self::I, lanes: u32) -> Self::V;
    /// Stores `v` at `p .. p + L`.
    ///
    /// # Safety
    /// `p .. p + L` is writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// A lane selector for [`Window::blend`]: bit `i` of `bits` picks lane `i` of the second.
    type M: Copy;
    /// The selector of the lanes under `bits`.
    fn blend_mask(self, bits: u32) -> Self::M;
    /// Lane `i` is `x1`'s where `m` selects it, else `x0`'s.
    fn blend(self, x0: Self::V, x1: Self::V, m: Self::M) -> Self::V;
    /// `p[0..L]`.
    ///
    /// # Safety
    /// `p .. p + L` is readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// `p[i]` in the lanes `i` under `bits`, zero in the others.
    ///
    /// # Safety
    /// `p + i` is readable for every `i` under `bits`; `p` itself may be out of bounds.
    unsafe fn load_masked(self, p: *const f32, bits: u32) -> Self::V;
}

/// How one vector of a panel row is read when its columns are at most two runs of
/// consecutive input elements (stride 1, the vector crosses at most one row wrap): lanes
/// `i` below the wrap read `x[t + first + i]`, the others `x[t + second + i]` — two
/// unaligned loads and a blend, no permute.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Shift<W: Window> {
    first: isize,
    second: isize,
    /// The lanes from the second load.
    m: W::M,
}

/// The [`Shift`] of vector `v` of a panel row whose column offsets are `off` (one per
/// column, relative to the tap's origin; `off.len()` a multiple of `L`), or `None` unless its
/// columns are two runs at most. Columns from `valid` on (past the last pixel) continue the
/// last run: they read real input the GEMM never stores.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn shift_of<W: Window>(simd: W, off: &[isize], valid: usize, v: usize) -> Option<Shift<W>> {
    let l = W::L;
    let last = off[valid - 1];
    // Input offset of column `j` minus `j`'s lane: constant along a run.
    let lane_base = |j: usize| -> isize {
        let o = if j < valid {
            off[j]
        } else {
            last + (j - (valid - 1)) as isize
        };
        o - (j % l) as isize
    };
    let (first, second) = (lane_base(v * l), lane_base(v * l + l - 1));
    let mut bits = 0u32;
    for i in 0..l {
        match lane_base(v * l + i) {
            d if d == first && bits == 0 => {}
            d if d == second => bits |= 1 << i,
            _ => return None,
        }
    }
    Some(Shift {
        first,
        second,
        m: simd.blend_mask(bits),
    })
}

#[cfg(target_arch = "x86_64")]
impl<W: Window> Shift<W> {
    /// A placeholder (both loads at the origin).
    #[inline(always)]
    fn none(simd: W) -> Self {
        Self {
            first: 0,
            second: 0,
            m: simd.blend_mask(0),
        }
    }
}

/// The input offset of every tap's origin in one group's `[cg, h, w]` input (tap order
/// `(ci, ky, kx)`, as the patch rows).
#[cfg(target_arch = "x86_64")]
pub(crate) struct TapOrigins {
    t: Vec<isize>,
}

#[cfg(target_arch = "x86_64")]
impl TapOrigins {
    fn new(g: &Im2col) -> Self {
        let plane = g.h * g.w;
        let (dh, dw) = g.dilation;
        let mut t = Vec::with_capacity(g.cg * g.kh * g.kw);
        for ci in 0..g.cg {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    t.push((ci * plane + ky * dh * g.w + kx * dw) as isize);
                }
            }
        }
        Self { t }
    }
}

#[cfg(target_arch = "x86_64")]
impl Window for pulp::x86::V4 {
    const L: usize = 16;
    type V = core::arch::x86_64::__m512;
    type I = core::arch::x86_64::__m512i;
    #[inline(always)]
    fn indices(self, idx: &[i32; 16]) -> Self::I {
        // SAFETY: same-sized plain integers.
        unsafe { core::mem::transmute(*idx) }
    }
    #[inline(always)]
    fn zeros(self) -> Self::V {
        self.avx512f._mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load_window(self, p: *const f32) -> (Self::V, Self::V) {
        let f = self.avx512f;
        // SAFETY: forwarded.
        unsafe { (f._mm512_loadu_ps(p), f._mm512_loadu_ps(p.add(16))) }
    }
    #[inline(always)]
    unsafe fn load_window_masked(self, p: *const f32, bits: u32) -> (Self::V, Self::V) {
        let f = self.avx512f;
        // SAFETY: forwarded; masked-off lanes are not read.
        unsafe {
            (
                f._mm512_maskz_loadu_ps(bits as u16, p),
                f._mm512_maskz_loadu_ps((bits >> 16) as u16, p.wrapping_add(16)),
            )
        }
    }
    #[inline(always)]
    fn pick(self, x0: Self::V, x1: Self::V, idx: Self::I, lanes: u32) -> Self::V {
        self.avx512f
            ._mm512_maskz_permutex2var_ps(lanes as u16, x0, idx, x1)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: Self::V) {
        // SAFETY: forwarded.
        unsafe { self.avx512f._mm512_storeu_ps(p, v) }
    }
    type M = u16;
    #[inline(always)]
    fn blend_mask(self, bits: u32) -> u16 {
        bits as u16
    }
    #[inline(always)]
    fn blend(self, x0: Self::V, x1: Self::V, m: u16) -> Self::V {
        self.avx512f._mm512_mask_blend_ps(m, x0, x1)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Self::V {
        // SAFETY: forwarded.
        unsafe { self.avx512f._mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, bits: u32) -> Self::V {
        // SAFETY: forwarded; masked-off lanes are not read.
        unsafe { self.avx512f._mm512_maskz_loadu_ps(bits as u16, p) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Window for pulp::x86::V3 {
    const L: usize = 8;
    type V = core::arch::x86_64::__m256;
    type I = core::arch::x86_64::__m256i;
    #[inline(always)]
    fn indices(self, idx: &[i32; 16]) -> Self::I {
        let mut first = [0i32; 8];
        first.copy_from_slice(&idx[..8]);
        // SAFETY: same-sized plain integers.
        unsafe { core::mem::transmute(first) }
    }
    #[inline(always)]
    fn zeros(self) -> Self::V {
        self.avx._mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load_window(self, p: *const f32) -> (Self::V, Self::V) {
        let f = self.avx;
        // SAFETY: forwarded.
        unsafe { (f._mm256_loadu_ps(p), f._mm256_loadu_ps(p.add(8))) }
    }
    #[inline(always)]
    unsafe fn load_window_masked(self, p: *const f32, bits: u32) -> (Self::V, Self::V) {
        use crate::elem::reinterpret;
        // SAFETY: forwarded; masked-off lanes are not read.
        unsafe {
            (
                reinterpret(crate::vmem::load_masked(self, p, bits & 0xff)),
                reinterpret(crate::vmem::load_masked(
                    self,
                    p.wrapping_add(8),
                    (bits >> 8) & 0xff,
                )),
            )
        }
    }
    #[inline(always)]
    fn pick(self, x0: Self::V, x1: Self::V, idx: Self::I, lanes: u32) -> Self::V {
        let (avx, avx2) = (self.avx, self.avx2);
        // Each source permuted by the low 3 bits of the index; lanes whose index is 8 or
        // more take the second source's.
        let a = avx2._mm256_permutevar8x32_ps(x0, idx);
        let b = avx2._mm256_permutevar8x32_ps(x1, idx);
        let high = avx2._mm256_cmpgt_epi32(idx, avx._mm256_set1_epi32(7));
        let r = avx._mm256_blendv_ps(a, b, avx._mm256_castsi256_ps(high));
        let keep = crate::vmem::v3_lane_mask(lanes & 0xff);
        avx._mm256_and_ps(r, keep)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: Self::V) {
        // SAFETY: forwarded.
        unsafe { self.avx._mm256_storeu_ps(p, v) }
    }
    type M = core::arch::x86_64::__m256;
    #[inline(always)]
    fn blend_mask(self, bits: u32) -> Self::M {
        crate::vmem::v3_lane_mask(bits & 0xff)
    }
    #[inline(always)]
    fn blend(self, x0: Self::V, x1: Self::V, m: Self::M) -> Self::V {
        self.avx._mm256_blendv_ps(x0, x1, m)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Self::V {
        // SAFETY: forwarded.
        unsafe { self.avx._mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, bits: u32) -> Self::V {
        // SAFETY: forwarded; masked-off lanes are not read.
        unsafe { crate::elem::reinterpret(crate::vmem::load_masked(self, p, bits & 0xff)) }
    }
}
/// Bits `first .. first + len` of a panel column mask (`first + len <= 32`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn span_bits(first: usize, len: usize) -> u32 {
    if len == 0 {
        0
    } else {
        (u32::MAX >> (32 - len)) << first
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::conv2d_packed`](crate::Kernels::conv2d_packed);
/// shapes are validated by the caller and `out_shape` is the convolution's output shape.
pub(crate) struct Conv2d<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) x_shape: [usize; 4],
    pub(crate) pw: &'a PackedConv2d,
    pub(crate) out_shape: [usize; 4],
    pub(crate) act: Activation,
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for Conv2d<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let [batch, c, h, w] = self.x_shape;
        let [oc, cg, kh, kw] = self.pw.w_shape;
        let [_, _, oh, ow] = self.out_shape;
        let p = self.pw.params;
        let groups = p.groups;
        let ocg = oc / groups;
        let taps = cg * kh * kw;
        let pixels = oh * ow;
        if batch == 0 || ocg == 0 || pixels == 0 {
            return;
        }
        // Winograd weights carry the direct path's, for outputs too small for their tiles.
        // (Not a recursive call: `with_simd` must inline into the level's dispatch, or its
        // SIMD intrinsics become calls.)
        let op = match &self.pw.weights {
            ConvWeights::Winograd {
                transformed,
                direct,
            } => {
                if covers(oh, ow) {
                    return winograd::forward(
                        simd,
                        self.x,
                        self.x_shape,
                        p.padding,
                        transformed,
                        self.out_shape,
                        self.act,
                        self.out,
                    );
                }
                Conv2d { pw: direct, ..self }
            }
            _ => self,
        };
        let pw = op.pw;
        let (mr, weights, bias) = match &pw.weights {
            ConvWeights::Interleaved { mr, w, bias } => (*mr, w, bias),
            ConvWeights::Depthwise { w, bias } => return depthwise(simd, op, w, bias.as_deref()),
            ConvWeights::Gathered(groups) => return gathered(simd, op, groups),
            ConvWeights::Stencil { w, bias } => {
                return crate::stencil::forward(simd, op, w, bias.as_deref());
            }
            ConvWeights::Winograd { .. } => unreachable!("direct weights are never Winograd's"),
        };
        let nr = nr::<S>();
        let geometry = Im2col {
            h,
            w,
            cg,
            kh,
            kw,
            ow,
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
        };
        // Pixels per im2col block: the block's patches (all taps) stay in about half of L2 while
        // the GEMM reads them, at least one panel, at most NC.
        let fit = (PATCH_BYTES / 4 / taps.max(1)) / nr * nr;
        let block = fit.clamp(nr, NC.div_ceil(nr) * nr);
        // The patch buffer is reused across calls on this thread (every element the GEMM reads is
        // written by im2col first, so it is never cleared).
        let need = packed_b_len(taps, block.min(pixels), nr);
        let mut buf = take_scratch(&PATCHES, need);
        let b = buf.as_mut_slice();
        let group_w = ocg.div_ceil(mr) * mr * taps;
        for img in 0..batch {
            for g in 0..groups {
                let xg = &op.x[(img * c + g * cg) * h * w..][..cg * h * w];
                let out = &mut op.out[(img * oc + g * ocg) * pixels..][..ocg * pixels];
                let bias = bias
                    .as_deref()
                    .map_or(Bias::None, |b| Bias::PerRow(&b[g * ocg..(g + 1) * ocg]));
                for j0 in (0..pixels).step_by(block) {
                    let cols = j0..(j0 + block).min(pixels);
                    let len = packed_b_len(taps, cols.len(), nr);
                    geometry.pack(simd, xg, cols.clone(), nr, &mut b[..len]);
                    Gemm {
                        m: ocg,
                        n: cols.len(),
                        k: taps,
                        a: AView {
                            data: &weights[g * group_w..(g + 1) * group_w],
                            rs: 1,
                            cs: mr,
                            gather: None,
                        },
                        b: &b[..len],
                        bias,
                        act: op.act,
                        ldc: pixels,
                        accumulate: false,
                        b_window: None,
                        ahead: Ahead::NONE,
                        scatter: None,
                    }
                    .run(simd, &mut out[j0..]);
                }
            }
        }
        PATCHES.set(Some(buf));
    }
}

/// The implicit im2col (see [`gathers`]): per group, the batch's output pixels (every
/// image's, one after another) in blocks whose `[pixels, ocg]` product stays in L1
/// ([`GATHER_OUT_BYTES`]), each computed by the GEMM reading the images through the offset
/// tables and transposed, image by image, into the NCHW output.
///
/// A block may span images: the seed CNN's 121 pixels per image would otherwise leave a
/// one-row tile per image (121 = 15 × 8 + 1), at a fraction of the tile's speed. While a
/// block's tiles run they ask for the outputs of the images that start in it (written by
/// this block's transpose and the next's) and the inputs of the images that start in the
/// next block ([`Ahead`]): at batch 128 neither is in cache, and the transpose stalled on
/// its stores, one miss after another.
#[inline(always)]
fn gathered<S: Simd>(simd: S, op: Conv2d<'_>, groups: &[PackedDense]) {
    let Conv2d {
        x,
        x_shape,
        pw,
        out_shape,
        act,
        out,
    } = op;
    let [batch, c, h, w] = x_shape;
    let [oc, cg, kh, kw] = pw.w_shape;
    let [_, _, oh, ow] = out_shape;
    let p = pw.params;
    let ocg = oc / p.groups;
    let taps = cg * kh * kw;
    let pixels = oh * ow;
    let total = batch * pixels;
    if total == 0 {
        return;
    }
    let (starts, cols) = gather_tables([h, w], pw.w_shape, pixels, ow, &p);
    let block = (GATHER_OUT_BYTES / 4 / ocg.max(1)).clamp(1, total);
    let mut buf = take_scratch(&PATCHES, block * ocg);
    let prod = buf.as_mut_slice();
    let mut rows = vec![0; block];
    // Where image `img`'s group `g` starts in `x` and in `out`.
    let x_at = |img: usize, g: usize| (img * c + g * cg) * h * w;
    let out_at = |img: usize, g: usize| (img * oc + g * ocg) * pixels;
    for (g, wg) in groups.iter().enumerate() {
        let PackedData::F32(b) = &wg.data else {
            unreachable!("conv weights are packed as f32")
        };
        for r0 in (0..total).step_by(block) {
            let m = block.min(total - r0);
            let (mut img, mut j) = (r0 / pixels, r0 % pixels);
            for r in &mut rows[..m] {
                *r = x_at(img, g) + starts[j];
                j += 1;
                if j == pixels {
                    (img, j) = (img + 1, 0);
                }
            }
            // The images whose first pixel is in `range` (at most four: hints).
            let starting = |range: core::ops::Range<usize>| {
                (range.start.div_ceil(pixels)..range.end.min(total).div_ceil(pixels)).take(2)
            };
            let mut ahead = [&[][..]; 4];
            let want = starting(r0..r0 + m)
                .map(|i| &out[out_at(i, g)..][..ocg * pixels])
                .chain(starting(r0 + m..r0 + 2 * m).map(|i| &x[x_at(i, g)..][..cg * h * w]));
            for (slot, region) in ahead.iter_mut().zip(want) {
                *slot = region;
            }
            Gemm {
                m,
                n: ocg,
                k: taps,
                a: AView {
                    data: x,
                    rs: 0,
                    cs: 0,
                    gather: Some(OffsetTables {
                        rows: &rows[..m],
                        cols: &cols,
                    }),
                },
                b: b.as_slice(),
                bias: wg.bias.as_deref().map_or(Bias::None, Bias::PerCol),
                act,
                ldc: ocg,
                accumulate: false,
                b_window: None,
                ahead: Ahead::of(&ahead),
                scatter: None,
            }
            .run(simd, &mut prod[..m * ocg]);
            // Each image's run of the block's rows into its planes.
            let (mut img, mut j) = (r0 / pixels, r0 % pixels);
            let mut done = 0;
            while done < m {
                let len = (pixels - j).min(m - done);
                let og = &mut out[out_at(img, g)..][..ocg * pixels];
                let src = &prod[done * ocg..(done + len) * ocg];
                transpose(simd, src, len, ocg, &mut og[j..], pixels);
                (img, j, done) = (img + 1, 0, done + len);
            }
        }
    }
    PATCHES.set(Some(buf));
}

/// The offset tables of an implicit im2col of one group's `[cg, h, w]` planes: where each of
/// the `pixels` output pixels' windows starts (output rows `ow` wide), and where each tap
/// `(ci, ky, kx)` sits from there (in the weights' order). Valid without padding.
pub(crate) fn gather_tables(
    [h, w]: [usize; 2],
    [_, cg, kh, kw]: [usize; 4],
    pixels: usize,
    ow: usize,
    p: &Conv2dParams,
) -> (Vec<usize>, Vec<usize>) {
    let (sh, sw) = p.stride;
    let (dh, dw) = p.dilation;
    let starts = (0..pixels)
        .map(|j| (j / ow) * sh * w + (j % ow) * sw)
        .collect();
    let mut taps = Vec::with_capacity(cg * kh * kw);
    for ci in 0..cg {
        for ky in 0..kh {
            for kx in 0..kw {
                taps.push(ci * h * w + ky * dh * w + kx * dw);
            }
        }
    }
    (starts, taps)
}

/// Bytes of one pixel block's `[pixels, ocg]` product in [`gathered`]: within L1, so that
/// the transpose reads it from there.
const GATHER_OUT_BYTES: usize = 32 << 10;

/// Bytes of im2col patches per block (half of a 1 MiB L2).
const PATCH_BYTES: usize = 512 << 10;

std::thread_local! {
    /// This thread's im2col patch buffer, kept between calls (no allocation or page faults per
    /// call once it has grown to the largest block). 64-byte aligned, like packed dense weights:
    /// every panel row is whole cache lines, so neither the im2col stores nor the GEMM's loads
    /// of `B` split across lines.
    static PATCHES: Scratch = const { Scratch::new(None) };
}

/// Direct depthwise convolution: `groups == c`, one input channel per group, `ocg` outputs
/// per channel; weights as given (`[oc, 1, kh, kw]`).
#[inline(always)]
fn depthwise<S: Simd>(simd: S, op: Conv2d<'_>, weights: &[f32], bias: Option<&[f32]>) {
    let Conv2d {
        x,
        x_shape,
        pw,
        out_shape,
        act,
        out,
    } = op;
    let [batch, c, h, w] = x_shape;
    let [oc, _, kh, kw] = pw.w_shape;
    let [_, _, oh, ow] = out_shape;
    let p = pw.params;
    let ocg = oc / c;
    let (sh, sw) = p.stride;
    let (ph, pwd) = p.padding;
    let (dh, dw) = p.dilation;
    let xs: Vec<_> = (0..kw)
        .map(|kx| valid_range(w, ow, sw, kx * dw, pwd))
        .collect();
    for img in 0..batch {
        for o in 0..oc {
            let xc = &x[(img * c + o / ocg) * h * w..][..h * w];
            let wo = &weights[o * kh * kw..(o + 1) * kh * kw];
            let b = bias.map_or(0.0, |b| b[o]);
            let plane = &mut out[(img * oc + o) * oh * ow..][..oh * ow];
            for (oy, orow) in plane.chunks_exact_mut(ow).enumerate() {
                orow.fill(b);
                for ky in 0..kh {
                    let y = (oy * sh + ky * dh).wrapping_sub(ph);
                    if y >= h {
                        continue;
                    }
                    let xrow = &xc[y * w..(y + 1) * w];
                    for (kx, r) in xs.iter().enumerate() {
                        if r.is_empty() {
                            continue;
                        }
                        let wv = wo[ky * kw + kx];
                        let first = r.start * sw + kx * dw - pwd;
                        let dst = &mut orow[r.clone()];
                        if sw == 1 {
                            let src = &xrow[first..first + dst.len()];
                            let wvec = simd.splat_f32s(wv);
                            let (dhd, dt) = S::as_mut_simd_f32s(dst);
                            let (shd, st) = S::as_simd_f32s(src);
                            for (d, &s) in dhd.iter_mut().zip(shd) {
                                *d = simd.mul_add_e_f32s(wvec, s, *d);
                            }
                            for (d, &s) in dt.iter_mut().zip(st) {
                                *d += wv * s;
                            }
                        } else {
                            for (d, &s) in dst.iter_mut().zip(xrow[first..].iter().step_by(sw)) {
                                *d += wv * s;
                            }
                        }
                    }
                }
                apply_slice(simd, act, orow);
            }
        }
    }
}
