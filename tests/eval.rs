//! `tensorlet eval`, end to end: mnist-cnn over the committed 1,000-example MNIST test slice
//! (the report's confusion matrix and accuracy against ones recomputed from the
//! `--predictions` rows and the data set's labels, the JSON report's fields, single examples
//! against `tensorlet run`), the mlp over a hand-made CSV with hand-computed MSE, MAE and R²,
//! and clear errors for data that does not fit the function.

mod common;

use std::path::Path;
use std::process::Output;

use common::temp::TempDir;
use common::{fixture, floats, repo, tensorlet};
use serde_json::Value;
use tensorlet_train::data::{Targets, idx};

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tensorlet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// A fresh temporary folder for one test, removed when dropped.
fn scratch(name: &str) -> TempDir {
    TempDir::new(&format!("eval-{name}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `--predictions` rows: (index, label, prediction, score).
fn prediction_rows(path: &Path) -> Vec<(usize, String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("index,label,prediction,score"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 4, "row `{line}`");
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].to_string(),
                f[3].to_string(),
            )
        })
        .collect()
}

#[test]
fn mnist_report_agrees_with_its_predictions_and_run() {
    let dir = scratch("mnist");
    let data = fixture("mnist-test-1k");
    let weights = repo("models/mnist-cnn/weights.safetensors");
    let (report, preds, plots) = (dir.join("r.json"), dir.join("p.csv"), dir.join("plots"));
    // Batches of 300: three full ones and a partial last batch of 100.
    let out = tensorlet(&[
        "eval",
        "mnist-cnn",
        "--weights",
        s(&weights),
        "--data",
        s(&data),
        "--batch",
        "300",
        "--report",
        s(&report),
        "--predictions",
        s(&preds),
        "--plots",
        s(&plots),
    ]);
    let stdout = succeeded(&out);
    for row in [
        "precision",
        "accuracy",
        "macro avg",
        "weighted avg",
        "true \\ predicted",
    ] {
        assert!(stdout.contains(row), "no `{row}` in:\n{stdout}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1000 examples in"), "{stderr}");
    assert!(stderr.contains("examples/s"), "{stderr}");

    // The labels, independently of eval: the data set as the loader reads it.
    let set = idx::load_mnist(&data, idx::MnistSplit::Test).unwrap();
    let Targets::Classes { labels, names } = &set.targets else {
        panic!("MNIST has classes")
    };
    assert_eq!(labels.len(), 1000);

    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["function"], "mnist-cnn");
    assert_eq!(json["weights"], s(&weights));
    assert_eq!(json["data"], s(&data));
    assert_eq!(json["task"], "classification");
    assert_eq!(json["count"], 1000);
    assert_eq!(json["batch"], 300);
    let seconds = json["seconds"].as_f64().unwrap();
    let rate = json["examples_per_second"].as_f64().unwrap();
    assert!(seconds > 0.0, "seconds {seconds}");
    assert!(
        (rate * seconds - 1000.0).abs() < 1e-6 * 1000.0,
        "{rate} examples/s over {seconds} s is not 1000 examples"
    );
    let r = &json["report"];
    let classes: Vec<String> = r["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(&classes, names);
    let confusion: Vec<Vec<u64>> = serde_json::from_value(r["confusion"].clone()).unwrap();

    // The confusion matrix and accuracy again, from the prediction rows and the labels.
    let rows = prediction_rows(&preds);
    assert_eq!(rows.len(), 1000);
    let index = |name: &str| classes.iter().position(|c| c == name).unwrap();
    let mut expected = vec![vec![0u64; 10]; 10];
    let mut correct = 0;
    for (i, (at, label, prediction, score)) in rows.iter().enumerate() {
        assert_eq!(*at, i);
        assert_eq!(index(label), labels[i] as usize, "row {i}'s label");
        let p = index(prediction);
        expected[labels[i] as usize][p] += 1;
        correct += usize::from(labels[i] as usize == p);
        let score: f32 = score.parse().unwrap();
        assert!(
            (0.0..=1.0).contains(&score),
            "row {i}: softmax score {score}"
        );
    }
    assert_eq!(confusion, expected);
    let accuracy = r["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - correct as f64 / 1000.0).abs() < 1e-12,
        "{accuracy}"
    );
    // Supports are the label counts; the averages' support is the total.
    for (c, m) in r["per_class"].as_array().unwrap().iter().enumerate() {
        let count = labels.iter().filter(|&&l| l as usize == c).count();
        assert_eq!(m["support"], count, "class {c}");
    }
    assert_eq!(r["macro_avg"]["support"], 1000);
    assert_eq!(r["weighted_avg"]["support"], 1000);

    // First and last example (the partial batch) one at a time through `tensorlet run`:
    // same class, and the score is that class's probability.
    for i in [0, 999] {
        let request = serde_json::json!({"inputs": [{
            "name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
            "data": set.example(i),
        }]});
        let path = dir.join(format!("req{i}.json"));
        std::fs::write(&path, request.to_string()).unwrap();
        let out = tensorlet(&["run", "mnist-cnn", "-w", s(&weights), "-i", s(&path)]);
        let response: Value = serde_json::from_str(&succeeded(&out)).unwrap();
        let probs = floats(&response["outputs"][0]["data"]);
        let (best, p) = probs
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (c, &p)| if p > b.1 { (c, p) } else { b });
        let (_, _, prediction, score) = &rows[i];
        assert_eq!(index(prediction), best, "example {i}");
        let score: f32 = score.parse().unwrap();
        assert!(
            (score - p).abs() <= 1e-6,
            "example {i}: score {score}, run {p}"
        );
    }

    let png = std::fs::read(plots.join("confusion.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "confusion.png is a PNG"
    );
}

