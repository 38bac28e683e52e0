//! Dynamic batching of one model version (Triton's `dynamic_batching`): requests whose
//! inputs agree on everything but the batch (first) dimension, arriving within the
//! configured delay, are concatenated along that dimension, run as one call of the function,
//! and the outputs split back by rows.
//!
//! The first request to find no batch forming leads one: it waits until the batch holds the
//! preferred number of rows (or `max_batch_size`) or its own delay has passed, takes the
//! compatible requests queued so far in arrival order (up to `max_batch_size` rows), and
//! runs them; the others wait for their share. A request that cannot be batched (no batch
//! dimension, more rows than the limit) runs alone at once. If the batched call fails, or an
//! output does not have one row per input row, each request of the batch runs alone, so a
//! request's answer (or error) never depends on its neighbours'. With the native kernels a
//! batched answer equals the unbatched one bit for bit: every row of a dense or convolution
//! product is one multiply-add chain in the same order whatever the batch (see
//! `tensorlet-kernels`' `dense.rs`). The wasm kernels component's GEMM still groups rows
//! (4-row tiles interleave two steps of `k`), so there batched answers equal unbatched ones
//! to rounding only.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::registry::ModelSettings;
use crate::tensor::{Tensor, TensorData};

/// Named tensors, as a function takes and returns them.
pub(crate) type Tensors = Vec<(String, Tensor)>;

/// What a batched request got: its outputs, how long it waited for its batch, and how long
/// the call that served it spent queued for a slot and computing.
pub(crate) struct Served {
    pub outputs: Result<Tensors>,
    pub batch_wait: Duration,
    pub queue: Duration,
    pub compute: Duration,
    /// Whether this request's thread made the call (counts one execution).
    pub executed: bool,
}

/// A call of the function on (batched) inputs: its outputs, admission-queue and compute
/// times.
pub(crate) type Call<'a> = dyn Fn(Tensors) -> (Result<Tensors>, Duration, Duration) + 'a;

/// The dynamic batcher of one model version.
#[derive(Debug)]
pub(crate) struct Batcher {
    max_rows: usize,
    target_rows: usize,
    delay: Duration,
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Arc<Job>>,
    /// Whether some request is gathering a batch now.
    leading: bool,
}

/// One request in the batcher.
#[derive(Debug)]
struct Job {
    key: Vec<(String, &'static str, Vec<usize>)>,
    rows: usize,
    inputs: Mutex<Option<Tensors>>,
    arrived: Instant,
    done: OnceLock<Done>,
}

#[derive(Debug)]
struct Done {
    outputs: Result<Tensors>,
    started: Instant,
    queue: Duration,
    compute: Duration,
}

impl Batcher {
    /// The batcher `settings` ask for, if they enable dynamic batching with a batch of at
    /// least 2.
    pub(crate) fn new(settings: &ModelSettings) -> Option<Self> {
        let max_rows = settings.max_batch_size as usize;
        if !settings.dynamic_batching || max_rows < 2 {
            return None;
        }
        let target_rows = settings
            .preferred_batch_sizes
            .iter()
            .map(|&s| s as usize)
            .filter(|&s| s >= 1 && s <= max_rows)
            .max()
            .unwrap_or(max_rows);
        Some(Batcher {
            max_rows,
            target_rows,
            delay: settings.max_queue_delay,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        })
    }

