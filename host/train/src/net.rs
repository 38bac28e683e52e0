//! The network a [`Spec`] declares: its parameters (PyTorch
//! `state_dict` names and layouts) and the forward and backward passes over a batch, on
//! `tensorlet-kernels`.
//!
//! A pass keeps every layer's output in a [`Tape`] (one per worker thread, reused across
//! batches); [`Network::backward`] walks it in reverse and writes each parameter's gradient
//! for that batch into a [`Grads`]. The trainer splits a batch over its threads, each with
//! its own tape and gradients, and sums them: every kernel call here is single-threaded.
//! Each thread runs its share in passes of at most [`Network::rows_per_pass`] examples
//! whose gradients add up (`accumulate`), so a pass's activations stay in cache; dense and
//! conv weights are packed once per update ([`Network::pack`]) for all passes.

use tensorlet_kernels::{
    Activation, Conv2dParams, Kernels, PackedConv2d, PackedConv2dGrad, PackedDense, Pool2dParams,
};

use std::sync::{Mutex, PoisonError};

use crate::data::Rng;
use crate::spec::{LayerSpec, Spec, SpecError, pool_params};

/// One named parameter tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// `state_dict` name, e.g. `conv1.weight`.
    pub name: String,
    /// Shape, e.g. `[32, 1, 3, 3]`.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// A layer with its geometry resolved and its parameters' indices in [`Network::params`].
#[derive(Clone, Debug)]
enum Layer {
    Dense {
        w: usize,
        b: Option<usize>,
        inputs: usize,
        outputs: usize,
    },
    Conv {
        w: usize,
        b: Option<usize>,
        w_shape: [usize; 4],
        params: Conv2dParams,
        in_shape: [usize; 3],
    },
    Pool {
        max: bool,
        params: Pool2dParams,
        in_shape: [usize; 3],
    },
    /// Flatten and (in inference) dropout: the values pass through.
    Identity,
    Act(Activation),
    Softmax(usize),
    Dropout(f32),
}

/// The network: layers, parameters, per-example shapes.
#[derive(Clone, Debug)]
pub struct Network {
    layers: Vec<Layer>,
    /// Every parameter, in layer order (`weight` before `bias`).
    pub params: Vec<Param>,
    /// Values per example at the input, then after each layer.
    sizes: Vec<usize>,
}

/// Every layer's output for one batch, kept for the backward pass.
#[derive(Default)]
pub struct Tape {
    /// `acts[0]` is the input, `acts[i + 1]` layer `i`'s output.
    acts: Vec<Vec<f32>>,
    /// Dropout masks (already divided by `1 - p`), by layer index.
    masks: Vec<Vec<f32>>,
    /// Two gradient buffers, swapped layer by layer.
    grad: [Vec<f32>; 2],
    /// One layer's parameter gradients for a pass that adds them to the batch's.
    part: Vec<f32>,
    rows: usize,
}

/// One gradient per parameter, same shapes as [`Network::params`].
pub type Grads = Vec<Vec<f32>>;

/// The dense and conv layers' weights packed for the kernels ([`Network::pack`]), by layer
/// index: packed once after each update and shared by every pass until the next, instead of
/// packed again by each pass.
pub struct Packed {
    /// For the forward pass.
    forward: Vec<Option<ForwardPack>>,
    /// For the input gradients, when packed for training (else empty).
    backward: Vec<Option<BackwardPack>>,
}

/// One layer's packed weights for the forward pass.
enum ForwardPack {
    Dense(PackedDense),
    Conv(PackedConv2d),
}

/// One layer's packed weights for its input gradient.
enum BackwardPack {
    /// The weights' transpose (`[in, out]`), for `dX = dY · W` as a dense layer.
    Dense(PackedDense),
    Conv(PackedConv2dGrad),
}

/// A piece of work for a [`Join`].
pub type Task<'a> = &'a (dyn Fn() + Sync);

/// Runs both of its tasks, in turn or at once ([`Network::pack_joined`]).
pub type Join<'a> = dyn Fn(Task<'_>, Task<'_>) + 'a;

