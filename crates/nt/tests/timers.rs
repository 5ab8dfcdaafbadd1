//! Timers on a manual clock: one-shot, periodic, cancel, absolute due times, re-setting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nt::irql::{self, Irql};
use nt::{Dpc, DueTime, Kernel, ManualClock, Timer};

const MS: Duration = Duration::from_millis(1);

struct Rig {
    clock: Arc<ManualClock>,
    kernel: Kernel,
    timer: Timer,
    fired: Arc<AtomicUsize>,
}

impl Rig {
    fn new() -> Rig {
        let clock = Arc::new(ManualClock::new());
        let kernel = Kernel::builder()
            .processors(1)
            .workers(1)
            .clock(clock.clone())
            .build();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let dpc = Dpc::new(&kernel, "tick", move || {
            assert_eq!(irql::current(), Irql::Dispatch);
            f.fetch_add(1, Ordering::SeqCst);
        });
        let timer = Timer::new(&kernel, dpc);
        Rig {
            clock,
            kernel,
            timer,
            fired,
        }
    }

    /// Advances the clock and waits for the DPCs the expiries queued.
    fn advance(&self, by: Duration) -> usize {
        self.clock.advance(by);
        self.kernel.flush_dpcs();
        self.fired.load(Ordering::SeqCst)
    }
}

#[test]
fn the_kernel_uses_the_manual_clock_it_was_given() {
    let rig = Rig::new();
    rig.clock.advance(7 * MS);
    assert_eq!(rig.kernel.clock().now(), 7 * MS);
}

#[test]
fn one_shot_timer_fires_once_at_its_due_time() {
    let rig = Rig::new();
    assert!(!rig.timer.set(DueTime::Relative(10 * MS), None));
    assert!(rig.timer.is_set());
    assert_eq!(rig.advance(9 * MS), 0);
    assert_eq!(rig.advance(MS), 1);
    assert!(!rig.timer.is_set());
    assert_eq!(rig.advance(100 * MS), 1);
}

#[test]
fn periodic_timer_fires_once_per_period() {
    let rig = Rig::new();
    rig.timer.set(DueTime::Relative(10 * MS), Some(10 * MS));
    assert_eq!(rig.advance(5 * MS), 0);
    assert_eq!(rig.advance(5 * MS), 1);
    for expected in 2..=6 {
        assert_eq!(rig.advance(10 * MS), expected);
    }
    // Half periods: fires on every second step.
    assert_eq!(rig.advance(5 * MS), 6);
    assert_eq!(rig.advance(5 * MS), 7);
    assert!(rig.timer.is_set());
}

#[test]
fn periodic_timer_skips_periods_that_passed_in_one_step() {
    let rig = Rig::new();
    rig.timer.set(DueTime::Relative(10 * MS), Some(10 * MS));
    // 10, 20, 30 and 40 ms all pass in one step: one expiry, one DPC.
    assert_eq!(rig.advance(45 * MS), 1);
    // The next period boundary is 50 ms.
    assert_eq!(rig.advance(4 * MS), 1);
    assert_eq!(rig.advance(MS), 2);
}

#[test]
fn cancel_stops_a_periodic_timer() {
    let rig = Rig::new();
    rig.timer.set(DueTime::Relative(10 * MS), Some(10 * MS));
    assert_eq!(rig.advance(10 * MS), 1);
    assert_eq!(rig.advance(10 * MS), 2);
    assert!(rig.timer.cancel(), "it was set");
    assert!(!rig.timer.is_set());
    assert_eq!(rig.advance(50 * MS), 2);
    assert!(!rig.timer.cancel(), "already cancelled");
}

#[test]
fn cancel_before_the_due_time_stops_a_one_shot_timer() {
    let rig = Rig::new();
    rig.timer.set(DueTime::Relative(10 * MS), None);
    assert_eq!(rig.advance(5 * MS), 0);
    assert!(rig.timer.cancel());
    assert_eq!(rig.advance(20 * MS), 0);
}

#[test]
fn absolute_due_time_fires_at_that_clock_time() {
    let rig = Rig::new();
    rig.clock.advance(3 * MS);
    rig.timer.set(DueTime::Absolute(10 * MS), None);
    assert_eq!(rig.advance(6 * MS), 0); // now 9 ms
    assert_eq!(rig.advance(MS), 1); // now 10 ms
}

#[test]
fn absolute_due_time_in_the_past_fires_immediately() {
    let rig = Rig::new();
    rig.clock.advance(20 * MS);
    rig.timer.set(DueTime::Absolute(5 * MS), None);
    rig.kernel.flush_dpcs();
    assert_eq!(rig.fired.load(Ordering::SeqCst), 1);
    assert!(!rig.timer.is_set());
}

#[test]
fn setting_an_already_set_timer_returns_true_and_replaces_the_due_time() {
    let rig = Rig::new();
    assert!(!rig.timer.set(DueTime::Relative(10 * MS), None));
    assert!(rig.timer.set(DueTime::Relative(20 * MS), None));
    assert_eq!(rig.advance(10 * MS), 0, "the first due time was replaced");
    assert_eq!(rig.advance(10 * MS), 1);
    assert_eq!(rig.advance(50 * MS), 1);
    assert!(
        !rig.timer.set(DueTime::Relative(10 * MS), None),
        "it had fired"
    );
}

#[test]
fn re_setting_a_periodic_timer_as_one_shot_stops_the_period() {
    let rig = Rig::new();
    rig.timer.set(DueTime::Relative(10 * MS), Some(10 * MS));
    assert_eq!(rig.advance(10 * MS), 1);
    assert!(rig.timer.set(DueTime::Relative(10 * MS), None));
    assert_eq!(rig.advance(10 * MS), 2);
    assert_eq!(rig.advance(30 * MS), 2);
}

#[test]
fn timer_on_the_system_clock_fires() {
    let kernel = Kernel::builder().processors(1).workers(1).build();
    let (tx, rx) = std::sync::mpsc::channel();
    let dpc = Dpc::new(&kernel, "real", move || tx.send(irql::current()).unwrap());
    let timer = Timer::new(&kernel, dpc);
    timer.set(DueTime::Relative(MS), None);
    assert_eq!(rx.recv().unwrap(), Irql::Dispatch);
}
