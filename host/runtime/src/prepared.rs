//! Weights prepared for the kernels: each weight of a [`crate::Weights`] set carries a
//! [`Prepared`] that packs it into the kernels' layout the first time an op uses it, and
//! keeps the packed form for every later request that binds the same set.
//!
//! Packing depends on the use (dense or conv2d geometry), on the bias fused with it and on
//! the kernels' SIMD level, so the cache is keyed by all three. A bias can only be part of
//! a key when it is itself a weight (it then has a stable [`Prepared::id`]); an op whose
//! bias the function computed runs unpacked. F16 and BF16 weights keep their 16-bit values
//! so that dense layers read half the bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tensorlet_kernels::half::{bf16, f16};
use tensorlet_kernels::{Conv2dParams, Kernels, Level, PackedConv2d, PackedDense};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The 16-bit values of a weight stored as F16 or BF16.
#[derive(Debug)]
pub(crate) enum HalfValues {
    /// IEEE half.
    F16(Vec<f16>),
    /// bfloat16.
    Bf16(Vec<bf16>),
}

type DenseKey = (Level, Option<u64>);
type ConvKey = (Level, Conv2dParams, Option<u64>);

/// The packing cache of one weight.
#[derive(Debug)]
pub(crate) struct Prepared {
    id: u64,
    half: Option<HalfValues>,
    dense: Mutex<Vec<(DenseKey, Arc<PackedDense>)>>,
    conv: Mutex<Vec<(ConvKey, Arc<PackedConv2d>)>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Prepared {
    /// A cache for one weight; `half` keeps its 16-bit values if it was stored as such.
    pub(crate) fn new(half: Option<HalfValues>) -> Self {
        Prepared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            half,
            dense: Mutex::new(Vec::new()),
            conv: Mutex::new(Vec::new()),
        }
    }

    /// A process-unique id of this weight.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// `w` ([n, k]) packed for `kernels` with `bias` fused, packing on first use. `None`
    /// when the bias is not a weight (no stable identity to cache under).
    pub(crate) fn dense(
        &self,
        kernels: &Kernels,
        w: &Tensor,
        n: usize,
        k: usize,
        bias: Option<&Tensor>,
    ) -> Result<Option<Arc<PackedDense>>> {
        let Some(bias_key) = bias_key(bias) else {
            return Ok(None);
        };
        let key = (kernels.level(), bias_key);
        let mut cache = lock(&self.dense);
        if let Some((_, p)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(Some(p.clone()));
        }
        let b = bias.map(|b| b.f32s("dense: bias")).transpose()?;
        let packed = match &self.half {
            Some(HalfValues::F16(h)) => kernels.pack_dense_f16(h, n, k, b),
            Some(HalfValues::Bf16(h)) => kernels.pack_dense_bf16(h, n, k, b),
            None => kernels.pack_dense(w.f32s("dense: w")?, n, k, b),
        }
        .map_err(|e| Error::from(e).context("dense: packing weights"))?;
        let packed = Arc::new(packed);
        cache.push((key, packed.clone()));
        Ok(Some(packed))
    }

    /// `w` ([oc, c/groups, kh, kw]) packed for `kernels` with geometry `p` and `bias`
    /// fused, packing on first use. `None` when the bias is not a weight.
    pub(crate) fn conv2d(
        &self,
        kernels: &Kernels,
        w: &Tensor,
        w_shape: [usize; 4],
        bias: Option<&Tensor>,
        p: &Conv2dParams,
    ) -> Result<Option<Arc<PackedConv2d>>> {
        let Some(bias_key) = bias_key(bias) else {
            return Ok(None);
        };
        let key = (kernels.level(), *p, bias_key);
        let mut cache = lock(&self.conv);
        if let Some((_, packed)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(Some(packed.clone()));
        }
        let b = bias.map(|b| b.f32s("conv2d: bias")).transpose()?;
        let packed = kernels
            .pack_conv2d(w.f32s("conv2d: w")?, w_shape, b, p)
            .map_err(|e| Error::from(e).context("conv2d: packing weights"))?;
        let packed = Arc::new(packed);
        cache.push((key, packed.clone()));
        Ok(Some(packed))
    }
}

/// The cache key part of a bias: `Some(None)` for no bias, `Some(Some(id))` for a weight,
/// `None` for a tensor the function made (not cacheable).
fn bias_key(bias: Option<&Tensor>) -> Option<Option<u64>> {
    match bias {
        None => Some(None),
        Some(b) => b.prepared().map(|p| Some(p.id())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape, data)
            .unwrap()
            .with_prepared(Prepared::new(None))
    }

    #[test]
    fn packs_once_per_key_and_matches_unpacked() {
        let k = Kernels::detect();
        let w = weight(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = weight(vec![3], vec![0.5, -0.5, 1.0]);
        let p = w.prepared().unwrap();
        let a1 = p.dense(&k, &w, 3, 2, Some(&b)).unwrap().unwrap();
        let a2 = p.dense(&k, &w, 3, 2, Some(&b)).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&a1, &a2),
            "second use must reuse the packed weights"
        );
        let none = p.dense(&k, &w, 3, 2, None).unwrap().unwrap();
        assert!(
            !Arc::ptr_eq(&a1, &none),
            "a different bias is a different key"
        );
        // A bias the function computed has no identity: no caching, unpacked path.
        let made = Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap();
        assert!(p.dense(&k, &w, 3, 2, Some(&made)).unwrap().is_none());

        // x = [1, 1]: y = w·x + b = [3.5, 6.5, 12].
        let mut out = [0.0; 3];
        k.dense_packed(
            &[1.0, 1.0],
            1,
            &a1,
            tensorlet_kernels::Activation::None,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [3.5, 6.5, 12.0]);
    }
}
