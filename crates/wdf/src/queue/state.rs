//! Queue state operations: start, stop, stop-and-purge, purge, drain, their synchronous
//! variants, and ready notification (spec §5.7, §5.8).
//!
//! | Operation | Accepts new | Presents | Queued requests | Driver-owned | Callback fires when | Callback serialized |
//! |---|---|---|---|---|---|---|
//! | `start` | yes | yes | presented | — | — | — |
//! | `stop` | yes | no | kept | untouched | nothing driver-owned | no |
//! | `stop_and_purge` | yes | no | those present now are cancelled | cancelable ones cancelled | nothing driver-owned | no |
//! | `purge` | no | unchanged | all cancelled | cancelable ones cancelled, others awaited | nothing queued or driver-owned | yes |
//! | `drain` | no | unchanged | still presented | awaited | nothing queued or driver-owned | yes |
//!
//! A second outstanding stop-type (or purge-type) callback is the fatal
//! `WDF_QUEUE_FATAL_ERROR`, as in WDF. The synchronous variants need PASSIVE_LEVEL and must not
//! be called from inside one of the queue's own serialized callbacks (the completion could never
//! run); both are refused with `STATUS_INVALID_DEVICE_REQUEST`.
//!
//! Equivalent to: `WdfIoQueueStart`, `WdfIoQueueStop[Synchronously]`,
//! `WdfIoQueueStopAndPurge[Synchronously]`, `WdfIoQueuePurge[Synchronously]`,
//! `WdfIoQueueDrain[Synchronously]`, `WdfIoQueueReadyNotify`.

use std::sync::Arc;

use nt::NtStatus;
use nt::irql::{self, Irql};
use nt::sync::{Event as KEvent, EventKind};

use super::{DispatchType, Event, IoContext, Queue, ReadyNotifyHandler};
use crate::invoke;
use crate::observe::CallbackKind;
use crate::verifier::{self, rules};

/// An `EvtIoQueueState` completion callback (stop, purge or drain finished).
pub type QueueStateCallback = Box<dyn FnOnce(&mut IoContext<'_, '_>) + Send>;

/// What a queue is doing. Equivalent to: `WDF_IO_QUEUE_STATE` from `WdfIoQueueGetState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    /// New requests are accepted.
    pub accepting: bool,
    /// Queued requests are presented (or retrievable).
    pub dispatching: bool,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Requests owned by the driver.
    pub driver_owned: usize,
    /// The queue's device is powered on (always true for queues that are not power-managed).
    pub powered_on: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Stop,
    Purge,
}

impl Queue {
    /// Resumes accepting and presenting requests. Equivalent to: `WdfIoQueueStart`.
    pub fn start(self: &Arc<Self>) {
        {
            let mut st = self.state.lock();
            st.accepting = true;
            st.dispatching_enabled = true;
            st.purging = false;
            if self.config.dispatch_type == DispatchType::Manual && !st.pending.is_empty() {
                st.became_non_empty = true;
            }
            self.update_fast(&st);
        }
        let _ = self.dispatch_events(Event::Kick);
    }

    /// Stops presenting (requests are still accepted and queued); `on_idle` runs, without the
    /// scope lock, once the driver owns no request. Equivalent to: `WdfIoQueueStop`.
    pub fn stop(self: &Arc<Self>, on_idle: Option<QueueStateCallback>) {
        self.change(Which::Stop, on_idle, |_, st| {
            st.dispatching_enabled = false;
            Vec::new()
        });
    }

    /// Like [`Queue::stop`], and cancels the requests queued now and the cancelable
    /// driver-owned ones; until `on_idle` has run (or the queue is restarted) requeues and
    /// mark-cancelables turn into cancellations. Equivalent to: `WdfIoQueueStopAndPurge`.
    pub fn stop_and_purge(self: &Arc<Self>, on_idle: Option<QueueStateCallback>) {
        self.change(Which::Stop, on_idle, |q, st| {
            st.dispatching_enabled = false;
            st.purging = true;
            Queue::cancel_all_cancelable(st);
            q.take_pending_for_cancel(st)
        });
    }

