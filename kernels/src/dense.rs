//! Fully connected layers: [`PackedDense`] (weights packed once into the GEMM's panel layout,
//! `f32`, `f16` or `bf16`) and the ops behind [`Kernels::dense`](crate::Kernels::dense) and
//! [`Kernels::dense_packed`](crate::Kernels::dense_packed).
//!
//! Unpacked `dense` packs the weights one column block at a time into the same layout and runs
//! the same GEMM.
//!
//! Every shape runs the GEMM, whose every output is one multiply-add chain along `k` in
//! order: a row's result is the same bits whatever the batch size or the row's place in the
//! batch, so requests batched together (dynamic batching) get exactly their unbatched
//! answers. (Dot-product paths at batch 1 or for one output feature, which summed in another
//! order, were removed for that.)

use pulp::Simd;

use crate::activation::Activation;
use crate::dispatch::Level;
use crate::elem::{AlignedBuf, Elem, WeightType};
use crate::gemm::{AView, Ahead, Bias, Gemm, NC, nr, pack_b, packed_b_len};

/// The packed weights of one storage type.
#[derive(Clone)]
pub(crate) enum PackedData {
    F32(AlignedBuf<f32>),
    F16(AlignedBuf<half::f16>),
    Bf16(AlignedBuf<half::bf16>),
}

/// Dense-layer weights `[n, k]` (PyTorch `Linear` layout) packed once for
/// [`Kernels::dense_packed`](crate::Kernels::dense_packed), with the bias alongside.
///
/// The layout is the GEMM's: blocks of 512 rows of `k`, inside each panels of `NR` output
/// features (`NR` = 32 on AVX-512, 16 on AVX2), 64-byte aligned, zero-padded. It depends on the
/// SIMD level, so a `PackedDense` records the [`Level`] it was packed for and
/// `dense_packed` refuses (with an error) kernels of another level: pack with the same
/// [`Kernels`](crate::Kernels) that runs the layer. `f16`/`bf16` weights stay 16-bit in
/// memory and are widened to `f32` in registers.
#[derive(Clone)]
pub struct PackedDense {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) level: Level,
    pub(crate) data: PackedData,
    /// Bias zero-padded to whole panels, if any.
    pub(crate) bias: Option<Vec<f32>>,
}

impl core::fmt::Debug for PackedDense {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PackedDense")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("level", &self.level)
            .field("weight_type", &self.weight_type())
            .field("bias", &self.bias.is_some())
            .finish()
    }
}

impl PackedDense {
    /// Output features (rows of the original weights).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of the original weights).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The SIMD level the layout was packed for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The storage type of the packed weights.
    pub fn weight_type(&self) -> WeightType {
        self.data.type_of()
    }
}

/// The [`pulp::WithSimd`] op that packs `w` (`n × k`, validated) for the level it runs at.
pub(crate) struct PackDense<'a, T, E> {
    pub(crate) w: &'a [T],
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) conv: fn(T) -> E,
}

impl<T: Copy + 'static, E: Elem> pulp::WithSimd for PackDense<'_, T, E> {
    /// Panel width, vector lanes, and the packed weights.
    type Output = (usize, usize, AlignedBuf<E>);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let nr = nr::<S>();
        let mut buf = AlignedBuf::zeroed(packed_b_len(self.k, self.n, nr));
        pack_b(
            simd,
            self.w,
            self.k,
            self.k,
            0..self.n,
            nr,
            buf.as_mut_slice(),
            self.conv,
        );
        (nr, S::F32_LANES, buf)
    }
}

/// The bias zero-padded to whole panels of `nr`.
pub(crate) fn padded_bias(bias: &[f32], nr: usize) -> Vec<f32> {
    let mut padded = vec![0.0; bias.len().div_ceil(nr) * nr];
    padded[..bias.len()].copy_from_slice(bias);
    padded
}

