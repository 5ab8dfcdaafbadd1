//! Cancellation: cancelable driver-owned requests, cancel routines, and requests cancelled while
//! queued (spec §5.10, §6.3).
//!
//! Marking a request cancelable hands it to the framework and gives the driver a
//! [`CancelableRequest`] ticket. From then on exactly one of two things happens, decided under
//! the queue's object lock, so the completer/cancel race cannot lose a request or complete it
//! twice:
//!
//! * the driver unmarks it first ([`CancelableRequest::unmark`] → `Ok(Request)`), and completes it;
//! * the cancel path claims it first: `unmark` returns `Err(STATUS_CANCELLED)`, and the driver's
//!   cancel routine receives the request (under the queue's scope lock, if the scope locks) and
//!   must complete it.
//!
//! A request that is still cancelable cannot be completed at all: completion needs a [`Request`],
//! and the framework holds it (the verifier rule "request completed while still marked
//! cancelable" is enforced by the types).
//!
//! ```compile_fail
//! # fn f(r: wdf::Request) {
//! let ticket = r.mark_cancelable(|_cx, req| req.complete(nt::NtStatus::CANCELLED)).unwrap();
//! ticket.complete(nt::NtStatus::SUCCESS); // no such method: unmark first
//! # }
//! ```
//!
//! Equivalent to: `WdfRequestMarkCancelable[Ex]`, `WdfRequestUnmarkCancelable`,
//! `EvtRequestCancel`, `EvtIoCanceledOnQueue`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nt::NtStatus;

use super::{Event, IoContext, Queue};
use crate::invoke;
use crate::observe::CallbackKind;
use crate::request::{Request, RequestError};
use crate::verifier::{self, rules};

/// A driver-owned request the framework holds while it is cancelable.
#[must_use = "unmark the request to complete it; otherwise only its cancel routine can"]
pub struct CancelableRequest {
    id: u64,
    queue: Arc<Queue>,
}

impl CancelableRequest {
    /// The request's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The queue that owns the request.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Takes the request back. `Err(STATUS_CANCELLED)` if the cancel path claimed it first: its
    /// cancel routine runs (or ran) and completes it. Equivalent to: `WdfRequestUnmarkCancelable`.
    pub fn unmark(self) -> Result<Request, NtStatus> {
        let mut st = self.queue.state.lock();
        match st.cancelable.iter().position(|(r, _)| r.id() == self.id) {
            Some(pos) => {
                let (req, _routine) = st.cancelable.swap_remove(pos);
                drop(st);
                // If an IRP cancel is racing, its routine finds nothing in the list and returns.
                req.irp().clear_cancel_routine();
                Ok(req)
            }
            None => Err(NtStatus::CANCELLED),
        }
    }
}

impl fmt::Debug for CancelableRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelableRequest")
            .field("id", &self.id)
            .field("queue", &self.queue.name())
            .finish()
    }
}

impl Request {
    /// Makes the request cancelable; `on_cancel` (`EvtRequestCancel`) receives it if the sender
    /// cancels it (or a purge does) before [`CancelableRequest::unmark`]. If the request is already
    /// cancelled, the routine is scheduled at once: it runs after the current callback returns, or
    /// synchronously when called outside any callback. Equivalent to: `WdfRequestMarkCancelable`.
    ///
    /// Err only for misuse (a request the driver does not own, or one not from a queue):
    /// `STATUS_INVALID_DEVICE_REQUEST`.
    pub fn mark_cancelable(
        self,
        on_cancel: impl FnOnce(&mut IoContext<'_, '_>, Request) + Send + 'static,
    ) -> Result<CancelableRequest, RequestError> {
        self.mark(Box::new(on_cancel), false)
    }

    /// Like [`Request::mark_cancelable`], but if the request is already cancelled (or a purge is
    /// in progress) the routine is not scheduled: `Err(STATUS_CANCELLED)` gives the request back
    /// and the driver must complete it. Equivalent to: `WdfRequestMarkCancelableEx`.
    pub fn mark_cancelable_ex(
        self,
        on_cancel: impl FnOnce(&mut IoContext<'_, '_>, Request) + Send + 'static,
    ) -> Result<CancelableRequest, RequestError> {
        self.mark(Box::new(on_cancel), true)
    }

