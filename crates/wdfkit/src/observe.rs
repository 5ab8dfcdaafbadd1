//! A `wdf::observe` observer that measures what callbacks did: how many ran at once per object
//! and per device, the IRQLs they ran at, the time spent in them at DISPATCH_LEVEL, and (when
//! asked) every callback as a span for traces and timelines.
//!
//! Concurrency is counted live (an atomic up at `begin`, down at `end`, both emitted while the
//! callback's lock is held), so a serialized domain can never be seen above 1. Spans go to
//! per-thread-sharded buffers, so recording adds no lock shared between callbacks.
//!
//! A recorder made with [`Recorder::with_span_limit`] keeps at most that many spans (the first
//! ones to end) and only counts the rest ([`Recording::spans_dropped`]), so a long-running
//! server's memory stays bounded; every other measurement keeps counting past the cap.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nt::Irql;
use wdf::observe::{CallbackEvent, CallbackKind, Observer};

/// What kind of object emits a callback event (the events name objects by their wdf name,
/// which is unique per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Queue callbacks (I/O, cancel, state, stop/resume).
    Queue,
    /// File-object callbacks (named by their device).
    File,
    /// `EvtDpcFunc`.
    Dpc,
    /// `EvtTimerFunc`.
    Timer,
    /// `EvtWorkItem`.
    WorkItem,
}

impl Class {
    fn of(kind: CallbackKind) -> Class {
        match kind {
            CallbackKind::FileCreate | CallbackKind::FileCleanup | CallbackKind::FileClose => {
                Class::File
            }
            CallbackKind::Dpc => Class::Dpc,
            CallbackKind::Timer => Class::Timer,
            CallbackKind::WorkItem => Class::WorkItem,
            _ => Class::Queue,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One object the recorder knows.
#[derive(Clone, Debug)]
pub struct ObjectSpec {
    /// Its class.
    pub class: Class,
    /// The name wdf reports in events (queue / device / DPC / timer / work-item name).
    pub name: String,
    /// Its id in reports (`queue:rw`, `file_object:dev0`, `timer:t0`).
    pub id: String,
    /// Index of its device in the recorder's device list.
    pub device: Option<usize>,
    /// Id of the lock its callbacks take, if any (colours timelines).
    pub lock: Option<String>,
}

/// One callback, as a span.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Index of the object in the recorder's object list.
    pub object: u32,
    /// Which callback.
    pub kind: CallbackKind,
    /// wdfkit's id of the thread it ran on.
    pub thread: u64,
    /// Start, ns on the process clock.
    pub start_ns: u64,
    /// Duration, ns.
    pub dur_ns: u64,
    /// The IRQL it ran at.
    pub irql: Irql,
    /// Whether a callback lock was held.
    pub locked: bool,
    /// The request id, if any.
    pub request: Option<u64>,
}

struct Slot {
    now: AtomicI64,
    max: AtomicI64,
    count: AtomicU64,
    irqls: AtomicU8,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            now: AtomicI64::new(0),
            max: AtomicI64::new(0),
            count: AtomicU64::new(0),
            irqls: AtomicU8::new(0),
        }
    }

    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

const SHARDS: usize = 64;

static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Start times of the callbacks in progress on this thread (innermost last).
    static STACK: RefCell<Vec<(u64, std::time::Duration)>> = const { RefCell::new(Vec::new()) };
    /// The recorder generation this thread last registered its name with.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// The observer.
pub struct Recorder {
    generation: u64,
    index: [HashMap<String, usize>; 5],
    objects: Vec<ObjectSpec>,
    slots: Vec<Slot>,
    device_ids: Vec<String>,
    devices: Vec<Slot>,
    dispatch_ns: AtomicU64,
    busy_ns: AtomicU64,
    callbacks: AtomicU64,
    keep_spans: bool,
    /// The most spans kept (`u64::MAX`: no limit).
    max_spans: u64,
    /// Spans that ended while spans were kept, whether kept or dropped (counted only with a
    /// limit).
    spans_seen: AtomicU64,
    spans: Vec<Mutex<Vec<Span>>>,
    thread_names: Mutex<BTreeMap<u64, String>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("objects", &self.objects.len())
            .field("keep_spans", &self.keep_spans)
            .field("max_spans", &self.max_spans)
            .finish()
    }
}

