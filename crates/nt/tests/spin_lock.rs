//! Spin locks: IRQL handling, ownership, recursion, try-lock and mutual exclusion.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use nt::irql::{self, Irql};
use nt::sync::{RawLock, RawSpinLock, SpinLock};
use nt::verifier::{self, rules};

use common::{panic_text, verifier_record};

#[test]
fn spin_lock_raises_to_dispatch_and_restores_passive() {
    verifier_record();
    let lock = SpinLock::new(0u32);
    {
        let mut g = lock.lock();
        assert_eq!(irql::current(), Irql::Dispatch);
        *g += 1;
    }
    assert_eq!(irql::current(), Irql::Passive);
    assert_eq!(*lock.lock(), 1);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn spin_lock_acquired_at_dispatch_stays_at_dispatch_after_release() {
    verifier_record();
    let lock = SpinLock::new(());
    let dispatch = irql::raise(Irql::Dispatch);
    {
        let _g = lock.lock();
        assert_eq!(irql::current(), Irql::Dispatch);
    }
    assert_eq!(irql::current(), Irql::Dispatch);
    drop(dispatch);
    assert_eq!(irql::current(), Irql::Passive);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn spin_lock_acquired_at_apc_restores_apc() {
    let lock = SpinLock::new(());
    let apc = irql::raise(Irql::Apc);
    {
        let _g = lock.lock();
        assert_eq!(irql::current(), Irql::Dispatch);
    }
    assert_eq!(irql::current(), Irql::Apc);
    drop(apc);
}

#[test]
fn nested_spin_locks_restore_dispatch_then_passive() {
    let a = SpinLock::named("a", ());
    let b = SpinLock::named("b", ());
    let ga = a.lock();
    let gb = b.lock();
    drop(gb);
    assert_eq!(irql::current(), Irql::Dispatch);
    assert!(a.is_owned_by_current_thread());
    assert!(!b.is_owned_by_current_thread());
    drop(ga);
    assert_eq!(irql::current(), Irql::Passive);
}

#[test]
fn spin_lock_acquired_above_dispatch_reports_spin_lock_above_dispatch() {
    verifier_record();
    let lock = SpinLock::named("dirql", ());
    let device = irql::raise(Irql::Device(2));
    {
        let _g = lock.lock();
        assert_eq!(irql::current(), Irql::Device(2));
    }
    assert_eq!(verifier::count(&rules::SPIN_LOCK_ABOVE_DISPATCH), 1);
    assert_eq!(irql::current(), Irql::Device(2));
    drop(device);
}

/// The IRQL to restore travels with the owner (it is part of the lock word): waiters that
/// arrived at different levels each get their own back, however the handoffs interleave.
#[test]
fn contending_owners_each_get_their_own_irql_back() {
    verifier_record();
    let lock = Arc::new(RawSpinLock::new("shared"));
    let start = Arc::new(Barrier::new(3));
    let threads: Vec<_> = [Irql::Passive, Irql::Apc, Irql::Dispatch]
        .into_iter()
        .map(|level| {
            let (lock, start) = (lock.clone(), start.clone());
            std::thread::spawn(move || {
                let _at = (level > Irql::Passive).then(|| irql::raise(level));
                start.wait();
                for _ in 0..20_000 {
                    lock.acquire();
                    assert_eq!(irql::current(), Irql::Dispatch);
                    assert!(lock.is_owned_by_current_thread());
                    lock.release();
                    assert_eq!(irql::current(), level);
                    assert!(!lock.is_owned_by_current_thread());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn recursive_spin_lock_acquire_is_a_fatal_report_and_unwinds_to_passive() {
    verifier::reset();
    let lock = SpinLock::named("recursive spin", 0u32);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _first = lock.lock();
        let _second = lock.lock();
    }));
    let text = panic_text(&*outcome.expect_err("a recursive acquire must panic"));
    assert!(
        text.starts_with("bug check: RECURSIVE_LOCK_ACQUIRE"),
        "{text}"
    );
    assert!(text.contains("recursive spin"), "{text}");
    assert_eq!(verifier::count(&rules::RECURSIVE_LOCK_ACQUIRE), 1);
    assert_eq!(irql::current(), Irql::Passive);
    // Unwinding released the first guard: the lock is free and usable.
    assert!(!lock.is_owned_by_current_thread());
    *lock.lock() += 1;
    assert_eq!(*lock.lock(), 1);
}

#[test]
fn recursive_spin_lock_try_lock_is_a_fatal_report() {
    verifier::reset();
    let lock = SpinLock::named("recursive try", ());
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _first = lock.lock();
        let _second = lock.try_lock();
    }));
    assert!(outcome.is_err());
    assert_eq!(verifier::count(&rules::RECURSIVE_LOCK_ACQUIRE), 1);
    assert_eq!(irql::current(), Irql::Passive);
}

#[test]
fn raw_spin_lock_released_by_a_non_owner_reports_and_stays_held() {
    verifier_record();
    let lock = Arc::new(RawSpinLock::new("owned elsewhere"));
    lock.acquire();
    let l = lock.clone();
    let (released_irql, other_got_it) = std::thread::spawn(move || {
        l.release();
        let irql_after = irql::current();
        let got = l.try_acquire();
        (irql_after, got)
    })
    .join()
    .unwrap();
    assert_eq!(verifier::count(&rules::RELEASE_BY_NON_OWNER), 1);
    let text = verifier::recent()[0].message.clone();
    assert!(text.contains("owned elsewhere"), "{text}");
    assert_eq!(released_irql, Irql::Passive);
    assert!(
        !other_got_it,
        "the lock must still be held after a non-owner release"
    );
    assert!(lock.is_owned_by_current_thread());
    assert_eq!(irql::current(), Irql::Dispatch);
    lock.release();
    assert_eq!(irql::current(), Irql::Passive);
    assert!(lock.try_acquire());
    lock.release();
}

#[test]
fn raw_spin_lock_released_when_free_reports_release_by_non_owner() {
    verifier_record();
    let lock = RawSpinLock::new("free");
    lock.release();
    assert_eq!(verifier::count(&rules::RELEASE_BY_NON_OWNER), 1);
    assert_eq!(irql::current(), Irql::Passive);
    assert!(lock.try_acquire());
    lock.release();
}

#[test]
fn try_lock_fails_while_another_thread_holds_the_lock_and_succeeds_after() {
    let lock = Arc::new(SpinLock::new(0u32));
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let l = lock.clone();
    let holder = std::thread::spawn(move || {
        let mut g = l.lock();
        *g = 7;
        held_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    held_rx.recv().unwrap();
    assert!(lock.try_lock().is_none());
    // A failed try leaves the caller's IRQL alone.
    assert_eq!(irql::current(), Irql::Passive);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let g = lock.try_lock().expect("free after the holder released it");
    assert_eq!(irql::current(), Irql::Dispatch);
    assert_eq!(*g, 7);
    drop(g);
    assert_eq!(irql::current(), Irql::Passive);
}

#[test]
fn spin_lock_gives_mutual_exclusion_under_contention() {
    const THREADS: usize = 4;
    const ROUNDS: u64 = 20_000;
    let lock = Arc::new(SpinLock::new(0u64));
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let lock = lock.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    let mut g = lock.lock();
                    // A deliberately non-atomic read-modify-write.
                    let v = std::hint::black_box(*g);
                    *g = std::hint::black_box(v + 1);
                }
                irql::current()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Irql::Passive);
    }
    assert_eq!(*lock.lock(), THREADS as u64 * ROUNDS);
}

#[test]
fn lock_statistics_count_acquisitions_while_the_verifier_is_on() {
    let clock = verifier_record();
    let lock = SpinLock::named("timed", ());
    for _ in 0..3 {
        let _g = lock.lock();
        clock.advance(std::time::Duration::from_micros(5));
    }
    let stats = lock.stats();
    assert_eq!(stats.acquisitions, 3);
    assert_eq!(stats.contended, 0);
    assert_eq!(stats.max_hold, std::time::Duration::from_micros(5));
    assert_eq!(stats.total_hold, std::time::Duration::from_micros(15));
}

#[test]
fn verifier_lists_held_spin_locks_in_reports() {
    verifier_record();
    let lock = SpinLock::named("outer lock", ());
    let _g = lock.lock();
    assert_eq!(nt::thread::locks_held(), vec!["outer lock"]);
    verifier::report(&rules::IRQL_TOO_HIGH, format_args!("probe"));
    assert_eq!(verifier::recent()[0].locks_held, vec!["outer lock"]);
    assert_eq!(verifier::recent()[0].irql, Irql::Dispatch);
}
