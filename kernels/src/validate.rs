//! Argument validation shared by [`Kernels`](crate::Kernels) and [`oracle`](crate::oracle):
//! every slice length is checked against its shape (overflow-checked) before any kernel runs.

use crate::activation::Activation;
use crate::error::{KernelError, check_len, check_matrix, product};
use crate::shape::{Conv2dParams, Pool2dParams, conv2d_out_shape, pool2d_out_shape};

/// Validates [`Kernels::dense`](crate::Kernels::dense) arguments.
pub(crate) fn dense(
    x: usize,
    m: usize,
    k: usize,
    w: usize,
    n: usize,
    bias: Option<usize>,
    out: usize,
) -> Result<(), KernelError> {
    check_matrix("x", x, ("m", m), ("k", k))?;
    check_matrix("w", w, ("n", n), ("k", k))?;
    if let Some(bias) = bias {
        check_len("bias", bias, n, format_args!("n={n}"))?;
    }
    check_matrix("out", out, ("m", m), ("n", n))
}

/// Validates [`Kernels::matmul`](crate::Kernels::matmul) arguments.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    a: usize,
    trans_a: bool,
    b: usize,
    trans_b: bool,
    m: usize,
    k: usize,
    n: usize,
    out: usize,
) -> Result<(), KernelError> {
    if trans_a {
        check_matrix("a", a, ("k", k), ("m", m))?;
    } else {
        check_matrix("a", a, ("m", m), ("k", k))?;
    }
    if trans_b {
        check_matrix("b", b, ("n", n), ("k", k))?;
    } else {
        check_matrix("b", b, ("k", k), ("n", n))?;
    }
    check_matrix("out", out, ("m", m), ("n", n))
}

/// Validates [`Kernels::conv2d`](crate::Kernels::conv2d) arguments; returns the output shape.
pub(crate) fn conv2d(
    x: usize,
    x_shape: [usize; 4],
    w: usize,
    w_shape: [usize; 4],
    bias: Option<usize>,
    p: &Conv2dParams,
    out: usize,
) -> Result<[usize; 4], KernelError> {
    let out_shape = conv2d_out_shape(x_shape, w_shape, p)?;
    check_len(
        "x",
        x,
        product("x", &x_shape)?,
        format_args!("shape {x_shape:?}"),
    )?;
    check_len(
        "w",
        w,
        product("w", &w_shape)?,
        format_args!("shape {w_shape:?}"),
    )?;
    if let Some(bias) = bias {
        check_len("bias", bias, w_shape[0], "one per output channel")?;
    }
    check_len(
        "out",
        out,
        product("out", &out_shape)?,
        format_args!("shape {out_shape:?}"),
    )?;
    Ok(out_shape)
}

/// Validates [`Kernels::conv2d_backward_input`](crate::Kernels::conv2d_backward_input)
/// arguments; returns the convolution's output shape (`dy`'s).
pub(crate) fn conv2d_backward_input(
    dy: usize,
    w: usize,
    w_shape: [usize; 4],
    x_shape: [usize; 4],
    p: &Conv2dParams,
    dx: usize,
) -> Result<[usize; 4], KernelError> {
    let out_shape = conv2d_out_shape(x_shape, w_shape, p)?;
    check_shape("dy", dy, out_shape)?;
    check_shape("w", w, w_shape)?;
    check_shape("dx", dx, x_shape)?;
    Ok(out_shape)
}

/// Validates [`Kernels::conv2d_backward_weights`](crate::Kernels::conv2d_backward_weights)
/// arguments; returns the convolution's output shape (`dy`'s).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_backward_weights(
    x: usize,
    x_shape: [usize; 4],
    dy: usize,
    w_shape: [usize; 4],
    p: &Conv2dParams,
    dw: usize,
    db: Option<usize>,
) -> Result<[usize; 4], KernelError> {
    let out_shape = conv2d_out_shape(x_shape, w_shape, p)?;
    check_shape("x", x, x_shape)?;
    check_shape("dy", dy, out_shape)?;
    check_shape("dw", dw, w_shape)?;
    if let Some(db) = db {
        check_len("db", db, w_shape[0], "one per output channel")?;
    }
    Ok(out_shape)
}

/// Checks that slice `name` holds a tensor of `shape`.
fn check_shape(name: &str, len: usize, shape: [usize; 4]) -> Result<(), KernelError> {
    check_len(
        name,
        len,
        product(name, &shape)?,
        format_args!("shape {shape:?}"),
    )
}

/// Validates max/avg pooling arguments; returns the output shape.
pub(crate) fn pool2d(
    x: usize,
    x_shape: [usize; 4],
    p: &Pool2dParams,
    out: usize,
) -> Result<[usize; 4], KernelError> {
    let out_shape = pool2d_out_shape(x_shape, p)?;
    check_len(
        "x",
        x,
        product("x", &x_shape)?,
        format_args!("shape {x_shape:?}"),
    )?;
    check_len(
        "out",
        out,
        product("out", &out_shape)?,
        format_args!("shape {out_shape:?}"),
    )?;
    Ok(out_shape)
}

