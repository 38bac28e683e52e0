//! The public kernel entry points on [`Kernels`]: validate, then dispatch a [`pulp::WithSimd`]
//! op at the level chosen when the `Kernels` was built.

use crate::activation::{Activate, Activation};
use crate::conv::Conv2d;
use crate::dispatch::Kernels;
use crate::elementwise::{Binary, BinaryKind, Softmax};
use crate::error::KernelError;
use crate::gemm::Dense;
use crate::pool::{GlobalAvgPool, Pool2d, PoolKind};
use crate::shape::{Conv2dParams, Pool2dParams};
use crate::validate;

impl Kernels {
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
        self.run(Dense {
            x,
            m,
            k,
            w,
            n,
            bias,
            act,
            out,
        });
        Ok(())
    }

    /// NCHW 2-D convolution (PyTorch `Conv2d`): `x` is `[n, c, h, w]`, `w` is
    /// `[oc, c/groups, kh, kw]`, `bias` is `[oc]`, `out` is `[n, oc, oh, ow]` as given by
    /// [`conv2d_out_shape`](crate::conv2d_out_shape). `act` is applied to every output.
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
        let out_shape = validate::conv2d(
            x.len(),
            x_shape,
            w.len(),
            w_shape,
            bias.map(<[f32]>::len),
            p,
            out.len(),
        )?;
        self.run(Conv2d {
            x,
            x_shape,
            w,
            w_shape,
            out_shape,
            bias,
            p: *p,
            act,
            out,
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
