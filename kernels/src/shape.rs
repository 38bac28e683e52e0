//! Convolution and pooling geometry: the parameter structs and the output-shape helpers that
//! validate them (PyTorch semantics, floor mode).

use crate::error::{KernelError, product};

/// Geometry of a 2-D convolution (PyTorch `Conv2d` semantics). Pairs are `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between successive windows; both must be non-zero.
    pub stride: (usize, usize),
    /// Implicit zero padding added on both sides.
    pub padding: (usize, usize),
    /// Spacing between kernel taps; both must be non-zero.
    pub dilation: (usize, usize),
    /// Number of channel groups; must divide the input and output channel counts.
    pub groups: usize,
}

impl Default for Conv2dParams {
    /// Stride 1, no padding, dilation 1, one group.
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// Geometry of a 2-D pooling window (PyTorch `MaxPool2d`/`AvgPool2d`, `ceil_mode=False`).
/// Pairs are `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window size; both must be non-zero.
    pub kernel: (usize, usize),
    /// Step between windows; both must be non-zero.
    pub stride: (usize, usize),
    /// Implicit padding on both sides; at most half the window (as in PyTorch).
    pub padding: (usize, usize),
}

/// Output length of one spatial axis, or an error if the window does not fit.
fn axis_out(
    axis: &str,
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Result<usize, KernelError> {
    if stride == 0 {
        return Err(KernelError::new(format!(
            "`stride` {axis} is 0, expected > 0"
        )));
    }
    if dilation == 0 {
        return Err(KernelError::new(format!(
            "`dilation` {axis} is 0, expected > 0"
        )));
    }
    if kernel == 0 {
        return Err(KernelError::new(format!(
            "kernel {axis} is 0, expected > 0"
        )));
    }
    let overflow = || KernelError::new(format!("geometry along {axis} overflows usize"));
    let effective = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|e| e.checked_add(1))
        .ok_or_else(overflow)?;
    let padded = pad
        .checked_mul(2)
        .and_then(|p| p.checked_add(input))
        .ok_or_else(overflow)?;
    if effective > padded {
        return Err(KernelError::new(format!(
            "window {axis} `{effective}` (kernel {kernel}, dilation {dilation}) is larger than the padded input {padded} (input {input} + 2×padding {pad})"
        )));
    }
    Ok((padded - effective) / stride + 1)
}

/// Output shape `[n, oc, oh, ow]` of a convolution of `x_shape` `[n, c, h, w]` with weights
/// `w_shape` `[oc, c/groups, kh, kw]`.
///
/// Errors on zero stride/dilation/kernel/groups, `groups` not dividing `c` or `oc`, a
/// weight channel count other than `c/groups`, a window larger than the padded input, or a
/// shape product overflowing `usize`.
pub fn conv2d_out_shape(
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    p: &Conv2dParams,
) -> Result<[usize; 4], KernelError> {
    let [n, c, h, w] = x_shape;
    let [oc, cg, kh, kw] = w_shape;
    let g = p.groups;
    if g == 0 {
        return Err(KernelError::new("`groups` is 0, expected > 0"));
    }
    if c % g != 0 {
        return Err(KernelError::new(format!(
            "`groups` {g} does not divide the input channels {c}"
        )));
    }
    if oc % g != 0 {
        return Err(KernelError::new(format!(
            "`groups` {g} does not divide the output channels {oc}"
        )));
    }
    if cg != c / g {
        return Err(KernelError::new(format!(
            "weight shape {w_shape:?} has {cg} input channels per group, expected {} (c={c} / groups={g})",
            c / g
        )));
    }
    let oh = axis_out("height", h, kh, p.stride.0, p.padding.0, p.dilation.0)?;
    let ow = axis_out("width", w, kw, p.stride.1, p.padding.1, p.dilation.1)?;
    product("x", &x_shape)?;
    product("w", &w_shape)?;
    let out = [n, oc, oh, ow];
    product("out", &out)?;
    Ok(out)
}

/// Output shape `[n, c, oh, ow]` of pooling `x_shape` `[n, c, h, w]` (floor mode, like
/// PyTorch `ceil_mode=False`).
///
/// Errors on zero kernel/stride, padding larger than half the window (PyTorch's rule, which
/// guarantees every window sees at least one input element), an empty spatial input, a
/// window larger than the padded input, or a shape product overflowing `usize`.
pub fn pool2d_out_shape(x_shape: [usize; 4], p: &Pool2dParams) -> Result<[usize; 4], KernelError> {
    let [n, c, h, w] = x_shape;
    let (kh, kw) = p.kernel;
    if p.padding.0 > kh / 2 || p.padding.1 > kw / 2 {
        return Err(KernelError::new(format!(
            "`padding` {:?} is more than half the kernel {:?}",
            p.padding, p.kernel
        )));
    }
    if h == 0 || w == 0 {
        return Err(KernelError::new(format!(
            "`x_shape` {x_shape:?} has an empty spatial extent, expected h > 0 and w > 0"
        )));
    }
    let oh = axis_out("height", h, kh, p.stride.0, p.padding.0, 1)?;
    let ow = axis_out("width", w, kw, p.stride.1, p.padding.1, 1)?;
    product("x", &x_shape)?;
    let out = [n, c, oh, ow];
    product("out", &out)?;
    Ok(out)
}

