//! `tensorlet eval`: runs a deployed function — in the sandbox, as `serve` runs it — over a
//! test set and reports scikit-learn's metrics (classification report and confusion matrix,
//! or MSE, MAE and R²), with optional JSON report, per-example predictions and a
//! confusion-matrix heat map.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tensorlet_host::{DType, Error, Function, Result, Tensor};
use tensorlet_train::data::{self, Dataset, Targets, csv::Task, idx::MnistSplit};
use tensorlet_train::metrics::{self, ClassificationReport, RegressionReport};

use super::{RuntimeArgs, load_function};

/// Evaluate FUNCTION (a bundled name or a .wasm/.cwasm path) with WEIGHTS on a test set.
///
/// DATA is a folder with MNIST IDX files (`t10k-*` preferred, else `train-*`, plain or
/// `.gz`), a folder of class sub-folders of PNG images, or a CSV file (with `--target` and
/// `--task`); for a function whose first input is BYTES, a folder of class sub-folders of
/// text files (one text per file). Examples go in batches as the function's first input;
/// its first output is read: for classes the argmax over the last axis (score = that
/// value), or with one value per example and two classes, the second class when the value
/// is at least 0.5 (score = the value); for regression the values. The report goes to
/// stdout, throughput and progress to stderr.
#[derive(Args, Debug)]
pub struct EvalCommand {
    /// A bundled function name (see `tensorlet list`) or a component path.
    function: String,
    /// Safetensors weights to evaluate.
    #[arg(long, short, value_name = "FILE")]
    weights: PathBuf,
    /// The test set: an MNIST folder, a folder of class folders of PNGs (or of text files),
    /// or a CSV file.
    #[arg(long, value_name = "DIR|FILE")]
    data: PathBuf,
    /// Examples per request [default: 256, or 16 texts].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// Evaluate only the examples the weights were not trained on: the test split their
    /// training spec (`tensorlet.spec` in the metadata `tensorlet train` writes) took from
    /// this data, with its `test_fraction` and `split_seed`.
    #[arg(long)]
    held_out: bool,
    /// Requests in flight at once (each on its own thread, as concurrent clients of a
    /// server) [default: the number of CPUs].
    #[arg(long, short, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    jobs: Option<u32>,
    /// CSV only: the target column [default: target].
    #[arg(long, value_name = "COLUMN")]
    target: Option<String>,
    /// CSV only: what the target column holds [default: regression].
    #[arg(long, value_name = "regression|classification", value_parser = parse_task)]
    task: Option<Task>,
    /// Image folders only: 1 (gray) or 3 (RGB) [default: the function input's channel
    /// dimension if fixed, else 1].
    #[arg(long, value_name = "N")]
    channels: Option<usize>,
    /// Write the report, with the function, weights, data, count and timing, as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write one CSV row per example: `index,label,prediction,score`.
    #[arg(long, value_name = "FILE")]
    predictions: Option<PathBuf>,
    /// Write charts into this folder (classification: `confusion.png`).
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `--task`'s parser: the data loader's task names.
fn parse_task(s: &str) -> std::result::Result<Task, String> {
    match s {
        "regression" => Ok(Task::Regression),
        "classification" => Ok(Task::Classification),
        _ => Err(format!(
            "`{s}` is not a task: expected `regression` or `classification`"
        )),
    }
}

/// The predictions of a whole run, in example order.
enum Predictions {
    /// Predicted class and its score (the argmax's value) per example.
    Classes { classes: Vec<u32>, scores: Vec<f32> },
    /// `width` predicted values per example, row-major.
    Values(Vec<f32>),
}

/// The metrics of a run.
enum Report {
    Classification(ClassificationReport),
    Regression(RegressionReport),
}

/// Examples per request for FP32 data.
const FEATURE_BATCH: usize = 256;

/// Texts per request (eval's default, and train's while embedding): a batch of texts of
/// 256 word pieces holds a few MB of activations per text.
pub(super) const TEXT_BATCH: usize = 16;

/// The loaded examples, owned.
enum Loaded {
    Features(Dataset),
    Texts(Vec<Vec<u8>>),
}

impl Loaded {
    fn as_examples(&self) -> Examples<'_> {
        match self {
            Loaded::Features(d) => Examples::Features {
                values: &d.features,
                shape: &d.example_shape,
            },
            Loaded::Texts(t) => Examples::Texts(t),
        }
    }
}

