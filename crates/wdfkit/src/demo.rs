//! `wdfkit demo`: the statistics driver from "Understanding Sync Scope", three ways.
//!
//! Each variant is a device with one parallel queue whose `EvtIoRead` adds one to a request
//! counter and the read length to a byte counter, then completes the request. Several client
//! threads read at once; the expected totals are known, so a lost update shows up as a shortfall.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nt::sync::SpinLock;
use nt::{Kernel, NtStatus};
use wdf::{
    DeviceInit, DispatchType, Driver, ObjectAttributes, QueueConfig, ScopeLocked, SyncScope,
};

const READ_LEN: usize = 64;

#[derive(Default)]
struct Stats {
    requests: u64,
    bytes: u64,
}

/// How the callback updates the block.
#[derive(Clone, Copy, Debug)]
enum Variant {
    /// Scope None, a read-modify-write with no lock: the articles' bug.
    Unsynchronized,
    /// Scope Device: the framework's lock serializes the callbacks; data is `ScopeLocked`.
    DeviceScope,
    /// Scope None, parallel callbacks, a spin lock held only around the update.
    SpinLock,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Unsynchronized => "unsynchronized",
            Variant::DeviceScope => "device-scope",
            Variant::SpinLock => "spin-lock",
        }
    }
}

struct Outcome {
    requests: u64,
    bytes: u64,
    seconds: f64,
}

fn run_variant(
    kernel: &Kernel,
    variant: Variant,
    threads: usize,
    per_thread: u64,
) -> Result<Outcome, NtStatus> {
    let driver = Driver::create(kernel, ObjectAttributes::default())?;
    let name = format!("demo-{}", variant.name());
    let mut init = DeviceInit::new(name.clone());
    let scope = if matches!(variant, Variant::DeviceScope) {
        SyncScope::Device
    } else {
        SyncScope::None
    };
    init.attributes(ObjectAttributes::scope(scope));
    let device = driver.create_device(init)?;

    // The three ways to keep the block; only the variant's own is used.
    let racy = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let locked: Arc<ScopeLocked<Stats>> = Arc::new(device.scope_locked(Stats::default()));
    let spin = Arc::new(SpinLock::named("stats", Stats::default()));

    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (r, l, s) = (racy.clone(), locked.clone(), spin.clone());
    cfg.io_read(move |cx, req, len| {
        match variant {
            Variant::Unsynchronized => {
                // A read-modify-write without a lock: two callbacks can read the same old value.
                let n = r.0.load(Ordering::Relaxed);
                std::hint::spin_loop();
                r.0.store(n + 1, Ordering::Relaxed);
                let b = r.1.load(Ordering::Relaxed);
                r.1.store(b + len as u64, Ordering::Relaxed);
            }
            Variant::DeviceScope => {
                let token = cx.scope().expect("Device scope serializes EvtIoRead");
                let st = l.get(token);
                st.requests += 1;
                st.bytes += len as u64;
            }
            Variant::SpinLock => {
                let mut st = s.lock();
                st.requests += 1;
                st.bytes += len as u64;
            }
        }
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    device.create_queue(cfg, ObjectAttributes::default())?;

    let start = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                let h = kernel.io().open(&name)?;
                for i in 0..per_thread {
                    let c = h.read(i * READ_LEN as u64, READ_LEN);
                    c.status.ok()?;
                }
                Ok::<(), NtStatus>(())
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let (requests, bytes) = match variant {
        Variant::Unsynchronized => (
            racy.0.load(Ordering::Relaxed),
            racy.1.load(Ordering::Relaxed),
        ),
        Variant::DeviceScope => {
            let mut token = device.acquire_lock()?;
            let st = locked.get(&mut token);
            (st.requests, st.bytes)
        }
        Variant::SpinLock => {
            let st = spin.lock();
            (st.requests, st.bytes)
        }
    };
    driver.unload();
    Ok(Outcome {
        requests,
        bytes,
        seconds,
    })
}

/// Runs the three variants and prints what each counted.
pub fn run(threads: usize, per_thread: u64) -> Result<(), NtStatus> {
    let threads = threads.max(1);
    let kernel = Kernel::new();
    let expected = threads as u64 * per_thread;
    println!(
        "Statistics driver: {threads} client threads x {per_thread} reads of {READ_LEN} bytes = {expected} requests"
    );
    println!();
    println!(
        "{:<16} {:>12} {:>10} {:>14} {:>12}",
        "variant", "counted", "lost", "ns/request", "verdict"
    );
    for v in [
        Variant::Unsynchronized,
        Variant::DeviceScope,
        Variant::SpinLock,
    ] {
        let o = run_variant(&kernel, v, threads, per_thread)?;
        let lost = expected.saturating_sub(o.requests);
        let verdict = if o.requests == expected && o.bytes == expected * READ_LEN as u64 {
            "exact"
        } else {
            "LOST UPDATES"
        };
        println!(
            "{:<16} {:>12} {:>10} {:>14.0} {:>12}",
            v.name(),
            o.requests,
            lost,
            o.seconds * 1e9 / expected as f64,
            verdict
        );
    }
    println!();
    println!(
        "unsynchronized: scope None and no lock, so parallel EvtIoRead callbacks race on the block."
    );
    println!(
        "device-scope:   the framework holds the device's lock around each callback (one at a time)."
    );
    println!(
        "spin-lock:      scope None, callbacks run in parallel; a spin lock guards only the update."
    );
    Ok(())
}
