//! The public kernel entry points on [`Kernels`]: validate, then dispatch a [`pulp::WithSimd`]
//! op at the level chosen when the `Kernels` was built; large dense products split their rows
//! over the `Kernels`' [`ThreadPool`](crate::ThreadPool), if it has one.

use crate::activation::{Activate, Activation, ActivationBackward};
use crate::conv::{
    Conv2d, ConvWeights, PackedConv2d, TileRows, gathers, is_depthwise, pack_weights,
};
use crate::conv_grad::{Conv2dBackwardInput, Conv2dBackwardWeights, PackedConv2dGrad};
use crate::dense::{Dense, DensePackedPart, PackedData, PackedDense, SharedOut, pack};
use crate::dispatch::{Kernels, Level};
use crate::elementwise::{Binary, BinaryKind, Softmax, SumRows};
use crate::error::{KernelError, check_len, check_matrix, product};
use crate::gemm::AView;
use crate::loss::{BceWithLogits, Mse, SoftmaxCrossEntropy};
use crate::matmul::{Matmul, PackTransposedA, give_back_transposed_a};
use crate::pool::{GlobalAvgPool, Pool2d, Pool2dBackward, PoolKind};
use crate::shape::{Conv2dParams, Pool2dParams, conv2d_out_shape};
use crate::stencil::{self, stencil};
use crate::validate;
use crate::winograd::{self, WinogradWeights, winograd};

/// Checks `w_len` against `w_shape` and the geometry `p` against the smallest input the
/// window fits, so that weights are validated without an image.
fn check_conv_weights(
    w_len: usize,
    w_shape: [usize; 4],
    p: &Conv2dParams,
) -> Result<(), KernelError> {
    let [_, cg, kh, kw] = w_shape;
    let fit = |k: usize, d: usize| k.saturating_sub(1).saturating_mul(d).saturating_add(1);
    let x_shape = [
        1,
        cg.saturating_mul(p.groups),
        fit(kh, p.dilation.0),
        fit(kw, p.dilation.1),
    ];
    conv2d_out_shape(x_shape, w_shape, p)?;
    check_len(
        "w",
        w_len,
        product("w", &w_shape)?,
        format_args!("shape {w_shape:?}"),
    )
}

/// Errors unless `packed` (a layout for `packed`) matches the level of `kernels`.
fn check_level(what: &str, packed: Level, kernels: Level) -> Result<(), KernelError> {
    if packed == kernels {
        Ok(())
    } else {
        Err(KernelError::new(format!(
            "{what} was packed for level {packed:?}, these kernels run at {kernels:?}; pack with the kernels that run it"
        )))
    }
}

/// The error [`Kernels::dense_packed`] returns for arguments that failed its quick test:
/// the level and lengths checked one by one, each with its own message.
#[cold]
#[inline(never)]
fn dense_packed_error(
    level: Level,
    x: usize,
    m: usize,
    packed: &PackedDense,
    out: usize,
) -> Result<(), KernelError> {
    check_level("dense weights", packed.level, level)?;
    let (n, k) = (packed.n, packed.k);
    check_matrix("x", x, ("m", m), ("k", k))?;
    check_matrix("out", out, ("m", m), ("n", n))?;
    Err(KernelError::new(
        "internal error: dense_packed refused arguments that pass every check".to_string(),
    ))
}

/// Least multiply-adds × 2 (FLOP) of a dense product per thread before it is split.
const SPLIT_MIN_FLOPS: usize = 8 << 20;

/// Least FLOP per thread of a packed dense product with too few rows to split by rows
/// before its columns are split: such a product streams its weights once, and each thread
/// streams only its columns' share.
const SPLIT_COLS_MIN_FLOPS: usize = 4 << 20;

/// Least output features per thread of a column split (a few panels each).
const SPLIT_COLS_MIN_WIDTH: usize = 128;

