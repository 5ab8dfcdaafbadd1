//! The verifier engine: named rules, violation reports with context, counts per rule.
//!
//! Rules are plain data ([`Rule`]); the kernel's own live in [`rules`], and higher layers (the
//! framework) declare theirs the same way and report through the same engine, so one table of
//! counts covers everything. The verifier is switched at run time ([`enable`] / [`disable`]);
//! when it is off, a check costs one relaxed load and a predictable branch ([`enabled`]).
//! Rules marked [`Rule::fatal`] (the equivalent of a bug check) are reported even when the
//! verifier is off, and the reporting call then panics, because continuing is impossible.
//!
//! A violation is either recorded (runs: [`Mode::Record`]) or turned into a panic (tests:
//! [`Mode::Panic`]).
//!
//! Equivalent to: Driver Verifier (kernel rules) and the KMDF verifier's engine (`VerifierOn`).
//!
//! ```
//! use nt::verifier::{self, Mode, rules};
//! verifier::enable(Mode::Record);
//! verifier::report(&rules::IRQL_NOT_RESTORED, format_args!("example"));
//! assert!(verifier::count(&rules::IRQL_NOT_RESTORED) >= 1);
//! verifier::disable();
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::executors::clock::{Clock, SystemClock};
use crate::irql::{self, Irql};
use crate::thread;

pub mod rules;

/// A verifier rule: a stable name, a numeric code, a one-line description.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Stable identifier, in the style of the bug-check parameter it mirrors.
    pub name: &'static str,
    /// Numeric code (kernel rules `0x1xx`, framework rules `0x2xx`).
    pub code: u32,
    /// What the rule forbids, in one line.
    pub description: &'static str,
    /// Reported even with the verifier off, and the reporting call panics afterwards (a bug check).
    pub fatal: bool,
}

/// What a report does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Record the violation and continue (runs, the CLI).
    Record,
    /// Record it, then panic on the reporting thread (tests).
    Panic,
}

/// One reported violation, with the context it happened in.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The rule broken.
    pub rule: &'static Rule,
    /// What exactly happened.
    pub message: String,
    /// wdfkit's id of the reporting thread ([`crate::thread::current_id`]).
    pub thread_id: u64,
    /// The reporting thread's name, if it has one.
    pub thread_name: Option<String>,
    /// The IRQL at the time of the report.
    pub irql: Irql,
    /// Names of the locks the thread held (tracked while the verifier is on).
    pub locks_held: Vec<&'static str>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (0x{:03X}): {} [thread {} {}, {}",
            self.rule.name,
            self.rule.code,
            self.message,
            self.thread_id,
            self.thread_name.as_deref().unwrap_or("<unnamed>"),
            self.irql
        )?;
        if !self.locks_held.is_empty() {
            write!(f, ", holding {}", self.locks_held.join(", "))?;
        }
        f.write_str("]")
    }
}

const RECENT_LIMIT: usize = 256;

struct State {
    counts: HashMap<&'static str, (&'static Rule, u64)>,
    recent: VecDeque<Violation>,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static MODE: AtomicU8 = AtomicU8::new(0);
static ECHO: AtomicBool = AtomicBool::new(false);
static SINGLE_BUDGET_NS: AtomicU64 = AtomicU64::new(100_000);
static CUMULATIVE_BUDGET_NS: AtomicU64 = AtomicU64::new(1_000_000);
static STATE: Mutex<Option<State>> = Mutex::new(None);
static CLOCK: RwLock<Option<Arc<dyn Clock>>> = RwLock::new(None);

/// Whether the verifier is on. One relaxed load: the whole cost of a check when it is off.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns the verifier on with the given mode.
pub fn enable(mode: Mode) {
    MODE.store(mode as u8, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Release);
}

/// Turns the verifier off (fatal rules are still reported).
pub fn disable() {
    ENABLED.store(false, Ordering::Release);
}

/// The current mode.
pub fn mode() -> Mode {
    if MODE.load(Ordering::Relaxed) == Mode::Panic as u8 {
        Mode::Panic
    } else {
        Mode::Record
    }
}

/// Also print each violation to stderr as it is reported (off by default).
pub fn set_echo(on: bool) {
    ECHO.store(on, Ordering::Relaxed);
}

/// Sets the clock the verifier times things with (the DPC watchdog, lock hold times).
///
/// Tests install a [`crate::ManualClock`] so that durations are exact and cannot flake.
pub fn set_clock(clock: Arc<dyn Clock>) {
    *CLOCK.write() = Some(clock);
}

