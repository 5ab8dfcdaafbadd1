//! Model checking of the synchronization protocols under `nt` and `wdf`, with loom.
//!
//! Run with `ci/loom.sh` (`RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p wdf
//! --test loom_protocols --release`). Without `--cfg loom` this file compiles to nothing.
//!
//! The real code is built on `std` and `parking_lot` primitives that loom cannot instrument, so
//! each model below is a small transcription of one algorithm: the same atomics with the same
//! orderings, the same lock scopes (every `nt::sync::SpinLock` / `parking_lot::Mutex` becomes a
//! `loom::sync::Mutex`, whose acquire/release semantics are the same), the same order of
//! operations. Each block names the file and function it mirrors, so a reader can hold the two
//! side by side. What a model leaves out (IRQL, the verifier, statistics counters, the deferral
//! rules, power management) is listed where it matters; none of it takes part in the protocol
//! being checked.
//!
//! One loom test per property; the property is the test's name.
#![cfg(loom)]

use std::collections::VecDeque;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// `loom::model` with the preemption bound of `LOOM_MAX_PREEMPTIONS`, or 2 when it is unset
/// (an unbounded search of the bigger models takes hours).
/// Prints how many executions were explored (see it with `--nocapture`).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    let started = std::time::Instant::now();
    b.check(move || {
        r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "{}: {} executions (preemption bound {:?}) in {:.1?}",
        std::thread::current().name().unwrap_or("model"),
        runs.load(std::sync::atomic::Ordering::Relaxed),
        b.preemption_bound,
        started.elapsed()
    );
}

// ================================================================================================
// nt::sync::raw::RawSpinLock (crates/nt/src/sync/raw.rs: `RawLock for RawSpinLock`,
// `acquire_contended`, `spin_word`). The IRQL raise/restore and the hold-time statistics are
// left out (the saved IRQL is the word's low byte, fixed at 0 here); `thread::current_id()` is
// passed in as `me` (ids are non-zero and unique per thread, as `nt::thread::current_id` hands
// them out).
// ================================================================================================

struct RawSpinLock {
    /// `RawSpinLock::word`: 0 when free, `me << 8 | previous IRQL` when held.
    word: AtomicU64,
}

impl RawSpinLock {
    fn new() -> Self {
        RawSpinLock {
            word: AtomicU64::new(0),
        }
    }

    /// `RawLock::is_owned_by_current_thread`.
    fn is_mine(&self, me: u64) -> bool {
        self.word.load(Ordering::Relaxed) >> 8 == me
    }

    fn is_free(&self) -> bool {
        self.word.load(Ordering::Relaxed) == 0
    }