/// What a recorder saw, once the run is over.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The objects (indexed by [`Span::object`]).
    pub objects: Vec<ObjectSpec>,
    /// Per object id: the most of its callbacks running at once.
    pub max_concurrent: BTreeMap<String, u64>,
    /// Per object id: how many of its callbacks ran.
    pub counts: BTreeMap<String, u64>,
    /// Per object id: the IRQLs its callbacks ran at (`passive`, `dispatch`).
    pub irqls: BTreeMap<String, Vec<&'static str>>,
    /// Sum of callback durations at DISPATCH_LEVEL or above, ns.
    pub dispatch_ns: u64,
    /// Sum of all callback durations, ns.
    pub busy_ns: u64,
    /// Callbacks that ran (of known objects).
    pub callbacks: u64,
    /// Every callback, sorted by start (empty unless spans were kept; at most the recorder's
    /// span limit, see [`Recorder::with_span_limit`]).
    pub spans: Vec<Span>,
    /// Spans not kept because the span limit was reached (0 without a limit).
    pub spans_dropped: u64,
    /// Names of the threads callbacks ran on.
    pub thread_names: BTreeMap<u64, String>,
}

fn irql_bit(i: Irql) -> u8 {
    match i {
        Irql::Passive => 1,
        Irql::Apc => 2,
        Irql::Dispatch => 4,
        Irql::Device(_) => 8,
    }
}

/// The report name of an IRQL.
pub fn irql_name(i: Irql) -> &'static str {
    match i {
        Irql::Passive => "passive",
        Irql::Apc => "apc",
        Irql::Dispatch => "dispatch",
        Irql::Device(_) => "dirql",
    }
}

impl Recorder {
    /// A recorder for `objects` belonging to the devices `device_ids`; `keep_spans` keeps
    /// every callback for traces and timelines.
    pub fn new(objects: Vec<ObjectSpec>, device_ids: Vec<String>, keep_spans: bool) -> Arc<Self> {
        Self::build(objects, device_ids, keep_spans, u64::MAX)
    }

    /// A recorder that keeps spans, but at most `max_spans` of them (the first to end); later
    /// ones are counted in [`Recording::spans_dropped`]. Counts, concurrency, IRQLs and time
    /// at DISPATCH_LEVEL cover every callback regardless. `usize::MAX` means no limit.
    pub fn with_span_limit(
        objects: Vec<ObjectSpec>,
        device_ids: Vec<String>,
        max_spans: usize,
    ) -> Arc<Self> {
        Self::build(
            objects,
            device_ids,
            true,
            u64::try_from(max_spans).unwrap_or(u64::MAX),
        )
    }

    fn build(
        objects: Vec<ObjectSpec>,
        device_ids: Vec<String>,
        keep_spans: bool,
        max_spans: u64,
    ) -> Arc<Self> {
        let mut index: [HashMap<String, usize>; 5] = Default::default();
        for (i, o) in objects.iter().enumerate() {
            index[o.class.index()].insert(o.name.clone(), i);
        }
        Arc::new(Recorder {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            index,
            slots: objects.iter().map(|_| Slot::new()).collect(),
            objects,
            devices: device_ids.iter().map(|_| Slot::new()).collect(),
            device_ids,
            dispatch_ns: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            callbacks: AtomicU64::new(0),
            keep_spans,
            max_spans,
            spans_seen: AtomicU64::new(0),
            spans: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            thread_names: Mutex::new(BTreeMap::new()),
        })
    }

    /// Installs the recorder as the process's observer.
    pub fn install(self: &Arc<Self>) {
        nt::irql::set_accounting(true);
        wdf::observe::set_observer(Some(self.clone() as Arc<dyn Observer>));
    }

    /// Removes the process's observer.
    pub fn uninstall() {
        wdf::observe::set_observer(None);
        nt::irql::set_accounting(false);
    }

    fn find(&self, e: &CallbackEvent<'_>) -> Option<usize> {
        self.index[Class::of(e.kind).index()].get(e.object).copied()
    }

