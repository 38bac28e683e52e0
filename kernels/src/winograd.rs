//! 3 × 3 convolutions with stride 1 by Winograd's minimal filtering, F(4 × 4, 3 × 3) (Lavin
//! and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each 4 × 4 block of
//! output pixels ("tile") comes from a 6 × 6 window of the input, and its 16 × 9 = 144
//! multiply-adds per input and output channel become 36, at the price of transforms.
//!
//! - The weights are transformed once ([`WinogradWeights::new`], `U = G·g·Gᵀ` per output and
//!   input channel, in `f64`) into 36 matrices `U[ξ]` (`[oc, c]`), each packed like a dense
//!   layer's weights.
//! - The batch's tiles (image after image) go in chunks ([`WINOGRAD_BYTES`]). Each image is
//!   transposed to channels last inside a zeroed border (the padding, and the last tiles'
//!   overhang), and each tile's window is transformed (`V = Bᵀ·d·B`, vectors along the
//!   channels) into 36 matrices `V[ξ]` (`[tiles, c]`, a row per tile of the chunk).
//! - 36 GEMMs `M[ξ] = V[ξ]·U[ξ]ᵀ` (`[tiles, oc]`) on the GEMM core ([`Gemm`]).
//! - Each tile's outputs are `Aᵀ·M·A` per output channel (vectors along the channels), with
//!   the bias and the activation, into a channels-last image that is transposed into the
//!   NCHW output.
//!
//! The weight gradient ([`weight_gradient`]) runs the same algorithm transposed: per tile,
//! `V` as above and the output gradient's `∂M = A·∂Y·Aᵀ`; 36 GEMMs `∂U[ξ] += ∂M[ξ]ᵀ·V[ξ]`
//! (`[oc, c]`, as deep as a chunk's tiles) accumulated over the batch; `dw = Gᵀ·∂U·G`. The
//! input gradient is [`forward`] itself, with the weights transposed and turned
//! ([`WinogradWeights::transposed`]).
//!
//! The multiply-adds drop by 4 × (less the tiles' overhang: 11 × 11 outputs take 3 × 3 tiles,
//! 144 pixels; a side of `4k + 1` pixels takes `k` tiles and a strip of single pixels,
//! [`strip`], computed directly); the transforms are a few vector operations per input or
//! output element. On the seed CNN's second conv (batch 128, 32 → 64 channels, 13 × 13) it
//! runs 1.47 × as fast as the direct path at AVX-512 and 1.55 × at AVX2.
//!
//! The price is rounding: the points 0, ±1, ±2 put coefficients up to 5 into `Bᵀ` and 8 into
//! `Aᵀ`, which scale the rounding of the 36 products. Against an `f64` reference the error
//! is up to 2.4e-4 on outputs of scale 5 (288 terms), where the direct path's is 2.9e-5
//! (F(2 × 2, 3 × 3) would keep the direct path's error but saves no time here: its
//! transforms cost what its 2.25 × fewer multiply-adds save).

use pulp::Simd;

use crate::activation::{Activation, activate_tile, apply};
use crate::dense::{PackedData, PackedDense, pack};
use crate::elem::{Scratch, take_scratch};
use crate::gemm::{AView, Ahead, Bias, Gemm, KC, nr, tile_dims};
use crate::shape::Conv2dParams;
use crate::vmem::{copy, load, store, transpose, zero};

/// Output pixels per tile side.
const M: usize = 4;
/// Input pixels per window side (`M + 3 - 1`).
const T: usize = 6;
/// Transformed points per tile (`T²`): one GEMM each.
const POINTS: usize = T * T;

/// Bytes of one chunk's `V` and `M` matrices: within a 1 MiB L2 with room for the weights,
/// so that the GEMMs read `V` and the output transform reads `M` from there.
const WINOGRAD_BYTES: usize = 512 << 10;

/// Whether a convolution runs as Winograd F(4 × 4, 3 × 3): 3 × 3 kernels, stride and
/// dilation 1, one group, and enough channels on both sides (16) for the 36 products to be
/// GEMMs worth their transforms. The output must also be large enough that the tiles'
/// overhang is small ([`covers`]); otherwise the packed weights' fallback runs.
pub(crate) fn winograd(w_shape: [usize; 4], p: &Conv2dParams) -> bool {
    let [oc, cg, kh, kw] = w_shape;
    kh == 3
        && kw == 3
        && p.stride == (1, 1)
        && p.dilation == (1, 1)
        && p.groups == 1
        && cg >= 16
        && oc >= 16
}

