//! `mnist-cnn`: a small image classifier in the PyTorch MNIST-example shape.
//!
//! `conv1` (3×3, stride 1, no padding, bias, relu) → max-pool 2×2/2 → `conv2` (3×3, bias,
//! relu) → max-pool 2×2/2 → flatten in (C, H, W) order → `fc1` (bias, relu) → `fc2` (bias)
//! → softmax, giving `probs` [N, K].
//!
//! Channel counts and classes come from the weights: `conv1.weight` [c1, C, 3, 3] (c1 = 32
//! in the reference models), `conv2.weight` [c2, c1, 3, 3] (c2 = 64), `fc1.weight`
//! [hidden, F] (hidden = 128), `fc2.weight` [K, hidden].
//!
//! Two alternative inputs:
//! - `image` [N, C, H, W] f32: any H, W whose feature map after the conv/pool stack has
//!   `c2 · h · w = F` elements, where `h = ((H − 2) / 2 − 2) / 2` (floor divisions; the
//!   same for `w`).
//! - `png` u8 (the bytes of a PNG or binary PGM file): decoded in the sandbox by
//!   [`tensorlet_sdk::image::prepare`] (scaled to [0, 1], converted to C channels, resized
//!   bilinearly) to the square size the weights imply, then classified as a batch of one.
//!   That size is **H = W = 4·s + 8** where `F = c2 · s²`. Every H in `4s + 6 ..= 4s + 9`
//!   gives the same s; `4s + 8` is the one the reference models were trained on: 28 for
//!   MNIST (F = 1600, s = 5) and 100 for the 3×100×100 variant (s = 23).

use tensorlet_sdk::{
    Activation, Conv2dParams, Dtype, Error, Function, FunctionMetadata, IoSpec, NamedTensor,
    Pool2dParams, Result, Tensor, format_shape, image, weights,
};

/// The `mnist-cnn` inference function.
struct MnistCnn;

/// Images per pass through the network: a larger batch goes through in chunks of this
/// many, so that conv1's output (86.5 KB per MNIST image) is still in cache when the
/// pooling reads it; a whole batch of 256 writes 22 MB to memory and reads it back.
const CHUNK: u32 = 16;

