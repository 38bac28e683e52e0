//! The ops a transformer encoder needs beyond dense layers: layer normalisation, embedding
//! lookup, multi-head scaled-dot-product attention under a key padding mask, mean pooling
//! under the same mask, and L2 normalisation.
//!
//! Sequences come as `[batch, seq, d]` row-major activations, padded to one length `seq`,
//! with each sequence's real length in `lengths`. Attention and pooling read only a
//! sequence's first `lengths[b]` rows, so a sentence's result does not depend on what else is
//! in its batch; attention writes zeros to the padding rows. Attention runs per (sequence,
//! head), with the threads taking heads from one shared counter: the head's keys and values
//! are packed straight from the activations into the GEMM core's panels (no intermediate
//! copy), its queries are read in place as the A operand (rows `width` apart), the scores
//! `q·kᵀ` (only real keys) become `exp(s/√d - max)` in place (one pass per row, the sums
//! kept), and the product with the values is written straight into the head's columns of
//! `out`, each row then divided by its sum (`head_dim` multiplies a row instead of `len`).
//! Only one head's `[len, len]` scores exist at a time (per thread), never
//! `[heads, seq, seq]`.

use std::sync::atomic::{AtomicUsize, Ordering};

use pulp::Simd;

use crate::activation::Activation;
use crate::dense::SharedOut;
use crate::dispatch::Kernels;
use crate::elem::{AlignedBuf, Scratch, take_scratch};
use crate::elementwise::{exp_row, scale};
use crate::error::{KernelError, check_len, check_matrix, product};
use crate::gemm::{AView, Ahead, Bias, Gemm, nr, pack_b, pack_b_rows, packed_b_len};
use crate::vmem::{load, store};

/// The geometry of [`Kernels::attention`]: `batch` sequences padded to `seq` positions,
/// `heads` heads of `head_dim` each (the model width is `heads · head_dim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Sequences in the batch.
    pub batch: usize,
    /// Positions per sequence (the padded length).
    pub seq: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Least multiply-adds × 2 (FLOP) of attention per thread before its heads are split.
const SPLIT_MIN_FLOPS: usize = 1 << 20;

/// The [`pulp::WithSimd`] op behind [`Kernels::layer_norm`]: lengths validated, `d > 0`.
struct LayerNorm<'a> {
    x: &'a [f32],
    d: usize,
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
    out: &'a mut [f32],
}

impl pulp::WithSimd for LayerNorm<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            d,
            gamma,
            beta,
            eps,
            out,
        } = self;
        let lanes = S::F32_LANES;
        let zero = simd.splat_f32s(0.0);
        for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            // Every deviation is taken relative to the first element (`x - x0`, exact for
            // nearby values), then from the mean of those: a large common offset costs no
            // precision, as it would if the mean itself were rounded to f32.
            let pivot = simd.splat_f32s(row[0]);
            let mut acc = zero;
            for c in (0..d).step_by(lanes) {
                let r = c..d.min(c + lanes);
                let n = r.len();
                let shifted = simd.sub_f32s(load(simd, &row[r]), pivot);
                acc = simd.add_f32s(acc, crate::vmem::first_lanes(simd, shifted, n));
            }
            let mv = simd.splat_f32s(simd.reduce_sum_f32s(acc) / d as f32);
            let dev = |r: core::ops::Range<usize>| {
                simd.sub_f32s(simd.sub_f32s(load(simd, &row[r]), pivot), mv)
            };
            let mut acc = zero;
            for c in (0..d).step_by(lanes) {
                let r = c..d.min(c + lanes);
                let n = r.len();
                // Lanes past `d` load as zero; their deviation must not count.
                let v = crate::vmem::first_lanes(simd, dev(r), n);
                acc = simd.mul_add_e_f32s(v, v, acc);
            }
            let var = simd.reduce_sum_f32s(acc) / d as f32;
            let inv = simd.splat_f32s(1.0 / (var + eps).sqrt());
            for c in (0..d).step_by(lanes) {
                let r = c..d.min(c + lanes);
                let norm = simd.mul_f32s(dev(r.clone()), inv);
                let y = simd.mul_add_e_f32s(
                    norm,
                    load(simd, &gamma[r.clone()]),
                    load(simd, &beta[r.clone()]),
                );
                store(simd, &mut o[r], y);
            }
        }
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::l2_normalize`]: `x.len()` a multiple of
/// `d > 0`.
struct L2Normalize<'a> {
    x: &'a mut [f32],
    d: usize,
    eps: f32,
}

impl pulp::WithSimd for L2Normalize<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self { x, d, eps } = self;
        let lanes = S::F32_LANES;
        for row in x.chunks_exact_mut(d) {
            let mut acc = simd.splat_f32s(0.0);
            for c in (0..d).step_by(lanes) {
                let v = load(simd, &row[c..d.min(c + lanes)]);
                acc = simd.mul_add_e_f32s(v, v, acc);
            }
            let norm = simd.reduce_sum_f32s(acc).sqrt().max(eps);
            scale(simd, row, 1.0 / norm);
        }
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::mean_pool`]: validated, every length in
/// `1..=seq`.
struct MeanPool<'a> {
    x: &'a [f32],
    seq: usize,
    d: usize,
    lengths: &'a [usize],
    out: &'a mut [f32],
}

