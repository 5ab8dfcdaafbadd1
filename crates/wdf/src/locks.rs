//! Framework locks for drivers: a spin lock and a wait lock.
//!
//! Both wrap the data they protect (wdfkit's improvement on `WDFSPINLOCK` / `WDFWAITLOCK`, which
//! protect data only by convention).
//!
//! ```
//! use wdf::locks::{SpinLock, WaitLock};
//! use std::time::Duration;
//! let spin = SpinLock::new(0u32);
//! *spin.lock() += 1; // raises to DISPATCH_LEVEL while held
//! let wait = WaitLock::new(Vec::<u8>::new());
//! wait.acquire(None).unwrap().push(1);
//! let held = wait.acquire(None).unwrap();
//! // Another thread's zero-timeout acquire is a try-lock and times out.
//! std::thread::scope(|s| {
//!     s.spawn(|| assert_eq!(wait.acquire(Some(Duration::ZERO)).unwrap_err(), nt::NtStatus::TIMEOUT));
//! });
//! drop(held);
//! ```
//!
//! Equivalent to: `WdfSpinLockCreate/Acquire/Release`, `WdfWaitLockCreate/Acquire/Release`.

use std::fmt;
use std::time::Duration;

use nt::NtStatus;
use nt::sync::{LockGuard, PassiveMutex, RawPassiveMutex};

use crate::queue::passive_ddi;

/// A spin lock around data: acquiring raises to DISPATCH_LEVEL; the guard restores the IRQL.
/// Equivalent to: `WDFSPINLOCK`.
pub type SpinLock<T> = nt::sync::SpinLock<T>;

/// A wait lock around data: waiters sleep; usable at PASSIVE_LEVEL, or at any level with a zero
/// timeout (a try-lock). Equivalent to: `WDFWAITLOCK`.
pub struct WaitLock<T> {
    inner: PassiveMutex<T>,
}

impl<T> WaitLock<T> {
    /// A free wait lock around `data`. Equivalent to: `WdfWaitLockCreate`.
    pub const fn new(data: T) -> Self {
        WaitLock {
            inner: PassiveMutex::named("WaitLock", data),
        }
    }

    /// Acquires the lock. `None` waits without limit, `Some(d)` at most `d`; both need
    /// PASSIVE_LEVEL (else `STATUS_INVALID_DEVICE_REQUEST`). `Some(Duration::ZERO)` only tries and
    /// is allowed up to DISPATCH_LEVEL. A timeout is `Err(STATUS_TIMEOUT)`.
    ///
    /// Deviation: WDF returns `STATUS_TIMEOUT`, a success-class code that callers must compare
    /// explicitly; wdfkit returns it as an error so it cannot be mistaken for success.
    /// Equivalent to: `WdfWaitLockAcquire`; dropping the guard is `WdfWaitLockRelease`.
    pub fn acquire(
        &self,
        timeout: Option<Duration>,
    ) -> Result<LockGuard<'_, T, RawPassiveMutex>, NtStatus> {
        match timeout {
            Some(t) if t.is_zero() => self.inner.try_lock().ok_or(NtStatus::TIMEOUT),
            Some(t) => {
                passive_ddi("WdfWaitLockAcquire")?;
                self.inner.try_lock_for(t).ok_or(NtStatus::TIMEOUT)
            }
            None => {
                passive_ddi("WdfWaitLockAcquire")?;
                Ok(self.inner.lock())
            }
        }
    }
}

impl<T> fmt::Debug for WaitLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitLock").finish_non_exhaustive()
    }
}
