//! [`RawDynLock`]: a raw lock whose flavour (spin or passive mutex) is chosen at run time.
//!
//! The framework picks a callback lock's flavour from an object's resolved execution level, so
//! the choice is data, not a type parameter.

use super::raw::{LockStats, RawLock, RawPassiveMutex, RawSpinLock};

/// Which flavour a [`RawDynLock`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockFlavour {
    /// A spin lock: held at DISPATCH_LEVEL.
    Spin,
    /// A passive mutex: held at PASSIVE_LEVEL, waiters sleep.
    Passive,
}

/// A spin lock or a passive mutex, decided when it is created.
///
/// ```
/// use nt::irql::{self, Irql};
/// use nt::sync::{LockFlavour, RawDynLock, RawLock};
/// let l = RawDynLock::new(LockFlavour::Spin, "callback lock");
/// l.acquire();
/// assert_eq!(irql::current(), Irql::Dispatch);
/// l.release();
/// ```
#[derive(Debug)]
pub enum RawDynLock {
    /// Spin flavour.
    Spin(RawSpinLock),
    /// Passive-mutex flavour.
    Passive(RawPassiveMutex),
}

impl RawDynLock {
    /// A free lock of `flavour` named `name`.
    pub const fn new(flavour: LockFlavour, name: &'static str) -> Self {
        match flavour {
            LockFlavour::Spin => RawDynLock::Spin(RawSpinLock::new(name)),
            LockFlavour::Passive => RawDynLock::Passive(RawPassiveMutex::new(name)),
        }
    }

    /// The flavour.
    pub fn flavour(&self) -> LockFlavour {
        match self {
            RawDynLock::Spin(_) => LockFlavour::Spin,
            RawDynLock::Passive(_) => LockFlavour::Passive,
        }
    }
}

// SAFETY: both variants uphold the `RawLock` contract, and a value never changes variant.
unsafe impl RawLock for RawDynLock {
    #[inline]
    fn acquire(&self) {
        match self {
            RawDynLock::Spin(l) => l.acquire(),
            RawDynLock::Passive(l) => l.acquire(),
        }
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        match self {
            RawDynLock::Spin(l) => l.try_acquire(),
            RawDynLock::Passive(l) => l.try_acquire(),
        }
    }

    #[inline]
    fn release(&self) {
        match self {
            RawDynLock::Spin(l) => l.release(),
            RawDynLock::Passive(l) => l.release(),
        }
    }

    #[inline]
    fn is_owned_by_current_thread(&self) -> bool {
        match self {
            RawDynLock::Spin(l) => l.is_owned_by_current_thread(),
            RawDynLock::Passive(l) => l.is_owned_by_current_thread(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            RawDynLock::Spin(l) => l.name(),
            RawDynLock::Passive(l) => l.name(),
        }
    }

    fn stats(&self) -> LockStats {
        match self {
            RawDynLock::Spin(l) => l.stats(),
            RawDynLock::Passive(l) => l.stats(),
        }
    }
}
