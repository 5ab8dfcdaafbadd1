//! Kernel timers: one-shot or periodic, relative or absolute due times, each expiry queuing a DPC.
//!
//! With the real clock a timer thread sleeps until the next deadline. With a
//! [`ManualClock`](super::clock::ManualClock) there is no timer thread: expiries happen inside
//! `ManualClock::advance`, so tests are exact.
//!
//! Equivalent to: `KTIMER`, `KeSetTimerEx`, `KeCancelTimer`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::clock::Clock;
use super::dpc::Dpc;

/// When a timer first expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueTime {
    /// This long after the call (a negative due time in NT).
    Relative(Duration),
    /// At this time on the kernel's clock (a positive due time in NT).
    Absolute(Duration),
}

struct TimerState {
    deadline: Option<u64>,
    period: Option<u64>,
    generation: u64,
}

struct TimerInner {
    dpc: Dpc,
    state: Mutex<TimerState>,
    queue: Arc<TimerQueue>,
}

/// A kernel timer bound to a DPC.
///
/// ```
/// use nt::{Kernel, ManualClock, Dpc, Timer, DueTime};
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use std::time::Duration;
/// let clock = Arc::new(ManualClock::new());
/// let kernel = Kernel::builder().processors(1).clock(clock.clone()).build();
/// let fired = Arc::new(AtomicUsize::new(0));
/// let f = fired.clone();
/// let timer = Timer::new(&kernel, Dpc::new(&kernel, "tick", move || { f.fetch_add(1, Ordering::SeqCst); }));
/// timer.set(DueTime::Relative(Duration::from_millis(10)), None);
/// clock.advance(Duration::from_millis(10));
/// kernel.flush_dpcs();
/// assert_eq!(fired.load(Ordering::SeqCst), 1);
/// ```
#[derive(Clone)]
pub struct Timer {
    inner: Arc<TimerInner>,
}

impl Timer {
    /// A timer that queues `dpc` when it expires. Equivalent to: `KeInitializeTimerEx`.
    pub fn new(kernel: &crate::Kernel, dpc: Dpc) -> Timer {
        Timer {
            inner: Arc::new(TimerInner {
                dpc,
                state: Mutex::new(TimerState {
                    deadline: None,
                    period: None,
                    generation: 0,
                }),
                queue: kernel.timer_queue().clone(),
            }),
        }
    }

    /// Arms the timer (re-arming it if it was set). `period` makes it periodic. Returns whether it
    /// was already set. Equivalent to: `KeSetTimerEx`.
    pub fn set(&self, due: DueTime, period: Option<Duration>) -> bool {
        let now = self.inner.queue.clock.now();
        let deadline = match due {
            DueTime::Relative(d) => now + d,
            DueTime::Absolute(t) => t,
        }
        .as_nanos() as u64;
        let period = period.filter(|p| !p.is_zero()).map(|p| p.as_nanos() as u64);
        let (was_set, generation) = {
            let mut st = self.inner.state.lock();
            let was = st.deadline.is_some();
            st.generation += 1;
            st.deadline = Some(deadline);
            st.period = period;
            (was, st.generation)
        };
        self.inner
            .queue
            .push(deadline, generation, Arc::downgrade(&self.inner));
        was_set
    }

    /// Disarms the timer. Returns whether it was set. A DPC already queued by an earlier expiry
    /// still runs. Equivalent to: `KeCancelTimer`.
    pub fn cancel(&self) -> bool {
        let mut st = self.inner.state.lock();
        st.generation += 1;
        st.deadline.take().is_some()
    }

    /// Whether the timer is armed.
    pub fn is_set(&self) -> bool {
        self.inner.state.lock().deadline.is_some()
    }

    /// The DPC this timer queues.
    pub fn dpc(&self) -> &Dpc {
        &self.inner.dpc
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("dpc", &self.inner.dpc)
            .field("set", &self.is_set())
            .finish()
    }
}

