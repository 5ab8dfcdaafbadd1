//! I/O queues: where requests wait and how they are presented to the driver.
//!
//! ```
//! use wdf::{Driver, DeviceInit, DispatchType, ObjectAttributes, QueueConfig};
//! use nt::NtStatus;
//!
//! let kernel = nt::Kernel::builder().processors(1).workers(1).build();
//! let driver = Driver::create(&kernel, ObjectAttributes::default()).unwrap();
//! let device = driver.create_device(DeviceInit::new("queue-doc")).unwrap();
//! let mut config = QueueConfig::new(DispatchType::Parallel);
//! config.default_queue = true;
//! config.io_read(|_cx, mut request, length| {
//!     request.output_buffer(length).unwrap().fill(7);
//!     request.complete_with_information(NtStatus::SUCCESS, length);
//! });
//! device.create_queue(config, ObjectAttributes::default()).unwrap();
//!
//! let handle = kernel.io().open("queue-doc").unwrap();
//! let done = handle.read(0, 3);
//! assert_eq!(done.status, NtStatus::SUCCESS);
//! assert_eq!(done.data, vec![7, 7, 7]);
//! ```

mod cancel;
mod dispatch;
mod fast;
mod state;

pub use cancel::CancelableRequest;
pub(crate) use dispatch::Event;
pub(crate) use state::passive_ddi;
pub use state::{QueueStateCallback, QueueStatus};

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use nt::io::FileObject;
use nt::sync::SpinLock;
use nt::{Dpc, NtStatus, WorkItem};

use crate::device::Device;
use crate::object::{ObjectAttributes, ObjectHeader};
use crate::request::{Request, RequestError, RequestType};
use crate::sync::constraints::{self, LockOwner, ObjectKind, Resolved};
use crate::sync::{CallbackLock, LockOrder, ScopeLocked, ScopeToken};
use crate::verifier::{self, rules};

/// How a queue presents requests. Equivalent to: `WDF_IO_QUEUE_DISPATCH_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DispatchType {
    /// One driver-owned request at a time: the next is presented after the current one is
    /// completed, forwarded or requeued.
    Sequential,
    /// As many as arrive, up to an optional limit of driver-owned requests.
    Parallel,
    /// Nothing is presented; the driver retrieves requests.
    Manual,
}

/// What a serialized (or unserialized) queue callback receives besides the request.
pub struct IoContext<'a, 'b> {
    pub(crate) queue: &'a Arc<Queue>,
    pub(crate) token: Option<&'a mut ScopeToken<'b>>,
}

impl<'a, 'b> IoContext<'a, 'b> {
    /// The queue presenting the request.
    pub fn queue(&self) -> &'a Arc<Queue> {
        self.queue
    }

    /// Proof that the scope lock is held, to reach [`ScopeLocked`] data; `None` when the queue's
    /// scope is None (the driver must use its own lock).
    pub fn scope(&mut self) -> Option<&mut ScopeToken<'b>> {
        self.token.as_deref_mut()
    }
}

impl fmt::Debug for IoContext<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoContext")
            .field("queue", &self.queue.name())
            .field("locked", &self.token.is_some())
            .finish()
    }
}

/// `EvtIoRead` / `EvtIoWrite`: the request and its length.
pub type IoLengthHandler = Box<dyn Fn(&mut IoContext<'_, '_>, Request, usize) + Send + Sync>;
/// `EvtIoDeviceControl` / `EvtIoInternalDeviceControl`: request, output length, input length, code.
pub type IoControlHandler =
    Box<dyn Fn(&mut IoContext<'_, '_>, Request, usize, usize, u32) + Send + Sync>;
/// `EvtIoDefault`: the request only.
pub type IoDefaultHandler = Box<dyn Fn(&mut IoContext<'_, '_>, Request) + Send + Sync>;
/// `EvtIoCanceledOnQueue`: a previously presented request was cancelled while queued; the driver
/// owns it again and must complete it.
pub type IoCanceledOnQueueHandler = Box<dyn Fn(&mut IoContext<'_, '_>, Request) + Send + Sync>;
/// `EvtIoQueueState` registered with `WdfIoQueueReadyNotify`: a manual queue became non-empty.
pub type ReadyNotifyHandler = Arc<dyn Fn(&mut IoContext<'_, '_>) + Send + Sync>;

