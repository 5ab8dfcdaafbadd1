//! `wdfkit soak`: a long randomized run of everything at once, then an audit.
//!
//! **The rig.** Six devices, one per synchronization scope (None, Queue, Device) and execution
//! level (Passive, Dispatch), each with `PanicPolicy::KeepServing` and four queues: a sequential
//! default queue (`seq`, reads and anything unrouted), a parallel queue without a limit (`par`,
//! writes: the lock-free fast path), a parallel queue limited to two (`lim`, device controls)
//! and a manual queue (`man`, internal device controls; drained from its ready notification
//! and by a driver thread). Each device has a framework timer parented to it (periodic at
//! DISPATCH_LEVEL; one-shot and re-armed at PASSIVE_LEVEL), automatically serialized where the
//! framework allows it.
//!
//! **The load.** Client threads send reads, writes and (internal) device controls, at
//! PASSIVE_LEVEL or DISPATCH_LEVEL, keeping a window of requests outstanding and cancelling
//! some of them (`PendingIo::cancel`). What the driver does with a request is chosen by the
//! client and carried in the request (its offset or control code): complete it; fail it; keep
//! it for a driver thread or the timer to complete; mark it cancelable and keep it (the driver
//! thread unmarks it later, or its cancel routine completes it); forward it (`seq` → `par` →
//! `lim` → `man`); requeue it once (manual queue); or panic in the callback. A control thread
//! stops, stops-and-purges, purges and drains random queues (some synchronously), restarts
//! them once their completion callback has fired, and stops and restarts timers.
//!
//! **The audit.** Every request the clients sent completed exactly once (each `PendingIo`
//! yields one completion; none is still pending 30 s after the load stops), with a status from
//! the allowed set; every state-change callback fired; after a final drain every queue is
//! empty, owns nothing, and its books balance (`presented == completed + forwarded + requeued`);
//! after the driver unloads, no framework object (driver, device, queue, timer) and no rig
//! survives (each is checked through a `Weak`); resident memory (sampled from
//! `/proc/self/status`) did not grow beyond a tolerance after warm-up; the verifier recorded
//! nothing but the injected panics (`WDF_CALLBACK_PANICKED`, one per injected panic) and,
//! possibly, DPC-watchdog timing findings.
//!
//! **Determinism.** Every random choice comes from a generator seeded with `--seed`, one stream
//! per thread, drawn in a fixed pattern: a seed replays, on each client, the same requests
//! (device, type, IRQL, behaviour, which of them are followed by a cancel) in the same order,
//! and on the control thread the same state changes and timer restarts in the same order. How
//! the threads interleave, and so which outstanding request a cancel hits and how many requests
//! are sent in the time given, is up to the machine.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use nt::io::{Handle, IoCompletion, IoOp, PendingIo};
use nt::{Irql, Kernel, NtStatus};
use serde::Serialize;
use wdf::{
    CallbackContext, CancelableRequest, Device, DeviceInit, DispatchType, Driver, ExecutionLevel,
    IoContext, ObjectAttributes, PanicPolicy, Queue, QueueConfig, Request, RequestType, SyncScope,
    Timer, TimerConfig,
};

/// What `wdfkit soak` is asked to do.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// How long the load runs (the audit comes after).
    pub duration: Duration,
    /// Seeds every random choice.
    pub seed: u64,
    /// Client threads.
    pub clients: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            duration: Duration::from_secs(60),
            seed: 1,
            clients: 4,
            progress: false,
        }
    }
}

/// The statuses a request may finish with, and why.
pub const ALLOWED_STATUSES: &[(NtStatus, &str)] = &[
    (
        NtStatus::SUCCESS,
        "completed by the driver (or a zero-length read)",
    ),
    (
        NtStatus::CANCELLED,
        "cancelled: by its client, or by a purge",
    ),
    (
        NtStatus::INTERNAL_ERROR,
        "its callback panicked (PanicPolicy::KeepServing)",
    ),
    (
        NtStatus::INVALID_DEVICE_STATE,
        "arrived while its queue was purged or drained",
    ),
    (
        NtStatus::DEVICE_BUSY,
        "forwarded to a queue that was not accepting (STATUS_WDF_BUSY)",
    ),
    (
        NtStatus::INVALID_PARAMETER,
        "the driver failed it on purpose",
    ),
];

/// Requests, from the clients' side.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestReport {
    /// Requests sent.
    pub submitted: u64,
    /// Completions received (each `PendingIo` yields at most one).
    pub completed: u64,
    /// Requests still pending 30 s after the load stopped.
    pub stranded: u64,
    /// `PendingIo::cancel` calls.
    pub cancels_sent: u64,
    /// Completions by status name.
    pub by_status: BTreeMap<String, u64>,
    /// Completions with a status outside [`ALLOWED_STATUSES`].
    pub unexpected_statuses: BTreeMap<String, u64>,
    /// Every request completed exactly once with an allowed status.
    pub accounted: bool,
}

/// What the driver and the control thread did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Operations {
    /// `Queue::stop` (asynchronous, with a completion callback).
    pub stops: u64,
    /// `Queue::stop_and_purge`.
    pub stop_and_purges: u64,
    /// `Queue::purge`.
    pub purges: u64,
    /// `Queue::drain`.
    pub drains: u64,
    /// Of those, the synchronous variants.
    pub synchronous: u64,
    /// `Queue::start` after a change.
    pub starts: u64,
    /// State-change callbacks that fired.
    pub state_callbacks: u64,
    /// `Timer::stop(true)` followed by a restart.
    pub timer_restarts: u64,
    /// Timer callbacks that ran.
    pub timer_ticks: u64,
    /// Successful forwards.
    pub forwards: u64,
    /// Forwards refused (`STATUS_WDF_BUSY`: the destination was not accepting).
    pub forwards_refused: u64,
    /// Requeues on manual queues.
    pub requeues: u64,
    /// Requests the driver kept for later.
    pub held: u64,
    /// Requests marked cancelable.
    pub marked_cancelable: u64,
    /// Of those, taken back with `unmark`.
    pub unmarked: u64,
    /// Driver cancel routines that ran.
    pub cancel_routines: u64,
    /// Panics injected into callbacks (I/O callbacks, ready notifications and timers).
    pub panics_injected: u64,
    /// Manual-queue ready notifications.
    pub ready_notifications: u64,
}

