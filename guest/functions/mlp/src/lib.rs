//! `mlp`: a two-layer perceptron, `y = fc2(sigmoid(fc1(x)))`.
//!
//! Input `x` [N, K] f32, where K is `fc1.weight`'s in-features (10 in the reference
//! model). `fc1.weight` [H, K] and optional `fc1.bias` `[H]` with a sigmoid, then
//! `fc2.weight` [O, H] and optional `fc2.bias` `[O]`; output `y` [N, O] (O = 1 in the
//! reference model). Widths come from the weights; every mismatch is reported with the
//! offending tensor, its shape and the expected shape.

use tensorlet_sdk::{
    Activation, Dtype, Error, Function, FunctionMetadata, IoSpec, NamedTensor, Result, Tensor,
    format_shape, weights,
};

/// The `mlp` inference function.
struct Mlp;

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
        let bias_name = format!("{name}.bias");
        let bias = match weights::info(&bias_name) {
            None => None,
            Some(_) => {
                weights::shape_of(&bias_name, &[Some(out_features)])?;
                Some(weights::get(&bias_name)?)
            }
        };
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

        let hidden = fc1.forward(x, Activation::Sigmoid)?;
        let y = fc2.forward(&hidden, Activation::None)?;
        Ok(vec![NamedTensor::new("y", y)])
    }
}

tensorlet_sdk::export!(Mlp);