    /// Stops accepting, cancels every queued request and every cancelable driver-owned one;
    /// `on_empty` runs, with the scope lock, when nothing is queued or driver-owned.
    /// Equivalent to: `WdfIoQueuePurge`.
    pub fn purge(self: &Arc<Self>, on_empty: Option<QueueStateCallback>) {
        self.change(Which::Purge, on_empty, |q, st| {
            st.accepting = false;
            st.purging = true;
            Queue::cancel_all_cancelable(st);
            q.take_pending_for_cancel(st)
        });
    }

    /// Stops accepting; queued requests are still presented; `on_empty` runs, with the scope
    /// lock, when nothing is queued or driver-owned. Equivalent to: `WdfIoQueueDrain`.
    pub fn drain(self: &Arc<Self>, on_empty: Option<QueueStateCallback>) {
        self.change(Which::Purge, on_empty, |_, st| {
            st.accepting = false;
            Vec::new()
        });
    }

    /// [`Queue::stop`] and wait for it (PASSIVE_LEVEL). Equivalent to: `WdfIoQueueStopSynchronously`.
    pub fn stop_synchronously(self: &Arc<Self>) -> Result<(), NtStatus> {
        self.synchronously("WdfIoQueueStopSynchronously", |q, cb| q.stop(Some(cb)))
    }

    /// [`Queue::stop_and_purge`] and wait. Equivalent to: `WdfIoQueueStopAndPurgeSynchronously`.
    pub fn stop_and_purge_synchronously(self: &Arc<Self>) -> Result<(), NtStatus> {
        self.synchronously("WdfIoQueueStopAndPurgeSynchronously", |q, cb| {
            q.stop_and_purge(Some(cb))
        })
    }

    /// [`Queue::purge`] and wait. Equivalent to: `WdfIoQueuePurgeSynchronously`.
    pub fn purge_synchronously(self: &Arc<Self>) -> Result<(), NtStatus> {
        self.synchronously("WdfIoQueuePurgeSynchronously", |q, cb| q.purge(Some(cb)))
    }

    /// [`Queue::drain`] and wait. Equivalent to: `WdfIoQueueDrainSynchronously`.
    pub fn drain_synchronously(self: &Arc<Self>) -> Result<(), NtStatus> {
        self.synchronously("WdfIoQueueDrainSynchronously", |q, cb| q.drain(Some(cb)))
    }