impl Kernels {
    /// Runs the dense product `x[m,k] → out[m,n]` as `f(kernels, x rows, rows, out rows)` on
    /// whole chunks of rows: on this thread alone, or (see [`Kernels::with_pool`]) split into
    /// chunks of whole register tiles taken from a queue by this thread and the pool's idle
    /// workers; when fewer workers are idle, the threads that run take more chunks each.
    /// Row `r` of `x` starts at `x[r·k]`; `x` may run past `m·k` (the zero rows that pad an
    /// `MR`-interleaved `A` to whole blocks), the last chunk gets all of it.
    fn split_rows(
        &self,
        x: &[f32],
        m: usize,
        k: usize,
        n: usize,
        out: &mut [f32],
        f: impl Fn(&Kernels, &[f32], usize, &mut [f32]) + Sync,
    ) {
        let Some(pool) = self.pool().filter(|p| p.threads() > 1) else {
            f(self, x, m, out);
            return;
        };
        let mr = self.run(TileRows);
        let flops = 2usize.saturating_mul(m).saturating_mul(k).saturating_mul(n);
        let threads = self
            .threads()
            .min(m / (2 * mr).max(1))
            .min(flops / SPLIT_MIN_FLOPS);
        if threads <= 1 || k == 0 || n == 0 {
            f(self, x, m, out);
            return;
        }
        let rows = m.div_ceil(threads).div_ceil(mr) * mr;
        let chunks: Vec<(&[f32], usize, &mut [f32])> = out
            .chunks_mut(rows * n)
            .enumerate()
            .map(|(i, out)| {
                let r0 = i * rows;
                let end = if r0 + rows >= m {
                    x.len()
                } else {
                    (r0 + rows) * k
                };
                (&x[r0 * k..end], out.len() / n, out)
            })
            .collect();
        let queue = std::sync::Mutex::new(chunks);
        pool.run_scoped(threads, &|| {
            loop {
                let job = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((x, m, out)) = job else { break };
                f(self, x, m, out);
            }
        });
    }

    /// Fully connected layer: `out[m,n] = act(x[m,k] · w[n,k]ᵀ + bias[n])`, with `w` in
    /// PyTorch `Linear` layout `[out, in]`. All slices are row-major.
    ///
    /// Errors if `x.len() != m·k`, `w.len() != n·k`, `bias.len() != n` or
    /// `out.len() != m·n` (or if any of these products overflows).
    #[allow(clippy::too_many_arguments)]
    pub fn dense(
        &self,
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        n: usize,
        bias: Option<&[f32]>,
        act: Activation,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        validate::dense(x.len(), m, k, w.len(), n, bias.map(<[f32]>::len), out.len())?;
        self.split_rows(x, m, k, n, out, |kern, x, m, out| {
            kern.run(Dense {
                x,
                m,
                k,
                w,
                n,
                bias,
                act,
                out,
            })
        });
        Ok(())
    }