type QueueContextFactory =
    Box<dyn FnOnce(&Arc<Queue>) -> Arc<dyn std::any::Any + Send + Sync> + Send + Sync>;

/// A queue's configuration. Equivalent to: `WDF_IO_QUEUE_CONFIG`.
pub struct QueueConfig {
    /// How requests are presented.
    pub dispatch_type: DispatchType,
    /// Whether this is the device's default queue (receives every type without its own queue).
    pub default_queue: bool,
    /// Parallel queues only: the most driver-owned requests at once (`None`: unlimited).
    pub parallel_limit: Option<u32>,
    /// Present zero-length reads and writes instead of completing them with success.
    pub allow_zero_length_requests: bool,
    /// A name for traces and reports (default: `queue<N>`).
    pub name: Option<String>,
    pub(crate) read: Option<IoLengthHandler>,
    pub(crate) write: Option<IoLengthHandler>,
    pub(crate) device_control: Option<IoControlHandler>,
    pub(crate) internal_device_control: Option<IoControlHandler>,
    pub(crate) default: Option<IoDefaultHandler>,
    pub(crate) canceled_on_queue: Option<IoCanceledOnQueueHandler>,
    pub(crate) stop: Option<crate::power::IoStopHandler>,
    pub(crate) contexts: Vec<QueueContextFactory>,
    pub(crate) resume: Option<crate::power::IoResumeHandler>,
    /// Whether device power-down stops this queue (default true). Equivalent to:
    /// `WDF_IO_QUEUE_CONFIG.PowerManaged`.
    pub power_managed: bool,
}

impl QueueConfig {
    /// A configuration with no handlers. Equivalent to: `WDF_IO_QUEUE_CONFIG_INIT`.
    pub fn new(dispatch_type: DispatchType) -> Self {
        QueueConfig {
            dispatch_type,
            default_queue: false,
            parallel_limit: None,
            allow_zero_length_requests: false,
            name: None,
            read: None,
            write: None,
            device_control: None,
            internal_device_control: None,
            default: None,
            canceled_on_queue: None,
            stop: None,
            contexts: Vec::new(),
            resume: None,
            power_managed: true,
        }
    }

    /// Registers `EvtIoRead`.
    pub fn io_read(
        &mut self,
        f: impl Fn(&mut IoContext<'_, '_>, Request, usize) + Send + Sync + 'static,
    ) -> &mut Self {
        self.read = Some(Box::new(f));
        self
    }

    /// Registers `EvtIoWrite`.
    pub fn io_write(
        &mut self,
        f: impl Fn(&mut IoContext<'_, '_>, Request, usize) + Send + Sync + 'static,
    ) -> &mut Self {
        self.write = Some(Box::new(f));
        self
    }

    /// Registers `EvtIoDeviceControl` (request, output length, input length, control code).
    pub fn io_device_control(
        &mut self,
        f: impl Fn(&mut IoContext<'_, '_>, Request, usize, usize, u32) + Send + Sync + 'static,
    ) -> &mut Self {
        self.device_control = Some(Box::new(f));
        self
    }

    /// Registers `EvtIoInternalDeviceControl`.
    pub fn io_internal_device_control(
        &mut self,
        f: impl Fn(&mut IoContext<'_, '_>, Request, usize, usize, u32) + Send + Sync + 'static,
    ) -> &mut Self {
        self.internal_device_control = Some(Box::new(f));
        self
    }

    /// Registers `EvtIoDefault` (any request type without its own handler).
    pub fn io_default(
        &mut self,
        f: impl Fn(&mut IoContext<'_, '_>, Request) + Send + Sync + 'static,
    ) -> &mut Self {
        self.default = Some(Box::new(f));
        self
    }

    /// A typed context built when the queue is created, before it can receive requests, so it
    /// can hold [`ScopeLocked`] data made with [`Queue::scope_locked`]. Handlers reach it with
    /// `cx.queue().context::<T>()`. Equivalent to: the context type in the queue's attributes.
    pub fn context<T: std::any::Any + Send + Sync>(
        &mut self,
        make: impl FnOnce(&Arc<Queue>) -> T + Send + Sync + 'static,
    ) -> &mut Self {
        self.contexts.push(Box::new(move |q| {
            Arc::new(make(q)) as Arc<dyn std::any::Any + Send + Sync>
        }));
        self
    }

