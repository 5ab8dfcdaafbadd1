//! Helpers shared by the driver tests. Each test binary uses only some of them.
//!
//! Every wait that a bug could turn into a hang has a timeout ([`TIMEOUT`]): requests are
//! waited for with `PendingIo::wait_timeout`, and handles with requests that might still be
//! pending are closed on a helper thread.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nt::io::{Handle, IoCompletion, IoOp, PendingIo};
use nt::verifier::{self, Mode};
use nt::{Kernel, ManualClock, NtStatus};
use wdf::{Driver, ObjectAttributes};

/// The longest any test waits for something that should happen promptly.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A small kernel: two simulated processors, two system workers.
pub fn kernel() -> Kernel {
    Kernel::builder().processors(2).workers(2).build()
}

/// A driver with default attributes (Dispatch level, scope None).
pub fn driver(kernel: &Kernel) -> Arc<Driver> {
    Driver::create(kernel, ObjectAttributes::default()).expect("WdfDriverCreate")
}

/// Turns the verifier on (record mode), timed by a manual clock so that no real duration can
/// trip the DPC watchdog. [`assert_no_violations`] checks the drivers broke no rule.
pub fn verifier_on() {
    verifier::reset();
    verifier::set_clock(Arc::new(ManualClock::new()));
    verifier::enable(Mode::Record);
}

/// Fails the test if the verifier recorded any violation.
#[track_caller]
pub fn assert_no_violations() {
    let counts = verifier::counts();
    let recent: Vec<String> = verifier::recent().iter().map(|v| v.to_string()).collect();
    assert!(
        counts.is_empty(),
        "verifier violations: {:?}\n{}",
        counts.iter().map(|(r, n)| (r.name, *n)).collect::<Vec<_>>(),
        recent.join("\n")
    );
}

/// Waits for `pending` up to [`TIMEOUT`]; a request that does not complete fails the test.
#[track_caller]
pub fn wait(pending: PendingIo) -> IoCompletion {
    match pending.wait_timeout(TIMEOUT) {
        Ok(c) => c,
        Err(p) => panic!("request {} did not complete within {TIMEOUT:?}", p.id()),
    }
}

/// Reads and waits.
#[track_caller]
pub fn read(h: &Handle, offset: u64, length: usize) -> IoCompletion {
    wait(h.submit(IoOp::Read { offset, length }))
}

/// Writes and waits.
#[track_caller]
pub fn write(h: &Handle, offset: u64, data: Vec<u8>) -> IoCompletion {
    wait(h.submit(IoOp::Write { offset, data }))
}

/// Sends a control request and waits.
#[track_caller]
pub fn ioctl(h: &Handle, code: u32, input: Vec<u8>, output_length: usize) -> IoCompletion {
    wait(h.submit(IoOp::DeviceControl {
        code,
        input,
        output_length,
    }))
}

/// Flushes and waits.
#[track_caller]
pub fn flush(h: &Handle) -> IoCompletion {
    wait(h.submit(IoOp::Flush))
}

/// Closes `h` on a helper thread and waits up to [`TIMEOUT`] for the close to finish.
#[track_caller]
pub fn close(h: Handle) -> NtStatus {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(h.close());
    });
    rx.recv_timeout(TIMEOUT)
        .expect("closing the handle did not finish in time")
}

/// A small deterministic PRNG (xorshift64*), so failures can be replayed from the seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// A directory under the system temp dir, unique to this process and call, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `drivers-<tag>-<pid>-<nanos>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "drivers-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The process's resident set size in bytes (from `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/self/status")
}
