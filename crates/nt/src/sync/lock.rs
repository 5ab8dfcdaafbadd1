//! [`Lock`]: data behind a raw lock, reachable only through a guard.
//!
//! One generic type, two flavours: [`SpinLock`] (DISPATCH_LEVEL while held) and [`PassiveMutex`]
//! (PASSIVE_LEVEL only, blocks). The guard is `!Send`: it releases the lock, and for a spin lock
//! restores the IRQL, on the thread that acquired it.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::raw::{LockStats, RawLock, RawPassiveMutex, RawSpinLock};

/// Data of type `T` protected by the raw lock `R`.
///
/// # Invariants
/// `data` is accessed only through a [`LockGuard`], and a guard exists only while its thread
/// holds `raw`.
pub struct Lock<T: ?Sized, R: RawLock> {
    raw: R,
    data: UnsafeCell<T>,
}

/// A spin lock around data: acquiring raises to DISPATCH_LEVEL; the guard gives `&mut T`.
///
/// Equivalent to: a `KSPIN_LOCK` (or `WDFSPINLOCK`) and the fields it guards.
///
/// ```
/// use nt::irql::{self, Irql};
/// use nt::sync::SpinLock;
/// let stats = SpinLock::new(0u64);
/// {
///     let mut g = stats.lock();
///     assert_eq!(irql::current(), Irql::Dispatch);
///     *g += 1;
/// }
/// assert_eq!(irql::current(), Irql::Passive);
/// assert_eq!(*stats.lock(), 1);
/// ```
pub type SpinLock<T> = Lock<T, RawSpinLock>;

/// A blocking mutex around data, for PASSIVE_LEVEL code.
///
/// Equivalent to: a `WDFWAITLOCK` / `FAST_MUTEX` and the fields it guards.
///
/// ```
/// use nt::sync::PassiveMutex;
/// let list = PassiveMutex::new(Vec::new());
/// list.lock().push(1);
/// assert_eq!(list.lock().len(), 1);
/// ```
pub type PassiveMutex<T> = Lock<T, RawPassiveMutex>;

// SAFETY: the lock hands `&mut T` to one thread at a time (the `RawLock` contract), so sharing it
// needs `T: Send`, as for `std::sync::Mutex`.
unsafe impl<T: ?Sized + Send, R: RawLock> Sync for Lock<T, R> {}
// SAFETY: moving the lock moves the data; `T: Send` makes that sound.
unsafe impl<T: ?Sized + Send, R: RawLock> Send for Lock<T, R> {}

impl<T> SpinLock<T> {
    /// A free spin lock around `data`.
    pub const fn new(data: T) -> Self {
        Self::with_raw(RawSpinLock::new("SpinLock"), data)
    }

    /// A free spin lock around `data`, named for verifier reports.
    pub const fn named(name: &'static str, data: T) -> Self {
        Self::with_raw(RawSpinLock::new(name), data)
    }
}

impl<T> PassiveMutex<T> {
    /// A free passive mutex around `data`.
    pub const fn new(data: T) -> Self {
        Self::with_raw(RawPassiveMutex::new("PassiveMutex"), data)
    }

    /// A free passive mutex around `data`, named for verifier reports.
    pub const fn named(name: &'static str, data: T) -> Self {
        Self::with_raw(RawPassiveMutex::new(name), data)
    }
}

impl<T: ?Sized> PassiveMutex<T> {
    /// Acquires the mutex, waiting at most `timeout`; a zero timeout only tries.
    /// Equivalent to: `KeWaitForSingleObject` on a mutex with a timeout.
    pub fn try_lock_for(
        &self,
        timeout: std::time::Duration,
    ) -> Option<LockGuard<'_, T, RawPassiveMutex>> {
        if self.raw.try_acquire_for(timeout) {
            // INVARIANT: the raw lock is held by this thread until the guard drops.
            Some(LockGuard {
                lock: self,
                _not_send: PhantomData,
            })
        } else {
            None
        }
    }
}

impl<T, R: RawLock> Lock<T, R> {
    /// Wraps `data` with an already constructed raw lock.
    pub const fn with_raw(raw: R, data: T) -> Self {
        Lock {
            raw,
            data: UnsafeCell::new(data),
        }
    }

