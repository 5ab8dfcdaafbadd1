//! Evidence that a scope lock is held, and data that requires it.
//!
//! A serialized callback receives a [`ScopeToken`] (through
//! [`IoContext::scope`](crate::IoContext::scope)); so does code that calls
//! [`acquire_lock`](crate::Device::acquire_lock). Data declared as [`ScopeLocked<T>`] is
//! reachable only through a token of *its* lock: the compiler checks that a token is held, a
//! pointer comparison checks that it is the right one. A queue with scope None gets no token,
//! so its callbacks cannot touch scope-protected data at all; they must use their own lock
//! (an `nt::sync::SpinLock` in the device context), which is the articles' manual alternative.
//!
//! ```
//! use wdf::{Driver, DeviceInit, ObjectAttributes, SyncScope, ScopeLocked};
//! let kernel = nt::Kernel::builder().processors(1).workers(1).build();
//! let driver = Driver::create(&kernel, ObjectAttributes::default()).unwrap();
//! let mut init = DeviceInit::new("scope-doc");
//! init.attributes(ObjectAttributes::scope(SyncScope::Device));
//! let device = driver.create_device(init).unwrap();
//! let total: ScopeLocked<u64> = device.scope_locked(0);
//! {
//!     let mut token = device.acquire_lock(); // WdfObjectAcquireLock
//!     *total.get(&mut token) += 1;
//! }
//! assert_eq!(*total.get(&mut device.acquire_lock()), 1);
//! ```

use std::fmt;

use nt::NtStatus;
use nt::sync::{LockGuard, LockedBy, RawDynLock};

use super::callback_lock::CallbackLock;

/// Proof that the calling thread holds a particular callback lock; `!Send`, lent to callbacks.
///
/// It borrows the lock (no reference count changes hands per callback), so it cannot outlive
/// the callback it was lent to or the object it was acquired from. A callback cannot swap the
/// token it was lent for another one (and so release its own callback lock early): the lent
/// token's lifetime belongs to the framework.
///
/// ```compile_fail
/// use wdf::{DispatchType, QueueConfig};
/// # fn f(other: std::sync::Arc<wdf::Device>) {
/// let mut cfg = QueueConfig::new(DispatchType::Parallel);
/// cfg.io_read(move |cx, req, _len| {
///     let mut foreign = other.acquire_lock();
///     let lent = cx.scope().unwrap();
///     std::mem::swap(lent, &mut foreign); // does not compile: the lifetimes differ
///     drop(foreign);
///     req.complete(nt::NtStatus::SUCCESS);
/// });
/// # }
/// ```
///
/// Dropping a token obtained from `acquire_lock` releases the lock (`WdfObjectReleaseLock`).
pub struct ScopeToken<'a> {
    guard: LockGuard<'a, (), RawDynLock>,
    /// The lock's id in the thread's list of held callback locks.
    id: usize,
}

impl<'a> ScopeToken<'a> {
    pub(crate) fn acquire(lock: &'a CallbackLock) -> ScopeToken<'a> {
        ScopeToken {
            guard: lock.acquire(),
            id: lock.lock_id(),
        }
    }
}

impl Drop for ScopeToken<'_> {
    fn drop(&mut self) {
        CallbackLock::note_released(self.id);
    }
}

impl fmt::Debug for ScopeToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeToken").finish_non_exhaustive()
    }
}

/// Data protected by a device's or queue's callback lock (its synchronization scope).
pub struct ScopeLocked<T> {
    inner: LockedBy<T, RawDynLock>,
}

impl<T> ScopeLocked<T> {
    pub(crate) fn new(lock: &CallbackLock, value: T) -> Self {
        ScopeLocked {
            inner: LockedBy::new(lock.inner(), value),
        }
    }

    /// The data, for as long as the token is borrowed.
    ///
    /// # Panics
    /// If the token is for a different lock (a programming error, like touching device data from
    /// a Queue-scope callback). Use [`ScopeLocked::try_get`] to get a status instead.
    pub fn get<'a>(&'a self, token: &'a mut ScopeToken<'_>) -> &'a mut T {
        self.inner.access_mut(&mut token.guard)
    }

    /// Like [`ScopeLocked::get`], but a token of the wrong lock gives
    /// `STATUS_INVALID_DEVICE_REQUEST` instead of a panic.
    pub fn try_get<'a>(&'a self, token: &'a mut ScopeToken<'_>) -> Result<&'a mut T, NtStatus> {
        if self.inner.is_owned_by(&token.guard) {
            Ok(self.inner.access_mut(&mut token.guard))
        } else {
            Err(NtStatus::INVALID_DEVICE_REQUEST)
        }
    }

    /// Consumes the container, returning the data.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T> fmt::Debug for ScopeLocked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeLocked").finish_non_exhaustive()
    }
}
