//! Passive mutexes: PASSIVE_LEVEL only, blocking, non-recursive.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use nt::irql::{self, Irql};
use nt::sync::{PassiveMutex, RawLock, RawPassiveMutex};
use nt::verifier::{self, rules};

use common::{panic_text, verifier_record};

#[test]
fn passive_mutex_keeps_the_thread_at_passive_level() {
    verifier_record();
    let m = PassiveMutex::new(Vec::<u32>::new());
    {
        let mut g = m.lock();
        assert_eq!(irql::current(), Irql::Passive);
        g.push(1);
    }
    assert_eq!(m.lock().as_slice(), &[1]);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn passive_mutex_acquired_at_dispatch_reports_passive_mutex_above_passive() {
    verifier_record();
    let m = PassiveMutex::named("wait lock", ());
    let dispatch = irql::raise(Irql::Dispatch);
    {
        let _g = m.lock();
    }
    drop(dispatch);
    assert_eq!(verifier::count(&rules::PASSIVE_MUTEX_ABOVE_PASSIVE), 1);
    let text = verifier::recent()[0].message.clone();
    assert!(text.contains("wait lock"), "{text}");
}

#[test]
fn passive_mutex_acquired_at_passive_reports_nothing() {
    verifier_record();
    let m = PassiveMutex::named("wait lock", ());
    drop(m.lock());
    assert_eq!(verifier::count(&rules::PASSIVE_MUTEX_ABOVE_PASSIVE), 0);
}

#[test]
fn recursive_passive_mutex_acquire_is_a_fatal_report() {
    verifier::reset();
    let m = PassiveMutex::named("recursive mutex", 0u32);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _first = m.lock();
        let _second = m.lock();
    }));
    let text = panic_text(&*outcome.expect_err("a recursive acquire must panic"));
    assert!(
        text.starts_with("bug check: RECURSIVE_LOCK_ACQUIRE"),
        "{text}"
    );
    assert!(text.contains("recursive mutex"), "{text}");
    assert_eq!(verifier::count(&rules::RECURSIVE_LOCK_ACQUIRE), 1);
    assert_eq!(irql::current(), Irql::Passive);
    assert!(!m.is_owned_by_current_thread());
    *m.lock() += 1;
    assert_eq!(*m.lock(), 1);
}

#[test]
fn raw_passive_mutex_released_by_a_non_owner_reports_and_stays_held() {
    verifier_record();
    let m = Arc::new(RawPassiveMutex::new("raw mutex"));
    m.acquire();
    let m2 = m.clone();
    let other_got_it = std::thread::spawn(move || {
        m2.release();
        m2.try_acquire()
    })
    .join()
    .unwrap();
    assert_eq!(verifier::count(&rules::RELEASE_BY_NON_OWNER), 1);
    assert!(!other_got_it);
    assert!(m.is_owned_by_current_thread());
    m.release();
    assert!(m.try_acquire());
    m.release();
}

#[test]
fn passive_mutex_try_lock_fails_while_another_thread_holds_it_and_succeeds_after() {
    let m = Arc::new(PassiveMutex::new(0u32));
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let m2 = m.clone();
    let holder = std::thread::spawn(move || {
        let mut g = m2.lock();
        *g = 3;
        held_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    held_rx.recv().unwrap();
    assert!(m.try_lock().is_none());
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(*m.try_lock().expect("free after release"), 3);
}

#[test]
fn passive_mutex_gives_mutual_exclusion_under_contention() {
    const THREADS: usize = 4;
    const ROUNDS: u64 = 10_000;
    let m = Arc::new(PassiveMutex::new(0u64));
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let m = m.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    let mut g = m.lock();
                    let v = std::hint::black_box(*g);
                    *g = std::hint::black_box(v + 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*m.lock(), THREADS as u64 * ROUNDS);
}