/// One queue at the end.
#[derive(Clone, Debug, Serialize)]
pub struct QueueReport {
    /// `device/queue`.
    pub queue: String,
    /// `sequential`, `parallel`, `parallel(2)`, `manual`.
    pub dispatch: String,
    /// The device's scope and level.
    pub scope: &'static str,
    /// The device's level.
    pub level: &'static str,
    /// `QueueStats` counters.
    pub arrived: u64,
    /// Presented to the driver (or retrieved).
    pub presented: u64,
    /// Completed while driver-owned.
    pub completed: u64,
    /// Forwarded to another queue by the driver.
    pub forwarded: u64,
    /// Requeued by the driver.
    pub requeued: u64,
    /// Cancelled while queued.
    pub cancelled_queued: u64,
    /// Refused at arrival (not accepting).
    pub rejected: u64,
    /// Dispatch passes deferred to a work item (IRQL).
    pub deferred_irql: u64,
    /// Dispatch passes deferred because the thread held the queue's lock.
    pub deferred_lock: u64,
    /// Driver-owned requests after the final drain.
    pub driver_owned: usize,
    /// Queued requests after the final drain.
    pub pending: usize,
    /// `presented == completed + forwarded + requeued`, nothing owned, nothing queued.
    pub balanced: bool,
}

/// Framework objects and what is left of them after the driver unloads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ObjectReport {
    /// Driver, devices, queues and timers created.
    pub created: usize,
    /// Timer creations refused with automatic serialization (then created without it).
    pub timers_unserialized: usize,
    /// Objects (and soak rigs) still alive after unload: leaks.
    pub alive_after_unload: Vec<String>,
}

/// Resident memory over the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryReport {
    /// Samples taken (every 200 ms).
    pub samples: usize,
    /// Resident KiB after warm-up (the first sample at 20% of the run).
    pub start_kib: u64,
    /// Resident KiB at the end of the load.
    pub end_kib: u64,
    /// Highest resident KiB seen.
    pub peak_kib: u64,
    /// `end - start`.
    pub growth_kib: i64,
    /// Allowed growth: 16 MiB or a quarter of the start, whichever is larger.
    pub tolerance_kib: u64,
    /// `growth <= tolerance`.
    pub flat: bool,
    /// Resident KiB at ten evenly spaced times of the load.
    pub trend_kib: Vec<u64>,
}

/// Everything `wdfkit soak --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// The seed (rerun with `--seed` to replay the same operations).
    pub seed: u64,
    /// How long the load ran, s.
    pub load_s: f64,
    /// The whole run including the audit, s.
    pub total_s: f64,
    /// Client threads.
    pub clients: usize,
    /// All checks passed.
    pub ok: bool,
    /// What failed, in sentences.
    pub failures: Vec<String>,
    /// Requests, from the clients' side.
    pub requests: RequestReport,
    /// What the driver and the control thread did.
    pub operations: Operations,
    /// Every queue after the final drain.
    pub queues: Vec<QueueReport>,
    /// Objects and leaks.
    pub objects: ObjectReport,
    /// Resident memory.
    pub memory: MemoryReport,
    /// Verifier counts by rule.
    pub verifier: BTreeMap<String, u64>,
    /// Verifier rules other than the injected panics and DPC-watchdog timing findings.
    pub unexpected_verifier: BTreeMap<String, u64>,
}

// ------------------------------------------------------------------------------------------------
// A small seeded generator (splitmix64): no dependency, same stream on every machine.

#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index picked by weight.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

// ------------------------------------------------------------------------------------------------
// What the driver does with a request: chosen by the client, carried in the request.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Complete = 0,
    Fail = 1,
    Hold = 2,
    Cancelable = 3,
    Forward = 4,
    Requeue = 5,
    Panic = 6,
}

const BEHAVIOURS: [Behaviour; 7] = [
    Behaviour::Complete,
    Behaviour::Fail,
    Behaviour::Hold,
    Behaviour::Cancelable,
    Behaviour::Forward,
    Behaviour::Requeue,
    Behaviour::Panic,
];
const BEHAVIOUR_WEIGHTS: [u64; 7] = [44, 4, 14, 12, 16, 6, 1];

fn behaviour_of(r: &Request) -> Behaviour {
    let p = r.parameters();
    let code = match p.kind {
        RequestType::Read | RequestType::Write => p.offset,
        _ => u64::from(p.ioctl_code),
    };
    BEHAVIOURS[(code % BEHAVIOURS.len() as u64) as usize]
}

/// The marker of injected panics (the soak's panic hook keeps them off stderr).
const PANIC_MARKER: &str = "wdfkit soak: injected panic";

const QUEUE_NAMES: [&str; 4] = ["seq", "par", "lim", "man"];
const MANUAL: usize = 3;

/// A request the driver keeps for later.
enum Held {
    Plain(Request),
    Cancelable(CancelableRequest),
}

#[derive(Default)]
struct Counters {
    forwards: AtomicU64,
    forwards_refused: AtomicU64,
    requeues: AtomicU64,
    held: AtomicU64,
    marked_cancelable: AtomicU64,
    unmarked: AtomicU64,
    cancel_routines: AtomicU64,
    panics: AtomicU64,
    ready_notifications: AtomicU64,
    timer_ticks: AtomicU64,
    state_callbacks: AtomicU64,
}

