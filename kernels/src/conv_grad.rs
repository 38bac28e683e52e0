//! Conv2d backward (PyTorch semantics: stride, padding, dilation, groups) as GEMMs on im2col
//! patches, per image and group, on the GEMM core of [`gemm`](crate::gemm):
//!
//! - input gradient ([`Conv2dBackwardInput`]): `grad[pixels, taps] = dYᵀ[pixels, ocg] ·
//!   W[ocg, taps]` — `dYᵀ` copied into `MR`-interleaved blocks (the GEMM's `A`,
//!   [`pack_transposed`]), `W` packed once per call as `B` with its taps in `(ky, kx, ci)`
//!   order, a tap's channels side by side. In this orientation the taps (288 for the seed
//!   CNN's second conv) are the GEMM's columns, whole panels, where the pixels (121) left
//!   part of a panel empty. When a tap's channels fill whole panels (`cg` a multiple of
//!   `NR`), the product's tiles add themselves into the image's gradient, kept channels
//!   last with its padding around it ([`Gemm::scatter`](crate::gemm::Gemm::scatter): a
//!   row per output pixel, where its patch starts; a column per tap and channel, where it
//!   sits in the patch), a few images per product, and the patch gradients are never
//!   stored. Otherwise they are, a block of output rows at a time, and each input pixel
//!   gathers its own ([`Gather`]): contiguous vector loads, the channels of a tap side by
//!   side. Either way the channels-last gradient is transposed into `dX` at the end. Where
//!   the forward pass runs as Winograd F(4 × 4, 3 × 3) and the padding is at most 2
//!   ([`winograd::input_gradient`]), none of this: `dX` is the full correlation of `dY` with
//!   the weights transposed and turned by half a turn, which is that forward pass with
//!   padding `2 - p` ([`winograd::forward`], [`WinogradWeights::transposed`]), with the
//!   weights prepared once per weights ([`PackedConv2dGrad`]).
//! - weight gradient ([`Conv2dBackwardWeights`]): `dWᵀ[taps, ocg] += cols[taps, pixels] ·
//!   dY[ocg, pixels]ᵀ` — the patches are the GEMM's `A`: without padding read from the
//!   image in place through the forward's offset tables (a row per tap, a column per pixel;
//!   see [`gathers`](crate::conv::gathers)), otherwise written row-major by the forward's
//!   im2col ([`Im2col::pack`] with one panel as wide as the block) and read from there,
//!   and `dY` is packed as `B` from its rows ([`pack_b`]) — accumulated over the batch in
//!   accumulate mode, then transposed into `dW`. This orientation puts the taps
//!   (`cg·kh·kw`, a multiple of the register tile's rows for 3 × 3 kernels on 4k channels)
//!   on the GEMM's rows and the output channels on its columns. Where the forward pass runs
//!   as Winograd F(4 × 4, 3 × 3) (3 × 3 kernels, stride 1, [`winograd()`]), so does the weight
//!   gradient ([`winograd::weight_gradient`]): the forward's transforms transposed, around
//!   36 GEMMs whose depth is the batch's tiles.
//!
//! Pixels are taken in blocks (whole output rows, for the gathered input gradient; whole
//! images, for the scattered one) whose patches (or patch gradients) fit in about half of
//! L2. Both ops run on the calling thread: a trainer runs them per sub-batch on its own
//! threads.

use pulp::Simd;

use crate::activation::Activation;
use crate::conv::{Im2col, gather_tables, in_place};
use crate::dispatch::Level;
use crate::elem::{Scratch, take_scratch};
use crate::gemm::{
    AView, Ahead, Bias, Gemm, OffsetTables, nr, pack_b, pack_b_rows, packed_b_len, tile_dims,
};
use crate::matmul::pack_transposed;
use crate::shape::Conv2dParams;
use crate::vmem::{load, partial_load, partial_store, store, transpose, zero};
use crate::winograd::{self, WinogradWeights, tiles_cover, winograd};

/// Bytes of patches (or patch gradients) per pixel block: half of a 1 MiB L2.
const BLOCK_BYTES: usize = 512 << 10;

/// Pixels per block for `taps` patch rows: within [`BLOCK_BYTES`], at least one, a multiple
/// of `nr` when that is more than one panel.
fn block_pixels(taps: usize, pixels: usize, nr: usize) -> usize {
    let fit = BLOCK_BYTES / 4 / taps.max(1);
    let fit = if fit > nr { fit / nr * nr } else { fit.max(1) };
    fit.min(pixels).max(1)
}