/// The input a request gave: decoded images, or an image file to decode.
enum Input<'a> {
    /// `image`: an NCHW f32 tensor.
    Image(&'a Tensor),
    /// `png`: the bytes of a PNG or PGM file.
    File(&'a Tensor),
}

/// The network's weights, with their shapes checked against one another.
struct Net {
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
    /// Input channels C.
    channels: u32,
    /// Output channels of `conv2`, c2.
    conv2_channels: u32,
    /// In-features of `fc1`, F.
    features: u32,
}

/// Loads `<name>.weight` with shape `expected` and `<name>.bias` [out], where `out` is the
/// weight's first dimension; returns the pair and the weight's shape.
fn layer(name: &str, expected: &[Option<u32>]) -> Result<((Tensor, Tensor), Vec<u32>)> {
    let weight_name = format!("{name}.weight");
    let bias_name = format!("{name}.bias");
    let shape = weights::shape_of(&weight_name, expected)?;
    weights::shape_of(&bias_name, &[Some(shape[0])])?;
    let pair = (weights::get(&weight_name)?, weights::get(&bias_name)?);
    Ok((pair, shape))
}

/// The side of the feature map after conv 3×3 → pool 2 → conv 3×3 → pool 2 for an input
/// side `n`: `((n − 2) / 2 − 2) / 2`, or `None` if the input is too small (n < 10).
fn feature_side(n: u32) -> Option<u32> {
    let side = (n.checked_sub(2)? / 2).checked_sub(2)? / 2;
    (side > 0).then_some(side)
}

impl Net {
    /// Loads and cross-checks every weight.
    fn load() -> Result<Net> {
        let (conv1, s1) = layer("conv1", &[None, None, Some(3), Some(3)])?;
        let (conv2, s2) = layer("conv2", &[None, Some(s1[0]), Some(3), Some(3)])?;
        let (fc1, f1) = layer("fc1", &[None, None])?;
        let (fc2, _) = layer("fc2", &[None, Some(f1[0])])?;
        Ok(Net {
            conv1,
            conv2,
            fc1,
            fc2,
            channels: s1[1],
            conv2_channels: s2[0],
            features: f1[1],
        })
    }

    /// The square input side the weights imply, `4·s + 8` where `F = c2 · s²`.
    fn input_side(&self) -> Result<u32> {
        let (f, c2) = (self.features, self.conv2_channels);
        let per_channel = f / c2.max(1);
        let s = per_channel.isqrt();
        if c2 == 0 || f % c2 != 0 || s == 0 || s * s != per_channel {
            return Err(Error::shape_mismatch(format!(
                "`fc1.weight` has {f} in-features, which is not {c2}·s·s for a whole s, so \
                 the weights imply no square image size"
            )));
        }
        Ok(4 * s + 8)
    }

    /// Checks `x` against the weights and runs the network on it.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        if dtype != Dtype::F32 {
            return Err(Error::invalid_input(format!(
                "input `image` has dtype {dtype:?}, expected F32"
            )));
        }
        let shape = x.shape();
        let &[_, c, h, w] = shape.as_slice() else {
            return Err(Error::shape_mismatch(format!(
                "input `image` has shape {}, expected [N, {}, H, W]",
                format_shape(&shape),
                self.channels
            )));
        };
        if c != self.channels {
            return Err(Error::shape_mismatch(format!(
                "input `image` has shape {}, expected [N, {}, H, W] (the in-channels of \
                 `conv1.weight`)",
                format_shape(&shape),
                self.channels
            )));
        }
        let fits = match (feature_side(h), feature_side(w)) {
            (Some(fh), Some(fw)) => {
                u64::from(self.conv2_channels) * u64::from(fh) * u64::from(fw)
                    == u64::from(self.features)
            }
            _ => false,
        };
        if !fits {
            let implied = match self.input_side() {
                Ok(side) => format!("; the weights imply images of {side} × {side}"),
                Err(_) => "; no square image size gives that many".to_owned(),
            };
            return Err(Error::shape_mismatch(format!(
                "input `image` has shape {}, but `fc1.weight` expects {} features \
                 ({} channels × h × w after the two conv/pool stages){implied}",
                format_shape(&shape),
                self.features,
                self.conv2_channels
            )));
        }

        let n = shape[0];
        let pixels = u32::try_from(u64::from(c) * u64::from(h) * u64::from(w)).map_err(|_| {
            Error::limit_exceeded(format!(
                "input `image` has shape {}: more than 2^32 values per image",
                format_shape(&shape)
            ))
        })?;
        if n <= CHUNK || pixels == 0 {
            return self.network(x);
        }
        // Run the network a chunk of images at a time, so each conv output is read back by
        // its pooling from cache rather than from memory. The chunks are gathered in the
        // host (rows of the batch seen as [N, C·H·W]), so the images never cross into this
        // sandbox and back (a copy of the whole batch out, and of each chunk in, with page
        // faults on fresh memory on both sides).
        let rows = x.reshape(&[n, pixels])?;
        let mut probs = Vec::new();
        let mut classes = 0;
        for start in (0..n).step_by(CHUNK as usize) {
            let len = CHUNK.min(n - start);
            let ids: Vec<u32> = (start..start + len).collect();
            let chunk = rows.embedding(&ids)?.reshape(&[len, c, h, w])?;
            let p = self.network(&chunk)?;
            classes = p.shape().get(1).copied().unwrap_or(0);
            if start == 0 {
                probs.reserve(n as usize * classes as usize);
            }
            probs.extend(p.to_f32()?);
        }
        Tensor::from_f32(&[n, classes], &probs)
    }

    /// The network on a checked batch `x`.
    fn network(&self, x: &Tensor) -> Result<Tensor> {
        let conv = Conv2dParams::default();
        let pool = Pool2dParams::square(2, 2);
        let relu = Activation::Relu;
        let x = x
            .conv2d(&self.conv1.0, Some(&self.conv1.1), conv, relu)?
            .max_pool2d(pool)?;
        let x = x
            .conv2d(&self.conv2.0, Some(&self.conv2.1), conv, relu)?
            .max_pool2d(pool)?;
        x.flatten()?
            .dense(&self.fc1.0, Some(&self.fc1.1), relu)?
            .dense(&self.fc2.0, Some(&self.fc2.1), Activation::None)?
            .softmax()
    }

    /// Decodes a PNG or PGM file to the implied size and channels, as [1, C, H, H].
    fn decode(&self, file: &Tensor) -> Result<Tensor> {
        let dtype = file.dtype();
        if dtype != Dtype::U8 {
            return Err(Error::invalid_input(format!(
                "input `png` has dtype {dtype:?}, expected U8 (the bytes of a PNG or PGM file)"
            )));
        }
        let side = self.input_side()? as usize;
        let bytes = file.to_u8()?;
        image::prepare(&bytes, self.channels as usize, side, side)
            .map_err(|e| match e {
                Error::InvalidInput(m) => Error::invalid_input(format!("input `png`: {m}")),
                other => other,
            })?
            .to_tensor()
    }
}