    /// `RawSpinLock::acquire` and `acquire_contended`.
    fn acquire(&self, me: u64) {
        let mine = me << 8;
        if let Err(seen) =
            self.word
                .compare_exchange_weak(0, mine, Ordering::Acquire, Ordering::Relaxed)
        {
            // A recursive acquire is a fatal report.
            assert_ne!(seen >> 8, me, "recursive acquire");
            loop {
                // The real code waits with `while self.word.load(Relaxed) != 0 { pause or
                // yield }`. Loom lets a relaxed load return a stale value forever (a real
                // processor sees the release in bounded time), which makes that wait an
                // infinite model; the wait only decides when to retry the compare-exchange,
                // never whether the lock is taken, so the model reads once and yields before
                // each retry.
                if !self.is_free() {
                    thread::yield_now();
                }
                if self
                    .word
                    .compare_exchange_weak(0, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
        }
    }

    /// `RawSpinLock::try_acquire`.
    fn try_acquire(&self, me: u64) -> bool {
        self.word
            .compare_exchange(0, me << 8, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// `RawSpinLock::release`: refused (reported, `false`) when `me` is not the owner.
    fn release(&self, me: u64) -> bool {
        let word = self.word.load(Ordering::Relaxed);
        if word >> 8 != me {
            return false;
        }
        self.word.store(0, Ordering::Release);
        true
    }
}

/// The critical section of the lock model: plain data written under the lock.
fn critical(lock: &RawSpinLock, data: &UnsafeCell<usize>, holders: &AtomicUsize, me: u64) {
    assert!(lock.is_mine(me), "the holder is the recorded owner");
    assert_eq!(holders.fetch_add(1, Ordering::Relaxed), 0, "two holders");
    // SAFETY: loom checks this access: two of them not ordered by the lock fail the model.
    data.with_mut(|d| unsafe { *d += 1 });
    holders.fetch_sub(1, Ordering::Relaxed);
}

/// Threads take the lock (`acquire` or `try_acquire`) and write plain (non-atomic) data under
/// it; loom reports any two accesses to that data that the lock does not order, so this proves
/// mutual exclusion and the acquire/release ordering. Every holder is the recorded owner and no
/// one else is; the main thread also releases the lock without holding it, which must be
/// refused without breaking exclusion. Two schedules: two acquirers (contended spin) and a stray
/// release; one acquirer against two try-acquirers. (Two spinners and a third holder are not
/// combined: loom lets two yielding spinners hand the processor to each other forever.)
#[test]
fn callback_lock_admits_one_holder() {
    model(|| lock_model(&[1, 2], &[], false));
    model(|| lock_model(&[1], &[2], true));
}

/// Threads `acquirers` call `acquire`, threads `try_acquirers` call `try_acquire`; the main
/// thread makes a stray release and, if `main_tries`, try-acquires as thread 9.
fn lock_model(acquirers: &[u64], try_acquirers: &[u64], main_tries: bool) {
    let lock = Arc::new(RawSpinLock::new());
    let data = Arc::new(UnsafeCell::new(0usize));
    let holders = Arc::new(AtomicUsize::new(0));
    let took = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for (&me, try_only) in acquirers
        .iter()
        .map(|m| (m, false))
        .chain(try_acquirers.iter().map(|m| (m, true)))
    {
        let (lock, data, holders, took) =
            (lock.clone(), data.clone(), holders.clone(), took.clone());
        threads.push(thread::spawn(move || {
            if try_only {
                if !lock.try_acquire(me) {
                    return;
                }
            } else {
                lock.acquire(me);
            }
            critical(&lock, &data, &holders, me);
            took.fetch_add(1, Ordering::Relaxed);
            assert!(lock.release(me));
            assert!(!lock.is_mine(me));
        }));
    }
    assert!(!lock.release(9), "a release by a non-owner is refused");
    if main_tries && lock.try_acquire(9) {
        critical(&lock, &data, &holders, 9);
        took.fetch_add(1, Ordering::Relaxed);
        assert!(lock.release(9));
    }
    for t in threads {
        t.join().unwrap();
    }
    // SAFETY: every thread that wrote is joined.
    let written = data.with(|d| unsafe { *d });
    assert_eq!(written, took.load(Ordering::Relaxed));
    assert!(written >= acquirers.len(), "every acquire gets the lock");
    assert!(lock.is_free());
}

// ================================================================================================
// nt::io::irp (crates/nt/src/io/irp.rs): `IrpShared::{finish, cancel}`,
// `Irp::{set_cancel_routine, clear_cancel_routine, finish}`. The buffers, the waker and the
// condition variable are left out; `completions` is the model's own count of `finish` calls
// (the real `finish` has `debug_assert!(slot.result.is_none(), "completed twice")`).
// ================================================================================================

type IrpCancelRoutine = Box<dyn FnOnce() + Send>;

/// Statuses, as `nt::NtStatus` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Success,
    Cancelled,
    InvalidDeviceState,
}

struct Irp {
    /// `IrpShared::slot.result`.
    slot: Mutex<Option<Status>>,
    completed: AtomicBool,
    cancelled: AtomicBool,
    cancel_routine: Mutex<Option<IrpCancelRoutine>>,
    /// `Irp::routine_set`: the owner's note that a routine was ever installed (the real field
    /// lives in the owned `Irp`, which moves between threads only with synchronization).
    routine_set: AtomicBool,
    completions: AtomicUsize,
}

impl Irp {
    fn new() -> Arc<Irp> {
        Arc::new(Irp {
            slot: Mutex::new(None),
            completed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            cancel_routine: Mutex::new(None),
            routine_set: AtomicBool::new(false),
            completions: AtomicUsize::new(0),
        })
    }

    /// `Irp::finish` (the routine, if one was ever installed, is dropped first) +
    /// `IrpShared::finish`.
    fn finish(&self, status: Status) {
        if self.routine_set.load(Ordering::Relaxed) {
            self.cancel_routine.lock().unwrap().take();
        }
        self.completions.fetch_add(1, Ordering::SeqCst);
        let mut slot = self.slot.lock().unwrap();
        assert!(slot.is_none(), "IRP completed twice");
        *slot = Some(status);
        self.completed.store(true, Ordering::Release);
    }

    /// `IrpShared::cancel` (what `PendingIo::cancel` and `IrpCanceller::cancel` call).
    fn cancel(&self) {
        if self.completed.load(Ordering::Acquire) {
            return;
        }
        let routine = {
            let mut r = self.cancel_routine.lock().unwrap();
            self.cancelled.store(true, Ordering::Release);
            r.take()
        };
        if let Some(routine) = routine {
            routine();
        }
    }

    /// `Irp::set_cancel_routine`.
    fn set_cancel_routine(&self, routine: IrpCancelRoutine) -> Result<(), IrpCancelRoutine> {
        let mut r = self.cancel_routine.lock().unwrap();
        if self.cancelled.load(Ordering::Acquire) {
            return Err(routine);
        }
        *r = Some(routine);
        self.routine_set.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// `Irp::clear_cancel_routine`.
    fn clear_cancel_routine(&self) -> bool {
        self.cancel_routine.lock().unwrap().take().is_some()
    }

    /// The client's view once everything is joined: completed exactly once, with this status.
    fn outcome(&self) -> Status {
        assert_eq!(
            self.completions.load(Ordering::SeqCst),
            1,
            "completed exactly once"
        );
        assert!(self.completed.load(Ordering::Acquire));
        self.slot.lock().unwrap().expect("a status")
    }
}

// ================================================================================================
// wdf::Request (crates/wdf/src/request.rs): an owned value consumed by completion;
// `finish` completes the IRP and, if the driver owned it, tells its queue
// (`Queue::request_completed`). `complete_internal` completes on the framework's behalf.
// ================================================================================================

struct Request {
    id: u64,
    irp: Option<Arc<Irp>>,
    queue: Q,
    driver_owned: bool,
    /// The fast-path shard the request is counted in (`Request::shard`).
    shard: Option<usize>,
}

impl Request {
    /// `Request::complete` → `finish`.
    fn complete(mut self, status: Status) {
        self.finish(status);
    }

    /// `Request::complete_internal`.
    fn complete_internal(mut self, status: Status) {
        self.driver_owned = false;
        self.finish(status);
    }

    /// `Request::finish`.
    fn finish(&mut self, status: Status) {
        let Some(irp) = self.irp.take() else { return };
        if self.driver_owned {
            // Model-only: the driver gives the request up (checked by the sequential model).
            self.queue.in_driver.fetch_sub(1, Ordering::SeqCst);
        }
        irp.finish(status);
        if self.driver_owned {
            self.driver_owned = false;
            let q = self.queue.clone();
            q.request_completed(self.shard.take());
        }
    }

    fn irp(&self) -> &Irp {
        self.irp.as_ref().expect("not completed")
    }
}

// ================================================================================================
// wdf::queue (crates/wdf/src/queue/{mod.rs, dispatch.rs, fast.rs, cancel.rs, state.rs}).
// The queue's object lock (`state`, an nt SpinLock) is a loom Mutex. Left out: the two
// deferral rules (they post a DPC or work item instead of looping: see the DPC model), power
// management (`st.power` is always on and never notifying), ready notification and manual
// queues, `EvtIoCanceledOnQueue` (requests cancelled in the queue are completed), requeue and
// forward, statistics counters.
// ================================================================================================

/// The driver's cancel routine (`EvtRequestCancel`): receives the request and must complete it.
type CancelRoutine = Box<dyn FnOnce(Request) + Send>;
/// A queue-state callback (`EvtIoQueueState` of stop / purge).
type StateCallback = Box<dyn FnOnce() + Send>;

/// `QueueState` (queue/mod.rs).
#[derive(Default)]
struct QueueState {
    pending: VecDeque<Request>,
    driver_io_count: usize,
    dispatching: usize,
    accepting: bool,
    dispatching_enabled: bool,
    cancelable: Vec<(Request, CancelRoutine)>,
    cancelled: VecDeque<(Request, CancelRoutine)>,
    stop_complete: Option<StateCallback>,
    purge_complete: Option<StateCallback>,
    purging: bool,
}

/// `fast::Shard`: only the counters the handshakes use.
struct Shard {
    owned: AtomicIsize,
    looping: AtomicIsize,
}

impl Shard {
    fn new() -> Self {
        Shard {
            owned: AtomicIsize::new(0),
            looping: AtomicIsize::new(0),
        }
    }
}

/// Number of shards in the model (the real queue has 16; two keep "sum of separate loads").
const SHARDS: usize = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum DispatchType {
    Sequential,
    /// Parallel with no limit and no `EvtIoStop`: `fast_eligible`.
    Parallel,
}

/// What the model driver's I/O callback does with a presented request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// Keeps it (in `Queue::held`) for another thread to complete.
    Hold,
    /// Completes it with success at once.
    Complete,
    /// Marks it cancelable (`mark_cancelable`, routine: complete with `STATUS_CANCELLED`) and
    /// keeps the ticket (in `Queue::tickets`).
    MarkCancelable,
}

struct Queue {
    dispatch_type: DispatchType,
    state: Mutex<QueueState>,
    fast: AtomicBool,
    shards: [Shard; SHARDS],
    driver: Driver,
    // ---- model-only bookkeeping ----
    /// Requests the driver holds.
    held: Mutex<Vec<Request>>,
    /// Cancelable tickets the driver holds.
    tickets: Mutex<Vec<CancelableRequest>>,
    /// Requests presented and not yet completed by the driver.
    in_driver: AtomicUsize,
    /// Driver cancel routines run.
    cancel_routines: AtomicUsize,
}

/// A handle to a queue (`Arc<Queue>` in the real code; loom's `Arc` cannot be a method
/// receiver, so the model's methods are on this newtype).
#[derive(Clone)]
struct Q(Arc<Queue>);

impl std::ops::Deref for Q {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        &self.0
    }
}

/// Loom treats a `SeqCst` load, store or RMW as `AcqRel` (its README, "Unsupported features"),
/// which is too weak for the fast path's Dekker handshakes: it then reports store-buffering
/// outcomes that sequential consistency forbids. It does implement `fence(SeqCst)`. So each
/// `SeqCst` write that the real code follows with a `SeqCst` read of *another* variable (the
/// shard increment/decrement before re-reading `fast`; the `fast = false` store before the loop
/// reads the shards) is followed here by a `SeqCst` fence: for these all-`SeqCst` handshakes
/// that gives exactly the guarantee the real accesses have (the two sides are ordered in the
/// single total order, so one side sees the other's write), and no more.
fn sc() {
    loom::sync::atomic::fence(Ordering::SeqCst);
}

loom::thread_local! {
    static SHARD: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// The calling thread's shard (`Shards::mine`); the model assigns them with [`set_shard`].
fn mine() -> usize {
    SHARD.with(|s| s.get())
}

fn set_shard(i: usize) {
    SHARD.with(|s| s.set(i % SHARDS));
}

enum Event {
    Arrival(Request),
    Completed,
    Internal,
    Kick,
}

impl Q {
    /// A started queue (`Queue::create`: accepting, dispatching, `update_fast`).
    fn new(dispatch_type: DispatchType, driver: Driver) -> Q {
        let q = Q(Arc::new(Queue {
            dispatch_type,
            state: Mutex::new(QueueState {
                accepting: true,
                dispatching_enabled: true,
                ..QueueState::default()
            }),
            fast: AtomicBool::new(false),
            shards: [Shard::new(), Shard::new()],
            driver,
            held: Mutex::new(Vec::new()),
            tickets: Mutex::new(Vec::new()),
            in_driver: AtomicUsize::new(0),
            cancel_routines: AtomicUsize::new(0),
        }));
        q.update_fast(&q.state.lock().unwrap());
        q
    }

    /// A new request for this queue, and its IRP (what the client's `PendingIo` sees).
    fn request(&self, id: u64) -> (Request, Arc<Irp>) {
        let irp = Irp::new();
        let r = Request {
            id,
            irp: Some(irp.clone()),
            queue: self.clone(),
            driver_owned: false,
            shard: None,
        };
        (r, irp)
    }

    /// `fast_eligible` (fast.rs).
    fn fast_eligible(&self) -> bool {
        self.dispatch_type == DispatchType::Parallel
    }

    /// `Shards::owned`: a sum of separate SeqCst loads.
    fn shards_owned(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.owned.load(Ordering::SeqCst))
            .sum::<isize>()
            .max(0) as usize
    }

    /// `Shards::looping`.
    fn shards_looping(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.looping.load(Ordering::SeqCst))
            .sum::<isize>()
            .max(0) as usize
    }

    /// `owned_total` (fast.rs).
    fn owned_total(&self, st: &QueueState) -> usize {
        if self.fast_eligible() {
            st.driver_io_count + self.shards_owned()
        } else {
            st.driver_io_count
        }
    }

    /// `looping_total` (fast.rs).
    fn looping_total(&self, st: &QueueState) -> usize {
        if self.fast_eligible() {
            st.dispatching + self.shards_looping()
        } else {
            st.dispatching
        }
    }

    /// `update_fast` (fast.rs), called with the object lock held.
    fn update_fast(&self, st: &QueueState) {
        let fast = self.fast_eligible()
            && st.accepting
            && st.dispatching_enabled
            && !st.purging
            && st.pending.is_empty()
            && st.cancelled.is_empty()
            && st.stop_complete.is_none()
            && st.purge_complete.is_none();
        if self.fast.load(Ordering::Relaxed) != fast {
            self.fast.store(fast, Ordering::SeqCst);
            sc();
        }
    }

    /// `Queue::dispatch_events` (dispatch.rs), steps 1, 3, 4, 8, 11-14.
    fn dispatch_events(&self, event: Event) {
        let event = match event {
            Event::Arrival(r) if self.fast_eligible() => match self.try_fast(r) {
                None => return,
                Some(r) => Event::Arrival(r),
            },
            e => e,
        };
        let mut st = self.state.lock().unwrap();
        let mut new = None;
        match event {
            Event::Arrival(r) => {
                if !st.accepting {
                    drop(st);
                    r.complete_internal(Status::InvalidDeviceState);
                    return;
                }
                new = Some(r);
            }
            Event::Completed => {
                st.driver_io_count -= 1;
                if self.looping_total(&st) > 0 {
                    return; // the thread in the loop will notice
                }
            }
            Event::Internal => {
                if self.looping_total(&st) > 0 {
                    return;
                }
            }
            Event::Kick => {}
        }
        // (Deferral rules 1 and 2 are not modelled.)
        st.dispatching += 1;
        loop {
            // 1. Cancel routines of cancelled driver-owned requests.
            if let Some((req, routine)) = st.cancelled.pop_front() {
                drop(st);
                self.invoke_cancel(req, routine);
                st = self.state.lock().unwrap();
                continue;
            }
            // 3. Stop complete: nothing driver-owned, no other thread in the loop.
            if st.stop_complete.is_some()
                && self.looping_total(&st) == 1
                && self.owned_total(&st) == 0
            {
                let cb = st.stop_complete.take().expect("checked");
                st.purging = false;
                drop(st);
                cb();
                st = self.state.lock().unwrap();
                continue;
            }
            // 4. Purge / drain complete: nothing queued or driver-owned.
            if st.purge_complete.is_some()
                && self.looping_total(&st) == 1
                && self.owned_total(&st) == 0
                && st.pending.is_empty()
                && new.is_none()
            {
                let cb = st.purge_complete.take().expect("checked");
                st.purging = false;
                drop(st);
                cb();
                st = self.state.lock().unwrap();
                continue;
            }
            // 8, 9. Stopped: keep requests queued.
            if !st.dispatching_enabled {
                break;
            }
            // 11, 12. Sequential limit (the parallel queue here has no limit).
            if self.dispatch_type == DispatchType::Sequential && self.owned_total(&st) > 0 {
                break;
            }
            // 13. The head of the queue goes first; a new request goes behind it.
            let req = match st.pending.pop_front() {
                Some(head) => {
                    head.irp().clear_cancel_routine();
                    if let Some(n) = new.take() {
                        self.insert_pending(&mut st, n, false);
                    }
                    head
                }
                None => match new.take() {
                    Some(n) => n,
                    None => break,
                },
            };
            // 14. Present it.
            st.driver_io_count += 1;
            if self.dispatch_type == DispatchType::Sequential {
                assert!(
                    st.driver_io_count <= 1,
                    "a sequential queue has two driver-owned requests"
                );
            }
            drop(st);
            self.present(req);
            st = self.state.lock().unwrap();
        }
        if let Some(n) = new.take() {
            self.insert_pending(&mut st, n, false);
        }
        st.dispatching -= 1;
        self.update_fast(&st);
    }

    /// `Queue::try_fast` (dispatch.rs), without the deferral conditions.
    fn try_fast(&self, mut r: Request) -> Option<Request> {
        if !self.fast.load(Ordering::Relaxed) {
            return Some(r);
        }
        let s = mine();
        let sh = &self.shards[s];
        sh.owned.fetch_add(1, Ordering::SeqCst);
        sh.looping.fetch_add(1, Ordering::SeqCst);
        sc();
        if !self.fast.load(Ordering::SeqCst) {
            sh.owned.fetch_sub(1, Ordering::SeqCst);
            sh.looping.fetch_sub(1, Ordering::SeqCst);
            // The back-out: run the guarded pass this thread was counted for.
            self.dispatch_events(Event::Internal);
            return Some(r);
        }
        r.shard = Some(s);
        self.present(r);
        sh.looping.fetch_sub(1, Ordering::SeqCst);
        sc();
        if !self.fast.load(Ordering::SeqCst) {
            self.dispatch_events(Event::Internal);
        }
        None
    }

    /// `Queue::insert_pending` (dispatch.rs); requests cancelled on insert are completed
    /// (no `EvtIoCanceledOnQueue` in the model).
    fn insert_pending(&self, st: &mut QueueState, req: Request, front: bool) {
        let q = self.clone();
        let id = req.id;
        let routine: IrpCancelRoutine = Box::new(move || q.cancel_pending(id));
        if req.irp().set_cancel_routine(routine).is_err() {
            req.complete_internal(Status::Cancelled);
            return;
        }
        if front {
            st.pending.push_front(req);
        } else {
            st.pending.push_back(req);
        }
        self.update_fast(st);
    }

    /// `Queue::present` (dispatch.rs) and the model driver's I/O callback.
    fn present(&self, mut req: Request) {
        req.driver_owned = true;
        let before = self.in_driver.fetch_add(1, Ordering::SeqCst);
        if self.dispatch_type == DispatchType::Sequential {
            assert_eq!(before, 0, "a sequential queue presented a second request");
        }
        match self.driver {
            Driver::Hold => self.held.lock().unwrap().push(req),
            Driver::Complete => req.complete(Status::Success),
            Driver::MarkCancelable => {
                let ticket =
                    req.mark_cancelable(Box::new(|r: Request| r.complete(Status::Cancelled)));
                self.tickets.lock().unwrap().push(ticket);
            }
        }
    }

    /// `Queue::request_completed` + `release_ownership` (mod.rs).
    fn request_completed(&self, shard: Option<usize>) {
        match shard {
            Some(s) => {
                self.shards[s].owned.fetch_sub(1, Ordering::SeqCst);
                sc();
                if !self.fast.load(Ordering::SeqCst) {
                    self.dispatch_events(Event::Internal);
                }
            }
            None => self.dispatch_events(Event::Completed),
        }
    }

    /// `Queue::invoke_cancel` (mod.rs), without the scope lock.
    fn invoke_cancel(&self, req: Request, routine: CancelRoutine) {
        self.cancel_routines.fetch_add(1, Ordering::SeqCst);
        routine(req);
    }

    /// `Queue::cancel_pending` (cancel.rs): the IRP cancel routine of a queued request. The
    /// pass afterwards lets a drain or purge waiting for the queue to empty complete.
    fn cancel_pending(&self, id: u64) {
        let req = {
            let mut st = self.state.lock().unwrap();
            let Some(pos) = st.pending.iter().position(|r| r.id == id) else {
                return;
            };
            Some(st.pending.remove(pos).expect("position is in range"))
        };
        if let Some(r) = req {
            r.complete_internal(Status::Cancelled);
        }
        self.dispatch_events(Event::Internal);
    }

    /// `Queue::cancel_driver_owned` (cancel.rs): the IRP cancel routine of a cancelable request.
    fn cancel_driver_owned(&self, id: u64) {
        {
            let mut st = self.state.lock().unwrap();
            let Some(pos) = st.cancelable.iter().position(|(r, _)| r.id == id) else {
                return;
            };
            let entry = st.cancelable.swap_remove(pos);
            st.cancelled.push_back(entry);
            self.update_fast(&st);
        }
        self.dispatch_events(Event::Internal);
    }

    /// `Queue::cancel_all_cancelable` (cancel.rs).
    fn cancel_all_cancelable(st: &mut QueueState) {
        let all: Vec<_> = st.cancelable.drain(..).collect();
        for (req, routine) in all {
            req.irp().clear_cancel_routine();
            st.cancelled.push_back((req, routine));
        }
    }

    /// `Queue::take_pending_for_cancel` (cancel.rs).
    fn take_pending_for_cancel(&self, st: &mut QueueState) -> Vec<Request> {
        let mut complete = Vec::new();
        for req in std::mem::take(&mut st.pending) {
            req.irp().clear_cancel_routine();
            complete.push(req);
        }
        self.update_fast(st);
        complete
    }

    /// `Queue::change` (state.rs).
    fn change(
        &self,
        cb: Option<StateCallback>,
        stop: bool,
        apply: impl FnOnce(&Q, &mut QueueState) -> Vec<Request>,
    ) {
        let cancelled = {
            let mut st = self.state.lock().unwrap();
            let slot = if stop {
                &mut st.stop_complete
            } else {
                &mut st.purge_complete
            };
            assert!(!(cb.is_some() && slot.is_some()), "second state callback");
            if cb.is_some() {
                *slot = cb;
            }
            let cancelled = apply(self, &mut st);
            self.update_fast(&st);
            cancelled
        };
        for r in cancelled {
            r.complete_internal(Status::Cancelled);
        }
        self.dispatch_events(Event::Kick);
    }

    /// `Queue::stop` (state.rs).
    fn stop(&self, on_idle: Option<StateCallback>) {
        self.change(on_idle, true, |_, st| {
            st.dispatching_enabled = false;
            Vec::new()
        });
    }

    /// `Queue::purge` (state.rs).
    fn purge(&self, on_empty: Option<StateCallback>) {
        self.change(on_empty, false, |q, st| {
            st.accepting = false;
            st.purging = true;
            Q::cancel_all_cancelable(st);
            q.take_pending_for_cancel(st)
        });
    }

    /// `Queue::drain` (state.rs).
    fn drain(&self, on_empty: Option<StateCallback>) {
        self.change(on_empty, false, |_, st| {
            st.accepting = false;
            Vec::new()
        });
    }

    /// `Queue::start` (state.rs).
    fn start(&self) {
        {
            let mut st = self.state.lock().unwrap();
            st.accepting = true;
            st.dispatching_enabled = true;
            st.purging = false;
            self.update_fast(&st);
        }
        self.dispatch_events(Event::Kick);
    }

    /// Model-only: what `Device::dispatch` does with a new request.
    fn arrive(&self, r: Request) {
        self.dispatch_events(Event::Arrival(r));
    }

    /// Model-only: completes every request the driver holds.
    fn complete_held(&self, status: Status) {
        loop {
            // Taken out before completing: completion may present the next request inline,
            // and the model driver's callback takes `held` again.
            let Some(r) = self.held.lock().unwrap().pop() else {
                return;
            };
            r.complete(status);
        }
    }

    /// Model-only: the queue is at rest, with nothing owned, looping or waiting to run.
    fn assert_quiet(&self) {
        let st = self.state.lock().unwrap();
        assert_eq!(st.dispatching, 0, "a thread left inside the loop");
        assert_eq!(self.owned_total(&st), 0, "a request still driver-owned");
        assert_eq!(self.shards_looping(), 0);
        assert!(st.cancelled.is_empty(), "a cancel routine was never run");
        assert!(st.cancelable.is_empty());
        assert_eq!(self.in_driver.load(Ordering::SeqCst), 0);
    }
}

/// `CancelableRequest` (cancel.rs).
struct CancelableRequest {
    id: u64,
    queue: Q,
}

impl Request {
    /// `Request::mark_cancelable` → `mark(routine, ex = false)` (cancel.rs).
    fn mark_cancelable(self, routine: CancelRoutine) -> CancelableRequest {
        assert!(self.driver_owned);
        let queue = self.queue.clone();
        let id = self.id;
        let mut st = queue.state.lock().unwrap();
        let q = queue.clone();
        let installed = !st.purging
            && self
                .irp()
                .set_cancel_routine(Box::new(move || q.cancel_driver_owned(id)))
                .is_ok();
        if installed {
            st.cancelable.push((self, routine));
            return CancelableRequest {
                id,
                queue: queue.clone(),
            };
        }
        st.cancelled.push_back((self, routine));
        queue.update_fast(&st);
        drop(st);
        queue.dispatch_events(Event::Internal);
        CancelableRequest { id, queue }
    }
}

impl CancelableRequest {
    /// `CancelableRequest::unmark` (cancel.rs).
    fn unmark(self) -> Result<Request, Status> {
        let mut st = self.queue.state.lock().unwrap();
        match st.cancelable.iter().position(|(r, _)| r.id == self.id) {
            Some(pos) => {
                let (req, _routine) = st.cancelable.swap_remove(pos);
                drop(st);
                req.irp().clear_cancel_routine();
                Ok(req)
            }
            None => Err(Status::Cancelled),
        }
    }
}

/// A request that waits in a stopped queue is started (and presented, and completed by the
/// driver), cancelled by its client, and purged, all at once; before any of it, it may even be
/// cancelled on its way into the queue. Whatever the interleaving, its IRP is completed exactly
/// once, with success (the driver got it), `STATUS_CANCELLED` (the cancel routine or the purge
/// got it) or `STATUS_INVALID_DEVICE_STATE` (it arrived after the purge closed the queue), and
/// nothing stays queued, owned or in the loop. A second schedule has only the arrival and the
/// cancel: nothing else would ever take the request out of the stopped queue, so the cancel
/// alone must complete it with `STATUS_CANCELLED` (a cancel lost between `set_cancel_routine`
/// and `cancel` would leave it queued). A third races the arrival and the cancel with a drain.
#[test]
fn request_completed_exactly_once_under_complete_cancel_purge() {
    model(|| {
        let q = Q::new(DispatchType::Sequential, Driver::Complete);
        q.stop(None);
        let (r, irp) = q.request(1);
        let t1 = {
            let q = q.clone();
            thread::spawn(move || {
                q.arrive(r); // queued: the queue is stopped
                q.start(); // presented, completed by the driver with success
            })
        };
        let t2 = {
            let irp = irp.clone();
            thread::spawn(move || irp.cancel())
        };
        q.purge(None);
        t1.join().unwrap();
        t2.join().unwrap();
        let status = irp.outcome();
        assert!(
            matches!(
                status,
                Status::Success | Status::Cancelled | Status::InvalidDeviceState
            ),
            "{status:?}"
        );
        assert!(q.state.lock().unwrap().pending.is_empty(), "left queued");
        q.assert_quiet();
    });
    model(|| {
        let q = Q::new(DispatchType::Sequential, Driver::Complete);
        q.stop(None);
        let (r, irp) = q.request(1);
        let t2 = {
            let irp = irp.clone();
            thread::spawn(move || irp.cancel())
        };
        q.arrive(r);
        t2.join().unwrap();
        assert_eq!(irp.outcome(), Status::Cancelled);
        assert!(q.state.lock().unwrap().pending.is_empty(), "left queued");
        q.assert_quiet();
    });
    // A drain waits for the stopped queue to empty while the request arrives and is cancelled:
    // however it leaves (cancelled on insert, cancelled while queued, refused because the drain
    // came first), the drain's callback fires exactly once (the wdfkit soak found it lost when
    // a cancel emptied the queue without a dispatch pass).
    model(|| {
        let q = Q::new(DispatchType::Sequential, Driver::Complete);
        q.stop(None);
        let (r, irp) = q.request(1);
        let drained = Arc::new(AtomicUsize::new(0));
        let t1 = {
            let q = q.clone();
            thread::spawn(move || q.arrive(r))
        };
        let t2 = {
            let irp = irp.clone();
            thread::spawn(move || irp.cancel())
        };
        let d = drained.clone();
        q.drain(Some(Box::new(move || {
            d.fetch_add(1, Ordering::SeqCst);
        })));
        t1.join().unwrap();
        t2.join().unwrap();
        let status = irp.outcome();
        assert!(
            matches!(status, Status::Cancelled | Status::InvalidDeviceState),
            "{status:?}"
        );
        assert_eq!(
            drained.load(Ordering::SeqCst),
            1,
            "drain callback fired once"
        );
        q.assert_quiet();
    });
}

/// The driver marks a presented request cancelable and then unmarks it, while the client
/// cancels it and a purge (with a completion callback) runs. Exactly one side gets the request:
/// either `unmark` returns it (and the driver completes it with success) or the driver's cancel
/// routine receives it, never both and never neither; the IRP is completed once, the cancel
/// routine is never left waiting in the cancelled list, and the purge callback fires exactly
/// once. Two more schedules: unmark against the client's cancel alone (no purge pass to pick up
/// a stranded cancel routine), and a driver that keeps the request cancelable against a purge
/// alone (the purge must cancel it, also when the driver marks it while the purge is under way).
#[test]
fn cancelable_request_unmark_vs_cancel_exactly_one_owner() {
    model(|| unmark_model(true, true, true));
    model(|| unmark_model(true, true, false));
    model(|| unmark_model(false, false, true));
}

/// `unmark`: the driver unmarks after marking; `cancel`: the client cancels; `purge`: a purge
/// with a completion callback runs.
fn unmark_model(unmark: bool, cancel: bool, purge: bool) {
    let q = Q::new(DispatchType::Sequential, Driver::MarkCancelable);
    let (r, irp) = q.request(1);
    let purged = Arc::new(AtomicUsize::new(0));
    let t1 = {
        let q = q.clone();
        thread::spawn(move || {
            q.arrive(r); // presented; the driver marks it cancelable
            if !unmark {
                return 0;
            }
            let ticket = q.tickets.lock().unwrap().pop();
            match ticket.map(CancelableRequest::unmark) {
                Some(Ok(req)) => {
                    req.complete(Status::Success);
                    1
                }
                Some(Err(Status::Cancelled)) | None => 0,
                Some(Err(s)) => panic!("unmark: {s:?}"),
            }
        })
    };
    let t2 = cancel.then(|| {
        let irp = irp.clone();
        thread::spawn(move || irp.cancel())
    });
    if purge {
        let p = purged.clone();
        q.purge(Some(Box::new(move || {
            p.fetch_add(1, Ordering::SeqCst);
        })));
    }
    let unmarked = t1.join().unwrap();
    if let Some(t2) = t2 {
        t2.join().unwrap();
    }
    let routines = q.cancel_routines.load(Ordering::SeqCst);
    let status = irp.outcome();
    match status {
        Status::Success => assert_eq!((unmarked, routines), (1, 0)),
        Status::Cancelled => assert_eq!((unmarked, routines), (0, 1)),
        // Arrived after the purge: never presented.
        Status::InvalidDeviceState => assert_eq!((unmarked, routines), (0, 0)),
    }
    if !unmark {
        assert_ne!(status, Status::Success);
    }
    assert_eq!(
        purged.load(Ordering::SeqCst),
        usize::from(purge),
        "purge callback fired once"
    );
    q.tickets.lock().unwrap().clear();
    q.assert_quiet();
}

/// Two requests arrive on two threads at a sequential queue whose driver keeps each request it
/// gets, while a third thread completes whatever the driver holds. The driver never holds two
/// (checked when the loop counts one, and when the driver receives one), and after the
/// remaining held requests are completed one by one both have been presented and completed:
/// the second was never stranded behind the first.
#[test]
fn sequential_queue_never_two_driver_owned() {
    model(|| {
        let q = Q::new(DispatchType::Sequential, Driver::Hold);
        let (r1, irp1) = q.request(1);
        let (r2, irp2) = q.request(2);
        let a = {
            let q = q.clone();
            thread::spawn(move || q.arrive(r1))
        };
        let b = {
            let q = q.clone();
            thread::spawn(move || q.arrive(r2))
        };
        q.complete_held(Status::Success);
        a.join().unwrap();
        b.join().unwrap();
        // Whatever is left: each completion must present the next queued request.
        for _ in 0..2 {
            q.complete_held(Status::Success);
        }
        assert_eq!(irp1.outcome(), Status::Success);
        assert_eq!(irp2.outcome(), Status::Success);
        assert!(q.state.lock().unwrap().pending.is_empty(), "stranded");
        q.assert_quiet();
    });
}

/// The state change raced by the wake-up models.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// `stop(on_idle)`: the callback fires once nothing is driver-owned; requests stay queued.
    Stop,
    /// `purge(on_empty)`: stops accepting; the callback fires once nothing is queued or owned.
    Purge,
}

