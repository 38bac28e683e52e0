//! A BERT encoder for sentence embeddings, as sentence-transformers computes them
//! (`SentenceTransformer.encode(normalize_embeddings=True)` of all-MiniLM-L6-v2 and its
//! kin), over the weights set bound to the request. Functions built on it (`minilm`,
//! `spam`) share one implementation: [`Encoder::load`] reads and checks the weights,
//! [`Encoder::embed`] tokenizes, pads, runs the encoder and pools.
//!
//! The encoder: word + position + token-type embeddings, layer norm, then for every layer
//! self-attention (Q, K, V projections, `heads` heads, key padding mask), output projection,
//! residual and layer norm, then the feed-forward block (dense, exact GELU, dense), residual
//! and layer norm. Mean pooling over each text's tokens and L2 normalisation give one
//! unit-length vector per text. A batch is padded to its longest text and masked, so a
//! text's embedding does not depend on what else is in the batch.
//!
//! Weights use the upstream (Hugging Face `BertModel`) names without a `bert.` prefix:
//! `embeddings.word_embeddings.weight`, `encoder.layer.{i}.attention.self.query.weight`, ….
//! `vocab.txt` and `config.json` (u8 tensors holding the model's files) give the
//! tokenizer's vocabulary, `num_attention_heads` and `layer_norm_eps`; the width and the
//! number of layers come from the weights ([`weight_specs`] lists them for metadata).
//! An optional u8 tensor [`VOCAB_INDEX`] holds the vocabulary's lookup table made ahead of
//! time (`models/data/convert.py` writes it into `minilm.safetensors`): instances keep no
//! state between requests, and building the table for a 30,522-token vocabulary took
//! about a sixth of a one-sentence request.

use crate::text::WordPiece;
use crate::{Activation, Dtype, Error, IoSpec, NamedTensor, Result, Tensor, format_shape, weights};

/// Word pieces per text, `[CLS]` and `[SEP]` included (sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2).
pub const MAX_TOKENS: usize = 256;

/// Bytes a single text may have (longer ones are refused rather than tokenized in full).
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// The optional weight holding a lookup index of `vocab.txt`
/// ([`WordPiece::from_vocab_and_index`]), so that a request does not build the table.
pub const VOCAB_INDEX: &str = "vocab.index";

/// `F.normalize`'s default epsilon.
const NORMALIZE_EPS: f32 = 1e-12;

/// The numbers of `config.json` the encoder uses.
struct Config {
    heads: u32,
    eps: f32,
}

/// The number after `"key":` in a flat JSON object, if there is one.
fn json_number(text: &str, key: &str) -> Option<f64> {
    let quoted = format!("\"{key}\"");
    let at = text.find(&quoted)? + quoted.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Config {
    fn load() -> Result<Config> {
        weights::shape_of("config.json", &[None])?;
        let bytes = weights::get("config.json")?.to_u8()?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| Error::invalid_input(format!("weight `config.json` is not UTF-8: {e}")))?;
        let field = |key: &str| {
            json_number(text, key).ok_or_else(|| {
                Error::invalid_input(format!(
                    "weight `config.json` has no number `{key}` (the model's config.json, as \
                     Hugging Face writes it)"
                ))
            })
        };
        let heads = field("num_attention_heads")?;
        let eps = field("layer_norm_eps")?;
        if !((1.0..=4096.0).contains(&heads) && heads.fract() == 0.0) {
            return Err(Error::invalid_input(format!(
                "`config.json`: num_attention_heads is {heads}, expected a positive integer"
            )));
        }
        if !(eps > 0.0 && eps < 1.0) {
            return Err(Error::invalid_input(format!(
                "`config.json`: layer_norm_eps is {eps}, expected a small positive number"
            )));
        }
        Ok(Config {
            heads: heads as u32,
            eps: eps as f32,
        })
    }
}

