//! Interrupt request levels, tracked per thread.
//!
//! Every thread starts at [`Irql::Passive`]. Code raises the level with [`raise`], which returns an
//! [`IrqlGuard`] that restores the previous level when dropped; the guard is `!Send`, so a raised
//! level can never "leave" its thread. Callback runners wrap driver code in a [`CallbackFrame`],
//! which reports (and repairs) a callback that returns at a different level than it was entered
//! with, and forbids lowering below the entry level inside it.
//!
//! Equivalent to: `KIRQL`, `KeGetCurrentIrql`, `KeRaiseIrql`, `KeLowerIrql`.
//!
//! ```
//! use nt::irql::{self, Irql};
//! assert_eq!(irql::current(), Irql::Passive);
//! {
//!     let _g = irql::raise(Irql::Dispatch);
//!     assert_eq!(irql::current(), Irql::Dispatch);
//! }
//! assert_eq!(irql::current(), Irql::Passive);
//! ```

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use crate::verifier::{self, rules};

/// An interrupt request level.
///
/// Ordered: `Passive < Apc < Dispatch < Device(0) < Device(1) < ...`.
/// Equivalent to: `PASSIVE_LEVEL`, `APC_LEVEL`, `DISPATCH_LEVEL`, and a device's DIRQL.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Irql {
    /// `PASSIVE_LEVEL`: threads may block and wait.
    Passive,
    /// `APC_LEVEL`: APCs are masked.
    Apc,
    /// `DISPATCH_LEVEL`: DPCs and spin-lock holders; must not block.
    Dispatch,
    /// A device interrupt level (DIRQL); the number orders device levels among themselves.
    Device(u8),
}

impl Irql {
    /// The numeric level as NT numbers it (`Device(n)` is `3 + n`, saturating).
    pub const fn level(self) -> u8 {
        match self {
            Irql::Passive => 0,
            Irql::Apc => 1,
            Irql::Dispatch => 2,
            Irql::Device(n) => n.saturating_add(3),
        }
    }

    /// The inverse of [`Irql::level`].
    pub const fn from_level(level: u8) -> Irql {
        match level {
            0 => Irql::Passive,
            1 => Irql::Apc,
            2 => Irql::Dispatch,
            n => Irql::Device(n - 3),
        }
    }
}

impl fmt::Display for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Irql::Passive => f.write_str("PASSIVE_LEVEL"),
            Irql::Apc => f.write_str("APC_LEVEL"),
            Irql::Dispatch => f.write_str("DISPATCH_LEVEL"),
            Irql::Device(n) => write!(f, "DIRQL({n})"),
        }
    }
}

impl fmt::Debug for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

thread_local! {
    static CURRENT: Cell<u8> = const { Cell::new(0) };
    /// The lowest level code may lower to: the entry level of the innermost callback frame.
    static FLOOR: Cell<u8> = const { Cell::new(0) };
    /// When the thread rose to DISPATCH_LEVEL or above (verifier clock, ns), if the verifier was on.
    static DISPATCH_SINCE: Cell<Option<u64>> = const { Cell::new(None) };
    /// Set on DPC processor threads, whose stretches are checked per DPC and per batch instead.
    static WATCHDOG_EXEMPT: Cell<bool> = const { Cell::new(false) };
    /// When the thread rose to DISPATCH_LEVEL, for time accounting (see [`set_accounting`]).
    static ACCOUNT_SINCE: Cell<Option<u64>> = const { Cell::new(None) };
    /// Nanoseconds this thread spent at DISPATCH_LEVEL or above while accounting was on.
    static AT_DISPATCH_NS: Cell<u64> = const { Cell::new(0) };
}

static ACCOUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns per-thread accounting of time spent at DISPATCH_LEVEL or above on or off (off by
/// default: it reads the clock at every transition). See [`time_at_dispatch`].
pub fn set_accounting(on: bool) {
    ACCOUNTING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Time the calling thread has spent at DISPATCH_LEVEL or above while accounting was on,
/// including the current stretch if it is at DISPATCH_LEVEL now.
///
/// ```
/// use nt::irql::{self, Irql};
/// irql::set_accounting(true);
/// let before = irql::time_at_dispatch();
/// {
///     let _g = irql::raise(Irql::Dispatch);
///     std::thread::sleep(std::time::Duration::from_millis(2));
/// }
/// assert!(irql::time_at_dispatch() - before >= std::time::Duration::from_millis(2));
/// irql::set_accounting(false);
/// ```
pub fn time_at_dispatch() -> std::time::Duration {
    let mut total = AT_DISPATCH_NS.with(Cell::get);
    if let Some(since) = ACCOUNT_SINCE.with(Cell::get) {
        total += crate::SystemClock.now_ns().saturating_sub(since);
    }
    std::time::Duration::from_nanos(total)
}

#[cold]
fn account(rising: bool) {
    let now = crate::SystemClock.now_ns();
    if rising {
        ACCOUNT_SINCE.with(|c| c.set(Some(now)));
    } else if let Some(since) = ACCOUNT_SINCE.with(Cell::take) {
        AT_DISPATCH_NS.with(|c| c.set(c.get() + now.saturating_sub(since)));
    }
}

/// The calling thread's current IRQL. Equivalent to: `KeGetCurrentIrql`.
#[inline]
pub fn current() -> Irql {
    Irql::from_level(CURRENT.with(Cell::get))
}

/// Sets the level, tracking continuous stretches at DISPATCH_LEVEL and above for the DPC watchdog.
#[inline]
fn set(new: Irql) {
    let old = CURRENT.with(|c| c.replace(new.level()));
    let (was_high, is_high) = (old >= Irql::Dispatch.level(), new >= Irql::Dispatch);
    if was_high != is_high {
        if verifier::enabled() {
            track_dispatch_stretch(is_high);
        }
        if ACCOUNTING.load(std::sync::atomic::Ordering::Relaxed) {
            account(is_high);
        }
    }
}

#[cold]
fn track_dispatch_stretch(rising: bool) {
    if WATCHDOG_EXEMPT.with(Cell::get) {
        return;
    }
    let now = verifier::now_ns();
    if rising {
        DISPATCH_SINCE.with(|c| c.set(Some(now)));
    } else if let Some(since) = DISPATCH_SINCE.with(Cell::take) {
        let stretch = now.saturating_sub(since);
        verifier::check_single_budget(stretch, "continuous stretch at DISPATCH_LEVEL");
    }
}

/// Sets the level without a guard; for locks that save the previous level in themselves.
#[inline]
pub(crate) fn set_raw(new: Irql) {
    if current() != new {
        set(new);
    }
}

/// Marks the calling thread as a DPC processor (see [`crate::executors`]): its time at
/// DISPATCH_LEVEL is checked per DPC and per batch by the processor loop itself.
pub(crate) fn exempt_from_stretch_watchdog() {
    WATCHDOG_EXEMPT.with(|c| c.set(true));
}

/// Raises the calling thread's IRQL to `to` and returns a guard that restores the previous level.
///
/// Raising to a level *below* the current one is a verifier violation
/// (`IRQL_NOT_GREATER_OR_EQUAL`); the level is left unchanged in that case.
/// Equivalent to: `KeRaiseIrql`; dropping the guard is `KeLowerIrql(OldIrql)`.
#[inline]
pub fn raise(to: Irql) -> IrqlGuard {
    let previous = current();
    if to < previous {
        verifier::report(
            &rules::IRQL_NOT_GREATER_OR_EQUAL,
            format_args!("raise to {to} while at {previous}"),
        );
        return IrqlGuard {
            previous,
            raised_to: previous,
            _not_send: PhantomData,
        };
    }
    if to != previous {
        set(to);
    }
    IrqlGuard {
        previous,
        raised_to: to,
        _not_send: PhantomData,
    }
}

/// Raises to DISPATCH_LEVEL unless already there or above. Equivalent to: `KeRaiseIrqlToDpcLevel`.
#[inline]
pub fn raise_to_dispatch() -> IrqlGuard {
    let previous = current();
    if previous >= Irql::Dispatch {
        IrqlGuard {
            previous,
            raised_to: previous,
            _not_send: PhantomData,
        }
    } else {
        set(Irql::Dispatch);
        IrqlGuard {
            previous,
            raised_to: Irql::Dispatch,
            _not_send: PhantomData,
        }
    }
}

/// Reports a violation of `rule` if the calling thread is above `max`; returns whether it was within.
///
/// This is how a "callable at IRQL <= X" contract is checked.
#[inline]
pub fn check_at_most(max: Irql, rule: &'static verifier::Rule, what: &str) -> bool {
    let now = current();
    if now <= max {
        true
    } else {
        verifier::report(rule, format_args!("{what} at {now}; allowed at most {max}"));
        false
    }
}

/// Restores the IRQL that was current before [`raise`]; `!Send`, so it stays on its thread.
///
/// # Invariants
/// `raised_to` is the level this guard set (or found) on its thread; `previous` the one it restores.
#[must_use = "the previous IRQL is restored as soon as the guard is dropped"]
pub struct IrqlGuard {
    previous: Irql,
    raised_to: Irql,
    _not_send: PhantomData<*const ()>,
}

impl IrqlGuard {
    /// The level that dropping this guard restores.
    pub fn previous(&self) -> Irql {
        self.previous
    }
}

impl fmt::Debug for IrqlGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IrqlGuard")
            .field("previous", &self.previous)
            .field("raised_to", &self.raised_to)
            .finish()
    }
}