/// The im2col geometry of one group.
fn geometry(x_shape: [usize; 4], w_shape: [usize; 4], ow: usize, p: &Conv2dParams) -> Im2col {
    Im2col {
        h: x_shape[2],
        w: x_shape[3],
        cg: w_shape[1],
        kh: w_shape[2],
        kw: w_shape[3],
        ow,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
    }
}

/// A convolution's weights prepared for its input gradient by
/// [`Kernels::pack_conv2d_backward_input`](crate::Kernels::pack_conv2d_backward_input), for
/// [`Kernels::conv2d_backward_input_packed`](crate::Kernels::conv2d_backward_input_packed):
/// the weights as given and, where the input gradient may run as Winograd, transposed, turned
/// and transformed (`WinogradWeights::transposed`). A trainer prepares them once per
/// optimizer step, not once per call on each of its threads.
#[derive(Clone, Debug)]
pub struct PackedConv2dGrad {
    pub(crate) w: Vec<f32>,
    pub(crate) w_shape: [usize; 4],
    pub(crate) params: Conv2dParams,
    pub(crate) level: Level,
    /// Present where [`winograd::turns`] holds.
    pub(crate) turned: Option<WinogradWeights>,
}

/// The [`pulp::WithSimd`] op behind
/// [`Kernels::conv2d_backward_input`](crate::Kernels::conv2d_backward_input); shapes are
/// validated by the caller and `out_shape` is the convolution's output shape (`dy`'s).
pub(crate) struct Conv2dBackwardInput<'a> {
    pub(crate) dy: &'a [f32],
    pub(crate) w: &'a [f32],
    pub(crate) w_shape: [usize; 4],
    pub(crate) x_shape: [usize; 4],
    pub(crate) out_shape: [usize; 4],
    pub(crate) p: Conv2dParams,
    /// `w` transposed for the Winograd path, where it runs
    /// ([`winograd::input_gradient`]).
    pub(crate) winograd: Option<&'a WinogradWeights>,
    pub(crate) dx: &'a mut [f32],
}

