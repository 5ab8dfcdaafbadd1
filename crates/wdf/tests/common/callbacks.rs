//! What the driver callbacks under test use: counting how many run at once, overlapping on
//! purpose ([`spin_for`], [`Rendezvous`]), parking until the test lets them go ([`Gate`]),
//! telling whether they were called nested ([`InsideCallback`]) and keeping requests for the test
//! to complete later ([`Held`]). Waiting never sleeps (usable at DISPATCH_LEVEL) and is bounded.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wdf::Request;

use super::eventually;

/// Counts callbacks running at once and remembers the most ever seen.
#[derive(Debug, Default)]
pub struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    /// A callback starts; it ends when the guard is dropped.
    pub fn enter(&self) -> InFlightGuard<'_> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        InFlightGuard { of: self }
    }

    /// The most callbacks ever running at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Callbacks running now.
    pub fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }
}

/// One running callback of an [`InFlight`] counter.
#[derive(Debug)]
pub struct InFlightGuard<'a> {
    of: &'a InFlight,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.of.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Busy-waits for `d` (allowed at DISPATCH_LEVEL, unlike sleeping): an overlap opportunity.
pub fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// A one-shot meeting point for `parties` callbacks. Waiting spins and yields rather than
/// blocking, so it is usable at DISPATCH_LEVEL; it gives up after a timeout so a framework that
/// wrongly serializes the parties fails the test instead of hanging it.
#[derive(Debug)]
pub struct Rendezvous {
    parties: usize,
    arrived: AtomicUsize,
}

impl Rendezvous {
    /// A meeting point for `parties` participants.
    pub fn new(parties: usize) -> Self {
        Rendezvous {
            parties,
            arrived: AtomicUsize::new(0),
        }
    }

    /// Arrives, then waits until every party has arrived (`true`) or `timeout` passes (`false`).
    pub fn meet(&self, timeout: Duration) -> bool {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        loop {
            if self.arrived.load(Ordering::SeqCst) >= self.parties {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::yield_now();
        }
    }
}

/// How long a callback waits at a [`Rendezvous`] before declaring that its partner never came.
/// Long enough for any scheduler, short enough that a serializing bug fails quickly.
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(5);

/// A flag that, once opened, stays open. Waiting spins and yields (usable at DISPATCH_LEVEL) and
/// gives up after a timeout, so a callback parked on it can never hang a test forever.
#[derive(Debug, Default)]
pub struct Gate {
    open: AtomicBool,
}

impl Gate {
    /// Opens the gate.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits until the gate opens (`true`) or `timeout` passes (`false`).
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_open() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }
}

thread_local! {
    static INSIDE: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as running inside a driver callback until dropped; lets another
/// callback tell whether it was called nested on the same stack.
#[derive(Debug)]
pub struct InsideCallback(());

impl InsideCallback {
    /// Enters the marked region.
    pub fn enter() -> Self {
        INSIDE.with(|c| c.set(c.get() + 1));
        InsideCallback(())
    }
}

impl Drop for InsideCallback {
    fn drop(&mut self) {
        INSIDE.with(|c| c.set(c.get() - 1));
    }
}

/// How many [`InsideCallback`] regions the current thread is in.
pub fn inside_depth() -> usize {
    INSIDE.with(Cell::get)
}

/// Requests a driver keeps (presented to a callback that stores them, completed later by the
/// test). Never held locked while a request is completed: completion can present the next
/// request to the very callback that stores into this.
#[derive(Debug, Default)]
pub struct Held {
    requests: Mutex<VecDeque<Request>>,
}

impl Held {
    /// Keeps a request.
    pub fn push(&self, r: Request) {
        self.requests.lock().unwrap().push_back(r);
    }

    /// The oldest kept request, if any.
    pub fn pop(&self) -> Option<Request> {
        self.requests.lock().unwrap().pop_front()
    }

    /// The kept request with id `id`, if any.
    pub fn take(&self, id: u64) -> Option<Request> {
        let mut v = self.requests.lock().unwrap();
        let pos = v.iter().position(|r| r.id() == id)?;
        v.remove(pos)
    }

    /// Runs `f` on the kept request with id `id` (without taking it).
    pub fn with<R>(&self, id: u64, f: impl FnOnce(&Request) -> R) -> Option<R> {
        let v = self.requests.lock().unwrap();
        v.iter().find(|r| r.id() == id).map(f)
    }

    /// How many requests are kept.
    pub fn len(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits (bounded) until at least `n` requests are kept; call it from the test thread.
    #[track_caller]
    pub fn wait_for(&self, n: usize) {
        eventually(&format!("{n} request(s) held by the driver"), || {
            self.len() >= n
        });
    }
}
