//! Deferred procedure calls: per-processor queues drained at DISPATCH_LEVEL.
//!
//! Each simulated processor is one thread that sleeps until DPCs are queued to it, then raises to
//! DISPATCH_LEVEL and runs them back to back, oldest first. A DPC object is queued at most once:
//! inserting one that is already queued returns `false` and it still runs once. The queued flag
//! is cleared just before the routine runs, so a routine may re-queue its own DPC.
//!
//! The verifier's DPC watchdog times each DPC against the single budget and each back-to-back
//! batch on a processor against the cumulative budget.
//!
//! Equivalent to: `KDPC`, `KeInitializeDpc`, `KeInsertQueueDpc`, `KeRemoveQueueDpc`,
//! `KeFlushQueuedDpcs`.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::irql::{self, CallbackFrame, Irql};
use crate::thread;
use crate::verifier::{self, rules};

type Routine = Box<dyn Fn() + Send + Sync>;

pub(crate) struct DpcInner {
    routine: Routine,
    queued: AtomicBool,
    name: &'static str,
    processors: Arc<Processors>,
}

/// A DPC object: a routine that runs once per insertion on a processor at DISPATCH_LEVEL.
///
/// Cloning gives another handle to the same DPC object.
///
/// ```
/// use nt::{Kernel, Dpc, irql::{self, Irql}};
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// let kernel = Kernel::builder().processors(1).build();
/// let runs = Arc::new(AtomicUsize::new(0));
/// let r = runs.clone();
/// let dpc = Dpc::new(&kernel, "example", move || {
///     assert_eq!(irql::current(), Irql::Dispatch);
///     r.fetch_add(1, Ordering::SeqCst);
/// });
/// assert!(dpc.insert());
/// kernel.flush_dpcs();
/// assert_eq!(runs.load(Ordering::SeqCst), 1);
/// ```
#[derive(Clone)]
pub struct Dpc {
    inner: Arc<DpcInner>,
}

impl Dpc {
    /// Creates a DPC object running `routine`. Equivalent to: `KeInitializeDpc`.
    pub fn new(
        kernel: &crate::Kernel,
        name: &'static str,
        routine: impl Fn() + Send + Sync + 'static,
    ) -> Dpc {
        Dpc {
            inner: Arc::new(DpcInner {
                routine: Box::new(routine),
                queued: AtomicBool::new(false),
                name,
                processors: kernel.processors().clone(),
            }),
        }
    }

    /// Queues the DPC on the current processor (or, from a thread that is not a DPC processor, on
    /// one chosen by thread). Returns `false`, queuing nothing, if it is already queued.
    /// Equivalent to: `KeInsertQueueDpc`.
    #[inline]
    pub fn insert(&self) -> bool {
        if self.inner.queued.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.inner.processors.enqueue(self.inner.clone());
        true
    }

    /// Removes the DPC from its queue if it is queued and has not started. Returns whether it was
    /// removed. Equivalent to: `KeRemoveQueueDpc`.
    pub fn remove(&self) -> bool {
        self.inner.processors.remove(&self.inner)
    }

    /// Whether the DPC is queued and has not started running.
    pub fn is_queued(&self) -> bool {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// The name given at creation.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }
}

impl fmt::Debug for Dpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpc")
            .field("name", &self.inner.name)
            .field("queued", &self.is_queued())
            .finish()
    }
}

#[derive(Default)]
struct ProcState {
    queue: VecDeque<Arc<DpcInner>>,
    enqueued: u64,
    finished: u64,
    shutdown: bool,
}

struct Processor {
    state: Mutex<ProcState>,
    work: Condvar,
    done: Condvar,
}

/// The set of simulated processors and their DPC queues.
pub(crate) struct Processors {
    procs: Vec<Processor>,
    next: AtomicUsize,
}

impl Processors {
    pub(crate) fn start(count: usize) -> (Arc<Processors>, Vec<JoinHandle<()>>) {
        let count = count.max(1);
        let p = Arc::new(Processors {
            procs: (0..count)
                .map(|_| Processor {
                    state: Mutex::new(ProcState::default()),
                    work: Condvar::new(),
                    done: Condvar::new(),
                })
                .collect(),
            next: AtomicUsize::new(0),
        });
        let handles = (0..count)
            .map(|i| {
                let p = p.clone();
                std::thread::Builder::new()
                    .name(format!("nt-dpc-{i}"))
                    .spawn(move || p.run(i))
                    .expect("spawning a DPC processor thread")
            })
            .collect();
        (p, handles)
    }

