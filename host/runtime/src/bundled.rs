//! The functions bundled with tensorlet, and their default weights.
//!
//! `build.rs` compiles the components in `guest/functions/` for wasm32-wasip2; they and
//! the weights in `models/<name>/weights.safetensors` are embedded in the binary, so
//! `tensorlet run mnist-cnn` works from any directory with nothing else on disk.

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
    /// The default weights (safetensors), from `models/<name>/`.
    pub weights: &'static [u8],
}

/// Every bundled function.
pub const BUNDLED: &[Bundled] = &[
    Bundled {
        name: "mlp",
        summary: "x [N,10] -> dense 10 (sigmoid) -> dense 1 -> y [N,1]",
        component: include_bytes!(env!("TENSORLET_MLP_WASM")),
        weights: include_bytes!("../../../models/mlp/weights.safetensors"),
    },
    Bundled {
        name: "mnist-cnn",
        summary: "image [N,C,H,W] or png -> 2x(conv3x3+relu+maxpool) -> dense 128 -> dense K -> softmax",
        component: include_bytes!(env!("TENSORLET_MNIST_CNN_WASM")),
        weights: include_bytes!("../../../models/mnist-cnn/weights.safetensors"),
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