impl pulp::WithSimd for MeanPool<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            x,
            seq,
            d,
            lengths,
            out,
        } = self;
        let lanes = S::F32_LANES;
        for ((seqs, o), &len) in x
            .chunks_exact(seq * d)
            .zip(out.chunks_exact_mut(d))
            .zip(lengths)
        {
            let inv = simd.splat_f32s(1.0 / len as f32);
            for c in (0..d).step_by(lanes) {
                let r = c..d.min(c + lanes);
                let mut acc = simd.splat_f32s(0.0);
                for row in seqs.chunks_exact(d).take(len) {
                    acc = simd.add_f32s(acc, load(simd, &row[r.clone()]));
                }
                store(simd, &mut o[r], simd.mul_f32s(acc, inv));
            }
        }
    }
}

/// Checks `lengths` (one per sequence, each in `0..=seq`, or `1..=seq` when `min_one`).
fn check_lengths(
    op: &str,
    lengths: &[usize],
    batch: usize,
    seq: usize,
    min_one: bool,
) -> Result<(), KernelError> {
    check_len(
        "lengths",
        lengths.len(),
        batch,
        format_args!("batch={batch}"),
    )?;
    for (b, &len) in lengths.iter().enumerate() {
        if len > seq || (min_one && len == 0) {
            let lo = usize::from(min_one);
            return Err(KernelError::new(format!(
                "{op}: lengths[{b}] is {len}, expected {lo}..={seq} (the padded sequence length)"
            )));
        }
    }
    Ok(())
}

impl Kernels {
    /// Layer normalisation over each row of `d` elements (PyTorch `LayerNorm(d, eps)`):
    /// `out = (x - mean) / sqrt(var + eps) · gamma + beta`, with the biased variance.
    ///
    /// Errors if `d == 0`, `x.len()` is not a multiple of `d`, `gamma` or `beta` is not of
    /// length `d`, `out.len() != x.len()`, or `eps` is not a positive finite number.
    pub fn layer_norm(
        &self,
        x: &[f32],
        d: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        if d == 0 || !x.len().is_multiple_of(d) {
            return Err(KernelError::new(format!(
                "layer_norm: `x` has length {}, expected a multiple of the row length d={d} (d > 0)",
                x.len()
            )));
        }
        check_len("gamma", gamma.len(), d, format_args!("d={d}"))?;
        check_len("beta", beta.len(), d, format_args!("d={d}"))?;
        check_len("out", out.len(), x.len(), "the length of `x`")?;
        if !(eps.is_finite() && eps > 0.0) {
            return Err(KernelError::new(format!(
                "layer_norm: eps is {eps}, expected a positive finite number"
            )));
        }
        self.run(LayerNorm {
            x,
            d,
            gamma,
            beta,
            eps,
            out,
        });
        Ok(())
    }

