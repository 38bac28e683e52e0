//! tensorlet's host library: runs inference functions — WebAssembly components — with
//! native SIMD kernels and per-request weights, for embedding in a server or a tool.
//!
//! ```no_run
//! use tensorlet_host::{InferenceRequest, ModelSettings, Registry, Runtime, RuntimeConfig};
//!
//! # fn main() -> tensorlet_host::Result<()> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;          // once: the engine
//! let registry = Registry::new(runtime);
//! registry.load_files(                                             // per model version
//!     "mnist-cnn",
//!     1,
//!     "mnist_cnn.wasm".as_ref(),
//!     "weights.safetensors".as_ref(),
//!     ModelSettings::default(),
//! )?;
//! let request = InferenceRequest::from_json(&std::fs::read_to_string("request.json").unwrap())?;
//! let response = registry.get("mnist-cnn", None)?.infer_request(&request)?; // per request
//! println!("{}", serde_json::to_string(&response).unwrap());
//! # Ok(()) }
//! ```
//!
//! A [`Runtime`] holds the engine, linker, kernel backend, admission queue and caches; a
//! [`Function`] is a compiled component; [`Weights`] is a prepared safetensors file; a
//! [`Model`] binds the two under a name and version, and a [`Registry`] serves models and
//! swaps versions atomically, loading them from a [`Repository`] folder in Triton's
//! layout if asked. Each request runs in a fresh instance with a deadline, a
//! memory limit and a tensor budget, after waiting for a slot in a bounded queue; every
//! failure is a typed [`Error`]. [`RuntimeConfig::kernels`] picks the kernels that run the
//! ops: the native plugin, or the kernels component ([`KernelBackend::Wasm`]).
//!
//! Features: `wasm-kernels` (default) embeds the kernels component for
//! [`KernelBackend::Wasm`]; `bundled` embeds the demo functions and their weights
//! (the `bundled` module), which the `tensorlet` CLI uses.

mod backend;
mod batching;
#[cfg(feature = "bundled")]
pub mod bundled;
mod compile_cache;
mod error;
mod host;
mod limits;
pub mod oip;
mod prepared;
mod registry;
pub mod repository;
mod runtime;
pub mod tensor;
pub mod weights;
mod wit;

pub use backend::KernelBackend;
pub use backend::wasm::{KernelSession, SessionTensor};
pub use error::{Error, ErrorKind, Result};
pub use limits::LimitHit;
pub use oip::{InferenceRequest, InferenceResponse};
pub use registry::{
    FailureReason, Model, ModelRef, ModelSettings, ModelStats, QUICK_COMPUTE, Registry,
    validate_name,
};
pub use repository::{ModelConfig, Repository};
pub use runtime::{Function, Runtime, RuntimeConfig, WIT_VERSION};
pub use tensor::{DType, Tensor, TensorData};
pub use tensorlet_kernels::Level as KernelLevel;
pub use weights::Weights;
pub use wit::{FunctionMetadata, IoSpec};

/// Paths of the guest test programs built alongside the bundled functions (for tests).
#[cfg(feature = "bundled")]
#[doc(hidden)]
pub mod test_programs {
    /// A function that traps, panics, loops or allocates on request.
    pub const MISBEHAVE: &str = env!("TENSORLET_MISBEHAVE_WASM");
    /// A component importing an interface no tensorlet host provides.
    pub const FOREIGN_IMPORT: &str = env!("TENSORLET_FOREIGN_IMPORT_WASM");
}
