//! The training loop: seeded shuffles, batch-parallel forward and backward passes over the
//! worker threads, the optimizer step, per-epoch validation, progress reports to an
//! [`Observer`], and stopping after the current batch when asked (Ctrl-C in the CLI).
//!
//! A batch is split into one contiguous chunk per worker. Each worker gathers its chunk's
//! examples, runs them through its own [`Tape`] with single-threaded kernels and writes its
//! own gradients, with the loss gradient scaled by `chunk / batch` so that their sum is the
//! gradient of the batch mean; the main thread sums them. The optimizer step and the next
//! step's weight packing each run as two halves on two of the pool's threads (`join`),
//! since nothing else runs meanwhile. The result does not
//! depend on the thread count beyond float summation order (dropout masks aside, which are
//! drawn per chunk). The chunks run on the trainer's [`ThreadPool`], started once: threads
//! that live for the whole run keep the kernels' per-thread scratch buffers warm, where a
//! thread spawned per batch allocated, zeroed and page-faulted all of them again each step.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tensorlet_kernels::{Kernels, ThreadPool};

use crate::data::{Dataset, Rng, Targets};
use crate::net::{Grads, Network, Tape, Task, lock};
use crate::optim::Optimizer;
use crate::spec::{Loss, Spec};

/// Run-time options; [`Options::from_spec`] takes the spec's values, the CLI overrides them.
#[derive(Clone, Debug)]
pub struct Options {
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch: usize,
    /// Worker threads (a batch is split over them).
    pub threads: usize,
    /// Seeds shuffles and dropout (the initialisation is seeded by the caller).
    pub seed: u64,
    /// Stop after this many optimizer steps in total.
    pub steps: Option<usize>,
    /// Shuffle the training set each epoch (else take it in order).
    pub shuffle: bool,
}

impl Options {
    /// The spec's epochs, batch and seed; all available cores; shuffling on.
    pub fn from_spec(spec: &Spec) -> Options {
        Options {
            epochs: spec.training.epochs,
            batch: spec.training.batch,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: spec.training.seed,
            steps: None,
            shuffle: true,
        }
    }
}

/// Progress within an epoch, reported after every batch.
#[derive(Clone, Debug)]
pub struct BatchProgress {
    /// 1-based epoch.
    pub epoch: usize,
    /// Epochs in this run.
    pub epochs: usize,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches in this epoch.
    pub batches: usize,
    /// Examples done in this epoch.
    pub examples: usize,
    /// Mean training loss so far in this epoch.
    pub loss: f64,
    /// Time since the epoch started.
    pub elapsed: Duration,
}

/// One epoch's results, reported when it ends.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EpochSummary {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate at the epoch's last step.
    pub lr: f32,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy (classification), counted during the epoch.
    pub train_accuracy: Option<f64>,
    /// Validation loss after the epoch.
    pub valid_loss: Option<f64>,
    /// Validation accuracy (classification).
    pub valid_accuracy: Option<f64>,
    /// Wall-clock seconds of the epoch's training (validation excluded).
    pub seconds: f64,
    /// Training examples per second.
    pub examples_per_second: f64,
}

/// Receives progress; the default methods ignore it.
pub trait Observer {
    /// After every batch.
    fn batch(&mut self, _progress: &BatchProgress) {}
    /// After every epoch.
    fn epoch(&mut self, _summary: &EpochSummary) {}
    /// Polled after every batch: true stops training there.
    fn stop_requested(&self) -> bool {
        false
    }
}

/// An [`Observer`] that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}

/// Why the data cannot be trained on with this spec.
#[derive(Debug)]
pub struct TrainError(pub String);

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrainError {}

