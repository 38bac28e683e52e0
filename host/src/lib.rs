//! tensorlet's host: runs inference functions — WebAssembly components — with native
//! SIMD kernels and per-request weights.
//!
//! ```no_run
//! use tensorlet_host::{Runtime, RuntimeConfig, InferenceRequest};
//!
//! # fn main() -> tensorlet_host::Result<()> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let function = runtime.load_function_file("mnist_cnn.wasm".as_ref())?;
//! let weights = runtime.load_weights_file("weights.safetensors".as_ref())?;
//! let request = InferenceRequest::from_json(&std::fs::read_to_string("request.json").unwrap())?;
//! let response = function.infer_request(&weights, &request)?;
//! println!("{}", serde_json::to_string(&response).unwrap());
//! # Ok(()) }
//! ```
//!
//! A [`Runtime`] holds the engine, linker, kernels and weights cache; a [`Function`] is a
//! compiled component; [`Weights`] is a prepared safetensors file. Each call to
//! [`Function::infer`] runs in a fresh instance with a deadline, a memory limit and a
//! tensor budget; every failure is a typed [`Error`]. [`RuntimeConfig::kernels`] picks
//! the kernels that run the ops: the native plugin, or the kernels component
//! ([`KernelBackend::Wasm`]) inside each request's store.

pub mod bundled;
mod error;
mod host;
pub mod oip;
mod prepared;
mod runtime;
pub mod tensor;
mod wasm_kernels;
pub mod weights;
mod wit;

pub use error::{Error, ErrorKind, Result};
pub use oip::{InferenceRequest, InferenceResponse};
pub use runtime::{Function, Runtime, RuntimeConfig};
pub use tensor::{DType, Tensor, TensorData};
pub use tensorlet_kernels::Level as KernelLevel;
pub use wasm_kernels::{KernelBackend, KernelSession, SessionTensor};
pub use weights::Weights;
pub use wit::{FunctionMetadata, IoSpec};

/// Paths of the guest test programs built alongside the bundled functions (for tests).
#[doc(hidden)]
pub mod test_programs {
    /// A function that traps, panics, loops or allocates on request.
    pub const MISBEHAVE: &str = env!("TENSORLET_MISBEHAVE_WASM");
}
