//! Weights sets: safetensors files, validated and prepared once.
//!
//! A file is memory-mapped, its header and offsets are validated (by the `safetensors`
//! crate: JSON header, offsets inside the file and contiguous, byte length agreeing with
//! dtype × shape), and every tensor is decoded into f32 (F16 and BF16 via `half`). The
//! prepared [`Weights`] is immutable and shared: the [`crate::Runtime`] caches it by the
//! SHA-256 of the file's bytes, and each request binds it to its store by reference.
//! U8 tensors (a tokenizer's vocabulary, a config file) stay bytes. [`convert`] rewrites a
//! file's F32 tensors as F16 or BF16 (half the bytes).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::prepared::{HalfValues, Prepared};
use crate::tensor::{DType, Tensor};
use tensorlet_kernels::half::{bf16, f16};

/// One prepared weight: its data in f32 (bytes for U8) and the dtype it was stored as.
#[derive(Clone, Debug)]
pub struct Weight {
    /// The tensor, decoded to f32 (U8 tensors stay bytes).
    pub tensor: Tensor,
    /// The dtype in the file.
    pub stored: DType,
}

/// A prepared weights set.
#[derive(Debug, Default)]
pub struct Weights {
    digest: String,
    source: String,
    tensors: BTreeMap<String, Weight>,
}

/// The lowercase hex SHA-256 of `bytes`: the cache key of a weights file.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Weights {
    /// An empty set, for functions that need no weights.
    pub fn empty() -> Self {
        Weights {
            digest: digest(b""),
            source: "<none>".into(),
            tensors: BTreeMap::new(),
        }
    }

    /// Validates and prepares safetensors `bytes`; `source` names them in errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        Self::prepare(bytes, source, digest(bytes))
    }

    /// Memory-maps, validates and prepares the safetensors file at `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let (map, digest) = map_file(path)?;
        Self::prepare(&map, &path.display().to_string(), digest)
    }

    pub(crate) fn prepare(bytes: &[u8], source: &str, digest: String) -> Result<Self> {
        let bad = |msg: String| Error::invalid_input(format!("weights `{source}`: {msg}"));
        check_header(bytes).map_err(bad)?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            let shape = view.shape().to_vec();
            let data = view.data();
            let (values, stored, half): (Vec<f32>, DType, Option<HalfValues>) = match view.dtype() {
                Dtype::F32 => (
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    DType::F32,
                    None,
                ),
                Dtype::F16 => {
                    let h: Vec<f16> = data
                        .chunks_exact(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    let f = h.iter().map(|v| v.to_f32()).collect();
                    (f, DType::F16, Some(HalfValues::F16(h)))
                }
                Dtype::BF16 => {
                    let h: Vec<bf16> = data
                        .chunks_exact(2)
                        .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    let f = h.iter().map(|v| v.to_f32()).collect();
                    (f, DType::BF16, Some(HalfValues::Bf16(h)))
                }
                Dtype::U8 => {
                    // Bytes (a tokenizer's vocabulary, a config file): kept as they are.
                    let tensor = Tensor::from_u8(shape, data.to_vec())
                        .map_err(|e| bad(format!("tensor `{name}`: {}", e.message())))?;
                    let stored = DType::U8;
                    tensors.insert(name.to_string(), Weight { tensor, stored });
                    continue;
                }
                other => {
                    return Err(Error::unsupported(format!(
                        "weights `{source}`: tensor `{name}` has dtype {other:?}; \
                             supported dtypes are F32, F16, BF16 and U8"
                    )));
                }
            };
            let tensor = Tensor::from_f32(shape, values)
                .map_err(|e| bad(format!("tensor `{name}`: {}", e.message())))?
                .with_prepared(Prepared::new(half));
            tensors.insert(name.to_string(), Weight { tensor, stored });
        }
        Ok(Weights {
            digest,
            source: source.to_string(),
            tensors,
        })
    }

    /// The SHA-256 of the file this set was prepared from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Where the set came from (a path, or a caller-given name).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The weight named `name`.
    pub fn get(&self, name: &str) -> Option<&Weight> {
        self.tensors.get(name)
    }

    /// Every weight, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Weight)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many tensors the set has.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the set has no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// Safetensors `bytes` with every F32 tensor rounded (to nearest, ties to even) to `to`,