/// One device's driver state. Holds only weak references to framework objects, so that the
/// callbacks that own it form no cycle.
struct Rig {
    name: String,
    scope: SyncScope,
    level: ExecutionLevel,
    queues: [OnceLock<Weak<Queue>>; 4],
    forwarded: [AtomicU64; 4],
    requeued_count: [AtomicU64; 4],
    held: Mutex<Vec<Held>>,
    requeued: Mutex<HashSet<u64>>,
    timer: OnceLock<Weak<Timer>>,
    counters: Arc<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // An injected panic never happens while a rig mutex is held; recover anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Rig {
    fn queue(&self, i: usize) -> Option<Arc<Queue>> {
        self.queues[i].get().and_then(Weak::upgrade)
    }

    /// The driver's handling of a request presented by (or retrieved from) queue `qi`.
    /// `in_callback`: a panic is contained here (outside a callback it is not injected).
    fn handle(&self, qi: usize, request: Request, information: usize, in_callback: bool) {
        let c = &self.counters;
        match behaviour_of(&request) {
            Behaviour::Complete => {
                request.complete_with_information(NtStatus::SUCCESS, information)
            }
            Behaviour::Fail => request.complete(NtStatus::INVALID_PARAMETER),
            Behaviour::Panic if in_callback => {
                c.panics.fetch_add(1, Ordering::Relaxed);
                let _request = request; // dropped while unwinding: STATUS_INTERNAL_ERROR
                std::panic::panic_any(PANIC_MARKER);
            }
            Behaviour::Panic => request.complete_with_information(NtStatus::SUCCESS, information),
            Behaviour::Hold => {
                c.held.fetch_add(1, Ordering::Relaxed);
                lock(&self.held).push(Held::Plain(request));
            }
            Behaviour::Cancelable => {
                let counters = c.clone();
                match request.mark_cancelable(move |_cx, r| {
                    counters.cancel_routines.fetch_add(1, Ordering::Relaxed);
                    r.complete(NtStatus::CANCELLED);
                }) {
                    Ok(ticket) => {
                        c.marked_cancelable.fetch_add(1, Ordering::Relaxed);
                        lock(&self.held).push(Held::Cancelable(ticket));
                    }
                    // Only for misuse; the status would show up as unexpected.
                    Err(e) => e.request.complete(e.status),
                }
            }
            Behaviour::Forward => match (qi < MANUAL).then(|| self.queue(qi + 1)).flatten() {
                Some(dest) => match request.forward(&dest) {
                    Ok(()) => {
                        self.forwarded[qi].fetch_add(1, Ordering::Relaxed);
                        c.forwards.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        c.forwards_refused.fetch_add(1, Ordering::Relaxed);
                        e.request.complete(e.status);
                    }
                },
                None => request.complete_with_information(NtStatus::SUCCESS, information),
            },
            Behaviour::Requeue => {
                if qi == MANUAL && self.first_retrieval(request.id()) {
                    match request.requeue() {
                        Ok(()) => {
                            self.requeued_count[qi].fetch_add(1, Ordering::Relaxed);
                            c.requeues.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => e.request.complete(e.status),
                    }
                } else {
                    request.complete_with_information(NtStatus::SUCCESS, information);
                }
            }
        }
    }

    /// Whether a request with a requeue behaviour is retrieved for the first time (then it is
    /// requeued; the second time it is completed). The set holds only requests requeued and not
    /// yet retrieved again; requests cancelled meanwhile stay in it, so it is cleared when it
    /// grows past 4096 (a request that loses its mark is requeued once more, which is harmless).
    fn first_retrieval(&self, id: u64) -> bool {
        let mut set = lock(&self.requeued);
        if set.remove(&id) {
            return false;
        }
        if set.len() >= 4096 {
            set.clear();
        }
        set.insert(id);
        true
    }

    /// Completes up to `n` held requests (oldest first). Returns how many it took.
    fn complete_held(&self, n: usize) -> usize {
        let taken: Vec<Held> = {
            let mut h = lock(&self.held);
            let k = n.min(h.len());
            h.drain(..k).collect()
        };
        let k = taken.len();
        // Completed outside the lock: completion may present the next request inline, and
        // the callback may keep it.
        for held in taken {
            match held {
                Held::Plain(r) => r.complete(NtStatus::SUCCESS),
                Held::Cancelable(t) => {
                    if let Ok(r) = t.unmark() {
                        self.counters.unmarked.fetch_add(1, Ordering::Relaxed);
                        r.complete(NtStatus::SUCCESS);
                    }
                }
            }
        }
        k
    }

    /// Retrieves up to `n` requests from the manual queue and handles them. Returns how many.
    fn drain_manual(&self, n: usize) -> usize {
        let Some(q) = self.queue(MANUAL) else {
            return 0;
        };
        let mut k = 0;
        while k < n {
            match q.retrieve_next_request() {
                Ok(r) => {
                    self.handle(MANUAL, r, 0, false);
                    k += 1;
                }
                Err(_) => break,
            }
        }
        k
    }
}

fn scope_name(s: SyncScope) -> &'static str {
    match s {
        SyncScope::None => "none",
        SyncScope::Queue => "queue",
        SyncScope::Device => "device",
        SyncScope::InheritFromParent => "inherit",
    }
}

fn level_name(l: ExecutionLevel) -> &'static str {
    match l {
        ExecutionLevel::Passive => "passive",
        ExecutionLevel::Dispatch => "dispatch",
        ExecutionLevel::InheritFromParent => "inherit",
    }
}

/// The driver, its devices, queues and timers.
struct Built {
    driver: Arc<Driver>,
    devices: Vec<Arc<Device>>,
    rigs: Vec<Arc<Rig>>,
    timers: Vec<(Arc<Timer>, bool)>,
    timers_unserialized: usize,
}

