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

use serde::Serialize;

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

/// The device's byte counter, one cache-padded slot per client thread (by thread id), so the
/// callback's own work shares no cache line between client threads and the scaling cases
/// measure the framework, not a contended counter.
#[derive(Debug, Default)]
pub struct Counter {
    slots: [crossbeam_utils::CachePadded<AtomicU64>; 8],
}

impl Counter {
    fn mine(&self) -> &AtomicU64 {
        &self.slots[(nt::thread::current_id() % 8) as usize]
    }

    fn total(&self) -> u64 {
        self.slots.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// A ready-to-run wdfkit device for one case.
#[derive(Debug)]
pub struct Rig {
    _kernel: Kernel,
    driver: Arc<Driver>,
    name: String,
    counter: Arc<Counter>,
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
        let counter = Arc::new(Counter::default());
        let c = counter.clone();
        let mut cfg = QueueConfig::new(dispatch);
        cfg.default_queue = true;
        cfg.io_write(move |_cx, req, _len| {
            let n = req.input_buffer(1).map_or(0, |b| work(c.mine(), b));
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
        self.counter.total()
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

/// What `wdfkit bench` measures and prints.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Fewer requests and repetitions.
    pub quick: bool,
    /// JSON instead of a table.
    pub json: bool,
    /// The scaling table instead of the main one.
    pub scaling: bool,
    /// The memory measurement instead of timings.
    pub memory: bool,
    /// Only cases whose name contains this text.
    pub case: Option<String>,
}

/// One row of the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The case name.
    pub name: &'static str,
    /// Nanoseconds per request.
    pub ns_per_request: NsPerRequest,
    /// Median divided by the `std::sync::Mutex` baseline's median (`null` when it was not run).
    pub ratio_to_mutex: Option<f64>,
}

/// Min and median, for JSON.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct NsPerRequest {
    /// Fastest repetition.
    pub min: f64,
    /// Median repetition.
    pub median: f64,
}

/// The JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// One row per case.
    pub results: Vec<Row>,
    /// For the scaling table: 2-thread throughput over 1-thread throughput, scope None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_scope_none: Option<f64>,
    /// Likewise with Device scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_device_scope: Option<f64>,
}

/// Runs the cases `opts` selects and prints the report.
pub fn report(opts: &Options) -> Result<(), NtStatus> {
    if opts.memory {
        let m = memory(if opts.quick { 20_000 } else { 100_000 })?;
        if opts.json {
            println!(
                "{}",
                serde_json::to_string(&m).map_err(|_| NtStatus::INTERNAL_ERROR)?
            );
        } else {
            println!(
                "{} queued requests: resident +{:.1} MiB ({:.0} bytes each); the same again after they drained: {:+.1} MiB more",
                m.requests,
                m.queued_bytes as f64 / 1048576.0,
                m.bytes_per_request,
                m.second_round_extra_bytes as f64 / 1048576.0
            );
        }
        return Ok(());
    }
    let (n, reps) = if opts.quick {
        (20_000, 3)
    } else {
        (200_000, 7)
    };
    let all: &[Case] = if opts.scaling {
        &Case::SCALING
    } else {
        &Case::MAIN
    };
    let cases: Vec<Case> = all
        .iter()
        .copied()
        .filter(|c| opts.case.as_deref().is_none_or(|f| c.name().contains(f)))
        .collect();
    let mut rows = Vec::new();
    for case in cases {
        let n = if case == Case::BaselineCrossbeamWorker {
            n / 4
        } else {
            n
        };
        rows.push((case, summarize(case, n, reps)?));
    }
    let median = |c: Case| rows.iter().find(|(x, _)| *x == c).map(|(_, s)| s.median);
    let mutex = median(Case::BaselineMutex);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let report = Report {
        results: rows
            .iter()
            .map(|(c, s)| Row {
                name: c.name(),
                ns_per_request: NsPerRequest {
                    min: s.min,
                    median: s.median,
                },
                ratio_to_mutex: mutex.map(|m| s.median / m),
            })
            .collect(),
        scaling_scope_none: ratio(median(Case::Parallel1), median(Case::Parallel2)),
        scaling_device_scope: ratio(median(Case::DeviceParallel1), median(Case::DeviceParallel2)),
    };
    if opts.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|_| NtStatus::INTERNAL_ERROR)?
        );
        return Ok(());
    }
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "case", "min ns", "median ns", "x mutex"
    );
    for r in &report.results {
        let x = r
            .ratio_to_mutex
            .map_or(String::from("-"), |x| format!("{x:.1}"));
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>10}",
            r.name, r.ns_per_request.min, r.ns_per_request.median, x
        );
    }
    if let (Some(none), Some(device)) = (report.scaling_scope_none, report.scaling_device_scope) {
        println!();
        println!(
            "throughput, 2 threads / 1 thread: scope None {none:.2}x, Device scope {device:.2}x"
        );
    }
    Ok(())
}

/// The memory measurement.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Memory {
    /// Requests queued per round.
    pub requests: usize,
    /// Resident bytes added while the first round was queued.
    pub queued_bytes: i64,
    /// The same per request.
    pub bytes_per_request: f64,
    /// Resident bytes the second, identical round added on top of the first (the allocator
    /// keeps what the first round freed; flat memory means this stays near zero).
    pub second_round_extra_bytes: i64,
}

fn resident_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Queues `requests` 64-byte writes behind one the driver holds on a sequential queue, measures
/// resident memory, lets them all complete, and does it all again to see whether memory stays
/// flat.
pub fn memory(requests: usize) -> Result<Memory, NtStatus> {
    let kernel = Kernel::builder().processors(2).workers(2).build();
    let driver = Driver::create(&kernel, ObjectAttributes::default())?;
    let device = driver.create_device(DeviceInit::new("bench-memory"))?;
    let held = Arc::new(std::sync::Mutex::new(None));
    let gate = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let (h, g) = (held.clone(), gate.clone());
    cfg.io_write(move |_cx, req, len| {
        if g.swap(false, Ordering::SeqCst) {
            *h.lock().unwrap_or_else(|e| e.into_inner()) = Some(req);
        } else {
            req.complete_with_information(NtStatus::SUCCESS, len);
        }
    });
    device.create_queue(cfg, ObjectAttributes::default())?;
    let handle = kernel.io().open("bench-memory")?;
    let start = resident_bytes();
    let mut peaks = Vec::new();
    for _round in 0..2 {
        gate.store(true, Ordering::SeqCst);
        let first = handle.submit(IoOp::Write {
            offset: 0,
            data: vec![0; PAYLOAD],
        });
        let mut pending = Vec::with_capacity(requests);
        for _ in 0..requests {
            pending.push(handle.submit(IoOp::Write {
                offset: 0,
                data: vec![0x5a; PAYLOAD],
            }));
        }
        peaks.push(resident_bytes() - start);
        let taken = held.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(r) = taken {
            r.complete(NtStatus::SUCCESS);
        }
        first.wait();
        for p in pending {
            if p.wait().status != NtStatus::SUCCESS {
                return Err(NtStatus::INTERNAL_ERROR);
            }
        }
    }
    Ok(Memory {
        requests,
        queued_bytes: peaks[0],
        bytes_per_request: peaks[0] as f64 / requests.max(1) as f64,
        second_round_extra_bytes: peaks[1] - peaks[0],
    })
}