    /// Embedding lookup: row `ids[i]` of `table` (`[rows, d]`, `rows = table.len() / d`) is
    /// copied to row `i` of `out` (`[ids.len(), d]`).
    ///
    /// Errors if `d == 0`, `table.len()` is not a multiple of `d`, `out.len() != ids.len()·d`,
    /// or an id is not below `rows` (the message names the first such id).
    pub fn gather_rows(
        &self,
        table: &[f32],
        d: usize,
        ids: &[u32],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        if d == 0 || !table.len().is_multiple_of(d) {
            return Err(KernelError::new(format!(
                "gather_rows: `table` has length {}, expected a multiple of the row length d={d} (d > 0)",
                table.len()
            )));
        }
        let rows = table.len() / d;
        check_matrix("out", out.len(), ("ids", ids.len()), ("d", d))?;
        if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= rows) {
            return Err(KernelError::new(format!(
                "gather_rows: ids[{i}] is {id}, expected an id below the table's {rows} rows"
            )));
        }
        for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
            let id = id as usize;
            o.copy_from_slice(&table[id * d..(id + 1) * d]);
        }
        Ok(())
    }

    /// Mean over the first `lengths[b]` rows of each sequence of `x` (`[batch, seq, d]`):
    /// `out` is `[batch, d]` (sentence-transformers' mean pooling under the attention mask).
    ///
    /// Errors on lengths that disagree with the shapes, or a length outside `1..=seq`.
    pub fn mean_pool(
        &self,
        x: &[f32],
        batch: usize,
        seq: usize,
        d: usize,
        lengths: &[usize],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        check_len(
            "x",
            x.len(),
            product("x", &[batch, seq, d])?,
            format_args!("batch={batch} × seq={seq} × d={d}"),
        )?;
        check_matrix("out", out.len(), ("batch", batch), ("d", d))?;
        check_lengths("mean_pool", lengths, batch, seq, true)?;
        if d > 0 {
            self.run(MeanPool {
                x,
                seq,
                d,
                lengths,
                out,
            });
        }
        Ok(())
    }

    /// Divides each row of `d` elements of `x` by its Euclidean norm, or by `eps` when the
    /// norm is smaller (PyTorch's `F.normalize(x, p=2, dim=-1, eps)`), in place.
    ///
    /// Errors if `d == 0` with a non-empty `x`, `x.len()` is not a multiple of `d`, or `eps`
    /// is not a positive finite number.
    pub fn l2_normalize(&self, x: &mut [f32], d: usize, eps: f32) -> Result<(), KernelError> {
        if (d == 0 && !x.is_empty()) || (d > 0 && !x.len().is_multiple_of(d)) {
            return Err(KernelError::new(format!(
                "l2_normalize: `x` has length {}, expected a multiple of the row length d={d}",
                x.len()
            )));
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(KernelError::new(format!(
                "l2_normalize: eps is {eps}, expected a positive finite number"
            )));
        }
        if d > 0 {
            self.run(L2Normalize { x, d, eps });
        }
        Ok(())
    }

    /// Multi-head scaled-dot-product attention with a key padding mask (BERT's
    /// self-attention after its Q, K and V projections): `q`, `k`, `v` and `out` are
    /// `[batch, seq, heads·head_dim]`, head `h` owning columns `h·head_dim..(h+1)·head_dim`.
    /// For sequence `b` of real length `L = lengths[b]`, position `i < L` of head `h` gets
    /// `softmax_j(q_i·k_j / √head_dim) · v_j` over the real keys `j < L`; rows `i ≥ L` are
    /// zero. Heads are split over the pool's threads when there is enough work.
    ///
    /// Errors if a slice's length disagrees with the dims or a length is outside `0..=seq`.
    pub fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dims: AttentionDims,
        lengths: &[usize],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let AttentionDims {
            batch,
            seq,
            heads,
            head_dim,
        } = dims;
        let len = product("q", &[batch, seq, heads, head_dim])?;
        let how = format_args!("batch={batch} × seq={seq} × heads={heads} × head_dim={head_dim}");
        check_len("q", q.len(), len, how)?;
        check_len("k", k.len(), len, how)?;
        check_len("v", v.len(), len, how)?;
        check_len("out", out.len(), len, how)?;
        check_lengths("attention", lengths, batch, seq, false)?;
        let width = heads * head_dim;
        // Padding rows are zero; every head writes its own columns of the real rows.
        for (b, &l) in lengths.iter().enumerate() {
            out[(b * seq + l) * width..(b + 1) * seq * width].fill(0.0);
        }
        if len == 0 {
            return Ok(());
        }
        // One job per (sequence, head), each writing its own columns of its own rows.
        let jobs: Vec<(usize, usize)> = (0..batch)
            .filter(|&b| lengths[b] > 0)
            .flat_map(|b| (0..heads).map(move |h| (b, h)))
            .collect();
        let flops: usize = jobs
            .iter()
            .map(|&(b, _)| 4 * lengths[b] * lengths[b] * head_dim)
            .sum();
        let threads = self
            .threads()
            .min(jobs.len())
            .min(flops / SPLIT_MIN_FLOPS)
            .max(1);
        let next = AtomicUsize::new(0);
        // SAFETY (of `Heads::new`): `out` stays borrowed until every job has run, and each
        // job writes only its head's columns of its sequence's real rows, which no other job
        // touches; the slices' lengths were checked against `dims` above.
        let op = unsafe { Heads::new(q, k, v, dims, lengths, &jobs, &next, SharedOut::new(out)) };
        match self.pool().filter(|_| threads > 1) {
            None => self.run(op),
            Some(pool) => {
                let kern = self.single_threaded();
                pool.run_scoped(threads, &|| kern.run(op.clone()));
            }
        }
        Ok(())
    }
}