fn build(kernel: &Kernel, counters: &Arc<Counters>) -> Result<Built, String> {
    let driver = Driver::create(kernel, ObjectAttributes::default())
        .map_err(|s| format!("WdfDriverCreate: {s}"))?;
    let mut built = Built {
        driver,
        devices: Vec::new(),
        rigs: Vec::new(),
        timers: Vec::new(),
        timers_unserialized: 0,
    };
    for scope in [SyncScope::None, SyncScope::Queue, SyncScope::Device] {
        for level in [ExecutionLevel::Passive, ExecutionLevel::Dispatch] {
            let name = format!("soak-{}-{}", scope_name(scope), level_name(level));
            let rig = Arc::new(Rig {
                name: name.clone(),
                scope,
                level,
                queues: Default::default(),
                forwarded: Default::default(),
                requeued_count: Default::default(),
                held: Mutex::new(Vec::new()),
                requeued: Mutex::new(HashSet::new()),
                timer: OnceLock::new(),
                counters: counters.clone(),
            });
            let mut init = DeviceInit::new(name.clone());
            init.attributes(ObjectAttributes::level(level).with_scope(scope));
            init.panic_policy(PanicPolicy::KeepServing);
            let device = built
                .driver
                .create_device(init)
                .map_err(|s| format!("WdfDeviceCreate {name}: {s}"))?;
            for (qi, qname) in QUEUE_NAMES.iter().enumerate() {
                let mut cfg = QueueConfig::new(match qi {
                    0 => DispatchType::Sequential,
                    MANUAL => DispatchType::Manual,
                    _ => DispatchType::Parallel,
                });
                cfg.name = Some(format!("{name}/{qname}"));
                if qi == 2 {
                    cfg.parallel_limit = Some(2);
                }
                if qi == 0 {
                    cfg.default_queue = true;
                }
                if qi != MANUAL {
                    let r = rig.clone();
                    cfg.io_read(move |_cx, req, len| r.handle(qi, req, len, true));
                    let r = rig.clone();
                    cfg.io_write(move |_cx, req, len| r.handle(qi, req, len, true));
                    let r = rig.clone();
                    cfg.io_device_control(move |_cx, req, _o, _i, _c| r.handle(qi, req, 0, true));
                    let r = rig.clone();
                    cfg.io_default(move |_cx, req| r.handle(qi, req, 0, true));
                }
                let queue = device
                    .create_queue(cfg, ObjectAttributes::default())
                    .map_err(|s| format!("WdfIoQueueCreate {name}/{qname}: {s}"))?;
                let route = match qi {
                    1 => Some(RequestType::Write),
                    2 => Some(RequestType::DeviceControl),
                    MANUAL => Some(RequestType::InternalDeviceControl),
                    _ => None,
                };
                if let Some(t) = route {
                    device
                        .configure_request_dispatching(&queue, t)
                        .map_err(|s| format!("routing {t:?} to {name}/{qname}: {s}"))?;
                }
                if qi == MANUAL {
                    let r = rig.clone();
                    queue
                        .ready_notify(Some(move |cx: &mut IoContext<'_, '_>| {
                            r.counters
                                .ready_notifications
                                .fetch_add(1, Ordering::Relaxed);
                            let q = cx.queue().clone();
                            while let Ok(req) = q.retrieve_next_request() {
                                r.handle(MANUAL, req, 0, true);
                            }
                        }))
                        .map_err(|s| format!("ready notify {name}/{qname}: {s}"))?;
                }
                let _ = rig.queues[qi].set(Arc::downgrade(&queue));
            }
            // The timer: periodic at DISPATCH_LEVEL, one-shot re-armed at PASSIVE_LEVEL.
            let passive = level == ExecutionLevel::Passive;
            let make = |serialized: bool| {
                let r = rig.clone();
                let callback = move |_cx: &mut CallbackContext<'_, '_>| {
                    let tick = r.counters.timer_ticks.fetch_add(1, Ordering::Relaxed);
                    r.complete_held(2);
                    if passive && let Some(t) = r.timer.get().and_then(Weak::upgrade) {
                        t.start(Duration::from_millis(2));
                    }
                    if tick % 211 == 210 {
                        r.counters.panics.fetch_add(1, Ordering::Relaxed);
                        std::panic::panic_any(PANIC_MARKER);
                    }
                };
                let mut cfg = if passive {
                    TimerConfig::new(callback)
                } else {
                    TimerConfig::periodic(Duration::from_millis(2), callback)
                };
                cfg.automatic_serialization = serialized;
                cfg.name = Some(format!("{name}/timer"));
                let attrs = if passive {
                    ObjectAttributes::level(ExecutionLevel::Passive)
                } else {
                    ObjectAttributes::default()
                };
                Timer::create(&device, cfg, attrs)
            };
            let timer = match make(true) {
                Ok(t) => t,
                Err(_) => {
                    built.timers_unserialized += 1;
                    make(false).map_err(|s| format!("WdfTimerCreate {name}/timer: {s}"))?
                }
            };
            let _ = rig.timer.set(Arc::downgrade(&timer));
            timer.start(Duration::from_millis(2));
            built.timers.push((timer, passive));
            built.devices.push(device);
            built.rigs.push(rig);
        }
    }
    Ok(built)
}

// ------------------------------------------------------------------------------------------------
// The threads.

#[derive(Default)]
struct ClientTally {
    submitted: u64,
    completed: u64,
    stranded: u64,
    cancels: u64,
    by_status: BTreeMap<NtStatus, u64>,
}

impl ClientTally {
    fn record(&mut self, c: &IoCompletion) {
        self.completed += 1;
        *self.by_status.entry(c.status).or_default() += 1;
    }
}