    /// What was seen (call after [`Recorder::uninstall`]).
    pub fn finish(&self) -> Recording {
        let mut max_concurrent = BTreeMap::new();
        let mut counts = BTreeMap::new();
        let mut irqls = BTreeMap::new();
        for (d, s) in self.device_ids.iter().zip(&self.devices) {
            max_concurrent.insert(d.clone(), s.max.load(Ordering::SeqCst).max(0) as u64);
        }
        for (o, s) in self.objects.iter().zip(&self.slots) {
            let n = s.count.load(Ordering::SeqCst);
            let m = s.max.load(Ordering::SeqCst).max(0) as u64;
            if o.class == Class::Queue || n > 0 {
                max_concurrent.insert(o.id.clone(), m);
            }
            if n > 0 {
                counts.insert(o.id.clone(), n);
                let bits = s.irqls.load(Ordering::SeqCst);
                let names: Vec<&'static str> =
                    [Irql::Passive, Irql::Apc, Irql::Dispatch, Irql::Device(0)]
                        .into_iter()
                        .filter(|i| bits & irql_bit(*i) != 0)
                        .map(irql_name)
                        .collect();
                irqls.insert(o.id.clone(), names);
            }
        }
        let mut spans: Vec<Span> = Vec::new();
        for s in &self.spans {
            spans.append(&mut s.lock().expect("span shard").clone());
        }
        spans.sort_by_key(|s| (s.start_ns, s.thread));
        let spans_dropped = if self.max_spans == u64::MAX {
            0
        } else {
            self.spans_seen
                .load(Ordering::SeqCst)
                .saturating_sub(self.max_spans)
        };
        Recording {
            objects: self.objects.clone(),
            max_concurrent,
            counts,
            irqls,
            dispatch_ns: self.dispatch_ns.load(Ordering::SeqCst),
            busy_ns: self.busy_ns.load(Ordering::SeqCst),
            callbacks: self.callbacks.load(Ordering::SeqCst),
            spans,
            spans_dropped,
            thread_names: self.thread_names.lock().expect("names").clone(),
        }
    }
}

impl Observer for Recorder {
    fn begin(&self, e: &CallbackEvent<'_>) {
        STACK.with(|s| {
            s.borrow_mut()
                .push((e.time_ns, nt::irql::time_at_dispatch()))
        });
        if SEEN.with(Cell::get) != self.generation {
            SEEN.with(|c| c.set(self.generation));
            let name = std::thread::current()
                .name()
                .map_or_else(|| format!("thread {}", e.thread), str::to_owned);
            self.thread_names
                .lock()
                .expect("names")
                .insert(e.thread, name);
        }
        if let Some(i) = self.find(e) {
            self.slots[i].enter();
            if let Some(d) = self.objects[i].device {
                self.devices[d].enter();
            }
        }
    }

