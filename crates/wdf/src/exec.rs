//! Framework DPC, timer and work-item objects, with automatic serialization.
//!
//! Each is created under a parent (a device or a queue; a driver has no device and is refused
//! with `STATUS_INVALID_DEVICE_REQUEST`). With `automatic_serialization` (the default, as in
//! WDF) its callback takes the parent's callback lock, so it never overlaps the parent's
//! serialized callbacks — provided the IRQLs agree (spec §4.1/§4.2, decided by
//! [`resolve_auto_serialization`](crate::sync::constraints::resolve_auto_serialization)):
//!
//! | Object | Runs at | Under a spin-lock (Dispatch) scope | Under a passive-mutex scope | Scope None |
//! |---|---|---|---|---|
//! | [`Dpc`] | DISPATCH_LEVEL | serialized | `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` | not serialized, no error |
//! | [`Timer`] (default) | DISPATCH_LEVEL | serialized | `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL` | not serialized |
//! | [`Timer`] with explicit Passive | PASSIVE_LEVEL (via a work item) | `..._INCOMPATIBLE_...` | serialized | not serialized |
//! | [`WorkItem`] | PASSIVE_LEVEL | `..._INCOMPATIBLE_...` | serialized | not serialized |
//!
//! A pending DPC or work item is not queued twice; passive timer ticks coalesce while the work
//! item of a previous tick is pending.
//!
//! Equivalent to: `WDFDPC` (`WdfDpcCreate`, `WdfDpcEnqueue`, `WdfDpcCancel`), `WDFTIMER`
//! (`WdfTimerCreate`, `WdfTimerStart`, `WdfTimerStop`), `WDFWORKITEM` (`WdfWorkItemCreate`,
//! `WdfWorkItemEnqueue`, `WdfWorkItemFlush`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nt::NtStatus;
use parking_lot::{Condvar, Mutex};

use crate::device::Device;
use crate::driver::Driver;
use crate::invoke;
use crate::object::{ObjectAttributes, ObjectHeader};
use crate::observe::CallbackKind;
use crate::queue::{Queue, passive_ddi};
use crate::sync::constraints::{self, ObjectKind, ParentInfo};
use crate::sync::{CallbackLock, ScopeToken};
use crate::verifier::{self, rules};

/// The parent of a DPC, timer or work item.
#[derive(Clone, Copy, Debug)]
pub enum Parent<'a> {
    /// A driver (refused: no device ancestor).
    Driver(&'a Arc<Driver>),
    /// A device: its callback lock.
    Device(&'a Arc<Device>),
    /// A queue: its callback lock (the device's under Device scope).
    Queue(&'a Arc<Queue>),
}

impl<'a> From<&'a Arc<Device>> for Parent<'a> {
    fn from(d: &'a Arc<Device>) -> Self {
        Parent::Device(d)
    }
}

impl<'a> From<&'a Arc<Queue>> for Parent<'a> {
    fn from(q: &'a Arc<Queue>) -> Self {
        Parent::Queue(q)
    }
}

impl<'a> From<&'a Arc<Driver>> for Parent<'a> {
    fn from(d: &'a Arc<Driver>) -> Self {
        Parent::Driver(d)
    }
}

impl Parent<'_> {
    fn info(&self) -> ParentInfo {
        match self {
            Parent::Driver(_) => ParentInfo {
                has_device: false,
                passive_callbacks: true,
                scope: crate::SyncScope::None,
            },
            Parent::Device(d) => ParentInfo {
                has_device: true,
                passive_callbacks: d.constraints().passive_callbacks,
                scope: d.constraints().sync_scope,
            },
            Parent::Queue(q) => ParentInfo {
                has_device: true,
                passive_callbacks: q.constraints().passive_callbacks,
                scope: q.constraints().sync_scope,
            },
        }
    }

    fn lock(&self) -> Option<CallbackLock> {
        match self {
            Parent::Driver(_) => None,
            Parent::Device(d) => Some(d.callback_lock().clone()),
            Parent::Queue(q) => Some(q.callback_lock().clone()),
        }
    }

    fn kernel(&self) -> Option<nt::Kernel> {
        match self {
            Parent::Driver(_) => None,
            Parent::Device(d) => d.kernel(),
            Parent::Queue(q) => q.device().and_then(|d| d.kernel()),
        }
    }

    fn health(&self) -> Arc<crate::invoke::Health> {
        match self {
            Parent::Driver(_) => Arc::new(crate::invoke::Health::new(Default::default())),
            Parent::Device(d) => d.health.clone(),
            Parent::Queue(q) => q.health.clone(),
        }
    }

    fn header(&self) -> &Arc<ObjectHeader> {
        match self {
            Parent::Driver(d) => d.header(),
            Parent::Device(d) => d.header(),
            Parent::Queue(q) => q.header(),
        }
    }
}

