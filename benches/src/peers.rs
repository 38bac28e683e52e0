//! The peers tensorlet is measured against in the same run (feature `peers`): the `gemm`
//! crate for dense layers, candle's `Conv2d` layer for convolutions, and
//! candle-transformers' `BertModel` (with mean pooling and L2 normalisation) for
//! sentence embeddings. Each wrapper computes exactly what the tensorlet kernel or function
//! beside it computes; the unit tests below check that on one shape (or sentence) each, so
//! the comparison is like for like.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

/// `out[m,n] = x[m,k] · w[n,k]ᵀ` with the `gemm` crate, single-threaded; `w` in PyTorch
/// `Linear` layout `[out, in]`, everything row-major (tensorlet's `dense` without bias).
///
/// Panics if a slice length does not match its shape.
pub fn gemm_dense(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    assert_eq!(out.len(), m * n, "out is not [m, n]");
    // gemm addresses element (i, j) of a matrix at `ptr + i·rs + j·cs`. dst and lhs are
    // row-major; rhs is wᵀ ([k, n]): element (kk, j) is w[j·k + kk], so rs = 1, cs = k.
    // SAFETY: the asserts above keep every (i, j) the strides reach inside its slice, and
    // `out` does not alias `x` or `w` (it is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A candle `Conv2d` layer (stride 1, no padding, bias) over one fixed NCHW input, both on
/// the CPU device: the peer of tensorlet's `conv2d` with bias and no activation.
pub struct CandleConv2d {
    layer: Conv2d,
    x: Tensor,
}

impl CandleConv2d {
    /// A layer with weights `w` (`[oc, c, kh, kw]`) and `bias` (`[oc]`) over the input
    /// `x` (`[n, c, h, w]`); both are copied into candle tensors once, here.
    pub fn new(
        x: &[f32],
        x_shape: [usize; 4],
        w: &[f32],
        w_shape: [usize; 4],
        bias: &[f32],
    ) -> candle_core::Result<Self> {
        let device = Device::Cpu;
        let x = Tensor::from_slice(x, &x_shape, &device)?;
        let w = Tensor::from_slice(w, &w_shape, &device)?;
        let bias = Tensor::from_slice(bias, w_shape[0], &device)?;
        let layer = Conv2d::new(w, Some(bias), Conv2dConfig::default());
        Ok(Self { layer, x })
    }

    /// Runs the layer once and returns its output tensor.
    pub fn forward(&self) -> candle_core::Result<Tensor> {
        self.layer.forward(&self.x)
    }

    /// Runs the layer once and returns its output, flattened in NCHW order.
    pub fn forward_vec(&self) -> candle_core::Result<Vec<f32>> {
        self.forward()?.flatten_all()?.to_vec1()
    }
}

/// A sentence-transformers embedding model on candle: candle-transformers' `BertModel` on
/// the CPU device, then mean pooling under the attention mask and L2 normalisation (what
/// all-MiniLM-L6-v2's sentence-transformers pipeline, and tensorlet's `minilm` function,
/// compute after tokenizing). Token ids come in already tokenized: tokenization is not part
/// of its time.
pub struct CandleBert {
    model: BertModel,
    device: Device,
}

impl CandleBert {
    /// Loads `config.json` (into candle's `bert::Config`) and `model.safetensors`
    /// (memory-mapped, `f32`) from the upstream model folder `dir`. The upstream tensor
    /// names have no `bert.` prefix; `BertModel::load` tries both.
    pub fn load(dir: &Path) -> candle_core::Result<Self> {
        let device = Device::Cpu;
        let config = std::fs::read_to_string(dir.join("config.json"))?;
        let config: BertConfig =
            serde_json::from_str(&config).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        // SAFETY: the file is mapped read-only and nothing in this process writes it; a
        // concurrent writer outside the process would be a broken benchmark setup.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )?
        };
        let model = BertModel::load(vb, &config)?;
        Ok(Self { model, device })
    }

    /// The model's inputs for `batch` sequences of `seq` token ids each (`ids`,
    /// row-major `[batch, seq]`) whose first `lengths[b]` ids are real (the rest padding):
    /// ids, token types (all 0) and the attention mask, built once so that a benchmark
    /// times only [`CandleBert::embed`].
    ///
    /// Errors if `ids.len() != batch · seq` or `lengths.len() != batch`.
    pub fn inputs(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        lengths: &[usize],
    ) -> candle_core::Result<BertInputs> {
        if lengths.len() != batch {
            candle_core::bail!("{} lengths for a batch of {batch}", lengths.len());
        }
        let ids = Tensor::from_slice(ids, (batch, seq), &self.device)?;
        let types = ids.zeros_like()?;
        let mask: Vec<f32> = lengths
            .iter()
            .flat_map(|&l| (0..seq).map(move |i| if i < l { 1.0 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (batch, seq), &self.device)?;
        Ok(BertInputs { ids, types, mask })
    }

    /// The L2-normalised mean-pooled embeddings `[batch, hidden]` of `inputs`.
    pub fn embed(&self, inputs: &BertInputs) -> candle_core::Result<Tensor> {
        let hidden = self
            .model
            .forward(&inputs.ids, &inputs.types, Some(&inputs.mask))?;
        // Mean over the real positions: Σ_i mask_i·h_i / Σ_i mask_i.
        let mask = inputs.mask.unsqueeze(2)?;
        let sum = hidden.broadcast_mul(&mask)?.sum(1)?;
        let pooled = sum.broadcast_div(&inputs.mask.sum_keepdim(1)?)?;
        let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
        pooled.broadcast_div(&norm)
    }

    /// [`CandleBert::embed`], flattened row-major.
    pub fn embed_vec(&self, inputs: &BertInputs) -> candle_core::Result<Vec<f32>> {
        self.embed(inputs)?.flatten_all()?.to_vec1()
    }
}

/// The candle tensors of one [`CandleBert`] request (see [`CandleBert::inputs`]).
pub struct BertInputs {
    ids: Tensor,
    types: Tensor,
    mask: Tensor,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values;
    use tensorlet_kernels::{Activation, Conv2dParams, Kernels, conv2d_out_shape};

    /// `|a - b| <= 1e-4 · max(|b|, 1)` (`b` the peer's): relative 1e-4 for the O(1) values
    /// these shapes produce, without failing on outputs that cancel to near zero.
    fn assert_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "element {i}: {a} vs {b}"
            );
        }
    }

    /// `Kernels::dense` and `dense_packed` agree with gemm (y = x·wᵀ).
    #[test]
    fn gemm_matches_tensorlet_dense() {
        let k = Kernels::detect();
        // Odd sizes, so neither side runs only its full-tile path.
        for (m, kk, n) in [(37, 129, 19), (1, 1600, 128), (64, 64, 64)] {
            let (x, w) = (values(m * kk, 1), values(n * kk, 2));
            let (mut ours, mut theirs) = (vec![0.0; m * n], vec![0.0; m * n]);
            gemm_dense(&x, m, kk, &w, n, &mut theirs);
            k.dense(&x, m, kk, &w, n, None, Activation::None, &mut ours)
                .expect("valid shapes");
            assert_close(&ours, &theirs);
            let packed = k.pack_dense(&w, n, kk, None).expect("valid shapes");
            k.dense_packed(&x, m, &packed, Activation::None, &mut ours)
                .expect("valid shapes");
            assert_close(&ours, &theirs);
        }
    }

    /// `Kernels::conv2d` and `conv2d_packed` agree with candle-nn's `Conv2d` (with bias).
    #[test]
    fn candle_matches_tensorlet_conv2d() {
        let k = Kernels::detect();
        let (xs, ws) = ([1, 32, 13, 13], [64, 32, 3, 3]);
        let (x, w, bias) = (
            values(32 * 13 * 13, 4),
            values(64 * 32 * 9, 5),
            values(64, 6),
        );
        let p = Conv2dParams::default();
        let os = conv2d_out_shape(xs, ws, &p).expect("valid geometry");
        let candle = CandleConv2d::new(&x, xs, &w, ws, &bias).expect("candle layer");
        let out = candle.forward().expect("candle conv2d");
        assert_eq!(out.dims(), &os[..]);
        let theirs = candle.forward_vec().expect("candle conv2d");
        let mut ours = vec![0.0; os.iter().product()];
        k.conv2d(&x, xs, &w, ws, Some(&bias), &p, Activation::None, &mut ours)
            .expect("valid shapes");
        assert_close(&ours, &theirs);
        let packed = k
            .pack_conv2d(&w, ws, Some(&bias), &p)
            .expect("valid shapes");
        k.conv2d_packed(&x, xs, &packed, Activation::None, &mut ours)
            .expect("valid shapes");
        assert_close(&ours, &theirs);
    }

    /// The fetched all-MiniLM-L6-v2 folder (`<target>/data/minilm`), if
    /// `bash models/data/fetch.sh minilm` has made it.
    fn minilm_dir() -> Option<std::path::PathBuf> {
        // The test binary is <target>/<profile>/deps/<name>.
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?.parent()?.parent()?.join("data/minilm");
        dir.join("minilm.safetensors").is_file().then_some(dir)
    }

    /// candle-transformers' BERT with mean pooling and L2 normalisation gives the bundled
    /// `minilm` function's embeddings, on the function's own token ids, within 1e-4.
    #[test]
    fn candle_bert_matches_tensorlet_minilm() {
        use tensorlet_host::{Runtime, RuntimeConfig, Tensor as HostTensor};
        let Some(dir) = minilm_dir() else {
            eprintln!("skipped: no weights; run `bash models/data/fetch.sh minilm`");
            return;
        };
        let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
        let f = rt.load_bundled("minilm").expect("bundled minilm");
        let w = rt
            .load_weights_file(&dir.join("minilm.safetensors"))
            .expect("weights");
        let texts: Vec<Vec<u8>> = ["A man is eating food.", "The new movie is awesome!"]
            .iter()
            .map(|t| t.as_bytes().to_vec())
            .collect();
        let input = HostTensor::from_bytes(vec![texts.len()], texts).expect("tensor");
        let out = f.infer(&w, vec![("text".into(), input)]).expect("infer");
        let get = |name: &str| {
            out.iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no output `{name}`"))
                .1
                .clone()
        };
        let (emb, ids) = (get("embedding"), get("token_ids"));
        let (batch, seq) = (ids.shape()[0], ids.shape()[1]);
        let ids: Vec<u32> = ids
            .f32s("ids")
            .expect("f32")
            .iter()
            .map(|&x| x as u32)
            .collect();
        // Real length: up to and including [SEP] (102); the rest is [PAD].
        let lengths: Vec<usize> = ids
            .chunks(seq)
            .map(|r| r.iter().position(|&x| x == 102).map_or(seq, |p| p + 1))
            .collect();
        let candle = CandleBert::load(&dir).expect("candle bert");
        let inputs = candle.inputs(&ids, batch, seq, &lengths).expect("inputs");
        let theirs = candle.embed_vec(&inputs).expect("candle embed");
        let ours = emb.f32s("embedding").expect("f32");
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!((a - b).abs() <= 1e-4, "component {i}: {a} vs {b}");
        }
    }
}