/// F16 or BF16; other tensors and `__metadata__` are kept as they are, and the metadata
/// gains `tensorlet.converted` = `F32->F16` (or `F32->BF16`). `source` names the input in
/// errors.
///
/// Errors (`invalid-input`) if `to` is not F16 or BF16, or `bytes` is not a valid
/// safetensors file.
pub fn convert(bytes: &[u8], source: &str, to: DType) -> Result<Vec<u8>> {
    let (dtype, encode): (Dtype, fn(f32) -> [u8; 2]) = match to {
        DType::F16 => (Dtype::F16, |v| f16::from_f32(v).to_le_bytes()),
        DType::BF16 => (Dtype::BF16, |v| bf16::from_f32(v).to_le_bytes()),
        other => {
            return Err(Error::invalid_input(format!(
                "weights can be converted to F16 or BF16, not {}",
                other.as_str()
            )));
        }
    };
    let bad = |msg: String| Error::invalid_input(format!("weights `{source}`: {msg}"));
    check_header(bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let mut metadata = header.metadata().clone().unwrap_or_default();
    metadata.insert(
        "tensorlet.converted".into(),
        format!("F32->{}", to.as_str()),
    );
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .iter()
        .map(|(name, view)| {
            let data = if view.dtype() == Dtype::F32 {
                view.data()
                    .chunks_exact(4)
                    .flat_map(|c| encode(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect()
            } else {
                view.data().to_vec()
            };
            let d = if view.dtype() == Dtype::F32 {
                dtype
            } else {
                view.dtype()
            };
            (name.to_string(), d, view.shape().to_vec(), data)
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(name, d, shape, data)| {
            safetensors::tensor::TensorView::new(*d, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::internal(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| Error::internal(format!("writing the converted weights: {e}")))
}

/// Bytes per element of a safetensors dtype name, for the dtypes whose size is whole bytes.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// Checks the header's framing and every tensor's offsets and byte length, with messages
/// that name the tensor and the numbers that disagree. (`safetensors` checks the same
/// and more, but its messages do not say which tensor is wrong.)
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(format!(
            "the file is {} bytes; a safetensors file starts with an 8-byte header length",
            bytes.len()
        ));
    };
    let header_len = u64::from_le_bytes(*len);
    let Some(header) = usize::try_from(header_len).ok().and_then(|n| rest.get(..n)) else {
        return Err(format!(
            "the header length field says {header_len} bytes, but only {} bytes follow it",
            rest.len()
        ));
    };
    let data_len = (rest.len() - header.len()) as u64;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| format!("the header is not a JSON object: {e}"))?;
    for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let dtype = info["dtype"].as_str().unwrap_or("?");
        let shape: Option<Vec<u64>> = info["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let offsets: Option<Vec<u64>> = info["data_offsets"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let (Some(shape), Some(&[begin, end])) = (shape, offsets.as_deref()) else {
            return Err(format!(
                "tensor `{name}` needs a `shape` list and two `data_offsets`, got {info}"
            ));
        };
        if begin > end || end > data_len {
            return Err(format!(
                "tensor `{name}`: data offsets [{begin}, {end}] do not fit the data section \
                 of {data_len} bytes (the file may be truncated)"
            ));
        }
        let Some(size) = dtype_size(dtype) else {
            continue;
        };
        let expected = shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} overflows"))?;
        if expected != end - begin {
            return Err(format!(
                "tensor `{name}`: dtype {dtype} with shape {shape:?} needs {expected} bytes, \
                 but its data offsets [{begin}, {end}] span {} bytes",
                end - begin
            ));
        }
    }
    Ok(())
}

/// Memory-maps `path` and computes its digest.
pub(crate) fn map_file(path: &Path) -> Result<(memmap2::Mmap, String)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read once, to validate and decode, and dropped right after; the
    // prepared weights own their data. A file truncated concurrently is the one hazard,
    // as with any mmap reader.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let digest = digest(&map);
    Ok((map, digest))
}

/// A shared, prepared weights set (what the cache hands out).
pub type SharedWeights = Arc<Weights>;

/// What identifies a file's content cheaply: its path, length and modification time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

/// One digest's prepared set; its lock is held while that set is prepared, so preparing
/// one set never blocks a request for (or the preparation of) another.
#[derive(Default)]
struct Slot {
    weights: Mutex<Weak<Weights>>,
}

/// The runtime's weights cache: prepared sets by content digest (kept while someone holds
/// them), and the digest of each file seen, by [`FileKey`].
#[derive(Default)]
pub(crate) struct WeightsCache {
    files: Mutex<HashMap<FileKey, String>>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WeightsCache {
    /// The prepared set of the file at `path`: from the cache if its path, length and
    /// modification time are known and its set is alive, else read, hashed and prepared
    /// (or shared with another file of the same digest).
    pub(crate) fn load_file(&self, path: &Path) -> Result<Arc<Weights>> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let key = FileKey {
            path: std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?,
            len: meta.len(),
            modified: meta.modified().ok(),
        };
        let known = lock(&self.files).get(&key).cloned();
        if let Some(w) = known.and_then(|digest| self.alive(&digest)) {
            return Ok(w);
        }
        let (map, digest) = map_file(path)?;
        lock(&self.files).insert(key, digest.clone());
        self.get_or_prepare(digest, |digest| {
            Weights::prepare(&map, &path.display().to_string(), digest)
        })
    }

    /// The prepared set of safetensors `bytes`, shared by content digest.
    pub(crate) fn load_bytes(&self, source: &str, bytes: &[u8]) -> Result<Arc<Weights>> {
        self.get_or_prepare(digest(bytes), |digest| {
            Weights::prepare(bytes, source, digest)
        })
    }

    fn slot(&self, digest: &str) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        // Forget digests whose sets were dropped; a slot in use (being prepared) stays, and
        // is never waited for here.
        slots.retain(|_, s| {
            Arc::strong_count(s) > 1 || s.weights.try_lock().map_or(true, |w| w.strong_count() > 0)
        });
        slots.entry(digest.to_string()).or_default().clone()
    }

    fn alive(&self, digest: &str) -> Option<Arc<Weights>> {
        let slot = lock(&self.slots).get(digest).cloned()?;
        lock(&slot.weights).upgrade()
    }

    fn get_or_prepare(
        &self,
        digest: String,
        prepare: impl FnOnce(String) -> Result<Weights>,
    ) -> Result<Arc<Weights>> {
        let slot = self.slot(&digest);
        let mut held = lock(&slot.weights);
        if let Some(w) = held.upgrade() {
            return Ok(w);
        }
        let w = Arc::new(prepare(digest)?);
        *held = Arc::downgrade(&w);
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn converts_f32_tensors_to_half_and_keeps_the_rest() {
        let values = [1.0f32, -2.5, 0.1, 65504.0, 1e-8];
        let header = r#"{"__metadata__":{"who":"me"},"a":{"dtype":"F32","shape":[5],"data_offsets":[0,20]},"b":{"dtype":"U8","shape":[3],"data_offsets":[20,23]}}"#;
        let mut data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.extend_from_slice(b"xyz");
        let file = file(header, &data);
        for (to, name) in [(DType::F16, "F16"), (DType::BF16, "BF16")] {
            let out = convert(&file, "t", to).unwrap();
            let w = Weights::from_bytes(&out, "converted").unwrap();
            let a = w.get("a").unwrap();
            assert_eq!(a.stored, to);
            for (got, &v) in a.tensor.f32s("a").unwrap().iter().zip(&values) {
                let want = match to {
                    DType::F16 => f16::from_f32(v).to_f32(),
                    _ => bf16::from_f32(v).to_f32(),
                };
                assert_eq!(*got, want, "{name} {v}");
            }
            assert_eq!(w.get("b").unwrap().tensor.u8s("b").unwrap(), b"xyz");
            let (_, meta) = SafeTensors::read_metadata(&out).unwrap();
            let meta = meta.metadata().clone().unwrap();
            assert_eq!(meta["who"], "me");
            assert_eq!(meta["tensorlet.converted"], format!("F32->{name}"));
        }
        assert!(convert(&file, "t", DType::U8).is_err());
        assert!(convert(b"nonsense", "t", DType::F16).is_err());
    }

    #[test]
    fn decodes_every_float_dtype() {
        let mut data = Vec::new();
        data.extend_from_slice(&1.5f32.to_le_bytes());
        data.extend_from_slice(&half::f16::from_f32(-2.25).to_le_bytes());
        data.extend_from_slice(&half::bf16::from_f32(3.0).to_le_bytes());
        let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1],"data_offsets":[4,6]},"c":{"dtype":"BF16","shape":[1],"data_offsets":[6,8]}}"#;
        let w = Weights::from_bytes(&file(header, &data), "t").unwrap();
        let get = |n: &str| w.get(n).unwrap().tensor.f32s(n).unwrap()[0];
        assert_eq!(get("a"), 1.5);
        assert_eq!(get("b"), -2.25);
        assert_eq!(get("c"), 3.0);
        assert_eq!(w.get("b").unwrap().stored, DType::F16);
    }

    #[test]
    fn rejects_disagreeing_shape_and_unsupported_dtype() {
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#;
        let err = Weights::from_bytes(&file(header, &[0; 4]), "t").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        let header = r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let err = Weights::from_bytes(&file(header, &[0; 8]), "t").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unsupported);
        assert!(err.message().contains("`a`"), "{err}");
    }
}