/// The model shared by the two wake-up tests: a request arrives and is kept by the driver,
/// another thread completes it, and a state change with a completion callback runs, all at
/// once. The callback must fire exactly once, as soon as the driver owns nothing: if the driver
/// still holds the request when the threads are done, it must fire on that request's
/// completion, and not before. Then a start presents anything a stop kept queued, and the
/// request ends completed exactly once (success, or `STATUS_INVALID_DEVICE_STATE` when it
/// arrived after the purge).
fn change_races_presenter_and_completer(dispatch_type: DispatchType, change: Change) {
    let q = Q::new(dispatch_type, Driver::Hold);
    let (r, irp) = q.request(1);
    let fired = Arc::new(AtomicUsize::new(0));
    let presenter = {
        let q = q.clone();
        thread::spawn(move || {
            set_shard(0);
            q.arrive(r);
        })
    };
    let completer = {
        let q = q.clone();
        thread::spawn(move || {
            set_shard(1);
            q.complete_held(Status::Success);
        })
    };
    let f = fired.clone();
    let cb: StateCallback = Box::new(move || {
        f.fetch_add(1, Ordering::SeqCst);
    });
    match change {
        Change::Stop => q.stop(Some(cb)),
        Change::Purge => q.purge(Some(cb)),
    }
    presenter.join().unwrap();
    completer.join().unwrap();
    let still_held = !q.held.lock().unwrap().is_empty();
    assert_eq!(
        fired.load(Ordering::SeqCst),
        usize::from(!still_held),
        "the state callback fires once the driver owns nothing, and only then"
    );
    q.complete_held(Status::Success);
    assert_eq!(
        fired.load(Ordering::SeqCst),
        1,
        "the state callback fired once"
    );
    // The request may have been kept queued by the stop: starting presents it.
    q.start();
    q.complete_held(Status::Success);
    let status = irp.outcome();
    match change {
        Change::Stop => assert_eq!(status, Status::Success),
        Change::Purge => assert!(
            matches!(status, Status::Success | Status::InvalidDeviceState),
            "{status:?}"
        ),
    }
    assert!(q.state.lock().unwrap().pending.is_empty(), "stranded");
    q.assert_quiet();
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}