impl pulp::WithSimd for Conv2dBackwardInput<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            dy,
            w,
            w_shape,
            x_shape,
            out_shape,
            p,
            winograd,
            dx,
        } = self;
        let [batch, c, h, wd] = x_shape;
        let [oc, cg, kh, kw] = w_shape;
        let [_, _, oh, ow] = out_shape;
        let groups = p.groups;
        let ocg = oc / groups;
        let taps = cg * kh * kw;
        let pixels = oh * ow;
        if batch == 0 || ocg == 0 || taps == 0 || pixels == 0 {
            zero(simd, dx);
            return;
        }
        if let Some(turned) = winograd {
            // The full correlation of `dY` with the turned weights: padding `2 - p`.
            let padding = (2 - p.padding.0, 2 - p.padding.1);
            let act = Activation::None;
            return winograd::forward(simd, dy, out_shape, padding, turned, x_shape, act, dx);
        }
        let (mr, nr) = (tile_dims::<S>().0, nr::<S>());
        // Each group's `W` as the GEMM's `B`, `[ocg, taps]` with the taps in `(ky, kx, ci)`
        // order (a tap's channels side by side, as the gather reads them), packed once.
        let group_b = packed_b_len(ocg, taps, nr);
        let mut wb = take_scratch(&WEIGHTS_T, groups * group_b);
        let mut reordered = vec![0.0; ocg * taps];
        for (g, dst) in wb.as_mut_slice()[..groups * group_b]
            .chunks_exact_mut(group_b)
            .enumerate()
        {
            let wg = &w[g * ocg * taps..][..ocg * taps];
            for (src, row) in wg.chunks_exact(taps).zip(reordered.chunks_exact_mut(taps)) {
                for (ci, taps_ci) in src.chunks_exact(kh * kw).enumerate() {
                    for (t, &v) in taps_ci.iter().enumerate() {
                        row[t * cg + ci] = v;
                    }
                }
            }
            pack_b_rows(simd, &reordered, taps, ocg, 0..taps, nr, dst);
        }
        // Where image `img`'s group `g` starts in `dy` and in `dx`.
        let dy_at = |img: usize, g: usize| (img * oc + g * ocg) * pixels;
        let dx_at = |img: usize, g: usize| (img * c + g * cg) * h * wd;
        if cg % nr == 0 {
            // Every panel of `W` holds channels of one tap: the product adds its tiles
            // into the images itself ([`Gemm::scatter`]).
            let (sh, sw) = p.stride;
            let (ph, pw) = p.padding;
            let (dh, dw) = p.dilation;
            // One image's gradient, channels last, with the padding around it (every tap
            // of every patch lands inside).
            let wp = wd + 2 * pw;
            let plane = (h + 2 * ph) * wp * cg;
            // Images per product: their `dYᵀ` and gradients within `BLOCK_BYTES`, so that
            // a batch's row tail is one short tile per few images rather than per image.
            let imgs = (BLOCK_BYTES / 4 / (pixels * ocg + plane)).clamp(1, batch);
            // Per output pixel (of each image of a product), where its patch starts; per
            // tap and channel, where it sits from there. A panel's columns (`nr` channels
            // of one tap) are consecutive, and one tap's pixels are `cg ≥ nr` apart.
            let rows: Vec<usize> = (0..imgs * pixels)
                .map(|r| {
                    let (i, o) = (r / pixels, r % pixels);
                    i * plane + ((o / ow) * sh * wp + (o % ow) * sw) * cg
                })
                .collect();
            let cols: Vec<usize> = (0..taps)
                .map(|j| {
                    let t = j / cg;
                    ((t / kw) * dh * wp + (t % kw) * dw) * cg + j % cg
                })
                .collect();
            let mut a = take_scratch(&PACKED, (imgs * pixels).div_ceil(mr) * mr * ocg);
            let mut hwc = take_scratch(&CHANNELS_LAST, imgs * plane);
            for g in 0..groups {
                for i0 in (0..batch).step_by(imgs) {
                    let n_img = imgs.min(batch - i0);
                    let m = n_img * pixels;
                    // `dYᵀ` of these images' pixels, `[m, ocg]` in blocks of `mr` rows.
                    let a = &mut a.as_mut_slice()[..m.div_ceil(mr) * mr * ocg];
                    let parts = (pixels, oc * pixels);
                    pack_transposed(simd, &dy[dy_at(i0, g)..], pixels, parts, m, ocg, mr, a);
                    let hwc = &mut hwc.as_mut_slice()[..n_img * plane];
                    zero(simd, hwc);
                    // The next product's `dY` and this one's `dX`, which the transposes
                    // below write: asked for while the tiles run.
                    let i1 = i0 + n_img;
                    let next_dy = match imgs.min(batch - i1) {
                        0 => &[][..],
                        n => &dy[dy_at(i1, g)..dy_at(i1 + n - 1, g) + ocg * pixels],
                    };
                    let this_dx = &dx[dx_at(i0, g)..dx_at(i1 - 1, g) + cg * h * wd];
                    let wg = &wb.as_slice()[g * group_b..(g + 1) * group_b];
                    Gemm {
                        ldc: 0,
                        accumulate: true,
                        ahead: Ahead::of(&[next_dy, this_dx]),
                        scatter: Some(OffsetTables {
                            rows: &rows[..m],
                            cols: &cols,
                        }),
                        ..input_gradient(m, taps, ocg, mr, a, wg)
                    }
                    .run(simd, hwc);
                    for (i, src) in hwc.chunks_exact(plane).enumerate() {
                        let dxg = &mut dx[dx_at(i0 + i, g)..][..cg * h * wd];
                        if ph == 0 && pw == 0 {
                            transpose(simd, src, h * wd, cg, dxg, h * wd);
                        } else {
                            for y in 0..h {
                                let row = &src[((y + ph) * wp + pw) * cg..][..wd * cg];
                                transpose(simd, row, wd, cg, &mut dxg[y * wd..], h * wd);
                            }
                        }
                    }
                }
            }
            WEIGHTS_T.set(Some(wb));
            PACKED.set(Some(a));
            CHANNELS_LAST.set(Some(hwc));
            return;
        }
        // Blocks of whole output rows whose gradients fit in `BLOCK_BYTES`.
        let block_rows = (BLOCK_BYTES / 4 / taps / ow).clamp(1, oh);
        let block = block_rows * ow;
        let plans: Vec<Gather> = (0..oh)
            .step_by(block_rows)
            .map(|oy0| Gather::new(x_shape, w_shape, ow, &p, oy0..(oy0 + block_rows).min(oh)))
            .collect();
        let mut a = take_scratch(&PACKED, block.div_ceil(mr) * mr * ocg);
        let mut grad = take_scratch(&PATCHES, block * taps);
        let mut hwc = take_scratch(&CHANNELS_LAST, h * wd * cg);
        for img in 0..batch {
            for g in 0..groups {
                let dyg = &dy[dy_at(img, g)..][..ocg * pixels];
                let hwc = &mut hwc.as_mut_slice()[..h * wd * cg];
                zero(simd, hwc);
                // The next image's (or group's) `dY`, and this one's `dX`, which the
                // transpose below writes: asked for while the last block's tiles run.
                let (ni, ng) = if g + 1 < groups {
                    (img, g + 1)
                } else {
                    (img + 1, 0)
                };
                let next_dy = if ni < batch {
                    &dy[dy_at(ni, ng)..][..ocg * pixels]
                } else {
                    &[]
                };
                for (j0, plan) in (0..pixels).step_by(block).zip(&plans) {
                    let len = block.min(pixels - j0);
                    let ahead = if j0 + len == pixels {
                        Ahead::of(&[next_dy, &dx[dx_at(img, g)..][..cg * h * wd]])
                    } else {
                        Ahead::NONE
                    };
                    // `dYᵀ` of these pixels, `[len, ocg]` in blocks of `mr` interleaved rows.
                    let a = &mut a.as_mut_slice()[..len.div_ceil(mr) * mr * ocg];
                    pack_transposed(simd, &dyg[j0..], pixels, (len, 0), len, ocg, mr, a);
                    let grad = &mut grad.as_mut_slice()[..len * taps];
                    let wg = &wb.as_slice()[g * group_b..(g + 1) * group_b];
                    Gemm {
                        ahead,
                        ..input_gradient(len, taps, ocg, mr, a, wg)
                    }
                    .run(simd, grad);
                    plan.add(simd, grad, cg, hwc);
                }
                let dxg = &mut dx[dx_at(img, g)..][..cg * h * wd];
                transpose(simd, hwc, h * wd, cg, dxg, h * wd);
            }
        }
        WEIGHTS_T.set(Some(wb));
        PACKED.set(Some(a));
        PATCHES.set(Some(grad));
        CHANNELS_LAST.set(Some(hwc));
    }
}

