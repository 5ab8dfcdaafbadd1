//! Callback locks: the lock the framework holds around a serialized callback.
//!
//! Every device and every queue owns one: a passive mutex if its resolved level is Passive, a
//! spin lock otherwise. With Device scope a queue uses its device's lock. The lock is held only
//! while one callback runs, never for a request's lifetime. Re-acquiring it on the owning
//! thread is fatal (`WDF_RECURSIVE_LOCK`), with or without the verifier.
//!
//! Equivalent to: `FxCallbackLock`, `FxCallbackSpinLock`, `FxCallbackMutexLock`.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use nt::sync::{Lock, LockFlavour, LockGuard, LockStats, RawDynLock};

use crate::verifier::{self, rules};

/// Where a callback lock sits in WDF's lock order: a lock may be acquired only while holding
/// locks of a lower or equal order (`FX_LOCK_ORDER`: driver 0x10 < device 0x20 < queue 0x31).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockOrder {
    /// The driver's lock.
    Driver = 0x10,
    /// A device's lock.
    Device = 0x20,
    /// A queue's own lock.
    Queue = 0x31,
}

thread_local! {
    /// The callback locks this thread holds, innermost last: their order and id. Always kept,
    /// so that "does this thread hold this lock?" (asked on every request arrival and every
    /// acquire) is answered from thread-local memory instead of by reading the lock's word,
    /// a cache line that other processors write when the lock is contended.
    static HELD: RefCell<Vec<(LockOrder, usize)>> = const { RefCell::new(Vec::new()) };
}

/// A callback lock, shared (`Arc`) between a device and the queues that use it.
#[derive(Clone)]
pub struct CallbackLock {
    lock: Arc<Lock<(), RawDynLock>>,
    flavour: LockFlavour,
    order: LockOrder,
    owner: &'static str,
}

impl CallbackLock {
    pub(crate) fn new(flavour: LockFlavour, order: LockOrder, owner: &'static str) -> Self {
        CallbackLock {
            lock: Arc::new(Lock::with_raw(RawDynLock::new(flavour, owner), ())),
            flavour,
            order,
            owner,
        }
    }

    /// The lock's place in the WDF lock order.
    pub fn order(&self) -> LockOrder {
        self.order
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.lock) as usize
    }

    /// The lock's flavour: spin (held at DISPATCH_LEVEL) or passive mutex.
    pub fn flavour(&self) -> LockFlavour {
        self.flavour
    }

    /// Whether the calling thread holds this lock. The dispatch loop defers when it does.
    ///
    /// Every acquisition goes through a [`crate::sync::ScopeToken`], which cannot leave its
    /// thread and records itself in a thread-local list until it is dropped, so the answer
    /// comes from that list and touches no shared memory.
    #[inline]
    pub fn is_owned_by_current_thread(&self) -> bool {
        let id = self.id();
        HELD.with(|h| h.borrow().iter().any(|(_, held)| *held == id))
    }

    /// Whether the lock itself says the calling thread owns it (reads the lock's word): the
    /// verifier's cross-check of the thread-local list.
    pub(crate) fn lock_says_owned(&self) -> bool {
        self.lock.is_owned_by_current_thread()
    }

    /// Whether two handles are the same lock.
    pub fn same_as(&self, other: &CallbackLock) -> bool {
        Arc::ptr_eq(&self.lock, &other.lock)
    }

    /// Acquires the lock and records it in the thread's list (the caller must call
    /// [`CallbackLock::note_released`] when it releases it); a re-acquire on the owning thread
    /// is the fatal `WDF_RECURSIVE_LOCK`.
    #[inline]
    pub(crate) fn acquire(&self) -> LockGuard<'_, (), RawDynLock> {
        if self.is_owned_by_current_thread() {
            verifier::report(
                &rules::WDF_RECURSIVE_LOCK,
                format_args!(
                    "the {} callback lock is already held by this thread",
                    self.owner
                ),
            );
        }
        if verifier::enabled() {
            self.check_order();
        }
        let guard = self.lock.lock();
        HELD.with(|h| h.borrow_mut().push((self.order, self.id())));
        guard
    }

    #[cold]
    fn check_order(&self) {
        let worst = HELD.with(|h| h.borrow().iter().map(|(o, _)| *o).max());
        if let Some(held) = worst
            && held > self.order
        {
            verifier::report(
                &rules::LOCK_ORDER,
                format_args!(
                    "acquiring the {} lock ({:?}) while holding a {:?} lock",
                    self.owner, self.order, held
                ),
            );
        }
    }

    /// Forgets this lock in the thread's held list (its guard is being dropped).
    pub(crate) fn note_released(lock_id: usize) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(pos) = h.iter().rposition(|(_, id)| *id == lock_id) {
                h.remove(pos);
            }
        });
    }

    pub(crate) fn lock_id(&self) -> usize {
        self.id()
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
