//! DPCs: DISPATCH_LEVEL, insert-once, removal, panic containment, flushing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use nt::irql::{self, Irql};
use nt::verifier::{self, rules};
use nt::{Dpc, Kernel};

use common::verifier_record;

fn one_processor() -> Kernel {
    Kernel::builder().processors(1).workers(1).build()
}

fn counting_dpc(kernel: &Kernel, name: &'static str) -> (Dpc, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let dpc = Dpc::new(kernel, name, move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    (dpc, runs)
}

/// Queues a DPC that occupies the (single) processor until the returned sender is used.
fn block_processor(kernel: &Kernel) -> (Dpc, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let blocker = Dpc::new(kernel, "blocker", move || {
        rx.lock().unwrap().recv().unwrap();
    });
    assert!(blocker.insert());
    (blocker, tx)
}

#[test]
fn dpc_runs_at_dispatch_level_on_a_processor_thread() {
    let kernel = Kernel::builder().processors(2).build();
    let (tx, rx) = mpsc::channel();
    let dpc = Dpc::new(&kernel, "where", move || {
        let name = std::thread::current().name().map(str::to_owned);
        tx.send((irql::current(), nt::thread::current_processor(), name))
            .unwrap();
    });
    assert!(dpc.insert());
    let (level, processor, name) = rx.recv().unwrap();
    assert_eq!(level, Irql::Dispatch);
    assert!(processor.is_some_and(|p| p < 2), "{processor:?}");
    assert!(name.unwrap().starts_with("nt-dpc-"));
    assert_eq!(irql::current(), Irql::Passive);
}

#[test]
fn inserting_an_already_queued_dpc_returns_false_and_it_runs_once() {
    let kernel = one_processor();
    let (_blocker, release) = block_processor(&kernel);
    let (dpc, runs) = counting_dpc(&kernel, "once");
    assert!(dpc.insert());
    assert!(dpc.is_queued());
    assert!(!dpc.insert(), "a queued DPC must not be queued twice");
    release.send(()).unwrap();
    kernel.flush_dpcs();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!dpc.is_queued());
}

#[test]
fn a_dpc_can_be_inserted_again_after_it_ran() {
    let kernel = one_processor();
    let (dpc, runs) = counting_dpc(&kernel, "again");
    for expected in 1..=3 {
        assert!(dpc.insert());
        kernel.flush_dpcs();
        assert_eq!(runs.load(Ordering::SeqCst), expected);
    }
}

#[test]
fn removing_a_queued_dpc_prevents_it_from_running() {
    let kernel = one_processor();
    let (_blocker, release) = block_processor(&kernel);
    let (dpc, runs) = counting_dpc(&kernel, "removed");
    assert!(dpc.insert());
    assert!(dpc.remove());
    assert!(!dpc.is_queued());
    assert!(!dpc.remove(), "nothing left to remove");
    release.send(()).unwrap();
    kernel.flush_dpcs();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn dpcs_on_one_processor_run_in_insertion_order() {
    let kernel = one_processor();
    let (_blocker, release) = block_processor(&kernel);
    let order = Arc::new(Mutex::new(Vec::new()));
    let dpcs: Vec<Dpc> = (0..5)
        .map(|i| {
            let order = order.clone();
            Dpc::new(&kernel, "ordered", move || order.lock().unwrap().push(i))
        })
        .collect();
    for d in &dpcs {
        assert!(d.insert());
    }
    release.send(()).unwrap();
    kernel.flush_dpcs();
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn a_dpc_may_reinsert_itself_from_its_routine() {
    let kernel = one_processor();
    let runs = Arc::new(AtomicUsize::new(0));
    let me = Arc::new(std::sync::OnceLock::<Dpc>::new());
    let (done_tx, done_rx) = mpsc::channel();
    let (r, m) = (runs.clone(), me.clone());
    let dpc = Dpc::new(&kernel, "self-requeue", move || {
        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
        if n < 3 {
            assert!(m.get().unwrap().insert());
        } else {
            done_tx.send(()).unwrap();
        }
    });
    me.set(dpc.clone()).unwrap();
    assert!(dpc.insert());
    done_rx.recv().unwrap();
    kernel.flush_dpcs();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[test]
fn a_panicking_dpc_is_contained_and_the_processor_keeps_running() {
    verifier_record();
    let kernel = one_processor();
    let bad = Dpc::new(&kernel, "bad", || panic!("DPC routine failure"));
    let (good, runs) = counting_dpc(&kernel, "good");
    assert!(bad.insert());
    assert!(good.insert());
    kernel.flush_dpcs();
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Still alive for later DPCs, and still at DISPATCH_LEVEL for them.
    let (tx, rx) = mpsc::channel();
    let later = Dpc::new(&kernel, "later", move || {
        tx.send(irql::current()).unwrap();
    });
    assert!(later.insert());
    assert_eq!(rx.recv().unwrap(), Irql::Dispatch);
    assert!(bad.insert());
    kernel.flush_dpcs();
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 2);
}

#[test]
fn a_dpc_that_leaves_irql_raised_is_reported_and_repaired() {
    verifier_record();
    let kernel = one_processor();
    let leaky = Dpc::new(&kernel, "leaky", || {
        std::mem::forget(irql::raise(Irql::Device(1)));
    });
    let (tx, rx) = mpsc::channel();
    let next = Dpc::new(&kernel, "next", move || {
        tx.send(irql::current()).unwrap();
    });
    assert!(leaky.insert());
    assert!(next.insert());
    kernel.flush_dpcs();
    assert_eq!(verifier::count(&rules::CALLBACK_IRQL_MISMATCH), 1);
    assert_eq!(rx.recv().unwrap(), Irql::Dispatch);
}

#[test]
fn flush_dpcs_waits_for_dpcs_on_every_processor() {
    let kernel = Kernel::builder().processors(2).build();
    let runs = Arc::new(AtomicUsize::new(0));
    let dpcs: Vec<Dpc> = (0..16)
        .map(|_| {
            let r = runs.clone();
            Dpc::new(&kernel, "spread", move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for d in &dpcs {
        assert!(d.insert());
    }
    kernel.flush_dpcs();
    assert_eq!(runs.load(Ordering::SeqCst), 16);
}

#[test]
fn flush_dpcs_above_passive_reports_blocking_wait_above_passive() {
    verifier_record();
    let kernel = one_processor();
    let dispatch = irql::raise(Irql::Dispatch);
    kernel.flush_dpcs();
    drop(dispatch);
    assert_eq!(verifier::count(&rules::BLOCKING_WAIT_ABOVE_PASSIVE), 1);
}