/// The input gradient's product for `m` output pixels, `grad[m, taps] = dYᵀ · W`: `a` is
/// their `dYᵀ` as [`pack_transposed`] packs it (`mr` rows interleaved, `ocg` columns), `b`
/// one group's `W` packed for `taps` columns. `C` is row-major (`ldc = taps`), stored
/// without accumulating and with nothing asked for ahead, which callers override.
fn input_gradient<'a>(
    m: usize,
    taps: usize,
    ocg: usize,
    mr: usize,
    a: &'a [f32],
    b: &'a [f32],
) -> Gemm<'a, f32> {
    Gemm {
        m,
        n: taps,
        k: ocg,
        a: AView {
            data: a,
            rs: 1,
            cs: mr,
            gather: None,
        },
        b,
        bias: Bias::None,
        act: Activation::None,
        ldc: taps,
        accumulate: false,
        b_window: None,
        ahead: Ahead::NONE,
        scatter: None,
    }
}

/// Which patch gradients each input pixel sums, for one block of output rows: per input
/// pixel that any of the block's patches covers, `(its index in the plane, the range of its
/// sources in sources)`; per source, the offset in the block's gradients `[pixels, taps]`
/// (taps in `(ky, kx, ci)` order) of that tap's channel 0.
struct Gather {
    pixels: Vec<(usize, usize, usize)>,
    sources: Vec<usize>,
}