    /// General matrix product: `out[m,n] = op(a)·op(b)`, or `out += op(a)·op(b)` when
    /// `accumulate`, all row-major. `op(a)` is `a` (`[m, k]`) or, when `trans_a`, `aᵀ` of `a`
    /// given as `[k, m]`; `op(b)` is `b` (`[k, n]`) or, when `trans_b`, `bᵀ` of `b` given as
    /// `[n, k]`. The backward products of a dense layer `y = x·wᵀ` are `dx = dy·w`
    /// (`matmul(dy, false, w, false, ..)`) and `dw = dyᵀ·x` (`matmul(dy, true, x, false, ..)`).
    ///
    /// Large products split their rows over the pool as [`Kernels::dense`] does. With `k = 0`
    /// the product is zero (`out` is zeroed, or left as it is when accumulating).
    ///
    /// Errors if `a.len() != m·k`, `b.len() != k·n` or `out.len() != m·n` (or a product
    /// overflows).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        a: &[f32],
        trans_a: bool,
        b: &[f32],
        trans_b: bool,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        validate::matmul(a.len(), trans_a, b.len(), trans_b, m, k, n, out.len())?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            if !accumulate {
                out.fill(0.0);
            }
            return Ok(());
        }
        // A vector is its own transpose: take the layout each path reads best.
        let trans_a = trans_a && m > 1 && k > 1;
        let trans_b = if n == 1 {
            true
        } else if k == 1 {
            false
        } else {
            trans_b
        };
        if !trans_a && trans_b && !accumulate {
            // The dense layer's product, batch-1 and single-output paths included.
            let none = Activation::None;
            self.split_rows(a, m, k, n, out, |kern, x, m, out| {
                kern.run(Dense {
                    x,
                    m,
                    k,
                    w: b,
                    n,
                    bias: None,
                    act: none,
                    out,
                })
            });
            return Ok(());
        }
        let run = |kern: &Kernels, a: AView<'_>, m: usize, out: &mut [f32]| {
            kern.run(Matmul {
                a,
                m,
                k,
                n,
                b,
                trans_b,
                accumulate,
                out,
            })
        };
        if trans_a {
            let (buf, mr) = self.run(PackTransposedA { a, m, k });
            let packed = &buf.as_slice()[..m.div_ceil(mr) * mr * k];
            self.split_rows(packed, m, k, n, out, |kern, a, m, out| {
                run(
                    kern,
                    AView {
                        data: a,
                        rs: 1,
                        cs: mr,
                        gather: None,
                    },
                    m,
                    out,
                )
            });
            give_back_transposed_a(buf);
        } else {
            self.split_rows(a, m, k, n, out, |kern, a, m, out| {
                run(
                    kern,
                    AView {
                        data: a,
                        rs: k,
                        cs: 1,
                        gather: None,
                    },
                    m,
                    out,
                )
            });
        }
        Ok(())
    }

    /// NCHW 2-D convolution (PyTorch `Conv2d`): `x` is `[n, c, h, w]`, `w` is
    /// `[oc, c/groups, kh, kw]`, `bias` is `[oc]`, `out` is `[n, oc, oh, ow]` as given by
    /// [`conv2d_out_shape`]. `act` is applied to every output.
    ///
    /// Errors on invalid geometry (see `conv2d_out_shape`) or any slice length that does not
    /// match its shape.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &self,
        x: &[f32],
        x_shape: [usize; 4],
        w: &[f32],
        w_shape: [usize; 4],
        bias: Option<&[f32]>,
        p: &Conv2dParams,
        act: Activation,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        validate::conv2d(
            x.len(),
            x_shape,
            w.len(),
            w_shape,
            bias.map(<[f32]>::len),
            p,
            out.len(),
        )?;
        let packed = self.pack_conv2d(w, w_shape, bias, p)?;
        self.conv2d_packed(x, x_shape, &packed, act, out)
    }

    /// The input gradient of [`Kernels::conv2d`] (PyTorch semantics, stride, padding, dilation
    /// and groups included): from `dy` (`[n, oc, oh, ow]`, the output's gradient) and the
    /// weights `w` (`w_shape` = `[oc, c/groups, kh, kw]`), writes `dx` (`x_shape` =
    /// `[n, c, h, w]`), overwriting it.
    ///
    /// Per image and group, `dYᵀ · W` on the GEMM core (the patch gradients, pixel by pixel),
    /// then each input pixel sums the gradients of the patches that cover it; where
    /// [`Kernels::conv2d`] runs Winograd F(4 × 4, 3 × 3) (3 × 3 kernels, stride and dilation
    /// 1, one group, at least 16 channels in and out) and the padding is at most 2, by that
    /// forward pass on `dy` with the weights transposed and turned by half a turn (padding
    /// `2 - p`). Runs on the calling thread (a trainer calls it per sub-batch on each of its
    /// threads).
    ///
    /// Errors on invalid geometry (see [`conv2d_out_shape`]) or any slice length that does not
    /// match its shape.
    pub fn conv2d_backward_input(
        &self,
        dy: &[f32],
        w: &[f32],
        w_shape: [usize; 4],
        x_shape: [usize; 4],
        p: &Conv2dParams,
        dx: &mut [f32],
    ) -> Result<(), KernelError> {
        validate::conv2d_backward_input(dy.len(), w.len(), w_shape, x_shape, p, dx.len())?;
        let packed = self.pack_conv2d_backward_input(w, w_shape, p)?;
        self.conv2d_backward_input_packed(dy, &packed, x_shape, dx)
    }

    /// Prepares the weights `w` (`w_shape` = `[oc, c/groups, kh, kw]`) of a convolution with
    /// parameters `p` for [`Kernels::conv2d_backward_input_packed`] at this level: copied and,
    /// where its Winograd path may run, transposed, turned and transformed. Prepare again
    /// after the weights change.
    ///
    /// Errors if `w` does not match `w_shape` or the geometry is invalid for any input.
    pub fn pack_conv2d_backward_input(
        &self,
        w: &[f32],
        w_shape: [usize; 4],
        p: &Conv2dParams,
    ) -> Result<PackedConv2dGrad, KernelError> {
        check_conv_weights(w.len(), w_shape, p)?;
        let [oc, c, _, _] = w_shape;
        Ok(PackedConv2dGrad {
            w: w.to_vec(),
            w_shape,
            params: *p,
            level: self.level(),
            turned: winograd::turns(w_shape, p)
                .then(|| WinogradWeights::transposed(self, w, oc, c)),
        })
    }

    /// [`Kernels::conv2d_backward_input`] with weights prepared by
    /// [`Kernels::pack_conv2d_backward_input`]: `dy` is `[n, oc, oh, ow]` and `dx` is `x_shape`
    /// (`[n, c, h, w]`), overwritten.
    ///
    /// Errors if `packed` was prepared at another level, on invalid geometry or on slice
    /// lengths that do not match their shapes.
    pub fn conv2d_backward_input_packed(
        &self,
        dy: &[f32],
        packed: &PackedConv2dGrad,
        x_shape: [usize; 4],
        dx: &mut [f32],
    ) -> Result<(), KernelError> {
        check_level("conv2d gradient weights", packed.level, self.level())?;
        let (w_shape, p) = (packed.w_shape, packed.params);
        let out_shape = validate::conv2d_backward_input(
            dy.len(),
            packed.w.len(),
            w_shape,
            x_shape,
            &p,
            dx.len(),
        )?;
        // `turned` is there whenever the Winograd path may run (`turns`).
        let turned = if winograd::input_gradient(w_shape, &p, x_shape[2], x_shape[3]) {
            packed.turned.as_ref()
        } else {
            None
        };
        self.run(Conv2dBackwardInput {
            dy,
            w: &packed.w,
            w_shape,
            x_shape,
            out_shape,
            p,
            winograd: turned,
            dx,
        });
        Ok(())
    }

    /// The weight gradient of [`Kernels::conv2d`]: from the input `x` (`x_shape` =
    /// `[n, c, h, w]`) and `dy` (`[n, oc, oh, ow]`), writes `dw` (`w_shape` =
    /// `[oc, c/groups, kh, kw]`) summed over the batch, and, when given, the bias gradient
    /// `db` (`[oc]`: `dy` summed over the batch and the pixels); both are overwritten.
    ///
    /// Per image and group, `im2col(x) · dYᵀ` on the GEMM core, accumulated over the batch;
    /// where [`Kernels::conv2d`] runs Winograd F(4 × 4, 3 × 3) (3 × 3 kernels, stride and
    /// dilation 1, one group, at least 16 channels in and out), by its transposed transforms
    /// (about a quarter of the multiply-adds, a few times the rounding). Runs on the calling
    /// thread.
    ///
    /// Errors on invalid geometry (see [`conv2d_out_shape`]) or any slice length that does not
    /// match its shape.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_backward_weights(
        &self,
        x: &[f32],
        x_shape: [usize; 4],
        dy: &[f32],
        w_shape: [usize; 4],
        p: &Conv2dParams,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) -> Result<(), KernelError> {
        let out_shape = validate::conv2d_backward_weights(
            x.len(),
            x_shape,
            dy.len(),
            w_shape,
            p,
            dw.len(),
            db.as_deref().map(<[f32]>::len),
        )?;
        self.run(Conv2dBackwardWeights {
            x,
            x_shape,
            dy,
            w_shape,
            out_shape,
            p: *p,
            dw,
            db,
        });
        Ok(())
    }

    /// Packs conv2d weights `w` (`[oc, c/groups, kh, kw]`), `bias` (`[oc]`) and the geometry
    /// `p` once, for [`Kernels::conv2d_packed`] at this level.
    ///
    /// Errors on invalid geometry (zero stride/dilation/kernel/groups, `groups` not dividing
    /// `oc`) or slice lengths that do not match `w_shape`.
    pub fn pack_conv2d(
        &self,
        w: &[f32],
        w_shape: [usize; 4],
        bias: Option<&[f32]>,
        p: &Conv2dParams,
    ) -> Result<PackedConv2d, KernelError> {
        let [oc, cg, kh, kw] = w_shape;
        check_conv_weights(w.len(), w_shape, p)?;
        if let Some(b) = bias {
            check_len("bias", b.len(), oc, "one per output channel")?;
        }
        let (ocg, taps) = (oc / p.groups, cg * kh * kw);
        let bias_vec = || bias.map(<[f32]>::to_vec);
        let direct = if stencil(w_shape, p) {
            ConvWeights::Stencil {
                w: stencil::pack(w, oc, taps),
                bias: bias_vec(),
            }
        } else if gathers(w_shape, p) {
            ConvWeights::Gathered(
                (0..p.groups)
                    .map(|g| {
                        let wg = &w[g * ocg * taps..(g + 1) * ocg * taps];
                        let bg = bias.map(|b| &b[g * ocg..(g + 1) * ocg]);
                        pack(self, wg, ocg, taps, bg, |v| v, PackedData::F32)
                    })
                    .collect(),
            )
        } else if is_depthwise(w_shape, p) {
            ConvWeights::Depthwise {
                w: w.to_vec(),
                bias: bias_vec(),
            }
        } else {
            let mr = self.run(TileRows);
            ConvWeights::Interleaved {
                mr,
                w: pack_weights(w, p.groups, ocg, taps, mr),
                bias: bias_vec(),
            }
        };
        let weights = if winograd(w_shape, p) {
            ConvWeights::Winograd {
                transformed: WinogradWeights::new(self, w, oc, cg, bias),
                direct: Box::new(PackedConv2d {
                    w_shape,
                    params: *p,
                    level: self.level(),
                    weights: direct,
                }),
            }
        } else {
            direct
        };
        Ok(PackedConv2d {
            w_shape,
            params: *p,
            level: self.level(),
            weights,
        })
    }

    /// [`Kernels::conv2d`] with weights packed by [`Kernels::pack_conv2d`]: `x` is
    /// `[n, c, h, w]`, `out` is `[n, oc, oh, ow]` as given by
    /// [`conv2d_out_shape`] for the packed weight shape and geometry.
    ///
    /// Errors if `packed` was packed at another level, on invalid geometry or on slice lengths
    /// that do not match their shapes.
    pub fn conv2d_packed(
        &self,
        x: &[f32],
        x_shape: [usize; 4],
        packed: &PackedConv2d,
        act: Activation,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        check_level("conv2d weights", packed.level, self.level())?;
        let out_shape = conv2d_out_shape(x_shape, packed.w_shape, &packed.params)?;
        check_len(
            "x",
            x.len(),
            product("x", &x_shape)?,
            format_args!("shape {x_shape:?}"),
        )?;
        check_len(
            "out",
            out.len(),
            product("out", &out_shape)?,
            format_args!("shape {out_shape:?}"),
        )?;
        self.run(Conv2d {
            x,
            x_shape,
            pw: packed,
            out_shape,
            act,
            out,
        });
        Ok(())
    }

    /// Packs dense weights `w` (`[n, k]`, PyTorch `Linear` layout) and `bias` (`[n]`) once, for
    /// [`Kernels::dense_packed`] at this level.
    ///
    /// Errors if `w.len() != n·k` or `bias.len() != n`.
    pub fn pack_dense(
        &self,
        w: &[f32],
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
    ) -> Result<PackedDense, KernelError> {
        validate_pack(w.len(), n, k, bias)?;
        Ok(pack(self, w, n, k, bias, |v| v, PackedData::F32))
    }

    /// [`Kernels::pack_dense`] for IEEE half weights, stored as 16 bits and widened to `f32`
    /// in the kernel (batch-1 layers read half the bytes).
    pub fn pack_dense_f16(
        &self,
        w: &[half::f16],
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
    ) -> Result<PackedDense, KernelError> {
        validate_pack(w.len(), n, k, bias)?;
        Ok(pack(self, w, n, k, bias, |v| v, PackedData::F16))
    }

    /// [`Kernels::pack_dense`] for bfloat16 weights, stored as 16 bits and widened to `f32`
    /// in the kernel.
    pub fn pack_dense_bf16(
        &self,
        w: &[half::bf16],
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
    ) -> Result<PackedDense, KernelError> {
        validate_pack(w.len(), n, k, bias)?;
        Ok(pack(self, w, n, k, bias, |v| v, PackedData::Bf16))
    }

    /// Fully connected layer on packed weights: `out[m, n] = act(x[m, k] · wᵀ + bias)`.
    ///
    /// Errors if `packed` was packed at another level (pack with these kernels), if
    /// `x.len() != m·k` or `out.len() != m·n`.
    pub fn dense_packed(
        &self,
        x: &[f32],
        m: usize,
        packed: &PackedDense,
        act: Activation,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let (n, k) = (packed.n, packed.k);
        // One cheap test first: batch-1 layers are called in tens of nanoseconds, and laying
        // out the detailed errors' arguments costs a noticeable share of that.
        let valid = packed.level == self.level()
            && m.checked_mul(k) == Some(x.len())
            && m.checked_mul(n) == Some(out.len());
        if !valid {
            return dense_packed_error(self.level(), x.len(), m, packed, out.len());
        }
        // Too few rows to split (a sentence, a small batch): split the columns instead,
        // each thread streaming its share of the weights. (Without a pool, batch-1 calls
        // skip all of this.)
        if let Some(pool) = self.pool().filter(|p| p.threads() > 1)
            && m < 2 * self.run(TileRows) * pool.threads()
        {
            let parts = pool.threads().min(n / SPLIT_COLS_MIN_WIDTH).min(
                2usize.saturating_mul(m).saturating_mul(k).saturating_mul(n) / SPLIT_COLS_MIN_FLOPS,
            );
            if parts > 1 {
                let shared = SharedOut::new(out);
                let next = std::sync::atomic::AtomicUsize::new(0);
                pool.run_scoped(parts, &|| {
                    loop {
                        let part = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if part >= parts {
                            break;
                        }
                        // SAFETY: `out` (validated: `m · n` elements) stays borrowed until
                        // `run_scoped` returns, after every part; each part number is taken
                        // once, so parts running together differ and write disjoint columns.
                        let job = unsafe {
                            DensePackedPart::new(x, m, packed, act, shared, (part, parts))
                        };
                        self.run(job);
                    }
                });
                return Ok(());
            }
        }
        self.split_rows(x, m, k, n, out, |kern, x, m, out| {
            // SAFETY: one part, the whole product, into `out` (exclusively borrowed, `m · n`
            // elements: validated above and by `split_rows`' chunking).
            let job =
                unsafe { DensePackedPart::new(x, m, packed, act, SharedOut::new(out), (0, 1)) };
            kern.run(job)
        });
        Ok(())
    }

    /// NCHW max pooling (PyTorch `MaxPool2d`, `ceil_mode=False`); padded positions never win
    /// (as if `-inf`). `out` is `[n, c, oh, ow]` as given by
    /// [`pool2d_out_shape`](crate::pool2d_out_shape).
    pub fn max_pool2d(
        &self,
        x: &[f32],
        x_shape: [usize; 4],
        p: &Pool2dParams,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        self.pool2d(x, x_shape, p, PoolKind::Max, out)
    }

    /// NCHW average pooling (PyTorch `AvgPool2d`, `ceil_mode=False`,
    /// `count_include_pad=True`): every window sum is divided by `kh·kw`.
    pub fn avg_pool2d(
        &self,
        x: &[f32],
        x_shape: [usize; 4],
        p: &Pool2dParams,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        self.pool2d(x, x_shape, p, PoolKind::Avg, out)
    }

    fn pool2d(
        &self,
        x: &[f32],
        x_shape: [usize; 4],
        p: &Pool2dParams,
        kind: PoolKind,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let out_shape = validate::pool2d(x.len(), x_shape, p, out.len())?;
        self.run(Pool2d {
            x,
            x_shape,
            out_shape,
            p: *p,
            kind,
            out,
        });
        Ok(())
    }

    /// The input gradient of [`Kernels::max_pool2d`]: `dx` (`x_shape`, overwritten) gets each
    /// element of `dy` (`[n, c, oh, ow]`) at its window's arg-max in `x`: the first maximum in
    /// row-major window order, as PyTorch's CPU kernel (a NaN counts as a maximum, a later NaN
    /// over an earlier one), padded positions never win. Overlapping windows add.
    ///
    /// Errors on invalid geometry (see [`pool2d_out_shape`](crate::pool2d_out_shape)) or a
    /// length that does not match its shape.
    pub fn max_pool2d_backward(
        &self,
        x: &[f32],
        x_shape: [usize; 4],
        p: &Pool2dParams,
        dy: &[f32],
        dx: &mut [f32],
    ) -> Result<(), KernelError> {
        let out_shape = validate::pool2d_backward(Some(x.len()), x_shape, p, dy.len(), dx.len())?;
        self.run(Pool2dBackward {
            x: Some(x),
            x_shape,
            out_shape,
            p: *p,
            dy,
            dx,
        });
        Ok(())
    }

    /// The input gradient of [`Kernels::avg_pool2d`] (`count_include_pad=True`): `dx`
    /// (`x_shape`, overwritten) gets `dy / (kh·kw)` of each window's output gradient at every
    /// window position inside the input. Overlapping windows add.
    ///
    /// Errors on invalid geometry or a length that does not match its shape.
    pub fn avg_pool2d_backward(
        &self,
        x_shape: [usize; 4],
        p: &Pool2dParams,
        dy: &[f32],
        dx: &mut [f32],
    ) -> Result<(), KernelError> {
        let out_shape = validate::pool2d_backward(None, x_shape, p, dy.len(), dx.len())?;
        self.run(Pool2dBackward {
            x: None,
            x_shape,
            out_shape,
            p: *p,
            dy,
            dx,
        });
        Ok(())
    }

    /// The input gradient of an activation, from its output `y`: `dx = dy · act'`, with
    /// `act'` = `y > 0 ? 1 : 0` (relu), `y·(1 - y)` (sigmoid), `1 - y²` (tanh), `1` (none).
    ///
    /// Errors for [`Activation::Gelu`] (its derivative needs the input, which `y` does not
    /// give back) and if `dy` or `dx` is not as long as `y`.
    pub fn activation_backward(
        &self,
        y: &[f32],
        dy: &[f32],
        act: Activation,
        dx: &mut [f32],
    ) -> Result<(), KernelError> {
        validate::activation_backward(y.len(), dy.len(), act, dx.len())?;
        self.run(ActivationBackward { y, dy, act, dx });
        Ok(())
    }

    /// Softmax cross-entropy over rows of `classes` logits (PyTorch `CrossEntropyLoss`,
    /// `reduction='mean'`): returns the mean over rows of `-ln softmax(logits)[label]` and
    /// writes its gradient `(softmax(logits) - onehot(label)) / rows` into `grad`. `rows` is
    /// `labels.len()`; `logits` and `grad` are `[rows, classes]`.
    ///
    /// Errors if `classes` is 0, `labels` is empty, a label is not below `classes`, or a
    /// length does not match.
    pub fn softmax_cross_entropy(
        &self,
        logits: &[f32],
        labels: &[u32],
        classes: usize,
        grad: &mut [f32],
    ) -> Result<f32, KernelError> {
        validate::softmax_cross_entropy(logits.len(), labels, classes, grad.len())?;
        Ok(self.run(SoftmaxCrossEntropy {
            logits,
            labels,
            classes,
            grad,
        }))
    }

    /// Mean squared error (PyTorch `MSELoss`, mean over every element): returns
    /// `Σ (pred - target)² / len` and writes its gradient `2·(pred - target) / len` into
    /// `grad`.
    ///
    /// Errors if `pred` is empty or `target` or `grad` is not as long as `pred`.
    pub fn mse(&self, pred: &[f32], target: &[f32], grad: &mut [f32]) -> Result<f32, KernelError> {
        validate::elementwise_loss("pred", pred.len(), target.len(), grad.len())?;
        Ok(self.run(Mse { pred, target, grad }))
    }

    /// Binary cross-entropy on logits (PyTorch `BCEWithLogitsLoss`, mean over every element):
    /// returns the mean of `-(t·ln σ(z) + (1 - t)·ln(1 - σ(z)))`, computed without overflow as
    /// `max(z, 0) - z·t + ln(1 + e^{-|z|})`, and writes its gradient `(σ(z) - t) / len` into
    /// `grad`.
    ///
    /// Errors if `logits` is empty or `target` or `grad` is not as long as `logits`.
    pub fn bce_with_logits(
        &self,
        logits: &[f32],
        target: &[f32],
        grad: &mut [f32],
    ) -> Result<f32, KernelError> {
        validate::elementwise_loss("logits", logits.len(), target.len(), grad.len())?;
        Ok(self.run(BceWithLogits {
            logits,
            target,
            grad,
        }))
    }

    /// Column sums: `out[j] = Σ_i x[i, j]` for `x` `[rows, cols]` row-major (the bias gradient
    /// of a dense layer); `out` (`[cols]`) is overwritten.
    ///
    /// Errors if `x.len() != rows·cols` or `out.len() != cols`.
    pub fn sum_rows(
        &self,
        x: &[f32],
        rows: usize,
        cols: usize,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        validate::sum_rows(x.len(), rows, cols, out.len())?;
        self.run(SumRows { x, cols, out });
        Ok(())
    }

    /// Global average pooling: `out[n, c]` is the mean of the `h × w` plane `x[n, c]`.
    ///
    /// Errors if `h·w == 0` or a length does not match.
    pub fn global_avg_pool(
        &self,
        x: &[f32],
        x_shape: [usize; 4],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let plane = validate::global_avg_pool(x.len(), x_shape, out.len())?;
        self.run(GlobalAvgPool { x, plane, out });
        Ok(())
    }

    /// Applies `act` in place to every element of `x`.
    pub fn activate(&self, x: &mut [f32], act: Activation) {
        self.run(Activate { x, act });
    }

    /// Softmax over each consecutive row of `row_len` elements, in place; numerically stable
    /// (the row maximum is subtracted first).
    ///
    /// Errors if `row_len == 0` or `x.len()` is not a multiple of it.
    pub fn softmax(&self, x: &mut [f32], row_len: usize) -> Result<(), KernelError> {
        validate::softmax(x.len(), row_len)?;
        self.run(Softmax { x, row_len });
        Ok(())
    }

    /// `out = a + b`, with `b` broadcast over `a`'s leading dimensions: `b`'s shape is a
    /// suffix of `a`'s, so `b.len()` divides `a.len()` (`b.len() == a.len()` and
    /// `b.len() == 1` included) and `out[i] = a[i] + b[i % b.len()]`.
    ///
    /// Errors if `b.len()` does not divide `a.len()` (an empty `b` only matches an empty `a`)
    /// or `out.len() != a.len()`.
    pub fn add(&self, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        self.binary(a, b, out, BinaryKind::Add)
    }

    /// `out = a * b` element-wise, broadcasting `b` exactly as [`Kernels::add`] does.
    pub fn mul(&self, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
        self.binary(a, b, out, BinaryKind::Mul)
    }

    fn binary(
        &self,
        a: &[f32],
        b: &[f32],
        out: &mut [f32],
        kind: BinaryKind,
    ) -> Result<(), KernelError> {
        validate::broadcast(a.len(), b.len(), out.len())?;
        if !a.is_empty() {
            self.run(Binary { a, b, out, kind });
        }
        Ok(())
    }
}

/// Validates the arguments of the `pack_dense*` methods.
fn validate_pack(w: usize, n: usize, k: usize, bias: Option<&[f32]>) -> Result<(), KernelError> {
    check_matrix("w", w, ("n", n), ("k", k))?;
    if let Some(b) = bias {
        check_len("bias", b.len(), n, format_args!("n={n}"))?;
    }
    Ok(())
}
