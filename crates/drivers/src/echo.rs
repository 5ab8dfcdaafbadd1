//! The KMDF echo sample (`general/echo/kmdf/driver/AutoSync`), on wdfkit.
//!
//! A write stores a copy of its buffer in the queue context, replacing the previous one. A read
//! returns the stored bytes (as many as it asked for, at most what is stored). With nothing
//! stored it completes at once with `STATUS_SUCCESS` and 0 bytes, as the sample does. A write
//! longer than [`EchoConfig::max_write_length`] (the sample's `MAX_WRITE_LENGTH`, 40 KiB) fails
//! with [`STATUS_BUFFER_OVERFLOW`]. The data moves when the request is *presented*, as in
//! the sample, so a write that is cancelled while pending has still replaced the buffer.
//!
//! Reads and writes are not completed by their callbacks. The callback marks the request
//! cancelable and starts the queue's timer, and the timer completes it [`EchoConfig::delay`]
//! later. If the sender cancels first, the cancel routine completes it with `STATUS_CANCELLED`.
//!
//! # Sync scope and execution level
//!
//! **Queue scope, Dispatch level, one sequential queue, a timer parented to the queue with
//! automatic serialization.** The queue context (the stored buffer and the one pending
//! request) is touched by four callbacks: `EvtIoRead`, `EvtIoWrite`, the cancel routine and
//! the timer. Queue scope puts the first three under the queue's lock. The timer, parented to
//! the queue with automatic serialization, takes the same lock. So all four reach the
//! [`ScopeLocked`] context through the token they are lent, and the driver keeps no lock of its
//! own. Here that is cheap, because a sequential queue owns at most one request and every callback is a few
//! lines. The level must be Dispatch: the timer's callback runs in a DPC, and a DPC cannot share
//! a passive-level queue's mutex. (The stored sample sets `AutomaticSerialization = FALSE`
//! while its comments count on the queue lock; we set it, as the comments intend.)
//!
//! The timer completes requests without racing the cancel routine, using the sample's
//! pattern. It takes the pending request out of the context and calls
//! [`CancelableRequest::unmark`]. `Ok` gives the request back, and the timer completes it.
//! `Err(STATUS_CANCELLED)` means the cancel path claimed it first, and its cancel routine
//! completes it. So every request is completed exactly once.
//!
//! **Closing a handle never leaves requests hanging.** The framework cancels only requests
//! still *queued* for a closing file object. The one this driver owns (marked cancelable, waiting
//! for the timer) is the driver's job. `EvtFileCleanup` takes the queue's lock
//! (`Queue::acquire_lock`, i.e. `WdfObjectAcquireLock`; file callbacks are not serialized), takes that
//! request if it belongs to the closing file, and completes it with `STATUS_CANCELLED`. It
//! also marks the file as closing, so the file's next queued requests, which the queue now
//! presents one by one, are cancelled by `EvtIoRead`/`EvtIoWrite` instead of pending again.
//! `EvtFileClose` forgets the file.
//!
//! Differences from the sample: reads and writes are routed to the queue with
//! `configure_request_dispatching` once the context and the timer exist, so no request can
//! arrive before them (the sample's queue is the default queue). And the timer is one-shot,
//! started per request, instead of polling every 2 s. If a request is cancelled, a timer already
//! started for it may fire early for the next request; that only makes that completion early.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use nt::NtStatus;
use nt::io::FileObject;
use wdf::{
    CallbackContext, CancelableRequest, Device, DeviceInit, DispatchType, Driver, FileObjectConfig,
    IoContext, ObjectAttributes, Queue, QueueConfig, Request, RequestType, ScopeLocked, ScopeToken,
    SyncScope, Timer, TimerConfig,
};

/// `STATUS_BUFFER_OVERFLOW` (a warning-class status): a write longer than the maximum.
pub const STATUS_BUFFER_OVERFLOW: NtStatus = NtStatus(0x8000_0005);

/// The sample's `MAX_WRITE_LENGTH`.
pub const MAX_WRITE_LENGTH: usize = 40 * 1024;

