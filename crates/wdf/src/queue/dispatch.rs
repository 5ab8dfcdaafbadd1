//! The dispatch loop: how a queue hands requests and notifications to the driver
//! (spec §3.2, §5.5, §5.6).
//!
//! Every event that can make work deliverable runs [`Queue::dispatch_events`]:
//!
//! * **arrival** (from the I/O manager) and **forward**: always run the loop on the arriving
//!   thread, so with no contention the driver's callback runs inline on the sender's thread;
//! * **completion** of a driver-owned request, **requeue**, and internal changes (a cancel, a
//!   cancelable request): run the loop only if no thread is in it already (`dispatching == 0`).
//!   A completion inside a callback therefore never recurses: the thread that is presenting
//!   notices the free slot when the callback returns. A completion outside any loop (a DPC,
//!   another thread) presents the next request on the completing thread.
//!
//! Before entering, two rules defer the pass instead (`FxIoQueue::CanThreadDispatchEventsLocked`):
//!
//! 1. a **Passive**-level queue entered above PASSIVE_LEVEL defers to its work item;
//! 2. a thread that **already owns the queue's callback lock** (it forwarded, or started a queue,
//!    from inside a serialized callback) defers to the queue's DPC (dispatch-level queue) or
//!    work item (passive-level queue).
//!
//! A deferred new request is appended to the pending list first, so order is kept. Deferral
//! objects are queued at most once (`Dpc::insert` / `WorkItem::enqueue` refuse a second insert),
//! and each deferral is counted ([`super::QueueStats`]).
//!
//! One pass, in order (spec §5.5): cancel routines of cancelled driver-owned requests;
//! `EvtIoCanceledOnQueue`; the stop-complete callback (no scope lock) once nothing is
//! driver-owned; the purge/drain-complete callback (scope lock) once nothing is queued or
//! driver-owned; power notifications; then, if the queue dispatches: ready notification for
//! manual queues, or presentation within the sequential / parallel limits.
//!
//! The queue's object lock (`state`) is never held while driver code runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use nt::NtStatus;
use nt::irql::{self, Irql};
use nt::sync::LockGuard;

use super::fast::Shards;
use super::{Deferral, DispatchType, IoContext, Queue, QueueState};
use crate::invoke;
use crate::observe::CallbackKind;
use crate::request::{Request, RequestType};

/// What happened to the queue.
pub(crate) enum Event {
    /// A new request from the I/O manager.
    Arrival(Request),
    /// A request forwarded from another queue; refused (returned) if not accepting.
    Forward(Request),
    /// A driver-owned request (this id) was completed or left the queue.
    Completed(u64),
    /// A request requeued to the head.
    Requeue(Request),
    /// Something changed that the loop may need to act on, if no thread is in it.
    Internal,
    /// A full pass (a deferred runner, a start, a state change).
    Kick,
}

pub(crate) type StateGuard<'a> = LockGuard<'a, QueueState, nt::sync::RawSpinLock>;

