//! Running driver code: lock (if the scope says so), IRQL frame, observer events, and panic
//! containment, in one place.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, Weak};

use nt::irql::CallbackFrame;

use crate::observe::{self, CallbackKind};
use crate::sync::{CallbackLock, ScopeToken};
use crate::verifier::rules;

/// What happens to a device after one of its callbacks panics.
///
/// Either way the panic is contained: the request the callback held is completed with
/// `STATUS_INTERNAL_ERROR`, the panic is reported (`WDF_CALLBACK_PANICKED`, naming the callback
/// and the object), and the callback lock is released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PanicPolicy {
    /// The device keeps serving requests.
    #[default]
    KeepServing,
    /// The device is marked failed: its queued requests are cancelled and every new request
    /// fails with `STATUS_NO_SUCH_DEVICE`, as when a UMDF host process goes down.
    FailDevice,
}

/// A device's health, shared by the device and everything that runs its callbacks.
pub(crate) struct Health {
    policy: PanicPolicy,
    failed: AtomicBool,
    device: OnceLock<Weak<crate::Device>>,
}

impl Health {
    pub(crate) fn new(policy: PanicPolicy) -> Self {
        Health {
            policy,
            failed: AtomicBool::new(false),
            device: OnceLock::new(),
        }
    }

    pub(crate) fn attach(&self, device: Weak<crate::Device>) {
        let _ = self.device.set(device);
    }

    /// Whether the device was marked failed.
    #[inline]
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    #[cold]
    fn callback_panicked(&self) {
        if self.policy != PanicPolicy::FailDevice || self.failed.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(device) = self.device.get().and_then(Weak::upgrade) else {
            return;
        };
        // The panicking thread may be inside a queue's loop: cancel the queued requests from a
        // worker thread instead of re-entering the loop here.
        if let Some(kernel) = device.kernel() {
            kernel.queue_work("fail device", move || device.fail_queues());
        }
    }
}

/// Runs `f` as callback `kind` of `object`, holding `lock` if given, and lends `f` the token.
/// Returns `None` if `f` panicked (reported as `WDF_CALLBACK_PANICKED`; the lock is released;
/// the device's [`PanicPolicy`] applies).
#[inline]
pub(crate) fn run<R>(
    lock: Option<&CallbackLock>,
    kind: CallbackKind,
    object: &str,
    health: &Health,
    request: Option<u64>,
    f: impl FnOnce(Option<&mut ScopeToken<'_>>) -> R,
) -> Option<R> {
    // Acquire before entering the frame and release after leaving it: a spin-flavour lock raises
    // to DISPATCH_LEVEL, and the callback must return at the level it was entered at.
    let mut token = lock.map(ScopeToken::acquire);
    let locked = token.is_some();
    let observed = observe::on();
    let held_before = nt::verifier::enabled().then(nt::thread::locks_held_count);
    let result = {
        let _frame = CallbackFrame::enter(kind.wdf_name());
        if observed {
            observe::emit(true, kind, object, request, locked);
        }
        let r = catch_unwind(AssertUnwindSafe(|| f(token.as_mut())));
        if observed {
            observe::emit(false, kind, object, request, locked);
        }
        r
    };
    if let Some(before) = held_before {
        check_locks_after(lock, before, object, kind);
    }
    drop(token);
    match result {
        Ok(r) => Some(r),
        Err(_) => {
            report_panic(object, kind.wdf_name());
            health.callback_panicked();
            None
        }
    }
}

/// Runs a callback that takes no lock (cleanup callbacks); contains a panic.
pub(crate) fn contained(kind: &str, name: &str, callback: &'static str, f: impl FnOnce()) {
    let r = {
        let _frame = CallbackFrame::enter(callback);
        catch_unwind(AssertUnwindSafe(f))
    };
    if r.is_err() {
        report_panic(&format!("{kind} {name}"), callback);
    }
}

/// The verifier's checks when a callback returns: it must not keep a lock it took, and must not
/// have released the callback lock the framework holds for it.
#[cold]
fn check_locks_after(lock: Option<&CallbackLock>, before: usize, object: &str, kind: CallbackKind) {
    if let Some(l) = lock
        && !l.lock_says_owned()
    {
        nt::verifier::report(
            &rules::CALLBACK_LOCK_RELEASED_BY_DRIVER,
            format_args!("{kind} of {object} released its callback lock"),
        );
    }
    let after = nt::thread::locks_held_count();
    if after > before {
        nt::verifier::report(
            &rules::CALLBACK_RETURNED_HOLDING_LOCK,
            format_args!(
                "{kind} of {object} returned holding {} more lock(s): {}",
                after - before,
                nt::thread::locks_held()[before..].join(", ")
            ),
        );
    }
}

#[cold]
fn report_panic(object: &str, callback: &str) {
    nt::verifier::report(
        &rules::CALLBACK_PANICKED,
        format_args!(
            "{callback} of {object} panicked; its request was failed and its lock released"
        ),
    );
}
