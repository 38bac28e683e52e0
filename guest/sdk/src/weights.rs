//! The weights set bound to the current request: a prepared safetensors file, in PyTorch
//! `state_dict` names and layouts. Weights stay in host memory; [`get`] returns a handle.
//!
//! The set's names, shapes and dtypes are asked of the host once, on the first
//! [`contains`], [`info`], [`shape_of`] or [`entries`], and kept for the instance's life:
//! the set bound to an instance never changes (the host makes a fresh instance per
//! request), and one `entries` call costs less than a host call per checked weight.

use std::sync::OnceLock;

use crate::wit::tensorlet::nn::weights as wit;
use crate::{Error, Result, Tensor, TensorInfo, format_shape};

/// The set's entries in name order, fetched with one host call on first use.
fn cached() -> &'static [TensorInfo] {
    static ENTRIES: OnceLock<Vec<TensorInfo>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let mut all = wit::entries();
        // The host lists them in name order; sorting keeps the lookup right regardless.
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        all
    })
}

/// Every tensor in the set (name, shape, dtype), in name order.
pub fn entries() -> Vec<TensorInfo> {
    cached().to_vec()
}

/// The weight named `name` as a handle (no copy); `not-found` if the set lacks it.
pub fn get(name: &str) -> Result<Tensor> {
    wit::get(name)
}

/// The shape and dtype of `name`, if the set has it.
pub fn info(name: &str) -> Option<TensorInfo> {
    lookup(name).cloned()
}

/// Whether the set has a tensor named `name` (an optional bias, say).
pub fn contains(name: &str) -> bool {
    lookup(name).is_some()
}

/// The cached entry of `name`, without copying it.
fn lookup(name: &str) -> Option<&'static TensorInfo> {
    let all = cached();
    all.binary_search_by(|t| t.name.as_str().cmp(name))
        .ok()
        .map(|i| &all[i])
}

/// The weight named `name` if the set has it (an optional bias, say), its shape checked
/// against `expected` as [`shape_of`] does; `None` if the set lacks it.
pub fn get_optional(name: &str, expected: &[Option<u32>]) -> Result<Option<Tensor>> {
    if !contains(name) {
        return Ok(None);
    }
    shape_of(name, expected)?;
    get(name).map(Some)
}

/// The shape of weight `name`, checked against `expected`, where `None` accepts any size
/// in that dimension. `not-found` if absent, `shape-mismatch` naming both shapes if the rank
/// or a fixed dimension differs.
pub fn shape_of(name: &str, expected: &[Option<u32>]) -> Result<Vec<u32>> {
    let info = lookup(name).ok_or_else(|| {
        Error::not_found(format!(
            "weight `{name}` is missing from the weights set (expected shape {})",
            format_expected(expected)
        ))
    })?;
    let fits = info.shape.len() == expected.len()
        && info
            .shape
            .iter()
            .zip(expected)
            .all(|(&got, want)| want.is_none_or(|w| w == got));
    if fits {
        Ok(info.shape.clone())
    } else {
        Err(Error::shape_mismatch(format!(
            "weight `{name}` has shape {}, expected {}",
            format_shape(&info.shape),
            format_expected(expected)
        )))
    }
}

/// Formats an expected shape, `?` standing for a dimension of any size: `[32, ?, 3, 3]`.
pub fn format_expected(expected: &[Option<u32>]) -> String {
    let dims: Vec<String> = expected
        .iter()
        .map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}
