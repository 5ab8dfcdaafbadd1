//! Helpers shared by the wdf integration tests. Each test binary uses only some of them.
//!
//! Every wait that a framework bug could turn into a hang has a timeout ([`TIMEOUT`]), so a
//! broken build fails instead of hanging.
#![allow(dead_code)]

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nt::io::{Handle, IoCompletion, IoOp, PendingIo};
use nt::verifier::{self, Mode};
use nt::{Kernel, ManualClock};
use wdf::{Device, DeviceInit, Driver, ObjectAttributes};

/// The longest any test waits for something that should happen promptly.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A small kernel: two simulated processors, two system workers.
pub fn kernel() -> Kernel {
    Kernel::builder().processors(2).workers(2).build()
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

/// A read operation.
pub fn read_op(offset: u64, length: usize) -> IoOp {
    IoOp::Read { offset, length }
}

/// A write operation.
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

/// The current thread's name ("" if unnamed).
pub fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

/// Polls `cond` until it holds or [`TIMEOUT`] passes; for state that another thread changes
/// after it has signalled (e.g. a counter updated after a completion). Never a timing
/// assertion: it only bounds how long a correct framework may take.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::yield_now();
    }
}