/// Tiles along an output side of `o` pixels: one per 4 pixels, the last one overhanging;
/// but where a tile would hold a single pixel (`o = 4k + 1`, `k ≥ 1`), that last row or
/// column of pixels is left to [`strip`] instead (13: three tiles and one strip).
fn tiles(o: usize) -> usize {
    if o > M && o % M == 1 {
        o / M
    } else {
        o.div_ceil(M)
    }
}

/// Whether an `oh × ow` output's tiles ([`tiles`]) are at least 3/4 filled (11 × 11: 121 of
/// 144 pixels; 13 × 13: 144 of 144, and 25 pixels of strip), so that the Winograd path of
/// [`forward`] does less work than the direct one.
pub(crate) fn covers(oh: usize, ow: usize) -> bool {
    let (th, tw) = (tiles(oh), tiles(ow));
    4 * (th * M).min(oh) * (tw * M).min(ow) >= 3 * th * M * tw * M
}

/// Whether an `oh × ow` output fills at least 3/4 of its tiles when the last tiles overhang
/// (never a strip): the condition of [`weight_gradient`], which has no strip.
pub(crate) fn tiles_cover(oh: usize, ow: usize) -> bool {
    4 * oh * ow >= 3 * oh.div_ceil(M) * M * ow.div_ceil(M) * M
}

/// Whether the input gradient of a convolution with weights `w_shape` and parameters `p`
/// runs through [`forward`] with [`WinogradWeights::transposed`]: the forward pass runs
/// Winograd ([`winograd`]), the padding is at most 2 (the full correlation's is `2 - p`), and
/// the input (`h × w`, the gradient's size) is covered ([`covers`]).
pub(crate) fn input_gradient(w_shape: [usize; 4], p: &Conv2dParams, h: usize, w: usize) -> bool {
    turns(w_shape, p) && covers(h, w)
}

/// Whether the input gradient of a convolution with weights `w_shape` and parameters `p` may
/// run through [`forward`] (for an input that [`covers`]): the weights to prepare with
/// [`WinogradWeights::transposed`].
pub(crate) fn turns(w_shape: [usize; 4], p: &Conv2dParams) -> bool {
    winograd(w_shape, p) && p.padding.0 <= 2 && p.padding.1 <= 2
}

/// Transformed weights: per point `ξ`, `U[ξ]` (`[oc, c]`) packed as a dense layer's; the
/// weights as [`strip`] reads them (`[9, c, oc]`: per tap and input channel, the output
/// channels side by side); and the bias.
#[derive(Clone, Debug)]
pub(crate) struct WinogradWeights {
    pub(crate) u: Vec<PackedDense>,
    strip: Vec<f32>,
    pub(crate) bias: Option<Vec<f32>>,
}

impl WinogradWeights {
    /// Transforms validated weights `w` (`[oc, cg, 3, 3]`) and packs them at the level of
    /// `kernels`.
    pub(crate) fn new(
        kernels: &crate::Kernels,
        w: &[f32],
        oc: usize,
        cg: usize,
        bias: Option<&[f32]>,
    ) -> Self {
        let mut u = vec![vec![0.0f32; oc * cg]; POINTS];
        for (oi, wo) in w.chunks_exact(cg * 9).enumerate() {
            for (ci, g) in wo.chunks_exact(9).enumerate() {
                // G·g (6 × 3), a column at a time, then (G·g)·Gᵀ (6 × 6), a row at a time.
                let mut gg = [[0.0f64; 3]; T];
                for c in 0..3 {
                    let col = [g[c], g[3 + c], g[6 + c]].map(f64::from);
                    for (row, v) in gg.iter_mut().zip(weight_1d(col)) {
                        row[c] = v;
                    }
                }
                for (r, row) in gg.iter().enumerate() {
                    for (c, v) in weight_1d(*row).into_iter().enumerate() {
                        u[r * T + c][oi * cg + ci] = v as f32;
                    }
                }
            }
        }
        let mut strip = vec![0.0; 9 * cg * oc];
        for (oi, wo) in w.chunks_exact(cg * 9).enumerate() {
            for (ci, g) in wo.chunks_exact(9).enumerate() {
                for (t, &v) in g.iter().enumerate() {
                    strip[(t * cg + ci) * oc + oi] = v;
                }
            }
        }
        Self {
            u: u.iter()
                .map(|ux| pack(kernels, ux, oc, cg, None, |v| v, PackedData::F32))
                .collect(),
            strip,
            bias: bias.map(<[f32]>::to_vec),
        }
    }