/// The `(test_fraction, split_seed)` recorded in the training spec of the weights at
/// `path`, for `--held-out`.
fn held_out_split(path: &Path) -> Result<(f64, u64)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let metadata = tensorlet_train::weights::metadata_of(&bytes);
    let spec = metadata.get("tensorlet.spec").ok_or_else(|| {
        Error::invalid_input(format!(
            "--held-out: `{}` records no training spec (`tensorlet.spec` in its metadata, as \
             tensorlet train writes it), so which examples were held out is unknown",
            path.display()
        ))
    })?;
    let spec = tensorlet_train::spec::Spec::parse(spec).map_err(|e| {
        Error::invalid_input(format!(
            "--held-out: the training spec recorded in `{}` does not parse: {e}",
            path.display()
        ))
    })?;
    // Image folders decide by their layout; the recorded spec's data path is relative to
    // a data root eval does not know, so an image source counts as split here.
    spec.data.held_out(Path::new("")).ok_or_else(|| {
        Error::invalid_input(format!(
            "--held-out: the weights were trained with a separate test set ({}); pass that \
             test set as --data instead",
            spec.data.describe()
        ))
    })
}

impl EvalCommand {
    /// Loads the function, weights and data, runs every batch, and writes the reports.
    pub fn execute(self) -> Result<()> {
        let jobs = match self.jobs {
            Some(j) => j as usize,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let mut config = self.runtime.config()?;
        config.max_concurrent_requests = (jobs as u32).max(config.max_concurrent_requests);
        let runtime = self.runtime.runtime_with(config)?;
        let function = load_function(&runtime, &self.function)?;
        let weights = runtime.load_weights_file(&self.weights)?;
        let input = function.metadata().inputs.first().cloned().ok_or_else(|| {
            Error::invalid_input(format!("function `{}` has no inputs", function.name()))
        })?;
        let output = function
            .metadata()
            .outputs
            .first()
            .cloned()
            .ok_or_else(|| {
                Error::invalid_input(format!("function `{}` has no outputs", function.name()))
            })?;
        let held_out = if self.held_out {
            Some(held_out_split(&self.weights)?)
        } else {
            None
        };
        let (examples, targets, batch) = if DType::from(input.dtype) == DType::Bytes {
            let set = self.load_texts(held_out)?;
            let batch = self.batch.map_or(TEXT_BATCH, |b| b as usize);
            let targets = Targets::Classes {
                labels: set.labels,
                names: set.names,
            };
            (Loaded::Texts(set.texts), targets, batch)
        } else {
            let mut dataset = self.load_data(&input.shape)?;
            if let Some((fraction, seed)) = held_out {
                dataset = dataset
                    .split(fraction, seed)
                    .map_err(|e| Error::invalid_input(format!("--held-out: {e}")))?
                    .1;
            }
            let batch = self.batch.map_or(FEATURE_BATCH, |b| b as usize);
            let batch = check_input(&function, &input, &dataset, batch)?;
            let targets = dataset.targets.clone();
            (Loaded::Features(dataset), targets, batch)
        };
        let examples = examples.as_examples();

        let started = Instant::now();
        let (rows, width) = run_rows(
            &function,
            &weights,
            &input.name,
            &output.name,
            &examples,
            batch,
            jobs,
            "eval",
        )?;
        let predictions = predictions(&targets, rows, width, &output.name)?;
        let seconds = started.elapsed().as_secs_f64();
        let count = examples.len();
        let rate = count as f64 / seconds.max(f64::MIN_POSITIVE);
        eprintln!("eval: {count} examples in {seconds:.3} s ({rate:.1} examples/s)");

        let report = score(&targets, count, &predictions, &output.name)?;
        match &report {
            Report::Classification(r) => print!("{r}"),
            Report::Regression(r) => print!("{r}"),
        }
        if let Some(path) = &self.predictions {
            write_file(path, predictions_csv(&targets, &predictions).as_bytes())?;
        }
        if let Some(path) = &self.report {
            let (task, metrics) = match &report {
                Report::Classification(r) => ("classification", serde_json::to_value(r)),
                Report::Regression(r) => ("regression", serde_json::to_value(r)),
            };
            let metrics =
                metrics.map_err(|e| Error::internal(format!("encoding the report: {e}")))?;
            let doc = json!({
                "function": self.function,
                "weights": self.weights.display().to_string(),
                "data": self.data.display().to_string(),
                "task": task,
                "count": count,
                "batch": batch,
                "seconds": seconds,
                "examples_per_second": rate,
                "report": metrics,
            });
            let text = serde_json::to_string_pretty(&doc)
                .map_err(|e| Error::internal(format!("encoding the report: {e}")))?;
            write_file(path, format!("{text}\n").as_bytes())?;
        }
        if let Some(dir) = &self.plots {
            match &report {
                Report::Classification(r) => {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                    let path = dir.join("confusion.png");
                    let title = format!("{} on {}", self.function, self.data.display());
                    tensorlet_train::plot::heatmap(&path, &title, &r.classes, &r.confusion)
                        .map_err(|e| Error::internal(format!("plotting: {e}")))?;
                }
                Report::Regression(_) => {
                    eprintln!("eval: --plots draws the confusion matrix; regression has none")
                }
            }
        }
        Ok(())
    }

    /// Loads `--data` as a folder of class folders of texts (for a function whose input
    /// is BYTES), keeping only the held-out split when one is given.
    fn load_texts(&self, held_out: Option<(f64, u64)>) -> Result<data::text::TextSet> {
        for (flag, set) in [
            ("--target", self.target.is_some()),
            ("--task", self.task.is_some()),
            ("--channels", self.channels.is_some()),
        ] {
            if set {
                return Err(Error::invalid_input(format!(
                    "{flag} does not apply to text data (the function's input is BYTES)"
                )));
            }
        }
        let set = data::text::load(&self.data)
            .map_err(|e| Error::invalid_input(format!("--data: {e}")))?;
        Ok(match held_out {
            Some((fraction, seed)) => {
                let (_, test) = data::split_indices(set.len(), fraction, seed, &set.source)
                    .map_err(|e| Error::invalid_input(format!("--held-out: {e}")))?;
                set.subset(&test)
            }
            None => set,
        })
    }

    /// Loads `--data` as MNIST, an image folder or a CSV file, refusing flags that do not
    /// apply to its kind. `input_shape` (the function's first input) gives the default
    /// channel count of images.
    fn load_data(&self, input_shape: &[i64]) -> Result<Dataset> {
        let path = &self.data;
        let only = |flag: &str, set: bool, kind: &str| {
            if set {
                Err(Error::invalid_input(format!(
                    "{flag} applies to {kind} only, but --data `{}` is not one",
                    path.display()
                )))
            } else {
                Ok(())
            }
        };
        let loaded = if path.is_file() {
            only("--channels", self.channels.is_some(), "image folders")?;
            let target = self.target.as_deref().unwrap_or("target");
            data::csv::load(path, target, self.task.unwrap_or_default())
        } else if path.is_dir() {
            only("--target", self.target.is_some(), "CSV files")?;
            only("--task", self.task.is_some(), "CSV files")?;
            let has = |prefix: &str| {
                ["", ".gz"].iter().any(|gz| {
                    path.join(format!("{prefix}-images-idx3-ubyte{gz}"))
                        .is_file()
                })
            };
            if has("t10k") || has("train") {
                only("--channels", self.channels.is_some(), "image folders")?;
                let split = if has("t10k") {
                    MnistSplit::Test
                } else {
                    MnistSplit::Train
                };
                data::idx::load_mnist(path, split)
            } else {
                let fixed = input_shape.get(1).and_then(|&c| usize::try_from(c).ok());
                data::images::load(path, self.channels.or(fixed).unwrap_or(1))
            }
        } else {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "--data names neither a file nor a folder",
                ),
            ));
        };
        let dataset = loaded.map_err(|e| Error::invalid_input(format!("--data: {e}")))?;
        if dataset.is_empty() {
            return Err(Error::invalid_input(format!(
                "--data `{}` holds no examples",
                path.display()
            )));
        }
        Ok(dataset)
    }
}

