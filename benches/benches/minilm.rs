//! all-MiniLM-L6-v2 sentence embeddings, end to end and kernel by kernel, each beside a
//! limit or a peer measured in the same run on the same weights file:
//!
//! - the peak-FMA probe (best SIMD level, and AVX2 where the CPU has it): one core's
//!   GFLOP/s limit;
//! - the bundled `minilm` function through the sandbox (tokenizer included): one sentence
//!   of exactly 32 word pieces with one kernel thread, with two, and at AVX2; a batch of
//!   32 such sentences as one request; throughput over the encoder's FLOPs;
//! - candle-transformers' `BertModel` + mean pooling + L2 normalisation (feature `peers`) on
//!   the same token ids, checked at start to give the same embeddings within 1e-3;
//! - the encoder's heaviest kernels at sequence length 128, called directly: the FFN's two
//!   dense layers (packed, as the runtime runs them) and multi-head attention.
//!
//! Run with `cargo bench -p tensorlet-benches --features peers --bench minilm` (without
//! `--features peers` the candle rows show `—`). The weights come from
//! `bash models/data/fetch.sh minilm` (into `<target>/data/minilm`); without them the bench
//! says so and exits successfully. After criterion's own output it prints a table of
//! medians, ratios and the targets; see the README's "Benchmarks".

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tensorlet_benches::report::{Results, Table, Work};
use tensorlet_benches::{
    avx2_fma_flops, avx2_fma_probe, lanes, peak_fma_flops, peak_fma_probe, single_threaded, values,
};
use tensorlet_host::{Function, Runtime, RuntimeConfig, Tensor, Weights};
use tensorlet_kernels::{Activation, AttentionDims, Kernels, Level, PackedDense};

/// Rounds of the peak-FMA probe per call (about 0.1 ms with AVX-512).
const PEAK_ITERATIONS: usize = 100_000;
/// all-MiniLM-L6-v2's geometry: hidden size, FFN size, layers, heads.
const HIDDEN: usize = 384;
const INTERMEDIATE: usize = 1536;
const LAYERS: usize = 6;
const HEADS: usize = 12;
/// Word pieces per sentence, `[CLS]` and `[SEP]` included.
const SEQ: usize = 32;
/// Sentences in the batched request.
const BATCH: usize = 32;
/// The sequence length of the kernel cases.
const LONG_SEQ: usize = 128;
/// `[SEP]` in the model's vocabulary.
const SEP: u32 = 102;

/// The benchmark sentence: 30 word pieces between `[CLS]` and `[SEP]` for every animal and
/// drink below (each a single word piece), checked at start from the function's own
/// `token_ids`.
const SENTENCE: &str = "The quick brown {animal} jumps over the lazy dog while the old \
                        farmer quietly watches from his wooden porch, sipping a cup of hot \
                        {drink} in the sun.";
const ANIMALS: [&str; 8] = [
    "fox", "cat", "horse", "rabbit", "deer", "wolf", "goat", "bear",
];
const DRINKS: [&str; 4] = ["coffee", "tea", "milk", "water"];

/// Issue targets.
const SENTENCE_PEAK_TARGET: f64 = 0.70;
const TWO_THREADS_BUDGET: f64 = 0.60;
const SENTENCE_VS_CANDLE: f64 = 4.0;
const BATCH_VS_CANDLE: f64 = 3.0;
const KERNEL_PEAK_TARGET: f64 = 0.80;
/// Largest per-component difference accepted between candle's and tensorlet's embeddings.
#[cfg(feature = "peers")]
const AGREEMENT: f32 = 1e-3;

