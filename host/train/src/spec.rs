//! The training spec: a TOML file declaring the network as a sequence of layers, the loss,
//! the optimizer and its schedule, the batch size and epochs, and the data.
//!
//! ```toml
//! name = "mnist-cnn"
//! input = [1, 28, 28]          # the shape of one example
//!
//! [data]
//! format = "mnist"
//! path = "mnist"
//!
//! [[layers]]
//! type = "conv2d"
//! name = "conv1"               # parameter names: conv1.weight, conv1.bias
//! out_channels = 32
//! kernel = 3
//!
//! [[layers]]
//! type = "relu"
//!
//! [loss]
//! type = "cross_entropy"
//!
//! [optimizer]
//! type = "adam"
//! lr = 0.001
//!
//! [training]
//! epochs = 3
//! batch = 128
//! ```
//!
//! [`Spec::parse`] checks the TOML against these types (unknown keys are errors, naming
//! the key), then [`Spec::check`] walks the layers from the input shape and reports the
//! first layer whose input it cannot take, by index and name.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::data::DataSource;

/// A whole training spec (see the module docs for the TOML form).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The model's name, recorded in the weights' metadata.
    pub name: String,
    /// Shape of one example, without the batch axis: `[c, h, w]` or `[features]`.
    pub input: Vec<usize>,
    /// Where the examples come from.
    pub data: DataSource,
    /// The network, in order.
    pub layers: Vec<LayerSpec>,
    /// What is minimised.
    pub loss: Loss,
    /// How parameters are updated.
    pub optimizer: OptimizerSpec,
    /// The learning-rate schedule (constant when absent).
    #[serde(default)]
    pub schedule: Schedule,
    /// Epochs, batch size, seed and validation split.
    #[serde(default)]
    pub training: TrainingSpec,
    /// Preprocessing learnt from the training split and stored with the weights.
    #[serde(default)]
    pub preprocess: Preprocess,
}

/// One layer of the network.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// Fully connected, PyTorch `Linear`: `name.weight` `[out, in]`, `name.bias` `[out]`.
    Dense {
        /// Parameter name prefix.
        name: String,
        /// Output features.
        out_features: usize,
        /// Whether the layer has a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution, PyTorch `Conv2d`: `name.weight` `[out, in/groups, k, k]`.
    Conv2d {
        /// Parameter name prefix.
        name: String,
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side (default 0).
        #[serde(default)]
        padding: usize,
        /// Channel groups (default 1).
        #[serde(default = "one")]
        groups: usize,
        /// Whether the layer has a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Max pooling with a square window (stride defaults to the window).
    MaxPool2d {
        /// Window size.
        kernel: usize,
        /// Stride (default: the window size).
        #[serde(default)]
        stride: Option<usize>,
        /// Padding (default 0).
        #[serde(default)]
        padding: usize,
    },
    /// Average pooling with a square window (stride defaults to the window).
    AvgPool2d {
        /// Window size.
        kernel: usize,
        /// Stride (default: the window size).
        #[serde(default)]
        stride: Option<usize>,
        /// Padding (default 0).
        #[serde(default)]
        padding: usize,
    },
    /// Flattens `[c, h, w]` to `[c·h·w]` in C, H, W order.
    Flatten,
    /// `max(x, 0)`.
    Relu,
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax over the features; only as the last layer (with cross-entropy it is fused
    /// into the loss during training, and kept for inference).
    Softmax,
    /// Inverted dropout with drop probability `p` while training; identity in inference.
    Dropout {
        /// Drop probability in `[0, 1)`.
        p: f32,
    },
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

impl LayerSpec {
    /// The layer's kind as written in the spec.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::MaxPool2d { .. } => "max_pool2d",
            LayerSpec::AvgPool2d { .. } => "avg_pool2d",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Relu => "relu",
            LayerSpec::Sigmoid => "sigmoid",
            LayerSpec::Tanh => "tanh",
            LayerSpec::Softmax => "softmax",
            LayerSpec::Dropout { .. } => "dropout",
        }
    }

    /// `kind` plus the parameter prefix when the layer has one, for messages.
    pub fn label(&self) -> String {
        match self {
            LayerSpec::Dense { name, .. } | LayerSpec::Conv2d { name, .. } => {
                format!("{} `{name}`", self.kind())
            }
            _ => self.kind().to_owned(),
        }
    }
}

/// The loss function (mean over the batch, as PyTorch's default reduction).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Softmax cross-entropy on logits against class labels (`CrossEntropyLoss`).
    CrossEntropy,
    /// Mean squared error against continuous targets (`MSELoss`).
    Mse,
    /// Binary cross-entropy on one logit per example (`BCEWithLogitsLoss`), labels 0/1.
    BinaryCrossEntropy,
}

