//! `tensorlet train`, end to end: one Adam step against the independent numpy reference
//! (`tests/reference/train_step.py`), a short seeded run on the committed MNIST slice that
//! must learn, the bundled trained weights' accuracy, Ctrl-C checkpoints that resume, and
//! clear errors for bad specs.

mod common;

use std::path::Path;
use std::process::Output;

use common::temp::TempDir;
use common::{fixture, repo, tensorlet};
use tensorlet_train::data::idx;
use tensorlet_train::weights::WeightsFile;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tensorlet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh temporary folder for one test, removed when dropped.
fn temp(name: &str) -> TempDir {
    TempDir::new(&format!("train-{name}"))
}

/// Writes an MNIST folder whose training set is the slice's examples `train` and whose
/// test set is `test` (indices into the committed 1,000-image slice).
fn mnist_dir(dir: &Path, train: std::ops::Range<usize>, test: std::ops::Range<usize>) {
    std::fs::create_dir_all(dir).expect("data dir");
    let slice = fixture("mnist-test-1k");
    let images = idx::read(&slice.join("t10k-images-idx3-ubyte.gz")).expect("slice images");
    let labels = idx::read(&slice.join("t10k-labels-idx1-ubyte.gz")).expect("slice labels");
    for (prefix, range) in [("train", train), ("t10k", test)] {
        let n = range.len();
        idx::write(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &[n, 28, 28],
            &images.data[range.start * 784..range.end * 784],
            true,
        )
        .expect("write images");
        idx::write(
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            &[n],
            &labels.data[range],
            true,
        )
        .expect("write labels");
    }
}

/// One Adam step from given weights on the first 32 examples equals the numpy reference
/// within 1e-4 for every parameter.
#[test]
fn one_adam_step_matches_the_numpy_reference() {
    let dir = temp("step");
    mnist_dir(&dir, 0..32, 0..32);
    let out = dir.join("out.safetensors");
    let case = fixture("train_step");
    let stdout = ok(&tensorlet(&[
        "train",
        case.join("spec.toml").to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
        "--init",
        case.join("init.safetensors").to_str().unwrap(),
        "--steps",
        "1",
        "--no-shuffle",
        "--batch",
        "32",
        "--threads",
        "2",
        "-o",
        out.to_str().unwrap(),
    ]));
    let metrics: serde_json::Value = serde_json::from_str(&stdout).expect("metrics JSON");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(case.join("expected.json")).expect("expected.json"),
    )
    .unwrap();
    let (loss, want_loss) = (
        metrics["train_loss"].as_f64().unwrap(),
        reference["loss"].as_f64().unwrap(),
    );
    assert!(
        (loss - want_loss).abs() < 1e-4,
        "loss {loss}, numpy {want_loss}"
    );
    let got = WeightsFile::read(&out).expect("output weights");
    let want = WeightsFile::read(&case.join("expected.safetensors")).expect("expected");
    let init = WeightsFile::read(&case.join("init.safetensors")).expect("init");
    assert_eq!(
        got.tensors.keys().collect::<Vec<_>>(),
        want.tensors.keys().collect::<Vec<_>>()
    );
    for (name, w) in &want.tensors {
        let g = &got.tensors[name];
        assert_eq!(g.shape, w.shape, "{name}");
        let mut moved = 0;
        for (i, ((a, b), s)) in g
            .data
            .iter()
            .zip(&w.data)
            .zip(&init.tensors[name].data)
            .enumerate()
        {
            assert!(
                (a - b).abs() <= 1e-4,
                "{name}[{i}]: tensorlet {a}, numpy {b} (initial {s})"
            );
            moved += usize::from((b - s).abs() > 5e-4);
        }
        // The step really moved the weights (Adam's first step is about lr = 1e-3).
        assert!(
            moved * 2 > w.data.len(),
            "{name}: only {moved} weights moved"
        );
    }
    let meta = &got.metadata;
    assert_eq!(meta.get("tensorlet.steps").map(String::as_str), Some("1"));
    assert!(meta["tensorlet.spec"].contains("train-step"));
    assert_eq!(meta["tensorlet.data_digest"].len(), 64);
}

/// A short seeded run of the seed CNN on 800 slice images generalises to the other 200,
/// and the same seed gives the same weights.
#[test]
fn a_short_seeded_run_learns_and_is_reproducible() {
    // The spec's data path is `mnist`, under --data.
    let root = temp("learn");
    let dir = root.join("mnist");
    mnist_dir(&dir, 0..800, 800..1000);
    let spec = repo("models/mnist-cnn/train.toml");
    let run = |out: &Path, threads: &str| {
        let stdout = ok(&tensorlet(&[
            "train",
            spec.to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
            "--epochs",
            "4",
            "--batch",
            "32",
            "--threads",
            threads,
            "-o",
            out.to_str().unwrap(),
            "--log",
            dir.join("log.jsonl").to_str().unwrap(),
        ]));
        serde_json::from_str::<serde_json::Value>(&stdout).expect("metrics JSON")
    };
    let a = dir.join("a.safetensors");
    let metrics = run(&a, "2");
    let acc = metrics["test_accuracy"].as_f64().expect("test_accuracy");
    assert!(
        acc >= 0.85,
        "held-out accuracy {acc} after 4 epochs on 800 images"
    );
    let lines = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 4);
    let first = epochs[0]["train_loss"].as_f64().unwrap();
    let last = epochs[3]["train_loss"].as_f64().unwrap();
    assert!(last < first * 0.5, "train loss {first} -> {last}");
    // Same seed, same thread count: identical weights.
    let b = dir.join("b.safetensors");
    run(&b, "2");
    let (wa, wb) = (
        WeightsFile::read(&a).unwrap(),
        WeightsFile::read(&b).unwrap(),
    );
    assert_eq!(wa.tensors, wb.tensors);
}

#[test]
fn bad_specs_name_the_layer() {
    let dir = temp("bad");
    let cases = [
        ("[[layers]]\ntype = \"conv3d\"\nname = \"c\"\n", "conv3d"),
        (
            "[[layers]]\ntype = \"dense\"\nname = \"fc1\"\nout_features = 10\n",
            "layer 1 (dense `fc1`)",
        ),
    ];
    for (i, (layers, want)) in cases.iter().enumerate() {
        let spec = dir.join(format!("spec{i}.toml"));
        std::fs::write(
            &spec,
            format!(
                "name = \"x\"\ninput = [1, 28, 28]\n[data]\nformat = \"mnist\"\npath = \".\"\n\
                 {layers}[loss]\ntype = \"cross_entropy\"\n[optimizer]\ntype = \"adam\"\n"
            ),
        )
        .unwrap();
        let out = tensorlet(&["train", spec.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "expected `{want}` in: {err}");
    }
}
