//! Clocks: the real one, and a manual one that tests advance by hand.
//!
//! Timers and the verifier's DPC watchdog read time through [`Clock`], so a test that installs a
//! [`ManualClock`] controls exactly when timers expire and how long a DPC "took".
//!
//! ```
//! use nt::{Clock, ManualClock};
//! use std::time::Duration;
//! let clock = ManualClock::new();
//! assert_eq!(clock.now(), Duration::ZERO);
//! clock.advance(Duration::from_micros(300));
//! assert_eq!(clock.now(), Duration::from_micros(300));
//! ```

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A source of time since an arbitrary epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since the clock's epoch.
    fn now(&self) -> Duration;

    /// Registers `f` to run (on the advancing thread) every time the clock is moved by hand.
    /// Returns `false` for clocks that move by themselves, which then need a timer thread.
    fn on_advance(&self, f: Box<dyn Fn() + Send + Sync>) -> bool {
        drop(f);
        false
    }
}

/// The real monotonic clock (epoch: first use in the process).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl SystemClock {
    /// Nanoseconds since the process's clock epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        epoch().elapsed().as_nanos() as u64
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Duration {
        epoch().elapsed()
    }
}

/// A clock that moves only when [`ManualClock::advance`] is called; timers set on a kernel that
/// uses it expire synchronously inside `advance` (their DPCs are queued before it returns).
#[derive(Default)]
pub struct ManualClock {
    now_ns: AtomicU64,
    listeners: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl ManualClock {
    /// A manual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` and runs the expiry listeners (timers).
    pub fn advance(&self, by: Duration) {
        self.now_ns
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        let listeners = self.listeners.lock();
        for l in listeners.iter() {
            l();
        }
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns.load(Ordering::SeqCst))
    }

    fn on_advance(&self, f: Box<dyn Fn() + Send + Sync>) -> bool {
        self.listeners.lock().push(f);
        true
    }
}
