//! `tensorlet train`: trains the network a spec declares, natively on the kernels, and
//! writes safetensors weights the bundled functions run.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;
use tensorlet_host::{Error, Result};
use tensorlet_train::data::text::TextSet;
use tensorlet_train::data::{DataError, DataSource, Embed, Rng, Targets};
use tensorlet_train::net::Network;
use tensorlet_train::scaler::Scaler;
use tensorlet_train::spec::Spec;
use tensorlet_train::train::{BatchProgress, EpochSummary, Observer, Options, Trainer};
use tensorlet_train::weights::{self, OPTIM_PREFIX, WeightsFile};

use super::eval::{Examples, TEXT_BATCH, run_rows};
use super::{RuntimeArgs, load_function};

/// Train the network a SPEC.toml declares and write its weights.
///
/// The spec names the layers, loss, optimizer, schedule, batch size, epochs and data (see
/// `models/mnist-cnn/train.toml`). Data paths in the spec are resolved against --data
/// (default `target/data`, where `models/data/fetch.sh` puts them). The output is
/// safetensors with PyTorch `state_dict` names, metadata recording the spec, the data's
/// digest, the seed and the final metrics (`tensorlet inspect` shows them).
///
/// Ctrl-C stops after the current batch and writes a checkpoint to the output path (with
/// the optimizer's state); `--init` resumes from it.
///
/// Text data (`format = "text"`, see `models/spam/train.toml`) is first embedded by the
/// spec's `[data.embed]` function, run in the sandbox on its weights (`--threads` requests
/// at a time), and cached under `DIR/.embeddings/`; the output is then those weights plus
/// the trained tensors, one file the function runs as it is.
#[derive(Args, Debug)]
pub struct TrainCommand {
    /// The training spec (TOML).
    spec: PathBuf,
    /// Folder that data paths in the spec are relative to.
    #[arg(long, value_name = "DIR", default_value = "target/data")]
    data: PathBuf,
    /// Epochs (overrides the spec).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Examples per optimizer step (overrides the spec).
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Worker threads; a batch is split over them (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Seed of the initialisation, shuffles, splits and dropout (overrides the spec).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Start from these weights (or a checkpoint, whose optimizer state is restored)
    /// instead of a fresh initialisation.
    #[arg(long, value_name = "W.safetensors")]
    init: Option<PathBuf>,
    /// Stop after this many optimizer steps.
    #[arg(long, value_name = "N")]
    steps: Option<usize>,
    /// Take the training examples in order instead of shuffling them every epoch.
    #[arg(long)]
    no_shuffle: bool,
    /// Where to write the trained weights.
    #[arg(long, short, value_name = "OUT.safetensors")]
    output: Option<PathBuf>,
    /// Append one JSON line per epoch to this file.
    #[arg(long, value_name = "LOG.jsonl")]
    log: Option<PathBuf>,
    /// Write learning curves (loss.png, accuracy.png) into this folder.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
}

/// Error helper: everything the trainer reports is a problem with the user's input.
fn bad(e: impl std::fmt::Display) -> Error {
    Error::invalid_input(e.to_string())
}

impl TrainCommand {
    /// Trains and writes the weights.
    pub fn execute(self) -> Result<()> {
        let text = std::fs::read_to_string(&self.spec).map_err(|e| Error::io(&self.spec, e))?;
        let mut spec =
            Spec::parse(&text).map_err(|e| bad(format!("{}: {e}", self.spec.display())))?;
        if let Some(seed) = self.seed {
            spec.training.seed = seed;
        }
        let mut options = Options::from_spec(&spec);
        if let Some(e) = self.epochs {
            options.epochs = e;
        }
        if let Some(b) = self.batch {
            if b == 0 {
                return Err(bad("--batch must be at least 1"));
            }
            options.batch = b;
        }
        if let Some(t) = self.threads {
            options.threads = t.max(1);
        }
        options.steps = self.steps;
        options.shuffle = !self.no_shuffle;
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.safetensors", spec.name)));

        eprintln!("loading data ({})", self.data.display());
        let threads = options.threads;
        let root = self.data.clone();
        let splits = spec
            .data
            .load_with(&self.data, &mut |set, how| {
                embed_texts(set, how, &root, threads).map_err(|e| DataError::Format {
                    path: PathBuf::from(&set.source),
                    what: format!("embedding the texts with `{}`: {e}", how.function),
                })
            })
            .map_err(bad)?;
        let (mut train, mut valid, valid_name) = if spec.training.validation_fraction > 0.0 {
            let (t, v) = splits
                .train
                .split(spec.training.validation_fraction, spec.training.seed)
                .map_err(bad)?;
            (t, v, "valid")
        } else {
            (splits.train, splits.test.clone(), "test")
        };
        let mut test = splits.test;
        let digest = train.digest();
        eprintln!(
            "train {} examples, {valid_name} {}, test {} (shape {:?})",
            train.len(),
            valid.len(),
            test.len(),
            train.example_shape
        );

        let mut rng = Rng::new(spec.training.seed);
        let mut net = Network::new(&spec, &mut rng).map_err(bad)?;
        let init = match &self.init {
            Some(path) => {
                let file = WeightsFile::read(path).map_err(bad)?;
                file.load_into(&mut net, path).map_err(bad)?;
                Some(file)
            }
            None => None,
        };
        let scaler = Scaler::fit(&spec.preprocess, &train);
        for set in [&mut train, &mut valid, &mut test] {
            scaler.apply(set);
        }
        let mut trainer = Trainer::new(&spec, net, options.threads).map_err(bad)?;
        if let Some(file) = &init {
            let step = file
                .metadata
                .get("tensorlet.optimizer_step")
                .and_then(|s| s.parse().ok());
            if let Some(step) = step {
                let restored = trainer.optimizer.restore(step, |kind, i| {
                    file.tensors
                        .get(&format!("{OPTIM_PREFIX}{kind}.{i}"))
                        .map(|t| t.data.clone())
                });
                if restored {
                    eprintln!("resuming from optimizer step {step}");
                }
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        watch_ctrl_c(stop.clone());
        let mut progress = Progress::new(stop, self.log.as_deref())?;
        eprintln!(
            "training {} parameters on {} threads: {} epochs, batch {}",
            trainer
                .net
                .params
                .iter()
                .map(|p| p.data.len())
                .sum::<usize>(),
            options.threads,
            options.epochs,
            options.batch
        );
        let started = Instant::now();
        let outcome = trainer
            .fit(&train, Some(&valid), &options, &mut progress)
            .map_err(bad)?;
        progress.finish();

        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_owned(), "pt".to_owned());
        metadata.insert(
            "tensorlet.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        metadata.insert("tensorlet.spec".to_owned(), text.clone());
        metadata.insert("tensorlet.data_digest".to_owned(), digest);
        metadata.insert("tensorlet.data".to_owned(), train.source.clone());
        metadata.insert("tensorlet.seed".to_owned(), spec.training.seed.to_string());
        metadata.insert(
            "tensorlet.epochs".to_owned(),
            outcome.history.len().to_string(),
        );
        metadata.insert("tensorlet.steps".to_owned(), outcome.steps.to_string());
        let mut extra = scaler.tensors();
        if outcome.stopped {
            let (step, state) = trainer.optimizer.state();
            for (kind, i, values) in state {
                extra.push((
                    format!("{OPTIM_PREFIX}{kind}.{i}"),
                    vec![values.len()],
                    values.to_vec(),
                ));
            }
            metadata.insert("tensorlet.optimizer_step".to_owned(), step.to_string());
            metadata.insert("tensorlet.checkpoint".to_owned(), "true".to_owned());
            write_weights(&output, &spec, &self.data, &trainer, &extra, &metadata)?;
            eprintln!(
                "stopped after {} steps; checkpoint written to {} (resume with --init {})",
                outcome.steps,
                output.display(),
                output.display()
            );
            return Ok(());
        }

        let eval = trainer.evaluate(&test).map_err(bad)?;
        let mut metrics = serde_json::Map::new();
        metrics.insert("test_loss".into(), eval.loss.into());
        if let Some(a) = eval.accuracy {
            metrics.insert("test_accuracy".into(), a.into());
        }
        if let Targets::Values { values, .. } = &test.targets {
            let preds = scaler.unscale_targets(&eval.outputs);
            let truth = scaler.unscale_targets(values);
            let r = tensorlet_train::metrics::regression_report(&truth, &preds).map_err(bad)?;
            metrics.insert("test_mse".into(), r.mse.into());
            metrics.insert("test_mae".into(), r.mae.into());
            metrics.insert("test_r2".into(), r.r2.into());
            // The same split through ordinary least squares: what the network should beat.
            let baseline = tensorlet_train::baseline::least_squares(&train)
                .and_then(|m| m.predict(&test))
                .and_then(|p| {
                    let p = scaler.unscale_targets(&p);
                    tensorlet_train::metrics::regression_report(&truth, &p)
                        .map_err(|e| tensorlet_train::train::TrainError(e.to_string()))
                });
            match baseline {
                Ok(b) => {
                    eprintln!(
                        "test: MSE {:.1}, MAE {:.2}, R² {:.3}; least-squares linear model on \
                         the same split: MSE {:.1}, MAE {:.2}, R² {:.3}",
                        r.mse, r.mae, r.r2, b.mse, b.mae, b.r2
                    );
                    metrics.insert("baseline_least_squares_test_mse".into(), b.mse.into());
                    metrics.insert("baseline_least_squares_test_mae".into(), b.mae.into());
                    metrics.insert("baseline_least_squares_test_r2".into(), b.r2.into());
                }
                Err(e) => eprintln!("(no least-squares baseline: {e})"),
            }
        }
        if let Some(last) = outcome.history.last() {
            metrics.insert("train_loss".into(), last.train_loss.into());
        }
        metrics.insert(
            "train_seconds".into(),
            started.elapsed().as_secs_f64().into(),
        );
        let metrics = serde_json::Value::Object(metrics);
        metadata.insert("tensorlet.metrics".to_owned(), metrics.to_string());
        write_weights(&output, &spec, &self.data, &trainer, &extra, &metadata)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&metrics).unwrap_or_default()
        );
        eprintln!("wrote {}", output.display());
        if let Some(dir) = &self.plots {
            let points: Vec<_> = outcome
                .history
                .iter()
                .map(|e| tensorlet_train::plot::EpochPoint {
                    epoch: e.epoch,
                    train_loss: e.train_loss,
                    valid_loss: e.valid_loss,
                    train_accuracy: e.train_accuracy,
                    valid_accuracy: e.valid_accuracy,
                })
                .collect();
            let files = tensorlet_train::plot::learning_curves(dir, &points).map_err(bad)?;
            for f in files {
                eprintln!("wrote {}", f.display());
            }
        }
        Ok(())
    }
}

/// Writes the trained parameters and `extra` tensors with `metadata` to `output`; for
/// text data, into a copy of the embedding function's weights, so that function runs the
/// result as it is (the head beside the encoder, one file).
fn write_weights(
    output: &Path,
    spec: &Spec,
    root: &Path,
    trainer: &Trainer,
    extra: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let base = match &spec.data {
        DataSource::Text { embed, .. } => {
            let path = root.join(&embed.weights);
            Some((std::fs::read(&path).map_err(|e| Error::io(&path, e))?, path))
        }
        _ => None,
    };
    let base = base
        .as_ref()
        .map(|(bytes, path)| (path.as_path(), &bytes[..]));
    weights::write_over(output, base, &trainer.net.params, extra, metadata).map_err(bad)
}

/// Feature rows for `set`: every text through `how.function` with `how.weights` (relative
/// to `root`), `jobs` requests at a time, output `how.output` read back in `set`'s order.
/// Texts go in batches of similar length (padding wasted on short texts is small) and the
/// rows are put back in order. The result is cached in `root/.embeddings/`, keyed by the
/// SHA-256 of the component, the weights, the texts and the output name, so training again
/// on the same data skips this step.
fn embed_texts(set: &TextSet, how: &Embed, root: &Path, jobs: usize) -> Result<Vec<f32>> {
    let runtime_args = RuntimeArgs {
        timeout: 120.0,
        memory_limit: 512,
        kernels: tensorlet_host::KernelBackend::Native,
        threads: 1,
        no_cache: false,
    };
    let mut config = runtime_args.config()?;
    config.max_concurrent_requests = jobs.max(1) as u32;
    let runtime = runtime_args.runtime_with(config)?;
    let function = load_function(&runtime, &how.function)?;
    let weights_path = root.join(&how.weights);
    let weights = runtime.load_weights_file(&weights_path)?;
    let component_digest = if super::is_path(&how.function) {
        let path = Path::new(&how.function);
        tensorlet_host::weights::digest(&std::fs::read(path).map_err(|e| Error::io(path, e))?)
    } else {
        tensorlet_host::weights::digest(tensorlet_host::bundled::find(&how.function)?.component)
    };
    let key = tensorlet_host::weights::digest(
        format!(
            "tensorlet embeddings v1\n{}\n{}\n{}\n{}",
            component_digest,
            weights.digest(),
            set.digest(),
            how.output
        )
        .as_bytes(),
    );
    let cache = root.join(".embeddings").join(format!("{key}.f32"));
    if let Ok(bytes) = std::fs::read(&cache)
        && !bytes.is_empty()
        && bytes.len() % (4 * set.len().max(1)) == 0
    {
        eprintln!(
            "embeddings of {} texts: from the cache {}",
            set.len(),
            cache.display()
        );
        return Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }

    let mut order: Vec<usize> = (0..set.len()).collect();
    order.sort_by_key(|&i| set.texts[i].len());
    let sorted: Vec<Vec<u8>> = order.iter().map(|&i| set.texts[i].clone()).collect();
    eprintln!(
        "embedding {} texts with `{}` ({} at a time)",
        set.len(),
        how.function,
        jobs.max(1)
    );
    let started = Instant::now();
    let (rows, width) = run_rows(
        &function,
        &weights,
        "text",
        &how.output,
        &Examples::Texts(&sorted),
        TEXT_BATCH,
        jobs.max(1),
        "embedding",
    )?;
    let mut features = vec![0.0f32; rows.len()];
    for (k, &i) in order.iter().enumerate() {
        features[i * width..(i + 1) * width].copy_from_slice(&rows[k * width..(k + 1) * width]);
    }
    eprintln!(
        "embedded {} texts in {:.1} s ({width} values each)",
        set.len(),
        started.elapsed().as_secs_f64()
    );
    let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    let written = cache
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            let tmp = cache.with_extension(format!("tmp-{}", std::process::id()));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &cache)
        });
    if let Err(e) = written {
        eprintln!("(embeddings not cached in {}: {e})", cache.display());
    }
    Ok(features)
}