impl Gather {
    /// The plan for output rows `rows` of a convolution of `x_shape` by `w_shape` with
    /// `ow` output columns.
    fn new(
        x_shape: [usize; 4],
        w_shape: [usize; 4],
        ow: usize,
        p: &Conv2dParams,
        rows: core::ops::Range<usize>,
    ) -> Self {
        let [_, _, h, w] = x_shape;
        let [_, cg, kh, kw] = w_shape;
        let taps = cg * kh * kw;
        let (sh, sw) = p.stride;
        let (ph, pw) = p.padding;
        let (dh, dw) = p.dilation;
        // The output position `o` (if any) whose tap `k` reads input position `i`:
        // `o·stride + k·dilation = i + pad`.
        let at = |i: usize, pad: usize, k: usize, d: usize, s: usize| {
            let t = (i + pad).checked_sub(k * d)?;
            (t % s == 0).then_some(t / s)
        };
        let mut plan = Gather {
            pixels: Vec::new(),
            sources: Vec::new(),
        };
        for y in 0..h {
            for x in 0..w {
                let first = plan.sources.len();
                for ky in 0..kh {
                    let Some(oy) = at(y, ph, ky, dh, sh).filter(|oy| rows.contains(oy)) else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(ox) = at(x, pw, kx, dw, sw).filter(|&ox| ox < ow) else {
                            continue;
                        };
                        let pixel = (oy - rows.start) * ow + ox;
                        plan.sources.push(pixel * taps + (ky * kw + kx) * cg);
                    }
                }
                if plan.sources.len() > first {
                    plan.pixels.push((y * w + x, first, plan.sources.len()));
                }
            }
        }
        plan
    }

    /// Adds each input pixel's patch gradients from `grad` (this block's, `[pixels, taps]`)
    /// into its `cg` channels in `hwc` (`[h·w, cg]`, channels last): contiguous vector loads,
    /// up to four vectors of channels at a time.
    #[inline(always)]
    fn add<S: Simd>(&self, simd: S, grad: &[f32], cg: usize, hwc: &mut [f32]) {
        let lanes = S::F32_LANES;
        for &(at, a, b) in &self.pixels {
            let sources = &self.sources[a..b];
            let dst = &mut hwc[at * cg..][..cg];
            let mut c0 = 0;
            while cg - c0 >= 4 * lanes {
                add_channels::<S, 4>(simd, grad, sources, c0, dst);
                c0 += 4 * lanes;
            }
            if cg - c0 >= 2 * lanes {
                add_channels::<S, 2>(simd, grad, sources, c0, dst);
                c0 += 2 * lanes;
            }
            if cg - c0 >= lanes {
                add_channels::<S, 1>(simd, grad, sources, c0, dst);
                c0 += lanes;
            }
            if c0 < cg {
                let mut acc = partial_load(simd, &dst[c0..]);
                for &s in sources {
                    acc = simd.add_f32s(acc, partial_load(simd, &grad[s + c0..s + cg]));
                }
                partial_store(simd, &mut dst[c0..], acc);
            }
        }
    }
}

/// `dst[c0 .. c0 + N·lanes] += Σ grad[s + c0 ..][..N·lanes]` over `s` in `sources`: `N`
/// vectors of channels, each summed in two chains (even and odd sources), so that even one
/// vector (32 channels at AVX-512) is not a single chain of up to `kh·kw` dependent adds.
#[inline(always)]
fn add_channels<S: Simd, const N: usize>(
    simd: S,
    grad: &[f32],
    sources: &[usize],
    c0: usize,
    dst: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let dst = &mut dst[c0..][..N * lanes];
    let mut even = [simd.splat_f32s(0.0); N];
    for (v, e) in even.iter_mut().enumerate() {
        *e = load(simd, &dst[v * lanes..]);
    }
    let mut odd = [simd.splat_f32s(0.0); N];
    let mut pairs = sources.chunks_exact(2);
    for pair in &mut pairs {
        add_vectors(simd, &mut even, &grad[pair[0] + c0..]);
        add_vectors(simd, &mut odd, &grad[pair[1] + c0..]);
    }
    if let [s] = pairs.remainder() {
        add_vectors(simd, &mut even, &grad[s + c0..]);
    }
    for (v, (e, o)) in even.into_iter().zip(odd).enumerate() {
        store(simd, &mut dst[v * lanes..], simd.add_f32s(e, o));
    }
}

/// `acc[v] += src[v·lanes ..][..lanes]` for each of the `N` vectors (a function, not a
/// closure: a closure does not take the level's target features).
#[inline(always)]
fn add_vectors<S: Simd, const N: usize>(simd: S, acc: &mut [S::f32s; N], src: &[f32]) {
    let lanes = S::F32_LANES;
    let src = &src[..N * lanes];
    for (v, acc) in acc.iter_mut().enumerate() {
        *acc = simd.add_f32s(*acc, load(simd, &src[v * lanes..]));
    }
}

/// The [`pulp::WithSimd`] op behind
/// [`Kernels::conv2d_backward_weights`](crate::Kernels::conv2d_backward_weights); shapes are
/// validated by the caller and `out_shape` is the convolution's output shape (`dy`'s).
pub(crate) struct Conv2dBackwardWeights<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) x_shape: [usize; 4],
    pub(crate) dy: &'a [f32],
    pub(crate) w_shape: [usize; 4],
    pub(crate) out_shape: [usize; 4],
    pub(crate) p: Conv2dParams,
    pub(crate) dw: &'a mut [f32],
    pub(crate) db: Option<&'a mut [f32]>,
}