    /// Requests waiting for a batch now.
    pub(crate) fn queued(&self) -> usize {
        self.lock().waiting.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `inputs` through `call`, batched with other requests when it can be.
    pub(crate) fn run(&self, inputs: Tensors, call: &Call<'_>) -> Served {
        let arrived = Instant::now();
        let Some((key, rows)) = batch_key(&inputs).filter(|(_, rows)| *rows <= self.max_rows)
        else {
            let (outputs, queue, compute) = call(inputs);
            return Served {
                outputs,
                batch_wait: Duration::ZERO,
                queue,
                compute,
                executed: true,
            };
        };
        let job = Arc::new(Job {
            key,
            rows,
            inputs: Mutex::new(Some(inputs)),
            arrived,
            done: OnceLock::new(),
        });
        let mut queue = self.lock();
        queue.waiting.push_back(job.clone());
        self.changed.notify_all();
        loop {
            if let Some(done) = job.done.get() {
                drop(queue);
                return served(&job, done, false);
            }
            if !queue.leading && queue.waiting.iter().any(|j| Arc::ptr_eq(j, &job)) {
                queue.leading = true;
                let batch = self.gather(queue, &job);
                self.execute(&batch, call);
                let done = job
                    .done
                    .get()
                    .expect("the leader's own job is in its batch");
                // The leader made the call that served its batch.
                return served(&job, done, true);
            }
            queue = self.changed.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// As the leader of `job`: waits for the batch to fill or `job`'s delay to pass, then
    /// takes `job` and the compatible requests after it (arrival order, up to the row limit)
    /// out of the queue and hands leadership on.
    fn gather(&self, mut queue: std::sync::MutexGuard<'_, Queue>, job: &Arc<Job>) -> Vec<Arc<Job>> {
        let deadline = job.arrived + self.delay;
        loop {
            let rows: usize = queue
                .waiting
                .iter()
                .filter(|j| j.key == job.key)
                .map(|j| j.rows)
                .sum();
            let now = Instant::now();
            if rows >= self.target_rows || now >= deadline {
                break;
            }
            queue = self
                .changed
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut batch = Vec::new();
        let mut rows = 0;
        let mut rest = VecDeque::with_capacity(queue.waiting.len());
        // The leader first, then the others in arrival order.
        if let Some(i) = queue.waiting.iter().position(|j| Arc::ptr_eq(j, job))
            && let Some(me) = queue.waiting.remove(i)
        {
            rows += me.rows;
            batch.push(me);
        }
        while let Some(j) = queue.waiting.pop_front() {
            if j.key == job.key && rows + j.rows <= self.max_rows {
                rows += j.rows;
                batch.push(j);
            } else {
                rest.push_back(j);
            }
        }
        queue.waiting = rest;
        queue.leading = false;
        self.changed.notify_all();
        batch
    }

    /// Runs `batch` as one call (or, if that fails or cannot be split, each job alone) and
    /// publishes every job's result.
    fn execute(&self, batch: &[Arc<Job>], call: &Call<'_>) {
        let started = Instant::now();
        let inputs: Vec<Tensors> = batch
            .iter()
            .map(|j| {
                j.inputs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_default()
            })
            .collect();
        let rows: Vec<usize> = batch.iter().map(|j| j.rows).collect();
        let joined = if batch.len() == 1 {
            None
        } else {
            concat(&inputs)
        };
        let shares = joined.and_then(|joined| {
            let (outputs, queue, compute) = call(joined);
            let shares = split(outputs.ok()?, &rows)?;
            Some(shares.into_iter().map(move |s| (Ok(s), queue, compute)))
        });
        let results: Vec<(Result<Tensors>, Duration, Duration)> = match shares {
            Some(shares) => shares.collect(),
            // Each alone: a batch of one, a failed batch, or outputs without batch rows.
            None => inputs.into_iter().map(call).collect(),
        };
        for (job, (outputs, queue, compute)) in batch.iter().zip(results) {
            let _ = job.done.set(Done {
                outputs,
                started,
                queue,
                compute,
            });
        }
        let _guard = self.lock();
        self.changed.notify_all();
    }
}

fn served(job: &Job, done: &Done, executed: bool) -> Served {
    Served {
        outputs: done.outputs.clone(),
        batch_wait: done.started.saturating_duration_since(job.arrived),
        queue: done.queue,
        compute: done.compute,
        executed,
    }
}

/// What requests must share to be batched — input names, element types and every
/// dimension but the first — and the rows (first dimension, the same for every input).
#[allow(clippy::type_complexity)]
fn batch_key(inputs: &Tensors) -> Option<(Vec<(String, &'static str, Vec<usize>)>, usize)> {
    let rows = inputs.first()?.1.shape().first().copied()?;
    if rows == 0 {
        return None;
    }
    let mut key = Vec::with_capacity(inputs.len());
    for (name, t) in inputs {
        let (&first, rest) = t.shape().split_first()?;
        if first != rows {
            return None;
        }
        let kind = match t.data() {
            TensorData::F32(_) => "f32",
            TensorData::U8(_) => "u8",
            TensorData::Bytes(_) => "bytes",
        };
        key.push((name.clone(), kind, rest.to_vec()));
    }
    Some((key, rows))
}

/// The jobs' inputs concatenated along the first dimension (their keys are equal).
fn concat(jobs: &[Tensors]) -> Option<Tensors> {
    let first = jobs.first()?;
    first
        .iter()
        .enumerate()
        .map(|(i, (name, t))| {
            let rows: usize = jobs.iter().map(|j| j[i].1.shape()[0]).sum();
            let mut shape = t.shape().to_vec();
            shape[0] = rows;
            let tensor = match t.data() {
                TensorData::F32(_) => {
                    let mut data = Vec::new();
                    for j in jobs {
                        data.extend_from_slice(j[i].1.f32s(name).ok()?);
                    }
                    Tensor::from_f32(shape, data).ok()?
                }
                TensorData::U8(_) => {
                    let mut data = Vec::new();
                    for j in jobs {
                        let TensorData::U8(d) = j[i].1.data() else {
                            return None;
                        };
                        data.extend_from_slice(d);
                    }
                    Tensor::from_u8(shape, data).ok()?
                }
                TensorData::Bytes(_) => {
                    let mut data = Vec::new();
                    for j in jobs {
                        data.extend_from_slice(j[i].1.byte_strings(name).ok()?);
                    }
                    Tensor::from_bytes(shape, data).ok()?
                }
            };
            Some((name.clone(), tensor))
        })
        .collect()
}

/// Batched `outputs` split back into each job's rows (`rows` per job); `None` if an output
/// does not have one row per input row.
fn split(outputs: Tensors, rows: &[usize]) -> Option<Vec<Tensors>> {
    let total: usize = rows.iter().sum();
    let mut shares: Vec<Tensors> = rows.iter().map(|_| Vec::new()).collect();
    for (name, t) in outputs {
        let (&first, rest) = t.shape().split_first()?;
        if first != total {
            return None;
        }
        let per_row: usize = rest.iter().product();
        let mut offset = 0;
        for (share, &r) in shares.iter_mut().zip(rows) {
            let mut shape = t.shape().to_vec();
            shape[0] = r;
            let range = offset * per_row..(offset + r) * per_row;
            let part = match t.data() {
                TensorData::F32(d) => Tensor::from_f32(shape, d.get(range)?.to_vec()).ok()?,
                TensorData::U8(d) => Tensor::from_u8(shape, d.get(range)?.to_vec()).ok()?,
                TensorData::Bytes(d) => Tensor::from_bytes(shape, d.get(range)?.to_vec()).ok()?,
            };
            share.push((name.clone(), part));
            offset += r;
        }
    }
    Some(shares)
}
