//! Kernel events: notification and synchronization kinds, and waits above PASSIVE_LEVEL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use nt::irql::{self, Irql};
use nt::sync::{Event, EventKind};
use nt::verifier::{self, rules};

use common::verifier_record;

/// Starts `n` threads that each wait once on `ev` and then report on the returned channel.
fn waiters(ev: &Arc<Event>, n: usize) -> (mpsc::Receiver<usize>, Vec<std::thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel();
    let ready = Arc::new(Barrier::new(n + 1));
    let handles = (0..n)
        .map(|i| {
            let (ev, tx, ready) = (ev.clone(), tx.clone(), ready.clone());
            std::thread::spawn(move || {
                ready.wait();
                ev.wait();
                tx.send(i).unwrap();
            })
        })
        .collect();
    ready.wait();
    (rx, handles)
}

#[test]
fn notification_event_wakes_every_waiter_and_stays_signalled() {
    let ev = Arc::new(Event::new(EventKind::Notification, false));
    let (rx, handles) = waiters(&ev, 4);
    ev.set();
    let mut woke: Vec<usize> = (0..4).map(|_| rx.recv().unwrap()).collect();
    woke.sort_unstable();
    assert_eq!(woke, vec![0, 1, 2, 3]);
    for h in handles {
        h.join().unwrap();
    }
    assert!(ev.is_signaled());
    // Still signalled: a later wait returns at once.
    ev.wait();
    assert!(ev.wait_timeout(Duration::ZERO));
}

#[test]
fn notification_event_reset_clears_it() {
    let ev = Event::new(EventKind::Notification, true);
    assert!(ev.is_signaled());
    ev.reset();
    assert!(!ev.is_signaled());
    assert!(!ev.wait_timeout(Duration::ZERO));
}

#[test]
fn synchronization_event_auto_resets_after_releasing_one_wait() {
    let ev = Event::new(EventKind::Synchronization, false);
    ev.set();
    assert!(ev.is_signaled());
    assert!(ev.wait_timeout(Duration::ZERO));
    assert!(!ev.is_signaled(), "the satisfied wait reset it");
    assert!(!ev.wait_timeout(Duration::ZERO));
    ev.set();
    ev.wait();
    assert!(!ev.is_signaled());
}

#[test]
fn synchronization_event_releases_one_waiter_per_set() {
    let ev = Arc::new(Event::new(EventKind::Synchronization, false));
    let released = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (ev, released, tx) = (ev.clone(), released.clone(), tx.clone());
            std::thread::spawn(move || {
                ev.wait();
                let n = released.fetch_add(1, Ordering::SeqCst) + 1;
                tx.send(n).unwrap();
            })
        })
        .collect();
    for round in 1..=3 {
        ev.set();
        assert_eq!(rx.recv().unwrap(), round);
        assert_eq!(released.load(Ordering::SeqCst), round, "one waiter per set");
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(!ev.is_signaled());
}

#[test]
fn wait_timeout_returns_false_when_not_signalled() {
    let ev = Event::new(EventKind::Notification, false);
    assert!(!ev.wait_timeout(Duration::from_millis(1)));
}

#[test]
fn non_zero_wait_at_dispatch_reports_blocking_wait_above_passive() {
    verifier_record();
    let ev = Event::new(EventKind::Notification, true);
    let dispatch = irql::raise(Irql::Dispatch);
    assert!(ev.wait_timeout(Duration::from_millis(10)));
    drop(dispatch);
    assert_eq!(verifier::count(&rules::BLOCKING_WAIT_ABOVE_PASSIVE), 1);
    assert_eq!(verifier::recent()[0].irql, Irql::Dispatch);
}

#[test]
fn zero_timeout_poll_at_dispatch_is_allowed() {
    verifier_record();
    let ev = Event::new(EventKind::Notification, true);
    let dispatch = irql::raise(Irql::Dispatch);
    assert!(ev.wait_timeout(Duration::ZERO));
    drop(dispatch);
    assert_eq!(verifier::count(&rules::BLOCKING_WAIT_ABOVE_PASSIVE), 0);
}

#[test]
fn wait_at_dispatch_reports_blocking_wait_above_passive() {
    verifier_record();
    let ev = Event::new(EventKind::Notification, true);
    let dispatch = irql::raise(Irql::Dispatch);
    ev.wait();
    drop(dispatch);
    assert_eq!(verifier::count(&rules::BLOCKING_WAIT_ABOVE_PASSIVE), 1);
}

#[test]
fn wait_timeout_with_an_unbounded_timeout_waits_until_signalled() {
    let ev = Arc::new(Event::new(EventKind::Synchronization, true));
    assert!(ev.wait_timeout(Duration::MAX));
    let setter = {
        let ev = ev.clone();
        std::thread::spawn(move || ev.set())
    };
    assert!(ev.wait_timeout(Duration::MAX));
    setter.join().unwrap();
}
