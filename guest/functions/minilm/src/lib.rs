//! `minilm`: sentence embeddings with a BERT encoder, as sentence-transformers'
//! all-MiniLM-L6-v2 computes them (`SentenceTransformer.encode(normalize_embeddings=True)`).
//!
//! Input `text` (`bytes`, `[N]`): UTF-8 sentences. Each is tokenized here, in the sandbox,
//! by the BERT WordPiece tokenizer ([`tensorlet_sdk::text`]) with the vocabulary stored in
//! the weights set (`vocab.txt`, a u8 tensor holding the file's bytes), truncated to 256
//! word pieces with `[CLS]` and `[SEP]`, and run through the encoder of
//! [`tensorlet_sdk::bert`] (padded, masked, mean-pooled, L2-normalised). Output `embedding`
//! (`[N, hidden]`); output `token_ids` (`[N, S]`, f32, padded with the `[PAD]` id) shows
//! the tokenizer's work.

use tensorlet_sdk::bert::{self, Encoder};
use tensorlet_sdk::{Dtype, Function, FunctionMetadata, IoSpec, NamedTensor, Result, Tensor};

/// The `minilm` inference function.
struct MiniLm;

impl Function for MiniLm {
    fn metadata() -> FunctionMetadata {
        FunctionMetadata {
            name: "minilm".to_owned(),
            description: "Sentence embeddings (all-MiniLM-L6-v2): UTF-8 text in, the mean-pooled, \
                          L2-normalised output of a BERT encoder out. The tokenizer runs in the \
                          function, with the vocabulary from the weights."
                .to_owned(),
            inputs: vec![IoSpec::new(
                "text",
                Dtype::Bytes,
                &[-1],
                "A batch of UTF-8 strings [N]; each is truncated to 256 word pieces.",
            )],
            outputs: vec![
                IoSpec::new(
                    "embedding",
                    Dtype::F32,
                    &[-1, 384],
                    "One unit-length embedding per string [N, hidden] (384 for all-MiniLM-L6-v2).",
                ),
                IoSpec::new(
                    "token_ids",
                    Dtype::F32,
                    &[-1, -1],
                    "The word-piece ids of each string with [CLS] and [SEP] [N, S], padded with \
                     the [PAD] id.",
                ),
            ],
            weights: bert::weight_specs(),
        }
    }

    fn infer(inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>> {
        let texts = bert::utf8_texts(bert::text_input(&inputs, "minilm")?)?;
        let encoder = Encoder::load()?;
        let out = encoder.embed(&texts)?;
        let ids: Vec<f32> = out.token_ids.iter().map(|&i| i as f32).collect();
        let n = texts.len() as u32;
        Ok(vec![
            NamedTensor::new("embedding", out.embedding),
            NamedTensor::new("token_ids", Tensor::from_f32(&[n, out.seq], &ids)?),
        ])
    }
}

tensorlet_sdk::export!(MiniLm);