    fn end(&self, e: &CallbackEvent<'_>) {
        let (start, dispatch_before) = STACK
            .with(|s| s.borrow_mut().pop())
            .unwrap_or((e.time_ns, nt::irql::time_at_dispatch()));
        let Some(i) = self.find(e) else {
            return;
        };
        let dur = e.time_ns.saturating_sub(start);
        let slot = &self.slots[i];
        slot.leave();
        if let Some(d) = self.objects[i].device {
            self.devices[d].leave();
        }
        slot.count.fetch_add(1, Ordering::Relaxed);
        slot.irqls.fetch_or(irql_bit(e.irql), Ordering::Relaxed);
        self.callbacks.fetch_add(1, Ordering::Relaxed);
        self.busy_ns.fetch_add(dur, Ordering::Relaxed);
        if e.irql >= Irql::Dispatch {
            self.dispatch_ns.fetch_add(dur, Ordering::Relaxed);
        } else {
            // A PASSIVE_LEVEL callback may still spend time at DISPATCH_LEVEL holding a spin lock.
            let inside = nt::irql::time_at_dispatch().saturating_sub(dispatch_before);
            self.dispatch_ns
                .fetch_add(inside.as_nanos() as u64, Ordering::Relaxed);
        }
        // With a limit, one shared counter decides which spans are kept: the first
        // `max_spans` to end. Without one, nothing shared is touched.
        if self.keep_spans
            && (self.max_spans == u64::MAX
                || self.spans_seen.fetch_add(1, Ordering::Relaxed) < self.max_spans)
        {
            let span = Span {
                object: i as u32,
                kind: e.kind,
                thread: e.thread,
                start_ns: start,
                dur_ns: dur,
                irql: e.irql,
                locked: e.locked,
                request: e.request,
            };
            self.spans[(e.thread as usize) % SHARDS]
                .lock()
                .expect("span shard")
                .push(span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, device: Option<usize>) -> ObjectSpec {
        ObjectSpec {
            class: Class::Queue,
            name: name.into(),
            id: format!("queue:{name}"),
            device,
            lock: None,
        }
    }

    /// Feeds `n` callbacks of `kind` on queue `object` straight to the observer (nothing is
    /// installed), one after another on this thread.
    fn feed(r: &Recorder, object: &str, kind: CallbackKind, irql: Irql, n: u64, t0: u64) {
        for i in 0..n {
            let mut e = CallbackEvent {
                kind,
                object,
                request: Some(i),
                thread: 7,
                irql,
                locked: false,
                time_ns: t0 + i * 100,
            };
            r.begin(&e);
            e.time_ns += 10;
            r.end(&e);
        }
    }

    #[test]
    fn span_limit_keeps_the_first_spans_and_counts_the_rest() {
        let r = Recorder::with_span_limit(
            vec![queue("io", Some(0)), queue("flush", Some(0))],
            vec!["device:d".into()],
            5,
        );
        feed(&r, "io", CallbackKind::IoWrite, Irql::Dispatch, 4, 1_000);
        feed(&r, "io", CallbackKind::IoRead, Irql::Dispatch, 6, 10_000);
        feed(
            &r,
            "flush",
            CallbackKind::IoDefault,
            Irql::Passive,
            3,
            20_000,
        );
        // Not a known object: neither counted nor kept nor dropped.
        feed(&r, "other", CallbackKind::IoRead, Irql::Passive, 2, 30_000);
        let rec = r.finish();
        assert_eq!(rec.spans.len(), 5);
        assert_eq!(rec.spans_dropped, 8);
        // The first five to end: four writes, then one read.
        let kinds: Vec<CallbackKind> = rec.spans.iter().map(|s| s.kind).collect();
        assert_eq!(kinds[..4], [CallbackKind::IoWrite; 4]);
        assert_eq!(kinds[4], CallbackKind::IoRead);
        // Every other measurement counts past the cap.
        assert_eq!(rec.callbacks, 13);
        assert_eq!(rec.counts["queue:io"], 10);
        assert_eq!(rec.counts["queue:flush"], 3);
        assert_eq!(rec.irqls["queue:flush"], ["passive"]);
        assert_eq!(rec.irqls["queue:io"], ["dispatch"]);
        assert_eq!(rec.dispatch_ns, 10 * 10);
        assert_eq!(rec.busy_ns, 13 * 10);
        assert_eq!(rec.max_concurrent["queue:io"], 1);
        assert_eq!(rec.max_concurrent["device:d"], 1);
    }

    #[test]
    fn without_a_limit_every_span_is_kept() {
        let r = Recorder::new(vec![queue("io", None)], Vec::new(), true);
        feed(&r, "io", CallbackKind::IoRead, Irql::Passive, 50, 0);
        let rec = r.finish();
        assert_eq!((rec.spans.len(), rec.spans_dropped), (50, 0));

        let r = Recorder::new(vec![queue("io", None)], Vec::new(), false);
        feed(&r, "io", CallbackKind::IoRead, Irql::Passive, 50, 0);
        let rec = r.finish();
        assert_eq!(
            (rec.spans.len(), rec.spans_dropped, rec.callbacks),
            (0, 0, 50)
        );
    }

    #[test]
    fn a_limit_of_zero_keeps_nothing() {
        let r = Recorder::with_span_limit(vec![queue("io", None)], Vec::new(), 0);
        feed(&r, "io", CallbackKind::IoRead, Irql::Passive, 3, 0);
        let rec = r.finish();
        assert_eq!(
            (rec.spans.len(), rec.spans_dropped, rec.callbacks),
            (0, 3, 3)
        );
    }
}
