//! Reading and writing trained weights as safetensors: the parameters under their
//! `state_dict` names, preprocessing tensors (`scaler.*`, `target.*`), optimizer state in
//! checkpoints (`__optim__.m.N`, `__optim__.v.N`), and `__metadata__` recording how the
//! weights were made.
//!
//! Files are written to a temporary sibling and renamed into place, so an interrupted
//! write never leaves a truncated weights file behind.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::net::{Network, Param};

/// A tensor read from a file, converted to `f32`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// Every tensor of a file and its metadata.
#[derive(Clone, Debug, Default)]
pub struct WeightsFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

/// A weights file that cannot be read or does not fit the network.
#[derive(Debug)]
pub enum WeightsError {
    /// Reading or writing failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid safetensors, or a tensor is unusable.
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            WeightsError::Format { path, what } => write!(f, "{}: {what}", path.display()),
        }
    }
}

impl std::error::Error for WeightsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WeightsError::Io { source, .. } => Some(source),
            WeightsError::Format { .. } => None,
        }
    }
}

/// The `__metadata__` of safetensors `bytes` (empty when there is none or the header does
/// not parse; reading the tensors reports that).
pub fn metadata_of(bytes: &[u8]) -> BTreeMap<String, String> {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, meta)| meta.metadata().clone())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// Prefix of optimizer-state tensors in a checkpoint.
pub const OPTIM_PREFIX: &str = "__optim__.";

impl WeightsFile {
    /// Reads `path`; F32, F16 and BF16 tensors are converted to `f32`.
    pub fn read(path: &Path) -> Result<WeightsFile, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })?;
        let format = |what: String| WeightsError::Format {
            path: path.to_owned(),
            what,
        };
        let metadata = metadata_of(&bytes);
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| format(format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(format(format!(
                        "tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"
                    )));
                }
            };
            tensors.insert(
                name,
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(WeightsFile { tensors, metadata })
    }

    /// Copies every parameter of `net` from this file; each must be present with the
    /// network's shape (the error names the tensor and both shapes).
    pub fn load_into(&self, net: &mut Network, path: &Path) -> Result<(), WeightsError> {
        for p in &mut net.params {
            let t = self
                .tensors
                .get(&p.name)
                .ok_or_else(|| WeightsError::Format {
                    path: path.to_owned(),
                    what: format!(
                        "has no tensor `{}` (the spec's network needs it, shape {:?})",
                        p.name, p.shape
                    ),
                })?;
            if t.shape != p.shape {
                return Err(WeightsError::Format {
                    path: path.to_owned(),
                    what: format!(
                        "tensor `{}` has shape {:?}; the spec's network needs {:?}",
                        p.name, t.shape, p.shape
                    ),
                });
            }
            p.data.copy_from_slice(&t.data);
        }
        Ok(())
    }
}

/// Writes `params` and `extra` tensors (all F32) with `metadata` to `path`, atomically
/// (a temporary sibling renamed into place). Creates the parent folder.
pub fn write(
    path: &Path,
    params: &[Param],
    extra: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightsError> {
    write_over(path, None, params, extra, metadata)
}

/// [`write()`], with every tensor of the safetensors file `base` (`base_path` names it in
/// errors; any dtype, bytes unchanged) written first: a trained head beside the weights of
/// the model it sits on, as one file. `metadata` replaces `base`'s. A name in both is a
/// [`WeightsError::Format`].
pub fn write_over(
    path: &Path,
    base: Option<(&Path, &[u8])>,
    params: &[Param],
    extra: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightsError> {
    let io = |source| WeightsError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone(), &p.data[..]))
        .chain(extra.iter().map(|(n, s, d)| (n.clone(), s.clone(), &d[..])))
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let base = match base {
        Some((base_path, base)) => Some((
            base_path,
            SafeTensors::deserialize(base).map_err(|e| WeightsError::Format {
                path: base_path.to_owned(),
                what: e.to_string(),
            })?,
        )),
        None => None,
    };
    let mut views = Vec::with_capacity(bytes.len());
    if let Some((base_path, base)) = &base {
        for (name, view) in base.iter() {
            if bytes.iter().any(|(n, _, _)| n == name) {
                return Err(WeightsError::Format {
                    path: base_path.to_path_buf(),
                    what: format!(
                        "already has a tensor `{name}`, which the trained network writes too"
                    ),
                });
            }
            let view =
                TensorView::new(view.dtype(), view.shape().to_vec(), view.data()).map_err(|e| {
                    WeightsError::Format {
                        path: base_path.to_path_buf(),
                        what: format!("tensor `{name}`: {e}"),
                    }
                })?;
            views.push((name.to_owned(), view));
        }
    }
    for (name, shape, data) in &bytes {
        let view =
            TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| WeightsError::Format {
                path: path.to_owned(),
                what: format!("tensor `{name}`: {e}"),
            })?;
        views.push((name.clone(), view));
    }
    let info: HashMap<String, String> = metadata.clone().into_iter().collect();
    let serialized =
        safetensors::tensor::serialize(views, Some(info)).map_err(|e| WeightsError::Format {
            path: path.to_owned(),
            what: e.to_string(),
        })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, serialized).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}
