//! `wdfkit run`: build a configuration with `wdf`, drive its workload through `nt`'s I/O
//! manager, and report what happened.
//!
//! * Client threads (`workload.threads`) each open every device and send requests picked from
//!   `workload.mix`, round-robin over the devices, at `workload.arrival_irql`
//!   (`Handle::submit_at`), waiting for each to complete. Latency is measured around that
//!   round trip (hdrhistogram).
//! * Every callback (I/O callbacks, timers, DPCs, work items, manual-queue ready notifications)
//!   does `workload.work` and then adds one to the statistics block as `workload.stats` says.
//!   DPCs and work items are enqueued by every I/O callback of their parent (a queue, or any
//!   queue of a device parent); periodic timers run for the whole run.
//! * The verifier is on (record mode) for the run; its counts are reported by rule, and the DPC
//!   watchdog's findings (`DPC_WATCHDOG_*`) separately.
//! * `dispatch_time_us` is the sum of the durations of the callbacks observed running at
//!   DISPATCH_LEVEL (from the observer's begin/end events; time spent spinning for the lock
//!   before the callback starts is not included).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nt::io::{Handle, IoOp};
use nt::sync::SpinLock;
use nt::{Kernel, NtStatus};
use serde::Serialize;
use wdf::{CallbackContext, Dpc, IoContext, Request, ScopeLocked, ScopeToken, WorkItem};

use crate::build::{self, BuiltExec, Hooks};
use crate::config::{Amount, Config, ExecKind, Handler, StatsMode, Work};
use crate::explain::Explanation;
use crate::observe::{Class, ObjectSpec, Recorder, Recording};
use crate::progress;

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Keep every callback as a span (for `--trace` / `--timeline`).
    pub keep_spans: bool,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Override `workload.threads`.
    pub threads: Option<usize>,
    /// Override the run length.
    pub amount: Option<Amount>,
}

/// Latency percentiles, µs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50) as f64 / 1e3,
            p99: h.value_at_quantile(0.99) as f64 / 1e3,
            max: h.max() as f64 / 1e3,
        }
    }
}

/// Deferred dispatch passes, from the queues' counters.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Deferrals {
    /// Passes deferred to a work item (a passive queue entered above PASSIVE_LEVEL, or a
    /// passive queue whose lock the thread held).
    pub work_item: u64,
    /// Passes deferred to the queue's DPC (a dispatch queue whose lock the thread held).
    pub dpc: u64,
}

/// One DPC-watchdog rule that fired.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The rule.
    pub rule: &'static str,
    /// How often.
    pub count: u64,
    /// The most recent message.
    pub example: Option<String>,
}

/// The statistics block: what the callbacks should have counted and what they did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StatsReport {
    /// How the block was updated.
    pub mode: &'static str,
    /// Updates attempted (one per callback that ran).
    pub expected: u64,
    /// What the block holds at the end.
    pub counted: u64,
    /// `expected - skipped - counted`.
    pub lost_updates: u64,
    /// `stats = "scope"` only: updates from callbacks holding no scope lock (they cannot reach
    /// scope-locked data, so they are not made).
    pub skipped: u64,
}

/// Everything `run` reports (the JSON form of `wdfkit run --json`).
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Requests completed with success.
    pub completed: u64,
    /// Requests completed with an error status.
    pub failed: u64,
    /// Requests not completed within 10 s (then cancelled).
    pub timed_out: u64,
    /// Wall time of the client phase, s.
    pub elapsed_s: f64,
    /// `completed / elapsed_s`.
    pub throughput_rps: f64,
    /// Round-trip latency, µs.
    pub latency_us: Latency,
    /// Callbacks observed (each is one slice in `--trace`).
    pub callbacks: u64,
    /// Per device and per object: the most callbacks seen running at once.
    pub max_concurrent_callbacks: BTreeMap<String, u64>,
    /// Per object: the IRQLs its callbacks ran at.
    pub callback_irqls: BTreeMap<String, Vec<&'static str>>,
    /// Deferred dispatch passes.
    pub deferrals: Deferrals,
    /// Sum of callback durations at DISPATCH_LEVEL, µs.
    pub dispatch_time_us: f64,
    /// DPC-watchdog findings.
    pub watchdog: Vec<Finding>,
    /// Verifier violations by rule.
    pub verifier: BTreeMap<String, u64>,
    /// The statistics block.
    pub stats: StatsReport,
}