/// What a DPC, timer or work-item callback receives.
pub struct CallbackContext<'a, 'b> {
    token: Option<&'a mut ScopeToken<'b>>,
}

impl<'b> CallbackContext<'_, 'b> {
    /// Proof that the parent's scope lock is held (automatic serialization in effect).
    pub fn scope(&mut self) -> Option<&mut ScopeToken<'b>> {
        self.token.as_deref_mut()
    }

    /// Whether the callback is serialized with its parent.
    pub fn is_serialized(&self) -> bool {
        self.token.is_some()
    }
}

impl fmt::Debug for CallbackContext<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackContext")
            .field("serialized", &self.token.is_some())
            .finish()
    }
}

type Callback = Box<dyn Fn(&mut CallbackContext<'_, '_>) + Send + Sync>;

/// What the three object kinds share: the callback, its lock, and a count of runs posted but
/// not finished (for flush and stop-with-wait).
struct Exec {
    header: Arc<ObjectHeader>,
    health: Arc<crate::invoke::Health>,
    kind: CallbackKind,
    lock: Option<CallbackLock>,
    callback: Callback,
    outstanding: Mutex<usize>,
    idle: Condvar,
    running_on: AtomicU64,
}

impl Exec {
    fn new(
        parent: &Parent<'_>,
        kind: CallbackKind,
        name: String,
        serialized: bool,
        attrs: ObjectAttributes,
        callback: Callback,
    ) -> Arc<Exec> {
        let header = ObjectHeader::new(kind_name(kind), name, attrs.cleanup);
        parent.header().add_child(header.clone());
        Arc::new(Exec {
            header,
            health: parent.health(),
            kind,
            lock: if serialized { parent.lock() } else { None },
            callback,
            outstanding: Mutex::new(0),
            idle: Condvar::new(),
            running_on: AtomicU64::new(0),
        })
    }

    fn posted(&self) {
        *self.outstanding.lock() += 1;
    }

