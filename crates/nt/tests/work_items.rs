//! System work items: PASSIVE_LEVEL, queued once at a time, self re-queueing, panic containment.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use nt::irql::{self, Irql};
use nt::sync::{Event, EventKind};
use nt::verifier::{self, rules};
use nt::{Dpc, Kernel, WorkItem};

use common::verifier_record;

fn one_worker() -> Kernel {
    Kernel::builder().processors(1).workers(1).build()
}

/// Occupies the single worker until the returned event is set.
fn block_worker(kernel: &Kernel) -> Arc<Event> {
    let release = Arc::new(Event::new(EventKind::Notification, false));
    let r = release.clone();
    kernel.queue_work("blocker", move || r.wait());
    release
}

#[test]
fn work_items_run_at_passive_level_on_a_worker_thread() {
    let kernel = one_worker();
    let (tx, rx) = mpsc::channel();
    let item = WorkItem::new(&kernel, "where", move || {
        let name = std::thread::current().name().map(str::to_owned);
        tx.send((irql::current(), name)).unwrap();
    });
    assert!(item.enqueue());
    let (level, name) = rx.recv().unwrap();
    assert_eq!(level, Irql::Passive);
    assert!(name.unwrap().starts_with("nt-worker-"));
}

#[test]
fn enqueueing_a_pending_work_item_returns_false_and_it_runs_once() {
    let kernel = one_worker();
    let release = block_worker(&kernel);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let item = WorkItem::new(&kernel, "once", move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert!(item.enqueue());
    assert!(item.is_pending());
    assert!(!item.enqueue(), "a pending item must not be queued twice");
    release.set();
    kernel.flush_work();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!item.is_pending());
}

#[test]
fn a_work_item_may_re_enqueue_itself_from_its_routine() {
    let kernel = one_worker();
    let runs = Arc::new(AtomicUsize::new(0));
    let me = Arc::new(OnceLock::<WorkItem>::new());
    let (done_tx, done_rx) = mpsc::channel();
    let (r, m) = (runs.clone(), me.clone());
    let item = WorkItem::new(&kernel, "self-requeue", move || {
        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
        if n < 4 {
            // The pending flag was cleared when this run started.
            assert!(m.get().unwrap().enqueue());
        } else {
            done_tx.send(()).unwrap();
        }
    });
    me.set(item.clone()).unwrap();
    assert!(item.enqueue());
    done_rx.recv().unwrap();
    kernel.flush_work();
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[test]
fn a_work_item_can_be_enqueued_from_a_dpc() {
    let kernel = one_worker();
    let (tx, rx) = mpsc::channel();
    let item = WorkItem::new(&kernel, "from dpc", move || {
        tx.send(irql::current()).unwrap();
    });
    let it = item.clone();
    let dpc = Dpc::new(&kernel, "queue work", move || {
        assert!(it.enqueue());
    });
    assert!(dpc.insert());
    assert_eq!(rx.recv().unwrap(), Irql::Passive);
}

#[test]
fn queue_work_runs_a_one_off_closure_at_passive_level() {
    let kernel = one_worker();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    kernel.queue_work("one-off", move || {
        *s.lock().unwrap() = Some(irql::current());
    });
    kernel.flush_work();
    assert_eq!(*seen.lock().unwrap(), Some(Irql::Passive));
}

#[test]
fn a_panicking_work_item_is_contained_and_the_worker_keeps_running() {
    verifier_record();
    let kernel = one_worker();
    let bad = WorkItem::new(&kernel, "bad", || panic!("work routine failure"));
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let good = WorkItem::new(&kernel, "good", move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert!(bad.enqueue());
    assert!(good.enqueue());
    kernel.flush_work();
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(good.enqueue());
    kernel.flush_work();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn flush_work_waits_for_every_queued_item() {
    let kernel = Kernel::builder().processors(1).workers(2).build();
    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..32 {
        let r = runs.clone();
        kernel.queue_work("count", move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
    }
    kernel.flush_work();
    assert_eq!(runs.load(Ordering::SeqCst), 32);
}