/// A dense layer `prefix.weight` `[out, in]` with its bias `prefix.bias` `[out]`.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(prefix: &str, out: u32, inp: u32) -> Result<Dense> {
        let (w, b) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        weights::shape_of(&w, &[Some(out), Some(inp)])?;
        weights::shape_of(&b, &[Some(out)])?;
        Ok(Dense {
            weight: weights::get(&w)?,
            bias: weights::get(&b)?,
        })
    }

    fn forward(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        x.dense(&self.weight, Some(&self.bias), act)
    }
}

/// A layer norm `prefix.weight` / `prefix.bias`, both `[hidden]`.
struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

impl Norm {
    fn load(prefix: &str, hidden: u32) -> Result<Norm> {
        let (g, b) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        weights::shape_of(&g, &[Some(hidden)])?;
        weights::shape_of(&b, &[Some(hidden)])?;
        Ok(Norm {
            gamma: weights::get(&g)?,
            beta: weights::get(&b)?,
        })
    }

    fn forward(&self, x: &Tensor, eps: f32) -> Result<Tensor> {
        x.layer_norm(&self.gamma, &self.beta, eps)
    }
}

/// One encoder layer.
struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

impl Layer {
    fn load(i: usize, hidden: u32) -> Result<Layer> {
        let p = format!("encoder.layer.{i}");
        let ffn = weights::shape_of(
            &format!("{p}.intermediate.dense.weight"),
            &[None, Some(hidden)],
        )?[0];
        Ok(Layer {
            query: Dense::load(&format!("{p}.attention.self.query"), hidden, hidden)?,
            key: Dense::load(&format!("{p}.attention.self.key"), hidden, hidden)?,
            value: Dense::load(&format!("{p}.attention.self.value"), hidden, hidden)?,
            attention_out: Dense::load(&format!("{p}.attention.output.dense"), hidden, hidden)?,
            attention_norm: Norm::load(&format!("{p}.attention.output.LayerNorm"), hidden)?,
            intermediate: Dense::load(&format!("{p}.intermediate.dense"), ffn, hidden)?,
            output: Dense::load(&format!("{p}.output.dense"), hidden, ffn)?,
            output_norm: Norm::load(&format!("{p}.output.LayerNorm"), hidden)?,
        })
    }

    /// The layer on `x` `[N, S, hidden]`.
    fn forward(&self, x: &Tensor, config: &Config, lengths: &[u32]) -> Result<Tensor> {
        let none = Activation::None;
        let q = self.query.forward(x, none)?;
        let k = self.key.forward(x, none)?;
        let v = self.value.forward(x, none)?;
        let context = q.attention(&k, &v, config.heads, lengths)?;
        let attended = self.attention_out.forward(&context, none)?.add(x)?;
        let x = self.attention_norm.forward(&attended, config.eps)?;
        let h = self.intermediate.forward(&x, Activation::GeluErf)?;
        let out = self.output.forward(&h, none)?.add(&x)?;
        self.output_norm.forward(&out, config.eps)
    }
}

/// A batch through the encoder: the embeddings and the tokenizer's work.
pub struct Embedded {
    /// One unit-length embedding per text, `[N, hidden]`.
    pub embedding: Tensor,
    /// The word-piece ids of every text with `[CLS]` and `[SEP]`, padded with the `[PAD]`
    /// id to `seq` each: `N * seq` ids, row-major.
    pub token_ids: Vec<u32>,
    /// The padded length (the longest text's number of word pieces).
    pub seq: u32,
}

/// The encoder of the request's weights set, loaded and checked.
pub struct Encoder {
    config: Config,
    vocab: WordPiece,
    hidden: u32,
    max_tokens: usize,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
}