    fn unposted(&self) {
        let mut n = self.outstanding.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    fn run(&self) {
        self.running_on
            .store(nt::thread::current_id(), Ordering::Relaxed);
        invoke::run(
            self.lock.as_ref(),
            self.kind,
            self.header.name(),
            &self.health,
            None,
            |token| (self.callback)(&mut CallbackContext { token }),
        );
        self.running_on.store(0, Ordering::Relaxed);
        self.unposted();
    }

    fn in_own_callback(&self) -> bool {
        self.running_on.load(Ordering::Relaxed) == nt::thread::current_id()
    }

    fn wait_idle(&self) {
        let mut n = self.outstanding.lock();
        while *n > 0 {
            self.idle.wait(&mut n);
        }
    }
}

fn kind_name(kind: CallbackKind) -> &'static str {
    match kind {
        CallbackKind::Dpc => "dpc",
        CallbackKind::Timer => "timer",
        _ => "work item",
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn default_name(prefix: &str) -> String {
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A DPC object configuration. Equivalent to: `WDF_DPC_CONFIG`.
pub struct DpcConfig {
    /// Serialize with the parent's callbacks (default true, as `WDF_DPC_CONFIG_INIT`).
    pub automatic_serialization: bool,
    /// A name for traces.
    pub name: Option<String>,
    callback: Callback,
}

impl DpcConfig {
    /// A configuration running `callback` (`EvtDpcFunc`).
    pub fn new(callback: impl Fn(&mut CallbackContext<'_, '_>) + Send + Sync + 'static) -> Self {
        DpcConfig {
            automatic_serialization: true,
            name: None,
            callback: Box::new(callback),
        }
    }
}

impl fmt::Debug for DpcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpcConfig")
            .field("automatic_serialization", &self.automatic_serialization)
            .finish()
    }
}

/// A framework DPC: its callback runs at DISPATCH_LEVEL, serialized with its parent if asked.
/// Equivalent to: `WDFDPC`.
pub struct Dpc {
    exec: Arc<Exec>,
    kdpc: nt::Dpc,
}

impl Dpc {
    /// Creates a DPC under `parent`. Equivalent to: `WdfDpcCreate`.
    pub fn create<'a>(
        parent: impl Into<Parent<'a>>,
        config: DpcConfig,
        attrs: ObjectAttributes,
    ) -> Result<Arc<Dpc>, NtStatus> {
        let parent = parent.into();
        constraints::validate_attributes(ObjectKind::Dpc, &attrs)?;
        let serialized = constraints::resolve_auto_serialization(
            false,
            config.automatic_serialization,
            &parent.info(),
        )?;
        let kernel = parent.kernel().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
        let name = config.name.unwrap_or_else(|| default_name("dpc"));
        let exec = Exec::new(
            &parent,
            CallbackKind::Dpc,
            name,
            serialized,
            attrs,
            config.callback,
        );
        let e = exec.clone();
        let kdpc = nt::Dpc::new(&kernel, "wdf dpc", move || e.run());
        let (k, e) = (kdpc.clone(), exec.clone());
        exec.header.set_dispose(Box::new(move || {
            if k.remove() {
                e.unposted();
            }
        }));
        Ok(Arc::new(Dpc { exec, kdpc }))
    }

    /// Queues the DPC; `false` if it is already queued. Equivalent to: `WdfDpcEnqueue`.
    pub fn enqueue(&self) -> bool {
        self.exec.posted();
        if self.kdpc.insert() {
            true
        } else {
            self.exec.unposted();
            false
        }
    }

    /// Removes the DPC from its queue if it has not started; returns whether it was removed.
    /// With `wait`, also waits (PASSIVE_LEVEL) for a run in progress. Equivalent to: `WdfDpcCancel`.
    pub fn cancel(&self, wait: bool) -> bool {
        let removed = self.kdpc.remove();
        if removed {
            self.exec.unposted();
        }
        if wait && passive_ddi("WdfDpcCancel(Wait=TRUE)").is_ok() && !self.exec.in_own_callback() {
            self.exec.wait_idle();
        }
        removed
    }

    /// Whether the callback is serialized with its parent.
    pub fn is_serialized(&self) -> bool {
        self.exec.lock.is_some()
    }

    /// The object header.
    pub fn header(&self) -> &Arc<ObjectHeader> {
        &self.exec.header
    }
}

impl fmt::Debug for Dpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dpc")
            .field("name", &self.exec.header.name())
            .field("serialized", &self.is_serialized())
            .finish()
    }
}

/// A timer configuration. Equivalent to: `WDF_TIMER_CONFIG`.
pub struct TimerConfig {
    /// Serialize with the parent's callbacks (default true).
    pub automatic_serialization: bool,
    /// Periodic timers fire every `period` after the first expiry.
    pub period: Option<Duration>,
    /// A name for traces.
    pub name: Option<String>,
    callback: Callback,
}

impl TimerConfig {
    /// A one-shot timer configuration (`WDF_TIMER_CONFIG_INIT`).
    pub fn new(callback: impl Fn(&mut CallbackContext<'_, '_>) + Send + Sync + 'static) -> Self {
        TimerConfig {
            automatic_serialization: true,
            period: None,
            name: None,
            callback: Box::new(callback),
        }
    }

    /// A periodic timer configuration (`WDF_TIMER_CONFIG_INIT_PERIODIC`).
    pub fn periodic(
        period: Duration,
        callback: impl Fn(&mut CallbackContext<'_, '_>) + Send + Sync + 'static,
    ) -> Self {
        TimerConfig {
            period: Some(period),
            ..TimerConfig::new(callback)
        }
    }
}