impl pulp::WithSimd for Conv2dBackwardWeights<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            x_shape,
            dy,
            w_shape,
            out_shape,
            p,
            dw,
            db,
        } = self;
        let [batch, c, h, wd] = x_shape;
        let [oc, cg, kh, kw] = w_shape;
        let [_, _, oh, ow] = out_shape;
        let groups = p.groups;
        let ocg = oc / groups;
        let taps = cg * kh * kw;
        let pixels = oh * ow;
        // db[o] = Σ dY[·, o, ·], image by image: in the loop below, where each image's `dY`
        // is read anyway (a pass of its own read all of `dY` from memory once more).
        let mut db = db;
        if let Some(db) = db.as_deref_mut() {
            zero(simd, db);
        }
        if batch == 0 || ocg == 0 || taps == 0 || pixels == 0 {
            // No output channels means no `dY` and no `db`: nothing to sum.
            if oc * pixels > 0 {
                for img in dy.chunks_exact(oc * pixels) {
                    add_db(simd, img, pixels, db.as_deref_mut());
                }
            }
            zero(simd, dw);
            return;
        }
        if winograd(w_shape, &p) && tiles_cover(oh, ow) {
            for img in dy.chunks_exact(oc * pixels) {
                add_db(simd, img, pixels, db.as_deref_mut());
            }
            winograd::weight_gradient(simd, x, x_shape, p.padding, dy, out_shape, dw);
            return;
        }
        let nr = nr::<S>();
        let block = block_pixels(taps, pixels, nr);
        // dWᵀ of each group, [taps, ocg].
        let group_c = taps * ocg;
        let mut acc = take_scratch(&WEIGHTS_T, groups * group_c);
        let mut packed = take_scratch(&PACKED, packed_b_len(block, ocg, nr));
        // One vector of slack: the last patch row may be stored as a whole vector.
        let mut cols = take_scratch(&PATCHES, taps * block + 16);
        let geometry = geometry(x_shape, w_shape, ow, &p);
        // Without padding (and beyond the dot-product case), the patches are read from the
        // image in place (a gathered `A`: rows per tap, columns per pixel), not written.
        let gather = (taps > DOT_TAPS && in_place(&p))
            .then(|| gather_tables([h, wd], w_shape, pixels, ow, &p));
        // Where image `img`'s group `g` starts in `x` and in `dy`.
        let x_at = |img: usize, g: usize| (img * c + g * cg) * h * wd;
        let dy_at = |img: usize, g: usize| (img * oc + g * ocg) * pixels;
        // The dot products sum `dY`'s rows into `db` as they go, where the registers allow.
        let dots_sum = taps <= DOT_TAPS && S::REGISTER_COUNT >= 32;
        for img in 0..batch {
            for g in 0..groups {
                let xg = &x[x_at(img, g)..][..cg * h * wd];
                let dyg = &dy[dy_at(img, g)..][..ocg * pixels];
                // The group's bias gradient, if any.
                let mut dbg = db.as_deref_mut().map(|d| &mut d[g * ocg..][..ocg]);
                if !dots_sum {
                    add_db(simd, dyg, pixels, dbg.as_deref_mut());
                }
                let acc = &mut acc.as_mut_slice()[g * group_c..(g + 1) * group_c];
                // The next image's (or group's) `x` and `dY`: asked for while the last
                // block's tiles run.
                let (ni, ng) = if g + 1 < groups {
                    (img, g + 1)
                } else {
                    (img + 1, 0)
                };
                let next = if ni < batch {
                    [
                        &x[x_at(ni, ng)..][..cg * h * wd],
                        &dy[dy_at(ni, ng)..][..ocg * pixels],
                    ]
                } else {
                    [&[][..]; 2]
                };
                for j0 in (0..pixels).step_by(block) {
                    let len = block.min(pixels - j0);
                    let a_view = match &gather {
                        Some((starts, offsets)) => AView {
                            data: xg,
                            rs: 0,
                            cs: 0,
                            gather: Some(OffsetTables {
                                rows: offsets,
                                cols: &starts[j0..j0 + len],
                            }),
                        },
                        None => {
                            let a = &mut cols.as_mut_slice()[..taps * len + 16];
                            geometry.pack(simd, xg, j0..j0 + len, len, a);
                            AView {
                                data: &cols.as_slice()[..taps * len],
                                rs: len,
                                cs: 1,
                                gather: None,
                            }
                        }
                    };
                    if taps <= DOT_TAPS {
                        let a = a_view.data;
                        let first = img == 0 && j0 == 0;
                        if first {
                            zero(simd, acc);
                        }
                        let sums = if dots_sum { dbg.as_deref_mut() } else { None };
                        let dots = Dots {
                            dy: &dyg[j0..],
                            ldd: pixels,
                            ocg,
                            cols: a,
                            ldc_cols: len,
                            taps,
                            len,
                        };
                        dots.add_into(simd, acc, sums);
                        continue;
                    }
                    let b = &mut packed.as_mut_slice()[..packed_b_len(len, ocg, nr)];
                    pack_b(simd, &dyg[j0..], pixels, len, 0..ocg, nr, b, |v| v);
                    Gemm {
                        m: taps,
                        n: ocg,
                        k: len,
                        a: a_view,
                        b,
                        bias: Bias::None,
                        act: Activation::None,
                        ldc: ocg,
                        accumulate: img > 0 || j0 > 0,
                        b_window: None,
                        ahead: if j0 + len == pixels {
                            Ahead::of(&next)
                        } else {
                            Ahead::NONE
                        },
                        scatter: None,
                    }
                    .run(simd, acc);
                }
            }
        }
        // dW[g·ocg + o, t] = dWᵀ_g[t, o].
        for (acc, dwg) in acc.as_slice()[..groups * group_c]
            .chunks_exact(group_c)
            .zip(dw.chunks_exact_mut(group_c))
        {
            transpose(simd, acc, taps, ocg, dwg, taps);
        }
        WEIGHTS_T.set(Some(acc));
        PACKED.set(Some(packed));
        PATCHES.set(Some(cols));
    }
}

