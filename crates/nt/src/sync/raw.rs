//! Raw locks: lock state, owner tracking and IRQL handling, without protected data.
//!
//! [`RawSpinLock`] and [`RawPassiveMutex`] are usable directly as the framework's callback locks
//! and as `WDFSPINLOCK` / `WDFWAITLOCK`-style locks with explicit acquire and release; they
//! protect no data of their own, so a mismatched release is a logic error that the verifier
//! reports ([`rules::RELEASE_BY_NON_OWNER`]) and ignores, never a memory-safety problem.
//! [`crate::sync::Lock`] wraps one of them around data.
//!
//! Both are non-recursive. A thread that acquires a lock it already owns gets a fatal
//! [`rules::RECURSIVE_LOCK_ACQUIRE`] report (a panic naming the lock) instead of a silent
//! deadlock, with or without the verifier.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::Backoff;
use parking_lot::lock_api::{RawMutex as _, RawMutexTimed as _};

use crate::irql::{self, Irql};
use crate::thread;
use crate::verifier::{self, rules};

/// The operations [`crate::sync::Lock`] builds on.
///
/// # Safety
/// Implementations must provide mutual exclusion: once `acquire` returns (or `try_acquire`
/// returns `true`) on a thread, no other `acquire`/`try_acquire` may succeed until that same
/// thread calls `release`; and `release` on a thread that does not own the lock must not
/// release it.
pub unsafe trait RawLock: Send + Sync {
    /// Acquires the lock, waiting as the flavour requires.
    fn acquire(&self);
    /// Acquires the lock if it is free; never waits.
    fn try_acquire(&self) -> bool;
    /// Releases the lock; reported and ignored when the caller is not the owner.
    fn release(&self);
    /// Whether the calling thread owns the lock.
    fn is_owned_by_current_thread(&self) -> bool;
    /// The lock's name, for verifier reports.
    fn name(&self) -> &'static str;
    /// Hold-time statistics (gathered while the verifier is on).
    fn stats(&self) -> LockStats;
}

/// Hold-time and contention statistics of one lock, gathered while the verifier is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Successful acquisitions.
    pub acquisitions: u64,
    /// Acquisitions that found the lock held and had to wait.
    pub contended: u64,
    /// Longest hold.
    pub max_hold: Duration,
    /// Sum of all holds.
    pub total_hold: Duration,
}

/// Owner and timing bookkeeping shared by both flavours.
#[derive(Default)]
struct Ownership {
    owner: AtomicU64,
    /// Acquisition time on the verifier clock plus one, so that 0 can mean "not timed".
    acquired_at_ns: AtomicU64,
    acquisitions: AtomicU64,
    contended: AtomicU64,
    max_hold_ns: AtomicU64,
    total_hold_ns: AtomicU64,
}

impl Ownership {
    const fn new() -> Self {
        Ownership {
            owner: AtomicU64::new(0),
            acquired_at_ns: AtomicU64::new(0),
            acquisitions: AtomicU64::new(0),
            contended: AtomicU64::new(0),
            max_hold_ns: AtomicU64::new(0),
            total_hold_ns: AtomicU64::new(0),
        }
    }

    #[inline]
    fn is_mine(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == thread::current_id()
    }

    /// Call before waiting: a recursive acquire is fatal.
    #[inline]
    fn check_recursion(&self, name: &'static str) {
        if self.is_mine() {
            verifier::report(
                &rules::RECURSIVE_LOCK_ACQUIRE,
                format_args!("{name} is already owned by this thread"),
            );
        }
    }

    #[inline]
    fn acquired(&self, name: &'static str, addr: usize, contended: bool) {
        self.owner.store(thread::current_id(), Ordering::Relaxed);
        if verifier::enabled() {
            self.acquired_slow(name, addr, contended);
        }
    }

    #[cold]
    fn acquired_slow(&self, name: &'static str, addr: usize, contended: bool) {
        self.acquired_at_ns
            .store(verifier::now_ns().saturating_add(1), Ordering::Relaxed);
        self.acquisitions.fetch_add(1, Ordering::Relaxed);
        if contended {
            self.contended.fetch_add(1, Ordering::Relaxed);
        }
        thread::note_acquired(name, addr);
    }