    /// The weights of a convolution's input gradient as a convolution of its own: validated
    /// weights `w` (`[oc, c, 3, 3]`) transposed and rotated by half a turn (`[c, oc, 3, 3]`,
    /// `w'[i][o][ky][kx] = w[o][i][2 - ky][2 - kx]`), transformed. [`forward`] with them,
    /// padding `2 - p` and no bias, takes the output's gradient to the input's (stride 1).
    pub(crate) fn transposed(kernels: &crate::Kernels, w: &[f32], oc: usize, c: usize) -> Self {
        let mut turned = vec![0.0; w.len()];
        for (o, wo) in w.chunks_exact(c * 9).enumerate() {
            for (i, g) in wo.chunks_exact(9).enumerate() {
                for (t, &v) in g.iter().enumerate() {
                    turned[(i * oc + o) * 9 + 8 - t] = v;
                }
            }
        }
        Self::new(kernels, &turned, c, oc, None)
    }
}

/// The reciprocals [`weight_1d`] and [`weight_grad_1d`] multiply by: an f64 division costs
/// several times a multiplication, and the transforms run once per weight per pack (every
/// training step); the difference is within an f64 rounding, far below the f32 the results
/// are stored as.
const R4: f64 = 1.0 / 4.0;
const R6: f64 = 1.0 / 6.0;
const R12: f64 = 1.0 / 12.0;
const R24: f64 = 1.0 / 24.0;

/// `G·g` for one column `g` of a 3 × 3 kernel.
fn weight_1d([g0, g1, g2]: [f64; 3]) -> [f64; T] {
    [
        g0 * R4,
        -(g0 + g1 + g2) * R6,
        -(g0 - g1 + g2) * R6,
        g0 * R24 + g1 * R12 + g2 * R6,
        g0 * R24 - g1 * R12 + g2 * R6,
        g2,
    ]
}

/// `Gᵀ·u` for one column `u` of a transformed weight gradient (the transpose of
/// [`weight_1d`]).
fn weight_grad_1d([u0, u1, u2, u3, u4, u5]: [f64; T]) -> [f64; 3] {
    [
        u0 * R4 - (u1 + u2) * R6 + (u3 + u4) * R24,
        (u2 - u1) * R6 + (u3 - u4) * R12,
        (u3 + u4 - u1 - u2) * R6 + u5,
    ]
}

/// Row `r` of a tile held as its `C` columns (`cols[col][r]` for each column).
#[inline(always)]
fn row_of<V: Copy, const N: usize, const C: usize>(cols: &[[V; N]; C], r: usize) -> [V; C] {
    let mut row = [cols[0][0]; C];
    for (slot, col) in row.iter_mut().zip(cols) {
        *slot = col[r];
    }
    row
}

/// `Bᵀ·d` for one column `d` of a window (vectors along the channels).
#[inline(always)]
fn input_1d<S: Simd>(simd: S, d: [S::f32s; T]) -> [S::f32s; T] {
    let (four, minus_four) = (simd.splat_f32s(4.0), simd.splat_f32s(-4.0));
    let minus_five = simd.splat_f32s(-5.0);
    let t0 = simd.mul_add_f32s(minus_four, d[2], d[4]);
    let t1 = simd.mul_add_f32s(minus_four, d[1], d[3]);
    let t2 = simd.sub_f32s(d[4], d[2]);
    let t3 = simd.mul_f32s(simd.splat_f32s(2.0), simd.sub_f32s(d[3], d[1]));
    [
        simd.mul_add_f32s(four, d[0], simd.mul_add_f32s(minus_five, d[2], d[4])),
        simd.add_f32s(t0, t1),
        simd.sub_f32s(t0, t1),
        simd.add_f32s(t2, t3),
        simd.sub_f32s(t2, t3),
        simd.mul_add_f32s(four, d[1], simd.mul_add_f32s(minus_five, d[3], d[5])),
    ]
}

/// Where [`input_tile`] reads a window: from `xin[at..]` (a padded channels-last image,
/// rows `wp` pixels of `cp` channels apart), channels `c0..c0 + lanes`.
#[derive(Clone, Copy)]
struct Window<'a> {
    xin: &'a [f32],
    at: usize,
    wp: usize,
    cp: usize,
    c0: usize,
}

