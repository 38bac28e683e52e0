//! Ops as methods on [`Tensor`]: thin wrappers over the `ops` imports, so a forward pass
//! reads as a chain (`x.conv2d(..)?.max_pool2d(..)?`). Every op borrows its operands and
//! returns a new host-owned tensor.

use crate::wit::tensorlet::nn::ops;
use crate::{Activation, Conv2dParams, Error, Pool2dParams, Result, Tensor};

/// Formats a shape for messages: `[1, 28, 28]`.
pub fn format_shape(shape: &[u32]) -> String {
    let dims: Vec<String> = shape.iter().map(u32::to_string).collect();
    format!("[{}]", dims.join(", "))
}

impl Tensor {
    /// The number of elements (the product of the shape), or `None` on overflow.
    pub fn numel(&self) -> Option<u64> {
        self.shape()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
    }

    /// Collapses every dimension after the first: [n, c, h, w] -> [n, c·h·w] (PyTorch's
    /// `flatten(1)`, in (C, H, W) order).
    pub fn flatten(&self) -> Result<Tensor> {
        let shape = self.shape();
        let Some((&n, rest)) = shape.split_first() else {
            return Err(Error::shape_mismatch(
                "cannot flatten a scalar (shape [])".to_owned(),
            ));
        };
        let inner = rest
            .iter()
            .try_fold(1u32, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                Error::limit_exceeded(format!(
                    "flattening shape {} overflows u32",
                    format_shape(&shape)
                ))
            })?;
        self.reshape(&[n, inner])
    }

    /// `act(self · wᵀ + b)`: `self` is `[m, k]` (leading dims flattened), `w` is `[n, k]`
    /// (PyTorch `Linear` layout), `b` is `[n]`; the result is `[.., n]`.
    pub fn dense(&self, w: &Tensor, b: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        ops::dense(self, w, b, act)
    }

    /// 2-D convolution of NCHW `self` [n, c, h, w] with `w` [oc, c/groups, kh, kw] and
    /// optional bias `b` `[oc]`, fused activation; the result is [n, oc, oh, ow].
    pub fn conv2d(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        params: Conv2dParams,
        act: Activation,
    ) -> Result<Tensor> {
        ops::conv2d(self, w, b, params, act)
    }

    /// Max pooling over NCHW `self`.
    pub fn max_pool2d(&self, params: Pool2dParams) -> Result<Tensor> {
        ops::max_pool2d(self, params)
    }

    /// Average pooling over NCHW `self` (padding counts as zeros).
    pub fn avg_pool2d(&self, params: Pool2dParams) -> Result<Tensor> {
        ops::avg_pool2d(self, params)
    }

    /// Mean over H and W of NCHW `self`; the result is [n, c].
    pub fn global_avg_pool(&self) -> Result<Tensor> {
        ops::global_avg_pool(self)
    }

    /// Applies `act` element-wise.
    pub fn activate(&self, act: Activation) -> Result<Tensor> {
        ops::activate(self, act)
    }

    /// Softmax over the last dimension.
    pub fn softmax(&self) -> Result<Tensor> {
        ops::softmax(self)
    }

    /// `self + other`, where `other`'s shape equals `self`'s or is a suffix of it.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        ops::add(self, other)
    }

    /// `self × other` element-wise, broadcast as in [`Tensor::add`].
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        ops::mul(self, other)
    }

    /// Layer normalisation over the last dimension `d` (PyTorch `LayerNorm(d, eps)`), with
    /// `gamma` and `beta` of shape `[d]`.
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        ops::layer_norm(self, gamma, beta, eps)
    }

    /// Rows `ids` of `self` (an embedding table `[rows, d]`); the result is
    /// `[ids.len(), d]`.
    pub fn embedding(&self, ids: &[u32]) -> Result<Tensor> {
        ops::embedding(self, ids)
    }

    /// Multi-head scaled-dot-product attention of queries `self` over keys `k` and values
    /// `v`, all `[batch, seq, heads·head_dim]`, attending only to the first `lengths[b]`
    /// positions of sequence `b` (padding rows of the result are zero).
    pub fn attention(&self, k: &Tensor, v: &Tensor, heads: u32, lengths: &[u32]) -> Result<Tensor> {
        ops::attention(self, k, v, heads, lengths)
    }

    /// Mean over the first `lengths[b]` positions of each sequence of `self`
    /// (`[batch, seq, d]`); the result is `[batch, d]`.
    pub fn mean_pool(&self, lengths: &[u32]) -> Result<Tensor> {
        ops::mean_pool(self, lengths)
    }

    /// Each row of the last dimension divided by its Euclidean norm (or by `eps` if smaller).
    pub fn l2_normalize(&self, eps: f32) -> Result<Tensor> {
        ops::l2_normalize(self, eps)
    }
}

#[cfg(test)]
mod tests {
    use super::format_shape;

    #[test]
    fn formats_shapes() {
        assert_eq!(format_shape(&[]), "[]");
        assert_eq!(format_shape(&[1, 28, 28]), "[1, 28, 28]");
    }
}