/// Loss and accuracy of the network on a data set.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Evaluation {
    /// Mean loss.
    pub loss: f64,
    /// Accuracy (classification).
    pub accuracy: Option<f64>,
    /// The network's outputs, `len × outputs` (softmax probabilities when the network ends
    /// in one).
    #[serde(skip)]
    pub outputs: Vec<f32>,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Every completed epoch.
    pub history: Vec<EpochSummary>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Whether the observer stopped the run early.
    pub stopped: bool,
}

/// Checks that `data` fits `net` and `loss`: the example shape and the targets.
pub fn check_data(spec: &Spec, net: &Network, data: &Dataset) -> Result<(), TrainError> {
    if data.example_shape != spec.input {
        return Err(TrainError(format!(
            "the data's examples ({}) have shape {:?}, the spec's `input` is {:?}",
            data.source, data.example_shape, spec.input
        )));
    }
    let outputs = net.output_len();
    match (spec.loss, &data.targets) {
        (Loss::CrossEntropy, Targets::Classes { names, .. }) if names.len() == outputs => Ok(()),
        (Loss::CrossEntropy, Targets::Classes { names, .. }) => Err(TrainError(format!(
            "the data has {} classes, the network has {outputs} outputs",
            names.len()
        ))),
        (Loss::BinaryCrossEntropy, Targets::Classes { names, .. }) if names.len() == 2 => Ok(()),
        (Loss::BinaryCrossEntropy, Targets::Classes { names, .. }) => Err(TrainError(format!(
            "binary_cross_entropy needs 2 classes, the data has {}",
            names.len()
        ))),
        (Loss::Mse, Targets::Values { width, .. }) if *width == outputs => Ok(()),
        (Loss::Mse, Targets::Values { width, .. }) => Err(TrainError(format!(
            "the data has {width} target values per example, the network has {outputs} outputs"
        ))),
        (Loss::Mse, Targets::Classes { .. }) => Err(TrainError(
            "the mse loss needs continuous targets; this data has class labels".into(),
        )),
        (_, Targets::Values { .. }) => Err(TrainError(
            "cross-entropy losses need class labels; this data has continuous targets".into(),
        )),
    }
}

/// Per-chunk working memory: worker `t` always takes the batch's `t`-th chunk, whichever
/// pool thread runs it, so its dropout RNG sees the same examples in every run.
struct Worker {
    tape: Tape,
    grads: Grads,
    d_out: Vec<f32>,
    rng: Rng,
    /// The current pass's examples, gathered by this worker from the data set (in
    /// parallel, and into the cache of the core that then reads them).
    x: Vec<f32>,
}

/// A network, its optimizer and the kernels, ready to train.
pub struct Trainer {
    /// The network being trained.
    pub net: Network,
    /// Its optimizer.
    pub optimizer: Optimizer,
    spec: Spec,
    kernels: Kernels,
    workers: Vec<Mutex<Worker>>,
    pool: ThreadPool,
}

impl Trainer {
    /// A trainer for `net` with a fresh optimizer from the spec, on `threads` workers (the
    /// calling thread and `threads - 1` pool threads, started now).
    ///
    /// Errors if the OS refuses to start a thread.
    pub fn new(spec: &Spec, net: Network, threads: usize) -> Result<Trainer, TrainError> {
        let threads = threads.max(1);
        let optimizer = Optimizer::new(spec.optimizer, &net.params);
        let workers = (0..threads)
            .map(|i| {
                Mutex::new(Worker {
                    tape: Tape::default(),
                    grads: net.zero_grads(),
                    d_out: Vec::new(),
                    rng: Rng::new(i as u64),
                    x: Vec::new(),
                })
            })
            .collect();
        let pool = ThreadPool::new(threads)
            .map_err(|e| TrainError(format!("cannot start {threads} training threads: {e}")))?;
        Ok(Trainer {
            net,
            optimizer,
            spec: spec.clone(),
            kernels: Kernels::detect(),
            workers,
            pool,
        })
    }