/// `V = Bᵀ·d·B` of one window's channels (vectors along the channels), point `ξ` stored at
/// `v[ξ·stride + base..]`: `Bᵀ·d` down each column, then `·B` along each row.
#[inline(always)]
fn input_tile<S: Simd>(simd: S, window: Window, v: &mut [f32], stride: usize, base: usize) {
    let Window {
        xin,
        at,
        wp,
        cp,
        c0,
    } = window;
    let lanes = S::F32_LANES;
    let zero_v = simd.splat_f32s(0.0);
    let mut cols = [[zero_v; T]; T];
    for (col, out) in cols.iter_mut().enumerate() {
        let mut d = [zero_v; T];
        for (r, slot) in d.iter_mut().enumerate() {
            *slot = load(simd, &xin[at + (r * wp + col) * cp + c0..][..lanes]);
        }
        *out = input_1d(simd, d);
    }
    // Constant bounds: the loops unroll and the values stay in registers.
    for r in 0..T {
        let vals = input_1d(simd, row_of(&cols, r));
        for (col, &val) in vals.iter().enumerate() {
            store(simd, &mut v[(r * T + col) * stride + base..][..lanes], val);
        }
    }
}

/// `Aᵀ·m` for one column `m` of a transformed tile (vectors along the channels).
#[inline(always)]
fn output_1d<S: Simd>(simd: S, m: [S::f32s; T]) -> [S::f32s; M] {
    let a = simd.add_f32s(m[1], m[2]);
    let b = simd.sub_f32s(m[1], m[2]);
    let c = simd.add_f32s(m[3], m[4]);
    let d = simd.sub_f32s(m[3], m[4]);
    [
        simd.add_f32s(simd.add_f32s(m[0], a), c),
        simd.mul_add_f32s(simd.splat_f32s(2.0), d, b),
        simd.mul_add_f32s(simd.splat_f32s(4.0), c, a),
        simd.add_f32s(simd.mul_add_f32s(simd.splat_f32s(8.0), d, b), m[5]),
    ]
}

/// `A·d` for one column `d` of an output tile's gradient (vectors along the channels): the
/// transpose of [`output_1d`].
#[inline(always)]
fn gradient_1d<S: Simd>(simd: S, d: [S::f32s; M]) -> [S::f32s; T] {
    let even = simd.add_f32s(d[0], d[2]);
    let odd = simd.add_f32s(d[1], d[3]);
    let even4 = simd.mul_add_f32s(simd.splat_f32s(4.0), d[2], d[0]);
    let odd8 = simd.mul_add_f32s(
        simd.splat_f32s(8.0),
        d[3],
        simd.mul_f32s(simd.splat_f32s(2.0), d[1]),
    );
    [
        d[0],
        simd.add_f32s(even, odd),
        simd.sub_f32s(even, odd),
        simd.add_f32s(even4, odd8),
        simd.sub_f32s(even4, odd8),
        d[3],
    ]
}