/// `db[o] += Σ dyg[o·pixels ..][..pixels]` for each of `db`'s channels, if there is a `db`
/// (a function, not a closure: a closure does not take the level's target features).
#[inline(always)]
fn add_db<S: Simd>(simd: S, dyg: &[f32], pixels: usize, db: Option<&mut [f32]>) {
    if let Some(db) = db {
        for (plane, d) in dyg.chunks_exact(pixels).zip(db) {
            *d += crate::elementwise::sum(simd, plane);
        }
    }
}

/// At most this many taps (`cg·kh·kw`: a first layer on 1 to 3 channels), the weight
/// gradient is taken as dot products of `dY` rows with patch rows ([`Dots`]) rather
/// than a GEMM: with so few GEMM rows, packing `dY` cost several times the products (the
/// seed CNN's conv1, 9 taps, ran at an eighth of peak).
const DOT_TAPS: usize = 16;

/// The weight gradient's dot products for few taps ([`DOT_TAPS`]): `c[t·ocg + o] += Σ_p
/// dy[o·ldd + p] · cols[t·ldc_cols + p]` over `p < len`, for `o < ocg`, `t < taps`, and
/// optionally `sums[o] += Σ_p dy[o·ldd + p]` (the bias gradient). Both operands are read along
/// their rows in place, in 4 × 3 register tiles of vector accumulators (12 accumulators, 3
/// patch vectors and one `dY` vector: 16 registers, so AVX2 spills nothing), one horizontal
/// sum per product and call. The tiles of the first taps also add up the `dY` vectors they
/// load into 4 more accumulators for `sums` (on levels with 32 registers): the bias gradient
/// without a pass of its own over `dY`, which had cost a third of the seed CNN's conv1
/// weight gradient.
struct Dots<'a> {
    dy: &'a [f32],
    ldd: usize,
    ocg: usize,
    cols: &'a [f32],
    ldc_cols: usize,
    taps: usize,
    len: usize,
}

