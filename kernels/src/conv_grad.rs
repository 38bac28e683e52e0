//! Conv2d backward (PyTorch semantics: stride, padding, dilation, groups) as GEMMs on im2col
//! patches, per image and group, on the GEMM core of [`gemm`](crate::gemm):
//!
//! - input gradient ([`Conv2dBackwardInput`]): `cols_grad[taps, pixels] = Wᵀ[taps, ocg] ·
//!   dY[ocg, pixels]` — `Wᵀ` copied once per call into `MR`-interleaved blocks (the GEMM's
//!   `A`), `dY` packed as `B` from its rows ([`pack_b_rows`]) — then a col2im scatter-add of
//!   `cols_grad` into `dX` ([`Im2col::col2im`]: vector adds along output rows at stride 1).
//! - weight gradient ([`Conv2dBackwardWeights`]): `dWᵀ[taps, ocg] += cols[taps, pixels] ·
//!   dY[ocg, pixels]ᵀ` — the patches written row-major by the forward's im2col
//!   ([`Im2col::pack`] with one panel as wide as the block) are the GEMM's `A`, read in place,
//!   and `dY` is packed as `B` from its rows ([`pack_b`]) — accumulated over the batch in
//!   accumulate mode, then transposed into `dW`. This orientation puts the taps
//!   (`cg·kh·kw`, a multiple of the register tile's rows for 3 × 3 kernels on 4k channels)
//!   on the GEMM's rows and the output channels on its columns.
//!
//! Pixels are taken in blocks whose patches (or patch gradients) fit in about half of L2. Both
//! ops run on the calling thread: a trainer runs them per sub-batch on its own threads.

use pulp::Simd;

use crate::activation::Activation;
use crate::conv::{Im2col, Run, pixel_runs, valid_range};
use crate::elem::{Scratch, take_scratch};
use crate::gemm::{AView, Bias, Gemm, nr, pack_b, pack_b_rows, packed_b_len, tile_dims};
use crate::matmul::pack_transposed;
use crate::shape::Conv2dParams;
use crate::vmem::{lane_bits, load, load_masked_within, partial_load, store, zero};

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

/// The loads of [`Im2col::col2im`] for one block of pixels: per vector of a row of one input
/// channel, `(its offset in the channel, its width, the range of its loads in loads)`; per
/// load, `(offset in grad for channel 0, lanes)`. Kept between blocks (no allocation per
/// block once grown).
#[derive(Default)]
pub(crate) struct Col2imPlan {
    vectors: Vec<(usize, usize, usize, usize)>,
    loads: Vec<(isize, u32)>,
}

