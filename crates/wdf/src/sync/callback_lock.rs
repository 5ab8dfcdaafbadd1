//! Callback locks: the lock the framework holds around a serialized callback.
//!
//! Every device and every queue owns one: a passive mutex if its resolved level is Passive, a
//! spin lock otherwise. With Device scope a queue uses its device's lock. The lock is held only
//! while one callback runs, never for a request's lifetime. Re-acquiring it on the owning
//! thread is fatal (`WDF_RECURSIVE_LOCK`), with or without the verifier.
//!
//! Equivalent to: `FxCallbackLock`, `FxCallbackSpinLock`, `FxCallbackMutexLock`.

use std::fmt;
use std::sync::Arc;

use nt::sync::{ArcLockGuard, Lock, LockFlavour, LockStats, RawDynLock};

use crate::verifier::{self, rules};

/// A callback lock, shared (`Arc`) between a device and the queues that use it.
#[derive(Clone)]
pub struct CallbackLock {
    lock: Arc<Lock<(), RawDynLock>>,
    flavour: LockFlavour,
    owner: &'static str,
}

impl CallbackLock {
    pub(crate) fn new(flavour: LockFlavour, owner: &'static str) -> Self {
        CallbackLock {
            lock: Arc::new(Lock::with_raw(RawDynLock::new(flavour, owner), ())),
            flavour,
            owner,
        }
    }

    /// The lock's flavour: spin (held at DISPATCH_LEVEL) or passive mutex.
    pub fn flavour(&self) -> LockFlavour {
        self.flavour
    }

    /// Whether the calling thread holds this lock. The dispatch loop defers when it does.
    #[inline]
    pub fn is_owned_by_current_thread(&self) -> bool {
        self.lock.is_owned_by_current_thread()
    }

    /// Whether two handles are the same lock.
    pub fn same_as(&self, other: &CallbackLock) -> bool {
        Arc::ptr_eq(&self.lock, &other.lock)
    }

    /// Acquires the lock; a re-acquire on the owning thread is the fatal `WDF_RECURSIVE_LOCK`.
    #[inline]
    pub(crate) fn acquire(&self) -> ArcLockGuard<(), RawDynLock> {
        if self.lock.is_owned_by_current_thread() {
            verifier::report(
                &rules::WDF_RECURSIVE_LOCK,
                format_args!(
                    "the {} callback lock is already held by this thread",
                    self.owner
                ),
            );
        }
        self.lock.lock_arc()
    }

    pub(crate) fn inner(&self) -> &Arc<Lock<(), RawDynLock>> {
        &self.lock
    }

    /// Hold-time statistics (gathered while the verifier is on).
    pub fn stats(&self) -> LockStats {
        self.lock.stats()
    }
}

impl fmt::Debug for CallbackLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackLock")
            .field("owner", &self.owner)
            .field("flavour", &self.flavour)
            .finish()
    }
}