/// A run's report and what the observer recorded.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report.
    pub report: RunReport,
    /// Spans and per-object measurements.
    pub recording: Recording,
}

/// Why a run did not happen.
#[derive(Debug)]
pub enum RunError {
    /// The framework refuses the configuration (exit code 1).
    Rejected(Box<Explanation>),
    /// Nothing to send requests to, or the kernel refused something (exit code 1).
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Rejected(e) => {
                write!(f, "the framework rejects the configuration:")?;
                for er in &e.errors {
                    write!(
                        f,
                        "\n  {}: {} ({}): {}",
                        er.object, er.status, er.code, er.message
                    )?;
                }
                Ok(())
            }
            RunError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RunError {}

/// A DPC or work item kicked by I/O callbacks.
enum Kick {
    Dpc(Arc<Dpc>),
    WorkItem(Arc<WorkItem>),
}

struct Blocks {
    /// `stats = "scope"`: one block per lock key.
    scope: Vec<Option<ScopeLocked<u64>>>,
    /// `stats = "spin-lock"`: one per device.
    spin: Vec<SpinLock<u64>>,
    /// `stats = "unsynchronized"`: one per device.
    racy: Vec<AtomicU64>,
    /// Per queue: what its I/O callbacks enqueue.
    kicks: Vec<Vec<Kick>>,
}

/// The workload's callbacks.
struct Behaviour {
    work: Work,
    race_window: Duration,
    stats: StatsMode,
    queue_device: Vec<usize>,
    queue_key: Vec<Option<usize>>,
    exec_device: Vec<usize>,
    exec_key: Vec<Option<usize>>,
    blocks: OnceLock<Blocks>,
    attempts: AtomicU64,
    skipped: AtomicU64,
}

fn spin_for(d: Duration) {
    if d.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

impl Behaviour {
    fn work(&self) {
        match self.work {
            Work::None => {}
            Work::Spin { us } => spin_for(Duration::from_micros(us)),
            Work::Sleep { us } => {
                // A kernel wait: above PASSIVE_LEVEL the verifier reports it.
                let ev = nt::sync::Event::new(nt::sync::EventKind::Notification, false);
                ev.wait_timeout(Duration::from_micros(us.max(1)));
            }
        }
    }

    fn update(&self, token: Option<&mut ScopeToken>, key: Option<usize>, device: usize) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let Some(b) = self.blocks.get() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match self.stats {
            StatsMode::Scope => {
                let done = match (token, key.and_then(|k| b.scope[k].as_ref())) {
                    (Some(t), Some(block)) => match block.try_get(t) {
                        Ok(v) => {
                            *v += 1;
                            true
                        }
                        Err(_) => false,
                    },
                    _ => false,
                };
                if !done {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
            StatsMode::SpinLock => *b.spin[device].lock() += 1,
            StatsMode::Unsynchronized => {
                let v = b.racy[device].load(Ordering::Relaxed);
                spin_for(self.race_window);
                b.racy[device].store(v + 1, Ordering::Relaxed);
            }
        }
    }
}

impl Hooks for Behaviour {
    fn io(&self, queue: usize, cx: &mut IoContext<'_, '_>, request: Request, information: usize) {
        self.work();
        self.update(cx.scope(), self.queue_key[queue], self.queue_device[queue]);
        if let Some(b) = self.blocks.get() {
            for k in &b.kicks[queue] {
                match k {
                    Kick::Dpc(d) => {
                        d.enqueue();
                    }
                    Kick::WorkItem(w) => {
                        w.enqueue();
                    }
                }
            }
        }
        request.complete_with_information(NtStatus::SUCCESS, information);
    }

    fn exec(&self, exec: usize, cx: &mut CallbackContext<'_, '_>) {
        self.work();
        self.update(cx.scope(), self.exec_key[exec], self.exec_device[exec]);
    }
}

/// The lock key of a lock owner id: devices first, then queues with their own lock.
fn lock_key(config: &Config, owner: Option<&str>) -> Option<usize> {
    let owner = owner?;
    if let Some(d) = owner.strip_prefix("device:") {
        return config.device_index(d);
    }
    let q = owner.strip_prefix("queue:")?;
    config.queue_index(q).map(|i| config.device.len() + i)
}

/// The observer's view of a configuration's objects.
pub fn object_specs(config: &Config, e: &Explanation) -> (Vec<ObjectSpec>, Vec<String>) {
    let devices = config
        .device
        .iter()
        .map(|d| format!("device:{}", d.name.get_ref()))
        .collect();
    let mut specs = Vec::new();
    for o in &e.objects {
        let class = match o.kind {
            "queue" => Class::Queue,
            "file_object" => Class::File,
            "dpc" => Class::Dpc,
            "timer" => Class::Timer,
            "work_item" => Class::WorkItem,
            _ => continue,
        };
        specs.push(ObjectSpec {
            class,
            name: o.name.clone(),
            id: o.id.clone(),
            device: o.device,
            lock: o.lock.owner.clone(),
        });
    }
    (specs, devices)
}

fn op_for(h: Handler, bytes: usize, offset: u64) -> IoOp {
    match h {
        Handler::Read => IoOp::Read {
            offset,
            length: bytes,
        },
        Handler::Write => IoOp::Write {
            offset,
            data: vec![0x5a; bytes],
        },
        Handler::DeviceControl => IoOp::DeviceControl {
            code: drivers::ctl_code(
                drivers::FILE_DEVICE_UNKNOWN,
                0x900,
                drivers::METHOD_BUFFERED,
                0,
            ),
            input: Vec::new(),
            output_length: 8,
        },
        Handler::InternalDeviceControl | Handler::Default => IoOp::InternalDeviceControl {
            code: drivers::ctl_code(
                drivers::FILE_DEVICE_UNKNOWN,
                0x901,
                drivers::METHOD_BUFFERED,
                0,
            ),
            input: Vec::new(),
            output_length: 8,
        },
    }
}

/// A small deterministic generator (xorshift64*), one per client thread.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default)]
struct ClientResult {
    completed: u64,
    failed: u64,
    timed_out: u64,
    hist: Option<Histogram<u64>>,
}

/// The kernel a run uses: one DPC processor per core, at least two workers.
pub fn kernel() -> Kernel {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Kernel::builder()
        .processors(cores)
        .workers(cores.max(2))
        .build()
}

/// Runs `config`'s workload. The configuration must be accepted (`explanation.ok`).
pub fn run(
    config: &Config,
    explanation: &Explanation,
    options: &RunOptions,
) -> Result<RunOutcome, RunError> {
    if !explanation.ok {
        return Err(RunError::Rejected(Box::new(explanation.clone())));
    }
    if config.queue.is_empty() {
        return Err(RunError::Failed(
            "nothing to run: the configuration has no queue".into(),
        ));
    }
    let w = &config.workload;
    let nd = config.device.len();
    let id_lock = |id: &str| -> Option<usize> {
        lock_key(
            config,
            explanation.object(id).and_then(|o| o.lock.owner.as_deref()),
        )
    };
    let queue_device: Vec<usize> = config
        .queue
        .iter()
        .map(|q| config.device_index(q.device.get_ref()).expect("checked"))
        .collect();
    let queue_key: Vec<Option<usize>> = config
        .queue
        .iter()
        .map(|q| id_lock(&format!("queue:{}", q.name.get_ref())))
        .collect();
    let mut exec_device = Vec::new();
    let mut exec_key = Vec::new();
    for (kind, e) in config.execs() {
        let id = format!("{}:{}", kind.name(), e.name.get_ref());
        exec_device.push(explanation.object(&id).and_then(|o| o.device).unwrap_or(0));
        exec_key.push(id_lock(&id));
    }
    let behaviour = Arc::new(Behaviour {
        work: w.work,
        race_window: Duration::from_micros(w.race_window_us),
        stats: w.stats,
        queue_device: queue_device.clone(),
        queue_key: queue_key.clone(),
        exec_device,
        exec_key: exec_key.clone(),
        blocks: OnceLock::new(),
        attempts: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
    });

    nt::verifier::set_echo(false);
    nt::verifier::reset();
    nt::verifier::enable(nt::verifier::Mode::Record);
    let kernel = kernel();
    let built = build::build(config, &kernel, behaviour.clone());
    if !built.errors.is_empty() {
        built.unload();
        nt::verifier::disable();
        let list: Vec<String> = built
            .errors
            .iter()
            .map(|(id, s)| format!("{id}: {s}"))
            .collect();
        return Err(RunError::Failed(format!(
            "object creation failed although explain accepted it (please report): {}",
            list.join("; ")
        )));
    }

    // The statistics blocks and the kicks, before any request or timer.
    let mut scope_blocks: Vec<Option<ScopeLocked<u64>>> =
        (0..nd + config.queue.len()).map(|_| None).collect();
    for k in queue_key.iter().chain(exec_key.iter()).flatten() {
        if scope_blocks[*k].is_none() {
            scope_blocks[*k] = Some(if *k < nd {
                built.devices[*k].as_ref().expect("built").scope_locked(0)
            } else {
                built.queues[*k - nd]
                    .as_ref()
                    .expect("built")
                    .scope_locked(0)
            });
        }
    }
    let mut kicks: Vec<Vec<Kick>> = config.queue.iter().map(|_| Vec::new()).collect();
    let mut timers = Vec::new();
    let mut work_items = Vec::new();
    for (ei, (kind, e)) in config.execs().enumerate() {
        let Some(x) = &built.execs[ei] else { continue };
        let parent = e.parent.get_ref();
        let targets: Vec<usize> = if let Some(qi) = config.queue_index(parent) {
            vec![qi]
        } else {
            (0..config.queue.len())
                .filter(|qi| config.queue[*qi].device.get_ref() == parent)
                .collect()
        };
        match x {
            BuiltExec::Dpc(d) => {
                for t in targets {
                    kicks[t].push(Kick::Dpc(d.clone()));
                }
            }
            BuiltExec::WorkItem(wi) => {
                work_items.push(wi.clone());
                for t in targets {
                    kicks[t].push(Kick::WorkItem(wi.clone()));
                }
            }
            BuiltExec::Timer(t) => {
                let due = e
                    .due_ms
                    .unwrap_or(if e.period_ms > 0 { e.period_ms } else { 1 });
                timers.push((t.clone(), Duration::from_millis(due)));
            }
        }
        let _ = kind == ExecKind::Timer;
    }
    let blocks = Blocks {
        scope: scope_blocks,
        spin: (0..nd)
            .map(|_| SpinLock::named("stats block", 0u64))
            .collect(),
        racy: (0..nd).map(|_| AtomicU64::new(0)).collect(),
        kicks,
    };
    let _ = behaviour.blocks.set(blocks);

    let (specs, device_ids) = object_specs(config, explanation);
    let recorder = Recorder::new(specs, device_ids, options.keep_spans);
    recorder.install();

    // Devices the clients talk to: those with at least one queue.
    let targets: Vec<String> = config
        .device
        .iter()
        .enumerate()
        .filter(|(di, _)| queue_device.contains(di))
        .map(|(_, d)| d.name.get_ref().clone())
        .collect();
    let threads = options.threads.unwrap_or(w.threads).max(1);
    let amount = options.amount.unwrap_or_else(|| w.amount());
    let weights = w.mix.weights();
    let total: f64 = weights.iter().map(|(_, x)| x).sum();
    let irql = w.arrival_irql.irql();
    let stop = AtomicBool::new(false);
    let remaining = AtomicI64::new(match amount {
        Amount::Requests(n) => n as i64,
        Amount::Duration(_) => i64::MAX,
    });
    let done = AtomicU64::new(0);
    let bar = progress::bar(
        match amount {
            Amount::Requests(n) => n,
            Amount::Duration(d) => d.as_millis() as u64,
        },
        match amount {
            Amount::Requests(_) => "requests",
            Amount::Duration(_) => "ms",
        },
        options.progress,
    );

    for (t, due) in &timers {
        t.start(*due);
    }
    let start = Instant::now();
    let results: Vec<Result<ClientResult, NtStatus>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..threads {
            let (kernel, targets, weights, stop, remaining, done) =
                (&kernel, &targets, &weights, &stop, &remaining, &done);
            let bytes = w.bytes;
            let h = std::thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn_scoped(s, move || -> Result<ClientResult, NtStatus> {
                    let handles: Vec<Handle> = targets
                        .iter()
                        .map(|n| kernel.io().open(n))
                        .collect::<Result<_, _>>()?;
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) * 0x1000_0001));
                    let mut r = ClientResult {
                        hist: Histogram::new(3).ok(),
                        ..ClientResult::default()
                    };
                    let mut k = i;
                    loop {
                        if stop.load(Ordering::Relaxed)
                            || remaining.fetch_sub(1, Ordering::Relaxed) <= 0
                        {
                            break;
                        }
                        let mut x = rng.next_f64() * total;
                        let mut pick = weights[0].0;
                        for (h, wgt) in weights {
                            pick = *h;
                            if x < *wgt {
                                break;
                            }
                            x -= wgt;
                        }
                        k += 1;
                        let handle = &handles[k % handles.len()];
                        let op = op_for(pick, bytes, (k as u64 % 1024) * bytes as u64);
                        let t0 = Instant::now();
                        let pending = handle.submit_at(op, irql);
                        match pending.wait_timeout(Duration::from_secs(10)) {
                            Ok(c) if c.status.is_success() => r.completed += 1,
                            Ok(_) => r.failed += 1,
                            Err(p) => {
                                p.cancel();
                                r.timed_out += 1;
                            }
                        }
                        if let Some(h) = &mut r.hist {
                            let _ = h.record((t0.elapsed().as_nanos() as u64).max(1));
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    for h in handles {
                        h.close();
                    }
                    Ok(r)
                })
                .expect("spawn a client thread");
            handles.push(h);
        }
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let all_done = handles.iter().all(|h| h.is_finished());
            match amount {
                Amount::Duration(d) => {
                    let el = start.elapsed();
                    bar.set_position((el.as_millis() as u64).min(d.as_millis() as u64));
                    if el >= d {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Amount::Requests(_) => bar.set_position(done.load(Ordering::Relaxed)),
            }
            if all_done {
                break;
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(NtStatus::INTERNAL_ERROR)))
            .collect()
    });
    let elapsed = start.elapsed();
    bar.finish_and_clear();

    // Let timers, DPCs and work items finish before reading the block.
    for (t, _) in &timers {
        t.stop(true);
    }
    for _ in 0..2 {
        kernel.flush_dpcs();
        kernel.flush_work();
    }
    for wi in &work_items {
        let _ = wi.flush();
    }
    kernel.flush_dpcs();

    let b = behaviour.blocks.get().expect("set above");
    let counted: u64 = match w.stats {
        StatsMode::Scope => {
            let mut sum = 0;
            for (k, block) in b.scope.iter().enumerate() {
                let Some(block) = block else { continue };
                let mut token = if k < nd {
                    built.devices[k].as_ref().expect("built").acquire_lock()
                } else {
                    built.queues[k - nd].as_ref().expect("built").acquire_lock()
                };
                if let Ok(v) = block.try_get(&mut token) {
                    sum += *v;
                }
            }
            sum
        }
        StatsMode::SpinLock => b.spin.iter().map(|s| *s.lock()).sum(),
        StatsMode::Unsynchronized => b.racy.iter().map(|a| a.load(Ordering::SeqCst)).sum(),
    };
    Recorder::uninstall();
    let recording = recorder.finish();

    let mut deferrals = Deferrals::default();
    for q in built.queues.iter().flatten() {
        let st = q.stats();
        deferrals.work_item += st.deferred_irql;
        if q.constraints().passive_callbacks {
            deferrals.work_item += st.deferred_lock;
        } else {
            deferrals.dpc += st.deferred_lock;
        }
    }
    built.unload();
    drop(built);

    let counts = nt::verifier::counts();
    let recent = nt::verifier::recent();
    nt::verifier::disable();
    let watchdog = counts
        .iter()
        .filter(|(r, _)| r.name.starts_with("DPC_WATCHDOG"))
        .map(|(r, n)| Finding {
            rule: r.name,
            count: *n,
            example: recent
                .iter()
                .rev()
                .find(|v| v.rule.name == r.name)
                .map(|v| v.message.clone()),
        })
        .collect();
    let verifier = counts
        .iter()
        .map(|(r, n)| (r.name.to_string(), *n))
        .collect();

    let mut completed = 0;
    let mut failed = 0;
    let mut timed_out = 0;
    let mut hist: Histogram<u64> = Histogram::new(3).expect("3 significant figures");
    for r in results {
        let r =
            r.map_err(|s| RunError::Failed(format!("a client could not open its devices: {s}")))?;
        completed += r.completed;
        failed += r.failed;
        timed_out += r.timed_out;
        if let Some(h) = &r.hist {
            let _ = hist.add(h);
        }
    }
    let expected = behaviour.attempts.load(Ordering::SeqCst);
    let skipped = behaviour.skipped.load(Ordering::SeqCst);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let report = RunReport {
        completed,
        failed,
        timed_out,
        elapsed_s: secs,
        throughput_rps: completed as f64 / secs,
        latency_us: Latency::of(&hist),
        callbacks: recording.callbacks,
        max_concurrent_callbacks: recording.max_concurrent.clone(),
        callback_irqls: recording.irqls.clone(),
        deferrals,
        dispatch_time_us: recording.dispatch_ns as f64 / 1e3,
        watchdog,
        verifier,
        stats: StatsReport {
            mode: w.stats.name(),
            expected,
            counted,
            lost_updates: expected.saturating_sub(skipped).saturating_sub(counted),
            skipped,
        },
    };
    Ok(RunOutcome { report, recording })
}

/// The text form of a run report.
pub fn render(path: &str, r: &RunReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{path}");
    let _ = writeln!(
        s,
        "  requests   {} completed, {} failed, {} timed out in {:.2} s: {:.0} requests/s",
        r.completed, r.failed, r.timed_out, r.elapsed_s, r.throughput_rps
    );
    let _ = writeln!(
        s,
        "  latency    p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        r.latency_us.p50, r.latency_us.p99, r.latency_us.max
    );
    let _ = writeln!(s, "  callbacks  {} observed", r.callbacks);
    let _ = writeln!(s, "  most callbacks running at once:");
    for (k, v) in &r.max_concurrent_callbacks {
        let irqls = r
            .callback_irqls
            .get(k)
            .map(|v| format!("  at {}", v.join(", ")))
            .unwrap_or_default();
        let _ = writeln!(s, "    {k:<28} {v:>3}{irqls}");
    }
    let _ = writeln!(
        s,
        "  deferrals  {} to a work item, {} to a DPC",
        r.deferrals.work_item, r.deferrals.dpc
    );
    let _ = writeln!(
        s,
        "  DISPATCH_LEVEL  {:.1} ms inside callbacks",
        r.dispatch_time_us / 1e3
    );
    if r.watchdog.is_empty() {
        let _ = writeln!(s, "  watchdog   no findings");
    } else {
        for f in &r.watchdog {
            let _ = writeln!(
                s,
                "  watchdog   {} x{}: {}",
                f.rule,
                f.count,
                f.example.as_deref().unwrap_or("")
            );
        }
    }
    if r.verifier.is_empty() {
        let _ = writeln!(s, "  verifier   no violations");
    } else {
        for (k, v) in &r.verifier {
            let _ = writeln!(s, "  verifier   {k} x{v}");
        }
    }
    let verdict = if r.stats.lost_updates > 0 {
        "LOST UPDATES"
    } else if r.stats.skipped > 0 {
        "incomplete (unserialized callbacks cannot reach scope-locked data)"
    } else {
        "exact"
    };
    let _ = writeln!(
        s,
        "  stats ({})  expected {}, counted {}, lost {}{}: {verdict}",
        r.stats.mode,
        r.stats.expected,
        r.stats.counted,
        r.stats.lost_updates,
        if r.stats.skipped > 0 {
            format!(", skipped {}", r.stats.skipped)
        } else {
            String::new()
        }
    );
    s
}