/// The default completion delay.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(10);

/// How to create an echo device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoConfig {
    /// How long after presentation the timer completes a read or write (default 10 ms).
    pub delay: Duration,
    /// Longer writes fail with [`STATUS_BUFFER_OVERFLOW`] (default [`MAX_WRITE_LENGTH`]).
    pub max_write_length: usize,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            delay: DEFAULT_DELAY,
            max_write_length: MAX_WRITE_LENGTH,
        }
    }
}

/// What the echo device has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Reads presented to `EvtIoRead`.
    pub reads: u64,
    /// Writes presented to `EvtIoWrite`.
    pub writes: u64,
    /// Requests completed by the timer.
    pub completed_by_timer: u64,
    /// Requests completed with `STATUS_CANCELLED` by the cancel routine.
    pub cancelled: u64,
    /// Requests completed with `STATUS_CANCELLED` because their handle was closing.
    pub cancelled_at_cleanup: u64,
}

/// The request the driver owns, waiting for the timer.
struct Pending {
    ticket: CancelableRequest,
    status: NtStatus,
    information: usize,
    file: u64,
}

#[derive(Default)]
struct EchoState {
    /// The last write's data (`None` until the first write).
    buffer: Option<Vec<u8>>,
    /// At most one: the queue is sequential.
    pending: Option<Pending>,
    /// File objects in cleanup: their requests are cancelled on presentation.
    closing: Vec<u64>,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    completed_by_timer: AtomicU64,
    cancelled: AtomicU64,
    cancelled_at_cleanup: AtomicU64,
}

/// The queue context. Equivalent to: the sample's `QUEUE_CONTEXT`.
struct EchoQueueContext {
    state: ScopeLocked<EchoState>,
    timer: OnceLock<Arc<Timer>>,
    delay: Duration,
    max_write_length: usize,
    counters: Counters,
}

/// The queue's context. Equivalent to: `QueueGetContext`.
fn queue_context(queue: &Queue) -> Option<Arc<EchoQueueContext>> {
    queue.header().context::<EchoQueueContext>()
}

impl EchoQueueContext {
    /// Hands `req` to the framework as cancelable and starts the timer that will complete it.
    fn pend(&self, state: &mut EchoState, req: Request, status: NtStatus, information: usize) {
        let file = req.file_object().id();
        match req.mark_cancelable(cancel_routine) {
            Ok(ticket) => {
                state.pending = Some(Pending {
                    ticket,
                    status,
                    information,
                    file,
                });
                if let Some(timer) = self.timer.get() {
                    timer.start(self.delay);
                }
            }
            // Only for a request the driver does not own: not reachable from a callback.
            Err(e) => e.request.complete(e.status),
        }
    }

    /// The state, if the callback holds the queue's lock (always, under Queue scope).
    fn state<'a>(
        &'a self,
        token: Option<&'a mut ScopeToken>,
    ) -> Result<&'a mut EchoState, NtStatus> {
        self.state.try_get(token.ok_or(NtStatus::INTERNAL_ERROR)?)
    }
}

/// `EvtIoWrite`.
fn on_write(cx: &mut IoContext<'_, '_>, req: Request, length: usize) {
    let Some(ctx) = queue_context(cx.queue()) else {
        req.complete(NtStatus::INVALID_DEVICE_STATE);
        return;
    };
    ctx.counters.writes.fetch_add(1, Ordering::Relaxed);
    let state = match ctx.state(cx.scope()) {
        Ok(s) => s,
        Err(status) => return req.complete(status),
    };
    if state.closing.contains(&req.file_object().id()) {
        ctx.counters
            .cancelled_at_cleanup
            .fetch_add(1, Ordering::Relaxed);
        return req.complete(NtStatus::CANCELLED);
    }
    if length > ctx.max_write_length {
        return req.complete(STATUS_BUFFER_OVERFLOW);
    }
    let data = match req.input_buffer(length) {
        Ok(b) => b[..length].to_vec(),
        Err(status) => return req.complete(status),
    };
    state.buffer = Some(data);
    ctx.pend(state, req, NtStatus::SUCCESS, length);
}