    /// Registers (or with `None`, removes) the ready notification of a manual queue: it runs,
    /// with the scope lock, when the queue goes from empty to non-empty, and on start while
    /// non-empty. The driver must drain the queue when notified: arrivals into a non-empty
    /// queue are not notified again. Non-manual queue or a second registration:
    /// `STATUS_INVALID_DEVICE_REQUEST`; removing requires the queue to be stopped
    /// (`STATUS_INVALID_DEVICE_STATE`). Equivalent to: `WdfIoQueueReadyNotify`.
    pub fn ready_notify(
        self: &Arc<Self>,
        handler: Option<impl Fn(&mut IoContext<'_, '_>) + Send + Sync + 'static>,
    ) -> Result<(), NtStatus> {
        if self.config.dispatch_type != DispatchType::Manual {
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        {
            let mut st = self.state.lock();
            match handler {
                Some(h) => {
                    if st.ready_notify.is_some() {
                        return Err(NtStatus::INVALID_DEVICE_REQUEST);
                    }
                    st.ready_notify = Some(Arc::new(h) as ReadyNotifyHandler);
                    st.became_non_empty = !st.pending.is_empty();
                }
                None => {
                    if st.dispatching_enabled {
                        return Err(NtStatus::INVALID_DEVICE_STATE);
                    }
                    st.ready_notify = None;
                    return Ok(());
                }
            }
        }
        let _ = self.dispatch_events(Event::Kick);
        Ok(())
    }

    /// Device removal: stop accepting, cancel every queued request and every cancelable
    /// driver-owned one, without registering a completion callback (the driver may have one
    /// outstanding).
    pub(crate) fn removal_purge(self: &Arc<Self>) {
        let cancelled = {
            let mut st = self.state.lock();
            st.accepting = false;
            st.purging = true;
            Queue::cancel_all_cancelable(&mut st);
            self.take_pending_for_cancel(&mut st)
        };
        for r in cancelled {
            r.complete_internal(NtStatus::CANCELLED);
        }
        let _ = self.dispatch_events(Event::Kick);
    }

    /// The queue's state. Equivalent to: `WdfIoQueueGetState`.
    pub fn status(&self) -> QueueStatus {
        let st = self.state.lock();
        QueueStatus {
            accepting: st.accepting,
            dispatching: st.dispatching_enabled,
            queued: st.pending.len(),
            driver_owned: self.owned_total(&st),
            powered_on: st.power.is_on(),
        }
    }

    fn change(
        self: &Arc<Self>,
        which: Which,
        cb: Option<QueueStateCallback>,
        apply: impl FnOnce(&Arc<Self>, &mut super::QueueState) -> Vec<crate::Request>,
    ) {
        let cancelled = {
            let mut st = self.state.lock();
            let slot = match which {
                Which::Stop => &mut st.stop_complete,
                Which::Purge => &mut st.purge_complete,
            };
            if cb.is_some() && slot.is_some() {
                drop(st);
                verifier::report(
                    &rules::WDF_QUEUE_FATAL_ERROR,
                    format_args!(
                        "queue {}: a second {} completion callback while one is outstanding",
                        self.name(),
                        if which == Which::Stop {
                            "stop"
                        } else {
                            "purge/drain"
                        }
                    ),
                );
                return;
            }
            if cb.is_some() {
                *slot = cb;
            }
            let cancelled = apply(self, &mut st);
            self.update_fast(&st);
            cancelled
        };
        for r in cancelled {
            r.complete_internal(NtStatus::CANCELLED);
        }
        let _ = self.dispatch_events(Event::Kick);
    }

    fn synchronously(
        self: &Arc<Self>,
        ddi: &'static str,
        start: impl FnOnce(&Arc<Self>, QueueStateCallback),
    ) -> Result<(), NtStatus> {
        passive_ddi(ddi)?;
        if self.lock.is_owned_by_current_thread() {
            verifier::report(
                &rules::PASSIVE_DDI_AT_DISPATCH,
                format_args!(
                    "{ddi} called from inside a callback serialized by queue {}'s lock",
                    self.name()
                ),
            );
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        let done = Arc::new(KEvent::new(EventKind::Notification, false));
        let d = done.clone();
        start(self, Box::new(move |_cx| d.set()));
        done.wait();
        Ok(())
    }

    pub(super) fn invoke_state_callback(
        self: &Arc<Self>,
        cb: QueueStateCallback,
        serialized: bool,
    ) {
        let lock = (serialized && self.resolved.serialized()).then_some(&self.lock);
        invoke::run(
            lock,
            CallbackKind::IoQueueState,
            self.name(),
            &self.health,
            None,
            |token| cb(&mut IoContext { queue: self, token }),
        );
    }

    pub(super) fn invoke_ready_notify(self: &Arc<Self>, h: &ReadyNotifyHandler) {
        let lock = self.resolved.serialized().then_some(&self.lock);
        invoke::run(
            lock,
            CallbackKind::IoQueueState,
            self.name(),
            &self.health,
            None,
            |token| h(&mut IoContext { queue: self, token }),
        );
    }
}

/// The check every PASSIVE-only DDI makes: above PASSIVE_LEVEL it is refused with
/// `STATUS_INVALID_DEVICE_REQUEST` (and reported while the verifier is on).
pub(crate) fn passive_ddi(ddi: &str) -> Result<(), NtStatus> {
    let now = irql::current();
    if now > Irql::Passive {
        verifier::report(
            &rules::PASSIVE_DDI_AT_DISPATCH,
            format_args!("{ddi} called at {now}"),
        );
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    Ok(())
}