impl Function for MnistCnn {
    fn metadata() -> FunctionMetadata {
        let f32_spec = |name: &str, shape: &[i64], description: &str| {
            IoSpec::new(name, Dtype::F32, shape, description)
        };
        FunctionMetadata {
            name: "mnist-cnn".to_owned(),
            description: "Classifies an image with two 3x3 conv + 2x2 max-pool stages and two \
                          dense layers, returning class probabilities. Give either `image` \
                          or `png`; a `png` file is decoded, converted to C channels (BT.601 \
                          luma or gray replication), resized bilinearly to H = W = 4s + 8 \
                          where fc1's in-features F = c2·s·s (28 for MNIST), and scaled to \
                          [0, 1]."
                .to_owned(),
            inputs: vec![
                f32_spec(
                    "image",
                    &[-1, -1, -1, -1],
                    "NCHW images [N, C, H, W], values as in training (MNIST: [N, 1, 28, 28] \
                     in [0, 1]); C = conv1's in-channels, H and W as fc1's in-features imply.",
                ),
                IoSpec::new(
                    "png",
                    Dtype::U8,
                    &[-1],
                    "Alternative to `image`: the bytes of one PNG or binary PGM (P5) file.",
                ),
            ],
            outputs: vec![f32_spec(
                "probs",
                &[-1, -1],
                "Class probabilities [N, K] (softmax), K = fc2's out-features (10 for MNIST).",
            )],
            weights: vec![
                f32_spec(
                    "conv1.weight",
                    &[-1, -1, 3, 3],
                    "[c1, C, 3, 3]; c1 = 32, C = 1 for MNIST.",
                ),
                f32_spec("conv1.bias", &[-1], "[c1]."),
                f32_spec(
                    "conv2.weight",
                    &[-1, -1, 3, 3],
                    "[c2, c1, 3, 3]; c2 = 64 for MNIST.",
                ),
                f32_spec("conv2.bias", &[-1], "[c2]."),
                f32_spec(
                    "fc1.weight",
                    &[-1, -1],
                    "[hidden, c2·h·w]; [128, 1600] for MNIST.",
                ),
                f32_spec("fc1.bias", &[-1], "[hidden]."),
                f32_spec("fc2.weight", &[-1, -1], "[K, hidden]; [10, 128] for MNIST."),
                f32_spec("fc2.bias", &[-1], "[K]."),
            ],
        }
    }

    fn infer(inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>> {
        if let Some(other) = inputs.iter().find(|t| t.name != "image" && t.name != "png") {
            return Err(Error::invalid_input(format!(
                "unexpected input `{}`; `mnist-cnn` takes `image` or `png`",
                other.name
            )));
        }
        let input = match (
            NamedTensor::find(&inputs, "image"),
            NamedTensor::find(&inputs, "png"),
        ) {
            (Some(x), None) => Input::Image(x),
            (None, Some(file)) => Input::File(file),
            (Some(_), Some(_)) => {
                return Err(Error::invalid_input(
                    "give either `image` or `png`, not both".to_owned(),
                ));
            }
            (None, None) => {
                return Err(Error::not_found(format!(
                    "input `image` or `png` is required; got {}",
                    NamedTensor::names(&inputs)
                )));
            }
        };
        let net = Net::load()?;
        let probs = match input {
            Input::Image(x) => net.forward(x)?,
            Input::File(file) => net.forward(&net.decode(file)?)?,
        };
        Ok(vec![NamedTensor::new("probs", probs)])
    }
}

tensorlet_sdk::export!(MnistCnn);

#[cfg(test)]
mod tests {
    use super::feature_side;

    #[test]
    fn feature_sides() {
        assert_eq!(feature_side(28), Some(5));
        assert_eq!(feature_side(100), Some(23));
        assert_eq!(feature_side(10), Some(1));
        assert_eq!(feature_side(9), None);
        assert_eq!(feature_side(0), None);
        for s in 1..200 {
            assert_eq!(feature_side(4 * s + 8), Some(s));
        }
    }
}
