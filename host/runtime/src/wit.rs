//! The one `bindgen!` of the host, generated from `wit/tensorlet.wit`.
//!
//! Every other module imports generated types from here. The WIT `tensor` resource is
//! mapped onto [`crate::backend::TensorHandle`], whose rep is an id in the request's
//! kernel session, and WIT calls that return `result<_, error>` return the host's
//! [`crate::Error`] (converted to the WIT variant at the boundary). A second `bindgen!`,
//! in [`provider`], covers the kernels component's `kernel-provider` world, which the wasm
//! backend calls.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "inference-function",
    imports: { default: trappable },
    trappable_error_type: {
        "tensorlet:nn/tensors.error" => crate::Error,
    },
    with: {
        "tensorlet:nn/tensors.tensor": crate::backend::TensorHandle,
    },
});

pub use exports::tensorlet::nn::function::{FunctionMetadata, IoSpec, NamedTensor};
pub use tensorlet::nn::ops::{Activation, Conv2dParams, Pool2dParams};
pub use tensorlet::nn::tensors::{Dtype, Error as WitError, TensorInfo};

impl From<crate::tensor::DType> for Dtype {
    fn from(d: crate::tensor::DType) -> Self {
        use crate::tensor::DType;
        match d {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::Bf16,
            DType::U8 => Dtype::U8,
            DType::Bytes => Dtype::Bytes,
        }
    }
}

impl From<Dtype> for crate::tensor::DType {
    fn from(d: Dtype) -> Self {
        use crate::tensor::DType;
        match d {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::Bf16 => DType::BF16,
            Dtype::U8 => DType::U8,
            Dtype::Bytes => DType::Bytes,
        }
    }
}

impl From<crate::Error> for WitError {
    fn from(e: crate::Error) -> Self {
        use crate::ErrorKind as K;
        let msg = e.message().to_string();
        match e.kind() {
            K::InvalidInput => WitError::InvalidInput(msg),
            K::NotFound => WitError::NotFound(msg),
            K::ShapeMismatch => WitError::ShapeMismatch(msg),
            K::Unsupported => WitError::Unsupported(msg),
            K::LimitExceeded => WitError::LimitExceeded(msg),
            K::DeadlineExceeded | K::Unavailable | K::Trap | K::Io | K::Internal => {
                WitError::Internal(msg)
            }
        }
    }
}

impl From<WitError> for crate::Error {
    fn from(e: WitError) -> Self {
        use crate::{Error, ErrorKind as K};
        match e {
            WitError::InvalidInput(m) => Error::new(K::InvalidInput, m),
            WitError::NotFound(m) => Error::new(K::NotFound, m),
            WitError::ShapeMismatch(m) => Error::new(K::ShapeMismatch, m),
            WitError::Unsupported(m) => Error::new(K::Unsupported, m),
            WitError::LimitExceeded(m) => Error::new(K::LimitExceeded, m),
            WitError::Internal(m) => Error::new(K::Internal, m),
        }
    }
}

impl From<Activation> for tensorlet_kernels::Activation {
    fn from(a: Activation) -> Self {
        use tensorlet_kernels::Activation as A;
        match a {
            Activation::None => A::None,
            Activation::Relu => A::Relu,
            Activation::Sigmoid => A::Sigmoid,
            Activation::Tanh => A::Tanh,
            Activation::Gelu => A::Gelu,
            Activation::GeluErf => A::GeluErf,
        }
    }
}

/// The second `bindgen!`: the `kernel-provider` world, whose `tensors` and `ops` exports
/// the kernels component (`guest/kernels-component`) implements. The wasm backend
/// ([`crate::backend::wasm`]) calls them to run a function's ops in wasm; their types
/// convert from the kernels' own with the `From` impls below.
pub mod provider {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "kernel-provider",
    });

    pub use exports::tensorlet::nn::ops as kops;
    pub use exports::tensorlet::nn::tensors as ktensors;
}

impl From<tensorlet_kernels::Activation> for provider::kops::Activation {
    fn from(a: tensorlet_kernels::Activation) -> Self {
        use provider::kops::Activation as A;
        use tensorlet_kernels::Activation as K;
        match a {
            K::None => A::None,
            K::Relu => A::Relu,
            K::Sigmoid => A::Sigmoid,
            K::Tanh => A::Tanh,
            K::Gelu => A::Gelu,
            K::GeluErf => A::GeluErf,
        }
    }
}

impl From<provider::ktensors::Error> for crate::Error {
    fn from(e: provider::ktensors::Error) -> Self {
        use crate::{Error, ErrorKind as K};
        use provider::ktensors::Error as E;
        match e {
            E::InvalidInput(m) => Error::new(K::InvalidInput, m),
            E::NotFound(m) => Error::new(K::NotFound, m),
            E::ShapeMismatch(m) => Error::new(K::ShapeMismatch, m),
            E::Unsupported(m) => Error::new(K::Unsupported, m),
            E::LimitExceeded(m) => Error::new(K::LimitExceeded, m),
            E::Internal(m) => Error::new(K::Internal, m),
        }
    }
}
