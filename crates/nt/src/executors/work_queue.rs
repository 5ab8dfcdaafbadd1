//! System work items: a pool of worker threads running callbacks at PASSIVE_LEVEL.
//!
//! A [`WorkItem`] is queued at most once at a time: enqueueing one that is still pending is
//! ignored (returns `false`). The pending flag is cleared when the item *starts* running, so the
//! routine may re-queue itself. [`crate::Kernel::queue_work`] queues a one-off closure.
//!
//! Equivalent to: `IO_WORKITEM` (`IoAllocateWorkItem`, `IoQueueWorkItem`), `ExQueueWorkItem`.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::irql::{self, CallbackFrame, Irql};
use crate::verifier::{self, rules};

type Routine = Box<dyn Fn() + Send + Sync>;

struct WorkItemInner {
    routine: Routine,
    pending: AtomicBool,
    name: &'static str,
    queue: Arc<WorkQueue>,
}

enum Job {
    Item(Arc<WorkItemInner>),
    Once(&'static str, Box<dyn FnOnce() + Send>),
    Stop,
}

/// A reusable work item: a routine that runs once per enqueue on a worker at PASSIVE_LEVEL.
///
/// ```
/// use nt::{Kernel, WorkItem, irql::{self, Irql}};
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// let kernel = Kernel::builder().workers(1).build();
/// let runs = Arc::new(AtomicUsize::new(0));
/// let r = runs.clone();
/// let item = WorkItem::new(&kernel, "example", move || {
///     assert_eq!(irql::current(), Irql::Passive);
///     r.fetch_add(1, Ordering::SeqCst);
/// });
/// assert!(item.enqueue());
/// kernel.flush_work();
/// assert_eq!(runs.load(Ordering::SeqCst), 1);
/// ```
#[derive(Clone)]
pub struct WorkItem {
    inner: Arc<WorkItemInner>,
}

impl WorkItem {
    /// A work item running `routine`. Equivalent to: `IoAllocateWorkItem`.
    pub fn new(
        kernel: &crate::Kernel,
        name: &'static str,
        routine: impl Fn() + Send + Sync + 'static,
    ) -> WorkItem {
        WorkItem {
            inner: Arc::new(WorkItemInner {
                routine: Box::new(routine),
                pending: AtomicBool::new(false),
                name,
                queue: kernel.work_queue().clone(),
            }),
        }
    }

    /// Queues the item; returns `false` (and queues nothing) if it is still pending.
    /// Callable at any IRQL up to DISPATCH_LEVEL. Equivalent to: `IoQueueWorkItem`.
    #[inline]
    pub fn enqueue(&self) -> bool {
        if self.inner.pending.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.inner.queue.send(Job::Item(self.inner.clone()));
        true
    }

    /// Whether the item is queued and has not started running.
    pub fn is_pending(&self) -> bool {
        self.inner.pending.load(Ordering::Acquire)
    }

    /// The name given at creation.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }
}

impl fmt::Debug for WorkItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkItem")
            .field("name", &self.inner.name)
            .field("pending", &self.is_pending())
            .finish()
    }
}

#[derive(Default)]
struct Progress {
    queued: u64,
    finished: u64,
}

/// The system worker pool.
pub(crate) struct WorkQueue {
    tx: Sender<Job>,
    progress: Mutex<Progress>,
    done: Condvar,
    workers: usize,
}

impl WorkQueue {
    pub(crate) fn start(workers: usize) -> (Arc<WorkQueue>, Vec<JoinHandle<()>>) {
        let workers = workers.max(1);
        let (tx, rx) = crossbeam_channel::unbounded();
        let q = Arc::new(WorkQueue {
            tx,
            progress: Mutex::default(),
            done: Condvar::new(),
            workers,
        });
        let handles = (0..workers)
            .map(|i| {
                let q = q.clone();
                let rx: Receiver<Job> = rx.clone();
                std::thread::Builder::new()
                    .name(format!("nt-worker-{i}"))
                    .spawn(move || q.run(rx))
                    .expect("spawning a system worker thread")
            })
            .collect();
        (q, handles)
    }

    fn send(&self, job: Job) {
        self.progress.lock().queued += 1;
        // The receivers live as long as the worker threads, which outlive every sender use
        // except during shutdown, when a lost job no longer matters.
        let _ = self.tx.send(job);
    }

    pub(crate) fn queue_once(&self, name: &'static str, f: Box<dyn FnOnce() + Send>) {
        self.send(Job::Once(name, f));
    }

    /// Waits until every job queued before the call has finished.
    pub(crate) fn flush(&self) {
        irql::check_at_most(
            Irql::Passive,
            &rules::BLOCKING_WAIT_ABOVE_PASSIVE,
            "flush_work",
        );
        let mut p = self.progress.lock();
        let target = p.queued;
        while p.finished < target {
            self.done.wait(&mut p);
        }
    }

    pub(crate) fn shutdown(&self) {
        for _ in 0..self.workers {
            let _ = self.tx.send(Job::Stop);
        }
    }

    fn run(&self, rx: Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            match job {
                Job::Stop => return,
                Job::Item(item) => {
                    item.pending.store(false, Ordering::Release);
                    run_contained(item.name, || (item.routine)());
                }
                Job::Once(name, f) => run_contained(name, f),
            }
            let mut p = self.progress.lock();
            p.finished += 1;
            self.done.notify_all();
        }
    }
}

/// Runs a work routine at PASSIVE_LEVEL inside a callback frame; a panic is reported, not fatal.
fn run_contained(name: &'static str, f: impl FnOnce()) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _frame = CallbackFrame::enter(name);
        f()
    }));
    if outcome.is_err() {
        let _ = catch_unwind(|| {
            verifier::report(
                &rules::CALLBACK_PANICKED,
                format_args!("work item {name} panicked; the worker keeps running"),
            )
        });
    }
}