impl Im2col {
    /// The transpose of [`Im2col::pack`] with one panel: adds the patch gradients `grad`
    /// (row-major `[taps, pixels.len()]`) of output pixels `pixels` into `dxg` (one group of
    /// one image, `[cg, h, w]`); taps that fall on the padding are dropped.
    ///
    /// At stride 1, vector by vector of each row of `dxg`: the vector is loaded once, gets
    /// one load of gradient per tap `(ky, kx)` whose output row is in the block, lanes outside
    /// that row's pixels zero ([`load_masked_within`]), and is stored once, so no load waits
    /// on the store of an overlapping window. Which loads a vector takes does not depend on
    /// the input channel: they are worked out once per block (`plan`). Other strides add
    /// element by element, run by run.
    #[inline(always)]
    pub(crate) fn col2im<S: Simd>(
        &self,
        simd: S,
        grad: &[f32],
        pixels: core::ops::Range<usize>,
        plan: &mut Col2imPlan,
        dxg: &mut [f32],
    ) {
        let len = pixels.len();
        if len == 0 {
            return;
        }
        if self.stride.1 != 1 {
            self.col2im_strided(grad, pixels, dxg);
            return;
        }
        let lanes = S::F32_LANES;
        let (sh, ph) = (self.stride.0, self.padding.0);
        let (dh, dw) = self.dilation;
        let pw = self.padding.1 as isize;
        let (w, ow) = (self.w, self.ow);
        let (oy0, oy1) = (pixels.start / ow, (pixels.end - 1) / ow);
        plan.vectors.clear();
        plan.loads.clear();
        for y in 0..self.h {
            for c0 in (0..w).step_by(lanes) {
                let width = lanes.min(w - c0);
                let first_load = plan.loads.len();
                // Every kernel row `ky` whose output row `oy` (`oy·sh + ky·dh = y + ph`) has
                // pixels in the block.
                for ky in 0..self.kh {
                    let Some(t) = (y + ph).checked_sub(ky * dh) else {
                        continue;
                    };
                    let oy = t / sh;
                    if t % sh != 0 || !(oy0..=oy1).contains(&oy) {
                        continue;
                    }
                    // This output row's pixels in the block: `ox` in `ox_lo..ox_hi`.
                    let row = oy * ow;
                    let ox_lo = pixels.start.max(row) - row;
                    let ox_hi = pixels.end.min(row + ow) - row;
                    let row0 = (ky * self.kw * len + row) as isize - pixels.start as isize;
                    for kx in 0..self.kw {
                        // Lane `l` is input column `c0 + l = ox + kx·dw - pw`: the lanes whose
                        // `ox` lies in `ox_lo..ox_hi` read `grad[row0 + kx·len + ox]`.
                        let shift = (kx * dw) as isize - pw - c0 as isize;
                        let lo = (ox_lo as isize + shift).clamp(0, width as isize);
                        let hi = (ox_hi as isize + shift).clamp(lo, width as isize);
                        if lo < hi {
                            let at = row0 + (kx * len) as isize - shift;
                            plan.loads.push((at, lane_bits(lo as usize, hi as usize)));
                        }
                    }
                }
                plan.vectors
                    .push((y * w + c0, width, first_load, plan.loads.len()));
            }
        }
        let plane = self.h * w;
        // Channel `ci`'s taps start `ci·kh·kw` rows of `grad` further.
        let channel = (self.kh * self.kw * len) as isize;
        let g = grad.as_ptr();
        let zero = simd.splat_f32s(0.0);
        for ci in 0..self.cg {
            let xc = &mut dxg[ci * plane..(ci + 1) * plane];
            let base = ci as isize * channel;
            // SAFETY (both loads): lane `l` under `bits` reads `grad[base + at + l]`, the
            // gradient of tap `(ci, ky, kx)` at a pixel of its output row in the block: inside
            // that tap's row of `grad`.
            let tap = |&(at, bits): &(isize, u32)| unsafe {
                load_masked_within(simd, g, grad.len(), base + at, bits)
            };
            for &(at, width, a, b) in &plan.vectors {
                let loads = &plan.loads[a..b];
                // Two partial sums (short dependency chains), in registers.
                let (mut p0, mut p1) = (zero, zero);
                let mut pairs = loads.chunks_exact(2);
                for pair in &mut pairs {
                    p0 = simd.add_f32s(p0, tap(&pair[0]));
                    p1 = simd.add_f32s(p1, tap(&pair[1]));
                }
                for l in pairs.remainder() {
                    p0 = simd.add_f32s(p0, tap(l));
                }
                let row = &mut xc[at..at + width];
                let acc = simd.add_f32s(load(simd, row), simd.add_f32s(p0, p1));
                store(simd, row, acc);
            }
        }
    }