/// Checks that the data fits the function's input (FP32, rank 1 + the example's, fixed
/// dimensions equal) and returns the batch size to use: `batch`, or the input's fixed
/// batch dimension if it has one.
fn check_input(
    function: &Function,
    input: &tensorlet_host::IoSpec,
    dataset: &Dataset,
    batch: usize,
) -> Result<usize> {
    let dtype = DType::from(input.dtype);
    if dtype != DType::F32 {
        return Err(Error::invalid_input(format!(
            "function `{}`'s first input `{}` is {}; eval feeds FP32 examples",
            function.name(),
            input.name,
            dtype.as_str()
        )));
    }
    let example = &dataset.example_shape;
    let fits = input.shape.len() == example.len() + 1
        && input.shape[1..]
            .iter()
            .zip(example)
            .all(|(&want, &have)| want < 0 || usize::try_from(want) == Ok(have));
    if !fits {
        return Err(Error::shape_mismatch(format!(
            "the data's examples have shape {example:?} (batches [N, {}]), but function `{}`'s \
             input `{}` expects {:?} (-1 = any)",
            example
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            function.name(),
            input.name,
            input.shape
        )));
    }
    match usize::try_from(input.shape[0]) {
        Ok(fixed) if !dataset.len().is_multiple_of(fixed.max(1)) || fixed == 0 => {
            Err(Error::shape_mismatch(format!(
                "function `{}`'s input `{}` takes batches of exactly {fixed}, which do not \
                 divide the data's {} examples",
                function.name(),
                input.name,
                dataset.len()
            )))
        }
        Ok(fixed) => Ok(fixed),
        Err(_) => Ok(batch),
    }
}