    /// Registers `EvtIoCanceledOnQueue`.
    pub fn io_canceled_on_queue(
        &mut self,
        f: impl Fn(&mut IoContext<'_, '_>, Request) + Send + Sync + 'static,
    ) -> &mut Self {
        self.canceled_on_queue = Some(Box::new(f));
        self
    }

    /// Registers `EvtIoStop`: called for each driver-owned request when the device powers down.
    pub fn io_stop(
        &mut self,
        f: impl Fn(&mut IoContext<'_, '_>, crate::power::StopNotice) + Send + Sync + 'static,
    ) -> &mut Self {
        self.stop = Some(Box::new(f));
        self
    }

    /// Registers `EvtIoResume`: called for each request the driver kept across a power-down.
    pub fn io_resume(
        &mut self,
        f: impl Fn(&mut IoContext<'_, '_>, u64) + Send + Sync + 'static,
    ) -> &mut Self {
        self.resume = Some(Box::new(f));
        self
    }

    fn has_handlers(&self) -> bool {
        self.read.is_some()
            || self.write.is_some()
            || self.device_control.is_some()
            || self.internal_device_control.is_some()
            || self.default.is_some()
    }

    /// Checks the configuration rules of `WdfIoQueueCreate` (spec §5.1); see
    /// [`constraints::validate_queue_config`].
    pub fn validate(&self) -> Result<(), NtStatus> {
        constraints::validate_queue_config(
            self.dispatch_type,
            self.has_handlers(),
            self.parallel_limit,
        )
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("dispatch_type", &self.dispatch_type)
            .field("default_queue", &self.default_queue)
            .field("parallel_limit", &self.parallel_limit)
            .finish_non_exhaustive()
    }
}

/// Counters kept by every queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests that arrived from the I/O manager or by forwarding.
    pub arrived: u64,
    /// Requests presented to a callback.
    pub presented: u64,
    /// Requests completed while owned by the driver.
    pub completed: u64,
    /// Dispatch passes deferred to a work item because the caller was above PASSIVE_LEVEL.
    pub deferred_irql: u64,
    /// Dispatch passes deferred because the thread already held the queue's callback lock.
    pub deferred_lock: u64,
    /// Requests failed at arrival because the queue was not accepting.
    pub rejected: u64,
    /// Cancel routines run (`EvtRequestCancel`).
    pub cancel_routines: u64,
    /// Requests cancelled while queued (completed by the framework or sent to
    /// `EvtIoCanceledOnQueue`).
    pub cancelled_queued: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    deferred_irql: AtomicU64,
    deferred_lock: AtomicU64,
    rejected: AtomicU64,
    cancel_routines: AtomicU64,
    cancelled_queued: AtomicU64,
}

/// A driver cancel routine (`EvtRequestCancel`), run under the queue's scope lock.
pub(crate) type CancelRoutine = Box<dyn FnOnce(&mut IoContext<'_, '_>, Request) + Send>;

pub(crate) struct QueueState {
    /// Queued, not driver-owned (cancel-safe: each has an IRP cancel routine).
    pending: VecDeque<Request>,
    /// Driver-owned requests (presented, retrieved, or handed to `EvtIoCanceledOnQueue`).
    driver_io_count: usize,
    /// Threads inside the dispatch loop.
    dispatching: usize,
    accepting: bool,
    dispatching_enabled: bool,
    /// Driver-owned requests marked cancelable: the framework holds them until unmarked or
    /// cancelled.
    pub(crate) cancelable: Vec<(Request, CancelRoutine)>,
    /// Cancelled driver-owned requests whose cancel routine has not run yet.
    cancelled: VecDeque<(Request, CancelRoutine)>,
    /// Previously presented requests cancelled while queued, for `EvtIoCanceledOnQueue`.
    canceled_on_queue: VecDeque<Request>,
    /// Registered by stop / stop-and-purge; called (without the scope lock) when idle.
    stop_complete: Option<QueueStateCallback>,
    /// Registered by purge / drain; called (with the scope lock) when empty and idle.
    purge_complete: Option<QueueStateCallback>,
    /// A purge or stop-and-purge is in progress: requeues and mark-cancelables become
    /// cancellations.
    purging: bool,
    /// Manual queues: `EvtIoQueueState` for ready notification, and the empty→non-empty edge.
    ready_notify: Option<ReadyNotifyHandler>,
    became_non_empty: bool,
    /// Power state of a power-managed queue (see [`crate::power`]).
    pub(crate) power: crate::power::QueuePower,
}

