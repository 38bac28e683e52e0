//! `spam`: raw e-mail in, the probability that it is spam out — a classifier head trained
//! with `tensorlet train` (`models/spam/train.toml`) on all-MiniLM-L6-v2 sentence
//! embeddings.
//!
//! Input `text` (`bytes`, `[N]`): one message per element, as a mail server stores it
//! (headers, MIME parts, any charset) or plain text. [`tensorlet_sdk::email`] keeps the
//! subject and the readable body (transfer encodings decoded, HTML stripped), and the
//! encoder of [`tensorlet_sdk::bert`] embeds it (first 256 word pieces, mean-pooled, unit
//! length): output `embedding` `[N, hidden]`.
//!
//! The head is a stack of dense layers `head.fc1`, `head.fc2`, … (PyTorch `Linear`
//! names and layouts, as `tensorlet train` writes them), ReLU between them; the last has
//! one output, a logit, whose sigmoid is output `spam` `[N]`. Weights without a head give
//! only `embedding`: that is how `tensorlet train` embeds the corpus the head learns from,
//! with this very function, so training and serving read the same features.

use tensorlet_sdk::bert::{self, Encoder};
use tensorlet_sdk::{
    Activation, Dtype, Error, Function, FunctionMetadata, IoSpec, NamedTensor, Result, Tensor,
    email, weights,
};

/// The `spam` inference function.
struct Spam;

/// Dense layers a head may have.
const MAX_HEAD_LAYERS: usize = 16;

/// One dense layer of the head: `head.fc{i}.weight` `[out, in]`, optional bias `[out]`.
struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
    out: u32,
}

/// The head's layers, checked to chain from `hidden` inputs to one output; empty when the
/// weights have no `head.fc1.weight`.
fn load_head(hidden: u32) -> Result<Vec<Dense>> {
    if weights::contains("scaler.mean") {
        return Err(Error::unsupported(
            "the weights hold `scaler.mean`, but `spam` does not standardise its embeddings \
             (they are unit vectors): train the head without `[preprocess] standardize`",
        ));
    }
    let mut layers: Vec<Dense> = Vec::new();
    let mut inp = hidden;
    while weights::contains(&format!("head.fc{}.weight", layers.len() + 1)) {
        let i = layers.len() + 1;
        if i > MAX_HEAD_LAYERS {
            return Err(Error::unsupported(format!(
                "the head has more than {MAX_HEAD_LAYERS} dense layers"
            )));
        }
        let (w, b) = (format!("head.fc{i}.weight"), format!("head.fc{i}.bias"));
        let out = weights::shape_of(&w, &[None, Some(inp)])?[0];
        let bias = weights::get_optional(&b, &[Some(out)])?;
        layers.push(Dense {
            weight: weights::get(&w)?,
            bias,
            out,
        });
        inp = out;
    }
    if let Some(last) = layers.last()
        && last.out != 1
    {
        return Err(Error::shape_mismatch(format!(
            "the head's last layer `head.fc{}` has {} outputs; expected 1 (the spam logit)",
            layers.len(),
            last.out
        )));
    }
    Ok(layers)
}

impl Function for Spam {
    fn metadata() -> FunctionMetadata {
        let mut weights = bert::weight_specs();
        weights.push(IoSpec::new(
            "head.fc1.weight",
            Dtype::F32,
            &[-1, -1],
            "The head's first dense layer [out, hidden]; likewise head.fc2, … (weight and \
             a bias if present), ReLU between, the last with one output (the spam logit).",
        ));
        FunctionMetadata {
            name: "spam".to_owned(),
            description: "Spam filter: raw e-mail in (headers, MIME, any charset), the \
                          probability that it is spam out. Subject and readable body through \
                          all-MiniLM-L6-v2 sentence embeddings and a trained dense head."
                .to_owned(),
            inputs: vec![IoSpec::new(
                "text",
                Dtype::Bytes,
                &[-1],
                "A batch of raw e-mail messages (or plain texts) [N].",
            )],
            outputs: vec![
                IoSpec::new(
                    "spam",
                    Dtype::F32,
                    &[-1],
                    "The probability that each message is spam [N] (absent when the weights \
                     have no head).",
                ),
                IoSpec::new(
                    "embedding",
                    Dtype::F32,
                    &[-1, 384],
                    "The unit-length embedding of each message's subject and body [N, hidden]: \
                     what the head reads.",
                ),
            ],
            weights,
        }
    }

    fn infer(inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>> {
        let raw = bert::text_input(&inputs, "spam")?;
        let encoder = Encoder::load()?;
        let head = load_head(encoder.hidden())?;
        let texts: Vec<String> = raw.iter().map(|m| email::readable_text(m)).collect();
        let embedding = encoder.embed(&texts)?.embedding;
        let mut outputs = Vec::with_capacity(2);
        let mut x: Option<Tensor> = None;
        for (i, layer) in head.iter().enumerate() {
            let act = if i + 1 == head.len() {
                Activation::Sigmoid
            } else {
                Activation::Relu
            };
            let input = x.as_ref().unwrap_or(&embedding);
            x = Some(input.dense(&layer.weight, layer.bias.as_ref(), act)?);
        }
        if let Some(p) = x {
            let n = texts.len() as u32;
            outputs.push(NamedTensor::new("spam", p.reshape(&[n])?));
        }
        outputs.push(NamedTensor::new("embedding", embedding));
        Ok(outputs)
    }
}

tensorlet_sdk::export!(Spam);
