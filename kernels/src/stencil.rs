//! A direct convolution for layers with few taps per output (`c/groups · kh · kw` at most
//! [`STENCIL_TAPS`]), such as a network's first layer on a gray or RGB image: the seed
//! CNN's `conv1` (1 → 32 channels, 3 × 3, 9 taps).
//!
//! As a GEMM, such a layer has an inner dimension of 9 to 27: every tile of the product is
//! stored after a handful of multiply-adds, and its im2col patches (9 to 27 values per
//! output pixel, written then read back) cost as much as the products. Here each tile is
//! [`PIXEL_VECTORS`] vectors of consecutive output pixels of one row by a few output
//! channels: per tap, the tile loads its pixels' inputs once, straight from the image (the
//! windows of consecutive pixels are consecutive inputs), and multiplies them by one
//! broadcast weight per output channel into registers that hold the whole tile until the
//! bias, the activation and one store. A row's last vector is moved back to end with the
//! row, overlapping the one before, so that no load or store is masked (a 26-pixel row is
//! the vectors at 0 and 10 on AVX-512). The weights are packed in blocks of [`BLOCK`] output
//! channels, tap-major, so that a tile's weights for a tap are adjacent.
//!
//! Taken natively for one group, stride 1 and no padding, where at least [`BLOCK`] output
//! channels fill the blocks ([`stencil`]). Not in WebAssembly, where wasmtime's epoch check
//! on each loop back-edge keeps accumulators in stack slots (see the GEMM's `tile_wasm`),
//! so the kernels component keeps im2col and its tile shaped for that.

use pulp::Simd;

use crate::activation::{Activation, activate_tile};
use crate::conv::Conv2d;
use crate::shape::Conv2dParams;
use crate::vmem::{load, store};

/// Most taps per output (`c/groups · kh · kw`) for the stencil kernel: a 3-channel 3 × 3
/// convolution's 27. Beyond that the GEMM's tiles amortise their stores and the patches
/// over enough multiply-adds.
pub(crate) const STENCIL_TAPS: usize = 27;

/// Output channels per packed weight block; a level with 16 vector registers runs each
/// block as two halves.
pub(crate) const BLOCK: usize = 8;

/// Vectors of consecutive output pixels per tile (two cover a 26-pixel row at 16 lanes).
const PIXEL_VECTORS: usize = 2;

/// Whether a convolution with weights `w_shape` and geometry `p` runs as a stencil.
pub(crate) fn stencil(w_shape: [usize; 4], p: &Conv2dParams) -> bool {
    let [oc, cg, kh, kw] = w_shape;
    !cfg!(target_arch = "wasm32")
        && p.groups == 1
        && p.stride == (1, 1)
        && p.padding == (0, 0)
        && (BLOCK..=STENCIL_BLOCKS * BLOCK / 2).contains(&oc)
        && cg * kh * kw <= STENCIL_TAPS
}

/// Weights `[oc, c, kh, kw]` packed for [`forward`]: `ceil(oc / BLOCK)` blocks of
/// `taps × BLOCK` (`w[(block · taps + t) · BLOCK + j]` is output channel `block · BLOCK + j`'s
/// tap `t`; zeros past `oc`).
pub(crate) fn pack(w: &[f32], oc: usize, taps: usize) -> Vec<f32> {
    let mut packed = vec![0.0; oc.div_ceil(BLOCK) * taps * BLOCK];
    for (o, row) in w.chunks_exact(taps).take(oc).enumerate() {
        let (block, j) = (o / BLOCK, o % BLOCK);
        for (t, &v) in row.iter().enumerate() {
            packed[(block * taps + t) * BLOCK + j] = v;
        }
    }
    packed
}

/// `op`'s convolution with `weights` ([`pack`] of its weight shape) plus `bias`;
/// [`stencil`] holds and the lengths match.
#[inline(always)]
pub(crate) fn forward<S: Simd>(simd: S, op: Conv2d<'_>, weights: &[f32], bias: Option<&[f32]>) {
    if S::REGISTER_COUNT >= 32 {
        run::<S, BLOCK>(simd, op, weights, bias);
    } else {
        run::<S, { BLOCK / 2 }>(simd, op, weights, bias);
    }
}

/// [`forward`] with tiles of `R` output channels (`R` divides [`BLOCK`]).
#[inline(always)]
fn run<S: Simd, const R: usize>(simd: S, op: Conv2d<'_>, weights: &[f32], bias: Option<&[f32]>) {
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
    let taps = cg * kh * kw;
    let (dh, dw) = p.dilation;
    // Where each tap's input sits from its window's top-left corner.
    let mut offsets = [0usize; STENCIL_TAPS];
    for ci in 0..cg {
        for ky in 0..kh {
            for kx in 0..kw {
                offsets[(ci * kh + ky) * kw + kx] = ci * h * w + ky * dh * w + kx * dw;
            }
        }
    }
    let offsets = &offsets[..taps];
    // A row's vectors start every `lanes` pixels, the last one moved back to end with the
    // row (overlapping the one before: the pixels they share are computed twice, each
    // time the same), so every load and store is a whole vector. A row narrower than a
    // vector is one masked vector.
    let lanes = S::F32_LANES;
    let len = lanes.min(ow);
    let vectors = ow.div_ceil(lanes);
    let start = |i: usize| (i * lanes).min(ow - len);
    let plane = oh * ow;
    let mut bias_block = [[0.0f32; R]; STENCIL_BLOCKS];
    for (o, &b) in bias.unwrap_or(&[]).iter().enumerate().take(oc) {
        bias_block[o / R][o % R] = b;
    }
    for img in 0..batch {
        let xi = &x[img * c * h * w..][..c * h * w];
        let oi = &mut out[img * oc * plane..][..oc * plane];
        for o0 in (0..oc).step_by(R) {
            let (block, part) = (o0 / BLOCK, o0 % BLOCK);
            let wb = &weights[block * taps * BLOCK + part..];
            let rows = R.min(oc - o0);
            let out = &mut oi[o0 * plane..];
            let ch = Channels {
                x: xi,
                offsets,
                w: wb,
                b: bias_block[o0 / R],
                act,
                plane,
                rows,
            };
            for oy in 0..oh {
                let mut i = 0;
                while i + PIXEL_VECTORS <= vectors {
                    let s: [usize; PIXEL_VECTORS] = core::array::from_fn(|j| start(i + j));
                    let tile = Tile {
                        src: s.map(|s| oy * w + s),
                        dst: s.map(|s| oy * ow + s),
                        len,
                    };
                    tile.run::<S, R>(simd, &ch, out);
                    i += PIXEL_VECTORS;
                }
                if i < vectors {
                    let s = start(i);
                    let tile = Tile {
                        src: [oy * w + s],
                        dst: [oy * ow + s],
                        len,
                    };
                    tile.run::<S, R>(simd, &ch, out);
                }
            }
        }
    }
}