/// A client: a window of outstanding requests over every device, some cancelled.
fn client(
    kernel: &Kernel,
    devices: &[String],
    seed: u64,
    index: u64,
    stop: &AtomicBool,
) -> ClientTally {
    let mut rng = Rng::new(seed, 0x100 + index);
    let handles: Vec<Handle> = devices
        .iter()
        .map(|d| kernel.io().open(d).expect("open a soak device"))
        .collect();
    let mut t = ClientTally::default();
    let mut window: Vec<PendingIo> = Vec::new();
    let max_window = 16 + rng.below(32) as usize;
    while !stop.load(Ordering::Relaxed) {
        // Reap what is done.
        let mut i = 0;
        while i < window.len() {
            if window[i].is_complete() {
                let p = window.swap_remove(i);
                let c = p.wait();
                t.record(&c);
            } else {
                i += 1;
            }
        }
        if window.len() >= max_window {
            // Wait for the oldest a little; held requests finish when the driver thread or
            // a timer gets to them, queued ones when their queue is restarted.
            match window.remove(0).wait_timeout(Duration::from_millis(1)) {
                Ok(c) => t.record(&c),
                Err(p) => window.push(p),
            }
            continue;
        }
        let h = &handles[rng.below(handles.len() as u64) as usize];
        let behaviour = rng.weighted(&BEHAVIOUR_WEIGHTS) as u64;
        // A behaviour index plus a multiple of the number of behaviours: same behaviour.
        let carrier = behaviour + BEHAVIOURS.len() as u64 * rng.below(1 << 20);
        let op = match rng.weighted(&[35, 35, 15, 15]) {
            0 => IoOp::Read {
                offset: carrier,
                length: if rng.chance(3) { 0 } else { 64 },
            },
            1 => IoOp::Write {
                offset: carrier,
                data: vec![0x5A; 64],
            },
            2 => IoOp::DeviceControl {
                code: carrier as u32,
                input: vec![1; 8],
                output_length: 16,
            },
            _ => IoOp::InternalDeviceControl {
                code: carrier as u32,
                input: vec![2; 8],
                output_length: 16,
            },
        };
        let at = if rng.chance(20) {
            Irql::Dispatch
        } else {
            Irql::Passive
        };
        window.push(h.submit_at(op, at));
        t.submitted += 1;
        if rng.chance(12) {
            let k = rng.below(window.len() as u64) as usize;
            window[k].cancel();
            t.cancels += 1;
        }
    }
    // The load stopped: everything outstanding must still complete.
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in window {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.wait_timeout(left) {
            Ok(c) => t.record(&c),
            Err(p) => {
                t.stranded += 1;
                p.cancel(); // so that the audit can go on
            }
        }
    }
    for h in handles {
        let _ = h.close();
    }
    t
}

/// The driver's own thread: completes held requests and retrieves from manual queues.
fn driver_thread(rigs: &[Arc<Rig>], seed: u64, stop: &AtomicBool) {
    let mut rng = Rng::new(seed, 0x200);
    while !stop.load(Ordering::Relaxed) {
        for r in rigs {
            r.complete_held(1 + rng.below(4) as usize);
            r.drain_manual(1 + rng.below(4) as usize);
        }
        std::thread::sleep(Duration::from_micros(50 + rng.below(200)));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Stop,
    StopAndPurge,
    Purge,
    Drain,
}

struct Changed {
    queue: Arc<Queue>,
    fired: Arc<AtomicBool>,
    since: Instant,
    /// Restart this long after the callback fired.
    hold_for: Duration,
    fired_at: Option<Instant>,
}

#[derive(Default)]
struct ControlTally {
    ops: Operations,
    failures: Vec<String>,
}

/// The control thread: random state changes on random queues, restarts, timer restarts.
fn control(
    rigs: &[Arc<Rig>],
    timers: &[(Arc<Timer>, bool)],
    counters: &Arc<Counters>,
    seed: u64,
    stop: &AtomicBool,
) -> ControlTally {
    let mut rng = Rng::new(seed, 0x300);
    let mut t = ControlTally::default();
    let queues: Vec<Arc<Queue>> = rigs
        .iter()
        .flat_map(|r| (0..4).filter_map(|i| r.queue(i)))
        .collect();
    let mut changed: Vec<Option<Changed>> = (0..queues.len()).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_micros(500 + rng.below(2500)));
        // Restart the queues whose change completed a while ago.
        for slot in changed.iter_mut() {
            let Some(c) = slot else { continue };
            if !c.fired.load(Ordering::Acquire) {
                continue;
            }
            let at = *c.fired_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= c.hold_for {
                c.queue.start();
                t.ops.starts += 1;
                *slot = None;
            }
        }
        // Every choice of this round is drawn before acting on any of them, so the stream of
        // choices does not depend on which queues are still busy with an earlier change.
        let restart_timer = rng.chance(3);
        let ti = rng.below(timers.len() as u64) as usize;
        let due = Duration::from_millis(1 + rng.below(3));
        let qi = rng.below(queues.len() as u64) as usize;
        let change = [
            Change::Stop,
            Change::StopAndPurge,
            Change::Purge,
            Change::Drain,
        ][rng.weighted(&[30, 20, 25, 25])];
        let synchronous = rng.chance(20);
        let hold_for = Duration::from_micros(rng.below(3000));
        if restart_timer {
            let (timer, _) = &timers[ti];
            timer.stop(true);
            timer.start(due);
            t.ops.timer_restarts += 1;
            continue;
        }
        match &changed[qi] {
            Some(_) => {}
            None => {
                let q = &queues[qi];
                match change {
                    Change::Stop => t.ops.stops += 1,
                    Change::StopAndPurge => t.ops.stop_and_purges += 1,
                    Change::Purge => t.ops.purges += 1,
                    Change::Drain => t.ops.drains += 1,
                }
                let fired = Arc::new(AtomicBool::new(false));
                if synchronous {
                    t.ops.synchronous += 1;
                    // On a thread of its own, so that a change that never completes is reported
                    // instead of hanging the soak (the thread is then left blocked).
                    let (tx, rx) = std::sync::mpsc::channel();
                    let q2 = q.clone();
                    std::thread::spawn(move || {
                        let r = match change {
                            Change::Stop => q2.stop_synchronously(),
                            Change::StopAndPurge => q2.stop_and_purge_synchronously(),
                            Change::Purge => q2.purge_synchronously(),
                            Change::Drain => q2.drain_synchronously(),
                        };
                        let _ = tx.send(r);
                    });
                    match rx.recv_timeout(Duration::from_secs(15)) {
                        Ok(Ok(())) => {
                            counters.state_callbacks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(s)) => t
                            .failures
                            .push(format!("{change:?} synchronously on {}: {s}", q.name())),
                        Err(_) => t.failures.push(format!(
                            "{change:?} synchronously on {} did not return within 15 s (queue: {:?})",
                            q.name(),
                            q.status()
                        )),
                    }
                    fired.store(true, Ordering::Release);
                } else {
                    let f = fired.clone();
                    let c = counters.clone();
                    let cb: wdf::QueueStateCallback = Box::new(move |_cx| {
                        c.state_callbacks.fetch_add(1, Ordering::Relaxed);
                        f.store(true, Ordering::Release);
                    });
                    match change {
                        Change::Stop => q.stop(Some(cb)),
                        Change::StopAndPurge => q.stop_and_purge(Some(cb)),
                        Change::Purge => q.purge(Some(cb)),
                        Change::Drain => q.drain(Some(cb)),
                    }
                }
                changed[qi] = Some(Changed {
                    queue: q.clone(),
                    fired,
                    since: Instant::now(),
                    hold_for,
                    fired_at: None,
                });
            }
        }
    }
    // Restore: every callback must fire (the driver thread keeps completing), then start.
    for c in changed.into_iter().flatten() {
        let deadline = c.since.max(Instant::now()) + Duration::from_secs(15);
        while !c.fired.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !c.fired.load(Ordering::Acquire) {
            t.failures.push(format!(
                "the state-change callback of {} never fired (queue: {:?})",
                c.queue.name(),
                c.queue.status()
            ));
        }
        c.queue.start();
        t.ops.starts += 1;
    }
    t
}