    fn mark(
        self,
        routine: super::CancelRoutine,
        ex: bool,
    ) -> Result<CancelableRequest, RequestError> {
        if !self.driver_owned {
            verifier::report(
                &rules::REQUEST_MISUSE,
                format_args!(
                    "mark_cancelable on request {} which the driver does not own",
                    self.id()
                ),
            );
            return Err(RequestError {
                status: NtStatus::INVALID_DEVICE_REQUEST,
                request: self,
            });
        }
        let queue = self.queue().clone();
        let id = self.id();
        let mut st = queue.state.lock();
        let weak = Arc::downgrade(&queue);
        let installed = !st.purging
            && self
                .irp()
                .set_cancel_routine(Box::new(move || {
                    if let Some(q) = weak.upgrade() {
                        q.cancel_driver_owned(id);
                    }
                }))
                .is_ok();
        if installed {
            st.cancelable.push((self, routine));
            return Ok(CancelableRequest {
                id,
                queue: queue.clone(),
            });
        }
        if ex {
            drop(st);
            return Err(RequestError {
                status: NtStatus::CANCELLED,
                request: self,
            });
        }
        st.cancelled.push_back((self, routine));
        queue.update_fast(&st);
        drop(st);
        let _ = queue.dispatch_events(Event::Internal);
        Ok(CancelableRequest { id, queue })
    }
}

impl Queue {
    /// The IRP cancel routine of a cancelable driver-owned request: moves it to the cancelled
    /// list, where the dispatch loop calls the driver's routine.
    fn cancel_driver_owned(self: &Arc<Self>, id: u64) {
        {
            let mut st = self.state.lock();
            let Some(pos) = st.cancelable.iter().position(|(r, _)| r.id() == id) else {
                return;
            };
            let entry = st.cancelable.swap_remove(pos);
            st.cancelled.push_back(entry);
            self.update_fast(&st);
        }
        let _ = self.dispatch_events(Event::Internal);
    }

    /// Moves every cancelable driver-owned request to the cancelled list (purge).
    pub(super) fn cancel_all_cancelable(st: &mut super::QueueState) {
        for (req, routine) in st.cancelable.drain(..) {
            req.irp().clear_cancel_routine();
            st.cancelled.push_back((req, routine));
        }
    }

    /// The IRP cancel routine of a queued request: if it is still queued it leaves the queue and
    /// is completed with `STATUS_CANCELLED`, or, if it was presented before and the queue has
    /// `EvtIoCanceledOnQueue`, given back to the driver through that callback. If a dispatcher
    /// took it first, nothing happens.
    pub(super) fn cancel_pending(self: &Arc<Self>, id: u64) {
        let req = {
            let mut st = self.state.lock();
            let Some(pos) = st.pending.iter().position(|r| r.id() == id) else {
                return;
            };
            let req = st.pending.remove(pos).expect("position is in range");
            let req = self.route_cancelled(&mut st, req);
            if req.is_none() {
                self.update_fast(&st);
            }
            req
        };
        if let Some(r) = req {
            r.complete_internal(NtStatus::CANCELLED);
        }
        // The queue may have become empty (a drain or purge waiting on it) or the request may
        // be waiting for EvtIoCanceledOnQueue: let the loop look.
        let _ = self.dispatch_events(Event::Internal);
    }

    /// Takes every queued request out for cancellation (purge, stop-and-purge, removal), under
    /// the object lock so that no state callback can fire while they are still queued. Those
    /// that were presented before go to `EvtIoCanceledOnQueue` if the queue has it (they count
    /// as driver-owned again); the rest are returned for the caller to complete with
    /// `STATUS_CANCELLED` once the lock is released.
    pub(super) fn take_pending_for_cancel(&self, st: &mut super::QueueState) -> Vec<Request> {
        let mut complete = Vec::new();
        for req in std::mem::take(&mut st.pending) {
            req.irp().clear_cancel_routine();
            complete.extend(self.route_cancelled(st, req));
        }
        self.update_fast(st);
        complete
    }

    /// A queued request being cancelled, just taken out of the pending list: counted, then
    /// given back to the driver through `EvtIoCanceledOnQueue` if it was presented before and
    /// the queue has that callback (driver-owned again; `None`), or returned for the caller to
    /// complete with `STATUS_CANCELLED`.
    fn route_cancelled(&self, st: &mut super::QueueState, mut req: Request) -> Option<Request> {
        self.counters
            .cancelled_queued
            .fetch_add(1, Ordering::Relaxed);
        if req.presented && self.config.canceled_on_queue.is_some() {
            req.driver_owned = true;
            st.driver_io_count += 1;
            st.canceled_on_queue.push_back(req);
            None
        } else {
            Some(req)
        }
    }

    pub(super) fn invoke_canceled_on_queue(self: &Arc<Self>, req: Request) {
        let Some(h) = self.config.canceled_on_queue.as_ref() else {
            req.complete(NtStatus::CANCELLED);
            return;
        };
        let lock = self.resolved.serialized().then_some(&self.lock);
        let id = Some(req.id());
        invoke::run(
            lock,
            CallbackKind::IoCanceledOnQueue,
            self.name(),
            &self.health,
            id,
            |token| h(&mut IoContext { queue: self, token }, req),
        );
    }
}