    pub(crate) fn count(&self) -> usize {
        self.procs.len()
    }

    fn pick(&self) -> usize {
        match thread::current_processor() {
            Some(i) if i < self.procs.len() => i,
            _ => self.next.fetch_add(1, Ordering::Relaxed) % self.procs.len(),
        }
    }

    fn enqueue(&self, dpc: Arc<DpcInner>) {
        let p = &self.procs[self.pick()];
        let mut st = p.state.lock();
        st.queue.push_back(dpc);
        st.enqueued += 1;
        p.work.notify_one();
    }

    fn remove(&self, dpc: &Arc<DpcInner>) -> bool {
        for p in &self.procs {
            let mut st = p.state.lock();
            if let Some(pos) = st.queue.iter().position(|d| Arc::ptr_eq(d, dpc)) {
                st.queue.remove(pos);
                st.finished += 1;
                dpc.queued.store(false, Ordering::Release);
                p.done.notify_all();
                return true;
            }
        }
        false
    }

    /// Waits until every DPC queued before the call has run. Equivalent to: `KeFlushQueuedDpcs`.
    pub(crate) fn flush(&self) {
        irql::check_at_most(
            Irql::Passive,
            &rules::BLOCKING_WAIT_ABOVE_PASSIVE,
            "flush_dpcs",
        );
        for (i, p) in self.procs.iter().enumerate() {
            if thread::current_processor() == Some(i) {
                continue; // a processor cannot wait for itself
            }
            let mut st = p.state.lock();
            let target = st.enqueued;
            while st.finished < target && !st.shutdown {
                p.done.wait(&mut st);
            }
        }
    }

    pub(crate) fn shutdown(&self) {
        for p in &self.procs {
            p.state.lock().shutdown = true;
            p.work.notify_all();
            p.done.notify_all();
        }
    }

    fn run(&self, index: usize) {
        thread::set_processor(index);
        irql::exempt_from_stretch_watchdog();
        let p = &self.procs[index];
        loop {
            {
                let mut st = p.state.lock();
                while st.queue.is_empty() && !st.shutdown {
                    p.work.wait(&mut st);
                }
                if st.queue.is_empty() && st.shutdown {
                    return;
                }
            }
            let _dispatch = irql::raise(Irql::Dispatch);
            let batch_start = verifier::enabled().then(verifier::now_ns);
            // The last DPC of a batch counts as finished only after the batch's watchdog check,
            // so that a flush also waits for the reports of the DPCs it waited for.
            let mut unfinished = false;
            loop {
                let dpc = {
                    let mut st = p.state.lock();
                    let next = st.queue.pop_front();
                    if next.is_some() && std::mem::take(&mut unfinished) {
                        st.finished += 1;
                        p.done.notify_all();
                    }
                    match next {
                        Some(d) => d,
                        None => break,
                    }
                };
                dpc.queued.store(false, Ordering::Release);
                // A verifier in panic mode may panic while reporting; the processor survives it.
                let _ = catch_unwind(AssertUnwindSafe(|| run_one(&dpc)));
                unfinished = true;
            }
            if let Some(start) = batch_start {
                let took = verifier::now_ns().saturating_sub(start);
                let _ = catch_unwind(|| verifier::check_cumulative_budget(took, index));
            }
            if unfinished {
                let mut st = p.state.lock();
                st.finished += 1;
                p.done.notify_all();
            }
        }
    }
}

fn run_one(dpc: &DpcInner) {
    let start = verifier::enabled().then(verifier::now_ns);
    let result = {
        let _frame = CallbackFrame::enter(dpc.name);
        catch_unwind(AssertUnwindSafe(|| (dpc.routine)()))
    };
    if result.is_err() {
        verifier::report(
            &rules::CALLBACK_PANICKED,
            format_args!("DPC {} panicked; the processor keeps running", dpc.name),
        );
    }
    if let Some(start) = start {
        let took = verifier::now_ns().saturating_sub(start);
        verifier::check_single_budget(took, &format!("DPC {}", dpc.name));
    }
}
