//! Running driver code: lock (if the scope says so), IRQL frame, observer events, and panic
//! containment, in one place.

use std::panic::{AssertUnwindSafe, catch_unwind};

use nt::irql::CallbackFrame;

use crate::observe::{self, CallbackKind};
use crate::sync::{CallbackLock, ScopeToken};
use crate::verifier::rules;

/// Runs `f` as callback `kind` of `object`, holding `lock` if given, and lends `f` the token.
/// Returns `None` if `f` panicked (reported as `WDF_CALLBACK_PANICKED`; the lock is released).
#[inline]
pub(crate) fn run<R>(
    lock: Option<&CallbackLock>,
    kind: CallbackKind,
    object: &str,
    request: Option<u64>,
    f: impl FnOnce(Option<&mut ScopeToken>) -> R,
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
        && !l.is_owned_by_current_thread()
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