/// Sets `stop` on the first Ctrl-C (SIGINT); a second one ends the process as usual.
fn watch_ctrl_c(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping after the current batch (Ctrl-C again to abort)");
                stop.store(true, Ordering::SeqCst);
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            }
        });
    });
}

/// Progress on stderr: a bar redrawn in place on a terminal, one line per epoch otherwise;
/// a JSON line per epoch in the log.
struct Progress {
    stop: Arc<AtomicBool>,
    tty: bool,
    log: Option<std::fs::File>,
    last_draw: Option<Instant>,
}

impl Progress {
    fn new(stop: Arc<AtomicBool>, log: Option<&Path>) -> Result<Progress> {
        let log = match log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?,
            ),
            None => None,
        };
        Ok(Progress {
            stop,
            tty: std::io::stderr().is_terminal(),
            log,
            last_draw: None,
        })
    }

    fn finish(&mut self) {
        if self.tty && self.last_draw.is_some() {
            eprintln!();
        }
    }
}

impl Observer for Progress {
    fn batch(&mut self, p: &BatchProgress) {
        if !self.tty {
            return;
        }
        let now = Instant::now();
        if p.batch != p.batches
            && self
                .last_draw
                .is_some_and(|t| now.duration_since(t).as_millis() < 100)
        {
            return;
        }
        self.last_draw = Some(now);
        let secs = p.elapsed.as_secs_f64().max(1e-9);
        let eta = secs / p.batch as f64 * (p.batches - p.batch) as f64;
        let width = 30;
        let filled = width * p.batch / p.batches.max(1);
        eprint!(
            "\repoch {}/{} [{}{}] {}/{} {:.0} ex/s loss {:.4} ETA {:.0}s   ",
            p.epoch,
            p.epochs,
            "=".repeat(filled),
            " ".repeat(width - filled),
            p.batch,
            p.batches,
            p.examples as f64 / secs,
            p.loss,
            eta
        );
        let _ = std::io::stderr().flush();
    }

    fn epoch(&mut self, s: &EpochSummary) {
        if self.tty {
            eprintln!();
            self.last_draw = None;
        }
        let pct = |v: Option<f64>| v.map_or(String::new(), |a| format!(" {:.2}%", a * 100.0));
        eprintln!(
            "epoch {}: train loss {:.4}{} | valid loss {}{} | {:.1}s, {:.0} ex/s, lr {:.2e}",
            s.epoch,
            s.train_loss,
            pct(s.train_accuracy),
            s.valid_loss.map_or("-".to_owned(), |l| format!("{l:.4}")),
            pct(s.valid_accuracy),
            s.seconds,
            s.examples_per_second,
            s.lr
        );
        if let Some(log) = &mut self.log
            && let Ok(line) = serde_json::to_string(s)
        {
            let _ = writeln!(log, "{line}");
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