/// `m` locked, whether or not another thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Network {
    /// Builds the network of `spec` with PyTorch's default initialisation (weights and
    /// biases ~ U(-1/√fan_in, 1/√fan_in)), drawn from `rng` in layer order.
    pub fn new(spec: &Spec, rng: &mut Rng) -> Result<Network, SpecError> {
        let shapes = spec.check()?;
        let mut layers = Vec::with_capacity(spec.layers.len());
        let mut params = Vec::new();
        let mut sizes = vec![spec.input.iter().product()];
        let mut input = spec.input.clone();
        let mut add = |name: String, shape: Vec<usize>, fan_in: usize, rng: &mut Rng| {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let n = shape.iter().product();
            let data = (0..n).map(|_| rng.uniform(-bound, bound)).collect();
            params.push(Param { name, shape, data });
            params.len() - 1
        };
        for (layer, out) in spec.layers.iter().zip(&shapes) {
            let compiled = match *layer {
                LayerSpec::Dense {
                    ref name,
                    out_features,
                    bias,
                } => {
                    let inputs = input[0];
                    let w = add(
                        format!("{name}.weight"),
                        vec![out_features, inputs],
                        inputs,
                        rng,
                    );
                    let b =
                        bias.then(|| add(format!("{name}.bias"), vec![out_features], inputs, rng));
                    Layer::Dense {
                        w,
                        b,
                        inputs,
                        outputs: out_features,
                    }
                }
                LayerSpec::Conv2d {
                    ref name,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups,
                    bias,
                } => {
                    let in_shape = [input[0], input[1], input[2]];
                    let w_shape = [out_channels, input[0] / groups, kernel, kernel];
                    let fan_in = w_shape[1] * kernel * kernel;
                    let w = add(format!("{name}.weight"), w_shape.to_vec(), fan_in, rng);
                    let b =
                        bias.then(|| add(format!("{name}.bias"), vec![out_channels], fan_in, rng));
                    Layer::Conv {
                        w,
                        b,
                        w_shape,
                        params: Conv2dParams {
                            stride: (stride, stride),
                            padding: (padding, padding),
                            dilation: (1, 1),
                            groups,
                        },
                        in_shape,
                    }
                }
                LayerSpec::MaxPool2d {
                    kernel,
                    stride,
                    padding,
                }
                | LayerSpec::AvgPool2d {
                    kernel,
                    stride,
                    padding,
                } => Layer::Pool {
                    max: matches!(layer, LayerSpec::MaxPool2d { .. }),
                    params: pool_params(kernel, stride, padding),
                    in_shape: [input[0], input[1], input[2]],
                },
                LayerSpec::Flatten => Layer::Identity,
                LayerSpec::Relu => Layer::Act(Activation::Relu),
                LayerSpec::Sigmoid => Layer::Act(Activation::Sigmoid),
                LayerSpec::Tanh => Layer::Act(Activation::Tanh),
                LayerSpec::Softmax => Layer::Softmax(input[0]),
                LayerSpec::Dropout { p } => Layer::Dropout(p),
            };
            layers.push(compiled);
            sizes.push(out.iter().product());
            input = out.clone();
        }
        Ok(Network {
            layers,
            params,
            sizes,
        })
    }

    /// Values per example at the input.
    pub fn input_len(&self) -> usize {
        self.sizes[0]
    }

    /// Values per example at the output.
    pub fn output_len(&self) -> usize {
        *self.sizes.last().unwrap_or(&0)
    }

    /// The dense and conv layers' current weights packed for [`Network::forward`] and, with
    /// `backward`, for [`Network::backward`] too; pack again after the parameters change.
    pub fn pack(&self, k: &Kernels, backward: bool) -> Packed {
        self.pack_joined(k, backward, &|forward, backward| {
            forward();
            backward();
        })
    }

    /// [`Network::pack`] with its two halves, the forward weights and the input-gradient
    /// weights, handed to `join`, which must run both (a trainer runs them on two threads:
    /// they cost about the same, and nothing else runs while the weights are packed).
    pub fn pack_joined(&self, k: &Kernels, backward: bool, join: &Join<'_>) -> Packed {
        let (forward, grads) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        join(&|| *lock(&forward) = self.pack_forward(k), &|| {
            if backward {
                *lock(&grads) = self.pack_backward(k);
            }
        });
        Packed {
            forward: forward.into_inner().unwrap_or_else(PoisonError::into_inner),
            backward: grads.into_inner().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// The weights of the forward pass, by layer.
    fn pack_forward(&self, k: &Kernels) -> Vec<Option<ForwardPack>> {
        let ok = "shapes checked by Network::new";
        self.layers
            .iter()
            .map(|layer| match *layer {
                Layer::Dense {
                    w,
                    b,
                    inputs,
                    outputs,
                } => {
                    let w = &self.params[w].data;
                    let b = b.map(|b| &self.params[b].data[..]);
                    Some(ForwardPack::Dense(
                        k.pack_dense(w, outputs, inputs, b).expect(ok),
                    ))
                }
                Layer::Conv {
                    w,
                    b,
                    w_shape,
                    ref params,
                    ..
                } => {
                    let w = &self.params[w].data;
                    let b = b.map(|b| &self.params[b].data[..]);
                    Some(ForwardPack::Conv(
                        k.pack_conv2d(w, w_shape, b, params).expect(ok),
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The weights of the input gradients, by layer (none for the first layer, whose input
    /// gradient is never computed).
    fn pack_backward(&self, k: &Kernels) -> Vec<Option<BackwardPack>> {
        let ok = "shapes checked by Network::new";
        self.layers
            .iter()
            .enumerate()
            .map(|(i, layer)| match *layer {
                _ if i == 0 => None,
                Layer::Dense {
                    w, inputs, outputs, ..
                } => {
                    let w = &self.params[w].data;
                    Some(BackwardPack::Dense(
                        k.pack_dense(&transpose(w, outputs, inputs), inputs, outputs, None)
                            .expect(ok),
                    ))
                }
                Layer::Conv {
                    w,
                    w_shape,
                    ref params,
                    ..
                } => {
                    let w = &self.params[w].data;
                    Some(BackwardPack::Conv(
                        k.pack_conv2d_backward_input(w, w_shape, params).expect(ok),
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// Most examples per forward and backward pass: as many as keep one pass's activations
    /// (every layer's output for those examples) within [`PASS_BYTES`], at least one. A
    /// worker's share of a batch goes through in passes of at most this many and sums their
    /// gradients, so that each layer's output is read back by the next layer and by the
    /// backward pass from cache rather than from memory.
    pub fn rows_per_pass(&self) -> usize {
        let per_row = self.sizes.iter().sum::<usize>().max(1) * 4;
        (PASS_BYTES / per_row).max(1)
    }

    /// Whether the last layer is a softmax (skipped by [`Network::forward`] when it is asked
    /// for logits).
    pub fn ends_in_softmax(&self) -> bool {
        matches!(self.layers.last(), Some(Layer::Softmax(_)))
    }

    /// Zeroed gradients, one per parameter.
    pub fn zero_grads(&self) -> Grads {
        self.params
            .iter()
            .map(|p| vec![0.0; p.data.len()])
            .collect()
    }

    /// Runs `rows` examples `x` through the network, recording every output in `tape`, and
    /// returns the output: logits when `logits` is set (a final softmax is skipped), else
    /// what the deployed function computes. `dropout` is the RNG of a training pass (dropout
    /// active), `None` in evaluation. `packed` is [`Network::pack`] of these parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<'t>(
        &self,
        k: &Kernels,
        packed: &Packed,
        x: &[f32],
        rows: usize,
        logits: bool,
        mut dropout: Option<&mut Rng>,
        tape: &'t mut Tape,
    ) -> &'t [f32] {
        debug_assert_eq!(x.len(), rows * self.input_len());
        tape.rows = rows;
        tape.acts.resize_with(self.layers.len() + 1, Vec::new);
        tape.masks.resize_with(self.layers.len(), Vec::new);
        tape.acts[0].clear();
        tape.acts[0].extend_from_slice(x);
        let mut last = 0;
        let mut i = 0;
        while i < self.layers.len() {
            let layer = &self.layers[i];
            if logits && matches!(layer, Layer::Softmax(_)) {
                break;
            }
            // A dense or conv layer followed by an activation runs it fused: the result
            // goes straight to the activation's slot (the activation's backward needs only
            // its output, the layer's backward only its input), the layer's own slot stays
            // empty.
            let fused = match (layer, self.layers.get(i + 1)) {
                (Layer::Dense { .. } | Layer::Conv { .. }, Some(&Layer::Act(a))) => Some(a),
                _ => None,
            };
            let slot = i + 1 + usize::from(fused.is_some());
            let (done, rest) = tape.acts.split_at_mut(i + 1);
            let input = &done[i];
            if fused.is_some() {
                rest[0].clear();
            }
            let out = &mut rest[slot - i - 1];
            // Every kernel below overwrites all of `out`: no zeroing pass.
            out.resize(rows * self.sizes[slot], 0.0);
            let act = fused.unwrap_or(Activation::None);
            // Shapes were checked when the network was built, and `x.len()` by the caller,
            // so a kernel error here is a bug, not bad input.
            let ok = "shapes checked by Network::new";
            match *layer {
                Layer::Dense { .. } => {
                    let Some(Some(ForwardPack::Dense(w))) = packed.forward.get(i) else {
                        panic!("layer {i} is dense but was not packed: Network::pack")
                    };
                    k.dense_packed(input, rows, w, act, out).expect(ok)
                }
                Layer::Conv {
                    in_shape: [c, h, wd],
                    ..
                } => {
                    let Some(Some(ForwardPack::Conv(w))) = packed.forward.get(i) else {
                        panic!("layer {i} is a conv but was not packed: Network::pack")
                    };
                    k.conv2d_packed(input, [rows, c, h, wd], w, act, out)
                        .expect(ok)
                }
                Layer::Pool {
                    max,
                    ref params,
                    in_shape: [c, h, w],
                } => {
                    let shape = [rows, c, h, w];
                    if max {
                        k.max_pool2d(input, shape, params, out).expect(ok)
                    } else {
                        k.avg_pool2d(input, shape, params, out).expect(ok)
                    }
                }
                Layer::Identity => out.copy_from_slice(input),
                Layer::Act(act) => {
                    out.copy_from_slice(input);
                    k.activate(out, act);
                }
                Layer::Softmax(n) => {
                    out.copy_from_slice(input);
                    k.softmax(out, n).expect(ok);
                }
                Layer::Dropout(p) => match dropout.as_deref_mut() {
                    Some(rng) if p > 0.0 => {
                        let mask = &mut tape.masks[i];
                        mask.clear();
                        let keep = 1.0 / (1.0 - p);
                        mask.extend(
                            (0..input.len()).map(|_| if rng.next_f32() < p { 0.0 } else { keep }),
                        );
                        for ((o, &v), &m) in out.iter_mut().zip(input).zip(mask.iter()) {
                            *o = v * m;
                        }
                    }
                    _ => {
                        tape.masks[i].clear();
                        out.copy_from_slice(input);
                    }
                },
            }
            last = slot;
            i = slot;
        }
        &tape.acts[last]
    }

    /// Back-propagates `d_out` (the loss's gradient with respect to the output
    /// [`Network::forward`] returned with `logits` set, for the tape's rows) and writes
    /// every parameter's gradient into `grads`: overwritten, or added to what `grads` holds
    /// when `accumulate` (the later passes of a batch). `packed` is [`Network::pack`] of these
    /// parameters with `backward` set.
    pub fn backward(
        &self,
        k: &Kernels,
        packed: &Packed,
        tape: &mut Tape,
        d_out: &[f32],
        grads: &mut Grads,
        accumulate: bool,
    ) {
        let rows = tape.rows;
        let ok = "shapes checked by Network::new";
        let end = if self.ends_in_softmax() {
            self.layers.len() - 1
        } else {
            self.layers.len()
        };
        // The buffers only ever grow (to the largest gradient, in the first step): `dy` and
        // `dx` are their first `dy_len` and `rows · sizes[i]` values. Resizing them to each
        // layer's size zero-filled every growth again, a memset of several MB per step.
        let [mut dy_buf, mut dx_buf] = std::mem::take(&mut tape.grad);
        // A layer's weight and bias gradients for this pass when they are added to `grads`
        // afterwards (the conv kernel and the bias sums overwrite their output).
        let mut part = std::mem::take(&mut tape.part);
        let grow = |buf: &mut Vec<f32>, len: usize| {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        };
        grow(&mut dy_buf, d_out.len());
        dy_buf[..d_out.len()].copy_from_slice(d_out);
        let mut dy_len = d_out.len();
        // Set by a max pool whose input is a ReLU's output: the pool's backward did the
        // ReLU's too, which then passes its gradient through.
        let mut relu_done = false;
        for i in (0..end).rev() {
            if std::mem::take(&mut relu_done) {
                continue;
            }
            let input = &tape.acts[i];
            let output = &tape.acts[i + 1];
            // The first layer's input gradient is never used.
            let need_dx = i > 0;
            let dx_len = rows * self.sizes[i];
            grow(&mut dx_buf, dx_len);
            let dy = &dy_buf[..dy_len];
            // Every kernel below overwrites all of `dx`.
            let dx = &mut dx_buf[..dx_len];
            match self.layers[i] {
                Layer::Dense {
                    w,
                    b,
                    inputs,
                    outputs,
                } => {
                    let (gw, gb) = split_grads(grads, w, b);
                    // dW [out, in] = dYᵀ · X.
                    k.matmul(
                        dy, true, input, false, outputs, rows, inputs, accumulate, gw,
                    )
                    .expect(ok);
                    if let Some(gb) = gb {
                        if accumulate {
                            part.resize(outputs, 0.0);
                            k.sum_rows(dy, rows, outputs, &mut part).expect(ok);
                            add(gb, &part);
                        } else {
                            k.sum_rows(dy, rows, outputs, gb).expect(ok);
                        }
                    }
                    if need_dx {
                        // dX [rows, in] = dY · W: a dense layer of `W`'s transpose.
                        let Some(Some(BackwardPack::Dense(wt))) = packed.backward.get(i) else {
                            panic!("layer {i} was not packed for backward: Network::pack")
                        };
                        k.dense_packed(dy, rows, wt, Activation::None, dx)
                            .expect(ok);
                    }
                }
                Layer::Conv {
                    w,
                    b,
                    w_shape,
                    ref params,
                    in_shape: [c, h, wd],
                } => {
                    let x_shape = [rows, c, h, wd];
                    let (gw, gb) = split_grads(grads, w, b);
                    if accumulate {
                        let wl = gw.len();
                        part.resize(wl + gb.as_ref().map_or(0, |b| b.len()), 0.0);
                        let (pw, pb) = part.split_at_mut(wl);
                        let pb = gb.is_some().then_some(pb);
                        k.conv2d_backward_weights(input, x_shape, dy, w_shape, params, pw, pb)
                            .expect(ok);
                        add(gw, &part[..wl]);
                        if let Some(gb) = gb {
                            add(gb, &part[wl..]);
                        }
                    } else {
                        k.conv2d_backward_weights(input, x_shape, dy, w_shape, params, gw, gb)
                            .expect(ok);
                    }
                    if need_dx {
                        let Some(Some(BackwardPack::Conv(wg))) = packed.backward.get(i) else {
                            panic!("layer {i} was not packed for backward: Network::pack")
                        };
                        k.conv2d_backward_input_packed(dy, wg, x_shape, dx)
                            .expect(ok);
                    }
                }
                Layer::Pool {
                    max,
                    ref params,
                    in_shape: [c, h, w],
                } => {
                    let shape = [rows, c, h, w];
                    if max && i > 0 && matches!(self.layers[i - 1], Layer::Act(Activation::Relu)) {
                        // The pool sends each window's gradient to its largest input, which
                        // the ReLU passes on where that input is positive: where the window's
                        // maximum (the pool's output) is. So the ReLU's backward is the pool's
                        // with the gradient of windows whose maximum is not positive zeroed,
                        // a pass over the pooled values instead of the ReLU's whole output:
                        // the ReLU's backward applied to them (a select, not a branch per
                        // value on the sign of an activation).
                        grow(&mut part, dy_len);
                        let masked = &mut part[..dy_len];
                        k.activation_backward(output, dy, Activation::Relu, masked)
                            .expect(ok);
                        relu_done = true;
                        k.max_pool2d_backward(input, shape, params, masked, dx)
                            .expect(ok);
                    } else if max {
                        k.max_pool2d_backward(input, shape, params, dy, dx)
                            .expect(ok);
                    } else {
                        k.avg_pool2d_backward(shape, params, dy, dx).expect(ok);
                    }
                }
                Layer::Identity => dx.copy_from_slice(dy),
                Layer::Act(act) => k.activation_backward(output, dy, act, dx).expect(ok),
                Layer::Softmax(_) => unreachable!("a softmax is only ever the last layer"),
                Layer::Dropout(_) => {
                    let mask = &tape.masks[i];
                    if mask.is_empty() {
                        dx.copy_from_slice(dy);
                    } else {
                        for ((d, &g), &m) in dx.iter_mut().zip(dy.iter()).zip(mask) {
                            *d = g * m;
                        }
                    }
                }
            }
            std::mem::swap(&mut dy_buf, &mut dx_buf);
            dy_len = dx_len;
        }
        tape.grad = [dy_buf, dx_buf];
        tape.part = part;
    }
}

/// Bytes of activations per training pass (see [`Network::rows_per_pass`]). On the seed
/// CNN (156 KB of activations per example; a share of a batch of 128 on two threads is
/// 10 MB) passes of at most 26 examples (22, 21 and 21 of a share of 64) trained an epoch
/// 13–16% faster than whole shares on a 2-core Xeon; 1 MiB was slower than whole shares,
/// 2 MiB about even, 6 and 8 MiB no better than 4.
pub const PASS_BYTES: usize = 4 << 20;

/// The transpose `[cols, rows]` of the row-major `[rows, cols]` matrix `m`, made a block
/// of 16 rows at a time: each column's 16 values go to one cache line of the result while
/// the 16 rows are read along. (Row by row, every value went to another line, and a
/// 128 × 1600 matrix's transpose cycled through 800 KB of lines per row.)
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 16;
    let mut t = vec![0.0; m.len()];
    for r0 in (0..rows).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(rows);
        for c in 0..cols {
            let dst = &mut t[c * rows..][r0..r1];
            for (r, d) in (r0..r1).zip(dst) {
                *d = m[r * cols + c];
            }
        }
    }
    t
}

/// `acc += g`.
pub(crate) fn add(acc: &mut [f32], g: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(g) {
        *a += b;
    }
}

/// The gradients of a weight and its optional bias, borrowed together.
fn split_grads(grads: &mut Grads, w: usize, b: Option<usize>) -> (&mut [f32], Option<&mut [f32]>) {
    match b {
        // Biases come right after their weight (see `Network::new`).
        Some(b) => {
            debug_assert_eq!(b, w + 1);
            let (left, right) = grads.split_at_mut(b);
            (&mut left[w], Some(&mut right[0]))
        }
        None => (&mut grads[w], None),
    }
}

#[cfg(test)]
mod tests {
    use super::transpose;

    #[test]
    fn transpose_matches_the_definition() {
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
        // Rows past one block and a partial last block.
        let (rows, cols) = (37, 5);
        let m: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let t = transpose(&m, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], m[r * cols + c], "({r}, {c})");
            }
        }
    }
}
