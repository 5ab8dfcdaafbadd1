//! Helpers for the second-half integration tests (cancellation, queue states, power,
//! auto-serialization, framework locks, verifier rules). Each test binary uses only some of them.
//!
//! Every wait that a framework bug could turn into a hang is bounded ([`TIMEOUT`]): requests are
//! awaited with `wait_timeout`, blocking framework calls run under [`within`], and callbacks that
//! park wait on a [`Gate`] with a deadline. A broken framework therefore fails a test instead of
//! hanging it.
#![allow(dead_code)]

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nt::io::{IoCompletion, IoOp, PendingIo};
use nt::verifier::{self, Mode};
use nt::{Kernel, ManualClock};
use wdf::{Device, DeviceInit, Driver, ObjectAttributes, Request};

/// The longest any test waits for something that should happen promptly.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a callback waits at a [`Rendezvous`] before declaring its partner absent.
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(5);

/// A small kernel on the real clock: two simulated processors, two system workers.
pub fn kernel() -> Kernel {
    Kernel::builder().processors(2).workers(2).build()
}

/// A kernel whose timers run on `clock` (expiries happen inside `ManualClock::advance`).
pub fn manual_kernel(clock: &Arc<ManualClock>, processors: usize, workers: usize) -> Kernel {
    Kernel::builder()
        .processors(processors)
        .workers(workers)
        .clock(clock.clone())
        .build()
}

/// A driver with default attributes (Dispatch level, scope None).
pub fn driver(kernel: &Kernel) -> Arc<Driver> {
    Driver::create(kernel, ObjectAttributes::default()).expect("WdfDriverCreate")
}

/// A device named `name` with attributes `attrs` and nothing else.
pub fn device(driver: &Arc<Driver>, name: &str, attrs: ObjectAttributes) -> Arc<Device> {
    let mut init = DeviceInit::new(name);
    init.attributes(attrs);
    driver.create_device(init).expect("WdfDeviceCreate")
}

/// Resets the verifier, times it with a manual clock (no real duration can trip the DPC
/// watchdog) and turns it on in record mode.
pub fn verifier_record() {
    verifier::reset();
    verifier::set_clock(Arc::new(ManualClock::new()));
    verifier::enable(Mode::Record);
}

/// A read of `length` bytes.
pub fn read_op(length: usize) -> IoOp {
    IoOp::Read { offset: 0, length }
}

/// A write of `length` bytes.
pub fn write_op(length: usize) -> IoOp {
    IoOp::Write {
        offset: 0,
        data: vec![0x5a; length],
    }
}

/// Waits for `pending` up to [`TIMEOUT`]; a request that does not complete fails the test.
#[track_caller]
pub fn wait(pending: PendingIo) -> IoCompletion {
    match pending.wait_timeout(TIMEOUT) {
        Ok(c) => c,
        Err(p) => panic!("request {} did not complete within {TIMEOUT:?}", p.id()),
    }
}

/// Runs `f` on a helper thread and returns its result; fails the test if it does not return
/// within [`TIMEOUT`] (a blocking framework call that hangs) and re-raises its panic.
#[track_caller]
pub fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("within: {what}"))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .expect("spawning a helper thread");
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(r)) => {
            let _ = handle.join();
            r
        }
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what} did not return within {TIMEOUT:?}"),
    }
}

/// Polls `cond` until it holds or [`TIMEOUT`] passes. Bounds how long a correct framework may
/// take; never a timing assertion.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

// The in-flight counter, the busy wait and the rendezvous are the core tests' own helpers.
#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test binary uses only some of them, as with dead_code above
pub use common::{InFlight, InFlightGuard, Rendezvous, spin_for};

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

    /// Waits (bounded) until at least `n` requests are kept.
    #[track_caller]
    pub fn wait_for(&self, n: usize) {
        eventually(&format!("{n} request(s) held by the driver"), || {
            self.len() >= n
        });
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        String::from("<non-string panic payload>")
    }
}

/// Runs `f`, which must panic with a bug check; returns the panic message.
#[track_caller]
pub fn expect_bug_check(f: impl FnOnce()) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(()) => panic!("expected a bug check, but the call returned"),
        Err(p) => {
            let msg = panic_message(p.as_ref());
            assert!(
                msg.contains("bug check"),
                "expected a bug check, got panic: {msg}"
            );
            msg
        }
    }
}

/// A tiny deterministic pseudo-random generator (xorshift), seeded per thread.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    /// A generator with the given (non-zero) seed.
    pub fn new(seed: u64) -> Self {
        Rng(AtomicU64::new(seed | 1))
    }

    /// The next value.
    pub fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x
    }

    /// A value in `0..n`.
    pub fn below(&self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The current thread's name ("" if unnamed).
pub fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}
