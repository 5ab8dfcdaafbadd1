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

#[cold]
fn report_panic(object: &str, callback: &str) {
    nt::verifier::report(
        &rules::CALLBACK_PANICKED,
        format_args!(
            "{callback} of {object} panicked; its request was failed and its lock released"
        ),
    );
}