/// The optimizer, with PyTorch's defaults.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// `torch.optim.SGD`: momentum (default 0) and L2 weight decay (default 0).
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum factor.
        #[serde(default)]
        momentum: f32,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f32,
    },
    /// `torch.optim.Adam`: betas (0.9, 0.999), eps 1e-8, L2 weight decay 0.
    Adam {
        /// Learning rate (default 1e-3).
        #[serde(default = "adam_lr")]
        lr: f32,
        /// Decay rates of the first and second moment estimates.
        #[serde(default = "adam_betas")]
        betas: (f32, f32),
        /// Added to the denominator.
        #[serde(default = "adam_eps")]
        eps: f32,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f32,
    },
    /// `torch.optim.AdamW`: as Adam, with decoupled weight decay (default 0.01). Spelled
    /// `adamw` (also `adam_w`).
    #[serde(rename = "adamw", alias = "adam_w")]
    AdamW {
        /// Learning rate (default 1e-3).
        #[serde(default = "adam_lr")]
        lr: f32,
        /// Decay rates of the first and second moment estimates.
        #[serde(default = "adam_betas")]
        betas: (f32, f32),
        /// Added to the denominator.
        #[serde(default = "adam_eps")]
        eps: f32,
        /// Decoupled weight decay.
        #[serde(default = "adamw_decay")]
        weight_decay: f32,
    },
}

fn adam_lr() -> f32 {
    1e-3
}

fn adam_betas() -> (f32, f32) {
    (0.9, 0.999)
}

fn adam_eps() -> f32 {
    1e-8
}

fn adamw_decay() -> f32 {
    1e-2
}

impl OptimizerSpec {
    /// The base learning rate.
    pub fn lr(&self) -> f32 {
        match *self {
            OptimizerSpec::Sgd { lr, .. }
            | OptimizerSpec::Adam { lr, .. }
            | OptimizerSpec::AdamW { lr, .. } => lr,
        }
    }
}

/// How the learning rate changes over training.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiplied by `gamma` after every `every` epochs (`StepLR`).
    Step {
        /// Epochs between decays.
        every: usize,
        /// Decay factor.
        gamma: f32,
    },
    /// Cosine annealing from the base rate to `min_lr` over all steps (`CosineAnnealingLR`).
    Cosine {
        /// The final rate.
        #[serde(default)]
        min_lr: f32,
    },
}

impl Schedule {
    /// The rate at optimizer step `step` (0-based) of `total` steps in epoch `epoch`
    /// (0-based).
    pub fn lr(&self, base: f32, epoch: usize, step: usize, total: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine { min_lr } => {
                let t = step as f64 / total.max(1) as f64;
                (min_lr as f64
                    + (base - min_lr) as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
                    as f32
            }
        }
    }
}

/// Epochs, batch size, seed, validation split, threads.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// Passes over the training set.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Examples per optimizer step.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Seeds the initialisation, the shuffles and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Fraction of the training set held out for validation (0: none; the test set is then
    /// reported per epoch instead).
    #[serde(default)]
    pub validation_fraction: f64,
}

fn default_epochs() -> usize {
    1
}

fn default_batch() -> usize {
    32
}

impl Default for TrainingSpec {
    fn default() -> Self {
        TrainingSpec {
            epochs: default_epochs(),
            batch: default_batch(),
            seed: 0,
            validation_fraction: 0.0,
        }
    }
}

/// Preprocessing computed on the training split and stored in the weights file, where the
/// function applies it, so that a deployed model takes raw inputs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Standardise every input feature: `(x - mean) / std`, stored as `scaler.mean` and
    /// `scaler.scale` (scikit-learn's `StandardScaler` names).
    #[serde(default)]
    pub standardize: bool,
    /// Standardise regression targets during training; the function maps its output back
    /// with `target.mean` and `target.scale`.
    #[serde(default)]
    pub standardize_target: bool,
}