/// Resident memory of this process, KiB (`VmRSS`).
fn resident_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Keeps injected panics off stderr while the soak runs; other panics print as usual.
struct QuietPanics;

impl QuietPanics {
    fn install() -> QuietPanics {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() == Some(&PANIC_MARKER) {
                return;
            }
            previous(info);
        }));
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let _ = std::panic::take_hook(); // back to the default hook
    }
}

// ------------------------------------------------------------------------------------------------

/// Runs the soak and audits it. `Err` only when the rig cannot be built.
pub fn run(options: &SoakOptions) -> Result<SoakReport, String> {
    let started = Instant::now();
    let _quiet = QuietPanics::install();
    nt::verifier::set_echo(false);
    nt::verifier::reset();
    nt::verifier::enable(nt::verifier::Mode::Record);
    let kernel = crate::run::kernel();
    let counters = Arc::new(Counters::default());
    let built = match build(&kernel, &counters) {
        Ok(b) => b,
        Err(e) => {
            nt::verifier::disable();
            return Err(e);
        }
    };
    let names: Vec<String> = built.rigs.iter().map(|r| r.name.clone()).collect();
    let mut failures = Vec::new();

    // The load.
    let stop_load = AtomicBool::new(false);
    let stop_driver = AtomicBool::new(false);
    let stop_sampler = AtomicBool::new(false);
    let bar = crate::progress::bar(options.duration.as_secs().max(1), "s", options.progress);
    let load_start = Instant::now();
    let (clients, control_tally, samples, load_s) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut v: Vec<(f64, u64)> = Vec::new();
            while !stop_sampler.load(Ordering::Relaxed) {
                if let Some(k) = resident_kib() {
                    v.push((load_start.elapsed().as_secs_f64(), k));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            v
        });
        let driver = s.spawn(|| driver_thread(&built.rigs, options.seed, &stop_driver));
        let control = s.spawn(|| {
            control(
                &built.rigs,
                &built.timers,
                &counters,
                options.seed,
                &stop_load,
            )
        });
        let clients: Vec<_> = (0..options.clients)
            .map(|i| {
                let (kernel, names, stop) = (&kernel, &names, &stop_load);
                s.spawn(move || client(kernel, names, options.seed, i as u64, stop))
            })
            .collect();
        while load_start.elapsed() < options.duration {
            std::thread::sleep(Duration::from_millis(50));
            bar.set_position(load_start.elapsed().as_secs());
        }
        let load_s = load_start.elapsed().as_secs_f64();
        stop_load.store(true, Ordering::Relaxed);
        let control_tally = control.join().expect("control thread");
        let clients: Vec<ClientTally> = clients
            .into_iter()
            .map(|c| c.join().expect("client thread"))
            .collect();
        stop_sampler.store(true, Ordering::Relaxed);
        let samples = sampler.join().expect("sampler thread");
        // The final drain: the driver thread keeps going until nothing is held, queued or
        // owned anywhere, then every queue is drained synchronously.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let busy = built.rigs.iter().any(|r| {
                !lock(&r.held).is_empty()
                    || (0..4)
                        .filter_map(|i| r.queue(i))
                        .any(|q| q.pending_count() > 0 || q.driver_owned_count() > 0)
            });
            if !busy || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stop_driver.store(true, Ordering::Relaxed);
        driver.join().expect("driver thread");
        (clients, control_tally, samples, load_s)
    });
    bar.finish_and_clear();
    failures.extend(control_tally.failures);
    for r in &built.rigs {
        for q in (0..4).filter_map(|i| r.queue(i)) {
            // Drained synchronously only when nothing is left (it would wait forever for a
            // request that nobody completes); the books below report the rest.
            if q.pending_count() > 0 || q.driver_owned_count() > 0 {
                failures.push(format!(
                    "queue {} still busy 15 s after the load stopped: {:?}",
                    q.name(),
                    q.status()
                ));
            } else if let Err(s) = q.drain_synchronously() {
                failures.push(format!("final drain of {}: {s}", q.name()));
            }
        }
    }
    for (t, _) in &built.timers {
        t.stop(true);
    }
    kernel.flush_dpcs();

    // Requests.
    let mut requests = RequestReport::default();
    for c in &clients {
        requests.submitted += c.submitted;
        requests.completed += c.completed;
        requests.stranded += c.stranded;
        requests.cancels_sent += c.cancels;
        for (s, n) in &c.by_status {
            let name = s
                .name()
                .map_or_else(|| format!("0x{:08X}", s.0), str::to_owned);
            *requests.by_status.entry(name.clone()).or_default() += n;
            if !ALLOWED_STATUSES.iter().any(|(a, _)| a == s) {
                *requests.unexpected_statuses.entry(name).or_default() += n;
            }
        }
    }
    requests.accounted = requests.stranded == 0
        && requests.unexpected_statuses.is_empty()
        && requests.submitted == requests.completed;
    if requests.stranded > 0 {
        failures.push(format!(
            "{} request(s) still pending 30 s after the load stopped",
            requests.stranded
        ));
    }
    if requests.submitted != requests.completed + requests.stranded {
        failures.push(format!(
            "{} requests sent but {} completions received",
            requests.submitted, requests.completed
        ));
    }
    if !requests.unexpected_statuses.is_empty() {
        failures.push(format!(
            "completions with statuses outside the allowed set: {:?}",
            requests.unexpected_statuses
        ));
    }

    // Queues.
    let mut queues = Vec::new();
    for r in &built.rigs {
        for (qi, qname) in QUEUE_NAMES.iter().enumerate() {
            let Some(q) = r.queue(qi) else { continue };
            let st = q.stats();
            let forwarded = r.forwarded[qi].load(Ordering::Relaxed);
            let requeued = r.requeued_count[qi].load(Ordering::Relaxed);
            let (driver_owned, pending) = (q.driver_owned_count(), q.pending_count());
            let balanced = st.presented == st.completed + forwarded + requeued
                && driver_owned == 0
                && pending == 0;
            if !balanced {
                failures.push(format!(
                    "queue {}: presented {} != completed {} + forwarded {} + requeued {}, or {} owned / {} queued after the final drain",
                    q.name(),
                    st.presented,
                    st.completed,
                    forwarded,
                    requeued,
                    driver_owned,
                    pending
                ));
            }
            queues.push(QueueReport {
                queue: format!("{}/{qname}", r.name),
                dispatch: match qi {
                    0 => "sequential".into(),
                    1 => "parallel".into(),
                    2 => "parallel(2)".into(),
                    _ => "manual".into(),
                },
                scope: scope_name(r.scope),
                level: level_name(r.level),
                arrived: st.arrived,
                presented: st.presented,
                completed: st.completed,
                forwarded,
                requeued,
                cancelled_queued: st.cancelled_queued,
                rejected: st.rejected,
                deferred_irql: st.deferred_irql,
                deferred_lock: st.deferred_lock,
                driver_owned,
                pending,
                balanced,
            });
        }
    }

    // The verifier, before unload (removal would report leaked requests).
    let c = &counters;
    let operations = Operations {
        state_callbacks: c.state_callbacks.load(Ordering::Relaxed),
        timer_ticks: c.timer_ticks.load(Ordering::Relaxed),
        forwards: c.forwards.load(Ordering::Relaxed),
        forwards_refused: c.forwards_refused.load(Ordering::Relaxed),
        requeues: c.requeues.load(Ordering::Relaxed),
        held: c.held.load(Ordering::Relaxed),
        marked_cancelable: c.marked_cancelable.load(Ordering::Relaxed),
        unmarked: c.unmarked.load(Ordering::Relaxed),
        cancel_routines: c.cancel_routines.load(Ordering::Relaxed),
        panics_injected: c.panics.load(Ordering::Relaxed),
        ready_notifications: c.ready_notifications.load(Ordering::Relaxed),
        ..control_tally.ops
    };

    // Objects: unload, drop every strong reference, and see what survives.
    let Built {
        driver,
        devices,
        rigs,
        timers,
        timers_unserialized,
    } = built;
    let mut watch: Vec<(String, Box<dyn Fn() -> bool>)> = Vec::new();
    let w = Arc::downgrade(&driver);
    watch.push(("driver".into(), Box::new(move || w.strong_count() > 0)));
    for d in &devices {
        let w = Arc::downgrade(d);
        watch.push((
            format!("device {}", d.name()),
            Box::new(move || w.strong_count() > 0),
        ));
    }
    for r in &rigs {
        for (qi, qname) in QUEUE_NAMES.iter().enumerate() {
            if let Some(w) = r.queues[qi].get().cloned() {
                watch.push((
                    format!("queue {}/{qname}", r.name),
                    Box::new(move || w.strong_count() > 0),
                ));
            }
        }
        let w = Arc::downgrade(r);
        watch.push((
            format!("rig {}", r.name),
            Box::new(move || w.strong_count() > 0),
        ));
    }
    for (t, _) in &timers {
        let w = Arc::downgrade(t);
        let name = t.header().name().to_owned();
        watch.push((
            format!("timer {name}"),
            Box::new(move || w.strong_count() > 0),
        ));
    }
    let created = 1 + devices.len() + 4 * rigs.len() + timers.len();
    driver.unload();
    drop((driver, devices, rigs, timers));
    kernel.flush_dpcs();
    kernel.flush_work();
    let counts = nt::verifier::counts();
    nt::verifier::disable();
    drop(kernel);
    let alive: Vec<String> = watch
        .iter()
        .filter(|(_, alive)| alive())
        .map(|(n, _)| n.clone())
        .collect();
    if !alive.is_empty() {
        failures.push(format!("alive after unload (leaked): {}", alive.join(", ")));
    }

    // Verifier.
    let verifier: BTreeMap<String, u64> = counts
        .iter()
        .map(|(r, n)| (r.name.to_string(), *n))
        .collect();
    let panicked = verifier.get("WDF_CALLBACK_PANICKED").copied().unwrap_or(0);
    if panicked != operations.panics_injected {
        failures.push(format!(
            "{} panics injected but the verifier reported {panicked} WDF_CALLBACK_PANICKED",
            operations.panics_injected
        ));
    }
    let unexpected_verifier: BTreeMap<String, u64> = verifier
        .iter()
        .filter(|(r, _)| *r != "WDF_CALLBACK_PANICKED" && !r.starts_with("DPC_WATCHDOG"))
        .map(|(r, n)| (r.clone(), *n))
        .collect();
    if !unexpected_verifier.is_empty() {
        failures.push(format!(
            "unexpected verifier reports: {unexpected_verifier:?}"
        ));
    }

    // Memory.
    let memory = memory_report(&samples, load_s);
    if !memory.flat {
        failures.push(format!(
            "resident memory grew by {} KiB after warm-up (tolerance {} KiB)",
            memory.growth_kib, memory.tolerance_kib
        ));
    }

    Ok(SoakReport {
        seed: options.seed,
        load_s,
        total_s: started.elapsed().as_secs_f64(),
        clients: options.clients,
        ok: failures.is_empty(),
        failures,
        requests,
        operations,
        queues,
        objects: ObjectReport {
            created,
            timers_unserialized,
            alive_after_unload: alive,
        },
        memory,
        verifier,
        unexpected_verifier,
    })
}