impl Dots<'_> {
    /// Adds the products into `c` and, with `sums`, the row sums of `dY` into it.
    #[inline(always)]
    fn add_into<S: Simd>(&self, simd: S, c: &mut [f32], mut sums: Option<&mut [f32]>) {
        let (ocg, taps) = (self.ocg, self.taps);
        let mut o = 0;
        while o < ocg {
            let mut t = 0;
            while t < taps {
                let sums = if t == 0 { sums.as_deref_mut() } else { None };
                match (ocg - o >= 4, taps - t >= 3) {
                    (true, true) => self.tile_or_sum::<S, 4, 3>(simd, o, t, c, sums),
                    (true, false) => self.tile_or_sum::<S, 4, 1>(simd, o, t, c, sums),
                    (false, true) => self.tile_or_sum::<S, 1, 3>(simd, o, t, c, sums),
                    (false, false) => self.tile_or_sum::<S, 1, 1>(simd, o, t, c, sums),
                }
                t += if taps - t >= 3 { 3 } else { 1 };
            }
            o += if ocg - o >= 4 { 4 } else { 1 };
        }
    }

    /// [`Dots::tile`], summing `dY`'s rows into `sums` if given.
    #[inline(always)]
    fn tile_or_sum<S: Simd, const O: usize, const T: usize>(
        &self,
        simd: S,
        o: usize,
        t: usize,
        c: &mut [f32],
        sums: Option<&mut [f32]>,
    ) {
        match sums {
            Some(s) => self.tile::<S, O, T, true>(simd, o, t, c, s),
            None => self.tile::<S, O, T, false>(simd, o, t, c, &mut []),
        }
    }

    /// One `O × T` tile: rows `o..o + O` of `dY`, patch rows `t..t + T`; with `SUM`, also
    /// `sums[o + i] += Σ dY row o + i`.
    #[inline(always)]
    fn tile<S: Simd, const O: usize, const T: usize, const SUM: bool>(
        &self,
        simd: S,
        o: usize,
        t: usize,
        c: &mut [f32],
        sums: &mut [f32],
    ) {
        let Dots {
            dy,
            ldd,
            ocg,
            cols,
            ldc_cols,
            len,
            ..
        } = *self;
        let lanes = S::F32_LANES;
        let zero_v = simd.splat_f32s(0.0);
        let d: [&[f32]; O] = core::array::from_fn(|i| &dy[(o + i) * ldd..][..len]);
        let p: [&[f32]; T] = core::array::from_fn(|j| &cols[(t + j) * ldc_cols..][..len]);
        let mut acc = [[zero_v; T]; O];
        let mut row_sums = [zero_v; O];
        let full = len / lanes * lanes;
        let mut k = 0;
        while k < full {
            let mut pv = [zero_v; T];
            for (pv, p) in pv.iter_mut().zip(&p) {
                *pv = load(simd, &p[k..k + lanes]);
            }
            for ((a, row), rs) in acc.iter_mut().zip(&d).zip(&mut row_sums) {
                let dv = load(simd, &row[k..k + lanes]);
                for (a, &pv) in a.iter_mut().zip(&pv) {
                    *a = simd.mul_add_e_f32s(dv, pv, *a);
                }
                if SUM {
                    *rs = simd.add_f32s(*rs, dv);
                }
            }
            k += lanes;
        }
        if full < len {
            let mut pv = [zero_v; T];
            for (pv, p) in pv.iter_mut().zip(&p) {
                *pv = partial_load(simd, &p[full..]);
            }
            for ((a, row), rs) in acc.iter_mut().zip(&d).zip(&mut row_sums) {
                let dv = partial_load(simd, &row[full..]);
                for (a, &pv) in a.iter_mut().zip(&pv) {
                    *a = simd.mul_add_e_f32s(dv, pv, *a);
                }
                if SUM {
                    *rs = simd.add_f32s(*rs, dv);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (j, &a) in a.iter().enumerate() {
                c[(t + j) * ocg + o + i] += simd.reduce_sum_f32s(a);
            }
        }
        if SUM {
            for (i, &rs) in row_sums.iter().enumerate() {
                sums[o + i] += simd.reduce_sum_f32s(rs);
            }
        }
    }
}

std::thread_local! {
    /// This thread's packed weights, taps reordered (input gradient: the GEMM's `B`), or
    /// weight-gradient accumulators.
    static WEIGHTS_T: Scratch = const { Scratch::new(None) };
    /// This thread's packed block of `dY`: `dYᵀ` interleaved (input gradient: the GEMM's `A`)
    /// or `dY` in panels (weight gradient: the GEMM's `B`).
    static PACKED: Scratch = const { Scratch::new(None) };
    /// This thread's block of patches (weight gradient) or patch gradients (input gradient).
    static PATCHES: Scratch = const { Scratch::new(None) };
    /// This thread's input gradient of one image and group, channels last (input gradient).
    static CHANNELS_LAST: Scratch = const { Scratch::new(None) };
}