/// FLOPs of the encoder (an FMA counts as two) on `batch` sequences of `l` tokens: per
/// layer the Q, K, V and output projections (`4·H·H` per token) and the FFN (`2·H·I`), plus
/// attention's scores and weighted sum (`4·L²·H`). Embeddings, layer norms, softmax, GELU,
/// pooling and biases are left out (a few percent).
fn encoder_flops(batch: usize, l: usize) -> f64 {
    let (h, i) = (HIDDEN as f64, INTERMEDIATE as f64);
    let l = l as f64;
    let per_layer = 2.0 * l * (4.0 * h * h + 2.0 * h * i) + 4.0 * l * l * h;
    batch as f64 * LAYERS as f64 * per_layer
}

/// The 32 benchmark sentences (the first is the single-sentence case).
fn sentences() -> Vec<Vec<u8>> {
    ANIMALS
        .iter()
        .flat_map(|a| {
            DRINKS.iter().map(move |d| {
                SENTENCE
                    .replace("{animal}", a)
                    .replace("{drink}", d)
                    .into_bytes()
            })
        })
        .collect()
}

/// `<target>/data/minilm`, where `bash models/data/fetch.sh minilm` puts the model.
fn data_dir() -> PathBuf {
    // The bench binary is <target>/<profile>/deps/minilm-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("data/minilm")
}

/// The bundled function and the weights file on a runtime of its own.
struct Model {
    function: Function,
    weights: Arc<Weights>,
}

impl Model {
    fn new(config: RuntimeConfig, weights: &Path) -> Self {
        let rt = Runtime::new(config).expect("runtime");
        let function = rt.load_bundled("minilm").expect("bundled minilm");
        let weights = rt.load_weights_file(weights).expect("minilm weights");
        Self { function, weights }
    }

    /// One request with `texts`: the outputs `embedding` and `token_ids`.
    fn infer(&self, texts: &[Vec<u8>]) -> Vec<(String, Tensor)> {
        let input = Tensor::from_bytes(vec![texts.len()], texts.to_vec()).expect("tensor");
        self.function
            .infer(&self.weights, vec![("text".into(), input)])
            .expect("infer")
    }

