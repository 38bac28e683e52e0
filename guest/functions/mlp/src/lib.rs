//! `mlp`: a two-layer perceptron, `y = fc2(sigmoid(fc1(x)))`.
//!
//! Input `x` [N, K] f32, where K is `fc1.weight`'s in-features (10 in the reference
//! model). `fc1.weight` [H, K] and optional `fc1.bias` `[H]` with a sigmoid, then
//! `fc2.weight` [O, H] and optional `fc2.bias` `[O]`; output `y` [N, O] (O = 1 in the
//! reference model). Widths come from the weights; every mismatch is reported with the
//! offending tensor, its shape and the expected shape.
//!
//! Preprocessing stored with trained weights (by `tensorlet train`) is applied here, so a
//! deployed model takes raw features: optional `scaler.mean` and `scaler.scale` [K]
//! standardise the input, `x' = (x - mean) / scale`; optional `target.mean` and
//! `target.scale` [O] map the output back to the target's units, `y = y' · scale + mean`.

use tensorlet_sdk::{
    Activation, Dtype, Error, Function, FunctionMetadata, IoSpec, NamedTensor, Result, Tensor,
    format_shape, weights,
};

/// The `mlp` inference function.
struct Mlp;

/// An optional affine pair `<prefix>.mean` and `<prefix>.scale`, both `[width]`, as weight
/// handles (the ops take them as they are), with the scale's values, checked finite and
/// non-zero: both or neither must be present.
struct Affine {
    mean: Tensor,
    scale: Tensor,
    scale_values: Vec<f32>,
}

fn affine(prefix: &str, width: u32) -> Result<Option<Affine>> {
    let (mean_name, scale_name) = (format!("{prefix}.mean"), format!("{prefix}.scale"));
    match (
        weights::contains(&mean_name),
        weights::contains(&scale_name),
    ) {
        (false, false) => Ok(None),
        (true, true) => {
            weights::shape_of(&mean_name, &[Some(width)])?;
            weights::shape_of(&scale_name, &[Some(width)])?;
            let mean = weights::get(&mean_name)?;
            let scale = weights::get(&scale_name)?;
            let scale_values = scale.to_f32()?;
            if let Some(bad) = scale_values.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
                return Err(Error::invalid_input(format!(
                    "`{scale_name}` holds {bad}; every scale must be finite and non-zero"
                )));
            }
            Ok(Some(Affine {
                mean,
                scale,
                scale_values,
            }))
        }
        _ => Err(Error::not_found(format!(
            "the weights hold only one of `{mean_name}` and `{scale_name}`; give both or neither"
        ))),
    }
}

/// A checked dense layer: its weight, optional bias, and (out, in) features.
struct Layer {
    weight: Tensor,
    bias: Option<Tensor>,
    out_features: u32,
    in_features: u32,
}

impl Layer {
    /// Loads `<name>.weight` [out, in] (with `in` fixed if `in_features` is given) and the
    /// optional `<name>.bias` [out].
    fn load(name: &str, in_features: Option<u32>) -> Result<Layer> {
        let shape = weights::shape_of(&format!("{name}.weight"), &[None, in_features])?;
        let (out_features, in_features) = (shape[0], shape[1]);
        let bias = weights::get_optional(&format!("{name}.bias"), &[Some(out_features)])?;
        Ok(Layer {
            weight: weights::get(&format!("{name}.weight"))?,
            bias,
            out_features,
            in_features,
        })
    }

    /// `act(x · wᵀ + b)`.
    fn forward(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        x.dense(&self.weight, self.bias.as_ref(), act)
    }
}

impl Function for Mlp {
    fn metadata() -> FunctionMetadata {
        FunctionMetadata {
            name: "mlp".to_owned(),
            description: "A two-layer perceptron: y = fc2(sigmoid(fc1(x))). Widths follow the \
                          weights (10 -> 10 -> 1 in the reference model)."
                .to_owned(),
            inputs: vec![IoSpec::new(
                "x",
                Dtype::F32,
                &[-1, 10],
                "A batch of feature rows [N, K]; K must equal fc1.weight's in-features.",
            )],
            outputs: vec![IoSpec::new(
                "y",
                Dtype::F32,
                &[-1, 1],
                "One prediction per row [N, O]; O is fc2.weight's out-features.",
            )],
            weights: vec![
                IoSpec::new("fc1.weight", Dtype::F32, &[10, 10], "Hidden layer [H, K]."),
                IoSpec::new("fc1.bias", Dtype::F32, &[10], "Hidden bias [H], optional."),
                IoSpec::new("fc2.weight", Dtype::F32, &[1, 10], "Output layer [O, H]."),
                IoSpec::new("fc2.bias", Dtype::F32, &[1], "Output bias [O], optional."),
                IoSpec::new(
                    "scaler.mean",
                    Dtype::F32,
                    &[10],
                    "Input feature means [K], optional (with scaler.scale): x' = (x - mean) / scale.",
                ),
                IoSpec::new(
                    "scaler.scale",
                    Dtype::F32,
                    &[10],
                    "Input feature scales [K], optional.",
                ),
                IoSpec::new(
                    "target.mean",
                    Dtype::F32,
                    &[1],
                    "Target mean [O], optional (with target.scale): y = y' * scale + mean.",
                ),
                IoSpec::new(
                    "target.scale",
                    Dtype::F32,
                    &[1],
                    "Target scale [O], optional.",
                ),
            ],
        }
    }

    fn infer(inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>> {
        if let Some(other) = inputs.iter().find(|t| t.name != "x") {
            return Err(Error::invalid_input(format!(
                "unexpected input `{}`; `mlp` takes only `x`",
                other.name
            )));
        }
        let x = NamedTensor::require(&inputs, "x")?;
        let fc1 = Layer::load("fc1", None)?;
        let fc2 = Layer::load("fc2", Some(fc1.out_features))?;

        let dtype = x.dtype();
        if dtype != Dtype::F32 {
            return Err(Error::invalid_input(format!(
                "input `x` has dtype {dtype:?}, expected F32"
            )));
        }
        let shape = x.shape();
        if shape.len() != 2 || shape[1] != fc1.in_features {
            return Err(Error::shape_mismatch(format!(
                "input `x` has shape {}, expected [N, {}] (the in-features of `fc1.weight`)",
                format_shape(&shape),
                fc1.in_features
            )));
        }

        let scaled;
        let x = match affine("scaler", fc1.in_features)? {
            None => x,
            Some(scaler) => {
                // (x - mean) / scale as x + (-mean), times 1 / scale: the WIT has no
                // subtraction or division.
                let k = [fc1.in_features];
                let neg: Vec<f32> = scaler.mean.to_f32()?.iter().map(|m| -m).collect();
                let inv: Vec<f32> = scaler.scale_values.iter().map(|s| 1.0 / s).collect();
                scaled = x
                    .add(&Tensor::from_f32(&k, &neg)?)?
                    .mul(&Tensor::from_f32(&k, &inv)?)?;
                &scaled
            }
        };
        let hidden = fc1.forward(x, Activation::Sigmoid)?;
        let mut y = fc2.forward(&hidden, Activation::None)?;
        if let Some(target) = affine("target", fc2.out_features)? {
            // The weights themselves: no copy into the sandbox and back.
            y = y.mul(&target.scale)?.add(&target.mean)?;
        }
        Ok(vec![NamedTensor::new("y", y)])
    }
}

tensorlet_sdk::export!(Mlp);
