//! tensorlet's compute kernels: dense (GEMM/GEMV), NCHW conv2d, pooling, activations,
//! softmax and broadcasting element-wise ops on `f32` slices, and the ops training needs:
//!
//! - [`Kernels::matmul`]: `op(a)·op(b)` with either operand transposed, optionally added to
//!   the output (a dense layer's backward products), and [`Kernels::sum_rows`] (its bias
//!   gradient);
//! - [`Kernels::conv2d_backward_input`] and [`Kernels::conv2d_backward_weights`]: conv2d's
//!   gradients (stride, padding, dilation, groups), as GEMMs on im2col patches;
//! - [`Kernels::max_pool2d_backward`], [`Kernels::avg_pool2d_backward`] and
//!   [`Kernels::activation_backward`] (from the activation's output);
//! - a transformer encoder's ops: [`Kernels::layer_norm`], [`Kernels::gather_rows`]
//!   (embedding lookup), [`Kernels::attention`] (multi-head, key padding mask),
//!   [`Kernels::mean_pool`] (under the same mask) and [`Kernels::l2_normalize`];
//! - the losses with their gradients, as PyTorch's `reduction='mean'`:
//!   [`Kernels::softmax_cross_entropy`], [`Kernels::mse`], [`Kernels::bce_with_logits`].
//!
//! Every kernel is written once, generic over [`pulp::Simd`], as a small struct implementing
//! [`pulp::WithSimd`]. A [`Kernels`] value holds the pulp arch token for one [`Level`]
//! (scalar, AVX2, AVX-512, NEON, SIMD128), chosen once by [`Kernels::detect`] or
//! [`Kernels::with_level`]; calls dispatch through it without re-detecting features. Large
//! dense products may split their rows over a [`ThreadPool`] the embedder makes once and
//! shares ([`Kernels::with_pool`]); no op spawns a thread.
//! Every entry point validates slice lengths against the shapes it is given and returns a
//! [`KernelError`] instead of panicking. [`oracle`] has the naive reference of each op.
//!
//! ```
//! use tensorlet_kernels::{Activation, Kernels};
//!
//! let k = Kernels::detect();
//! // y = relu(x · wᵀ + b) for x: [1, 2], w: [2, 2].
//! let mut y = [0.0; 2];
//! k.dense(&[1.0, 2.0], 1, 2, &[1.0, 0.0, 0.0, -1.0], 2, Some(&[0.5, 0.5]), Activation::Relu, &mut y)?;
//! assert_eq!(y, [1.5, 0.0]);
//! # Ok::<(), tensorlet_kernels::KernelError>(())
//! ```

mod activation;
mod conv;
mod conv_grad;
mod dense;
mod dispatch;
mod elem;
mod elementwise;
mod error;
mod gemm;
mod loss;
mod matmul;
mod ops;
pub mod oracle;
mod pool;
mod shape;
mod stencil;
mod threads;
mod transformer;
mod validate;
mod vmem;
mod winograd;

pub use activation::Activation;
pub use conv::PackedConv2d;
pub use conv_grad::PackedConv2dGrad;
pub use dense::PackedDense;
pub use dispatch::{Kernels, Level};
pub use elem::WeightType;
pub use error::KernelError;
/// The `half` crate, whose `f16`/`bf16` the half-precision packers take.
pub use half;
pub use shape::{
    Conv2dParams, DenseDims, Pool2dParams, broadcast_dims, conv2d_dims, conv2d_out_shape,
    dense_dims, pool2d_out_shape, rank4, reshape_dims,
};
pub use threads::ThreadPool;
pub use transformer::{
    AttentionDims, attention_dims, embedding_dims, layer_norm_dims, mean_pool_dims,
};