    /// Embeddings (`[n·384]`) and token ids (`[n, seq]` row-major, and `seq`) of `texts`.
    fn embed(&self, texts: &[Vec<u8>]) -> (Vec<f32>, Vec<u32>, usize) {
        let out = self.infer(texts);
        let get = |name: &str| {
            &out.iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no output `{name}`"))
                .1
        };
        let (emb, ids) = (get("embedding"), get("token_ids"));
        assert_eq!(emb.shape(), [texts.len(), HIDDEN]);
        let seq = ids.shape()[1];
        let ids = ids.f32s("token_ids").expect("f32 ids");
        let ids = ids.iter().map(|&x| x as u32).collect();
        (emb.f32s("embedding").expect("f32").to_vec(), ids, seq)
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The AVX2 kernels, if the CPU has AVX2 and its best level is wider (otherwise the
/// best-level rows already are the AVX2 rows).
fn avx2_kernels() -> Option<Kernels> {
    if Kernels::detect().level() == Level::Avx2 {
        return None;
    }
    Kernels::with_level(Level::Avx2)
}

/// The peak-FMA probes, as `peak-fma/<when>` (and `peak-fma-avx2/<when>`) of group `probes`.
fn peak(c: &mut Criterion, when: &str) {
    let mut g = c.benchmark_group("probes");
    g.throughput(Throughput::Elements(peak_fma_flops(PEAK_ITERATIONS)));
    g.bench_function(BenchmarkId::new("peak-fma", when), |b| {
        b.iter(|| peak_fma_probe(black_box(PEAK_ITERATIONS)))
    });
    if avx2_kernels().is_some() {
        g.throughput(Throughput::Elements(avx2_fma_flops(PEAK_ITERATIONS)));
        g.bench_function(BenchmarkId::new("peak-fma-avx2", when), |b| {
            b.iter(|| avx2_fma_probe(black_box(PEAK_ITERATIONS)))
        });
    }
    g.finish();
}

/// Whole requests through the sandbox (and candle on the same ids).
fn requests(c: &mut Criterion, dir: &Path) {
    let file = dir.join("minilm.safetensors");
    let one = Model::new(RuntimeConfig::default(), &file);
    let two = Model::new(
        RuntimeConfig {
            kernel_threads: 2,
            ..RuntimeConfig::default()
        },
        &file,
    );
    let avx2 = avx2_kernels().map(|_| {
        let config = RuntimeConfig {
            kernel_level: Some(Level::Avx2),
            ..RuntimeConfig::default()
        };
        Model::new(config, &file)
    });
    // The same weights as F16 (`tensorlet convert --dtype f16`): half the bytes to stream.
    let f16_file = dir.join("minilm-f16.safetensors");
    let bytes = std::fs::read(&file).expect("read the weights");
    let f16_bytes = tensorlet_host::weights::convert(&bytes, "minilm", tensorlet_host::DType::F16)
        .expect("convert to f16");
    std::fs::write(&f16_file, f16_bytes).expect("write the f16 weights");
    let half = Model::new(RuntimeConfig::default(), &f16_file);
    let batch = sentences();
    assert_eq!(batch.len(), BATCH);
    let single = batch[..1].to_vec();

    // The inputs are what they claim, and every configuration computes the same thing.
    let (emb1, ids1, seq1) = one.embed(&single);
    assert_eq!(seq1, SEQ, "the benchmark sentence is not {SEQ} word pieces");
    assert_eq!(ids1[SEQ - 1], SEP, "the benchmark sentence was truncated");
    let (emb_b, ids_b, seq_b) = one.embed(&batch);
    assert_eq!(seq_b, SEQ, "a batch sentence is not {SEQ} word pieces");
    assert!(
        ids_b.chunks(SEQ).all(|r| r[SEQ - 1] == SEP),
        "a batch sentence is not {SEQ} word pieces"
    );
    let others = [("two kernel threads", Some(&two)), ("AVX2", avx2.as_ref())];
    for (what, model) in others {
        let Some(model) = model else { continue };
        let (e, ids, _) = model.embed(&batch);
        assert_eq!(ids, ids_b, "{what}: other token ids");
        let d = max_abs_diff(&e, &emb_b);
        assert!(d <= 1e-4, "{what}: embeddings differ by {d}");
    }

    let mut g = c.benchmark_group("sentence");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(encoder_flops(1, SEQ) as u64));
    let id = format!("{SEQ}tok");
    g.bench_function(BenchmarkId::new("tensorlet-1t", &id), |b| {
        b.iter(|| black_box(one.infer(black_box(&single))))
    });
    g.bench_function(BenchmarkId::new("tensorlet-2t", &id), |b| {
        b.iter(|| black_box(two.infer(black_box(&single))))
    });
    g.bench_function(BenchmarkId::new("tensorlet-1t-f16", &id), |b| {
        b.iter(|| black_box(half.infer(black_box(&single))))
    });
    if let Some(avx2) = &avx2 {
        g.bench_function(BenchmarkId::new("tensorlet-avx2", &id), |b| {
            b.iter(|| black_box(avx2.infer(black_box(&single))))
        });
    }
    #[cfg(feature = "peers")]
    let candle = {
        let candle = tensorlet_benches::peers::CandleBert::load(dir).expect("candle BertModel");
        let inputs = candle.inputs(&ids1, 1, SEQ, &[SEQ]).expect("candle inputs");
        let theirs = candle.embed_vec(&inputs).expect("candle embed");
        let d = max_abs_diff(&emb1, &theirs);
        assert!(d <= AGREEMENT, "candle's sentence embedding differs by {d}");
        println!("candle agrees with tensorlet: 1 sentence within {d:.2e}");
        g.bench_function(BenchmarkId::new("candle", &id), |b| {
            b.iter(|| black_box(candle.embed(&inputs).expect("candle embed")))
        });
        candle
    };
    #[cfg(not(feature = "peers"))]
    let _ = &emb1;
    g.finish();

    let mut g = c.benchmark_group("batch");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(encoder_flops(BATCH, SEQ) as u64));
    let id = format!("{BATCH}x{SEQ}tok");
    g.bench_function(BenchmarkId::new("tensorlet-1t", &id), |b| {
        b.iter(|| black_box(one.infer(black_box(&batch))))
    });
    g.bench_function(BenchmarkId::new("tensorlet-2t", &id), |b| {
        b.iter(|| black_box(two.infer(black_box(&batch))))
    });
    #[cfg(feature = "peers")]
    {
        let inputs = candle
            .inputs(&ids_b, BATCH, SEQ, &[SEQ; BATCH])
            .expect("candle inputs");
        let theirs = candle.embed_vec(&inputs).expect("candle embed");
        let d = max_abs_diff(&emb_b, &theirs);
        assert!(d <= AGREEMENT, "candle's batch embeddings differ by {d}");
        println!("candle agrees with tensorlet: {BATCH} sentences within {d:.2e}");
        g.bench_function(BenchmarkId::new("candle", &id), |b| {
            b.iter(|| black_box(candle.embed(&inputs).expect("candle embed")))
        });
    }
    g.finish();
}

/// One FFN (up and down projections, packed with their biases as the runtime packs them)
/// and attention at [`LONG_SEQ`], on `k`, as `<what>-<label>/128` of group `kernels`.
fn kernel_cases(c: &mut Criterion, k: &Kernels, label: &str) {
    let (m, h, i) = (LONG_SEQ, HIDDEN, INTERMEDIATE);
    let ok = "valid shapes";
    let up: PackedDense = k
        .pack_dense(&values(i * h, 2), i, h, Some(&values(i, 3)))
        .expect(ok);
    let down: PackedDense = k
        .pack_dense(&values(h * i, 4), h, i, Some(&values(h, 5)))
        .expect(ok);
    let x = values(m * h, 1);
    let (mut mid, mut y) = (vec![0.0; m * i], vec![0.0; m * h]);
    let (q, kk, v) = (values(m * h, 6), values(m * h, 7), values(m * h, 8));
    let mut att = vec![0.0; m * h];
    let dims = AttentionDims {
        batch: 1,
        seq: m,
        heads: HEADS,
        head_dim: h / HEADS,
    };
    let id = LONG_SEQ.to_string();
    let mut g = c.benchmark_group("kernels");
    g.throughput(Throughput::Elements((2 * m * h * i) as u64));
    g.bench_function(BenchmarkId::new(format!("ffn-up-{label}"), &id), |b| {
        b.iter(|| {
            k.dense_packed(black_box(&x), m, &up, Activation::GeluErf, &mut mid)
                .expect(ok);
            black_box(&mid);
        })
    });
    g.bench_function(BenchmarkId::new(format!("ffn-down-{label}"), &id), |b| {
        b.iter(|| {
            k.dense_packed(black_box(&mid), m, &down, Activation::None, &mut y)
                .expect(ok);
            black_box(&y);
        })
    });
    g.throughput(Throughput::Elements((4 * m * m * h) as u64));
    g.bench_function(BenchmarkId::new(format!("attention-{label}"), &id), |b| {
        b.iter(|| {
            k.attention(black_box(&q), &kk, &v, dims, &[m], &mut att)
                .expect(ok);
            black_box(&att);
        })
    });
    g.finish();
}

fn kernels(c: &mut Criterion) {
    kernel_cases(c, &Kernels::detect(), "best");
    if let Some(k) = avx2_kernels() {
        kernel_cases(c, &k, "avx2");
    }
}

fn table(r: &Results) -> Table {
    let peers = cfg!(feature = "peers");
    let best = Kernels::detect().level();
    let avx2 = avx2_kernels().is_some();
    let mut t = Table::new("minilm (all-MiniLM-L6-v2; medians of this run)");
    // The probes run first and last; the faster of the two is the limit (a probe slowed by
    // other work on the machine would flatter every case).
    let probe = |name: &str| {
        let (first, last) = (
            r.median_ns("probes", &format!("{name}/first")),
            r.median_ns("probes", &format!("{name}/last")),
        );
        (first, last, first.into_iter().chain(last).reduce(f64::min))
    };
    let peak_work = Work::Flops(peak_fma_flops(PEAK_ITERATIONS) as f64);
    let avx2_work = Work::Flops(avx2_fma_flops(PEAK_ITERATIONS) as f64);
    let (first, last, peak_ns) = probe("peak-fma");
    t.row(
        format!("peak-FMA probe ({best:?}), first"),
        first,
        peak_work,
    );
    t.row(format!("peak-FMA probe ({best:?}), last"), last, peak_work);
    let (first, last, avx2_ns) = probe("peak-fma-avx2");
    if avx2 {
        t.row("peak-FMA probe (Avx2), first", first, avx2_work);
        t.row("peak-FMA probe (Avx2), last", last, avx2_work);
    }

    let sentence = Work::Flops(encoder_flops(1, SEQ));
    let get = |id: &str| r.median_ns("sentence", &format!("{id}/{SEQ}tok"));
    let (one, candle) = (get("tensorlet-1t"), get("candle"));
    let row = t.row(
        format!("request: 1 sentence, {SEQ} tokens, 1 thread"),
        one,
        sentence,
    );
    row.vs_limit("peak-FMA", peak_ns, peak_work, Some(SENTENCE_PEAK_TARGET));
    if peers {
        row.vs_peer("candle, 1 thread", candle, Some(SENTENCE_VS_CANDLE));
    }
    let row = t.row(
        format!("request: 1 sentence, {SEQ} tokens, 2 threads"),
        get("tensorlet-2t"),
        sentence,
    );
    row.vs_limit("peak-FMA (one core)", peak_ns, peak_work, None);
    match one {
        Some(one) => row.within("budget: 0.60 × 1-thread time", TWO_THREADS_BUDGET * one),
        None => row.vs_peer("budget: 0.60 × 1-thread time", None, Some(1.0)),
    };
    let row = t.row(
        format!("request: 1 sentence, {SEQ} tokens, 1 thread, F16 weights"),
        get("tensorlet-1t-f16"),
        sentence,
    );
    row.vs_limit("peak-FMA", peak_ns, peak_work, None);
    if peers {
        row.vs_peer("candle (F32), 1 thread", candle, None);
    }
    if avx2 {
        t.row(
            format!("request: 1 sentence, {SEQ} tokens, 1 thread, Avx2"),
            get("tensorlet-avx2"),
            sentence,
        )
        .vs_limit(
            "peak-FMA Avx2",
            avx2_ns,
            avx2_work,
            Some(SENTENCE_PEAK_TARGET),
        );
    }
    t.row(
        format!("candle: 1 sentence, {SEQ} tokens, 1 thread"),
        candle,
        sentence,
    );

    let batch = Work::Flops(encoder_flops(BATCH, SEQ));
    let get = |id: &str| r.median_ns("batch", &format!("{id}/{BATCH}x{SEQ}tok"));
    let (one, candle) = (get("tensorlet-1t"), get("candle"));
    let row = t.row(
        format!("request: {BATCH} sentences × {SEQ} tokens, 1 thread"),
        one,
        batch,
    );
    row.vs_limit("peak-FMA", peak_ns, peak_work, None);
    if peers {
        row.vs_peer("candle, 1 thread", candle, Some(BATCH_VS_CANDLE));
    }
    t.row(
        format!("request: {BATCH} sentences × {SEQ} tokens, 2 threads"),
        get("tensorlet-2t"),
        batch,
    )
    .vs_peer("tensorlet, 1 thread", one, None);
    t.row(
        format!("candle: {BATCH} sentences × {SEQ} tokens, 1 thread"),
        candle,
        batch,
    );

    let (m, h, i) = (LONG_SEQ as f64, HIDDEN as f64, INTERMEDIATE as f64);
    let levels = [
        ("best", format!("{best:?}"), peak_ns, peak_work, true),
        ("avx2", "Avx2".to_owned(), avx2_ns, avx2_work, avx2),
    ];
    for (label, level, limit, work, on) in levels {
        if !on {
            continue;
        }
        let cases = [
            (
                "ffn-up",
                format!("dense + GELU [{LONG_SEQ},{HIDDEN}]·[{INTERMEDIATE},{HIDDEN}]ᵀ"),
                2.0 * m * h * i,
            ),
            (
                "ffn-down",
                format!("dense [{LONG_SEQ},{INTERMEDIATE}]·[{HIDDEN},{INTERMEDIATE}]ᵀ"),
                2.0 * m * h * i,
            ),
            (
                "attention",
                format!(
                    "attention seq {LONG_SEQ}, {HEADS} heads × {}",
                    HIDDEN / HEADS
                ),
                4.0 * m * m * h,
            ),
        ];
        for (what, name, flops) in cases {
            t.row(
                format!("kernel: {name}, {level}"),
                r.median_ns("kernels", &format!("{what}-{label}/{LONG_SEQ}")),
                Work::Flops(flops),
            )
            .vs_limit(
                &format!("peak-FMA {level}"),
                limit,
                work,
                Some(KERNEL_PEAK_TARGET),
            );
        }
    }

    t.note(format!(
        "SIMD level {best:?}, {} f32 lanes; kernel threads 1 unless the case says 2 \
         (RuntimeConfig::kernel_threads); candle on 1 thread (RAYON_NUM_THREADS=1)",
        lanes()
    ));
    t.note(format!(
        "request: Function::infer of the bundled `minilm` on the upstream weights, tokenizer \
         included, fresh instance each time; sentences of exactly {SEQ} word pieces \
         ([CLS] + 30 + [SEP], checked from the function's token_ids); throughput = encoder \
         FLOPs 6·(2·L·(4·H² + 2·H·I) + 4·L²·H), H={HIDDEN}, I={INTERMEDIATE} \
         ({:.2} GFLOP per sentence; embeddings, norms, softmax, GELU, pooling not counted)",
        encoder_flops(1, SEQ) / 1e9
    ));
    t.note(
        "candle: candle-transformers BertModel (model.safetensors, config.json) + mean \
         pooling + L2 normalisation on tensorlet's token ids: its time has no tokenization; \
         its embeddings were checked against tensorlet's within 1e-3 before timing",
    );
    t.note(
        "F16 weights: the same file through `tensorlet_host::weights::convert` (what \
         `tensorlet convert --dtype f16` writes), written beside it as minilm-f16.safetensors; \
         dense layers read the 16-bit values (half the bytes), no target (another model)",
    );
    t.note(
        "2 threads: budget = 0.60 × the 1-thread request (met at ≥ 1×); share of peak is \
         against one core's peak",
    );
    t.note(format!(
        "kernel: called directly (Kernels::detect / with_level, one thread); dense = \
         dense_packed on weights packed once with bias, as the runtime runs them; attention \
         FLOPs = 4·L²·H; Avx2 rows against an AVX2 FMA probe{}",
        if avx2 {
            ""
        } else {
            " (no Avx2 rows: the best level is already Avx2, or not x86)"
        }
    ));
    if !peers {
        t.note("peers (candle) not built: add `--features peers`");
    }
    t
}

fn main() {
    single_threaded();
    let dir = data_dir();
    if !dir.join("minilm.safetensors").is_file() || !dir.join("model.safetensors").is_file() {
        println!(
            "minilm bench: no weights in {}; fetch them with `bash models/data/fetch.sh minilm` \
             and run again",
            dir.display()
        );
        return;
    }
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .without_plots()
        .configure_from_args();
    peak(&mut c, "first");
    requests(&mut c, &dir);
    kernels(&mut c);
    peak(&mut c, "last");
    c.final_summary();
    println!("{}", table(&Results::since(started)).render());
}
