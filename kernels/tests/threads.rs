//! [`ThreadPool`] through its public API: a job runs once on each thread it asks for (the
//! caller always one of them), concurrent callers share the workers, nested jobs do not
//! deadlock, a panic reaches the caller only after every thread is done, and dropping the
//! pool joins its workers.
//!
//! These are integration tests rather than unit tests so that `cargo test` does not compile
//! the whole kernels crate a second time as a test harness (minutes on a 2-core machine).

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tensorlet_kernels::ThreadPool;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap()
}

#[test]
fn fresh_pool_runs_a_job_on_every_thread_once() {
    let pool = ThreadPool::new(3).unwrap();
    assert_eq!(pool.threads(), 3);
    let names = Mutex::new(Vec::new());
    pool.run_scoped(3, &|| {
        let name = thread::current().name().map(str::to_owned);
        lock(&names).push(name);
    });
    // Once on the caller, twice on workers (one worker may have made both calls).
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3, "{names:?}");
    let me = thread::current().name().map(str::to_owned);
    assert_eq!(names.iter().filter(|n| **n == me).count(), 1, "{names:?}");
    let workers = ["tensorlet-kernel-1", "tensorlet-kernel-2"].map(|n| Some(n.to_owned()));
    assert!(
        names
            .iter()
            .filter(|n| **n != me)
            .all(|n| workers.contains(n)),
        "{names:?}"
    );
    // `jobs` caps the threads, and one job never leaves the caller.
    let runs = AtomicUsize::new(0);
    pool.run_scoped(2, &|| {
        runs.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(runs.load(Ordering::Relaxed), 2);
    let caller = thread::current().id();
    pool.run_scoped(1, &|| assert_eq!(thread::current().id(), caller));
    pool.run_scoped(0, &|| assert_eq!(thread::current().id(), caller));
}

#[test]
fn one_thread_pools_have_no_workers() {
    for n in [0, 1] {
        let pool = ThreadPool::new(n).unwrap();
        assert_eq!(pool.threads(), 1);
        let runs = AtomicUsize::new(0);
        pool.run_scoped(8, &|| {
            runs.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }
}

#[test]
fn concurrent_callers_share_one_pool() {
    let pool = Arc::new(ThreadPool::new(3).unwrap());
    let callers: Vec<_> = (0..6u64)
        .map(|c| {
            let pool = pool.clone();
            thread::spawn(move || {
                for round in 0..300u64 {
                    let items = 1 + (c * 7 + round) % 97;
                    let queue = Mutex::new((1..=items).map(|v| v * (c + 1)).collect::<Vec<_>>());
                    let sum = Mutex::new(0u64);
                    let runs = AtomicUsize::new(0);
                    pool.run_scoped(3, &|| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        while let Some(v) = lock(&queue).pop() {
                            *lock(&sum) += v;
                        }
                    });
                    let runs = runs.into_inner();
                    assert!((1..=3).contains(&runs), "{runs} threads ran the job");
                    assert!(queue.into_inner().unwrap().is_empty());
                    assert_eq!(sum.into_inner().unwrap(), items * (items + 1) / 2 * (c + 1));
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    // No job or worker was left behind: the idle pool runs a new job on all its threads.
    let runs = AtomicUsize::new(0);
    pool.run_scoped(3, &|| {
        runs.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(runs.load(Ordering::Relaxed), 3);
}

#[test]
fn nested_jobs_do_not_deadlock() {
    let pool = ThreadPool::new(3).unwrap();
    let runs = AtomicUsize::new(0);
    pool.run_scoped(3, &|| {
        pool.run_scoped(3, &|| {
            runs.fetch_add(1, Ordering::Relaxed);
        });
    });
    // Each of the 3 outer runs starts one inner job, on 1 to 3 threads.
    assert!((3..=9).contains(&runs.load(Ordering::Relaxed)));
}

/// Counts the threads that ran a job of [`dropping_an_idle_pool_joins_its_workers`] and
/// have since exited (a thread-local's destructor runs when its thread exits).
static EXITED: AtomicUsize = AtomicUsize::new(0);

struct CountsExit;

impl Drop for CountsExit {
    fn drop(&mut self) {
        EXITED.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static GUARD: Cell<Option<CountsExit>> = const { Cell::new(None) };
}

#[test]
fn dropping_an_idle_pool_joins_its_workers() {
    let pool = ThreadPool::new(4).unwrap();
    let caller = thread::current().id();
    let workers = Mutex::new(Vec::new());
    pool.run_scoped(4, &|| {
        let me = thread::current().id();
        if me != caller && !lock(&workers).contains(&me) {
            lock(&workers).push(me);
            GUARD.with(|g| g.set(Some(CountsExit)));
        }
    });
    let ran = workers.into_inner().unwrap().len();
    assert!((1..=3).contains(&ran), "{ran} workers ran the job");
    assert_eq!(
        EXITED.load(Ordering::SeqCst),
        0,
        "no worker exits while the pool lives"
    );
    drop(pool);
    // `drop` returned only after every worker had exited.
    assert_eq!(EXITED.load(Ordering::SeqCst), ran);
}

#[test]
fn panics_propagate_after_every_thread_is_done_and_the_pool_survives() {
    let pool = ThreadPool::new(3).unwrap();
    let caller = thread::current().id();
    for panic_on_caller in [true, false] {
        let finished = AtomicUsize::new(0);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run_scoped(3, &|| {
                let on_caller = thread::current().id() == caller;
                if on_caller == panic_on_caller {
                    panic!("boom");
                }
                thread::sleep(Duration::from_millis(20));
                finished.fetch_add(1, Ordering::Relaxed);
            })
        }));
        let payload = result.expect_err("the panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        // The threads that did not panic had all finished before it was resumed.
        let want = if panic_on_caller { 2 } else { 1 };
        assert_eq!(finished.load(Ordering::Relaxed), want);
    }
    let runs = AtomicUsize::new(0);
    pool.run_scoped(3, &|| {
        runs.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(runs.load(Ordering::Relaxed), 3);
}