impl fmt::Debug for TimerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerConfig")
            .field("automatic_serialization", &self.automatic_serialization)
            .field("period", &self.period)
            .finish()
    }
}

/// A framework timer. Dispatch timers run their callback in a DPC; a timer created with an
/// explicit Passive level runs it in a work item, and its ticks coalesce while that work item is
/// pending. Equivalent to: `WDFTIMER`.
pub struct Timer {
    exec: Arc<Exec>,
    ktimer: nt::Timer,
    kernel: nt::WeakKernel,
    /// A stop-with-wait is in progress: starts are ignored.
    stopping: std::sync::atomic::AtomicBool,
    passive: bool,
    period: Option<Duration>,
}

impl Timer {
    /// Creates a timer under `parent`. Only an explicit `ExecutionLevel::Passive` makes a passive
    /// timer (the parent is not consulted); a periodic passive timer is `STATUS_NOT_SUPPORTED`.
    /// Equivalent to: `WdfTimerCreate`.
    pub fn create<'a>(
        parent: impl Into<Parent<'a>>,
        config: TimerConfig,
        attrs: ObjectAttributes,
    ) -> Result<Arc<Timer>, NtStatus> {
        let parent = parent.into();
        constraints::validate_attributes(ObjectKind::Timer, &attrs)?;
        let passive = constraints::resolve_timer_level(&attrs, config.period.is_some())?;
        let serialized = constraints::resolve_auto_serialization(
            passive,
            config.automatic_serialization,
            &parent.info(),
        )?;
        let kernel = parent.kernel().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
        let name = config.name.unwrap_or_else(|| default_name("timer"));
        let exec = Exec::new(
            &parent,
            CallbackKind::Timer,
            name,
            serialized,
            attrs,
            config.callback,
        );
        let e = exec.clone();
        let kdpc = if passive {
            let item = nt::WorkItem::new(&kernel, "wdf passive timer", move || e.run());
            let e2 = exec.clone();
            nt::Dpc::new(&kernel, "wdf timer", move || {
                // A tick while the previous tick's work item is pending is dropped.
                e2.posted();
                if !item.enqueue() {
                    e2.unposted();
                }
            })
        } else {
            nt::Dpc::new(&kernel, "wdf timer", move || {
                e.posted();
                e.run();
            })
        };
        let ktimer = nt::Timer::new(&kernel, kdpc);
        // Deleting the parent runs the timer down, as WDF does for child timers.
        let t = ktimer.clone();
        exec.header.set_dispose(Box::new(move || {
            t.cancel();
        }));
        Ok(Arc::new(Timer {
            exec,
            ktimer,
            kernel: kernel.downgrade(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            passive,
            period: config.period,
        }))
    }

    /// Starts (or restarts) the timer: first expiry after `due`. Returns whether it was already
    /// running. Ignored (returns `false`) while a stop-with-wait runs the timer down.
    /// Equivalent to: `WdfTimerStart`.
    pub fn start(&self, due: Duration) -> bool {
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        self.ktimer.set(nt::DueTime::Relative(due), self.period)
    }

    /// Stops the timer; returns whether it was running. With `wait` (PASSIVE_LEVEL, not from the
    /// timer's own callback: refused with `false` and a verifier report), starts made meanwhile
    /// are ignored and the call returns only when no callback is queued or running and the
    /// timer is not set: if a running callback restarted it, it is stopped again.
    /// Equivalent to: `WdfTimerStop`.
    pub fn stop(&self, wait: bool) -> bool {
        if !wait {
            return self.ktimer.cancel();
        }
        if self.exec.in_own_callback() {
            verifier::report(
                &rules::PASSIVE_DDI_AT_DISPATCH,
                format_args!(
                    "WdfTimerStop(Wait=TRUE) from timer {}'s own callback",
                    self.exec.header.name()
                ),
            );
            return false;
        }
        if passive_ddi("WdfTimerStop(Wait=TRUE)").is_err() {
            return false;
        }
        self.stopping.store(true, Ordering::Release);
        let mut was = false;
        loop {
            was |= self.ktimer.cancel();
            if let Some(k) = self.kernel.upgrade() {
                k.flush_dpcs();
            }
            self.exec.wait_idle();
            if !self.ktimer.is_set() {
                break;
            }
        }
        self.stopping.store(false, Ordering::Release);
        was
    }

    /// Whether the callback is serialized with its parent.
    pub fn is_serialized(&self) -> bool {
        self.exec.lock.is_some()
    }

    /// Whether the callback runs at PASSIVE_LEVEL.
    pub fn is_passive(&self) -> bool {
        self.passive
    }

    /// The object header.
    pub fn header(&self) -> &Arc<ObjectHeader> {
        &self.exec.header
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.ktimer.cancel();
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("name", &self.exec.header.name())
            .field("passive", &self.passive)
            .field("serialized", &self.is_serialized())
            .finish()
    }
}

