//! [`ThreadPool`]: the long-lived worker threads that large ops split their work over, made
//! once by the embedder and shared (through an `Arc`) by every [`Kernels`](crate::Kernels)
//! and every concurrent caller, so that no op spawns a thread. A job borrows the caller's
//! stack: [`ThreadPool::run_scoped`] returns only when every thread that ran it is done.
//! std only (a `Mutex`, two `Condvar`s, atomics that idle workers and waiting callers spin
//! on for [`SPIN`] before they sleep); a caller that finds every worker busy does all of its
//! work itself rather than wait.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an idle worker, and a caller waiting for its workers, spin before they sleep.
/// Waking a sleeping thread costs tens of microseconds (60–110 µs for an empty two-thread
/// job on a 2-vCPU VM, measured), more than a split op of a sentence-sized product saves;
/// ops come back to back within a request, so a worker that spins a little is there for
/// the next one.
const SPIN: Duration = Duration::from_micros(200);

/// Spins (with the CPU's spin-loop hint) until `done()` or [`SPIN`] has passed; returns
/// whether `done()` became true.
fn spin_until(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return done();
        }
    }
}

/// A fixed set of worker threads that run scoped jobs beside the calling thread.
///
/// `ThreadPool::new(n)` starts `n - 1` workers named `tensorlet-kernel-1` …; the thread
/// that calls [`ThreadPool::run_scoped`] is always one of the `n`. Any number of threads may
/// use one pool at once (it is `Send + Sync`; share it in an `Arc`): each call takes only the
/// workers idle at that moment, and one that finds none runs its work alone, so a caller never
/// waits for another caller's job. Dropping the pool stops and joins its workers.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tensorlet_kernels::{Kernels, ThreadPool};
///
/// let pool = Arc::new(ThreadPool::new(3)?);
/// assert_eq!(pool.threads(), 3);
///
/// // A job borrows the stack: each thread that runs it takes work from a shared queue.
/// let queue = Mutex::new((1..=100u64).collect::<Vec<_>>());
/// let sum = Mutex::new(0);
/// pool.run_scoped(3, &|| {
///     while let Some(v) = queue.lock().unwrap().pop() {
///         *sum.lock().unwrap() += v;
///     }
/// });
/// assert_eq!(sum.into_inner().unwrap(), 5050);
///
/// // Kernels split their large dense products over it.
/// let kernels = Kernels::detect().with_pool(pool.clone());
/// # #[cfg(not(target_arch = "wasm32"))]
/// assert_eq!(kernels.threads(), 3);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

// The pool is shared by concurrent requests: it must stay `Send + Sync`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ThreadPool>();
};

/// What the pool's threads share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool shuts down.
    work: Condvar,
    /// `state.queue.len()`, kept up to date under the lock, for spinning workers to watch.
    queued: AtomicUsize,
}

/// The pool's bookkeeping. Invariant: `idle = workers - queue.len() - (workers running a
/// job)`, so every queued entry has a worker that is not running anything and will take it.
struct State {
    /// One entry per worker reserved for a job, not yet taken.
    queue: VecDeque<Arc<Job>>,
    /// Workers neither reserved nor running a job.
    idle: usize,
    /// Set by `Drop`: workers exit once the queue is empty.
    shutdown: bool,
}

/// One [`ThreadPool::run_scoped`] call, shared with the workers that run it.
struct Job {
    /// The caller's closure, its lifetime erased: valid until `progress.pending` is zero
    /// (see the SAFETY comment in `run_scoped`), and a raw pointer, which may dangle after.
    f: *const (dyn Fn() + Sync),
    progress: Mutex<Progress>,
    /// Signalled when `progress.pending` reaches zero.
    done: Condvar,
    /// `progress.pending`, written under that lock after it (and any panic), for the
    /// caller to spin on.
    remaining: AtomicUsize,
}

// SAFETY: `f` points at a `Sync` closure, so calling it from any thread is sound (while it is
// valid, which `run_scoped` guarantees for every call); the rest is a `Mutex` and a `Condvar`.
unsafe impl Send for Job {}
// SAFETY: as for `Send`: `&Job` only gives shared access to a `Sync` closure and to locks.
unsafe impl Sync for Job {}

/// How far the workers of one [`Job`] are.
struct Progress {
    /// Workers reserved for the job that have not yet finished its closure.
    pending: usize,
    /// The first panic a worker caught from the closure.
    panic: Option<Box<dyn Any + Send>>,
}

