//! `nt`: the simulated kernel that wdfkit runs on.
//!
//! What KMDF sits on in Windows, rebuilt in user space: per-thread IRQL ([`irql`]), spin locks
//! and passive mutexes that know about it ([`sync`]), DPCs, timers and system work items
//! ([`executors`], owned by a [`Kernel`]), an I/O manager with handles and request packets
//! ([`io`]), `NTSTATUS` codes ([`NtStatus`]) and a verifier ([`verifier`]).
//!
//! ```
//! use nt::{Kernel, Dpc, WorkItem, irql::{self, Irql}};
//! use std::sync::mpsc;
//!
//! let kernel = Kernel::builder().processors(2).workers(2).build();
//! let (tx, rx) = mpsc::channel();
//! let tx2 = tx.clone();
//! let dpc = Dpc::new(&kernel, "dpc", move || tx.send(("dpc", irql::current())).unwrap());
//! let item = WorkItem::new(&kernel, "work", move || tx2.send(("work", irql::current())).unwrap());
//! dpc.insert();
//! item.enqueue();
//! let mut got: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
//! got.sort();
//! assert_eq!(got, vec![("dpc", Irql::Dispatch), ("work", Irql::Passive)]);
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod executors;
pub mod io;
pub mod irql;
mod status;
#[expect(
    unsafe_code,
    reason = "lock internals: the UnsafeCell behind a guard, the raw mutex unlock"
)]
pub mod sync;
pub mod thread;
pub mod verifier;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

pub use executors::clock::{Clock, ManualClock, SystemClock};
pub use executors::dpc::Dpc;
pub use executors::timer::{DueTime, Timer};
pub use executors::work_queue::WorkItem;
pub use irql::Irql;
pub use status::{NtStatus, Result};

use executors::dpc::Processors;
use executors::timer::TimerQueue;
use executors::work_queue::WorkQueue;

/// Configures a [`Kernel`].
#[derive(Debug, Default)]
pub struct KernelBuilder {
    processors: Option<usize>,
    workers: Option<usize>,
    clock: Option<Arc<dyn Clock>>,
}

impl KernelBuilder {
    /// Number of simulated processors (DPC threads). Default: the machine's core count.
    pub fn processors(mut self, n: usize) -> Self {
        self.processors = Some(n);
        self
    }

    /// Number of system worker threads. Default: the machine's core count, at least 2.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The clock timers run on. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts the kernel's threads.
    pub fn build(self) -> Kernel {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let (processors, mut threads) = Processors::start(self.processors.unwrap_or(cores));
        let (work, wt) = WorkQueue::start(self.workers.unwrap_or(cores.max(2)));
        threads.extend(wt);
        let (timers, tt) = TimerQueue::start(clock);
        threads.extend(tt);
        Kernel {
            inner: Arc::new(KernelInner {
                processors,
                work,
                timers,
                io: io::IoManager::new(),
                threads: Mutex::new(threads),
            }),
        }
    }
}

struct KernelInner {
    processors: Arc<Processors>,
    work: Arc<WorkQueue>,
    timers: Arc<TimerQueue>,
    io: io::IoManager,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for KernelInner {
    fn drop(&mut self) {
        self.processors.shutdown();
        self.work.shutdown();
        self.timers.shutdown();
        let me = std::thread::current().id();
        for t in self.threads.lock().drain(..) {
            // The last handle may be dropped on one of the kernel's own threads; never join it.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// A running simulated kernel: DPC processors, system workers, timers and an I/O manager.
///
/// Cheap to clone; the threads stop when the last clone is dropped (after draining queued DPCs).
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<KernelInner>,
}

impl Kernel {
    /// Starts configuring a kernel.
    pub fn builder() -> KernelBuilder {
        KernelBuilder::default()
    }

    /// A kernel with default settings.
    pub fn new() -> Kernel {
        Self::builder().build()
    }

    /// The I/O manager.
    pub fn io(&self) -> &io::IoManager {
        &self.inner.io
    }

    /// The clock timers run on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.inner.timers.clock()
    }

    /// Number of simulated processors.
    pub fn processor_count(&self) -> usize {
        self.inner.processors.count()
    }

    /// Waits until every DPC queued before the call has run (PASSIVE_LEVEL).
    /// Equivalent to: `KeFlushQueuedDpcs`.
    pub fn flush_dpcs(&self) {
        self.inner.processors.flush();
    }

    /// Waits until every work item queued before the call has run (PASSIVE_LEVEL).
    pub fn flush_work(&self) {
        self.inner.work.flush();
    }

    /// Queues a one-off closure to a system worker at PASSIVE_LEVEL. Equivalent to:
    /// `ExQueueWorkItem`.
    pub fn queue_work(&self, name: &'static str, f: impl FnOnce() + Send + 'static) {
        self.inner.work.queue_once(name, Box::new(f));
    }

    pub(crate) fn processors(&self) -> &Arc<Processors> {
        &self.inner.processors
    }

    pub(crate) fn work_queue(&self) -> &Arc<WorkQueue> {
        &self.inner.work
    }

    pub(crate) fn timer_queue(&self) -> &Arc<TimerQueue> {
        &self.inner.timers
    }
}

impl Kernel {
    /// A handle that does not keep the kernel running (for objects the kernel itself holds,
    /// such as devices registered with its I/O manager).
    pub fn downgrade(&self) -> WeakKernel {
        WeakKernel {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

/// A non-owning handle to a [`Kernel`].
#[derive(Clone)]
pub struct WeakKernel {
    inner: std::sync::Weak<KernelInner>,
}

impl WeakKernel {
    /// The kernel, if it is still running.
    pub fn upgrade(&self) -> Option<Kernel> {
        self.inner.upgrade().map(|inner| Kernel { inner })
    }
}

impl fmt::Debug for WeakKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakKernel")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}

impl Default for Kernel {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("processors", &self.processor_count())
            .field("clock", self.clock())
            .finish()
    }
}