/// A work item configuration. Equivalent to: `WDF_WORKITEM_CONFIG`.
pub struct WorkItemConfig {
    /// Serialize with the parent's callbacks (default true).
    pub automatic_serialization: bool,
    /// A name for traces.
    pub name: Option<String>,
    callback: Callback,
}

impl WorkItemConfig {
    /// A configuration running `callback` (`EvtWorkItem`).
    pub fn new(callback: impl Fn(&mut CallbackContext<'_, '_>) + Send + Sync + 'static) -> Self {
        WorkItemConfig {
            automatic_serialization: true,
            name: None,
            callback: Box::new(callback),
        }
    }
}

impl fmt::Debug for WorkItemConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkItemConfig")
            .field("automatic_serialization", &self.automatic_serialization)
            .finish()
    }
}

/// A framework work item: its callback runs at PASSIVE_LEVEL on a system worker.
/// Equivalent to: `WDFWORKITEM`.
pub struct WorkItem {
    exec: Arc<Exec>,
    item: nt::WorkItem,
}

impl WorkItem {
    /// Creates a work item under `parent`. Equivalent to: `WdfWorkItemCreate`.
    pub fn create<'a>(
        parent: impl Into<Parent<'a>>,
        config: WorkItemConfig,
        attrs: ObjectAttributes,
    ) -> Result<Arc<WorkItem>, NtStatus> {
        let parent = parent.into();
        constraints::validate_attributes(ObjectKind::WorkItem, &attrs)?;
        let serialized = constraints::resolve_auto_serialization(
            true,
            config.automatic_serialization,
            &parent.info(),
        )?;
        let kernel = parent.kernel().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
        let name = config.name.unwrap_or_else(|| default_name("workitem"));
        let exec = Exec::new(
            &parent,
            CallbackKind::WorkItem,
            name,
            serialized,
            attrs,
            config.callback,
        );
        let e = exec.clone();
        let item = nt::WorkItem::new(&kernel, "wdf work item", move || e.run());
        Ok(Arc::new(WorkItem { exec, item }))
    }

    /// Queues the work item; `false` (nothing queued) if it is still pending.
    /// Equivalent to: `WdfWorkItemEnqueue`.
    pub fn enqueue(&self) -> bool {
        self.exec.posted();
        if self.item.enqueue() {
            true
        } else {
            self.exec.unposted();
            false
        }
    }

    /// Waits until the item is neither pending nor running (PASSIVE_LEVEL; from its own callback
    /// it returns at once, with a verifier report). Equivalent to: `WdfWorkItemFlush`.
    pub fn flush(&self) -> Result<(), NtStatus> {
        passive_ddi("WdfWorkItemFlush")?;
        if self.exec.in_own_callback() {
            verifier::report(
                &rules::PASSIVE_DDI_AT_DISPATCH,
                format_args!(
                    "WdfWorkItemFlush from work item {}'s own callback",
                    self.exec.header.name()
                ),
            );
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        self.exec.wait_idle();
        Ok(())
    }

    /// Whether the callback is serialized with its parent.
    pub fn is_serialized(&self) -> bool {
        self.exec.lock.is_some()
    }

    /// The object header.
    pub fn header(&self) -> &Arc<ObjectHeader> {
        &self.exec.header
    }
}

impl fmt::Debug for WorkItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkItem")
            .field("name", &self.exec.header.name())
            .field("serialized", &self.is_serialized())
            .finish()
    }
}