/// The Winograd forward pass of [`Conv2d`](crate::conv::Conv2d) (shapes validated,
/// [`winograd`] and [`covers`] hold, `batch > 0`): `x` `[batch, c, h, w]` into `out`
/// `[batch, oc, oh, ow]`; the pixels past the tiles ([`tiles`]) by [`strip`]. Also the input
/// gradient of [`Conv2dBackwardInput`](crate::conv_grad), with
/// [`WinogradWeights::transposed`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn forward<S: Simd>(
    simd: S,
    x: &[f32],
    x_shape: [usize; 4],
    padding: (usize, usize),
    weights: &WinogradWeights,
    out_shape: [usize; 4],
    act: Activation,
    out: &mut [f32],
) {
    let [batch, c, h, w] = x_shape;
    let [_, oc, oh, ow] = out_shape;
    let (ph, pw) = padding;
    let lanes = S::F32_LANES;
    let zero_v = simd.splat_f32s(0.0);
    // Channels padded to whole vectors (the transforms' lanes past `c` and `oc` are never
    // read by the GEMMs or stored).
    let (cp, ocp) = (c.div_ceil(lanes) * lanes, oc.div_ceil(lanes) * lanes);
    let (th, tw) = (tiles(oh), tiles(ow));
    let tiles = th * tw;
    let total = batch * tiles;
    // The padded channels-last image: every tile's window and every strip pixel's inside.
    let (hp, wp) = ((th * M).max(oh) + 2, (tw * M).max(ow) + 2);
    let pixels = oh * ow;
    // Tiles per chunk (of the batch's tiles, image after image): whole register tiles.
    let mr = tile_dims::<S>().0;
    let chunk = (WINOGRAD_BYTES / 4 / (POINTS * (cp + ocp)) / mr * mr)
        .clamp(mr, total.next_multiple_of(mr));
    let mut images = take_scratch(&PLANE, h * w * cp + hp * wp * cp + pixels * oc);
    let (plane, rest) = images.as_mut_slice().split_at_mut(h * w * cp);
    let (xin, y) = rest.split_at_mut(hp * wp * cp);
    let y = &mut y[..pixels * oc];
    // The border stays zero: only the interior is written, image by image.
    zero(simd, xin);
    let mut vm = take_scratch(&TRANSFORMED, POINTS * chunk * (cp + ocp));
    let (v, m) = vm.as_mut_slice().split_at_mut(POINTS * chunk * cp);
    let m = &mut m[..POINTS * chunk * ocp];
    // The pixels past the tiles ([`strip`]): the columns past them in the rows they cover,
    // then the rows past them. Each image's, computed when it is loaded, wait in a ring of
    // `[pixels, oc]` slots, one per image a chunk can touch, for its outputs' transpose.
    let (y0, x0) = ((th * M).min(oh), (tw * M).min(ow));
    let strip_pixels: Vec<(usize, usize)> = (0..oh)
        .flat_map(|oy| (if oy >= y0 { 0 } else { x0 }..ow).map(move |ox| (oy, ox)))
        .collect();
    let ring = chunk / tiles + 2;
    let slot = strip_pixels.len() * oc;
    let mut strips = vec![0.0; ring * slot];
    let geometry = StripGeometry {
        wp,
        cp,
        interior: (ph..ph + h, pw..pw + w),
        act,
    };
    // The image inside `xin`.
    let mut loaded = usize::MAX;
    for r0 in (0..total).step_by(chunk) {
        let rows = chunk.min(total - r0);
        for row_no in 0..rows {
            let (img, t) = ((r0 + row_no) / tiles, (r0 + row_no) % tiles);
            if img != loaded {
                let xi = &x[img * c * h * w..][..c * h * w];
                transpose(simd, xi, c, h * w, plane, cp);
                for yy in 0..h {
                    let dst = &mut xin[((yy + ph) * wp + pw) * cp..][..w * cp];
                    copy(simd, dst, &plane[yy * w * cp..][..w * cp]);
                }
                loaded = img;
                if slot > 0 {
                    let sv = &mut strips[img % ring * slot..][..slot];
                    strip(simd, xin, &geometry, &strip_pixels, weights, sv);
                }
            }
            let at = ((t / tw) * M * wp + (t % tw) * M) * cp;
            for c0 in (0..cp).step_by(lanes) {
                let window = Window {
                    xin,
                    at,
                    wp,
                    cp,
                    c0,
                };
                input_tile(simd, window, v, chunk * cp, row_no * cp + c0);
            }
        }
        for (xi, u) in weights.u.iter().enumerate() {
            let PackedData::F32(b) = &u.data else {
                unreachable!("Winograd weights are packed as f32")
            };
            Gemm {
                m: rows,
                n: oc,
                k: c,
                a: AView {
                    data: &v[xi * chunk * cp..][..rows * cp],
                    rs: cp,
                    cs: 1,
                    gather: None,
                },
                b: b.as_slice(),
                bias: Bias::None,
                act: Activation::None,
                ldc: ocp,
                accumulate: false,
                b_window: None,
                ahead: Ahead::NONE,
                scatter: None,
            }
            .run(simd, &mut m[xi * chunk * ocp..][..rows * ocp]);
        }
        for row_no in 0..rows {
            let (img, t) = ((r0 + row_no) / tiles, (r0 + row_no) % tiles);
            let (ty, tx) = (t / tw, t % tw);
            for o0 in (0..oc).step_by(lanes) {
                let width = lanes.min(oc - o0);
                let bias = match weights.bias.as_deref() {
                    Some(b) => load(simd, &b[o0..o0 + width]),
                    None => zero_v,
                };
                // Aᵀ·M down each column, then ·A along each row.
                let mut cols = [[zero_v; M]; T];
                for (col, out) in cols.iter_mut().enumerate() {
                    let mut mc = [zero_v; T];
                    for (r, slot) in mc.iter_mut().enumerate() {
                        let xi = r * T + col;
                        *slot = load(simd, &m[(xi * chunk + row_no) * ocp + o0..][..lanes]);
                    }
                    *out = output_1d(simd, mc);
                }
                // Loops, not closures: a closure does not take the level's target features,
                // so the intrinsics inside it would be calls.
                let mut tile = [[zero_v; M]; M];
                for (r, row) in tile.iter_mut().enumerate() {
                    for (slot, v) in row.iter_mut().zip(output_1d(simd, row_of(&cols, r))) {
                        *slot = simd.add_f32s(v, bias);
                    }
                }
                // Matched once per tile, not per vector (see `activate_tile`).
                activate_tile(simd, act, &mut tile);
                // Constant bounds (the tile's rows and columns past the output skipped): the
                // loops unroll and the values stay in registers.
                let (rows_in, cols_in) = (oh - ty * M, ow - tx * M);
                for (r, row) in tile.iter().enumerate() {
                    if r >= rows_in {
                        break;
                    }
                    for (col, &val) in row.iter().enumerate() {
                        if col < cols_in {
                            let pixel = (ty * M + r) * ow + tx * M + col;
                            store(simd, &mut y[pixel * oc + o0..][..width], val);
                        }
                    }
                }
            }
            if t == tiles - 1 {
                let out_i = &mut out[img * oc * pixels..][..oc * pixels];
                transpose(simd, y, pixels, oc, out_i, pixels);
                // The strip's pixels (the transpose wrote them from nowhere).
                let sv = &strips[img % ring * slot..][..slot];
                for (&(oy, ox), vals) in strip_pixels.iter().zip(sv.chunks_exact(oc)) {
                    for (o, &v) in vals.iter().enumerate() {
                        out_i[o * pixels + oy * ow + ox] = v;
                    }
                }
            }
        }
    }
    PLANE.set(Some(images));
    TRANSFORMED.set(Some(vm));
}