/// An output matrix several threads write disjoint parts of (raw, so that no two threads
/// hold overlapping `&mut` slices).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: a `SharedOut` is only a pointer and a length; every write through it goes through
// `DensePackedPart`, whose constructor's contract keeps threads to disjoint elements.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The elements of `out`, for the duration of the borrow the caller keeps.
    pub(crate) fn new(out: &mut [f32]) -> SharedOut {
        SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// The first element.
    pub(crate) fn ptr(&self) -> *mut f32 {
        self.ptr
    }

    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::dense_packed`](crate::Kernels::dense_packed):
/// part `part.0` of `part.1` of the product, its panels of `NR` output features divided
/// into `part.1` nearly equal runs, this one computing run `part.0` (nothing when it is
/// empty) and writing only those columns of every row of `out`; `(0, 1)` is the whole
/// product. Every output is the same multiply-add chain whatever the split, so the result
/// is the same bits.
pub(crate) struct DensePackedPart<'a> {
    x: &'a [f32],
    m: usize,
    p: &'a PackedDense,
    act: Activation,
    out: SharedOut,
    part: (usize, usize),
}

impl<'a> DensePackedPart<'a> {
    /// # Safety
    /// `out` covers `m · p.n` elements that stay valid, and are not otherwise read or
    /// written, until every part has run; parts run at the same time have different
    /// `part.0` and the same `part.1`; `x` holds `m · p.k` values and `p` was packed at the
    /// level that runs the op (as `dense_packed` validates).
    pub(crate) unsafe fn new(
        x: &'a [f32],
        m: usize,
        p: &'a PackedDense,
        act: Activation,
        out: SharedOut,
        part: (usize, usize),
    ) -> Self {
        DensePackedPart {
            x,
            m,
            p,
            act,
            out,
            part,
        }
    }

    #[inline(always)]
    fn run<S: Simd, E: Elem>(self, simd: S, b: &[E]) {
        let p = self.p;
        let nr = nr::<S>();
        let panels = p.n.div_ceil(nr);
        let per = panels.div_ceil(self.part.1.max(1));
        let first = (self.part.0 * per).min(panels);
        let end = ((self.part.0 + 1) * per).min(panels);
        if first >= end || self.m == 0 {
            return;
        }
        let (c0, c1) = (first * nr, (end * nr).min(p.n));
        assert!(self.out.len >= self.m * p.n);
        let gemm = Gemm {
            m: self.m,
            n: c1 - c0,
            k: p.k,
            a: AView {
                data: self.x,
                rs: p.k,
                cs: 1,
                gather: None,
            },
            b,
            bias: p
                .bias
                .as_deref()
                .map_or(Bias::None, |b| Bias::PerCol(&b[c0..])),
            act: self.act,
            ldc: p.n,
            accumulate: false,
            b_window: Some((first, panels)),
            ahead: Ahead::NONE,
            scatter: None,
        };
        // SAFETY: `out` holds `m · n` elements (asserted); this part writes columns
        // `c0..c1` of each row, which no other part writes (`new`'s contract).
        unsafe {
            gemm.run_raw(simd, self.out.ptr.add(c0), self.out.len - c0);
        }
    }
}

impl pulp::WithSimd for DensePackedPart<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        match &self.p.data {
            PackedData::F32(b) => self.run(simd, b.as_slice()),
            PackedData::F16(b) => self.run(simd, b.as_slice()),
            PackedData::Bf16(b) => self.run(simd, b.as_slice()),
        }
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::dense`](crate::Kernels::dense); lengths are
/// validated by the caller.
pub(crate) struct Dense<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) w: &'a [f32],
    pub(crate) n: usize,
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) act: Activation,
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for Dense<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            m,
            k,
            w,
            n,
            bias,
            act,
            out,
        } = self;
        if m == 0 || n == 0 {
            return;
        }
        // Pack one column block of the weights at a time (bounded scratch), same layout and
        // GEMM as `dense_packed`.
        let nr = nr::<S>();
        let block = NC.div_ceil(nr) * nr;
        let bias = bias.map(|b| padded_bias(b, nr));
        let mut b = vec![0.0f32; packed_b_len(k, block.min(n), nr)];
        for c0 in (0..n).step_by(block) {
            let cols = c0..(c0 + block).min(n);
            let len = packed_b_len(k, cols.len(), nr);
            pack_b(simd, w, k, k, cols.clone(), nr, &mut b[..len], |v| v);
            Gemm {
                m,
                n: cols.len(),
                k,
                a: AView {
                    data: x,
                    rs: k,
                    cs: 1,
                    gather: None,
                },
                b: &b[..len],
                bias: bias
                    .as_deref()
                    .map_or(Bias::None, |b| Bias::PerCol(&b[c0..])),
                act,
                ldc: n,
                accumulate: false,
                b_window: None,
                ahead: Ahead::NONE,
                scatter: None,
            }
            .run(simd, &mut out[c0..]);
        }
    }
}

/// Packs validated weights at the level of `kernels`.
pub(crate) fn pack<T: Copy + 'static, E: Elem>(
    kernels: &crate::Kernels,
    w: &[T],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    conv: fn(T) -> E,
    wrap: fn(AlignedBuf<E>) -> PackedData,
) -> PackedDense {
    let (nr, _, buf) = kernels.run(PackDense { w, n, k, conv });
    PackedDense {
        n,
        k,
        level: kernels.level(),
        data: wrap(buf),
        bias: bias.map(|b| padded_bias(b, nr)),
    }
}

impl PackedData {
    fn type_of(&self) -> WeightType {
        match self {
            PackedData::F32(_) => WeightType::F32,
            PackedData::F16(_) => WeightType::F16,
            PackedData::Bf16(_) => WeightType::Bf16,
        }
    }
}
