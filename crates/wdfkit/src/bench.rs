//! `wdfkit bench`: nanoseconds per request round trip through wdfkit, next to baselines doing the
//! same callback work in the same harness.
//!
//! A round trip is: the client issues a 64-byte write, the framework routes it to a queue, the
//! queue presents it to `EvtIoWrite`, the callback adds the length to a counter and completes the
//! request, and the client sees the completion. The baselines do the same work (the same 64-byte
//! buffer moved in and a completion value handed back) as a direct call, under a
//! `std::sync::Mutex`, and through a worker thread fed by a crossbeam channel with a reply
//! channel (what a Rust developer might write instead of a framework).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nt::io::{Handle, IoOp};
use nt::{Kernel, NtStatus};
use wdf::{
    DeviceInit, DispatchType, Driver, ExecutionLevel, ObjectAttributes, QueueConfig, SyncScope,
};

/// Bytes per request.
pub const PAYLOAD: usize = 64;

/// One measured configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// Sequential queue, scope None: the inline fast path.
    Inline,
    /// Sequential queue, Device scope, spin flavour.
    DeviceSpin,
    /// Sequential queue, Queue scope.
    Queue,
    /// Sequential queue, Device scope, Passive level (mutex flavour).
    Passive,
    /// Parallel queue, scope None, two client threads.
    Parallel2,
    /// The inline fast path with the verifier on.
    Verifier,
    /// Parallel queue, scope None, one client thread (the scaling reference).
    Parallel1,
    /// Parallel queue, Device scope, one client thread.
    DeviceParallel1,
    /// Parallel queue, Device scope, two client threads.
    DeviceParallel2,
    /// A direct function call doing the callback's work.
    BaselineDirect,
    /// The callback's work under a `std::sync::Mutex`.
    BaselineMutex,
    /// A worker thread fed by a crossbeam channel, replying on another.
    BaselineCrossbeamWorker,
}

impl Case {
    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Case::Inline => "wdfkit-inline",
            Case::DeviceSpin => "wdfkit-device-spin",
            Case::Queue => "wdfkit-queue",
            Case::Passive => "wdfkit-passive",
            Case::Parallel2 => "wdfkit-parallel-2",
            Case::Verifier => "wdfkit-verifier",
            Case::Parallel1 => "wdfkit-parallel-1",
            Case::DeviceParallel1 => "wdfkit-device-parallel-1",
            Case::DeviceParallel2 => "wdfkit-device-parallel-2",
            Case::BaselineDirect => "baseline-direct",
            Case::BaselineMutex => "baseline-mutex",
            Case::BaselineCrossbeamWorker => "baseline-crossbeam-worker",
        }
    }

    /// The cases of the main table, in print order.
    pub const MAIN: [Case; 9] = [
        Case::Inline,
        Case::DeviceSpin,
        Case::Queue,
        Case::Passive,
        Case::Parallel2,
        Case::Verifier,
        Case::BaselineDirect,
        Case::BaselineMutex,
        Case::BaselineCrossbeamWorker,
    ];

    /// The cases of the scaling table.
    pub const SCALING: [Case; 4] = [
        Case::Parallel1,
        Case::Parallel2,
        Case::DeviceParallel1,
        Case::DeviceParallel2,
    ];

    fn threads(self) -> usize {
        match self {
            Case::Parallel2 | Case::DeviceParallel2 => 2,
            _ => 1,
        }
    }
}

/// The callback's work: account the bytes.
#[inline]
fn work(counter: &AtomicU64, data: &[u8]) -> usize {
    counter.fetch_add(black_box(data.len()) as u64, Ordering::Relaxed);
    data.len()
}

/// A ready-to-run wdfkit device for one case.
#[derive(Debug)]
pub struct Rig {
    _kernel: Kernel,
    driver: Arc<Driver>,
    name: String,
    counter: Arc<AtomicU64>,
}