/// `EvtIoRead`.
fn on_read(cx: &mut IoContext<'_, '_>, mut req: Request, length: usize) {
    let Some(ctx) = queue_context(cx.queue()) else {
        req.complete(NtStatus::INVALID_DEVICE_STATE);
        return;
    };
    ctx.counters.reads.fetch_add(1, Ordering::Relaxed);
    let state = match ctx.state(cx.scope()) {
        Ok(s) => s,
        Err(status) => return req.complete(status),
    };
    if state.closing.contains(&req.file_object().id()) {
        ctx.counters
            .cancelled_at_cleanup
            .fetch_add(1, Ordering::Relaxed);
        return req.complete(NtStatus::CANCELLED);
    }
    // No data to read: the sample completes at once with success and nothing.
    let Some(buffer) = &state.buffer else {
        return req.complete_with_information(NtStatus::SUCCESS, 0);
    };
    let n = length.min(buffer.len());
    match req.output_buffer(n) {
        Ok(out) => out[..n].copy_from_slice(&buffer[..n]),
        Err(status) => return req.complete(status),
    }
    ctx.pend(state, req, NtStatus::SUCCESS, n);
}

/// `EvtRequestCancel`: runs under the queue's lock (Queue scope), so it may clear the context.
fn cancel_routine(cx: &mut IoContext<'_, '_>, req: Request) {
    if let Some(ctx) = queue_context(cx.queue()) {
        if let Ok(state) = ctx.state(cx.scope())
            && state
                .pending
                .as_ref()
                .is_some_and(|p| p.ticket.id() == req.id())
        {
            state.pending = None;
        }
        ctx.counters.cancelled.fetch_add(1, Ordering::Relaxed);
    }
    req.complete(NtStatus::CANCELLED);
}

/// `EvtTimerFunc`: serialized with the queue's callbacks.
fn on_timer(ctx: &EchoQueueContext, tcx: &mut CallbackContext<'_, '_>) {
    let Ok(state) = ctx.state(tcx.scope()) else {
        return;
    };
    let Some(p) = state.pending.take() else {
        return;
    };
    // Err: the cancel path claimed it first, and its cancel routine completes it.
    if let Ok(req) = p.ticket.unmark() {
        ctx.counters
            .completed_by_timer
            .fetch_add(1, Ordering::Relaxed);
        req.complete_with_information(p.status, p.information);
    }
}

/// `EvtFileCleanup`: cancel what the driver holds for this file; cancel its next requests.
fn on_cleanup(queue: &Arc<Queue>, file: &FileObject) {
    let Some(ctx) = queue_context(queue) else {
        return;
    };
    let taken = {
        let mut token = queue.acquire_lock();
        let Ok(state) = ctx.state.try_get(&mut token) else {
            return;
        };
        state.closing.push(file.id());
        if state.pending.as_ref().is_some_and(|p| p.file == file.id()) {
            state.pending.take()
        } else {
            None
        }
    };
    // Completed after releasing the lock, so the queue can present the next request here.
    if let Some(p) = taken
        && let Ok(req) = p.ticket.unmark()
    {
        ctx.counters
            .cancelled_at_cleanup
            .fetch_add(1, Ordering::Relaxed);
        req.complete(NtStatus::CANCELLED);
    }
}

/// `EvtFileClose`: the file is gone; forget it.
fn on_close(queue: &Arc<Queue>, file: &FileObject) {
    let Some(ctx) = queue_context(queue) else {
        return;
    };
    let mut token = queue.acquire_lock();
    if let Ok(state) = ctx.state.try_get(&mut token) {
        state.closing.retain(|&f| f != file.id());
    }
}

/// An echo device made by [`create`].
pub struct EchoDevice {
    device: Arc<Device>,
    queue: Arc<Queue>,
    ctx: Arc<EchoQueueContext>,
}