/// What is wrong with a spec.
#[derive(Debug)]
pub enum SpecError {
    /// The TOML did not parse or did not match the spec's types.
    Toml(String),
    /// A layer cannot take its input, or a value is out of range.
    Layer {
        /// 0-based index in `layers`.
        index: usize,
        /// The layer's kind and name.
        label: String,
        /// What is wrong.
        what: String,
    },
    /// A value outside the layers is invalid.
    Invalid(String),
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Toml(e) => write!(f, "{e}"),
            SpecError::Layer { index, label, what } => {
                write!(f, "layer {} ({label}): {what}", index + 1)
            }
            SpecError::Invalid(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for SpecError {}

impl Spec {
    /// Parses a spec from TOML text and checks it ([`Spec::check`]).
    pub fn parse(text: &str) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks the values and walks the layers from [`Spec::input`], returning each layer's
    /// output shape; the first layer that cannot take its input is the error.
    pub fn check(&self) -> Result<Vec<Vec<usize>>, SpecError> {
        if self.input.is_empty() || self.input.contains(&0) {
            return Err(SpecError::Invalid(format!(
                "`input` must be a non-empty shape of positive sizes, got {:?}",
                self.input
            )));
        }
        if self.training.batch == 0 {
            return Err(SpecError::Invalid(
                "`training.batch` must be at least 1".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.training.validation_fraction) {
            return Err(SpecError::Invalid(format!(
                "`training.validation_fraction` must be in [0, 1), got {}",
                self.training.validation_fraction
            )));
        }
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(SpecError::Invalid(format!(
                "the optimizer's `lr` must be positive, got {lr}"
            )));
        }
        if self.layers.is_empty() {
            return Err(SpecError::Invalid("`layers` is empty".into()));
        }
        let mut names = std::collections::HashSet::new();
        let mut shape = self.input.clone();
        let mut shapes = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let err = |what: String| SpecError::Layer {
                index,
                label: layer.label(),
                what,
            };
            shape = layer_output(layer, &shape).map_err(err)?;
            match layer {
                LayerSpec::Dense { name, .. } | LayerSpec::Conv2d { name, .. } => {
                    if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
                        return Err(err(format!(
                            "parameter name `{name}` must be non-empty without spaces"
                        )));
                    }
                    if !names.insert(name.clone()) {
                        return Err(err(format!("parameter name `{name}` is used twice")));
                    }
                }
                LayerSpec::Softmax if index + 1 != self.layers.len() => {
                    return Err(err("softmax may only be the last layer".into()));
                }
                _ => {}
            }
            shapes.push(shape.clone());
        }
        let out = shapes.last().cloned().unwrap_or_default();
        if out.len() != 1 {
            return Err(SpecError::Invalid(format!(
                "the network's output must be flat [features], got {out:?}; add a `flatten` \
                 layer"
            )));
        }
        if self.loss == Loss::BinaryCrossEntropy && out[0] != 1 {
            return Err(SpecError::Invalid(format!(
                "binary_cross_entropy needs one output per example, the network has {}",
                out[0]
            )));
        }
        if matches!(self.layers.last(), Some(LayerSpec::Softmax)) && self.loss != Loss::CrossEntropy
        {
            return Err(SpecError::Invalid(
                "a final softmax layer goes with the cross_entropy loss".into(),
            ));
        }
        Ok(shapes)
    }
}

/// The output shape of `layer` for one example of shape `input`, or what is wrong.
fn layer_output(layer: &LayerSpec, input: &[usize]) -> Result<Vec<usize>, String> {
    let chw = |what: &str| -> Result<[usize; 3], String> {
        match *input {
            [c, h, w] => Ok([c, h, w]),
            _ => Err(format!(
                "{what} needs a [channels, height, width] input, got {input:?}"
            )),
        }
    };
    match *layer {
        LayerSpec::Dense { out_features, .. } => {
            if input.len() != 1 {
                return Err(format!(
                    "dense needs a flat [features] input, got {input:?}; add a `flatten` layer \
                     before it"
                ));
            }
            if out_features == 0 {
                return Err("out_features must be at least 1".into());
            }
            Ok(vec![out_features])
        }
        LayerSpec::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            ..
        } => {
            let [c, h, w] = chw("conv2d")?;
            if out_channels == 0 || kernel == 0 || stride == 0 || groups == 0 {
                return Err("out_channels, kernel, stride and groups must be at least 1".into());
            }
            if c % groups != 0 || out_channels % groups != 0 {
                return Err(format!(
                    "groups = {groups} must divide the input channels ({c}) and out_channels \
                     ({out_channels})"
                ));
            }
            let p = tensorlet_kernels::Conv2dParams {
                stride: (stride, stride),
                padding: (padding, padding),
                dilation: (1, 1),
                groups,
            };
            let out = tensorlet_kernels::conv2d_out_shape(
                [1, c, h, w],
                [out_channels, c / groups, kernel, kernel],
                &p,
            )
            .map_err(|e| e.to_string())?;
            Ok(vec![out[1], out[2], out[3]])
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
        } => {
            let [c, h, w] = chw(layer.kind())?;
            let p = pool_params(kernel, stride, padding);
            let out =
                tensorlet_kernels::pool2d_out_shape([1, c, h, w], &p).map_err(|e| e.to_string())?;
            Ok(vec![out[1], out[2], out[3]])
        }
        LayerSpec::Flatten => Ok(vec![input.iter().product()]),
        LayerSpec::Relu | LayerSpec::Sigmoid | LayerSpec::Tanh | LayerSpec::Softmax => {
            Ok(input.to_vec())
        }
        LayerSpec::Dropout { p } => {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("p must be in [0, 1), got {p}"));
            }
            Ok(input.to_vec())
        }
    }
}

/// The kernels' pooling geometry for a square window.
pub(crate) fn pool_params(
    kernel: usize,
    stride: Option<usize>,
    padding: usize,
) -> tensorlet_kernels::Pool2dParams {
    let s = stride.unwrap_or(kernel);
    tensorlet_kernels::Pool2dParams {
        kernel: (kernel, kernel),
        stride: (s, s),
        padding: (padding, padding),
    }
}