/// The locked dispatch loop: `Completed` and `Internal` events run a pass only when no thread is
/// in the loop (`looping_total == 0`), and the loop's "can act" checks and its exit happen under
/// one hold of the object lock, so whichever thread is last always sees the state change.
#[test]
fn dispatch_loop_never_loses_a_wakeup() {
    model(|| change_races_presenter_and_completer(DispatchType::Sequential, Change::Stop));
    model(|| change_races_presenter_and_completer(DispatchType::Sequential, Change::Purge));
}

/// The lock-free fast path of a parallel queue: the presenter counts itself in its shard and
/// then re-reads `fast` (SeqCst), the state change clears `fast` (SeqCst, under the lock) and
/// then reads the shards; a presenter that finds `fast` cleared backs out and runs the guarded
/// pass it was counted for (with a purge, its arrival is then refused without a pass, so the
/// back-out pass is the only one left to fire the callback); a fast completer decrements its
/// shard and then re-reads `fast`.
#[test]
fn fast_path_handshake_never_loses_a_wakeup() {
    model(|| change_races_presenter_and_completer(DispatchType::Parallel, Change::Stop));
    model(|| change_races_presenter_and_completer(DispatchType::Parallel, Change::Purge));
}

// ================================================================================================
// nt::Dpc (crates/nt/src/executors/dpc.rs): `Dpc::insert` (swap(true, AcqRel), then enqueue on
// a processor), `Processors::enqueue` (push under the processor's mutex) and `Processors::run`
// (pop under the mutex, `queued.store(false, Release)`, then run the routine). The same
// protocol is `nt::WorkItem` (crates/nt/src/executors/work_queue.rs: `WorkItem::enqueue`,
// `WorkQueue::run`: the same swap, the flag cleared with the same store before the routine). The routine here is the queue's deferred
// dispatch pass (`Queue::run_deferred`): it takes all work posted before it (the queue's
// pending list, under the queue lock).
// ================================================================================================