    /// Consumes the lock and returns the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized, R: RawLock> Lock<T, R> {
    /// Acquires the lock (raising to DISPATCH_LEVEL for a spin lock, blocking for a mutex).
    ///
    /// Re-acquiring on the owning thread is a fatal verifier report (a panic), never a deadlock.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_, T, R> {
        self.raw.acquire();
        // INVARIANT: the raw lock is held by this thread until the guard drops.
        LockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Acquires the lock through an `Arc`, returning a guard that keeps the lock alive and has no
    /// lifetime (the shape callback tokens need).
    #[inline]
    pub fn lock_arc(self: &Arc<Self>) -> ArcLockGuard<T, R> {
        self.raw.acquire();
        // INVARIANT: the raw lock is held by this thread until the guard drops.
        ArcLockGuard {
            lock: self.clone(),
            _not_send: PhantomData,
        }
    }

    /// Acquires the lock if it is free, without waiting.
    #[inline]
    pub fn try_lock(&self) -> Option<LockGuard<'_, T, R>> {
        if self.raw.try_acquire() {
            // INVARIANT: `try_acquire` succeeded, so this thread holds the raw lock.
            Some(LockGuard {
                lock: self,
                _not_send: PhantomData,
            })
        } else {
            None
        }
    }

    /// Direct access when the caller has the lock exclusively (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Whether the calling thread holds this lock.
    pub fn is_owned_by_current_thread(&self) -> bool {
        self.raw.is_owned_by_current_thread()
    }

    /// Hold-time statistics (gathered while the verifier is on).
    pub fn stats(&self) -> LockStats {
        self.raw.stats()
    }

    /// The lock's name.
    pub fn name(&self) -> &'static str {
        self.raw.name()
    }
}

impl<T: Default, R: RawLock + Default> Default for Lock<T, R> {
    fn default() -> Self {
        Lock {
            raw: R::default(),
            data: UnsafeCell::new(T::default()),
        }
    }
}

impl<T: ?Sized, R: RawLock + fmt::Debug> fmt::Debug for Lock<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

/// Proof that a [`Lock`] is held; releases it on drop, on the acquiring thread (`!Send`).
#[must_use = "if unused the lock is released immediately"]
#[clippy::has_significant_drop]
pub struct LockGuard<'a, T: ?Sized, R: RawLock> {
    lock: &'a Lock<T, R>,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing `&LockGuard` across threads only gives out `&T`, which needs `T: Sync`.
unsafe impl<T: ?Sized + Sync, R: RawLock> Sync for LockGuard<'_, T, R> {}

impl<'a, T: ?Sized, R: RawLock> LockGuard<'a, T, R> {
    /// The lock this guard holds (identity for [`super::LockedBy`]).
    pub(crate) fn lock_ref(&self) -> &'a Lock<T, R> {
        self.lock
    }
}

impl<T: ?Sized, R: RawLock> Deref for LockGuard<'_, T, R> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: by the type invariant this thread holds the lock, so no other thread has access
        // to `data` until the guard is dropped.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized, R: RawLock> DerefMut for LockGuard<'_, T, R> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only live reference through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized, R: RawLock> Drop for LockGuard<'_, T, R> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw.release();
    }
}

impl<T: ?Sized + fmt::Debug, R: RawLock> fmt::Debug for LockGuard<'_, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Like [`LockGuard`], but owning an `Arc` of its lock instead of borrowing it; `!Send`.
#[must_use = "if unused the lock is released immediately"]
#[clippy::has_significant_drop]
pub struct ArcLockGuard<T: ?Sized, R: RawLock> {
    lock: Arc<Lock<T, R>>,
    _not_send: PhantomData<*const ()>,
}

impl<T: ?Sized, R: RawLock> ArcLockGuard<T, R> {
    /// The lock this guard holds (identity for [`super::LockedBy`]).
    pub(crate) fn lock_ref(&self) -> &Arc<Lock<T, R>> {
        &self.lock
    }
}

impl<T: ?Sized, R: RawLock> Deref for ArcLockGuard<T, R> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: by the type invariant this thread holds the lock until the guard drops.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized, R: RawLock> DerefMut for ArcLockGuard<T, R> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized, R: RawLock> Drop for ArcLockGuard<T, R> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw.release();
    }
}

impl<T: ?Sized, R: RawLock> fmt::Debug for ArcLockGuard<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArcLockGuard")
            .field("lock", &self.lock.name())
            .finish()
    }
}
