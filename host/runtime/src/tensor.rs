//! Host-owned tensors.
//!
//! A [`Tensor`] is a shape plus reference-counted data, so handing a weight to a request
//! or reshaping is a pointer copy. The sandbox sees tensors only as WIT `tensor` handles
//! that index the store's resource table; the data lives here, in host memory.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::prepared::Prepared;

/// The element type of a tensor, as the WIT `dtype` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float (weights, as stored; decoded to f32 when prepared).
    F16,
    /// bfloat16 (weights, as stored; decoded to f32 when prepared).
    BF16,
    /// Bytes.
    U8,
    /// Byte strings, one per element (OIP `BYTES`).
    Bytes,
}

impl DType {
    /// The name safetensors uses (`F32`, `F16`, `BF16`, `U8`); `BYTES` (OIP's name) for
    /// byte strings, which safetensors cannot hold.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::U8 => "U8",
            DType::Bytes => "BYTES",
        }
    }
}

/// A tensor's elements.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// f32 elements (every float tensor in computation).
    F32(Arc<[f32]>),
    /// Raw bytes (e.g. an encoded image).
    U8(Arc<[u8]>),
    /// Byte strings (e.g. sentences), one per element.
    Bytes(Arc<[Vec<u8>]>),
}

impl TensorData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::U8(_) => DType::U8,
            TensorData::Bytes(_) => DType::Bytes,
        }
    }
}

/// A shape and its row-major data.
#[derive(Clone, Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
    /// For weights: the packing cache shared by every handle to this weight.
    prepared: Option<Arc<Prepared>>,
}

impl PartialEq for Tensor {
    /// Same shape and same elements (how a weight is prepared does not matter).
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data == other.data
    }
}

/// The number of elements of `shape`, or an error naming the shape if it overflows.
pub fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::limit_exceeded(format!("shape {shape:?} has too many elements")))
}

impl Tensor {
    /// An f32 tensor; `data` must hold exactly the shape's element count.
    pub fn from_f32(shape: Vec<usize>, data: impl Into<Arc<[f32]>>) -> Result<Self> {
        let data = data.into();
        Self::check_len(&shape, data.len())?;
        Ok(Tensor {
            shape,
            data: TensorData::F32(data),
            prepared: None,
        })
    }

    /// A byte tensor; `data` must hold exactly the shape's element count.
    pub fn from_u8(shape: Vec<usize>, data: impl Into<Arc<[u8]>>) -> Result<Self> {
        let data = data.into();
        Self::check_len(&shape, data.len())?;
        Ok(Tensor {
            shape,
            data: TensorData::U8(data),
            prepared: None,
        })
    }

    /// A tensor of byte strings; `data` must hold exactly the shape's element count.
    pub fn from_bytes(shape: Vec<usize>, data: impl Into<Arc<[Vec<u8>]>>) -> Result<Self> {
        let data = data.into();
        Self::check_len(&shape, data.len())?;
        Ok(Tensor {
            shape,
            data: TensorData::Bytes(data),
            prepared: None,
        })
    }

    fn check_len(shape: &[usize], len: usize) -> Result<()> {
        let expected = element_count(shape)?;
        if expected != len {
            return Err(Error::shape_mismatch(format!(
                "shape {shape:?} needs {expected} elements, got {len}"
            )));
        }
        Ok(())
    }

    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The packing cache, if this tensor is a weight.
    pub(crate) fn prepared(&self) -> Option<&Arc<Prepared>> {
        self.prepared.as_ref()
    }

    /// The same tensor with a packing cache (for weights).
    pub(crate) fn with_prepared(mut self, prepared: Prepared) -> Self {
        self.prepared = Some(Arc::new(prepared));
        self
    }

    /// This tensor's f32 buffer if this handle is its only owner (no other tensor, weight
    /// or output shares it): storage an op of the same request may write over.
    pub(crate) fn into_unshared_f32s(self) -> Option<Arc<[f32]>> {
        match self.data {
            TensorData::F32(mut data) if self.prepared.is_none() => {
                Arc::get_mut(&mut data).is_some().then_some(data)
            }
            _ => None,
        }
    }

    /// The elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The f32 elements, or an error naming `what` if this is not an f32 tensor (`what` is
    /// formatted only then: pass `format_args!` to keep the success path free of
    /// allocations).
    pub fn f32s(&self, what: impl std::fmt::Display) -> Result<&[f32]> {
        match &self.data {
            TensorData::F32(d) => Ok(d),
            other => Err(self.wrong_dtype(what, "an f32", other)),
        }
    }

    /// The bytes, or an error naming `what` if this is not a u8 tensor.
    pub fn u8s(&self, what: impl std::fmt::Display) -> Result<&[u8]> {
        match &self.data {
            TensorData::U8(d) => Ok(d),
            other => Err(self.wrong_dtype(what, "a u8", other)),
        }
    }

    /// The byte strings, or an error naming `what` if this is not a `bytes` tensor.
    pub fn byte_strings(&self, what: impl std::fmt::Display) -> Result<&[Vec<u8>]> {
        match &self.data {
            TensorData::Bytes(d) => Ok(d),
            other => Err(self.wrong_dtype(what, "a bytes", other)),
        }
    }

    fn wrong_dtype(&self, what: impl std::fmt::Display, expected: &str, got: &TensorData) -> Error {
        Error::invalid_input(format!(
            "{what}: expected {expected} tensor, got {} with shape {:?}",
            match got {
                TensorData::F32(_) => "f32",
                TensorData::U8(_) => "u8",
                TensorData::Bytes(_) => "bytes",
            },
            self.shape
        ))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(d) => d.len(),
            TensorData::U8(d) => d.len(),
            TensorData::Bytes(d) => d.len(),
        }
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements occupy (a byte string counts its length plus 4, as in the
    /// length-prefixed binary form of OIP `BYTES`).
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorData::F32(d) => d.len() * 4,
            TensorData::U8(d) => d.len(),
            TensorData::Bytes(d) => d.iter().map(|s| s.len().saturating_add(4)).sum(),
        }
    }

    /// The same data under a new shape with the same element count; one dimension may be
    /// 0, meaning "whatever makes the count agree".
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let shape = tensorlet_kernels::reshape_dims(&self.shape, shape)?;
        // A reshaped weight is a different operand to the kernels: it is not prepared.
        Ok(Tensor {
            shape,
            data: self.data.clone(),
            prepared: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_infers_one_dimension() {
        let t = Tensor::from_f32(vec![2, 3, 4], vec![0.0; 24]).unwrap();
        assert_eq!(t.reshape(&[2, 0]).unwrap().shape(), &[2, 12]);
        assert_eq!(t.reshape(&[0, 4]).unwrap().shape(), &[6, 4]);
        assert_eq!(
            t.reshape(&[5, 0]).unwrap_err().kind(),
            crate::ErrorKind::ShapeMismatch
        );
        assert!(t.reshape(&[0, 0]).is_err());
        assert!(t.reshape(&[7, 3]).is_err());
    }

    #[test]
    fn length_must_match_shape() {
        assert!(Tensor::from_f32(vec![2, 2], vec![0.0; 3]).is_err());
        assert!(Tensor::from_u8(vec![usize::MAX, 2], vec![]).is_err());
    }
}
