//! IRQL raise, lower and restore; callback frames.

mod common;

use nt::irql::{self, CallbackFrame, Irql};
use nt::verifier::{self, rules};

use common::{on_fresh_thread, verifier_record};

#[test]
fn threads_start_at_passive_level() {
    assert_eq!(irql::current(), Irql::Passive);
    assert_eq!(on_fresh_thread(irql::current), Irql::Passive);
}

#[test]
fn dropping_a_raise_guard_restores_the_previous_irql() {
    verifier_record();
    let g = irql::raise(Irql::Dispatch);
    assert_eq!(irql::current(), Irql::Dispatch);
    assert_eq!(g.previous(), Irql::Passive);
    drop(g);
    assert_eq!(irql::current(), Irql::Passive);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn nested_guards_restore_each_level_in_reverse_order() {
    verifier_record();
    let apc = irql::raise(Irql::Apc);
    let dispatch = irql::raise(Irql::Dispatch);
    let device = irql::raise(Irql::Device(3));
    assert_eq!(irql::current(), Irql::Device(3));
    drop(device);
    assert_eq!(irql::current(), Irql::Dispatch);
    drop(dispatch);
    assert_eq!(irql::current(), Irql::Apc);
    drop(apc);
    assert_eq!(irql::current(), Irql::Passive);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn raising_to_the_current_level_is_allowed_and_restores_it() {
    verifier_record();
    let outer = irql::raise(Irql::Dispatch);
    let same = irql::raise(Irql::Dispatch);
    assert_eq!(same.previous(), Irql::Dispatch);
    drop(same);
    assert_eq!(irql::current(), Irql::Dispatch);
    drop(outer);
    assert_eq!(irql::current(), Irql::Passive);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn raise_to_dispatch_does_not_lower_a_higher_level() {
    let device = irql::raise(Irql::Device(0));
    let g = irql::raise_to_dispatch();
    assert_eq!(irql::current(), Irql::Device(0));
    drop(g);
    assert_eq!(irql::current(), Irql::Device(0));
    drop(device);
    let g = irql::raise_to_dispatch();
    assert_eq!(irql::current(), Irql::Dispatch);
    drop(g);
    assert_eq!(irql::current(), Irql::Passive);
}

#[test]
fn raise_below_current_reports_irql_not_greater_or_equal_and_keeps_the_level() {
    verifier_record();
    let dispatch = irql::raise(Irql::Dispatch);
    let bad = irql::raise(Irql::Passive);
    assert_eq!(verifier::count(&rules::IRQL_NOT_GREATER_OR_EQUAL), 1);
    assert_eq!(irql::current(), Irql::Dispatch);
    drop(bad);
    assert_eq!(irql::current(), Irql::Dispatch);
    drop(dispatch);
    assert_eq!(irql::current(), Irql::Passive);
    assert_eq!(verifier::counts().len(), 1, "{:?}", verifier::recent());
}

#[test]
fn callback_returning_at_its_entry_level_reports_nothing() {
    verifier_record();
    let frame = CallbackFrame::enter("EvtBalanced");
    assert_eq!(frame.entry(), Irql::Passive);
    {
        let _g = irql::raise(Irql::Dispatch);
    }
    drop(frame);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn callback_returning_at_a_different_irql_reports_callback_irql_mismatch() {
    verifier_record();
    let frame = CallbackFrame::enter("EvtLeaksIrql");
    std::mem::forget(irql::raise(Irql::Dispatch)); // "returns" still at DISPATCH_LEVEL
    drop(frame);
    assert_eq!(verifier::count(&rules::CALLBACK_IRQL_MISMATCH), 1);
    let text = verifier::recent()[0].message.clone();
    assert!(text.contains("EvtLeaksIrql"), "{text}");
    // The frame repairs the level to the entry level.
    assert_eq!(irql::current(), Irql::Passive);
}

#[test]
fn lowering_below_a_callbacks_entry_level_reports_irql_below_entry() {
    verifier_record();
    on_fresh_thread(|| {
        let raised = irql::raise(Irql::Dispatch);
        let frame = CallbackFrame::enter("EvtAtDispatch");
        drop(raised); // lowers to PASSIVE_LEVEL inside a callback entered at DISPATCH_LEVEL
        assert_eq!(verifier::count(&rules::IRQL_BELOW_ENTRY), 1);
        drop(frame);
    });
    assert_eq!(verifier::count(&rules::IRQL_BELOW_ENTRY), 1);
}

#[test]
fn lowering_to_the_entry_level_inside_a_callback_is_allowed() {
    verifier_record();
    let raised = irql::raise(Irql::Apc);
    let frame = CallbackFrame::enter("EvtAtApc");
    let inner = irql::raise(Irql::Dispatch);
    drop(inner);
    assert_eq!(irql::current(), Irql::Apc);
    drop(frame);
    drop(raised);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn dropping_guards_out_of_order_reports_irql_not_restored() {
    verifier_record();
    on_fresh_thread(|| {
        let apc = irql::raise(Irql::Apc);
        let dispatch = irql::raise(Irql::Dispatch);
        drop(apc); // finds DISPATCH_LEVEL where it raised to APC_LEVEL
        drop(dispatch); // finds PASSIVE_LEVEL where it raised to DISPATCH_LEVEL
    });
    assert_eq!(verifier::count(&rules::IRQL_NOT_RESTORED), 2);
}

#[test]
fn run_at_runs_the_closure_at_the_level_and_restores() {
    verifier_record();
    let seen = irql::run_at(Irql::Dispatch, "run_at", irql::current);
    assert_eq!(seen, Irql::Dispatch);
    assert_eq!(irql::current(), Irql::Passive);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn check_at_most_reports_the_given_rule_only_above_the_maximum() {
    verifier_record();
    assert!(irql::check_at_most(
        Irql::Dispatch,
        &rules::IRQL_TOO_HIGH,
        "at dispatch"
    ));
    let _g = irql::raise(Irql::Device(0));
    assert!(!irql::check_at_most(
        Irql::Dispatch,
        &rules::IRQL_TOO_HIGH,
        "at dirql"
    ));
    assert_eq!(verifier::count(&rules::IRQL_TOO_HIGH), 1);
}

#[test]
fn the_verifier_off_records_no_irql_violations() {
    verifier::reset();
    verifier::disable();
    let dispatch = irql::raise(Irql::Dispatch);
    drop(irql::raise(Irql::Passive));
    drop(dispatch);
    assert_eq!(verifier::count(&rules::IRQL_NOT_GREATER_OR_EQUAL), 0);
}
