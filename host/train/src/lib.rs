//! `tensorlet-train`: the model lifecycle before deployment, natively in Rust on
//! `tensorlet-kernels`.
//!
//! - [`baseline`]: the least-squares linear model a regression network should beat.
//! - [`data`]: data sets in the formats people have (MNIST IDX files, CSV with a target
//!   column, a folder of PNG images per class), seeded shuffles and splits, content digests.
//! - [`metrics`]: classification (accuracy, per-class precision/recall/F1/support, macro and
//!   weighted averages, confusion matrix) and regression (MSE, MAE, R²) metrics, equal to
//!   scikit-learn's.
//! - [`plot`]: PNG learning curves and confusion-matrix heat maps, with an embedded font.
//! - [`spec`]: the training spec (TOML): layers, loss, optimizer, schedule, data.
//! - [`net`]: the network's parameters and its forward and backward passes.
//! - [`optim`]: SGD, Adam and AdamW with PyTorch's update rules.
//! - [`train`]: the batch-parallel training loop, validation and progress reports.
//! - [`weights`]: reading and writing weights and checkpoints (safetensors with metadata).
//! - [`scaler`]: standardisation fitted on the training split, stored with the weights.
//!
//! Parameter names and layouts follow PyTorch's `state_dict` (`conv1.weight`
//! `[out, in, kh, kw]`, `fc1.weight` `[out, in]`), so trained weights run unchanged in the
//! bundled inference functions.

pub mod baseline;
pub mod data;
pub mod metrics;
pub mod net;
pub mod optim;
pub mod plot;
pub mod scaler;
pub mod spec;
pub mod train;
pub mod weights;