struct DeferredObject {
    queued: AtomicBool,
    /// The processor's (or work queue's) list of queued objects; `true` is this object.
    processor: Mutex<VecDeque<bool>>,
    /// Work posted for the routine (the queue's pending requests), under its own lock.
    work: Mutex<usize>,
    inserted: AtomicUsize,
    runs: AtomicUsize,
    done: AtomicUsize,
}

impl DeferredObject {
    fn new() -> Arc<Self> {
        Arc::new(DeferredObject {
            queued: AtomicBool::new(false),
            processor: Mutex::new(VecDeque::new()),
            work: Mutex::new(0),
            inserted: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        })
    }

    /// `Dpc::insert` / `WorkItem::enqueue`.
    fn insert(&self) -> bool {
        if self.queued.swap(true, Ordering::AcqRel) {
            return false;
        }
        // `Processors::enqueue`.
        let mut p = self.processor.lock().unwrap();
        assert!(p.is_empty(), "the object is queued twice");
        p.push_back(true);
        self.inserted.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Posts one unit of work, then inserts (`Queue::defer`: insert_pending, then insert).
    fn post(&self) {
        *self.work.lock().unwrap() += 1;
        self.insert();
    }

    /// One iteration of `Processors::run` / `WorkQueue::run`; false if nothing was queued.
    fn run_one(&self) -> bool {
        let Some(_obj) = self.processor.lock().unwrap().pop_front() else {
            return false;
        };
        // The real code: `queued.store(false, Ordering::Release)`. Loom keeps modification order
        // as a partial order (vector clocks), so it lets this plain store slip *before* a
        // concurrent `swap` that read the value the store overwrote, an ordering C11 forbids
        // (an RMW reads the last value before it in the total modification order), and then
        // reports the flag stuck at `true`. A swap whose read is relaxed (`Release`) adds no
        // synchronization, and loom orders it correctly against the other RMWs.
        self.queued.swap(false, Ordering::Release);
        // The routine: a dispatch pass over everything queued.
        self.runs.fetch_add(1, Ordering::SeqCst);
        let taken = std::mem::take(&mut *self.work.lock().unwrap());
        self.done.fetch_add(taken, Ordering::SeqCst);
        true
    }
}

/// Two threads post work and insert the same DPC while its processor runs it: it is never in
/// the processor's queue twice, it runs once per successful insert, and no posted work is left
/// behind: an insert that finds the DPC already queued is covered by a run that starts after it.
/// (`nt::WorkItem` keeps the same protocol with the same orderings, so this covers it too.)
#[test]
fn dpc_is_never_queued_twice() {
    model(deferred_object_model);
}

fn deferred_object_model() {
    let d = DeferredObject::new();
    let posters: Vec<_> = (0..2)
        .map(|_| {
            let d = d.clone();
            thread::spawn(move || d.post())
        })
        .collect();
    // The processor thread, concurrently.
    d.run_one();
    d.run_one();
    for p in posters {
        p.join().unwrap();
    }
    // Drain what is still queued.
    while d.run_one() {}
    assert_eq!(
        d.runs.load(Ordering::SeqCst),
        d.inserted.load(Ordering::SeqCst),
        "one run per successful insert"
    );
    assert_eq!(*d.work.lock().unwrap(), 0, "posted work left behind");
    assert_eq!(d.done.load(Ordering::SeqCst), 2);
    assert!(!d.queued.load(Ordering::Acquire));
}