impl Queue {
    /// Runs one dispatch pass for `event` (see the module docs). Returns the request back only
    /// for a refused forward.
    pub(crate) fn dispatch_events(self: &Arc<Self>, event: Event) -> Result<(), Request> {
        // The caller's own IRQL, before the object lock raises it.
        let caller_irql = irql::current();
        let event = match event {
            Event::Arrival(r) if self.fast_eligible() => match self.try_fast(r, caller_irql) {
                None => return Ok(()),
                Some(r) => Event::Arrival(r),
            },
            e => e,
        };
        let mut st = self.state.lock();
        let mut new = None;
        match event {
            Event::Arrival(r) => {
                self.shards
                    .get(Shards::mine())
                    .arrived
                    .fetch_add(1, Ordering::Relaxed);
                if !st.accepting {
                    drop(st);
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    r.complete_internal(NtStatus::INVALID_DEVICE_STATE);
                    return Ok(());
                }
                new = Some(r);
            }
            Event::Forward(r) => {
                if !st.accepting {
                    return Err(r);
                }
                self.shards
                    .get(Shards::mine())
                    .arrived
                    .fetch_add(1, Ordering::Relaxed);
                new = Some(r);
            }
            Event::Completed(id) => {
                st.driver_io_count -= 1;
                st.power.note_gone(id);
                if self.looping_total(&st) > 0 {
                    return Ok(()); // the thread in the loop will notice
                }
            }
            Event::Requeue(mut r) => {
                match r.shard.take() {
                    Some(s) => {
                        self.shards.get(s).owned.fetch_sub(1, Ordering::SeqCst);
                    }
                    None => st.driver_io_count -= 1,
                }
                if st.purging {
                    // A purge is in progress: the requeue becomes a cancellation (spec §5.9).
                    drop(st);
                    r.complete_internal(NtStatus::CANCELLED);
                    st = self.state.lock();
                } else {
                    self.insert_pending(&mut st, r, true);
                }
                if self.looping_total(&st) > 0 {
                    return Ok(());
                }
            }
            Event::Internal => {
                if self.looping_total(&st) > 0 {
                    return Ok(());
                }
            }
            Event::Kick => {}
        }

        // Deferral rule 1: a passive queue entered above PASSIVE_LEVEL.
        if self.resolved.passive_callbacks && caller_irql > Irql::Passive {
            self.counters.deferred_irql.fetch_add(1, Ordering::Relaxed);
            return self.defer(st, new);
        }
        // Deferral rule 2: this thread already owns the queue's callback lock.
        if self.lock.is_owned_by_current_thread() {
            self.counters.deferred_lock.fetch_add(1, Ordering::Relaxed);
            return self.defer(st, new);
        }

        st.dispatching += 1;
        loop {
            // 1. Cancel routines of cancelled driver-owned requests.
            if !st.power.notifying()
                && let Some((req, routine)) = st.cancelled.pop_front()
            {
                drop(st);
                self.invoke_cancel(req, routine);
                st = self.state.lock();
                continue;
            }
            // 2. EvtIoCanceledOnQueue.
            if !st.power.notifying()
                && let Some(req) = st.canceled_on_queue.pop_front()
            {
                drop(st);
                self.invoke_canceled_on_queue(req);
                st = self.state.lock();
                continue;
            }
            // 3. Stop complete: nothing driver-owned, no other thread in the loop. Not serialized.
            if st.stop_complete.is_some()
                && self.looping_total(&st) == 1
                && self.owned_total(&st) == 0
            {
                let cb = st.stop_complete.take().expect("checked");
                st.purging = false;
                drop(st);
                self.invoke_state_callback(cb, false);
                st = self.state.lock();
                continue;
            }
            // 4. Purge / drain complete: nothing queued or driver-owned. Serialized.
            if st.purge_complete.is_some()
                && self.looping_total(&st) == 1
                && self.owned_total(&st) == 0
                && st.pending.is_empty()
                && new.is_none()
            {
                let cb = st.purge_complete.take().expect("checked");
                st.purging = false;
                drop(st);
                self.invoke_state_callback(cb, true);
                st = self.state.lock();
                continue;
            }
            // 6. Power transitions: EvtIoStop / EvtIoResume notifications.
            let (dispatching, owned) = (self.looping_total(&st), self.owned_total(&st));
            if let Some(work) = st.power.next_work(dispatching, owned) {
                drop(st);
                self.run_power_work(work);
                st = self.state.lock();
                continue;
            }
            // 8, 9. Powered off or stopped: keep requests queued.
            if !st.dispatching_enabled || !st.power.is_on() {
                break;
            }
            // 10. Manual queue: ready notification on the empty→non-empty edge.
            if self.config.dispatch_type == DispatchType::Manual {
                if let Some(n) = new.take() {
                    self.insert_pending(&mut st, n, false);
                }
                if st.became_non_empty
                    && !st.pending.is_empty()
                    && let Some(h) = st.ready_notify.clone()
                {
                    st.became_non_empty = false;
                    drop(st);
                    self.invoke_ready_notify(&h);
                    st = self.state.lock();
                    continue;
                }
                break;
            }
            // 11, 12. Sequential and parallel limits.
            match self.config.dispatch_type {
                DispatchType::Sequential if self.owned_total(&st) > 0 => break,
                DispatchType::Parallel
                    if self
                        .config
                        .parallel_limit
                        .is_some_and(|l| self.owned_total(&st) >= l as usize) =>
                {
                    break;
                }
                _ => {}
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
            st.power.note_presented(&req, self.tracks_owned());
            drop(st);
            self.present(req);
            st = self.state.lock();
        }
        if let Some(n) = new.take() {
            self.insert_pending(&mut st, n, false);
        }
        st.dispatching -= 1;
        self.update_fast(&st);
        Ok(())
    }

    /// The fast path (see [`super::fast`]): present `r` without the object lock if the queue is
    /// in its fast state and no deferral rule applies. Gives the request back otherwise.
    #[inline]
    fn try_fast(self: &Arc<Self>, mut r: Request, caller_irql: Irql) -> Option<Request> {
        if !self.fast.load(Ordering::Relaxed)
            || (self.resolved.passive_callbacks && caller_irql > Irql::Passive)
            || self.lock.is_owned_by_current_thread()
        {
            return Some(r);
        }
        let s = Shards::mine();
        let sh = self.shards.get(s);
        sh.owned.fetch_add(1, Ordering::SeqCst);
        sh.looping.fetch_add(1, Ordering::SeqCst);
        if !self.fast.load(Ordering::SeqCst) {
            sh.owned.fetch_sub(1, Ordering::SeqCst);
            sh.looping.fetch_sub(1, Ordering::SeqCst);
            // While counted, this thread looked like one inside the loop, so a completion or
            // cancel may have left its work to it: run the guarded pass it was promised.
            let _ = self.dispatch_events(Event::Internal);
            return Some(r);
        }
        sh.arrived.fetch_add(1, Ordering::Relaxed);
        r.shard = Some(s);
        self.present(r);
        sh.looping.fetch_sub(1, Ordering::SeqCst);
        if !self.fast.load(Ordering::SeqCst) {
            let _ = self.dispatch_events(Event::Internal);
        }
        None
    }

    /// Queues `new` (if any) and posts the deferred runner; at most one is queued at a time.
    fn defer(
        self: &Arc<Self>,
        mut st: StateGuard<'_>,
        new: Option<Request>,
    ) -> Result<(), Request> {
        if let Some(n) = new {
            self.insert_pending(&mut st, n, false);
        }
        self.update_fast(&st);
        drop(st);
        match &self.deferral {
            Deferral::Dpc(d) => {
                d.insert();
            }
            Deferral::WorkItem(w) => {
                w.enqueue();
            }
        }
        Ok(())
    }

    /// The deferred runner (a DPC or work item): one ordinary dispatch pass.
    pub(super) fn run_deferred(self: &Arc<Self>) {
        let _ = self.dispatch_events(Event::Kick);
    }

    /// Appends (or, for requeue, prepends) a request to the pending list and makes it
    /// cancelable there. An already-cancelled request is completed with `STATUS_CANCELLED`.
    pub(super) fn insert_pending(self: &Arc<Self>, st: &mut QueueState, req: Request, front: bool) {
        let weak = Arc::downgrade(self);
        let id = req.id();
        let routine = Box::new(move || {
            if let Some(q) = weak.upgrade() {
                q.cancel_pending(id);
            }
        });
        if req.irp().set_cancel_routine(routine).is_err() {
            self.counters
                .cancelled_queued
                .fetch_add(1, Ordering::Relaxed);
            if req.presented && self.config.canceled_on_queue.is_some() {
                // Cancelled on its way back into the queue after it was presented: the driver
                // hears of it through EvtIoCanceledOnQueue (spec §5.10).
                let mut req = req;
                req.driver_owned = true;
                st.driver_io_count += 1;
                st.canceled_on_queue.push_back(req);
                self.update_fast(st);
            } else {
                // Completing the IRP wakes its client; it calls nothing back into this queue.
                req.complete_internal(NtStatus::CANCELLED);
            }
            return;
        }
        if st.pending.is_empty() {
            st.became_non_empty = true;
        }
        if front {
            st.pending.push_front(req);
        } else {
            st.pending.push_back(req);
        }
        self.update_fast(st);
    }

    /// Presents one request to the driver (spec §5.6): typed handler, else `EvtIoDefault`, else
    /// `STATUS_INVALID_DEVICE_REQUEST`; zero-length reads and writes are completed with success
    /// unless the queue allows them.
    fn present(self: &Arc<Self>, mut req: Request) {
        req.driver_owned = true;
        req.presented = true;
        self.shards
            .get(Shards::mine())
            .presented
            .fetch_add(1, Ordering::Relaxed);
        if self.is_zero_length(&req) {
            req.complete(NtStatus::SUCCESS);
            return;
        }
        if self.health.failed() {
            // The device failed (a callback panicked under PanicPolicy::FailDevice): nothing
            // more reaches the driver.
            req.complete(NtStatus::CANCELLED);
            return;
        }
        let lock = self.resolved.serialized().then_some(&self.lock);
        let id = Some(req.id());
        let name = self.name();
        let cfg = &self.config;
        let kind = req.kind();
        match kind {
            RequestType::Read | RequestType::Write => {
                let (handler, cb) = if kind == RequestType::Read {
                    (cfg.read.as_ref(), CallbackKind::IoRead)
                } else {
                    (cfg.write.as_ref(), CallbackKind::IoWrite)
                };
                if let Some(h) = handler {
                    let len = req.parameters().length;
                    invoke::run(lock, cb, name, &self.health, id, |token| {
                        h(&mut IoContext { queue: self, token }, req, len)
                    });
                    return;
                }
            }
            RequestType::DeviceControl | RequestType::InternalDeviceControl => {
                let (handler, cb) = if kind == RequestType::DeviceControl {
                    (cfg.device_control.as_ref(), CallbackKind::IoDeviceControl)
                } else {
                    (
                        cfg.internal_device_control.as_ref(),
                        CallbackKind::IoInternalDeviceControl,
                    )
                };
                if let Some(h) = handler {
                    let p = req.parameters();
                    invoke::run(lock, cb, name, &self.health, id, |token| {
                        h(
                            &mut IoContext { queue: self, token },
                            req,
                            p.output_length,
                            p.input_length,
                            p.ioctl_code,
                        )
                    });
                    return;
                }
            }
            _ => {}
        }
        match &cfg.default {
            Some(h) => {
                invoke::run(
                    lock,
                    CallbackKind::IoDefault,
                    name,
                    &self.health,
                    id,
                    |token| h(&mut IoContext { queue: self, token }, req),
                );
            }
            None => req.complete(NtStatus::INVALID_DEVICE_REQUEST),
        }
    }
}