/// The [`pulp::WithSimd`] op behind [`Kernels::attention`]: takes (sequence, head) jobs from
/// `jobs` (the next index from `next`, so that threads sharing one op split them) until none
/// is left. For each: `Kᵀ` of the head packed straight from `k` as GEMM panels, the scores
/// `q·kᵀ` with the head's rows of `q` read in place (rows `width` apart), the softmax of
/// `scores / √d` in place but for its division, `V` packed from `v`, and the weighted sum
/// written straight into the head's columns of `out` (row stride `width`), divided there
/// row by row: no copy of `q`, `k`, `v` or the result.
#[derive(Clone)]
struct Heads<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dims: AttentionDims,
    lengths: &'a [usize],
    jobs: &'a [(usize, usize)],
    next: &'a AtomicUsize,
    out: SharedOut,
}

impl<'a> Heads<'a> {
    /// # Safety
    /// `q`, `k`, `v` and `out` hold `batch · seq · heads · head_dim` elements; `out` stays
    /// valid and is not otherwise read or written until every job has run; `lengths` are at
    /// most `seq`; no job appears twice in `jobs`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn new(
        q: &'a [f32],
        k: &'a [f32],
        v: &'a [f32],
        dims: AttentionDims,
        lengths: &'a [usize],
        jobs: &'a [(usize, usize)],
        next: &'a AtomicUsize,
        out: SharedOut,
    ) -> Self {
        Heads {
            q,
            k,
            v,
            dims,
            lengths,
            jobs,
            next,
            out,
        }
    }
}

impl pulp::WithSimd for Heads<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let AttentionDims {
            seq,
            heads,
            head_dim,
            ..
        } = self.dims;
        let width = heads * head_dim;
        let inv_sqrt_d = 1.0 / (head_dim as f32).sqrt();
        let nr = nr::<S>();
        let mut scratch = take_scratch(&HEAD_SCRATCH, 0);
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&(b, h)) = self.jobs.get(i) else {
                break;
            };
            let l = self.lengths[b];
            let base = b * seq * width + h * head_dim;
            let (k_len, v_len) = (packed_b_len(head_dim, l, nr), packed_b_len(l, head_dim, nr));
            let need = k_len + v_len + l * l + l;
            if scratch.as_slice().len() < need {
                scratch = AlignedBuf::zeroed(need);
            }
            let (kt, rest) = scratch.as_mut_slice().split_at_mut(k_len);
            let (vp, rest) = rest.split_at_mut(v_len);
            let (scores, rest) = rest.split_at_mut(l * l);
            let inv_sums = &mut rest[..l];
            // Kᵀ: column `j` of B is key row `j` of this head.
            pack_b(simd, &self.k[base..], width, head_dim, 0..l, nr, kt, |x| x);
            Gemm {
                m: l,
                n: l,
                k: head_dim,
                a: AView {
                    data: &self.q[base..],
                    rs: width,
                    cs: 1,
                    gather: None,
                },
                b: &*kt,
                bias: Bias::None,
                act: Activation::None,
                ldc: l,
                accumulate: false,
                b_window: None,
                ahead: Ahead::NONE,
                scatter: None,
            }
            .run(simd, scores);
            // The scores stay unnormalised (`exp` only): each output row is multiplied by
            // its `1/Σ` after the product, `head_dim` multiplies per row instead of `l`.
            for (row, inv) in scores.chunks_exact_mut(l).zip(inv_sums.iter_mut()) {
                *inv = 1.0 / exp_row(simd, row, inv_sqrt_d);
            }
            pack_b_rows(simd, &self.v[base..], width, l, 0..head_dim, nr, vp);
            let gemm = Gemm {
                m: l,
                n: head_dim,
                k: l,
                a: AView {
                    data: scores,
                    rs: l,
                    cs: 1,
                    gather: None,
                },
                b: &*vp,
                bias: Bias::None,
                act: Activation::None,
                ldc: width,
                accumulate: false,
                b_window: None,
                ahead: Ahead::NONE,
                scatter: None,
            };
            assert!(base + (l - 1) * width + head_dim <= self.out.len());
            // SAFETY: the product writes rows `0..l`, columns `0..head_dim` at row stride
            // `width` from `base`, inside `out` (asserted), and the scaling reads and writes
            // the same elements; this job owns them (`new`'s contract).
            unsafe {
                let out = self.out.ptr().add(base);
                gemm.run_raw(simd, out, self.out.len() - base);
                for (i, &inv) in inv_sums.iter().enumerate() {
                    scale(
                        simd,
                        core::slice::from_raw_parts_mut(out.add(i * width), head_dim),
                        inv,
                    );
                }
            }
        }
        HEAD_SCRATCH.set(Some(scratch));
    }
}