/// How a deferred dispatch pass gets to run.
enum Deferral {
    /// A DPC (dispatch-level queues, lock-ownership deferral).
    Dpc(Dpc),
    /// A system work item (passive-level queues).
    WorkItem(WorkItem),
}

/// An I/O queue. Equivalent to: `WDFQUEUE` / `FxIoQueue`.
pub struct Queue {
    header: Arc<ObjectHeader>,
    device: Weak<Device>,
    pub(crate) device_id: u64,
    pub(crate) config: QueueConfig,
    pub(crate) resolved: Resolved,
    /// The queue's callback lock: its own, or the device's under Device scope. Every queue has
    /// one (`WdfObjectAcquireLock` works even with scope None).
    pub(crate) lock: CallbackLock,
    pub(crate) state: SpinLock<QueueState>,
    deferral: Deferral,
    pub(crate) counters: Counters,
    /// The parallel fast path is open (see [`fast`]).
    pub(crate) fast: AtomicBool,
    pub(crate) shards: fast::Shards,
    pub(crate) health: Arc<crate::invoke::Health>,
}

static NEXT_QUEUE: AtomicU64 = AtomicU64::new(0);

impl Queue {
    pub(crate) fn create(
        device: &Arc<Device>,
        mut config: QueueConfig,
        attrs: ObjectAttributes,
    ) -> Result<Arc<Queue>, NtStatus> {
        let contexts = std::mem::take(&mut config.contexts);
        constraints::validate_attributes(ObjectKind::Queue, &attrs)?;
        config.validate()?;
        let resolved = constraints::resolve_queue(device.constraints(), &attrs)?;
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format!("queue{}", NEXT_QUEUE.fetch_add(1, Ordering::Relaxed)));
        let lock = match resolved.lock {
            LockOwner::Device => device.callback_lock().clone(),
            _ => CallbackLock::new(resolved.lock_flavour, LockOrder::Queue, "queue"),
        };
        let header = ObjectHeader::new("queue", name, attrs.cleanup);
        let kernel = device.kernel().ok_or(NtStatus::NO_SUCH_DEVICE)?;
        let passive = resolved.passive_callbacks;
        let queue = Arc::new_cyclic(|weak: &Weak<Queue>| {
            let w = weak.clone();
            let run = move || {
                if let Some(q) = w.upgrade() {
                    q.run_deferred();
                }
            };
            let deferral = if passive {
                Deferral::WorkItem(WorkItem::new(&kernel, "queue deferred dispatch", run))
            } else {
                Deferral::Dpc(Dpc::new(&kernel, "queue deferred dispatch", run))
            };
            Queue {
                header,
                device: Arc::downgrade(device),
                device_id: device.id(),
                config,
                resolved,
                lock,
                state: SpinLock::named(
                    "queue object lock",
                    QueueState {
                        pending: VecDeque::new(),
                        driver_io_count: 0,
                        dispatching: 0,
                        accepting: true,
                        dispatching_enabled: true,
                        cancelable: Vec::new(),
                        cancelled: VecDeque::new(),
                        canceled_on_queue: VecDeque::new(),
                        stop_complete: None,
                        purge_complete: None,
                        purging: false,
                        ready_notify: None,
                        became_non_empty: false,
                        power: Default::default(),
                    },
                ),
                deferral,
                counters: Counters::default(),
                fast: AtomicBool::new(false),
                shards: fast::Shards::new(),
                health: device.health.clone(),
            }
        });
        queue.update_fast(&queue.state.lock());
        for make in contexts {
            let ctx = make(&queue);
            queue.header.add_context_dyn(ctx);
        }
        device.header().add_child(queue.header.clone());
        Ok(queue)
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.header.name()
    }

    /// The object header (contexts, state).
    pub fn header(&self) -> &Arc<ObjectHeader> {
        &self.header
    }

    /// The queue's typed context of type `T`. Equivalent to: `WdfObjectGetTypedContext`.
    pub fn context<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.header.context::<T>()
    }

    /// The device the queue belongs to (`None` once the device is gone).
    pub fn device(&self) -> Option<Arc<Device>> {
        self.device.upgrade()
    }

    /// The dispatch type.
    pub fn dispatch_type(&self) -> DispatchType {
        self.config.dispatch_type
    }

    /// Whether this is its device's default queue.
    pub fn is_default_queue(&self) -> bool {
        self.config.default_queue
    }

    /// The resolved constraints (level, scope, lock).
    pub fn constraints(&self) -> &Resolved {
        &self.resolved
    }

    /// The queue's callback lock (the device's under Device scope).
    pub fn callback_lock(&self) -> &CallbackLock {
        &self.lock
    }

    /// Data protected by this queue's scope lock (the device's under Device scope).
    pub fn scope_locked<T>(&self, value: T) -> ScopeLocked<T> {
        ScopeLocked::new(&self.lock, value)
    }

    /// Acquires the queue's callback lock from code outside its callbacks. Re-acquiring it on
    /// the thread that holds it (e.g. inside a serialized callback) is the fatal
    /// `WDF_RECURSIVE_LOCK`. Equivalent to: `WdfObjectAcquireLock(queue)`; dropping the token is
    /// `WdfObjectReleaseLock`.
    pub fn acquire_lock(&self) -> ScopeToken<'_> {
        ScopeToken::acquire(&self.lock)
    }

    /// The queue's counters.
    pub fn stats(&self) -> QueueStats {
        let c = &self.counters;
        QueueStats {
            arrived: self.shards.sum(|s| &s.arrived),
            presented: self.shards.sum(|s| &s.presented),
            completed: self.shards.sum(|s| &s.completed),
            deferred_irql: c.deferred_irql.load(Ordering::Relaxed),
            deferred_lock: c.deferred_lock.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            cancel_routines: c.cancel_routines.load(Ordering::Relaxed),
            cancelled_queued: c.cancelled_queued.load(Ordering::Relaxed),
        }
    }

    /// Requests waiting in the queue (not driver-owned).
    pub fn pending_count(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// Requests currently owned by the driver.
    pub fn driver_owned_count(&self) -> usize {
        let st = self.state.lock();
        self.owned_total(&st)
    }

    /// Takes the request at the head of a manual (or sequential) queue.
    /// Parallel queues: `STATUS_INVALID_DEVICE_STATE`; stopped: `STATUS_WDF_PAUSED`; empty:
    /// `STATUS_NO_MORE_ENTRIES`. Equivalent to: `WdfIoQueueRetrieveNextRequest`.
    pub fn retrieve_next_request(self: &Arc<Self>) -> Result<Request, NtStatus> {
        self.retrieve(|_| true)
    }

    /// Takes the first queued request sent on `file`.
    /// Equivalent to: `WdfIoQueueRetrieveRequestByFileObject`.
    pub fn retrieve_request_by_file_object(
        self: &Arc<Self>,
        file: &FileObject,
    ) -> Result<Request, NtStatus> {
        let id = file.id();
        self.retrieve(move |r| r.file_object().id() == id)
    }

    /// Takes the first queued request matching `predicate` (a manual queue's find-and-retrieve).
    /// No match: `STATUS_NOT_FOUND`. Equivalent to: `WdfIoQueueFindRequest` +
    /// `WdfIoQueueRetrieveFoundRequest`.
    pub fn retrieve_matching(
        self: &Arc<Self>,
        predicate: impl Fn(&crate::request::RequestParameters) -> bool,
    ) -> Result<Request, NtStatus> {
        match self.retrieve(|r| predicate(&r.parameters())) {
            Err(NtStatus::NO_MORE_ENTRIES) => Err(NtStatus::NOT_FOUND),
            other => other,
        }
    }

    fn retrieve(self: &Arc<Self>, matches: impl Fn(&Request) -> bool) -> Result<Request, NtStatus> {
        if self.config.dispatch_type == DispatchType::Parallel {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        loop {
            let mut req = {
                let mut st = self.state.lock();
                if !st.dispatching_enabled || !st.power.is_on() {
                    return Err(NtStatus::WDF_PAUSED);
                }
                let Some(pos) = st.pending.iter().position(&matches) else {
                    return Err(NtStatus::NO_MORE_ENTRIES);
                };
                let req = st.pending.remove(pos).expect("position is in range");
                req.irp().clear_cancel_routine();
                st.driver_io_count += 1;
                st.power.note_presented(&req, self.tracks_owned());
                req
            };
            req.driver_owned = true;
            req.presented = true;
            self.shards
                .get(fast::Shards::mine())
                .presented
                .fetch_add(1, Ordering::Relaxed);
            if self.is_zero_length(&req) {
                req.complete(NtStatus::SUCCESS);
                continue;
            }
            return Ok(req);
        }
    }

    /// Forwards a driver-owned request to `dest` (see [`Request::forward`]).
    pub(crate) fn forward(mut request: Request, dest: &Arc<Queue>) -> Result<(), RequestError> {
        let source = request.queue().clone();
        if Arc::ptr_eq(&source, dest) || source.device_id != dest.device_id || !request.driver_owned
        {
            verifier::report(
                &rules::REQUEST_MISUSE,
                format_args!(
                    "forward of request {} from {} to {}",
                    request.id(),
                    source.name(),
                    dest.name()
                ),
            );
            return Err(RequestError {
                status: NtStatus::INVALID_DEVICE_REQUEST,
                request,
            });
        }
        let id = request.id();
        let shard = request.shard.take();
        request.driver_owned = false;
        request.set_queue(dest.clone());
        match dest.dispatch_events(Event::Forward(request)) {
            Ok(()) => {
                source.release_ownership(id, shard);
                Ok(())
            }
            Err(mut request) => {
                request.set_queue(source);
                request.driver_owned = true;
                request.shard = shard;
                Err(RequestError {
                    status: NtStatus::WDF_BUSY,
                    request,
                })
            }
        }
    }

    /// Requeues a driver-owned request at the head of its manual queue.
    pub(crate) fn requeue(mut request: Request) -> Result<(), RequestError> {
        let queue = request.queue().clone();
        if queue.config.dispatch_type != DispatchType::Manual || !request.driver_owned {
            verifier::report(
                &rules::REQUEST_MISUSE,
                format_args!(
                    "requeue of request {} on non-manual queue {}",
                    request.id(),
                    queue.name()
                ),
            );
            return Err(RequestError {
                status: NtStatus::INVALID_DEVICE_REQUEST,
                request,
            });
        }
        request.driver_owned = false;
        let _ = queue.dispatch_events(Event::Requeue(request));
        Ok(())
    }

    /// Calls the cancel routine of a cancelled driver-owned request, under the scope lock.
    pub(crate) fn invoke_cancel(self: &Arc<Self>, req: Request, routine: CancelRoutine) {
        self.counters
            .cancel_routines
            .fetch_add(1, Ordering::Relaxed);
        let lock = self.resolved.serialized().then_some(&self.lock);
        let id = Some(req.id());
        crate::invoke::run(
            lock,
            crate::observe::CallbackKind::RequestCancel,
            self.name(),
            &self.health,
            id,
            |token| routine(&mut IoContext { queue: self, token }, req),
        );
    }

    /// Called when a driver-owned request of this queue is completed.
    #[inline]
    pub(crate) fn request_completed(self: &Arc<Self>, id: u64, shard: Option<u8>) {
        self.shards
            .get(fast::Shards::mine())
            .completed
            .fetch_add(1, Ordering::Relaxed);
        self.release_ownership(id, shard);
    }

    /// A driver-owned request left this queue (completed, forwarded): uncount it where it was
    /// counted, and let the loop act on the freed slot.
    fn release_ownership(self: &Arc<Self>, id: u64, shard: Option<u8>) {
        match shard {
            Some(s) => {
                self.shards.get(s).owned.fetch_sub(1, Ordering::SeqCst);
                if !self.fast.load(Ordering::SeqCst) {
                    let _ = self.dispatch_events(Event::Internal);
                }
            }
            None => {
                let _ = self.dispatch_events(Event::Completed(id));
            }
        }
    }

    /// Cancels every queued request sent on `file` (file cleanup). Equivalent to:
    /// `FxIoQueue::FlushByFileObject`.
    pub(crate) fn flush_by_file_object(self: &Arc<Self>, file: &FileObject) {
        let id = file.id();
        let ids: Vec<u64> = self
            .state
            .lock()
            .pending
            .iter()
            .filter(|r| r.file_object().id() == id)
            .map(Request::id)
            .collect();
        // Exactly as if the sender had cancelled each one: the framework completes it, or hands
        // a previously presented one to EvtIoCanceledOnQueue, and the loop runs afterwards.
        for rid in ids {
            self.cancel_pending(rid);
        }
    }

    fn is_zero_length(&self, req: &Request) -> bool {
        !self.config.allow_zero_length_requests
            && matches!(req.kind(), RequestType::Read | RequestType::Write)
            && req.parameters().length == 0
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name())
            .field("dispatch_type", &self.config.dispatch_type)
            .field("constraints", &self.resolved)
            .finish()
    }
}
