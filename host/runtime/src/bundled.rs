//! The functions bundled with tensorlet, and their default weights.
//!
//! `build.rs` compiles the components in `guest/functions/` for wasm32-wasip2; they and
//! the weights in `models/<name>/weights.safetensors` are embedded in the binary, so
//! `tensorlet run mnist-cnn` works from any directory with nothing else on disk. `minilm`'s
//! weights (91 MB, fetched by `models/data/fetch.sh minilm`) are too large to embed: it is
//! bundled without default weights, and so is `spam` (those weights plus a head trained by
//! `tensorlet train models/spam/train.toml`).

use crate::error::{Error, Result};

/// A bundled function: its component and default weights.
#[derive(Clone, Copy, Debug)]
pub struct Bundled {
    /// The name `tensorlet run` accepts.
    pub name: &'static str,
    /// One line on what it computes.
    pub summary: &'static str,
    /// The component's bytes (wasm32-wasip2).
    pub component: &'static [u8],
    /// The default weights (safetensors), from `models/<name>/`, if they are embedded.
    pub default_weights: Option<&'static [u8]>,
    /// Where to get weights when none are embedded.
    pub weights_hint: &'static str,
}

impl Bundled {
    /// The default weights, or a `not-found` error saying where to get weights.
    pub fn weights(&self) -> Result<&'static [u8]> {
        self.default_weights.ok_or_else(|| {
            Error::not_found(format!(
                "bundled function `{}` has no bundled weights; {}",
                self.name, self.weights_hint
            ))
        })
    }
}

/// Every bundled function.
pub const BUNDLED: &[Bundled] = &[
    Bundled {
        name: "mlp",
        summary: "x [N,10] -> dense 10 (sigmoid) -> dense 1 -> y [N,1]",
        component: include_bytes!(env!("TENSORLET_MLP_WASM")),
        default_weights: Some(include_bytes!("../../../models/mlp/weights.safetensors")),
        weights_hint: "",
    },
    Bundled {
        name: "mnist-cnn",
        summary: "image [N,C,H,W] or png -> 2x(conv3x3+relu+maxpool) -> dense 128 -> dense K -> softmax",
        component: include_bytes!(env!("TENSORLET_MNIST_CNN_WASM")),
        default_weights: Some(include_bytes!(
            "../../../models/mnist-cnn/weights.safetensors"
        )),
        weights_hint: "",
    },
    Bundled {
        name: "minilm",
        summary: "text [N] (BYTES) -> WordPiece -> 6-layer BERT encoder -> mean pool -> unit embedding [N,384]",
        component: include_bytes!(env!("TENSORLET_MINILM_WASM")),
        default_weights: None,
        weights_hint: "fetch all-MiniLM-L6-v2 with `bash models/data/fetch.sh minilm` and pass \
                       `--weights target/data/minilm/minilm.safetensors`",
    },
    Bundled {
        name: "spam",
        summary: "text [N] (BYTES, raw e-mail) -> subject + body -> minilm embedding -> dense head -> spam probability [N]",
        component: include_bytes!(env!("TENSORLET_SPAM_WASM")),
        default_weights: None,
        weights_hint: "train its head with `tensorlet train models/spam/train.toml -o \
                       spam.safetensors` (after `bash models/data/fetch.sh all`) and pass \
                       `--weights spam.safetensors`",
    },
];

/// The bundled function called `name`.
pub fn find(name: &str) -> Result<&'static Bundled> {
    BUNDLED.iter().find(|b| b.name == name).ok_or_else(|| {
        let names: Vec<_> = BUNDLED.iter().map(|b| b.name).collect();
        Error::not_found(format!(
            "no bundled function `{name}`; bundled: {} (or give a path to a .wasm component)",
            names.join(", ")
        ))
    })
}