/// A safetensors file of F32 tensors (name, shape, values), written by hand.
fn safetensors(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = Value::Object(header).to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    bytes
}

/// mlp weights with y = 1 + 2·sigmoid(100·x0): fc1 row 0 reads x0 with weight 100 (other
/// rows 0), fc2 reads hidden unit 0 with weight 2, bias 1. For x0 = ±1, sigmoid(±100) is
/// 1 or 0 to f32 precision (e^-100 ≈ 4e-44), so y is 3 or 1.
fn step_mlp_weights(path: &Path) {
    let mut fc1 = vec![0.0; 100];
    fc1[0] = 100.0;
    let mut fc2 = vec![0.0; 10];
    fc2[0] = 2.0;
    let bytes = safetensors(&[
        ("fc1.weight", vec![10, 10], fc1),
        ("fc1.bias", vec![10], vec![0.0; 10]),
        ("fc2.weight", vec![1, 10], fc2),
        ("fc2.bias", vec![1], vec![1.0]),
    ]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn csv_regression_with_hand_computed_metrics() {
    let dir = scratch("csv");
    let weights = dir.join("step.safetensors");
    step_mlp_weights(&weights);
    // x0 = 1, -1, 1, -1 → predictions 3, 1, 3, 1; the other features do not matter.
    // targets 3, 2, 5, 1 → residuals 0, 1, 2, 0
    // MSE = (0 + 1 + 4 + 0)/4 = 1.25; MAE = (0 + 1 + 2 + 0)/4 = 0.75
    // mean target 11/4 = 2.75; SS_tot = 0.0625 + 0.5625 + 5.0625 + 3.0625 = 8.75
    // R² = 1 − 5/8.75 = 3/7
    let csv = dir.join("tiny.csv");
    std::fs::write(
        &csv,
        "f0,f1,f2,f3,f4,f5,f6,f7,f8,f9,y\n\
         1,0.5,-2,3,0,0,0,0,0,7,3\n\
         -1,1,1,1,1,1,1,1,1,1,2\n\
         1,-3,0,0,0.25,0,0,0,0,0,5\n\
         -1,0,0,0,0,0,0,0,9,0,1\n",
    )
    .unwrap();
    let (report, preds) = (dir.join("r.json"), dir.join("p.csv"));
    let out = tensorlet(&[
        "eval",
        "mlp",
        "--weights",
        s(&weights),
        "--data",
        s(&csv),
        "--target",
        "y",
        "--task",
        "regression",
        "--batch",
        "3",
        "--report",
        s(&report),
        "--predictions",
        s(&preds),
    ]);
    let stdout = succeeded(&out);
    assert!(stdout.contains("mse  1.2500"), "{stdout}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["task"], "regression");
    assert_eq!(json["count"], 4);
    let r = &json["report"];
    for (name, want) in [("mse", 1.25), ("mae", 0.75), ("r2", 3.0 / 7.0)] {
        let got = r[name].as_f64().unwrap();
        assert!((got - want).abs() < 1e-6, "{name}: {got}, expected {want}");
    }
    assert_eq!(r["count"], 4);
    let rows = prediction_rows(&preds);
    let expected = [("3", 3.0), ("2", 1.0), ("5", 3.0), ("1", 1.0)];
    assert_eq!(rows.len(), 4);
    for (i, ((_, label, prediction, score), (t, p))) in rows.iter().zip(expected).enumerate() {
        assert_eq!(label, t, "row {i}");
        let got: f32 = prediction.parse().unwrap();
        assert!(
            (got - p).abs() < 1e-6,
            "row {i}: prediction {got}, expected {p}"
        );
        assert_eq!(score, "", "row {i}: regression has no score");
    }
}

#[test]
fn data_that_does_not_fit_is_a_clear_error() {
    let dir = scratch("errors");
    let weights = dir.join("step.safetensors");
    step_mlp_weights(&weights);
    let csv = dir.join("narrow.csv");
    std::fs::write(&csv, "a,b,c,target\n1,2,3,4\n5,6,7,8\n").unwrap();
    let out = tensorlet(&["eval", "mlp", "-w", s(&weights), "--data", s(&csv)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shape [3]") && stderr.contains("input `x` expects [-1, 10]"),
        "{stderr}"
    );

    // --target belongs to CSV data; an MNIST folder is not one.
    let mnist = fixture("mnist-test-1k");
    let out = tensorlet(&[
        "eval",
        "mnist-cnn",
        "-w",
        s(&weights),
        "--data",
        s(&mnist),
        "--target",
        "y",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--target applies to CSV files only"),
        "{stderr}"
    );

    let missing = dir.join("nothing-here");
    let out = tensorlet(&["eval", "mlp", "-w", s(&weights), "--data", s(&missing)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing-here"), "{stderr}");
}

#[test]
fn concurrent_requests_give_the_same_predictions_in_order() {
    // `--jobs 3` runs batches of 64 as concurrent requests; the rows must come back in data
    // order and equal to one request at a time, byte for byte.
    let dir = scratch("jobs");
    let data = fixture("mnist-test-1k");
    let weights = repo("models/mnist-cnn/weights.safetensors");
    let run = |jobs: &str| {
        let preds = dir.join(format!("p{jobs}.csv"));
        succeeded(&tensorlet(&[
            "eval",
            "mnist-cnn",
            "--weights",
            s(&weights),
            "--data",
            s(&data),
            "--batch",
            "64",
            "--jobs",
            jobs,
            "--predictions",
            s(&preds),
        ]));
        std::fs::read_to_string(&preds).unwrap()
    };
    let (one, three) = (run("1"), run("3"));
    assert_eq!(one.lines().count(), 1001, "a header and 1000 rows");
    assert!(one == three, "--jobs 3 predictions differ from --jobs 1");
    let indices: Vec<usize> = three
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(indices, (0..1000).collect::<Vec<_>>());
}
