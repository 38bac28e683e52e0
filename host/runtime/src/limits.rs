//! What bounds a request: its store's memory and tables, its share of host memory, and
//! its place in the admission queue.
//!
//! - [`Limiter`] is the store's `ResourceLimiter`. When an instance asks for more linear
//!   memory or table space than the request may have, it records *which* limit was hit
//!   ([`LimitHit`]) and fails the growth with that value as the error, so the runtime
//!   classifies the failure by type (a downcast, or the record) and never by error text.
//! - [`HostMemory`] is the budget of host bytes (tensors the kernels produce) shared by
//!   every request in flight; each request also has a budget of its own, and
//!   [`TensorBudget`] charges both.
//! - [`Admission`] bounds how many requests run at once (the pooling allocator is sized
//!   for that many) and how many wait: a request beyond the bound waits in a bounded FIFO
//!   queue until a slot frees or its deadline passes, and is refused with
//!   [`crate::ErrorKind::Unavailable`] when the queue is full or the deadline has passed.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::{Error, Result};

/// Which limit a request ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    /// A linear memory would have grown past `limit` bytes (to `requested`).
    Memory {
        /// The size the instance asked for, in bytes.
        requested: usize,
        /// The request's memory limit, in bytes.
        limit: usize,
    },
    /// A table would have grown past `limit` elements (to `requested`).
    Table {
        /// The size the instance asked for, in elements.
        requested: usize,
        /// The request's table limit, in elements.
        limit: usize,
    },
    /// The tensors of this request would have needed more than `limit` host bytes.
    RequestTensors {
        /// Bytes the request would have held.
        requested: usize,
        /// The per-request budget.
        limit: usize,
    },
    /// The tensors of all requests in flight would have needed more than `limit` bytes.
    HostMemory {
        /// Bytes all requests would have held together.
        requested: usize,
        /// The runtime's host-memory budget.
        limit: usize,
    },
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LimitHit::Memory { requested, limit } => write!(
                f,
                "tried to grow its linear memory to {requested} bytes; the limit is {limit} bytes"
            ),
            LimitHit::Table { requested, limit } => write!(
                f,
                "tried to grow a table to {requested} elements; the limit is {limit}"
            ),
            LimitHit::RequestTensors { requested, limit } => write!(
                f,
                "would hold {requested} bytes of tensors; the request's tensor limit is {limit} \
                 bytes"
            ),
            LimitHit::HostMemory { requested, limit } => write!(
                f,
                "would bring the tensors of all requests in flight to {requested} bytes; the \
                 host-memory limit is {limit} bytes"
            ),
        }
    }
}

impl std::error::Error for LimitHit {}

impl From<LimitHit> for Error {
    fn from(hit: LimitHit) -> Self {
        Error::limit_exceeded(hit.to_string())
    }
}

/// Table elements an instance may have (a Rust guest has a few hundred).
const TABLE_ELEMENTS: usize = 100_000;

/// A store's `ResourceLimiter`: memory and table limits that record which one was hit.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory_bytes: usize,
    hit: Option<LimitHit>,
}

impl Limiter {
    /// A limiter allowing `memory_bytes` of linear memory per memory.
    pub(crate) fn new(memory_bytes: usize) -> Self {
        Limiter {
            memory_bytes,
            hit: None,
        }
    }

    /// The first limit this store ran into, if any.
    pub(crate) fn hit(&self) -> Option<LimitHit> {
        self.hit
    }

    fn record(&mut self, hit: LimitHit) -> wasmtime::Result<bool> {
        self.hit.get_or_insert(hit);
        Err(wasmtime::Error::new(hit))
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return self.record(LimitHit::Memory {
                requested: desired,
                limit: self.memory_bytes,
            });
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > TABLE_ELEMENTS {
            return self.record(LimitHit::Table {
                requested: desired,
                limit: TABLE_ELEMENTS,
            });
        }
        Ok(true)
    }
}

/// Host bytes held by the tensors of every request in flight, against one budget.
#[derive(Debug)]
pub(crate) struct HostMemory {
    used: AtomicUsize,
    limit: usize,
}