impl Rig {
    /// Builds the device for `case` (a wdfkit case).
    pub fn new(case: Case) -> Result<Rig, NtStatus> {
        let kernel = Kernel::builder().processors(2).workers(2).build();
        let driver = Driver::create(&kernel, ObjectAttributes::default())?;
        let (scope, level, dispatch) = match case {
            Case::DeviceSpin => (
                SyncScope::Device,
                ExecutionLevel::Dispatch,
                DispatchType::Sequential,
            ),
            Case::Queue => (
                SyncScope::Queue,
                ExecutionLevel::Dispatch,
                DispatchType::Sequential,
            ),
            Case::Passive => (
                SyncScope::Device,
                ExecutionLevel::Passive,
                DispatchType::Sequential,
            ),
            Case::Parallel1 | Case::Parallel2 => (
                SyncScope::None,
                ExecutionLevel::Dispatch,
                DispatchType::Parallel,
            ),
            Case::DeviceParallel1 | Case::DeviceParallel2 => (
                SyncScope::Device,
                ExecutionLevel::Dispatch,
                DispatchType::Parallel,
            ),
            _ => (
                SyncScope::None,
                ExecutionLevel::Dispatch,
                DispatchType::Sequential,
            ),
        };
        let name = format!("bench-{}", case.name());
        let mut init = DeviceInit::new(name.clone());
        init.attributes(ObjectAttributes::scope(scope).with_level(level));
        let device = driver.create_device(init)?;
        let counter = Arc::new(AtomicU64::new(0));
        let c = counter.clone();
        let mut cfg = QueueConfig::new(dispatch);
        cfg.default_queue = true;
        cfg.io_write(move |_cx, req, _len| {
            let n = req.input_buffer(1).map_or(0, |b| work(&c, b));
            req.complete_with_information(NtStatus::SUCCESS, n);
        });
        device.create_queue(cfg, ObjectAttributes::default())?;
        Ok(Rig {
            _kernel: kernel,
            driver,
            name,
            counter,
        })
    }

    /// Opens a client handle.
    pub fn open(&self) -> Result<Handle, NtStatus> {
        self.driver.kernel().io().open(&self.name)
    }

    /// Bytes the callbacks accounted.
    pub fn bytes(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }
}

/// One round trip on `h`.
#[inline]
pub fn round_trip(h: &Handle) -> usize {
    let c = h
        .submit(IoOp::Write {
            offset: 0,
            data: vec![0x5a; PAYLOAD],
        })
        .wait();
    debug_assert_eq!(c.status, NtStatus::SUCCESS);
    c.information
}

/// Runs `n` round trips per client thread of `case` and returns the wall time per request.
pub fn measure(case: Case, n: u64) -> Result<f64, NtStatus> {
    let threads = case.threads();
    match case {
        Case::BaselineDirect => {
            let counter = AtomicU64::new(0);
            let start = Instant::now();
            for _ in 0..n {
                let data = black_box(vec![0x5a; PAYLOAD]);
                black_box(work(&counter, &data));
            }
            Ok(per_request(start.elapsed(), n))
        }
        Case::BaselineMutex => {
            let total = std::sync::Mutex::new(0u64);
            let counter = AtomicU64::new(0);
            let start = Instant::now();
            for _ in 0..n {
                let data = black_box(vec![0x5a; PAYLOAD]);
                let mut g = total.lock().unwrap_or_else(|e| e.into_inner());
                *g += work(&counter, &data) as u64;
            }
            Ok(per_request(start.elapsed(), n))
        }
        Case::BaselineCrossbeamWorker => {
            let (tx, rx) =
                crossbeam_channel::bounded::<(Vec<u8>, crossbeam_channel::Sender<usize>)>(64);
            let worker = std::thread::spawn(move || {
                let counter = AtomicU64::new(0);
                while let Ok((data, reply)) = rx.recv() {
                    let _ = reply.send(work(&counter, &data));
                }
            });
            let (rtx, rrx) = crossbeam_channel::bounded(1);
            let start = Instant::now();
            for _ in 0..n {
                let data = vec![0x5a; PAYLOAD];
                tx.send((data, rtx.clone()))
                    .map_err(|_| NtStatus::INTERNAL_ERROR)?;
                black_box(rrx.recv().map_err(|_| NtStatus::INTERNAL_ERROR)?);
            }
            let elapsed = start.elapsed();
            drop(tx);
            let _ = worker.join();
            Ok(per_request(elapsed, n))
        }
        _ => {
            let rig = Rig::new(case)?;
            let verifier = case == Case::Verifier;
            if verifier {
                nt::verifier::enable(nt::verifier::Mode::Record);
            }
            let handles: Vec<Handle> =
                (0..threads).map(|_| rig.open()).collect::<Result<_, _>>()?;
            let start = Instant::now();
            std::thread::scope(|s| {
                for h in &handles {
                    s.spawn(move || {
                        for _ in 0..n {
                            black_box(round_trip(h));
                        }
                    });
                }
            });
            let elapsed = start.elapsed();
            if verifier {
                nt::verifier::disable();
            }
            if rig.bytes() != n * threads as u64 * PAYLOAD as u64 {
                return Err(NtStatus::INTERNAL_ERROR);
            }
            Ok(per_request(elapsed, n * threads as u64))
        }
    }
}

fn per_request(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n.max(1) as f64
}

/// Min and median of repeated measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Fastest repetition, ns per request.
    pub min: f64,
    /// Median repetition, ns per request.
    pub median: f64,
}

/// Measures `case` `reps` times with `n` requests per thread each time.
pub fn summarize(case: Case, n: u64, reps: usize) -> Result<Summary, NtStatus> {
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        v.push(measure(case, n)?);
    }
    v.sort_by(f64::total_cmp);
    Ok(Summary {
        min: v[0],
        median: v[v.len() / 2],
    })
}
