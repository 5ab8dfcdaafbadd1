//! Kernel events: notification (stays signalled, releases every waiter) and synchronization
//! (auto-resets, releases one waiter).
//!
//! Waiting with a non-zero timeout above PASSIVE_LEVEL is a verifier violation
//! ([`rules::BLOCKING_WAIT_ABOVE_PASSIVE`]); a zero-timeout poll is allowed at any level.
//!
//! Equivalent to: `KEVENT`, `KeSetEvent`, `KeResetEvent`, `KeWaitForSingleObject`.
//!
//! ```
//! use nt::sync::{Event, EventKind};
//! use std::sync::Arc;
//! let ev = Arc::new(Event::new(EventKind::Notification, false));
//! let ev2 = ev.clone();
//! std::thread::spawn(move || ev2.set());
//! ev.wait();
//! assert!(ev.is_signaled());
//! ```

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::irql::{self, Irql};
use crate::verifier::rules;

/// Which kind of event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Stays signalled until reset; wakes all waiters. Equivalent to: `NotificationEvent`.
    Notification,
    /// Wakes one waiter and resets itself. Equivalent to: `SynchronizationEvent`.
    Synchronization,
}

/// A kernel event.
#[derive(Debug)]
pub struct Event {
    kind: EventKind,
    signaled: Mutex<bool>,
    cv: Condvar,
}

impl Event {
    /// A new event of `kind`, initially signalled or not.
    pub const fn new(kind: EventKind, signaled: bool) -> Self {
        Event {
            kind,
            signaled: Mutex::new(signaled),
            cv: Condvar::new(),
        }
    }

    /// Signals the event. Equivalent to: `KeSetEvent`.
    pub fn set(&self) {
        let mut s = self.signaled.lock();
        *s = true;
        match self.kind {
            EventKind::Notification => {
                self.cv.notify_all();
            }
            EventKind::Synchronization => {
                self.cv.notify_one();
            }
        }
    }

    /// Clears the event. Equivalent to: `KeClearEvent`.
    pub fn reset(&self) {
        *self.signaled.lock() = false;
    }

    /// Whether the event is signalled. Equivalent to: `KeReadStateEvent`.
    pub fn is_signaled(&self) -> bool {
        *self.signaled.lock()
    }

    /// Blocks until the event is signalled (PASSIVE_LEVEL only).
    pub fn wait(&self) {
        irql::check_at_most(
            Irql::Passive,
            &rules::BLOCKING_WAIT_ABOVE_PASSIVE,
            "Event::wait",
        );
        let mut s = self.signaled.lock();
        while !*s {
            self.cv.wait(&mut s);
        }
        self.consume(&mut s);
    }

    /// Waits up to `timeout`; returns whether the event was signalled. A zero timeout polls and
    /// is allowed at any IRQL.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if !timeout.is_zero() {
            irql::check_at_most(
                Irql::Passive,
                &rules::BLOCKING_WAIT_ABOVE_PASSIVE,
                "Event::wait_timeout",
            );
        }
        // A timeout too long to be a deadline (`Duration::MAX`) means "no timeout".
        let deadline = std::time::Instant::now().checked_add(timeout);
        let mut s = self.signaled.lock();
        while !*s {
            match deadline {
                Some(deadline) => {
                    if self.cv.wait_until(&mut s, deadline).timed_out() {
                        break;
                    }
                }
                None => self.cv.wait(&mut s),
            }
        }
        let was = *s;
        self.consume(&mut s);
        was
    }

    fn consume(&self, s: &mut bool) {
        if self.kind == EventKind::Synchronization {
            *s = false;
        }
    }
}