impl HostMemory {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        HostMemory {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `bytes` from the budget, or reports the hit without taking anything.
    fn charge(&self, bytes: usize) -> std::result::Result<(), LimitHit> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(bytes);
            if next > self.limit {
                return Err(LimitHit::HostMemory {
                    requested: next,
                    limit: self.limit,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Gives `bytes` back.
    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held now, by all requests.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One request's tensor bytes, charged against its own budget and the shared
/// [`HostMemory`]; everything it took is given back when it is dropped.
#[derive(Debug)]
pub(crate) struct TensorBudget {
    host: Arc<HostMemory>,
    limit: usize,
    used: usize,
    hit: Option<LimitHit>,
}

impl TensorBudget {
    /// A budget of `limit` bytes for one request, within `host`.
    pub(crate) fn new(host: Arc<HostMemory>, limit: usize) -> Self {
        TensorBudget {
            host,
            limit,
            used: 0,
            hit: None,
        }
    }

    /// Charges `bytes`, or fails with the limit it would pass (and records it).
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<()> {
        let used = self.used.saturating_add(bytes);
        let hit = if used > self.limit {
            Err(LimitHit::RequestTensors {
                requested: used,
                limit: self.limit,
            })
        } else {
            self.host.charge(bytes)
        };
        match hit {
            Ok(()) => {
                self.used = used;
                Ok(())
            }
            Err(hit) => {
                self.hit.get_or_insert(hit);
                Err(hit.into())
            }
        }
    }

    /// The first limit this budget refused, if any.
    pub(crate) fn hit(&self) -> Option<LimitHit> {
        self.hit
    }
}

impl Drop for TensorBudget {
    fn drop(&mut self) {
        self.host.release(self.used);
    }
}

/// The admission queue: at most `slots` requests run at once, at most `queue` wait.
#[derive(Debug)]
pub(crate) struct Admission {
    state: Mutex<AdmissionState>,
    freed: Condvar,
    slots: usize,
    queue: usize,
}

#[derive(Debug, Default)]
struct AdmissionState {
    running: usize,
    /// Tickets of the waiting requests, in arrival order (FIFO).
    waiting: VecDeque<u64>,
    next_ticket: u64,
}

/// A running request's slot; dropping it admits the next waiting request.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.running -= 1;
        let waiting = !state.waiting.is_empty();
        drop(state);
        // Waking needs a system call; skip it when nobody waits.
        if waiting {
            self.admission.freed.notify_all();
        }
    }
}

impl Admission {
    /// `slots` concurrent requests (at least 1), `queue` waiting.
    pub(crate) fn new(slots: usize, queue: usize) -> Self {
        Admission {
            state: Mutex::new(AdmissionState::default()),
            freed: Condvar::new(),
            slots: slots.max(1),
            queue,
        }
    }

    fn lock(&self) -> MutexGuard<'_, AdmissionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot in `state` (locked) if one is free and nobody waits for one.
    fn take_free(self: &Arc<Self>, state: &mut AdmissionState) -> Option<Permit> {
        (state.running < self.slots && state.waiting.is_empty()).then(|| {
            state.running += 1;
            Permit {
                admission: self.clone(),
            }
        })
    }

    /// A slot if one is free now and nobody waits for one; never waits.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.take_free(&mut self.lock())
    }

    /// A slot, waiting in line until `deadline` if every slot is taken.
    pub(crate) fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Permit> {
        let mut state = self.lock();
        if let Some(permit) = self.take_free(&mut state) {
            return Ok(permit);
        }
        if state.waiting.len() >= self.queue {
            return Err(Error::unavailable(format!(
                "the request queue is full: {} requests in flight and {} waiting, the \
                 runtime's limits; try again later",
                self.slots, self.queue
            )));
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(ticket);
        loop {
            if state.running < self.slots && state.waiting.front() == Some(&ticket) {
                state.waiting.pop_front();
                state.running += 1;
                drop(state);
                // The next in line may fit too.
                self.freed.notify_all();
                return Ok(Permit {
                    admission: self.clone(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                state.waiting.retain(|&t| t != ticket);
                drop(state);
                self.freed.notify_all();
                return Err(Error::unavailable(format!(
                    "the request's deadline passed while it waited for one of the {} request \
                     slots",
                    self.slots
                )));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Requests running now.
    pub(crate) fn running(&self) -> usize {
        self.lock().running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn queue_full_and_queued_deadline_are_unavailable() {
        let a = Arc::new(Admission::new(1, 1));
        let far = Instant::now() + Duration::from_secs(60);
        let first = a.acquire(far).unwrap();
        // One waits (and times out), while the queue is full for a third.
        let a2 = a.clone();
        let waiter = std::thread::spawn(move || {
            a2.acquire(Instant::now() + Duration::from_millis(300))
                .map(drop)
        });
        while a.lock().waiting.is_empty() {
            std::thread::yield_now();
        }
        let full = a.acquire(far).unwrap_err();
        assert_eq!(full.kind(), crate::ErrorKind::Unavailable, "{full}");
        assert!(full.message().contains("1 waiting"), "{full}");
        let late = waiter.join().unwrap().unwrap_err();
        assert_eq!(late.kind(), crate::ErrorKind::Unavailable, "{late}");
        assert!(late.message().contains("deadline"), "{late}");
        // Once the slot frees, the next request runs.
        drop(first);
        assert_eq!(a.running(), 0);
        let again = a.acquire(far).unwrap();
        assert_eq!(a.running(), 1);
        drop(again);
    }

    #[test]
    fn waiting_requests_are_admitted_in_order() {
        let a = Arc::new(Admission::new(1, 8));
        let far = Instant::now() + Duration::from_secs(60);
        let first = a.acquire(far).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..4 {
            let (a2, order) = (a.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let p = a2.acquire(far).unwrap();
                order.lock().unwrap().push(i);
                drop(p);
            }));
            // Each joins the queue before the next arrives.
            while a.lock().waiting.len() < i + 1 {
                std::thread::yield_now();
            }
        }
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn budgets_charge_request_and_host_and_give_back() {
        let host = Arc::new(HostMemory::new(100));
        let mut a = TensorBudget::new(host.clone(), 80);
        let mut b = TensorBudget::new(host.clone(), 80);
        a.charge(60).unwrap();
        assert_eq!(
            a.charge(30).unwrap_err().kind(),
            crate::ErrorKind::LimitExceeded
        );
        assert!(matches!(
            a.hit(),
            Some(LimitHit::RequestTensors {
                requested: 90,
                limit: 80
            })
        ));
        let e = b.charge(50).unwrap_err();
        assert!(e.message().contains("all requests"), "{e}");
        assert!(matches!(
            b.hit(),
            Some(LimitHit::HostMemory {
                requested: 110,
                limit: 100
            })
        ));
        drop(a);
        assert_eq!(host.used(), 0);
        b.charge(50).unwrap();
        assert_eq!(host.used(), 50);
    }
}