/// What eval and train send through a function: FP32 examples of one shape (batched as
/// `[rows, ..shape]`), or byte strings (batched as a BYTES `[rows]` tensor).
pub(super) enum Examples<'a> {
    /// `values` holds every example's `shape`-shaped values, row-major.
    Features {
        /// All values.
        values: &'a [f32],
        /// One example's shape.
        shape: &'a [usize],
    },
    /// One byte string (a text) per example.
    Texts(&'a [Vec<u8>]),
}

impl Examples<'_> {
    /// The number of examples.
    fn len(&self) -> usize {
        match self {
            Examples::Features { values, shape } => values
                .len()
                .checked_div(shape.iter().product())
                .unwrap_or(0),
            Examples::Texts(texts) => texts.len(),
        }
    }

    /// Examples `start..start + rows` as one input tensor.
    fn batch(&self, start: usize, rows: usize) -> Result<Tensor> {
        match self {
            Examples::Features { values, shape } => {
                let len: usize = shape.iter().product();
                let mut dims = vec![rows];
                dims.extend_from_slice(shape);
                Tensor::from_f32(dims, &values[start * len..(start + rows) * len])
            }
            Examples::Texts(texts) => Tensor::from_bytes(vec![rows], &texts[start..start + rows]),
        }
    }
}