/// Nanoseconds on the verifier's clock.
pub fn now_ns() -> u64 {
    match &*CLOCK.read() {
        Some(c) => c.now().as_nanos() as u64,
        None => SystemClock.now().as_nanos() as u64,
    }
}

/// Sets the DPC watchdog budgets: `single` for one DPC or one continuous stretch at
/// DISPATCH_LEVEL (default 100 µs, the WDK guidance), `cumulative` for a processor's
/// back-to-back run of DPCs (default 1 ms).
pub fn set_dpc_budgets(single: Duration, cumulative: Duration) {
    SINGLE_BUDGET_NS.store(single.as_nanos() as u64, Ordering::Relaxed);
    CUMULATIVE_BUDGET_NS.store(cumulative.as_nanos() as u64, Ordering::Relaxed);
}

/// The current DPC watchdog budgets `(single, cumulative)`.
pub fn dpc_budgets() -> (Duration, Duration) {
    (
        Duration::from_nanos(SINGLE_BUDGET_NS.load(Ordering::Relaxed)),
        Duration::from_nanos(CUMULATIVE_BUDGET_NS.load(Ordering::Relaxed)),
    )
}

pub(crate) fn check_single_budget(ns: u64, what: &str) {
    let budget = SINGLE_BUDGET_NS.load(Ordering::Relaxed);
    if ns > budget {
        report(
            &rules::DPC_WATCHDOG_SINGLE,
            format_args!(
                "{what} lasted {:.1} µs; budget {:.1} µs",
                ns as f64 / 1e3,
                budget as f64 / 1e3
            ),
        );
    }
}

pub(crate) fn check_cumulative_budget(ns: u64, processor: usize) {
    let budget = CUMULATIVE_BUDGET_NS.load(Ordering::Relaxed);
    if ns > budget {
        report(
            &rules::DPC_WATCHDOG_CUMULATIVE,
            format_args!(
                "processor {processor} spent {:.1} µs at DISPATCH_LEVEL running DPCs back to back; budget {:.1} µs",
                ns as f64 / 1e3,
                budget as f64 / 1e3
            ),
        );
    }
}

/// Reports a violation of `rule`.
///
/// Non-fatal rules are ignored while the verifier is off. In [`Mode::Panic`], and always for
/// fatal rules, the call panics after recording.
#[cold]
#[inline(never)]
pub fn report(rule: &'static Rule, message: fmt::Arguments<'_>) {
    if !rule.fatal && !enabled() {
        return;
    }
    let v = Violation {
        rule,
        message: message.to_string(),
        thread_id: thread::current_id(),
        thread_name: std::thread::current().name().map(str::to_owned),
        irql: irql::current(),
        locks_held: thread::locks_held(),
    };
    if ECHO.load(Ordering::Relaxed) {
        eprintln!("verifier: {v}");
    }
    let text = v.to_string();
    {
        let mut st = STATE.lock();
        let st = st.get_or_insert_with(|| State {
            counts: HashMap::new(),
            recent: VecDeque::new(),
        });
        st.counts.entry(rule.name).or_insert((rule, 0)).1 += 1;
        if st.recent.len() == RECENT_LIMIT {
            st.recent.pop_front();
        }
        st.recent.push_back(v);
    }
    if rule.fatal {
        panic!("bug check: {text}");
    }
    if mode() == Mode::Panic {
        panic!("verifier: {text}");
    }
}

/// How many times `rule` was reported since the last [`reset`].
pub fn count(rule: &Rule) -> u64 {
    STATE
        .lock()
        .as_ref()
        .and_then(|s| s.counts.get(rule.name))
        .map_or(0, |(_, n)| *n)
}

/// Counts of every rule reported at least once, sorted by code.
pub fn counts() -> Vec<(&'static Rule, u64)> {
    let mut v: Vec<_> = STATE
        .lock()
        .as_ref()
        .map(|s| s.counts.values().copied().collect())
        .unwrap_or_default();
    v.sort_by_key(|(r, _)| r.code);
    v
}

/// The most recent violations (at most 256), oldest first.
pub fn recent() -> Vec<Violation> {
    STATE
        .lock()
        .as_ref()
        .map(|s| s.recent.iter().cloned().collect())
        .unwrap_or_default()
}

/// Forgets all counts and recorded violations.
pub fn reset() {
    *STATE.lock() = None;
}