type Entry = Reverse<(u64, u64)>; // (deadline, slot); slots are handed out in order

#[derive(Default)]
struct Heap {
    heap: BinaryHeap<Entry>,
    slots: std::collections::HashMap<u64, (u64, Weak<TimerInner>)>,
    seq: u64,
    shutdown: bool,
}

/// Pending timer expiries ordered by deadline.
pub(crate) struct TimerQueue {
    clock: Arc<dyn Clock>,
    heap: Mutex<Heap>,
    cv: Condvar,
}

impl TimerQueue {
    pub(crate) fn start(clock: Arc<dyn Clock>) -> (Arc<TimerQueue>, Option<JoinHandle<()>>) {
        let q = Arc::new(TimerQueue {
            clock: clock.clone(),
            heap: Mutex::default(),
            cv: Condvar::new(),
        });
        let weak = Arc::downgrade(&q);
        let manual = clock.on_advance(Box::new(move || {
            if let Some(q) = weak.upgrade() {
                q.expire_due();
            }
        }));
        let handle = (!manual).then(|| {
            let q = q.clone();
            std::thread::Builder::new()
                .name("nt-timer".into())
                .spawn(move || q.run())
                .expect("spawning the timer thread")
        });
        (q, handle)
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn push(&self, deadline: u64, generation: u64, timer: Weak<TimerInner>) {
        let mut h = self.heap.lock();
        h.seq += 1;
        let slot = h.seq;
        h.slots.insert(slot, (generation, timer));
        h.heap.push(Reverse((deadline, slot)));
        self.cv.notify_one();
        drop(h);
        if deadline <= self.clock.now().as_nanos() as u64 {
            self.expire_due();
        }
    }

    /// Fires every timer whose deadline has passed; re-arms periodic ones.
    pub(crate) fn expire_due(&self) {
        let now = self.clock.now().as_nanos() as u64;
        loop {
            let (deadline, slot) = {
                let mut h = self.heap.lock();
                match h.heap.peek() {
                    Some(Reverse((d, _))) if *d <= now => {}
                    _ => return,
                }
                let Reverse((d, slot)) = h.heap.pop().expect("peeked");
                (d, slot)
            };
            let Some((generation, weak)) = self.heap.lock().slots.remove(&slot) else {
                continue;
            };
            let Some(timer) = weak.upgrade() else {
                continue;
            };
            let rearm = {
                let mut st = timer.state.lock();
                if st.generation != generation || st.deadline != Some(deadline) {
                    continue; // cancelled or re-set since this entry was pushed
                }
                match st.period {
                    Some(p) => {
                        // Skip periods that passed entirely (their DPCs would coalesce anyway).
                        let mut next = deadline + p;
                        if next <= now {
                            next += (now - next) / p * p + p;
                        }
                        st.deadline = Some(next);
                        Some((next, st.generation))
                    }
                    None => {
                        st.deadline = None;
                        None
                    }
                }
            };
            timer.dpc.insert();
            if let Some((next, generation)) = rearm {
                let mut h = self.heap.lock();
                h.seq += 1;
                let slot = h.seq;
                h.slots.insert(slot, (generation, Arc::downgrade(&timer)));
                h.heap.push(Reverse((next, slot)));
            }
        }
    }

    pub(crate) fn shutdown(&self) {
        self.heap.lock().shutdown = true;
        self.cv.notify_all();
    }

    fn run(&self) {
        loop {
            {
                let mut h = self.heap.lock();
                if h.shutdown {
                    return;
                }
                let now = self.clock.now().as_nanos() as u64;
                match h.heap.peek() {
                    None => {
                        self.cv.wait(&mut h);
                    }
                    Some(Reverse((d, _))) if *d > now => {
                        let wait = Duration::from_nanos(*d - now);
                        self.cv.wait_for(&mut h, wait);
                    }
                    Some(_) => {}
                }
                if h.shutdown {
                    return;
                }
            }
            self.expire_due();
        }
    }
}
