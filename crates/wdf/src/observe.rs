//! Observability hooks: per-callback begin/end events, for traces and reports.
//!
//! Off by default; when off, each callback pays one relaxed load and a predictable branch.
//!
//! ```
//! use wdf::observe::{self, CallbackEvent, Observer};
//! use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
//! #[derive(Default)]
//! struct Count(AtomicUsize);
//! impl Observer for Count {
//!     fn begin(&self, _e: &CallbackEvent<'_>) { self.0.fetch_add(1, Ordering::Relaxed); }
//!     fn end(&self, _e: &CallbackEvent<'_>) {}
//! }
//! let c = Arc::new(Count::default());
//! observe::set_observer(Some(c.clone()));
//! observe::set_observer(None);
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nt::Irql;
use parking_lot::RwLock;

/// Which callback ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallbackKind {
    /// `EvtIoRead`.
    IoRead,
    /// `EvtIoWrite`.
    IoWrite,
    /// `EvtIoDeviceControl`.
    IoDeviceControl,
    /// `EvtIoInternalDeviceControl`.
    IoInternalDeviceControl,
    /// `EvtIoDefault`.
    IoDefault,
    /// `EvtDeviceFileCreate`.
    FileCreate,
    /// `EvtFileCleanup`.
    FileCleanup,
    /// `EvtFileClose`.
    FileClose,
    /// `EvtRequestCancel`.
    RequestCancel,
    /// `EvtIoCanceledOnQueue`.
    IoCanceledOnQueue,
    /// `EvtIoQueueState` (stop, purge, drain completion; ready notification).
    IoQueueState,
    /// `EvtIoStop`.
    IoStop,
    /// `EvtIoResume`.
    IoResume,
    /// `EvtDpcFunc`.
    Dpc,
    /// `EvtTimerFunc`.
    Timer,
    /// `EvtWorkItem`.
    WorkItem,
}

impl CallbackKind {
    /// The WDF callback name.
    pub fn wdf_name(self) -> &'static str {
        match self {
            CallbackKind::IoRead => "EvtIoRead",
            CallbackKind::IoWrite => "EvtIoWrite",
            CallbackKind::IoDeviceControl => "EvtIoDeviceControl",
            CallbackKind::IoInternalDeviceControl => "EvtIoInternalDeviceControl",
            CallbackKind::IoDefault => "EvtIoDefault",
            CallbackKind::FileCreate => "EvtDeviceFileCreate",
            CallbackKind::FileCleanup => "EvtFileCleanup",
            CallbackKind::FileClose => "EvtFileClose",
            CallbackKind::RequestCancel => "EvtRequestCancel",
            CallbackKind::IoCanceledOnQueue => "EvtIoCanceledOnQueue",
            CallbackKind::IoQueueState => "EvtIoQueueState",
            CallbackKind::IoStop => "EvtIoStop",
            CallbackKind::IoResume => "EvtIoResume",
            CallbackKind::Dpc => "EvtDpcFunc",
            CallbackKind::Timer => "EvtTimerFunc",
            CallbackKind::WorkItem => "EvtWorkItem",
        }
    }
}

impl fmt::Display for CallbackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wdf_name())
    }
}

/// One callback invocation, as seen at its start or end.
#[derive(Clone, Copy, Debug)]
pub struct CallbackEvent<'a> {
    /// Which callback.
    pub kind: CallbackKind,
    /// The object it belongs to (queue or device name).
    pub object: &'a str,
    /// The request it was given, if any.
    pub request: Option<u64>,
    /// wdfkit's id of the running thread.
    pub thread: u64,
    /// The IRQL the callback runs at.
    pub irql: Irql,
    /// Whether a callback lock is held around it.
    pub locked: bool,
    /// Nanoseconds since the process's clock epoch.
    pub time_ns: u64,
}

/// Receives callback events. Implementations must be cheap: they run inside callbacks' locks.
pub trait Observer: Send + Sync {
    /// A callback is about to run (its lock, if any, is held).
    fn begin(&self, event: &CallbackEvent<'_>);
    /// A callback returned (its lock is still held).
    fn end(&self, event: &CallbackEvent<'_>);
}

static ON: AtomicBool = AtomicBool::new(false);
static OBSERVER: RwLock<Option<Arc<dyn Observer>>> = RwLock::new(None);

/// Installs (or, with `None`, removes) the process-wide observer.
pub fn set_observer(observer: Option<Arc<dyn Observer>>) {
    let on = observer.is_some();
    *OBSERVER.write() = observer;
    ON.store(on, Ordering::Release);
}

#[inline(always)]
pub(crate) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

pub(crate) fn emit(
    begin: bool,
    kind: CallbackKind,
    object: &str,
    request: Option<u64>,
    locked: bool,
) {
    if let Some(o) = &*OBSERVER.read() {
        let e = CallbackEvent {
            kind,
            object,
            request,
            thread: nt::thread::current_id(),
            irql: nt::irql::current(),
            locked,
            time_ns: nt::SystemClock.now_ns(),
        };
        if begin { o.begin(&e) } else { o.end(&e) }
    }
}