/// Runs every batch of `batch` examples through `function` (as its input `input`) on
/// `jobs` threads — concurrent requests, as a server's clients would send them — and
/// returns output `output`'s rows in example order with their width (values per
/// example). Progress goes to stderr (every 2 s on a terminal, 10 s otherwise), prefixed
/// `label`. The first
/// failing batch (in data order) is the error.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_rows(
    function: &Function,
    weights: &std::sync::Arc<tensorlet_host::Weights>,
    input: &str,
    output: &str,
    examples: &Examples,
    batch: usize,
    jobs: usize,
    label: &str,
) -> Result<(Vec<f32>, usize)> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let n = examples.len();
    let starts: Vec<usize> = (0..n).step_by(batch.max(1)).collect();
    let results: Vec<Mutex<Option<Result<Vec<f32>>>>> =
        starts.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let started = Instant::now();
    let last_progress = Mutex::new(started);
    // A line every 2 s on a terminal; every 10 s into a log.
    let every = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    let worker = || {
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= starts.len() || failed.load(Ordering::Relaxed) {
                break;
            }
            let start = starts[b];
            let rows = batch.min(n - start);
            let result = run_batch(function, weights, input, output, examples, start, rows);
            failed.fetch_or(result.is_err(), Ordering::Relaxed);
            *results[b].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            let finished = done.fetch_add(rows, Ordering::Relaxed) + rows;
            let now = Instant::now();
            let mut last = last_progress.lock().unwrap_or_else(|e| e.into_inner());
            if now - *last >= every {
                *last = now;
                let secs = (now - started).as_secs_f64();
                let rate = finished as f64 / secs;
                let eta = (n - finished) as f64 / rate.max(f64::MIN_POSITIVE);
                eprintln!("{label}: {finished}/{n} examples ({rate:.1}/s, ETA {eta:.0} s)");
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..jobs.clamp(1, starts.len().max(1)) {
            s.spawn(worker);
        }
        worker();
    });
    let mut rows = Vec::new();
    let mut width = None;
    for (result, &start) in results.into_iter().zip(&starts) {
        // Batches after a failure may not have run; the failure comes first in data order.
        let Some(result) = result.into_inner().unwrap_or_else(|e| e.into_inner()) else {
            continue;
        };
        let values = result?;
        let w = values.len() / batch.min(n - start);
        if *width.get_or_insert(w) != w {
            return Err(Error::shape_mismatch(format!(
                "output `{output}` has {w} values per example from example {start} on, but {} \
                 before: expected the same width for every batch",
                width.unwrap_or(0)
            )));
        }
        rows.extend(values);
    }
    match width {
        Some(w) => Ok((rows, w)),
        None if n == 0 => Ok((rows, 0)),
        None => Err(Error::internal("no batch ran".to_string())),
    }
}

/// Runs examples `start..start + rows` through `function` and returns output `output`'s
/// values (`rows` rows of equal width).
fn run_batch(
    function: &Function,
    weights: &std::sync::Arc<tensorlet_host::Weights>,
    input: &str,
    output: &str,
    examples: &Examples,
    start: usize,
    rows: usize,
) -> Result<Vec<f32>> {
    let what = || format!("examples {start}..{}", start + rows);
    let tensor = examples.batch(start, rows)?;
    let outputs = function
        .infer(weights, vec![(input.to_string(), tensor)])
        .map_err(|e| e.context(what()))?;
    let tensor = outputs
        .into_iter()
        .find_map(|(name, t)| (name == output).then_some(t))
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "function `{}` returned no output `{output}` for {}",
                function.name(),
                what()
            ))
        })?;
    let out = tensor.f32s(format_args!("output `{output}`"))?;
    let shape = tensor.shape();
    if shape.first() != Some(&rows) || out.len() % rows != 0 || out.is_empty() {
        return Err(Error::shape_mismatch(format!(
            "output `{output}` has shape {shape:?} for {}: expected [{rows}, ...]",
            what()
        )));
    }
    Ok(out.to_vec())
}