/// Blocks of output channels whose bias [`run`] keeps on the stack: 64 blocks of 4 cover
/// 256 channels.
const STENCIL_BLOCKS: usize = 64;

/// A block of `R` output channels of one image, what every [`Tile`] of it reads and where
/// it writes: output channels `0..rows` (of `R`, weights `w[t · BLOCK + r]`, bias `b`) from
/// image `x` (tap `t` at `offsets[t]` from a window's start), through `act`, into planes
/// `plane` values apart (plane `r` for channel `r`).
struct Channels<'a, const R: usize> {
    x: &'a [f32],
    offsets: &'a [usize],
    w: &'a [f32],
    b: [f32; R],
    act: Activation,
    plane: usize,
    rows: usize,
}

/// `P` vectors of output pixels of one row and one image: vector `p`'s window starts
/// (tap 0) at `src[p]` in the image, its pixels at `dst[p]` in an output plane; `len`
/// lanes each (a whole vector unless the row is narrower).
struct Tile<const P: usize> {
    src: [usize; P],
    dst: [usize; P],
    len: usize,
}

impl<const P: usize> Tile<P> {
    /// [`Tile::run_as`], with `FULL` when the tile's vectors are whole.
    #[inline(always)]
    fn run<S: Simd, const R: usize>(&self, simd: S, ch: &Channels<'_, R>, out: &mut [f32]) {
        if self.len == S::F32_LANES {
            self.run_as::<S, R, true>(simd, ch, out);
        } else {
            self.run_as::<S, R, false>(simd, ch, out);
        }
    }

    /// Computes the block's channels `ch` at the tile's pixels and writes them to `out`.
    /// `FULL`: the vectors are whole (`len` is the lane count), so every load and store is
    /// one unmasked instruction.
    // The loops index by counter so that, unrolled, every index is a constant and the
    // accumulators stay in registers (an epilogue iterating over them by a runtime index
    // spilled all of them to the stack).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn run_as<S: Simd, const R: usize, const FULL: bool>(
        &self,
        simd: S,
        ch: &Channels<'_, R>,
        out: &mut [f32],
    ) {
        let Channels {
            x,
            offsets,
            w,
            b,
            act,
            plane,
            rows,
        } = *ch;
        let reach = offsets.last().copied().unwrap_or(0) + self.len;
        // Every read below is inside `x`: the last tap's window of each vector.
        assert!(self.src.iter().all(|&s| s + reach <= x.len()));
        // Every write below is inside `out`: the last channel's plane at each vector.
        let last_row = rows.clamp(1, R) - 1;
        assert!(
            self.dst
                .iter()
                .all(|&d| last_row * plane + d + self.len <= out.len())
        );
        let w = &w[..offsets.len().saturating_sub(1) * BLOCK + R];
        let mut acc = [[simd.splat_f32s(0.0); P]; R];
        for r in 0..R {
            acc[r] = [simd.splat_f32s(b[r]); P];
        }
        for (t, &off) in offsets.iter().enumerate() {
            let mut v = [simd.splat_f32s(0.0); P];
            for p in 0..P {
                let at = self.src[p] + off;
                v[p] = if FULL {
                    // SAFETY: `at + lanes <= x.len()` (the assertion above).
                    unsafe { x.as_ptr().add(at).cast::<S::f32s>().read_unaligned() }
                } else {
                    load(simd, &x[at..at + self.len])
                };
            }
            let wt: &[f32; R] = w[t * BLOCK..][..R].try_into().unwrap_or(&[0.0; R]);
            for r in 0..R {
                let wv = simd.splat_f32s(wt[r]);
                for p in 0..P {
                    acc[r][p] = simd.mul_add_e_f32s(wv, v[p], acc[r][p]);
                }
            }
        }
        activate_tile(simd, act, &mut acc);
        for r in 0..R {
            if r < rows {
                for p in 0..P {
                    let at = r * plane + self.dst[p];
                    if FULL {
                        // SAFETY: `r ≤ last_row`, so `at + lanes <= out.len()` (the
                        // assertion above).
                        unsafe {
                            out.as_mut_ptr()
                                .add(at)
                                .cast::<S::f32s>()
                                .write_unaligned(acc[r][p]);
                        }
                    } else {
                        store(simd, &mut out[at..at + self.len], acc[r][p]);
                    }
                }
            }
        }
    }
}