/// Validates max/avg pooling backward arguments (`x` for max pooling only); returns the
/// output shape (`dy`'s).
pub(crate) fn pool2d_backward(
    x: Option<usize>,
    x_shape: [usize; 4],
    p: &Pool2dParams,
    dy: usize,
    dx: usize,
) -> Result<[usize; 4], KernelError> {
    let out_shape = pool2d_out_shape(x_shape, p)?;
    if let Some(x) = x {
        check_shape("x", x, x_shape)?;
    }
    check_shape("dy", dy, out_shape)?;
    check_shape("dx", dx, x_shape)?;
    Ok(out_shape)
}

/// Validates [`Kernels::activation_backward`](crate::Kernels::activation_backward) arguments.
pub(crate) fn activation_backward(
    y: usize,
    dy: usize,
    act: Activation,
    dx: usize,
) -> Result<(), KernelError> {
    if matches!(act, Activation::Gelu | Activation::GeluErf) {
        return Err(KernelError::new(format!(
            "activation_backward: unsupported for {act:?}, whose derivative needs the activation's \
             input (the other activations' derivatives are functions of their output `y`)"
        )));
    }
    check_len("dy", dy, y, "the length of `y`")?;
    check_len("dx", dx, y, "the length of `y`")
}

/// Validates [`Kernels::softmax_cross_entropy`](crate::Kernels::softmax_cross_entropy)
/// arguments.
pub(crate) fn softmax_cross_entropy(
    logits: usize,
    labels: &[u32],
    classes: usize,
    grad: usize,
) -> Result<(), KernelError> {
    if classes == 0 {
        return Err(KernelError::new("`classes` is 0, expected > 0"));
    }
    let rows = labels.len();
    if rows == 0 {
        return Err(KernelError::new(
            "`labels` is empty, expected one label per row (the mean over no rows is undefined)",
        ));
    }
    check_matrix("logits", logits, ("rows", rows), ("classes", classes))?;
    check_len("grad", grad, logits, "the length of `logits`")?;
    if let Some((i, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(KernelError::new(format!(
            "`labels[{i}]` is {label}, expected a class index < classes {classes}"
        )));
    }
    Ok(())
}

/// Validates the arguments of an element-wise loss ([`Kernels::mse`](crate::Kernels::mse),
/// [`Kernels::bce_with_logits`](crate::Kernels::bce_with_logits)): `input` (named `name`),
/// `target` and `grad` of one non-zero length.
pub(crate) fn elementwise_loss(
    name: &str,
    input: usize,
    target: usize,
    grad: usize,
) -> Result<(), KernelError> {
    if input == 0 {
        return Err(KernelError::new(format!(
            "`{name}` is empty, expected at least one element (the mean over none is undefined)"
        )));
    }
    check_len(
        "target",
        target,
        input,
        format_args!("the length of `{name}`"),
    )?;
    check_len("grad", grad, input, format_args!("the length of `{name}`"))
}

/// Validates [`Kernels::sum_rows`](crate::Kernels::sum_rows) arguments.
pub(crate) fn sum_rows(x: usize, rows: usize, cols: usize, out: usize) -> Result<(), KernelError> {
    check_matrix("x", x, ("rows", rows), ("cols", cols))?;
    check_len("out", out, cols, format_args!("cols={cols}"))
}

/// Validates global average pooling arguments; returns `h·w`.
pub(crate) fn global_avg_pool(
    x: usize,
    x_shape: [usize; 4],
    out: usize,
) -> Result<usize, KernelError> {
    let [n, c, h, w] = x_shape;
    let plane = product("x", &[h, w])?;
    if plane == 0 {
        return Err(KernelError::new(format!(
            "`x_shape` {x_shape:?} has an empty spatial extent, expected h > 0 and w > 0"
        )));
    }
    check_len(
        "x",
        x,
        product("x", &x_shape)?,
        format_args!("shape {x_shape:?}"),
    )?;
    check_matrix("out", out, ("n", n), ("c", c))?;
    Ok(plane)
}

/// Validates softmax arguments.
pub(crate) fn softmax(x: usize, row_len: usize) -> Result<(), KernelError> {
    if row_len == 0 {
        return Err(KernelError::new("`row_len` is 0, expected > 0"));
    }
    if !x.is_multiple_of(row_len) {
        return Err(KernelError::new(format!(
            "`x` has length {x}, expected a multiple of `row_len` {row_len}"
        )));
    }
    Ok(())
}

/// Validates broadcasting binary-op arguments.
pub(crate) fn broadcast(a: usize, b: usize, out: usize) -> Result<(), KernelError> {
    if b == 0 {
        if a != 0 {
            return Err(KernelError::new(format!(
                "`b` is empty, expected a length dividing `a`'s {a}"
            )));
        }
    } else if !a.is_multiple_of(b) {
        return Err(KernelError::new(format!(
            "`b` has length {b}, expected a length dividing `a`'s {a}"
        )));
    }
    check_len("out", out, a, "the length of `a`")
}