    /// Returns false (after reporting) when the caller is not the owner.
    #[inline]
    fn releasing(&self, name: &'static str, addr: usize) -> bool {
        if !self.is_mine() {
            let owner = self.owner.load(Ordering::Relaxed);
            verifier::report(
                &rules::RELEASE_BY_NON_OWNER,
                format_args!(
                    "{name} released by thread {} while {}",
                    thread::current_id(),
                    if owner == 0 {
                        "not held".to_string()
                    } else {
                        format!("owned by thread {owner}")
                    }
                ),
            );
            return false;
        }
        if verifier::enabled() {
            self.releasing_slow(addr);
        }
        self.owner.store(0, Ordering::Relaxed);
        true
    }

    #[cold]
    fn releasing_slow(&self, addr: usize) {
        let at = self.acquired_at_ns.swap(0, Ordering::Relaxed);
        if at != 0 {
            let held = verifier::now_ns().saturating_sub(at - 1);
            self.total_hold_ns.fetch_add(held, Ordering::Relaxed);
            self.max_hold_ns.fetch_max(held, Ordering::Relaxed);
        }
        thread::note_released(addr);
    }

    fn stats(&self) -> LockStats {
        LockStats {
            acquisitions: self.acquisitions.load(Ordering::Relaxed),
            contended: self.contended.load(Ordering::Relaxed),
            max_hold: Duration::from_nanos(self.max_hold_ns.load(Ordering::Relaxed)),
            total_hold: Duration::from_nanos(self.total_hold_ns.load(Ordering::Relaxed)),
        }
    }
}

/// A spin lock: acquiring raises to DISPATCH_LEVEL and spins; releasing restores the IRQL the
/// acquirer had (saved in the lock, as NT does).
///
/// The wait is a bounded spin followed by yielding the processor (crossbeam's `Backoff`): on a
/// small VM whose vCPUs can be preempted, a pure spin can burn a whole time slice waiting for a
/// holder that is not running.
///
/// Equivalent to: `KSPIN_LOCK` with `KeAcquireSpinLock`/`KeReleaseSpinLock`; `WDFSPINLOCK`.
///
/// ```
/// use nt::irql::{self, Irql};
/// use nt::sync::{RawLock, RawSpinLock};
/// let lock = RawSpinLock::new("example");
/// lock.acquire();
/// assert_eq!(irql::current(), Irql::Dispatch);
/// assert!(lock.is_owned_by_current_thread());
/// lock.release();
/// assert_eq!(irql::current(), Irql::Passive);
/// ```
pub struct RawSpinLock {
    locked: AtomicBool,
    previous_irql: AtomicU8,
    own: Ownership,
    name: &'static str,
}

impl RawSpinLock {
    /// A new, free spin lock named `name` (the name appears in verifier reports).
    pub const fn new(name: &'static str) -> Self {
        RawSpinLock {
            locked: AtomicBool::new(false),
            previous_irql: AtomicU8::new(0),
            own: Ownership::new(),
            name,
        }
    }

    #[inline]
    fn raise(&self) -> Irql {
        let now = irql::current();
        if now > Irql::Dispatch {
            verifier::report(
                &rules::SPIN_LOCK_ABOVE_DISPATCH,
                format_args!("{} acquired at {now}", self.name),
            );
            return now;
        }
        irql::set_raw(Irql::Dispatch);
        now
    }

    fn addr(&self) -> usize {
        self as *const Self as usize
    }
}

impl Default for RawSpinLock {
    fn default() -> Self {
        Self::new("spin lock")
    }
}

// SAFETY: `locked` is taken with an acquire compare-exchange and cleared with a release store
// only by the owner (`Ownership::releasing` refuses non-owners), which gives mutual exclusion.
unsafe impl RawLock for RawSpinLock {
    #[inline]
    fn acquire(&self) {
        self.own.check_recursion(self.name);
        let previous = self.raise();
        let mut contended = false;
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            contended = true;
            let backoff = Backoff::new();
            loop {
                while self.locked.load(Ordering::Relaxed) {
                    backoff.snooze();
                }
                if self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
        }
        self.previous_irql
            .store(previous.level(), Ordering::Relaxed);
        self.own.acquired(self.name, self.addr(), contended);
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        if self.own.is_mine() {
            verifier::report(
                &rules::RECURSIVE_LOCK_ACQUIRE,
                format_args!("{} try-acquired by its owner", self.name),
            );
        }
        let previous = self.raise();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.previous_irql
                .store(previous.level(), Ordering::Relaxed);
            self.own.acquired(self.name, self.addr(), false);
            true
        } else {
            irql::set_raw(previous);
            false
        }
    }

    #[inline]
    fn release(&self) {
        if !self.own.releasing(self.name, self.addr()) {
            return;
        }
        let previous = Irql::from_level(self.previous_irql.load(Ordering::Relaxed));
        self.locked.store(false, Ordering::Release);
        irql::set_raw(previous);
    }

    #[inline]
    fn is_owned_by_current_thread(&self) -> bool {
        self.own.is_mine()
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn stats(&self) -> LockStats {
        self.own.stats()
    }
}

