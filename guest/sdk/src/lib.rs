//! The tensorlet SDK: everything an inference function needs to run inside a tensorlet
//! host, over the `tensorlet:nn` WIT contract.
//!
//! A function is a `cdylib` crate built for `wasm32-wasip2`. It implements [`Function`]
//! (`metadata()` and `infer(inputs)`) on a unit struct and names it with
//! [`export!`]; that is the only glue it writes:
//!
//! ```ignore
//! use tensorlet_sdk::{Activation, Error, Function, FunctionMetadata, NamedTensor, weights};
//!
//! struct Linear;
//!
//! impl Function for Linear {
//!     fn metadata() -> FunctionMetadata { /* ... */ }
//!     fn infer(inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, Error> {
//!         let x = NamedTensor::require(&inputs, "x")?;
//!         let w = weights::get("fc.weight")?;
//!         let y = x.dense(&w, None, Activation::None)?;
//!         Ok(vec![NamedTensor::new("y", y)])
//!     }
//! }
//!
//! tensorlet_sdk::export!(Linear);
//! ```
//!
//! Tensors ([`Tensor`]) are handles to host-owned data: ops run in the host's native
//! kernels and only handles cross the sandbox boundary. Data enters and leaves guest
//! memory only through [`Tensor::from_f32`], [`Tensor::from_u8`], [`Tensor::to_f32`] and
//! [`Tensor::to_u8`]. The [`image`] module decodes PNG and PGM files inside the sandbox;
//! the [`text`] module tokenizes text for BERT-style models (WordPiece); [`email`] turns
//! raw e-mail into the text a model should read; [`bert`] is a BERT sentence encoder over
//! the weights set.

pub mod bert;
pub mod email;
pub mod image;
mod tensor;
pub mod text;
pub mod weights;

#[doc(hidden)]
pub mod wit {
    //! The bindings generated from `wit/tensorlet.wit`: the one `generate!` of the crate.
    //! Function authors use the re-exports at the crate root instead.
    #![allow(missing_docs)]

    wit_bindgen::generate!({
        path: "../../wit",
        world: "inference-function",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "tensorlet_sdk::wit",
    });
}

pub use tensor::format_shape;
pub use wit::export;
pub use wit::exports::tensorlet::nn::function::{
    FunctionMetadata, Guest as Function, IoSpec, NamedTensor,
};
pub use wit::tensorlet::nn::ops::{Activation, Conv2dParams, Pool2dParams};
pub use wit::tensorlet::nn::tensors::{Dtype, Error, Tensor, TensorInfo};

/// `Result` with the contract's [`Error`] as the default error type.
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// An input (from the caller or the function) is malformed.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// A named tensor or weight does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// Shapes do not agree for the requested operation.
    pub fn shape_mismatch(message: impl Into<String>) -> Self {
        Self::ShapeMismatch(message.into())
    }

    /// The operation or dtype is not supported.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::Unsupported(message.into())
    }

    /// A resource limit (memory, tensor size) would be exceeded.
    pub fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::LimitExceeded(message.into())
    }

    /// A bug or unexpected condition.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// The human-readable message the error carries.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidInput(m)
            | Self::NotFound(m)
            | Self::ShapeMismatch(m)
            | Self::Unsupported(m)
            | Self::LimitExceeded(m)
            | Self::Internal(m) => m,
        }
    }
}

impl NamedTensor {
    /// Pairs `value` with the input or output `name`.
    pub fn new(name: impl Into<String>, value: Tensor) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }

    /// The tensor named `name` among `tensors`, if there is one.
    pub fn find<'a>(tensors: &'a [NamedTensor], name: &str) -> Option<&'a Tensor> {
        tensors.iter().find(|t| t.name == name).map(|t| &t.value)
    }

    /// The tensor named `name` among `tensors`; `not-found` naming what was given if absent.
    pub fn require<'a>(tensors: &'a [NamedTensor], name: &str) -> Result<&'a Tensor> {
        Self::find(tensors, name).ok_or_else(|| {
            Error::not_found(format!(
                "input `{name}` is missing; got {}",
                Self::names(tensors)
            ))
        })
    }

    /// The names of `tensors` for messages, e.g. `` [`x`, `y`] `` (or `no inputs`).
    pub fn names(tensors: &[NamedTensor]) -> String {
        if tensors.is_empty() {
            return "no inputs".to_owned();
        }
        let names: Vec<String> = tensors.iter().map(|t| format!("`{}`", t.name)).collect();
        format!("[{}]", names.join(", "))
    }
}

impl IoSpec {
    /// Describes one input, output or weight; `-1` in `shape` marks a varying dimension.
    pub fn new(name: &str, dtype: Dtype, shape: &[i64], description: &str) -> Self {
        Self {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            description: description.to_owned(),
        }
    }
}

impl Default for Conv2dParams {
    /// Stride 1, no padding, dilation 1, one group (PyTorch's `Conv2d` defaults).
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// The same geometry with `stride` (height, width).
    pub fn with_stride(self, stride: (u32, u32)) -> Self {
        Self { stride, ..self }
    }

    /// The same geometry with zero `padding` (height, width) on each side.
    pub fn with_padding(self, padding: (u32, u32)) -> Self {
        Self { padding, ..self }
    }

    /// The same geometry with `dilation` (height, width).
    pub fn with_dilation(self, dilation: (u32, u32)) -> Self {
        Self { dilation, ..self }
    }

    /// The same geometry with `groups` channel groups.
    pub fn with_groups(self, groups: u32) -> Self {
        Self { groups, ..self }
    }
}

impl Pool2dParams {
    /// A square `size`×`size` window moved by `stride` in both directions, no padding
    /// (`Pool2dParams::square(2, 2)` is PyTorch's `MaxPool2d(2)`).
    pub fn square(size: u32, stride: u32) -> Self {
        Self {
            kernel: (size, size),
            stride: (stride, stride),
            padding: (0, 0),
        }
    }

    /// The same window with zero `padding` (height, width) on each side.
    pub fn with_padding(self, padding: (u32, u32)) -> Self {
        Self { padding, ..self }
    }
}