/// The `lanes` values from `start`, both clamped to `len`.
#[inline(always)]
fn lane_range(start: usize, lanes: usize, len: usize) -> core::ops::Range<usize> {
    let s = start.min(len);
    s..(s + lanes).min(len)
}

/// Where [`strip`] reads: the padded channels-last image's row length `wp` and channel
/// count `cp`, the rows and columns the image fills in it, and the activation.
struct StripGeometry {
    wp: usize,
    cp: usize,
    interior: (core::ops::Range<usize>, core::ops::Range<usize>),
    act: Activation,
}

/// Vectors of output channels that [`strip`] keeps in registers per pixel.
const STRIP_VECTORS: usize = 2;
/// Pixels [`strip`] computes together: each weight vector it loads serves all of them, and
/// their sums are independent chains of multiply-adds.
const STRIP_PIXELS: usize = 4;

/// The outputs at `pixels` (past the tiles) of the image in `xin` (padded, channels last),
/// directly, [`STRIP_PIXELS`] at a time, into `sv` (`[pixels, oc]`): per block of output
/// channels, the sum over the taps and the input channels of an input value times a vector
/// of `weights.strip`, with the bias and the activation. A tap that lies in the padding for
/// all of a group's pixels is skipped.
#[inline(always)]
fn strip<S: Simd>(
    simd: S,
    xin: &[f32],
    geometry: &StripGeometry,
    pixels: &[(usize, usize)],
    weights: &WinogradWeights,
    sv: &mut [f32],
) {
    let StripGeometry {
        wp,
        cp,
        interior: (rows, cols),
        act,
    } = geometry;
    let (wp, cp, act) = (*wp, *cp, *act);
    let oc = sv.len() / pixels.len();
    let c = weights.strip.len() / 9 / oc;
    let lanes = S::F32_LANES;
    let block = STRIP_VECTORS * lanes;
    let zero_v = simd.splat_f32s(0.0);
    for (group, out) in pixels
        .chunks(STRIP_PIXELS)
        .zip(sv.chunks_mut(STRIP_PIXELS * oc))
    {
        // Where each pixel's window starts in `xin` (a short group repeats its last pixel).
        let base: [usize; STRIP_PIXELS] = core::array::from_fn(|p| {
            let (oy, ox) = group[p.min(group.len() - 1)];
            (oy * wp + ox) * cp
        });
        for o0 in (0..oc).step_by(block) {
            let parts: [core::ops::Range<usize>; STRIP_VECTORS] =
                core::array::from_fn(|j| lane_range(o0 + j * lanes, lanes, oc));
            let mut acc = [[zero_v; STRIP_VECTORS]; STRIP_PIXELS];
            if let Some(b) = &weights.bias {
                for (j, part) in parts.iter().enumerate() {
                    let bias = load(simd, &b[part.clone()]);
                    for a in &mut acc {
                        a[j] = bias;
                    }
                }
            }
            for t in 0..9 {
                let (ky, kx) = (t / 3, t % 3);
                let inside = |&(oy, ox): &(usize, usize)| {
                    rows.contains(&(oy + ky)) && cols.contains(&(ox + kx))
                };
                if !group.iter().any(inside) {
                    continue;
                }
                let off = (ky * wp + kx) * cp;
                let taps = &weights.strip[t * c * oc..][..c * oc];
                for (ci, row) in taps.chunks_exact(oc).enumerate() {
                    let mut wv = [zero_v; STRIP_VECTORS];
                    for (slot, part) in wv.iter_mut().zip(&parts) {
                        *slot = load(simd, &row[part.clone()]);
                    }
                    for (a, &b) in acc.iter_mut().zip(&base) {
                        let v = simd.splat_f32s(xin[b + off + ci]);
                        for (aj, &wj) in a.iter_mut().zip(&wv) {
                            *aj = simd.mul_add_f32s(v, wj, *aj);
                        }
                    }
                }
            }
            for (a, dst) in acc.iter().zip(out.chunks_exact_mut(oc)) {
                for (&aj, part) in a.iter().zip(&parts) {
                    if !part.is_empty() {
                        store(simd, &mut dst[part.clone()], apply(simd, act, aj));
                    }
                }
            }
        }
    }
}