/// The predictions of `rows` (`width` values per example) for `targets`: values as they
/// are for regression; for classes the argmax over each row (its value the score), or, for
/// one value per example and two classes, the second class when the value is at least 0.5
/// (a probability of the second class, as a sigmoid output gives).
fn predictions(
    targets: &Targets,
    rows: Vec<f32>,
    width: usize,
    output: &str,
) -> Result<Predictions> {
    let Targets::Classes { names, .. } = targets else {
        return Ok(Predictions::Values(rows));
    };
    let (mut classes, mut scores) = (Vec::new(), Vec::new());
    for (i, row) in rows.chunks_exact(width.max(1)).enumerate() {
        let (c, s) = if width == 1 && names.len() == 2 {
            let p = row[0];
            if p.is_nan() {
                None
            } else {
                Some((u32::from(p >= 0.5), p))
            }
        } else {
            argmax(row)
        }
        .ok_or_else(|| {
            Error::invalid_input(format!("output `{output}` of example {i} is all NaN"))
        })?;
        classes.push(c);
        scores.push(s);
    }
    Ok(Predictions::Classes { classes, scores })
}

/// The index and value of the largest non-NaN element (the first one on ties), or `None` if
/// all are NaN.
fn argmax(row: &[f32]) -> Option<(u32, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, v)| (i as u32, v))
}

/// Computes the report from the predictions and the data's targets, checking that the
/// function's output agrees with them (one score per class, one value per target).
fn score(
    targets: &Targets,
    count: usize,
    predictions: &Predictions,
    output: &str,
) -> Result<Report> {
    let metrics_err = |e: metrics::MetricsError| Error::invalid_input(format!("metrics: {e}"));
    match (targets, predictions) {
        (Targets::Classes { labels, names }, Predictions::Classes { classes, .. }) => {
            if let Some(&c) = classes.iter().find(|&&c| c as usize >= names.len()) {
                return Err(Error::shape_mismatch(format!(
                    "output `{output}` predicted class {c}, but the data has {} classes {:?}: \
                     expected one score per class of the data",
                    names.len(),
                    names
                )));
            }
            metrics::classification_report(labels, classes, names)
                .map(Report::Classification)
                .map_err(metrics_err)
        }
        (Targets::Values { values, width, .. }, Predictions::Values(predicted)) => {
            if predicted.len() != values.len() {
                return Err(Error::shape_mismatch(format!(
                    "output `{output}` has {} values per example, but the data has {width} \
                     target(s) per example",
                    predicted.len() / count.max(1)
                )));
            }
            metrics::multi_output_regression_report(values, predicted, *width)
                .map(Report::Regression)
                .map_err(metrics_err)
        }
        _ => Err(Error::internal(
            "predictions of a different task than the data's targets",
        )),
    }
}

/// The `--predictions` CSV: `index,label,prediction,score`. Classification: class names and
/// the argmax's score; regression: target and predicted values (space-separated when there
/// are several outputs) and an empty score.
fn predictions_csv(targets: &Targets, predictions: &Predictions) -> String {
    let mut out = String::from("index,label,prediction,score\n");
    match (targets, predictions) {
        (Targets::Classes { labels, names }, Predictions::Classes { classes, scores }) => {
            for (i, ((&l, &p), s)) in labels.iter().zip(classes).zip(scores).enumerate() {
                let name = |c: u32| csv_field(&names[c as usize]);
                let _ = writeln!(out, "{i},{},{},{s}", name(l), name(p));
            }
        }
        (Targets::Values { values, width, .. }, Predictions::Values(predicted)) => {
            let join = |row: &[f32]| row.iter().map(f32::to_string).collect::<Vec<_>>().join(" ");
            for (i, (t, p)) in values
                .chunks_exact(*width)
                .zip(predicted.chunks_exact(*width))
                .enumerate()
            {
                let _ = writeln!(out, "{i},{},{},", join(t), join(p));
            }
        }
        _ => {}
    }
    out
}

/// `s` as a CSV field: quoted (quotes doubled) if it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `bytes` to `path`.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_largest_and_skips_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), Some((1, 0.7)));
        assert_eq!(argmax(&[0.5, 0.5]), Some((0, 0.5)));
        assert_eq!(argmax(&[f32::NAN, -1.0, -2.0]), Some((1, -1.0)));
        assert_eq!(argmax(&[f32::NAN]), None);
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("cat"), "cat");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
