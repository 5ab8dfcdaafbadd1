//! Device power-down and power-up as power-managed queues see them: `EvtIoStop` and
//! `EvtIoResume` (spec §5.11).
//!
//! [`Device::power_down`](crate::Device::power_down) stops every power-managed queue from
//! presenting, then, for each request the driver owns, calls the queue's `EvtIoStop` with a
//! [`StopNotice`]. The driver answers on its request: complete it, or
//! [`Request::stop_acknowledge_requeue`] puts it back at the head of its queue, and
//! [`Request::stop_acknowledge`] keeps it (the driver later gets `EvtIoResume`). A queue without `EvtIoStop`
//! waits until its driver-owned requests complete. Power-down returns when every queue is
//! quiet. [`Device::power_up`](crate::Device::power_up) calls `EvtIoResume` for the kept
//! requests and restarts presentation. Cancel routines and `EvtIoCanceledOnQueue` are held back
//! while stop/resume notifications are being delivered.
//!
//! Deviation: the framework does not hold non-cancelable driver-owned requests (the driver
//! does, by value), so `EvtIoStop` receives the request's id and flags, not the request.
//!
//! Equivalent to: `EvtIoStop`, `EvtIoResume`, `WdfRequestStopAcknowledge`,
//! `WDF_REQUEST_STOP_ACTION_FLAGS`.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use nt::NtStatus;
use nt::sync::{Event as KEvent, EventKind};

use crate::invoke;
use crate::observe::CallbackKind;
use crate::queue::{Event, IoContext, Queue};
use crate::request::{Request, RequestError};

/// Why `EvtIoStop` is called. Equivalent to: `WDF_REQUEST_STOP_ACTION_FLAGS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAction {
    /// The device is powering down and will come back (`WdfRequestStopActionSuspend`).
    Suspend,
    /// The device is being removed (`WdfRequestStopActionPurge`).
    Purge,
}

/// One `EvtIoStop` notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopNotice {
    /// The driver-owned request concerned.
    pub request: u64,
    /// Suspend or purge.
    pub action: StopAction,
    /// The request is marked cancelable (`WdfRequestStopRequestCancelable`): unmark it first.
    pub cancelable: bool,
}

/// `EvtIoStop`.
pub type IoStopHandler = Box<dyn Fn(&mut IoContext<'_, '_>, StopNotice) + Send + Sync>;
/// `EvtIoResume`: the id of a request the driver kept across the power-down.
pub type IoResumeHandler = Box<dyn Fn(&mut IoContext<'_, '_>, u64) + Send + Sync>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PowerState {
    #[default]
    On,
    GoingDown,
    Off,
    GoingUp,
}

/// Power bookkeeping of one queue (inside the queue's object lock).
#[derive(Default)]
pub(crate) struct QueuePower {
    state: PowerState,
    /// Ids of driver-owned requests (tracked only for queues with `EvtIoStop`).
    owned: HashSet<u64>,
    to_stop: VecDeque<u64>,
    kept: HashSet<u64>,
    to_resume: VecDeque<u64>,
    action: Option<StopAction>,
    done: Option<Arc<KEvent>>,
}

/// Work the dispatch loop does for a power transition.
pub(crate) enum PowerWork {
    Stop(StopNotice),
    Resume(u64),
    Signal(Arc<KEvent>),
}

impl QueuePower {
    pub(crate) fn is_on(&self) -> bool {
        self.state == PowerState::On
    }

    /// Stop/resume notifications are being delivered: cancel notifications wait.
    pub(crate) fn notifying(&self) -> bool {
        !self.to_stop.is_empty() || !self.to_resume.is_empty()
    }

    #[inline]
    pub(crate) fn note_presented(&mut self, req: &Request, track: bool) {
        if track {
            self.owned.insert(req.id());
        }
    }

    #[inline]
    pub(crate) fn note_gone(&mut self, id: u64) {
        if !self.owned.is_empty() {
            self.owned.remove(&id);
            self.kept.remove(&id);
        }
    }

    /// The next thing the loop must do for a transition, if any.
    pub(crate) fn next_work(
        &mut self,
        dispatching: usize,
        driver_io_count: usize,
    ) -> Option<PowerWork> {
        match self.state {
            PowerState::GoingDown => {
                if let Some(id) = self.to_stop.pop_front() {
                    return Some(PowerWork::Stop(StopNotice {
                        request: id,
                        action: self.action.unwrap_or(StopAction::Suspend),
                        cancelable: false,
                    }));
                }
                if dispatching == 1 && driver_io_count == self.kept.len() {
                    self.state = PowerState::Off;
                    return self.done.take().map(PowerWork::Signal);
                }
                None
            }
            PowerState::GoingUp => {
                if let Some(id) = self.to_resume.pop_front() {
                    return Some(PowerWork::Resume(id));
                }
                self.state = PowerState::On;
                self.done.take().map(PowerWork::Signal)
            }
            PowerState::On | PowerState::Off => None,
        }
    }
}