/// `shape` as `[n, c, h, w]`, or an error naming `what` if its rank is not 4.
pub fn rank4(what: &str, shape: &[usize]) -> Result<[usize; 4], KernelError> {
    <[usize; 4]>::try_from(shape).map_err(|_| {
        KernelError::new(format!(
            "{what} must have rank 4 (NCHW), got shape {shape:?}"
        ))
    })
}

/// The sizes of a dense layer call: `x` `[.., k]` (leading dims flattened into `m`) times
/// `w` `[n, k]` (PyTorch `Linear` layout) gives `out_shape` `[.., n]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenseDims {
    /// Rows: the product of `x`'s leading dimensions.
    pub m: usize,
    /// Input features.
    pub k: usize,
    /// Output features.
    pub n: usize,
    /// The result's shape: `x`'s leading dimensions, then `n`.
    pub out_shape: Vec<usize>,
}

/// Checks the operand shapes of a dense layer (`x` `[.., k]`, `w` `[n, k]`, bias `[n]`)
/// and returns its sizes; the tensor-level rule that every `ops.dense` provider applies.
pub fn dense_dims(
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
) -> Result<DenseDims, KernelError> {
    let [n, k] = <[usize; 2]>::try_from(w)
        .map_err(|_| KernelError::new(format!("dense: w must be [out, in], got {w:?}")))?;
    let Some((&xk, lead)) = x.split_last() else {
        return Err(KernelError::new(
            "dense: x must have rank ≥ 1, got a scalar",
        ));
    };
    if xk != k {
        return Err(KernelError::new(format!(
            "dense: x has shape {x:?} but w has shape {w:?}: x's last dimension must be {k}"
        )));
    }
    if let Some(b) = bias
        && b != [n]
    {
        return Err(KernelError::new(format!(
            "dense: bias must have shape [{n}], got {b:?}"
        )));
    }
    let m = product("dense: x", lead)?;
    product("dense: out", &[m, n])?;
    let mut out_shape = lead.to_vec();
    out_shape.push(n);
    Ok(DenseDims { m, k, n, out_shape })
}

/// Checks the operand shapes of a convolution (`x` `[n, c, h, w]`, `w`
/// `[oc, c/groups, kh, kw]`, bias `[oc]`) and geometry `p`; returns `(x, w, out)` shapes.
pub fn conv2d_dims(
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
    p: &Conv2dParams,
) -> Result<[[usize; 4]; 3], KernelError> {
    let xs = rank4("conv2d: x", x)?;
    let ws = rank4("conv2d: w", w)?;
    let out = conv2d_out_shape(xs, ws, p)
        .map_err(|e| KernelError::new(format!("conv2d: {}", e.message)))?;
    if let Some(b) = bias
        && b != [ws[0]]
    {
        return Err(KernelError::new(format!(
            "conv2d: bias must have shape [{}], got {b:?}",
            ws[0]
        )));
    }
    Ok([xs, ws, out])
}

/// Checks that `b` broadcasts onto `a` for the element-wise op `op`: `b`'s shape equals
/// `a`'s or is a suffix of it.
pub fn broadcast_dims(op: &str, a: &[usize], b: &[usize]) -> Result<(), KernelError> {
    if a.ends_with(b) {
        Ok(())
    } else {
        Err(KernelError::new(format!(
            "{op}: b's shape {b:?} must equal a's shape {a:?} or a suffix of it"
        )))
    }
}

/// The shape `to` with its one `0` dimension (if any) inferred so that it holds the same
/// element count as `from`; errors if no such shape exists.
pub fn reshape_dims(from: &[usize], to: &[usize]) -> Result<Vec<usize>, KernelError> {
    let len = product("reshape: from", from)?;
    let mut shape = to.to_vec();
    let wildcards = shape.iter().filter(|&&d| d == 0).count();
    let bad = || {
        KernelError::new(format!(
            "reshape: cannot reshape {from:?} ({len} elements) to {to:?}"
        ))
    };
    if wildcards > 1 {
        return Err(KernelError::new(format!(
            "reshape to {to:?}: at most one dimension may be 0 (inferred)"
        )));
    }
    if wildcards == 1 {
        let known: Vec<usize> = shape.iter().map(|&d| d.max(1)).collect();
        let known = product("reshape: to", &known)?;
        if known == 0 || !len.is_multiple_of(known) {
            return Err(bad());
        }
        for d in shape.iter_mut().filter(|d| **d == 0) {
            *d = len / known;
        }
    }
    if product("reshape: to", &shape)? != len {
        return Err(bad());
    }
    Ok(shape)
}