impl fmt::Debug for RawSpinLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSpinLock")
            .field("name", &self.name)
            .field("locked", &self.locked.load(Ordering::Relaxed))
            .finish()
    }
}

/// A blocking mutex for PASSIVE_LEVEL code: the waiter sleeps instead of spinning, and the IRQL
/// stays PASSIVE while it is held. Acquiring it above PASSIVE_LEVEL is a verifier violation
/// ([`rules::PASSIVE_MUTEX_ABOVE_PASSIVE`]).
///
/// Built on `parking_lot`'s raw mutex (an adaptive spin, then a futex-style park).
///
/// Equivalent to: `FAST_MUTEX` / `KMUTEX`; `WDFWAITLOCK`; `FxCallbackMutexLock`.
///
/// ```
/// use nt::sync::{RawLock, RawPassiveMutex};
/// let m = RawPassiveMutex::new("example");
/// assert!(m.try_acquire());
/// assert!(m.is_owned_by_current_thread());
/// m.release();
/// ```
pub struct RawPassiveMutex {
    raw: parking_lot::RawMutex,
    own: Ownership,
    name: &'static str,
}

impl RawPassiveMutex {
    /// A new, free mutex named `name`.
    pub const fn new(name: &'static str) -> Self {
        RawPassiveMutex {
            raw: parking_lot::RawMutex::INIT,
            own: Ownership::new(),
            name,
        }
    }

    fn addr(&self) -> usize {
        self as *const Self as usize
    }
}

impl RawPassiveMutex {
    /// Acquires the mutex, waiting at most `timeout` (PASSIVE_LEVEL for a non-zero timeout; a
    /// zero timeout is a try-acquire, allowed at any level). Returns whether it was acquired.
    pub fn try_acquire_for(&self, timeout: Duration) -> bool {
        if timeout.is_zero() {
            return self.try_acquire();
        }
        irql::check_at_most(
            Irql::Passive,
            &rules::PASSIVE_MUTEX_ABOVE_PASSIVE,
            self.name,
        );
        self.own.check_recursion(self.name);
        if self.raw.try_lock_for(timeout) {
            self.own.acquired(self.name, self.addr(), true);
            true
        } else {
            false
        }
    }
}

impl Default for RawPassiveMutex {
    fn default() -> Self {
        Self::new("passive mutex")
    }
}

// SAFETY: exclusion comes from `parking_lot::RawMutex`; `release` unlocks it only when the
// ownership record says the caller acquired it.
unsafe impl RawLock for RawPassiveMutex {
    #[inline]
    fn acquire(&self) {
        irql::check_at_most(
            Irql::Passive,
            &rules::PASSIVE_MUTEX_ABOVE_PASSIVE,
            self.name,
        );
        self.own.check_recursion(self.name);
        let contended = if self.raw.try_lock() {
            false
        } else {
            self.raw.lock();
            true
        };
        self.own.acquired(self.name, self.addr(), contended);
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        if self.own.is_mine() {
            verifier::report(
                &rules::RECURSIVE_LOCK_ACQUIRE,
                format_args!("{} try-acquired by its owner", self.name),
            );
        }
        if self.raw.try_lock() {
            self.own.acquired(self.name, self.addr(), false);
            true
        } else {
            false
        }
    }

    #[inline]
    fn release(&self) {
        if self.own.releasing(self.name, self.addr()) {
            // SAFETY: `releasing` returned true, so the calling thread acquired `raw` (through
            // `acquire` or a successful `try_acquire`) and has not released it since.
            unsafe { self.raw.unlock() };
        }
    }

    #[inline]
    fn is_owned_by_current_thread(&self) -> bool {
        self.own.is_mine()
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn stats(&self) -> LockStats {
        self.own.stats()
    }
}

impl fmt::Debug for RawPassiveMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawPassiveMutex")
            .field("name", &self.name)
            .field("locked", &self.raw.is_locked())
            .finish()
    }
}