impl Queue {
    pub(crate) fn tracks_owned(&self) -> bool {
        self.config.power_managed && self.config.stop.is_some()
    }

    /// Starts a power-down of this queue; the returned event is set when it is quiet.
    pub(crate) fn power_down_begin(self: &Arc<Self>, action: StopAction) -> Option<Arc<KEvent>> {
        if !self.config.power_managed {
            return None;
        }
        let done = Arc::new(KEvent::new(EventKind::Notification, false));
        {
            let mut st = self.state.lock();
            if st.power.state != PowerState::On {
                return None;
            }
            let p = &mut st.power;
            p.state = PowerState::GoingDown;
            p.action = Some(action);
            p.done = Some(done.clone());
            if self.config.stop.is_some() {
                let mut ids: Vec<u64> = p
                    .owned
                    .iter()
                    .copied()
                    .filter(|id| !p.kept.contains(id))
                    .collect();
                ids.sort_unstable();
                p.to_stop = ids.into();
            }
            self.update_fast(&st);
        }
        let _ = self.dispatch_events(Event::Kick);
        Some(done)
    }

    /// Starts a power-up of this queue; the returned event is set when presentation resumed.
    pub(crate) fn power_up_begin(self: &Arc<Self>) -> Option<Arc<KEvent>> {
        let done = Arc::new(KEvent::new(EventKind::Notification, false));
        {
            let mut st = self.state.lock();
            if st.power.state != PowerState::Off {
                return None;
            }
            let p = &mut st.power;
            p.state = PowerState::GoingUp;
            let mut ids: Vec<u64> = p.kept.drain().collect();
            ids.sort_unstable();
            p.to_resume = if self.config.resume.is_some() {
                ids.into()
            } else {
                VecDeque::new()
            };
            p.done = Some(done.clone());
            self.update_fast(&st);
        }
        let _ = self.dispatch_events(Event::Kick);
        Some(done)
    }

    pub(crate) fn run_power_work(self: &Arc<Self>, work: PowerWork) {
        let lock = self.resolved.serialized().then_some(&self.lock);
        match work {
            PowerWork::Stop(mut notice) => {
                notice.cancelable = self
                    .state
                    .lock()
                    .cancelable
                    .iter()
                    .any(|(r, _)| r.id() == notice.request);
                if let Some(h) = &self.config.stop {
                    invoke::run(
                        lock,
                        CallbackKind::IoStop,
                        self.name(),
                        &self.health,
                        Some(notice.request),
                        |token| h(&mut IoContext { queue: self, token }, notice),
                    );
                }
            }
            PowerWork::Resume(id) => {
                if let Some(h) = &self.config.resume {
                    invoke::run(
                        lock,
                        CallbackKind::IoResume,
                        self.name(),
                        &self.health,
                        Some(id),
                        |token| h(&mut IoContext { queue: self, token }, id),
                    );
                }
            }
            PowerWork::Signal(ev) => ev.set(),
        }
    }
}

impl Request {
    /// Answers `EvtIoStop` by keeping the request across the power-down: the driver still owns
    /// it and gets `EvtIoResume` after power-up. Equivalent to:
    /// `WdfRequestStopAcknowledge(Request, FALSE)`.
    pub fn stop_acknowledge(&self) {
        if !self.driver_owned {
            return;
        }
        let queue = self.queue().clone();
        queue.state.lock().power.kept.insert(self.id());
        let _ = queue.dispatch_events(Event::Internal);
    }

    /// Answers `EvtIoStop` by putting the request back at the head of its queue; it is presented
    /// again after power-up. Equivalent to: `WdfRequestStopAcknowledge(Request, TRUE)`.
    pub fn stop_acknowledge_requeue(mut self) -> Result<(), RequestError> {
        if !self.driver_owned {
            return Err(RequestError {
                status: NtStatus::INVALID_DEVICE_REQUEST,
                request: self,
            });
        }
        let queue = self.queue().clone();
        self.driver_owned = false;
        queue.state.lock().power.note_gone(self.id());
        let _ = queue.dispatch_events(Event::Requeue(self));
        Ok(())
    }
}