impl Drop for IrqlGuard {
    #[inline]
    fn drop(&mut self) {
        let now = current();
        if now != self.raised_to {
            verifier::report(
                &rules::IRQL_NOT_RESTORED,
                format_args!(
                    "IRQL is {now} where a guard raised it to {}; restoring {}",
                    self.raised_to, self.previous
                ),
            );
        }
        if self.previous.level() < FLOOR.with(Cell::get) {
            verifier::report(
                &rules::IRQL_BELOW_ENTRY,
                format_args!(
                    "lowering to {} below the callback's entry level {}",
                    self.previous,
                    Irql::from_level(FLOOR.with(Cell::get))
                ),
            );
        }
        if now != self.previous {
            set(self.previous);
        }
    }
}

/// Brackets a callback: remembers the entry IRQL, forbids lowering below it, and on exit reports
/// (and repairs) a callback that returns at a different level.
///
/// Equivalent to: the enhanced verifier's callback wrapper (`WDF_VERIFIER_IRQL_MISMATCH`).
///
/// ```
/// use nt::irql::{self, CallbackFrame, Irql};
/// let frame = CallbackFrame::enter("EvtIoRead");
/// assert_eq!(frame.entry(), Irql::Passive);
/// drop(frame); // returned at the entry level: nothing to report
/// ```
#[must_use = "the frame checks the IRQL when it is dropped"]
pub struct CallbackFrame {
    entry: Irql,
    outer_floor: u8,
    name: &'static str,
    _not_send: PhantomData<*const ()>,
}

impl CallbackFrame {
    /// Enters a callback named `name` at the current IRQL.
    #[inline]
    pub fn enter(name: &'static str) -> CallbackFrame {
        let entry = current();
        let outer_floor = FLOOR.with(|f| f.replace(entry.level()));
        CallbackFrame {
            entry,
            outer_floor,
            name,
            _not_send: PhantomData,
        }
    }

    /// The IRQL the callback was entered at.
    pub fn entry(&self) -> Irql {
        self.entry
    }
}

impl fmt::Debug for CallbackFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackFrame")
            .field("name", &self.name)
            .field("entry", &self.entry)
            .finish()
    }
}

impl Drop for CallbackFrame {
    #[inline]
    fn drop(&mut self) {
        let now = current();
        if now != self.entry {
            verifier::report(
                &rules::CALLBACK_IRQL_MISMATCH,
                format_args!(
                    "{} entered at {} and returned at {now}",
                    self.name, self.entry
                ),
            );
            set(self.entry);
        }
        FLOOR.with(|f| f.set(self.outer_floor));
    }
}

/// Runs `f` with the thread at exactly `irql` for its duration (raising if needed), inside a
/// [`CallbackFrame`]. Used by executors that deliver callbacks at a fixed level.
pub fn run_at<R>(irql: Irql, name: &'static str, f: impl FnOnce() -> R) -> R {
    let _raise = raise(irql);
    let _frame = CallbackFrame::enter(name);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_round_trip() {
        assert!(Irql::Passive < Irql::Apc);
        assert!(Irql::Apc < Irql::Dispatch);
        assert!(Irql::Dispatch < Irql::Device(0));
        assert!(Irql::Device(1) < Irql::Device(5));
        for l in 0..=30u8 {
            assert_eq!(Irql::from_level(l).level(), l);
        }
    }
}