fn memory_report(samples: &[(f64, u64)], load_s: f64) -> MemoryReport {
    let Some(&(_, last)) = samples.last() else {
        return MemoryReport {
            flat: true,
            ..MemoryReport::default()
        };
    };
    let start = samples
        .iter()
        .find(|(t, _)| *t >= load_s * 0.2)
        .map_or(last, |(_, k)| *k);
    let peak = samples.iter().map(|(_, k)| *k).max().unwrap_or(last);
    let tolerance = (16 * 1024).max(start / 4);
    let growth = last as i64 - start as i64;
    MemoryReport {
        samples: samples.len(),
        start_kib: start,
        end_kib: last,
        peak_kib: peak,
        growth_kib: growth,
        tolerance_kib: tolerance,
        flat: growth <= tolerance as i64,
        trend_kib: (0..10)
            .map(|i| samples[i * (samples.len() - 1) / 9].1)
            .collect(),
    }
}

/// The text form of a report.
pub fn render(r: &SoakReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "wdfkit soak: seed {}, {} clients, load {:.1} s, total {:.1} s: {}",
        r.seed,
        r.clients,
        r.load_s,
        r.total_s,
        if r.ok { "OK" } else { "FAILED" }
    );
    let q = &r.requests;
    let _ = writeln!(
        s,
        "\nrequests   {} sent, {} completed, {} stranded, {} cancels sent ({:.0}/s)",
        q.submitted,
        q.completed,
        q.stranded,
        q.cancels_sent,
        q.completed as f64 / r.load_s.max(1e-9)
    );
    for (status, n) in &q.by_status {
        let _ = writeln!(s, "           {n:>10}  {status}");
    }
    let o = &r.operations;
    let _ = writeln!(
        s,
        "\nqueues     {} stops, {} stop-and-purges, {} purges, {} drains ({} synchronous), {} restarts, {} state callbacks",
        o.stops, o.stop_and_purges, o.purges, o.drains, o.synchronous, o.starts, o.state_callbacks
    );
    let _ = writeln!(
        s,
        "driver     {} forwards ({} refused), {} requeues, {} held, {} cancelable ({} unmarked, {} cancel routines), {} panics, {} ready notifications",
        o.forwards,
        o.forwards_refused,
        o.requeues,
        o.held,
        o.marked_cancelable,
        o.unmarked,
        o.cancel_routines,
        o.panics_injected,
        o.ready_notifications
    );
    let _ = writeln!(
        s,
        "timers     {} ticks, {} stop(wait)+restarts, {} created without automatic serialization",
        o.timer_ticks, o.timer_restarts, r.objects.timers_unserialized
    );
    let _ = writeln!(
        s,
        "\n{:<28} {:<11} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}  books",
        "queue",
        "dispatch",
        "arrived",
        "presented",
        "completed",
        "fwd",
        "cancelq",
        "rejected",
        "deferred"
    );
    for x in &r.queues {
        let _ = writeln!(
            s,
            "{:<28} {:<11} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}  {}",
            x.queue,
            x.dispatch,
            x.arrived,
            x.presented,
            x.completed,
            x.forwarded,
            x.cancelled_queued,
            x.rejected,
            x.deferred_irql + x.deferred_lock,
            if x.balanced { "balanced" } else { "UNBALANCED" }
        );
    }
    let m = &r.memory;
    let _ = writeln!(
        s,
        "\nmemory     resident {} KiB after warm-up, {} KiB at the end, peak {} KiB: growth {} KiB (tolerance {} KiB): {}",
        m.start_kib,
        m.end_kib,
        m.peak_kib,
        m.growth_kib,
        m.tolerance_kib,
        if m.flat { "flat" } else { "GROWING" }
    );
    let _ = writeln!(
        s,
        "objects    {} created, {} alive after unload",
        r.objects.created,
        r.objects.alive_after_unload.len()
    );
    let _ = write!(s, "verifier  ");
    if r.verifier.is_empty() {
        let _ = write!(s, " nothing reported");
    }
    for (rule, n) in &r.verifier {
        let _ = write!(s, " {rule} x{n}");
    }
    let _ = writeln!(s);
    if !r.failures.is_empty() {
        let _ = writeln!(s, "\nfailures:");
        for f in &r.failures {
            let _ = writeln!(s, "  - {f}");
        }
    }
    s
}