/// Locks `m`, ignoring poisoning: no user code runs while any of the pool's locks is held.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ThreadPool {
    /// A pool of `threads` threads: the caller of [`ThreadPool::run_scoped`] and
    /// `threads - 1` workers, started now and named `tensorlet-kernel-1` …
    /// `tensorlet-kernel-{threads - 1}`. `0` and `1` start no worker (every job then runs on
    /// its caller alone).
    ///
    /// Errors if the OS refuses to start a worker (the ones already started are stopped and
    /// joined first); on wasm32 without threads this is any `threads > 1`.
    pub fn new(threads: usize) -> std::io::Result<ThreadPool> {
        let count = threads.saturating_sub(1);
        let mut pool = ThreadPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    idle: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                queued: AtomicUsize::new(0),
            }),
            workers: Vec::with_capacity(count),
        };
        for i in 1..=count {
            let shared = pool.shared.clone();
            // On error `pool` is dropped, which stops and joins the workers already running.
            let worker = thread::Builder::new()
                .name(format!("tensorlet-kernel-{i}"))
                .spawn(move || worker(&shared))?;
            pool.workers.push(worker);
            lock(&pool.shared.state).idle += 1;
        }
        Ok(pool)
    }

    /// The threads a job may run on: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f` on the calling thread and once more for each of up to `jobs - 1` workers
    /// that are idle now, and returns when every call has returned; so `f` may borrow from
    /// the caller's stack. The workers' calls usually run at the same time as the caller's,
    /// but a worker that finishes early may make the call meant for a worker still waking
    /// up, and with no idle worker (or `jobs <= 1`) only the caller calls `f`, without waiting
    /// for anything. So `f` should take its work from a shared queue rather than count on
    /// the number of threads.
    ///
    /// If `f` panics on any thread, this waits for the others and then resumes the panic on
    /// the caller (the caller's own panic first); the pool stays usable.
    pub fn run_scoped(&self, jobs: usize, f: &(dyn Fn() + Sync)) {
        let helpers = jobs.saturating_sub(1).min(self.workers.len());
        if helpers == 0 {
            f();
            return;
        }
        // SAFETY: only the trait object's lifetime bound changes (same pointer, same vtable).
        // The pointer is called only while `f` is still borrowed: workers call it between
        // taking an entry from the queue and decrementing `progress.pending`, never after
        // (see `worker`), and this function neither returns nor unwinds until `pending` is
        // zero: the caller's own run of `f` is wrapped in `catch_unwind`, a worker catches a
        // panic of `f` and still decrements `pending`, the wait below cannot panic (the locks
        // ignore poisoning), and only then is any panic resumed. The wait ends, since each
        // queued entry was paid for by reserving an idle worker (`State`'s invariant) and
        // workers leave only once the queue is empty. An `Arc<Job>` may outlive this call, but
        // then only holds the pointer (a raw one, which may dangle) and never calls it.
        let erased: *const (dyn Fn() + Sync + '_) = f;
        let erased: *const (dyn Fn() + Sync) = unsafe { std::mem::transmute(erased) };
        let job = Arc::new(Job {
            f: erased,
            progress: Mutex::new(Progress {
                pending: 0,
                panic: None,
            }),
            done: Condvar::new(),
            remaining: AtomicUsize::new(0),
        });
        let helpers = {
            let mut state = lock(&self.shared.state);
            let helpers = helpers.min(state.idle);
            state.idle -= helpers;
            // Set before any worker can take an entry and decrement it.
            lock(&job.progress).pending = helpers;
            job.remaining.store(helpers, Ordering::Release);
            for _ in 0..helpers {
                state.queue.push_back(job.clone());
            }
            self.shared
                .queued
                .store(state.queue.len(), Ordering::Release);
            helpers
        };
        if helpers > 0 {
            self.shared.work.notify_all();
        }
        let own = panic::catch_unwind(AssertUnwindSafe(f));
        // The workers usually finish within microseconds of the caller: spin before
        // sleeping on `done`. (`remaining` reaches zero only after each worker's last use
        // of `f` and after any panic is recorded; the lock below makes both visible.)
        spin_until(|| job.remaining.load(Ordering::Acquire) == 0);
        let mut progress = lock(&job.progress);
        while progress.pending > 0 {
            progress = job
                .done
                .wait(progress)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let theirs = progress.panic.take();
        drop(progress);
        if let Err(payload) = own {
            panic::resume_unwind(payload);
        }
        if let Some(payload) = theirs {
            panic::resume_unwind(payload);
        }
    }
}

/// A worker's life: take a queued entry, run its closure, mark itself idle and report the
/// job's progress, until the pool shuts down.
fn worker(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        let Some(job) = state.queue.pop_front() else {
            if state.shutdown {
                return;
            }
            // Spin a while before sleeping (see `SPIN`), then look again under the lock: a
            // job queued in between is seen there, and one queued later notifies `work`.
            drop(state);
            spin_until(|| shared.queued.load(Ordering::Acquire) > 0);
            state = lock(&shared.state);
            if state.queue.is_empty() && !state.shutdown {
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            continue;
        };
        shared.queued.store(state.queue.len(), Ordering::Release);
        drop(state);
        // SAFETY: the caller of `run_scoped` that queued `job` is blocked until this worker
        // decrements `pending` below, so the closure `job.f` points at is still borrowed.
        let f = unsafe { &*job.f };
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        // Idle again before the caller learns the job is done, so that back-to-back calls
        // from one thread find the whole pool free.
        lock(&shared.state).idle += 1;
        {
            let mut progress = lock(&job.progress);
            if let Err(payload) = result {
                progress.panic.get_or_insert(payload);
            }
            progress.pending -= 1;
            job.remaining.store(progress.pending, Ordering::Release);
            if progress.pending == 0 {
                job.done.notify_one();
            }
        }
        // `job.f` may dangle from here on: it is not touched again (see `run_scoped`).
        drop(job);
        state = lock(&shared.state);
    }
}

impl Drop for ThreadPool {
    /// Stops the workers and joins them. No job is in flight (`run_scoped` borrows the pool).
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        let me = thread::current().id();
        for worker in self.workers.drain(..) {
            // A worker cannot join itself (if it dropped the last handle to its own pool).
            if worker.thread().id() != me {
                // Workers catch the closures' panics, so a join error cannot happen.
                let _ = worker.join();
            }
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish()
    }
}