impl Encoder {
    /// Reads the tokenizer, config and every layer from the weights set; `not-found` or
    /// `shape-mismatch` naming the first weight that is missing or of the wrong shape.
    pub fn load() -> Result<Encoder> {
        let config = Config::load()?;
        weights::shape_of("vocab.txt", &[None])?;
        let vocab_txt = weights::get("vocab.txt")?.to_u8()?;
        let vocab = match weights::get_optional(VOCAB_INDEX, &[None])? {
            Some(index) => {
                let index = index.to_u8()?;
                WordPiece::from_vocab_and_index(vocab_txt, index).map_err(|e| match e {
                    Error::InvalidInput(m) => {
                        Error::invalid_input(format!("weight `{VOCAB_INDEX}`: {m}"))
                    }
                    other => other,
                })?
            }
            None => WordPiece::from_vocab(&vocab_txt)?,
        };

        let word = weights::shape_of("embeddings.word_embeddings.weight", &[None, None])?;
        let hidden = word[1];
        if hidden == 0 || hidden % config.heads != 0 {
            return Err(Error::shape_mismatch(format!(
                "the hidden size {hidden} (of `embeddings.word_embeddings.weight`) is not a \
                 multiple of num_attention_heads = {}",
                config.heads
            )));
        }
        let positions = weights::shape_of(
            "embeddings.position_embeddings.weight",
            &[None, Some(hidden)],
        )?[0];
        weights::shape_of(
            "embeddings.token_type_embeddings.weight",
            &[None, Some(hidden)],
        )?;
        let max_tokens = MAX_TOKENS.min(positions as usize);
        if max_tokens < 2 {
            return Err(Error::shape_mismatch(format!(
                "`embeddings.position_embeddings.weight` has {positions} positions; at least 2 \
                 are needed ([CLS] and [SEP])"
            )));
        }
        let embeddings_norm = Norm::load("embeddings.LayerNorm", hidden)?;
        let mut layers = Vec::new();
        while weights::contains(&format!(
            "encoder.layer.{}.attention.self.query.weight",
            layers.len()
        )) {
            layers.push(Layer::load(layers.len(), hidden)?);
        }
        if layers.is_empty() {
            return Err(Error::not_found(
                "the weights have no encoder layer (`encoder.layer.0.attention.self.query.weight` \
                 is missing)",
            ));
        }
        Ok(Encoder {
            config,
            vocab,
            hidden,
            max_tokens,
            embeddings_norm,
            layers,
        })
    }

    /// The embedding width.
    pub fn hidden(&self) -> u32 {
        self.hidden
    }

    /// Tokenizes `texts` (truncated to [`MAX_TOKENS`] word pieces), pads them to the
    /// longest, runs the encoder with a key padding mask, mean-pools each text's tokens and
    /// normalises to unit length.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embedded> {
        let tokens: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.vocab.encode(t.as_ref(), self.max_tokens))
            .collect();
        let seq = tokens.iter().map(Vec::len).max().unwrap_or(0);
        let n = tokens.len();
        let lengths: Vec<u32> = tokens.iter().map(|t| t.len() as u32).collect();
        let mut ids = Vec::with_capacity(n * seq);
        for t in &tokens {
            ids.extend_from_slice(t);
            ids.resize(ids.len() + seq - t.len(), self.vocab.pad_id());
        }
        let (n32, seq32, hidden) = (n as u32, seq as u32, self.hidden);

        // Embeddings: word + position + token type 0, then layer norm.
        let word = weights::get("embeddings.word_embeddings.weight")?
            .embedding(&ids)?
            .reshape(&[n32, seq32, hidden])?;
        let positions: Vec<u32> = (0..seq32).collect();
        let position =
            weights::get("embeddings.position_embeddings.weight")?.embedding(&positions)?;
        let token_type = weights::get("embeddings.token_type_embeddings.weight")?
            .embedding(&[0])?
            .reshape(&[hidden])?;
        let x = word.add(&position)?.add(&token_type)?;
        let mut x = self.embeddings_norm.forward(&x, self.config.eps)?;
        for layer in &self.layers {
            x = layer.forward(&x, &self.config, &lengths)?;
        }
        let embedding = x.mean_pool(&lengths)?.l2_normalize(NORMALIZE_EPS)?;
        Ok(Embedded {
            embedding,
            token_ids: ids,
            seq: seq32,
        })
    }
}

