//! Helpers shared by the wdf integration tests. Each test binary uses only some of them.
//!
//! This file holds the set-up (kernel, driver, device, verifier), the I/O operations, the
//! bounded waits and the bug-check helpers; [`callbacks`] holds what driver callbacks under test
//! use to count, meet, park, detect nesting and keep requests. Everything is re-exported here, so
//! a test file needs only `use common::*;`.
//!
//! Every wait that a framework bug could turn into a hang is bounded ([`TIMEOUT`]): requests are
//! awaited with `wait_timeout`, blocking framework calls run under [`within`], and callbacks that
//! park wait on a [`Gate`] or a [`Rendezvous`] with a deadline. A broken framework therefore
//! fails a test instead of hanging it.
#![allow(dead_code)]

pub mod callbacks;

#[allow(unused_imports)] // each test binary uses only some of them, as with dead_code above
pub use callbacks::*;

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use nt::io::{Handle, IoCompletion, IoOp, PendingIo};
use nt::verifier::{self, Mode};
use nt::{Kernel, ManualClock};
use wdf::{Device, DeviceInit, Driver, ObjectAttributes};

/// The longest any test waits for something that should happen promptly.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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

/// Resets the verifier's counts, times it with a fresh manual clock (so no real duration can
/// trip the DPC watchdog or skew lock statistics) and turns it on in record mode.
pub fn verifier_record() {
    verifier::reset();
    verifier::set_clock(Arc::new(ManualClock::new()));
    verifier::enable(Mode::Record);
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

/// Polls `cond` until it holds or [`TIMEOUT`] passes; for state that another thread changes
/// after it has signalled (e.g. a counter updated after a completion). Sleeps briefly between
/// polls, so it is for test threads only (not for callbacks at DISPATCH_LEVEL). Never a timing
/// assertion: it only bounds how long a correct framework may take.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A read of `length` bytes at `offset`.
pub fn read_op(offset: u64, length: usize) -> IoOp {
    IoOp::Read { offset, length }
}

/// A write of `data` at `offset`.
pub fn write_op(offset: u64, data: Vec<u8>) -> IoOp {
    IoOp::Write { offset, data }
}

/// A device-control operation.
pub fn ioctl_op(code: u32, input: Vec<u8>, output_length: usize) -> IoOp {
    IoOp::DeviceControl {
        code,
        input,
        output_length,
    }
}

/// Sends a read and waits for it (with the timeout).
#[track_caller]
pub fn read(h: &Handle, offset: u64, length: usize) -> IoCompletion {
    wait(h.submit(read_op(offset, length)))
}

/// Sends a write and waits for it (with the timeout).
#[track_caller]
pub fn write(h: &Handle, offset: u64, data: Vec<u8>) -> IoCompletion {
    wait(h.submit(write_op(offset, data)))
}

/// Sends a device-control request and waits for it (with the timeout).
#[track_caller]
pub fn ioctl(h: &Handle, code: u32, input: Vec<u8>, output_length: usize) -> IoCompletion {
    wait(h.submit(ioctl_op(code, input, output_length)))
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

/// The current thread's name ("" if unnamed).
pub fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
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