impl EchoDevice {
    /// The device's name (what clients open).
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The framework device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The sequential queue (Queue scope) that receives reads and writes.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// The completion timer (parented to the queue, auto-serialized).
    pub fn timer(&self) -> Option<&Arc<Timer>> {
        self.ctx.timer.get()
    }

    /// Counters of what happened so far.
    pub fn stats(&self) -> EchoStats {
        let c = &self.ctx.counters;
        EchoStats {
            reads: c.reads.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            completed_by_timer: c.completed_by_timer.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            cancelled_at_cleanup: c.cancelled_at_cleanup.load(Ordering::Relaxed),
        }
    }

    /// A copy of the stored buffer (`None` before the first write). Takes the queue's lock:
    /// call it from outside the device's callbacks.
    pub fn stored(&self) -> Option<Vec<u8>> {
        let mut token = self.queue.acquire_lock();
        self.ctx.state.try_get(&mut token).ok()?.buffer.clone()
    }
}

impl fmt::Debug for EchoDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoDevice")
            .field("name", &self.name())
            .field("delay", &self.ctx.delay)
            .finish()
    }
}

/// Creates an echo device named `name`: the device with file cleanup/close callbacks, one
/// sequential Queue-scope queue with its context and timer, and the routing of reads and
/// writes to it. A name already in use: `STATUS_OBJECT_NAME_COLLISION`.
pub fn create(
    driver: &Arc<Driver>,
    name: &str,
    config: EchoConfig,
) -> Result<EchoDevice, NtStatus> {
    // The file callbacks need the queue, which exists only after the device.
    let queue_slot: Arc<OnceLock<Weak<Queue>>> = Arc::new(OnceLock::new());
    let mut files = FileObjectConfig::default();
    let slot = queue_slot.clone();
    files.on_cleanup(move |_token, file| {
        if let Some(q) = slot.get().and_then(Weak::upgrade) {
            on_cleanup(&q, file);
        }
    });
    let slot = queue_slot.clone();
    files.on_close(move |_token, file| {
        if let Some(q) = slot.get().and_then(Weak::upgrade) {
            on_close(&q, file);
        }
    });
    let mut init = DeviceInit::new(name);
    init.file_object(files);
    let device = driver.create_device(init)?;
    let made = build(&device, name, config, &queue_slot);
    if made.is_err() {
        device.delete();
    }
    made
}

fn build(
    device: &Arc<Device>,
    name: &str,
    config: EchoConfig,
    queue_slot: &OnceLock<Weak<Queue>>,
) -> Result<EchoDevice, NtStatus> {
    let mut qc = QueueConfig::new(DispatchType::Sequential);
    qc.name = Some(format!("{name}-queue"));
    qc.io_read(on_read);
    qc.io_write(on_write);
    let queue = device.create_queue(qc, ObjectAttributes::scope(SyncScope::Queue))?;

    let ctx = Arc::new(EchoQueueContext {
        state: queue.scope_locked(EchoState::default()),
        timer: OnceLock::new(),
        delay: config.delay,
        max_write_length: config.max_write_length,
        counters: Counters::default(),
    });
    queue
        .header()
        .add_context(ctx.clone())
        .map_err(|_| NtStatus::INTERNAL_ERROR)?;

    // Parented to the queue, automatic serialization on (the default): the queue's lock.
    let weak = Arc::downgrade(&ctx);
    let mut tc = TimerConfig::new(move |tcx| {
        if let Some(c) = weak.upgrade() {
            on_timer(&c, tcx);
        }
    });
    tc.name = Some(format!("{name}-timer"));
    let timer = Timer::create(&queue, tc, ObjectAttributes::default())?;
    ctx.timer.set(timer).map_err(|_| NtStatus::INTERNAL_ERROR)?;
    queue_slot
        .set(Arc::downgrade(&queue))
        .map_err(|_| NtStatus::INTERNAL_ERROR)?;

    device.configure_request_dispatching(&queue, RequestType::Read)?;
    device.configure_request_dispatching(&queue, RequestType::Write)?;
    Ok(EchoDevice {
        device: device.clone(),
        queue,
        ctx,
    })
}