/// The byte strings of the input `text` (`bytes`, `[N]`), checked: the only input, at
/// least one string, each at most [`MAX_TEXT_BYTES`]. `function` names the caller in
/// messages.
pub fn text_input(inputs: &[NamedTensor], function: &str) -> Result<Vec<Vec<u8>>> {
    if let Some(other) = inputs.iter().find(|t| t.name != "text") {
        return Err(Error::invalid_input(format!(
            "unexpected input `{}`; `{function}` takes only `text`",
            other.name
        )));
    }
    let text = NamedTensor::require(inputs, "text")?;
    let dtype = text.dtype();
    if dtype != Dtype::Bytes {
        return Err(Error::invalid_input(format!(
            "input `text` has dtype {dtype:?}, expected BYTES (one string per text)"
        )));
    }
    let shape = text.shape();
    if shape.len() != 1 {
        return Err(Error::shape_mismatch(format!(
            "input `text` has shape {}, expected [N] (one string per text)",
            format_shape(&shape)
        )));
    }
    let strings = text.to_bytes()?;
    if strings.is_empty() {
        return Err(Error::invalid_input(
            "input `text` is an empty batch; give at least one string",
        ));
    }
    if let Some((i, s)) = strings
        .iter()
        .enumerate()
        .find(|(_, s)| s.len() > MAX_TEXT_BYTES)
    {
        return Err(Error::invalid_input(format!(
            "input `text` element {i} has {} bytes, more than the {MAX_TEXT_BYTES} a text may \
             have (only its first {MAX_TOKENS} word pieces would be used)",
            s.len()
        )));
    }
    Ok(strings)
}

/// `strings` as UTF-8 text; `invalid-input` naming the first element that is not.
pub fn utf8_texts(strings: Vec<Vec<u8>>) -> Result<Vec<String>> {
    strings
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            String::from_utf8(s).map_err(|e| {
                Error::invalid_input(format!(
                    "input `text` element {i} is not UTF-8: invalid byte at offset {}",
                    e.utf8_error().valid_up_to()
                ))
            })
        })
        .collect()
}

/// The encoder's weights, for a function's metadata: the tokenizer's files, the embeddings
/// and layer 0's query projection standing for every layer's tensors.
pub fn weight_specs() -> Vec<IoSpec> {
    let w = IoSpec::new;
    vec![
        w(
            "vocab.txt",
            Dtype::U8,
            &[-1],
            "The tokenizer's vocab.txt (bytes): one word piece per line.",
        ),
        w(
            "config.json",
            Dtype::U8,
            &[-1],
            "The model's config.json (bytes): num_attention_heads, layer_norm_eps.",
        ),
        w(
            "embeddings.word_embeddings.weight",
            Dtype::F32,
            &[-1, -1],
            "Word-piece embeddings [vocab, hidden].",
        ),
        w(
            "embeddings.position_embeddings.weight",
            Dtype::F32,
            &[-1, -1],
            "Position embeddings [positions, hidden].",
        ),
        w(
            "embeddings.token_type_embeddings.weight",
            Dtype::F32,
            &[-1, -1],
            "Token-type embeddings [types, hidden] (type 0 is used).",
        ),
        w(
            "embeddings.LayerNorm.weight",
            Dtype::F32,
            &[-1],
            "Embedding layer norm scale [hidden].",
        ),
        w(
            "embeddings.LayerNorm.bias",
            Dtype::F32,
            &[-1],
            "Embedding layer norm shift [hidden].",
        ),
        w(
            "encoder.layer.0.attention.self.query.weight",
            Dtype::F32,
            &[-1, -1],
            "Layer 0's query projection [hidden, hidden]; likewise key, value, \
             attention.output.dense, intermediate.dense, output.dense (weight and bias) and the \
             two LayerNorms, for every layer 0, 1, …",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::json_number;

    #[test]
    fn reads_numbers_of_a_flat_config() {
        let text = r#"{"hidden_act": "gelu", "layer_norm_eps": 1e-12, "num_attention_heads" : 12}"#;
        assert_eq!(json_number(text, "num_attention_heads"), Some(12.0));
        assert_eq!(json_number(text, "layer_norm_eps"), Some(1e-12));
        assert_eq!(json_number(text, "hidden_act"), None);
        assert_eq!(json_number(text, "missing"), None);
    }
}
