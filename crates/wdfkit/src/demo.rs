//! `wdfkit demo`: the story of "Understanding Sync Scope in WDF Drivers" (and the OSR forum
//! thread on Device scope), told with real runs of the sample statistics driver
//! (`drivers::stats`).
//!
//! Client threads send reads, writes and `IOCTL_STATS_GET` to one statistics device per
//! variant. Every callback busy-waits a little (simulated work), then counts its request in the
//! statistics block. Each variant protects the block differently; the table shows what that
//! costs (throughput, p99 latency, time at DISPATCH_LEVEL, deferrals) and whether the count is
//! exact. A bar chart of throughput and a callback timeline (Device scope vs Queue scope vs no
//! scope) are written to the output folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drivers::stats::{self, IOCTL_STATS_GET, StatsBlock, StatsConfig, StatsVariant};
use hdrhistogram::Histogram;
use nt::io::IoOp;
use nt::{Irql, Kernel, NtStatus};
use serde::Serialize;
use wdf::{Driver, LockOwner, ObjectAttributes, Queue};

use crate::chart;
use crate::observe::{Class, ObjectSpec, Recorder, Recording};
use crate::progress;
use crate::run::Latency;

/// Simulated work per callback.
pub const WORK: Duration = Duration::from_micros(10);
/// The unsynchronized variant's window between reading and writing the block.
pub const RACE_WINDOW: Duration = Duration::from_micros(1);

/// Demo options.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Folder for the chart, the timeline and `results.json`.
    pub out: PathBuf,
    /// Client threads.
    pub threads: usize,
    /// How long each variant runs.
    pub duration: Duration,
    /// Show progress on stderr.
    pub progress: bool,
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct DemoRow {
    /// The stats driver variant.
    pub variant: &'static str,
    /// The IRQL requests arrived at.
    pub arrival_irql: &'static str,
    /// The queues' resolved scope.
    pub sync_scope: String,
    /// The device's execution level.
    pub execution_level: String,
    /// Requests completed.
    pub completed: u64,
    /// Requests per second.
    pub throughput_rps: f64,
    /// Round-trip latency.
    pub latency_us: Latency,
    /// Time inside callbacks at DISPATCH_LEVEL, ms.
    pub dispatch_time_ms: f64,
    /// Share of all callback time spent at DISPATCH_LEVEL.
    pub dispatch_share: f64,
    /// The most callbacks of the device running at once.
    pub max_concurrent: u64,
    /// Dispatch passes deferred to a work item or DPC.
    pub deferred: u64,
    /// Requests the block should have counted.
    pub expected: u64,
    /// What it counted.
    pub counted: u64,
    /// `expected - counted`.
    pub lost_updates: u64,
}

/// The demo's JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// Client threads.
    pub threads: usize,
    /// Run length per variant, ms.
    pub duration_ms: u64,
    /// Simulated work per callback, µs.
    pub work_us: u64,
    /// The rows.
    pub rows: Vec<DemoRow>,
    /// The throughput chart.
    pub chart: String,
    /// The callback timeline.
    pub timeline: String,
    /// What the table shows, in sentences.
    pub findings: Vec<String>,
}

/// The id of the lock `q`'s callbacks take (`device:<device>`, `queue:<queue>`), if any: what
/// `explain` calls the lock's owner.
pub(crate) fn lock_id(device: &str, q: &Queue) -> Option<String> {
    match q.constraints().lock {
        LockOwner::Device => Some(format!("device:{device}")),
        LockOwner::Own => Some(format!("queue:{}", q.name())),
        LockOwner::Nothing => None,
    }
}

struct VariantRun {
    row: DemoRow,
    recording: Recording,
}

