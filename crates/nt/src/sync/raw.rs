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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Hold-time and contention counters, written only while the verifier is on (so they cost
/// nothing, and stay out of the lock word's way, when it is off).
#[derive(Default)]
struct HoldStats {
    /// Acquisition time on the verifier clock plus one, so that 0 can mean "not timed".
    acquired_at_ns: AtomicU64,
    acquisitions: AtomicU64,
    contended: AtomicU64,
    max_hold_ns: AtomicU64,
    total_hold_ns: AtomicU64,
}

impl HoldStats {
    const fn new() -> Self {
        HoldStats {
            acquired_at_ns: AtomicU64::new(0),
            acquisitions: AtomicU64::new(0),
            contended: AtomicU64::new(0),
            max_hold_ns: AtomicU64::new(0),
            total_hold_ns: AtomicU64::new(0),
        }
    }

    #[cold]
    fn acquired(&self, name: &'static str, addr: usize, contended: bool) {
        self.acquired_at_ns
            .store(verifier::now_ns().saturating_add(1), Ordering::Relaxed);
        self.acquisitions.fetch_add(1, Ordering::Relaxed);
        if contended {
            self.contended.fetch_add(1, Ordering::Relaxed);
        }
        thread::note_acquired(name, addr);
    }

    #[cold]
    fn releasing(&self, addr: usize) {
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

/// Reports a release by a thread that does not own the lock (`owner` 0: not held).
#[cold]
fn report_foreign_release(name: &'static str, owner: u64) {
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
}

/// Reports an acquire by the lock's owner.
#[cold]
fn report_recursion(name: &'static str, what: &str) {
    verifier::report(
        &rules::RECURSIVE_LOCK_ACQUIRE,
        format_args!("{name} {what}"),
    );
}

/// The passive mutex's owner (the spin lock keeps its owner in its lock word) and statistics.
#[derive(Default)]
struct Ownership {
    owner: AtomicU64,
    stats: HoldStats,
}

impl Ownership {
    const fn new() -> Self {
        Ownership {
            owner: AtomicU64::new(0),
            stats: HoldStats::new(),
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
            report_recursion(name, "is already owned by this thread");
        }
    }

    #[inline]
    fn acquired(&self, name: &'static str, addr: usize, contended: bool) {
        self.owner.store(thread::current_id(), Ordering::Relaxed);
        if verifier::enabled() {
            self.stats.acquired(name, addr, contended);
        }
    }

    /// Returns false (after reporting) when the caller is not the owner.
    #[inline]
    fn releasing(&self, name: &'static str, addr: usize) -> bool {
        if !self.is_mine() {
            report_foreign_release(name, self.owner.load(Ordering::Relaxed));
            return false;
        }
        if verifier::enabled() {
            self.stats.releasing(addr);
        }
        self.owner.store(0, Ordering::Relaxed);
        true
    }

    fn stats(&self) -> LockStats {
        self.stats.stats()
    }
}

/// A spin lock: acquiring raises to DISPATCH_LEVEL and spins; releasing restores the IRQL the
/// acquirer had (saved in the lock, as NT does).
///
/// The lock state (owner and saved IRQL) is one word, so taking and releasing the lock each
/// write one cache line once. The wait is a bounded spin followed by yielding the processor:
/// on a small VM whose vCPUs can be preempted, a pure spin can burn a whole time slice waiting
/// for a holder that is not running.
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
    /// The whole lock state in one word, so that an acquire and a release each write one
    /// cache line once: 0 when free, otherwise the owner's thread id shifted left by 8, or'ed
    /// with the IRQL the owner had before acquiring (restored by the release).
    word: AtomicU64,
    stats: HoldStats,
    name: &'static str,
}

/// How many times a spin-lock waiter looks at a held lock, one processor pause apart, before
/// it starts yielding the processor between looks: a few tens of microseconds, far longer
/// than a callback should hold a spin lock, short enough that a waiter whose holder was
/// preempted (a vCPU of a small VM) does not burn its time slice. Looking on every pause
/// instead of backing off exponentially lets the waiter take a lock released after a short
/// hold at once: measured with `wdfkit bench --scaling` (Device scope, 2 clients), this
/// took throughput from 0.76-0.86x of one client to 0.85-0.90x.
const SPIN_CHECKS: u32 = 1000;

/// The lock word of a spin lock held by thread `id` that was at `previous` before.
#[inline]
fn spin_word(id: u64, previous: Irql) -> u64 {
    (id << 8) | u64::from(previous.level())
}

/// The owner's thread id in a spin lock word (0: free).
#[inline]
fn word_owner(word: u64) -> u64 {
    word >> 8
}

/// The IRQL a spin lock word says to restore on release.
#[inline]
fn word_irql(word: u64) -> Irql {
    Irql::from_level((word & 0xff) as u8)
}

impl RawSpinLock {
    /// A new, free spin lock named `name` (the name appears in verifier reports).
    pub const fn new(name: &'static str) -> Self {
        RawSpinLock {
            word: AtomicU64::new(0),
            stats: HoldStats::new(),
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

    #[inline]
    fn owner(&self) -> u64 {
        word_owner(self.word.load(Ordering::Relaxed))
    }

    /// Waits for the lock after a failed first attempt that saw `seen`: a spin on a plain
    /// load (no writes to the line while it is held) that looks at the word on every pause,
    /// for up to [`SPIN_CHECKS`] looks, then yields the processor between looks.
    #[cold]
    fn acquire_contended(&self, me: u64, mine: u64, seen: u64) {
        if word_owner(seen) == me {
            // Fatal: leave the thread at the IRQL it called at.
            irql::set_raw(word_irql(mine));
            report_recursion(self.name, "is already owned by this thread");
        }
        let mut checks = 0u32;
        loop {
            while self.word.load(Ordering::Relaxed) != 0 {
                if checks < SPIN_CHECKS {
                    checks += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .word
                .compare_exchange_weak(0, mine, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

impl Default for RawSpinLock {
    fn default() -> Self {
        Self::new("spin lock")
    }
}

// SAFETY: the lock word is set from 0 to a non-zero value with an acquire compare-exchange and
// cleared with a release store only by the thread whose id it holds (`release` refuses other
// threads), which gives mutual exclusion.
unsafe impl RawLock for RawSpinLock {
    #[inline]
    fn acquire(&self) {
        let me = thread::current_id();
        let previous = self.raise();
        let mine = spin_word(me, previous);
        let mut contended = false;
        if let Err(seen) =
            self.word
                .compare_exchange_weak(0, mine, Ordering::Acquire, Ordering::Relaxed)
        {
            contended = true;
            self.acquire_contended(me, mine, seen);
        }
        if verifier::enabled() {
            self.stats.acquired(self.name, self.addr(), contended);
        }
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        let me = thread::current_id();
        if self.owner() == me {
            report_recursion(self.name, "try-acquired by its owner");
        }
        let previous = self.raise();
        if self
            .word
            .compare_exchange(
                0,
                spin_word(me, previous),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            if verifier::enabled() {
                self.stats.acquired(self.name, self.addr(), false);
            }
            true
        } else {
            irql::set_raw(previous);
            false
        }
    }

    #[inline]
    fn release(&self) {
        let word = self.word.load(Ordering::Relaxed);
        if word_owner(word) != thread::current_id() {
            report_foreign_release(self.name, word_owner(word));
            return;
        }
        if verifier::enabled() {
            self.stats.releasing(self.addr());
        }
        self.word.store(0, Ordering::Release);
        irql::set_raw(word_irql(word));
    }

    #[inline]
    fn is_owned_by_current_thread(&self) -> bool {
        self.owner() == thread::current_id()
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn stats(&self) -> LockStats {
        self.stats.stats()
    }
}

impl fmt::Debug for RawSpinLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSpinLock")
            .field("name", &self.name)
            .field("locked", &(self.word.load(Ordering::Relaxed) != 0))
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
