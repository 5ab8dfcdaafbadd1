//! The verifier's DPC watchdog, timed with a manual clock so that durations are exact.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nt::irql::{self, Irql};
use nt::sync::SpinLock;
use nt::verifier::{self, rules};
use nt::{Dpc, Kernel, ManualClock};

use common::verifier_record;

const US: Duration = Duration::from_micros(1);

/// A kernel whose timers and verifier share one manual clock, with one processor.
fn rig() -> (Arc<ManualClock>, Kernel) {
    let clock = verifier_record();
    verifier::set_dpc_budgets(100 * US, 1000 * US);
    let kernel = Kernel::builder()
        .processors(1)
        .workers(1)
        .clock(clock.clone())
        .build();
    (clock, kernel)
}

/// A DPC that "takes" `took` by advancing the manual clock.
fn slow_dpc(kernel: &Kernel, clock: &Arc<ManualClock>, name: &'static str, took: Duration) -> Dpc {
    let clock = clock.clone();
    Dpc::new(kernel, name, move || clock.advance(took))
}

fn messages(rule: &nt::verifier::Rule) -> Vec<String> {
    verifier::recent()
        .into_iter()
        .filter(|v| v.rule == rule)
        .map(|v| v.message)
        .collect()
}

#[test]
fn a_dpc_running_300us_is_reported_as_dpc_watchdog_single() {
    let (clock, kernel) = rig();
    let dpc = slow_dpc(&kernel, &clock, "slow", 300 * US);
    assert!(dpc.insert());
    kernel.flush_dpcs();
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_SINGLE), 1);
    let msgs = messages(&rules::DPC_WATCHDOG_SINGLE);
    assert!(msgs[0].contains("300"), "{msgs:?}");
    assert!(msgs[0].contains("slow"), "{msgs:?}");
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_CUMULATIVE), 0);
}

#[test]
fn a_dpc_running_10us_is_not_reported() {
    let (clock, kernel) = rig();
    let dpc = slow_dpc(&kernel, &clock, "quick", 10 * US);
    assert!(dpc.insert());
    kernel.flush_dpcs();
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_SINGLE), 0);
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_CUMULATIVE), 0);
}

#[test]
fn a_batch_of_dpcs_over_the_cumulative_budget_is_reported_as_dpc_watchdog_cumulative() {
    let (clock, kernel) = rig();
    verifier::set_dpc_budgets(100 * US, 200 * US);
    // The first DPC holds the processor until the rest are queued, so all three run in one batch.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let c = clock.clone();
    let first = Dpc::new(&kernel, "first", move || {
        go_rx.lock().unwrap().recv().unwrap();
        c.advance(90 * US);
    });
    let second = slow_dpc(&kernel, &clock, "second", 90 * US);
    let third = slow_dpc(&kernel, &clock, "third", 90 * US);
    assert!(first.insert());
    assert!(second.insert());
    assert!(third.insert());
    go_tx.send(()).unwrap();
    kernel.flush_dpcs();
    // Each DPC is within the single budget; together (270 µs) they exceed the cumulative one.
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_SINGLE), 0);
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_CUMULATIVE), 1);
    let msgs = messages(&rules::DPC_WATCHDOG_CUMULATIVE);
    assert!(msgs[0].contains("270"), "{msgs:?}");
}

#[test]
fn a_batch_within_the_cumulative_budget_is_not_reported() {
    let (clock, kernel) = rig();
    verifier::set_dpc_budgets(100 * US, 200 * US);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let c = clock.clone();
    let first = Dpc::new(&kernel, "first", move || {
        go_rx.lock().unwrap().recv().unwrap();
        c.advance(90 * US);
    });
    let second = slow_dpc(&kernel, &clock, "second", 90 * US);
    assert!(first.insert());
    assert!(second.insert());
    go_tx.send(()).unwrap();
    kernel.flush_dpcs();
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_CUMULATIVE), 0);
}

#[test]
fn holding_a_spin_lock_for_300us_is_reported_as_a_continuous_stretch_at_dispatch() {
    let clock = verifier_record();
    verifier::set_dpc_budgets(100 * US, 1000 * US);
    let lock = SpinLock::named("long hold", ());
    {
        let _g = lock.lock();
        clock.advance(300 * US);
    }
    assert_eq!(irql::current(), Irql::Passive);
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_SINGLE), 1);
    let msgs = messages(&rules::DPC_WATCHDOG_SINGLE);
    assert!(
        msgs[0].contains("continuous stretch at DISPATCH_LEVEL"),
        "{msgs:?}"
    );
    assert!(msgs[0].contains("300"), "{msgs:?}");
}

#[test]
fn a_short_stretch_at_dispatch_is_not_reported() {
    let clock = verifier_record();
    verifier::set_dpc_budgets(100 * US, 1000 * US);
    let lock = SpinLock::named("short hold", ());
    {
        let _g = lock.lock();
        clock.advance(10 * US);
    }
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_SINGLE), 0);
}

#[test]
fn nested_raises_count_as_one_stretch_from_the_first_rise() {
    let clock = verifier_record();
    verifier::set_dpc_budgets(100 * US, 1000 * US);
    let outer = irql::raise(Irql::Dispatch);
    clock.advance(60 * US);
    let inner = SpinLock::new(());
    {
        let _g = inner.lock();
        clock.advance(60 * US);
    }
    // Still at DISPATCH_LEVEL: the stretch has not ended yet.
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_SINGLE), 0);
    drop(outer);
    assert_eq!(verifier::count(&rules::DPC_WATCHDOG_SINGLE), 1);
    assert!(messages(&rules::DPC_WATCHDOG_SINGLE)[0].contains("120"));
}

#[test]
fn default_budgets_are_100us_single_and_1ms_cumulative() {
    assert_eq!(verifier::dpc_budgets(), (100 * US, 1000 * US));
}