fn run_variant(
    kernel: &Kernel,
    variant: StatsVariant,
    arrival: Irql,
    threads: usize,
    duration: Duration,
    keep_spans: bool,
    tag: &str,
) -> Result<VariantRun, NtStatus> {
    let driver = Driver::create(kernel, ObjectAttributes::default())?;
    let name = format!("stats-{}{tag}", variant.name());
    let mut cfg = StatsConfig::new(variant);
    cfg.work = WORK;
    if variant == StatsVariant::Unsynchronized {
        cfg.race_window = RACE_WINDOW;
    }
    let dev = stats::create(&driver, &name, cfg)?;
    let did = format!("device:{name}");
    let mut specs = Vec::new();
    for q in [dev.read_write_queue(), dev.control_queue()] {
        specs.push(ObjectSpec {
            class: Class::Queue,
            name: q.name().to_string(),
            id: format!("queue:{}", q.name()),
            device: Some(0),
            lock: lock_id(&name, q),
        });
    }
    if let Some(w) = dev.work_item() {
        specs.push(ObjectSpec {
            class: Class::WorkItem,
            name: w.header().name().to_string(),
            id: format!("work_item:{}", w.header().name()),
            device: Some(0),
            lock: w.is_serialized().then(|| did.clone()),
        });
    }
    let recorder = Recorder::new(specs, vec![did.clone()], keep_spans);
    recorder.install();
    let stop = AtomicBool::new(false);
    let completed = AtomicU64::new(0);
    let start = Instant::now();
    let hists: Vec<Histogram<u64>> = std::thread::scope(|s| {
        let mut hs = Vec::new();
        for i in 0..threads {
            let (stop, completed, name) = (&stop, &completed, &name);
            hs.push(
                std::thread::Builder::new()
                    .name(format!("client-{i}"))
                    .spawn_scoped(s, move || {
                        let mut hist = Histogram::<u64>::new(3).expect("3 digits");
                        let Ok(h) = kernel.io().open(name) else {
                            return hist;
                        };
                        let mut k = i as u64;
                        while !stop.load(Ordering::Relaxed) {
                            k = k
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let op = match (k >> 33) % 20 {
                                0..=8 => IoOp::Read {
                                    offset: 0,
                                    length: 64,
                                },
                                9..=17 => IoOp::Write {
                                    offset: 0,
                                    data: vec![1; 64],
                                },
                                _ => IoOp::DeviceControl {
                                    code: IOCTL_STATS_GET,
                                    input: Vec::new(),
                                    output_length: StatsBlock::SIZE,
                                },
                            };
                            let t0 = Instant::now();
                            let c = h.submit_at(op, arrival).wait();
                            let _ = hist.record((t0.elapsed().as_nanos() as u64).max(1));
                            if c.status.is_success() {
                                completed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        h.close();
                        hist
                    })
                    .expect("spawn a client"),
            );
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Histogram::new(3).expect("3 digits"))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    kernel.flush_dpcs();
    kernel.flush_work();
    let block = dev.block()?;
    Recorder::uninstall();
    let recording = recorder.finish();
    let mut hist = Histogram::<u64>::new(3).expect("3 digits");
    for h in &hists {
        let _ = hist.add(h);
    }
    let deferred: u64 = [dev.read_write_queue(), dev.control_queue()]
        .iter()
        .map(|q| {
            let s = q.stats();
            s.deferred_irql + s.deferred_lock
        })
        .sum();
    let completed = completed.load(Ordering::SeqCst);
    let dc = dev.device().constraints();
    let qc = dev.read_write_queue().constraints();
    let row = DemoRow {
        variant: variant.name(),
        arrival_irql: if arrival == Irql::Dispatch {
            "dispatch"
        } else {
            "passive"
        },
        sync_scope: qc.sync_scope.to_string(),
        execution_level: dc.execution_level.to_string(),
        completed,
        throughput_rps: completed as f64 / elapsed,
        latency_us: Latency::of(&hist),
        dispatch_time_ms: recording.dispatch_ns as f64 / 1e6,
        dispatch_share: if recording.busy_ns == 0 {
            0.0
        } else {
            recording.dispatch_ns as f64 / recording.busy_ns as f64
        },
        max_concurrent: recording.max_concurrent.get(&did).copied().unwrap_or(0),
        deferred,
        expected: completed,
        counted: block.total_requests,
        lost_updates: completed.saturating_sub(block.total_requests),
    };
    driver.unload();
    Ok(VariantRun { row, recording })
}

fn label(r: &DemoRow) -> String {
    if r.arrival_irql == "dispatch" {
        format!("{}, sent at DISPATCH", r.variant)
    } else {
        r.variant.to_string()
    }
}

/// Runs the demo and returns its report (the caller prints it).
pub fn run(opts: &DemoOptions) -> Result<DemoReport, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| format!("cannot create {}: {e}", opts.out.display()))?;
    let kernel = crate::run::kernel();
    let threads = opts.threads.max(1);
    // The timelines use one client per core, so a callback is rarely preempted mid-way.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let plan: Vec<(StatsVariant, Irql)> = vec![
        (StatsVariant::Unsynchronized, Irql::Passive),
        (StatsVariant::DeviceScope, Irql::Passive),
        (StatsVariant::QueueScope, Irql::Passive),
        (StatsVariant::SpinLock, Irql::Passive),
        (StatsVariant::PassiveDeviceScope, Irql::Passive),
        (StatsVariant::PassiveDeviceScope, Irql::Dispatch),
    ];
    let timeline_plan = [
        (
            StatsVariant::DeviceScope,
            "Device scope: one callback of the device at a time",
        ),
        (
            StatsVariant::QueueScope,
            "Queue scope: the control queue runs beside the read/write queue",
        ),
        (
            StatsVariant::Unsynchronized,
            "No scope (None): callbacks overlap freely",
        ),
    ];
    let bar = progress::bar(
        (plan.len() + timeline_plan.len()) as u64,
        "runs",
        opts.progress,
    );
    let mut rows = Vec::new();
    for (i, (v, irql)) in plan.iter().enumerate() {
        bar.set_message(v.name());
        let r = run_variant(
            &kernel,
            *v,
            *irql,
            threads,
            opts.duration,
            false,
            &format!("-{i}"),
        )?;
        rows.push(r.row);
        bar.inc(1);
    }
    let mut recs = Vec::new();
    for (i, (v, title)) in timeline_plan.iter().enumerate() {
        bar.set_message(format!("timeline {}", v.name()));
        let r = run_variant(
            &kernel,
            *v,
            Irql::Passive,
            threads.min(cores),
            Duration::from_millis(60),
            true,
            &format!("-t{i}"),
        )?;
        recs.push((title.to_string(), r.recording));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let chart_path = opts.out.join("throughput.svg");
    let bars: Vec<(String, f64)> = rows.iter().map(|r| (label(r), r.throughput_rps)).collect();
    chart::bar_chart(
        &chart_path,
        &format!(
            "Statistics driver: requests/s per variant ({threads} client threads, {} µs of work per callback)",
            WORK.as_micros()
        ),
        "requests/s",
        &bars,
    )
    .map_err(|e| format!("cannot write {}: {e}", chart_path.display()))?;
    let timeline_path = opts.out.join("timeline.svg");
    let panels: Vec<chart::Panel<'_>> = recs
        .iter()
        .map(|(t, r)| chart::Panel {
            title: t.clone(),
            recording: r,
        })
        .collect();
    chart::timeline(&timeline_path, &panels, 90)
        .map_err(|e| format!("cannot write {}: {e}", timeline_path.display()))?;
    let findings = findings(&rows);
    let report = DemoReport {
        threads,
        duration_ms: opts.duration.as_millis() as u64,
        work_us: WORK.as_micros() as u64,
        rows,
        chart: chart_path.display().to_string(),
        timeline: timeline_path.display().to_string(),
        findings,
    };
    let json_path = opts.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    Ok(report)
}

fn findings(rows: &[DemoRow]) -> Vec<String> {
    let find = |v: &str, a: &str| rows.iter().find(|r| r.variant == v && r.arrival_irql == a);
    let mut f = Vec::new();
    if let Some(r) = find("unsynchronized", "passive") {
        f.push(format!(
            "unsynchronized: scope None and no lock; up to {} callbacks ran at once and {} of {} updates were lost ({:.2}%): two EvtIo callbacks read the same old value and both wrote it back plus one (the article's race).",
            r.max_concurrent,
            r.lost_updates,
            r.expected,
            100.0 * r.lost_updates as f64 / r.expected.max(1) as f64
        ));
    }
    let spin = find("spin-lock", "passive");
    if let Some(r) = find("device-scope", "passive") {
        let ratio = spin.map_or(String::new(), |s| {
            format!(
                "; {:.2}x the spin-lock variant's throughput",
                r.throughput_rps / s.throughput_rps.max(1.0)
            )
        });
        f.push(format!(
            "device-scope: exact, but the device's spin lock is held around every callback of both parallel queues: at most {} at a time (the forum's answer: yes, that's what it means), and {:.0}% of callback time at DISPATCH_LEVEL{ratio}.",
            r.max_concurrent,
            100.0 * r.dispatch_share
        ));
    }
    if let Some(r) = find("queue-scope", "passive") {
        f.push(format!(
            "queue-scope: exact; reads and writes share one queue's lock, but the control queue runs beside them (up to {} at once), still all at DISPATCH_LEVEL.",
            r.max_concurrent
        ));
    }
    if let Some(r) = spin {
        f.push(format!(
            "spin-lock: exact and parallel (up to {} at once), the articles' advice: scope None, callbacks at PASSIVE_LEVEL, and a spin lock (DISPATCH_LEVEL) held only around the three additions; {:.0} requests/s.",
            r.max_concurrent,
            r.throughput_rps
        ));
    }
    if let (Some(p), Some(d)) = (
        find("passive-device-scope", "passive"),
        find("passive-device-scope", "dispatch"),
    ) {
        f.push(format!(
            "passive-device-scope: exact, callbacks at PASSIVE_LEVEL under a mutex ({:.1} ms at DISPATCH_LEVEL) so a work item can share the lock; but requests sent at DISPATCH_LEVEL are deferred to a work item ({} deferrals): p99 {:.1} µs instead of {:.1} µs.",
            p.dispatch_time_ms, d.deferred, d.latency_us.p99, p.latency_us.p99
        ));
    }
    f
}

/// The text form of the report.
pub fn render(r: &DemoReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "wdfkit demo: the statistics block of \"Understanding Sync Scope in WDF Drivers\""
    );
    let _ = writeln!(
        s,
        "{} client threads x {:.1} s per variant; reads, writes and IOCTL_STATS_GET on two parallel queues; {} µs of work per callback",
        r.threads,
        r.duration_ms as f64 / 1e3,
        r.work_us
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<40} {:<16} {:>10} {:>9} {:>13} {:>8} {:>9} {:>10}",
        "variant", "scope/level", "req/s", "p99 µs", "DISPATCH ms", "at once", "deferred", "lost"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:<40} {:<16} {:>10.0} {:>9.1} {:>8.0} ({:>2.0}%) {:>8} {:>9} {:>10}",
            label(row),
            format!("{}/{}", row.sync_scope, row.execution_level),
            row.throughput_rps,
            row.latency_us.p99,
            row.dispatch_time_ms,
            100.0 * row.dispatch_share,
            row.max_concurrent,
            row.deferred,
            row.lost_updates
        );
    }
    let _ = writeln!(s);
    for f in &r.findings {
        let _ = writeln!(s, "- {f}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "wrote {}", r.chart);
    let _ = writeln!(s, "wrote {}", r.timeline);
    s
}

/// The default output folder.
pub fn default_out() -> PathBuf {
    Path::new("wdfkit-demo-out").to_path_buf()
}