    /// Runs `job(t, worker t)` for every `t < shares` on the pool (each share once, on
    /// whichever thread takes it) and returns the results in share order.
    fn run_shares<T: Send>(
        &self,
        shares: usize,
        job: impl Fn(usize, &mut Worker) -> T + Sync,
    ) -> Vec<T> {
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<T>>> = (0..shares).map(|_| Mutex::new(None)).collect();
        self.pool.run_scoped(shares, &|| {
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= shares {
                    break;
                }
                let mut worker = lock(&self.workers[t]);
                let r = job(t, &mut worker);
                *lock(&results[t]) = Some(r);
            }
        });
        results
            .into_iter()
            .map(|r| {
                r.into_inner()
                    .unwrap_or_else(PoisonError::into_inner)
                    .expect("run_scoped returns once every share has run")
            })
            .collect()
    }

    /// Trains on `train` with `options`, validating on `valid` after each epoch.
    pub fn fit(
        &mut self,
        train: &Dataset,
        valid: Option<&Dataset>,
        options: &Options,
        observer: &mut dyn Observer,
    ) -> Result<Outcome, TrainError> {
        check_data(&self.spec, &self.net, train)?;
        if let Some(v) = valid {
            check_data(&self.spec, &self.net, v)?;
        }
        if train.is_empty() {
            return Err(TrainError(format!(
                "the training set {} is empty",
                train.source
            )));
        }
        let batch = options.batch.max(1);
        let batches = train.len().div_ceil(batch);
        let total_steps = options
            .steps
            .unwrap_or(batches * options.epochs)
            .min(batches * options.epochs.max(1));
        let base_lr = self.spec.optimizer.lr();
        let mut history = Vec::new();
        let mut steps_done = 0usize;
        let mut stopped = false;
        let mut order: Vec<usize> = (0..train.len()).collect();
        for epoch in 0..options.epochs {
            if steps_done >= total_steps || stopped {
                break;
            }
            if options.shuffle {
                Rng::new(options.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    .shuffle(&mut order);
            }
            for (w, worker) in self.workers.iter_mut().enumerate() {
                let worker = worker.get_mut().unwrap_or_else(PoisonError::into_inner);
                worker.rng =
                    Rng::new(options.seed.wrapping_add(1 + w as u64) ^ ((epoch as u64) << 32));
            }
            let start = Instant::now();
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
            let mut lr = base_lr;
            for (b, idx) in order.chunks(batch).enumerate() {
                if steps_done >= total_steps {
                    break;
                }
                lr = self
                    .spec
                    .schedule
                    .lr(base_lr, epoch, steps_done, total_steps);
                let (loss, right) = self.step(train, idx)?;
                let grads = &self.workers[0]
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .grads;
                self.optimizer
                    .update_joined(&mut self.net.params, grads, lr, &|a, b| {
                        join(&self.pool, a, b)
                    });
                steps_done += 1;
                loss_sum += loss * idx.len() as f64;
                correct += right;
                seen += idx.len();
                observer.batch(&BatchProgress {
                    epoch: epoch + 1,
                    epochs: options.epochs,
                    batch: b + 1,
                    batches,
                    examples: seen,
                    loss: loss_sum / seen as f64,
                    elapsed: start.elapsed(),
                });
                if observer.stop_requested() {
                    stopped = true;
                    break;
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            let classify = matches!(train.targets, Targets::Classes { .. });
            let v = match valid {
                Some(v) if !stopped => Some(self.evaluate(v)?),
                _ => None,
            };
            let summary = EpochSummary {
                epoch: epoch + 1,
                lr,
                train_loss: loss_sum / seen.max(1) as f64,
                train_accuracy: classify.then(|| correct as f64 / seen.max(1) as f64),
                valid_loss: v.as_ref().map(|v| v.loss),
                valid_accuracy: v.as_ref().and_then(|v| v.accuracy),
                seconds,
                examples_per_second: seen as f64 / seconds.max(1e-9),
            };
            observer.epoch(&summary);
            history.push(summary);
        }
        Ok(Outcome {
            history,
            steps: self.optimizer.steps(),
            stopped,
        })
    }

    /// Forward and backward for one batch over the workers; leaves the summed gradient in
    /// worker 0. Returns the batch's mean loss and its number of correct predictions.
    fn step(&mut self, data: &Dataset, idx: &[usize]) -> Result<(f64, usize), TrainError> {
        let rows = idx.len();
        let threads = self.workers.len().min(rows);
        let chunk = rows.div_ceil(threads);
        let net = &self.net;
        let k = &self.kernels;
        let loss = self.spec.loss;
        let per_pass = net.rows_per_pass();
        let packed = &net.pack_joined(k, true, &|a, b| join(&self.pool, a, b));
        let results = self.run_shares(threads, |t, worker| {
            let lo = t * chunk;
            let hi = (lo + chunk).min(rows);
            let (mut loss_sum, mut right) = (0.0, 0);
            // Passes of equal size, each at most `per_pass` examples.
            let passes = (hi - lo).div_ceil(per_pass).max(1);
            let per_pass = (hi - lo).div_ceil(passes).max(1);
            for (p, a) in (lo..hi).step_by(per_pass).enumerate() {
                let b = (a + per_pass).min(hi);
                let n = b - a;
                gather(data, &idx[a..b], &mut worker.x);
                let out = net.forward(
                    k,
                    packed,
                    &worker.x,
                    n,
                    true,
                    Some(&mut worker.rng),
                    &mut worker.tape,
                );
                worker.d_out.clear();
                worker.d_out.resize(out.len(), 0.0);
                let (l, r) = loss_and_grad(k, loss, data, &idx[a..b], out, &mut worker.d_out)?;
                let scale = n as f32 / rows as f32;
                worker.d_out.iter_mut().for_each(|g| *g *= scale);
                net.backward(
                    k,
                    packed,
                    &mut worker.tape,
                    &worker.d_out,
                    &mut worker.grads,
                    p > 0,
                );
                loss_sum += l * n as f64 / rows as f64;
                right += r;
            }
            Ok::<_, TrainError>((loss_sum, right))
        });
        let (mut loss_sum, mut correct) = (0.0, 0);
        for r in results {
            let (l, c) = r?;
            loss_sum += l;
            correct += c;
        }
        let (head, rest) = self.workers.split_at_mut(1);
        let head = head[0].get_mut().unwrap_or_else(PoisonError::into_inner);
        for w in rest.iter_mut().take(threads - 1) {
            let w = w.get_mut().unwrap_or_else(PoisonError::into_inner);
            add_grads(&mut head.grads, &w.grads);
        }
        Ok((loss_sum, correct))
    }

    /// Loss, accuracy and outputs of the network on `data` (no dropout), batch-parallel.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation, TrainError> {
        check_data(&self.spec, &self.net, data)?;
        let n = data.len();
        let out_len = self.net.output_len();
        let mut outputs = vec![0.0f32; n * out_len];
        let threads = self.workers.len().min(n.max(1));
        let per = n.div_ceil(threads.max(1)).max(1);
        let net = &self.net;
        let k = &self.kernels;
        let loss = self.spec.loss;
        let softmax = net.ends_in_softmax();
        let packed = &net.pack(k, false);
        let per_pass = net.rows_per_pass();
        let chunks: Vec<Mutex<&mut [f32]>> =
            outputs.chunks_mut(per * out_len).map(Mutex::new).collect();
        let results = self.run_shares(chunks.len(), |t, worker| {
            let mut out_chunk = lock(&chunks[t]);
            let (lo, hi) = (t * per, ((t + 1) * per).min(n));
            let (mut loss_sum, mut right) = (0.0, 0);
            let indices: Vec<usize> = (lo..hi).collect();
            for (c, idx) in indices.chunks(per_pass).enumerate() {
                gather(data, idx, &mut worker.x);
                let logits = net.forward(
                    k,
                    packed,
                    &worker.x,
                    idx.len(),
                    true,
                    None,
                    &mut worker.tape,
                );
                worker.d_out.clear();
                worker.d_out.resize(logits.len(), 0.0);
                let (l, r) = loss_and_grad(k, loss, data, idx, logits, &mut worker.d_out)?;
                loss_sum += l * idx.len() as f64;
                right += r;
                let dst = &mut out_chunk[c * per_pass * out_len..][..logits.len()];
                dst.copy_from_slice(logits);
                if softmax {
                    k.softmax(dst, out_len)
                        .map_err(|e| TrainError(e.to_string()))?;
                }
            }
            Ok::<_, TrainError>((loss_sum, right))
        });
        drop(chunks);
        let (mut loss_sum, mut right) = (0.0, 0);
        for r in results {
            let (l, c) = r?;
            loss_sum += l;
            right += c;
        }
        Ok(Evaluation {
            loss: loss_sum / n.max(1) as f64,
            accuracy: matches!(data.targets, Targets::Classes { .. })
                .then(|| right as f64 / n.max(1) as f64),
            outputs,
        })
    }
}

/// Copies the examples at `idx` into `x`, contiguous.
fn gather(data: &Dataset, idx: &[usize], x: &mut Vec<f32>) {
    x.clear();
    for &i in idx {
        x.extend_from_slice(data.example(i));
    }
}

/// Runs `a` and `b`, on two of `pool`'s threads when it has them.
fn join(pool: &ThreadPool, a: Task<'_>, b: Task<'_>) {
    let next = AtomicUsize::new(0);
    pool.run_scoped(2, &|| {
        loop {
            match next.fetch_add(1, Ordering::Relaxed) {
                0 => a(),
                1 => b(),
                _ => break,
            }
        }
    });
}

/// `acc += g`, parameter by parameter.
fn add_grads(acc: &mut Grads, g: &Grads) {
    for (acc, g) in acc.iter_mut().zip(g) {
        crate::net::add(acc, g);
    }
}

/// The mean loss of `out` (logits or predictions for the examples `idx`) against their
/// targets, its gradient in `grad`, and the number of correct class predictions.
fn loss_and_grad(
    k: &Kernels,
    loss: Loss,
    data: &Dataset,
    idx: &[usize],
    out: &[f32],
    grad: &mut [f32],
) -> Result<(f64, usize), TrainError> {
    let err = |e: tensorlet_kernels::KernelError| TrainError(e.to_string());
    let rows = idx.len();
    let width = out.len() / rows.max(1);
    match (&data.targets, loss) {
        (Targets::Classes { labels, .. }, Loss::CrossEntropy) => {
            let y: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
            let l = k.softmax_cross_entropy(out, &y, width, grad).map_err(err)?;
            let right = out
                .chunks(width)
                .zip(&y)
                .filter(|(row, label)| argmax(row) == **label as usize)
                .count();
            Ok((l as f64, right))
        }
        (Targets::Classes { labels, .. }, Loss::BinaryCrossEntropy) => {
            let y: Vec<f32> = idx.iter().map(|&i| labels[i] as f32).collect();
            let l = k.bce_with_logits(out, &y, grad).map_err(err)?;
            let right = out
                .iter()
                .zip(&y)
                .filter(|(z, t)| (**z > 0.0) == (**t > 0.5))
                .count();
            Ok((l as f64, right))
        }
        (
            Targets::Values {
                values, width: w, ..
            },
            Loss::Mse,
        ) => {
            let mut t = Vec::with_capacity(rows * w);
            for &i in idx {
                t.extend_from_slice(&values[i * w..(i + 1) * w]);
            }
            let l = k.mse(out, &t, grad).map_err(err)?;
            Ok((l as f64, 0))
        }
        _ => Err(TrainError(
            "the loss does not match the data's targets (checked earlier)".into(),
        )),
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