/// The Winograd weight gradient of [`Conv2dBackwardWeights`](crate::conv_grad) (shapes
/// validated, [`winograd`] and [`tiles_cover`] hold, `batch > 0`): from `x`
/// `[batch, c, h, w]` and the output's gradient `dy` `[batch, oc, oh, ow]`, writes `dw`
/// `[oc, c, 3, 3]` summed over the batch.
///
/// The forward pass transposed: per tile, the input window's `V = Bᵀ·d·B` (as in
/// [`forward`]) and the gradient's `∂M = A·∂Y·Aᵀ` (its overhang zero); per point `ξ`,
/// `∂U[ξ] = Σ_tiles ∂M[ξ]ᵀ·V[ξ]` (`[oc, c]`), a GEMM whose depth is the chunk's tiles,
/// accumulated over the chunks; then `dw = Gᵀ·∂U·G` per output and input channel, in `f64`.
/// `V` is written straight into the GEMM's packed `B` layout (its channels as whole panels),
/// and each `∂M[ξ]` is transposed into a row-major `A`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn weight_gradient<S: Simd>(
    simd: S,
    x: &[f32],
    x_shape: [usize; 4],
    padding: (usize, usize),
    dy: &[f32],
    out_shape: [usize; 4],
    dw: &mut [f32],
) {
    let [batch, c, h, w] = x_shape;
    let [_, oc, oh, ow] = out_shape;
    let (ph, pw) = padding;
    let lanes = S::F32_LANES;
    let nr = nr::<S>();
    let zero_v = simd.splat_f32s(0.0);
    // `V`'s channels fill whole panels of `B`; the gradient's channels whole vectors. The
    // padded channels stay zero (only the first `c` and `oc` are ever written).
    let (cp, ocp) = (c.div_ceil(nr) * nr, oc.div_ceil(lanes) * lanes);
    let (th, tw) = (oh.div_ceil(M), ow.div_ceil(M));
    let tiles = th * tw;
    let total = batch * tiles;
    let (hp, wp) = (th * M + 2, tw * M + 2);
    // The gradient's tile grid (the overhang zero).
    let gw = tw * M;
    let pixels = oh * ow;
    // Tiles per chunk: the GEMMs' depth, one block of packed `B`; a multiple of 8, so that
    // `∂M[ξ]` transposes by whole 8 × 8 blocks (all but a batch's last chunk).
    let chunk = (WINOGRAD_BYTES / 4 / (POINTS * (cp + ocp) + ocp) / 8 * 8)
        .clamp(8, KC)
        .min(total);
    let (plane_len, dy_len) = (h * w * cp, pixels * ocp);
    let (xin_len, grid_len) = (hp * wp * cp, th * M * gw * ocp);
    let mut buf = take_scratch(&PLANE, plane_len + dy_len + xin_len + grid_len);
    let images = &mut buf.as_mut_slice()[..plane_len + dy_len + xin_len + grid_len];
    // Borders, overhangs and padded channels stay zero: only the rest is written, image by
    // image.
    zero(simd, images);
    let (plane, rest) = images.split_at_mut(plane_len);
    let (dy_plane, rest) = rest.split_at_mut(dy_len);
    let (xin, grid) = rest.split_at_mut(xin_len);
    let (v_len, m_len) = (POINTS * chunk * cp, POINTS * chunk * ocp);
    let mut work = take_scratch(&TRANSFORMED, v_len + m_len + ocp * chunk + POINTS * oc * c);
    let (v, rest) = work.as_mut_slice().split_at_mut(v_len);
    let (m, rest) = rest.split_at_mut(m_len);
    let (mt, du) = rest.split_at_mut(ocp * chunk);
    let du = &mut du[..POINTS * oc * c];
    let mut loaded = usize::MAX;
    for r0 in (0..total).step_by(chunk) {
        let rows = chunk.min(total - r0);
        for row_no in 0..rows {
            let (img, t) = ((r0 + row_no) / tiles, (r0 + row_no) % tiles);
            if img != loaded {
                let xi = &x[img * c * h * w..][..c * h * w];
                transpose(simd, xi, c, h * w, plane, cp);
                for yy in 0..h {
                    let dst = &mut xin[((yy + ph) * wp + pw) * cp..][..w * cp];
                    copy(simd, dst, &plane[yy * w * cp..][..w * cp]);
                }
                let dyi = &dy[img * oc * pixels..][..oc * pixels];
                transpose(simd, dyi, oc, pixels, dy_plane, ocp);
                for yy in 0..oh {
                    let dst = &mut grid[yy * gw * ocp..][..ow * ocp];
                    copy(simd, dst, &dy_plane[yy * ow * ocp..][..ow * ocp]);
                }
                loaded = img;
            }
            let (ty, tx) = (t / tw, t % tw);
            let at = (ty * M * wp + tx * M) * cp;
            for c0 in (0..cp).step_by(lanes) {
                // Into panel `c0 / nr` of `V[ξ]` (`rows × nr` each).
                let panel = (c0 / nr) * rows * nr + row_no * nr + c0 % nr;
                input_tile(
                    simd,
                    Window {
                        xin,
                        at,
                        wp,
                        cp,
                        c0,
                    },
                    v,
                    chunk * cp,
                    panel,
                );
            }
            let at = (ty * M * gw + tx * M) * ocp;
            for o0 in (0..ocp).step_by(lanes) {
                // A·∂Y down each column, then ·Aᵀ along each row.
                let mut cols = [[zero_v; T]; M];
                for (col, out) in cols.iter_mut().enumerate() {
                    let mut d = [zero_v; M];
                    for (r, slot) in d.iter_mut().enumerate() {
                        *slot = load(simd, &grid[at + (r * gw + col) * ocp + o0..][..lanes]);
                    }
                    *out = gradient_1d(simd, d);
                }
                for r in 0..T {
                    let vals = gradient_1d(simd, row_of(&cols, r));
                    for (col, &val) in vals.iter().enumerate() {
                        let xi = r * T + col;
                        store(
                            simd,
                            &mut m[(xi * chunk + row_no) * ocp + o0..][..lanes],
                            val,
                        );
                    }
                }
            }
        }
        for xi in 0..POINTS {
            let mt = &mut mt[..ocp * rows];
            transpose(
                simd,
                &m[xi * chunk * ocp..][..rows * ocp],
                rows,
                ocp,
                mt,
                rows,
            );
            Gemm {
                m: oc,
                n: c,
                k: rows,
                a: AView {
                    data: &mt[..oc * rows],
                    rs: rows,
                    cs: 1,
                    gather: None,
                },
                b: &v[xi * chunk * cp..][..rows * cp],
                bias: Bias::None,
                act: Activation::None,
                ldc: c,
                accumulate: r0 > 0,
                b_window: None,
                ahead: Ahead::NONE,
                scatter: None,
            }
            .run(simd, &mut du[xi * oc * c..][..oc * c]);
        }
    }
    // dw = Gᵀ·∂U·G per output and input channel: ·G along each row, then Gᵀ· down each
    // column.
    for (i, out) in dw.chunks_exact_mut(9).enumerate() {
        let mut ug = [[0.0f64; 3]; T];
        for (r, slot) in ug.iter_mut().enumerate() {
            let mut row = [0.0f64; T];
            for (col, u) in row.iter_mut().enumerate() {
                *u = f64::from(du[(r * T + col) * oc * c + i]);
            }
            *slot = weight_grad_1d(row);
        }
        for kx in 0..3 {
            let mut col = [0.0f64; T];
            for (r, u) in col.iter_mut().enumerate() {
                *u = ug[r][kx];
            }
            for (ky, val) in weight_grad_1d(col).into_iter().enumerate() {
                out[ky * 3 + kx] = val as f32;
            }
        }
    }
    PLANE.set(Some(buf));
    TRANSFORMED.set(Some(work));
}

std::thread_local! {
    /// This thread's channels-last image (as given, and inside its border) and output.
    static PLANE: Scratch = const { Scratch::new(None) };
    /// This thread's transformed inputs `V` and products `M`.
    static TRANSFORMED: Scratch = const { Scratch::new(None) };
}
