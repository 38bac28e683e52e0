//! The peers tensorlet is measured against in the same run (feature `peers`): the `gemm`
//! crate for dense layers and candle's `Conv2d` layer for convolutions. Each wrapper
//! computes exactly what the tensorlet kernel beside it computes; the unit tests below
//! check that on one shape each, so the comparison is like for like.

use candle_core::{Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module};

/// `out[m,n] = x[m,k] · w[n,k]ᵀ` with the `gemm` crate, single-threaded; `w` in PyTorch
/// `Linear` layout `[out, in]`, everything row-major (tensorlet's `dense` without bias).
///
/// Panics if a slice length does not match its shape.
pub fn gemm_dense(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    assert_eq!(out.len(), m * n, "out is not [m, n]");
    // gemm addresses element (i, j) of a matrix at `ptr + i·rs + j·cs`. dst and lhs are
    // row-major; rhs is wᵀ ([k, n]): element (kk, j) is w[j·k + kk], so rs = 1, cs = k.
    // SAFETY: the asserts above keep every (i, j) the strides reach inside its slice, and
    // `out` does not alias `x` or `w` (it is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A candle `Conv2d` layer (stride 1, no padding, bias) over one fixed NCHW input, both on
/// the CPU device: the peer of tensorlet's `conv2d` with bias and no activation.
pub struct CandleConv2d {
    layer: Conv2d,
    x: Tensor,
}

impl CandleConv2d {
    /// A layer with weights `w` (`[oc, c, kh, kw]`) and `bias` (`[oc]`) over the input
    /// `x` (`[n, c, h, w]`); both are copied into candle tensors once, here.
    pub fn new(
        x: &[f32],
        x_shape: [usize; 4],
        w: &[f32],
        w_shape: [usize; 4],
        bias: &[f32],
    ) -> candle_core::Result<Self> {
        let device = Device::Cpu;
        let x = Tensor::from_slice(x, &x_shape, &device)?;
        let w = Tensor::from_slice(w, &w_shape, &device)?;
        let bias = Tensor::from_slice(bias, w_shape[0], &device)?;
        let layer = Conv2d::new(w, Some(bias), Conv2dConfig::default());
        Ok(Self { layer, x })
    }

    /// Runs the layer once and returns its output tensor.
    pub fn forward(&self) -> candle_core::Result<Tensor> {
        self.layer.forward(&self.x)
    }

    /// Runs the layer once and returns its output, flattened in NCHW order.
    pub fn forward_vec(&self) -> candle_core::Result<Vec<f32>> {
        self.forward()?.flatten_all()?.to_vec1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values;
    use tensorlet_kernels::{Activation, Conv2dParams, Kernels, conv2d_out_shape};

    /// `|a - b| <= 1e-4 · max(|b|, 1)` (`b` the peer's): relative 1e-4 for the O(1) values
    /// these shapes produce, without failing on outputs that cancel to near zero.
    fn assert_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "element {i}: {a} vs {b}"
            );
        }
    }

    /// `Kernels::dense` and `dense_packed` agree with gemm (y = x·wᵀ).
    #[test]
    fn gemm_matches_tensorlet_dense() {
        let k = Kernels::detect();
        // Odd sizes, so neither side runs only its full-tile path.
        for (m, kk, n) in [(37, 129, 19), (1, 1600, 128), (64, 64, 64)] {
            let (x, w) = (values(m * kk, 1), values(n * kk, 2));
            let (mut ours, mut theirs) = (vec![0.0; m * n], vec![0.0; m * n]);
            gemm_dense(&x, m, kk, &w, n, &mut theirs);
            k.dense(&x, m, kk, &w, n, None, Activation::None, &mut ours)
                .expect("valid shapes");
            assert_close(&ours, &theirs);
            let packed = k.pack_dense(&w, n, kk, None).expect("valid shapes");
            k.dense_packed(&x, m, &packed, Activation::None, &mut ours)
                .expect("valid shapes");
            assert_close(&ours, &theirs);
        }
    }

    /// `Kernels::conv2d` and `conv2d_packed` agree with candle-nn's `Conv2d` (with bias).
    #[test]
    fn candle_matches_tensorlet_conv2d() {
        let k = Kernels::detect();
        let (xs, ws) = ([1, 32, 13, 13], [64, 32, 3, 3]);
        let (x, w, bias) = (
            values(32 * 13 * 13, 4),
            values(64 * 32 * 9, 5),
            values(64, 6),
        );
        let p = Conv2dParams::default();
        let os = conv2d_out_shape(xs, ws, &p).expect("valid geometry");
        let candle = CandleConv2d::new(&x, xs, &w, ws, &bias).expect("candle layer");
        let out = candle.forward().expect("candle conv2d");
        assert_eq!(out.dims(), &os[..]);
        let theirs = candle.forward_vec().expect("candle conv2d");
        let mut ours = vec![0.0; os.iter().product()];
        k.conv2d(&x, xs, &w, ws, Some(&bias), &p, Activation::None, &mut ours)
            .expect("valid shapes");
        assert_close(&ours, &theirs);
        let packed = k
            .pack_conv2d(&w, ws, Some(&bias), &p)
            .expect("valid shapes");
        k.conv2d_packed(&x, xs, &packed, Activation::None, &mut ours)
            .expect("valid shapes");
        assert_close(&ours, &theirs);
    }
}