std::thread_local! {
    /// This thread's buffer for one head's packed keys and values and its scores.
    static HEAD_SCRATCH: Scratch = const { Scratch::new(None) };
}

/// A rank error of a transformer op's operand: `op: what has shape …, expected …`.
fn rank_error(op: &str, what: &str, shape: &[usize], expected: &str) -> KernelError {
    KernelError::new(format!(
        "{op}: `{what}` has shape {shape:?}, expected {expected}"
    ))
}

/// The row length `d` of [`Kernels::layer_norm`] on tensors of these shapes: `x`'s last
/// dimension, which `gamma` and `beta` (`[d]`) must equal.
///
/// Errors (naming `layer-norm` and the operand) for a scalar `x` or a `gamma`/`beta` of
/// another shape.
pub fn layer_norm_dims(x: &[usize], gamma: &[usize], beta: &[usize]) -> Result<usize, KernelError> {
    let Some(&d) = x.last() else {
        return Err(rank_error("layer-norm", "x", x, "rank ≥ 1"));
    };
    for (what, s) in [("gamma", gamma), ("beta", beta)] {
        if s != [d] {
            return Err(rank_error(
                "layer-norm",
                what,
                s,
                &format!("[{d}] (x's last dimension)"),
            ));
        }
    }
    Ok(d)
}

/// The output shape `[ids, d]` of an embedding lookup of `ids` rows in a `[rows, d]` table.
///
/// Errors unless the table has rank 2.
pub fn embedding_dims(table: &[usize], ids: usize) -> Result<[usize; 2], KernelError> {
    match *table {
        [_, d] => Ok([ids, d]),
        _ => Err(rank_error("embedding", "table", table, "[rows, d]")),
    }
}

/// The [`AttentionDims`] of [`Kernels::attention`] on `q`, `k`, `v` of these shapes
/// (`[batch, seq, width]` each, equal) with `heads` heads and `lengths` lengths.
///
/// Errors (naming `attention`) for another rank, unequal shapes, `heads` of 0 or not dividing
/// the width, or a number of lengths other than `batch`.
pub fn attention_dims(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    heads: usize,
    lengths: usize,
) -> Result<AttentionDims, KernelError> {
    let &[batch, seq, width] = q else {
        return Err(rank_error(
            "attention",
            "q",
            q,
            "[batch, seq, heads·head_dim]",
        ));
    };
    for (what, s) in [("k", k), ("v", v)] {
        if s != q {
            return Err(rank_error(
                "attention",
                what,
                s,
                &format!("{q:?} (the shape of q)"),
            ));
        }
    }
    if heads == 0 || width % heads != 0 {
        return Err(KernelError::new(format!(
            "attention: {heads} heads do not divide the width {width} of q"
        )));
    }
    if lengths != batch {
        return Err(KernelError::new(format!(
            "attention: {lengths} lengths given for a batch of {batch} sequences"
        )));
    }
    Ok(AttentionDims {
        batch,
        seq,
        heads,
        head_dim: width / heads,
    })
}

/// `[batch, seq, d]` of [`Kernels::mean_pool`]'s `x`, given `lengths` lengths.
///
/// Errors (naming `mean-pool`) unless `x` has rank 3 and there is one length per sequence.
pub fn mean_pool_dims(x: &[usize], lengths: usize) -> Result<[usize; 3], KernelError> {
    let &[batch, seq, d] = x else {
        return Err(rank_error("mean-pool", "x", x, "[batch, seq, d]"));
    };
    if lengths != batch {
        return Err(KernelError::new(format!(
            "mean-pool: {lengths} lengths given for a batch of {batch} sequences"
        )));
    }
    Ok([batch, seq, d])
}
