//! [`LockedBy`]: data protected by a lock that does not contain it.
//!
//! The owner is a data-less [`Lock<(), R>`](super::Lock) shared through an `Arc`; holding its
//! guard is the proof that unlocks the data. The compiler checks that *some* guard is held (the
//! access borrows it), and a pointer comparison checks that it is *the right* lock.
//!
//! ```
//! use nt::sync::{Lock, LockedBy, RawSpinLock};
//! use std::sync::Arc;
//! let owner = Arc::new(Lock::with_raw(RawSpinLock::new("device lock"), ()));
//! let counter = LockedBy::new(&owner, 0u64);
//! {
//!     let mut guard = owner.lock_arc();
//!     *counter.access_mut(&mut guard) += 1;
//! }
//! let guard = owner.lock_arc();
//! assert_eq!(*counter.access(&guard), 1);
//! ```

use std::cell::UnsafeCell;
use std::fmt;
use std::sync::Arc;

use super::lock::{ArcLockGuard, Lock, LockGuard};
use super::raw::RawLock;

mod sealed {
    pub trait Sealed {}
}

/// A guard of a data-less lock: proof that the calling thread holds it. Sealed: only `nt`'s
/// guards can be proofs.
pub trait LockProof<R: RawLock>: sealed::Sealed {
    /// The lock this guard holds.
    fn held(&self) -> *const Lock<(), R>;
}

impl<R: RawLock> sealed::Sealed for LockGuard<'_, (), R> {}
impl<R: RawLock> LockProof<R> for LockGuard<'_, (), R> {
    fn held(&self) -> *const Lock<(), R> {
        self.lock_ref()
    }
}

impl<R: RawLock> sealed::Sealed for ArcLockGuard<(), R> {}
impl<R: RawLock> LockProof<R> for ArcLockGuard<(), R> {
    fn held(&self) -> *const Lock<(), R> {
        Arc::as_ptr(self.lock_ref())
    }
}

/// Data of type `T` reachable only with a guard of its owner lock.
///
/// # Invariants
/// `data` is accessed only through `access`/`access_mut`, which require a live guard of exactly
/// `owner`; while such a guard exists on one thread, no other thread can hold one.
pub struct LockedBy<T: ?Sized, R: RawLock> {
    owner: Arc<Lock<(), R>>,
    data: UnsafeCell<T>,
}

// SAFETY: access is serialized by the owner lock (see the invariant), so sharing needs `T: Send`
// only, as for a mutex.
unsafe impl<T: ?Sized + Send, R: RawLock> Sync for LockedBy<T, R> {}
// SAFETY: moving the container moves `T`, which is `Send`.
unsafe impl<T: ?Sized + Send, R: RawLock> Send for LockedBy<T, R> {}

impl<T, R: RawLock> LockedBy<T, R> {
    /// Protects `data` with `owner`.
    pub fn new(owner: &Arc<Lock<(), R>>, data: T) -> Self {
        LockedBy {
            owner: owner.clone(),
            data: UnsafeCell::new(data),
        }
    }

    /// Consumes the container and returns the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized, R: RawLock> LockedBy<T, R> {
    /// Whether `guard` is a guard of this container's owner.
    pub fn is_owned_by(&self, guard: &impl LockProof<R>) -> bool {
        std::ptr::eq(guard.held(), Arc::as_ptr(&self.owner))
    }

    /// The owner lock.
    pub fn owner(&self) -> &Arc<Lock<(), R>> {
        &self.owner
    }

    /// Shared access, proven by a guard of the owner.
    ///
    /// # Panics
    /// If `guard` belongs to a different lock ("mismatched owners").
    pub fn access<'a>(&'a self, guard: &'a impl LockProof<R>) -> &'a T {
        assert!(
            self.is_owned_by(guard),
            "LockedBy: mismatched owners ({})",
            self.owner.name()
        );
        // SAFETY: the guard proves this thread holds `owner` (the type invariant of `LockGuard` and `ArcLockGuard`; `LockProof` is sealed), and
        // it is borrowed for `'a`, so the lock stays held while the reference lives.
        unsafe { &*self.data.get() }
    }

    /// Exclusive access, proven by a mutably borrowed guard of the owner.
    ///
    /// # Panics
    /// If `guard` belongs to a different lock ("mismatched owners").
    pub fn access_mut<'a>(&'a self, guard: &'a mut impl LockProof<R>) -> &'a mut T {
        assert!(
            self.is_owned_by(guard),
            "LockedBy: mismatched owners ({})",
            self.owner.name()
        );
        // SAFETY: as in `access`; the guard is borrowed mutably for `'a`, and a thread holds at
        // most one guard of a lock (re-acquiring is a fatal report), so no other reference to
        // `data` exists while this one lives.
        unsafe { &mut *self.data.get() }
    }
}

impl<T: ?Sized, R: RawLock> fmt::Debug for LockedBy<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedBy")
            .field("owner", &self.owner.name())
            .finish_non_exhaustive()
    }
}