    /// [`Im2col::col2im`] for column strides above 1: element by element, run by run.
    fn col2im_strided(&self, grad: &[f32], pixels: core::ops::Range<usize>, dxg: &mut [f32]) {
        let len = pixels.len();
        let mut runs = Vec::new();
        pixel_runs(pixels.start, len, self.ow, &mut runs);
        let plane = self.h * self.w;
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        let (dh, dw) = self.dilation;
        let mut rows = grad.chunks_exact(len);
        for ci in 0..self.cg {
            let xc = &mut dxg[ci * plane..(ci + 1) * plane];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let Some(row) = rows.next() else { return };
                    let xs = valid_range(self.w, self.ow, sw, kx * dw, pw);
                    for run in &runs {
                        let Run { jj, oy, ox, len } = *run;
                        let y = (oy * sh + ky * dh).wrapping_sub(ph);
                        let lo = xs.start.clamp(ox, ox + len);
                        let hi = xs.end.clamp(lo, ox + len);
                        if y >= self.h || hi <= lo {
                            continue;
                        }
                        let first = lo * sw + kx * dw - pw;
                        let xrow = &mut xc[y * self.w..(y + 1) * self.w];
                        let src = &row[jj + lo - ox..jj + hi - ox];
                        for (d, &s) in xrow[first..].iter_mut().step_by(sw).zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
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
        let (mr, nr) = (tile_dims::<S>().0, nr::<S>());
        // Wᵀ of each group, [taps, ocg] in blocks of `mr` interleaved taps.
        let group_a = taps.div_ceil(mr) * mr * ocg;
        let mut wt = take_scratch(&WEIGHTS_T, groups * group_a);
        for (g, dst) in wt.as_mut_slice()[..groups * group_a]
            .chunks_exact_mut(group_a)
            .enumerate()
        {
            pack_transposed(simd, &w[g * ocg * taps..][..ocg * taps], taps, ocg, mr, dst);
        }
        let block = block_pixels(taps, pixels, nr);
        let mut packed = take_scratch(&PACKED, packed_b_len(ocg, block, nr));
        let mut grad = take_scratch(&PATCHES, taps * block);
        let geometry = geometry(x_shape, w_shape, ow, &p);
        let mut plan = Col2imPlan::default();
        for img in 0..batch {
            for g in 0..groups {
                let dyg = &dy[(img * oc + g * ocg) * pixels..][..ocg * pixels];
                let dxg = &mut dx[(img * c + g * cg) * h * wd..][..cg * h * wd];
                // Zeroed here rather than all at once: the image's gradient stays in L1.
                zero(simd, dxg);
                for j0 in (0..pixels).step_by(block) {
                    let cols = j0..(j0 + block).min(pixels);
                    let len = cols.len();
                    let b = &mut packed.as_mut_slice()[..packed_b_len(ocg, len, nr)];
                    pack_b_rows(simd, dyg, pixels, ocg, cols.clone(), nr, b);
                    let grad = &mut grad.as_mut_slice()[..taps * len];
                    Gemm {
                        m: taps,
                        n: len,
                        k: ocg,
                        a: AView {
                            data: &wt.as_slice()[g * group_a..(g + 1) * group_a],
                            rs: 1,
                            cs: mr,
                        },
                        b,
                        bias: Bias::None,
                        act: Activation::None,
                        ldc: len,
                        accumulate: false,
                        b_window: None,
                    }
                    .run(simd, grad);
                    geometry.col2im(simd, grad, cols, &mut plan, dxg);
                }
            }
        }
        WEIGHTS_T.set(Some(wt));
        PACKED.set(Some(packed));
        PATCHES.set(Some(grad));
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
        if let Some(db) = db {
            zero(simd, db);
            if pixels > 0 {
                for img in dy.chunks_exact(oc * pixels) {
                    for (plane, d) in img.chunks_exact(pixels).zip(db.iter_mut()) {
                        *d += crate::elementwise::sum(simd, plane);
                    }
                }
            }
        }
        if batch == 0 || ocg == 0 || taps == 0 || pixels == 0 {
            zero(simd, dw);
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
        for img in 0..batch {
            for g in 0..groups {
                let xg = &x[(img * c + g * cg) * h * wd..][..cg * h * wd];
                let dyg = &dy[(img * oc + g * ocg) * pixels..][..ocg * pixels];
                let acc = &mut acc.as_mut_slice()[g * group_c..(g + 1) * group_c];
                for j0 in (0..pixels).step_by(block) {
                    let len = block.min(pixels - j0);
                    let a = &mut cols.as_mut_slice()[..taps * len + 16];
                    geometry.pack(simd, xg, j0..j0 + len, len, a);
                    let a = &a[..taps * len];
                    if taps <= DOT_TAPS {
                        let first = img == 0 && j0 == 0;
                        if first {
                            zero(simd, acc);
                        }
                        add_dots_nt(simd, &dyg[j0..], pixels, ocg, a, len, taps, len, acc);
                        continue;
                    }
                    let b = &mut packed.as_mut_slice()[..packed_b_len(len, ocg, nr)];
                    pack_b(simd, &dyg[j0..], pixels, len, 0..ocg, nr, b, |v| v);
                    Gemm {
                        m: taps,
                        n: ocg,
                        k: len,
                        a: AView {
                            data: a,
                            rs: len,
                            cs: 1,
                        },
                        b,
                        bias: Bias::None,
                        act: Activation::None,
                        ldc: ocg,
                        accumulate: img > 0 || j0 > 0,
                        b_window: None,
                    }
                    .run(simd, acc);
                }
            }
        }
        // dW[g·ocg + o, t] = dWᵀ_g[t, o].
        for (g, acc) in acc.as_slice()[..groups * group_c]
            .chunks_exact(group_c)
            .enumerate()
        {
            let dwg = &mut dw[g * group_c..(g + 1) * group_c];
            for (t, row) in acc.chunks_exact(ocg).enumerate() {
                for (o, &v) in row.iter().enumerate() {
                    dwg[o * taps + t] = v;
                }
            }
        }
        WEIGHTS_T.set(Some(acc));
        PACKED.set(Some(packed));
        PATCHES.set(Some(cols));
    }
}

/// At most this many taps (`cg·kh·kw`: a first layer on 1 to 3 channels), the weight
/// gradient is taken as dot products of `dY` rows with patch rows ([`add_dots_nt`]) rather
/// than a GEMM: with so few GEMM rows, packing `dY` cost several times the products (the
/// seed CNN's conv1, 9 taps, ran at an eighth of peak).
const DOT_TAPS: usize = 16;

/// `c[t·ocg + o] += Σ_p dy[o·ldd + p] · cols[t·ldc_cols + p]` over `p < len`, for `o < ocg`,
/// `t < taps`: both operands read along their rows in place, 4 × 3 register tiles of vector
/// accumulators (12 accumulators, 3 patch vectors and one `dY` vector: 16 registers, so
/// AVX2 spills nothing), one horizontal sum per product and call.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn add_dots_nt<S: Simd>(
    simd: S,
    dy: &[f32],
    ldd: usize,
    ocg: usize,
    cols: &[f32],
    ldc_cols: usize,
    taps: usize,
    len: usize,
    c: &mut [f32],
) {
    let mut o = 0;
    while o < ocg {
        let mut t = 0;
        while t < taps {
            match (ocg - o >= 4, taps - t >= 3) {
                (true, true) => {
                    dot_tile::<S, 4, 3>(simd, dy, ldd, o, cols, ldc_cols, t, len, ocg, c)
                }
                (true, false) => {
                    dot_tile::<S, 4, 1>(simd, dy, ldd, o, cols, ldc_cols, t, len, ocg, c)
                }
                (false, true) => {
                    dot_tile::<S, 1, 3>(simd, dy, ldd, o, cols, ldc_cols, t, len, ocg, c)
                }
                (false, false) => {
                    dot_tile::<S, 1, 1>(simd, dy, ldd, o, cols, ldc_cols, t, len, ocg, c)
                }
            }
            t += if taps - t >= 3 { 3 } else { 1 };
        }
        o += if ocg - o >= 4 { 4 } else { 1 };
    }
}

/// One `O × T` tile of [`add_dots_nt`]: rows `o..o + O` of `dY`, patch rows `t..t + T`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dot_tile<S: Simd, const O: usize, const T: usize>(
    simd: S,
    dy: &[f32],
    ldd: usize,
    o: usize,
    cols: &[f32],
    ldc_cols: usize,
    t: usize,
    len: usize,
    ocg: usize,
    c: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let d: [&[f32]; O] = core::array::from_fn(|i| &dy[(o + i) * ldd..][..len]);
    let p: [&[f32]; T] = core::array::from_fn(|j| &cols[(t + j) * ldc_cols..][..len]);
    let mut acc = [[simd.splat_f32s(0.0); T]; O];
    let full = len / lanes * lanes;
    let mut k = 0;
    while k < full {
        let mut pv = [simd.splat_f32s(0.0); T];
        for (pv, p) in pv.iter_mut().zip(&p) {
            *pv = load(simd, &p[k..k + lanes]);
        }
        for (a, row) in acc.iter_mut().zip(&d) {
            let dv = load(simd, &row[k..k + lanes]);
            for (a, &pv) in a.iter_mut().zip(&pv) {
                *a = simd.mul_add_e_f32s(dv, pv, *a);
            }
        }
        k += lanes;
    }
    if full < len {
        let mut pv = [simd.splat_f32s(0.0); T];
        for (pv, p) in pv.iter_mut().zip(&p) {
            *pv = partial_load(simd, &p[full..]);
        }
        for (a, row) in acc.iter_mut().zip(&d) {
            let dv = partial_load(simd, &row[full..]);
            for (a, &pv) in a.iter_mut().zip(&pv) {
                *a = simd.mul_add_e_f32s(dv, pv, *a);
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (j, &a) in a.iter().enumerate() {
            c[(t + j) * ocg + o + i] += simd.reduce_sum_f32s(a);
        }
    }
}

std::thread_local! {
    /// This thread's transposed weights (input gradient) or weight-gradient accumulators.
    static WEIGHTS_T: Scratch = const { Scratch::new(None) };
    /// This thread's packed block of `dY` (the GEMM's `B`).
    static PACKED: Scratch = const { Scratch::new(None) };
    /// This thread's block of patches (weight gradient) or patch gradients (input gradient).
    static PATCHES: Scratch = const { Scratch::new(None) };
}
