//! Locks exposed to drivers (spec §7.2): `wdf::locks::WaitLock` (`WDFWAITLOCK`) and
//! `wdf::locks::SpinLock` (`WDFSPINLOCK`).

mod common;

use std::sync::mpsc;
use std::time::Duration;

use nt::NtStatus;
use nt::irql::{self, Irql};
use wdf::locks::{SpinLock, WaitLock};

use common::TIMEOUT;

/// Runs `f` while another thread holds `lock`.
fn while_held_elsewhere<T: Send>(lock: &WaitLock<T>, f: impl FnOnce()) {
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let g = lock
                .acquire(None)
                .expect("the holder acquires the free lock");
            held_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(TIMEOUT);
            drop(g);
        });
        held_rx
            .recv_timeout(TIMEOUT)
            .expect("the other thread never took the lock");
        f();
        release_tx.send(()).unwrap();
    });
}

/// Rule: at PASSIVE_LEVEL a wait lock is acquired with no timeout or with a timeout.
#[test]
fn wait_lock_acquire_with_and_without_timeout_at_passive() {
    let lock = WaitLock::new(0u32);
    *lock.acquire(None).unwrap() += 1;
    *lock.acquire(Some(Duration::from_millis(100))).unwrap() += 1;
    *lock.acquire(Some(Duration::ZERO)).unwrap() += 1;
    assert_eq!(irql::current(), Irql::Passive, "a wait lock does not raise");
    assert_eq!(*lock.acquire(None).unwrap(), 3);
}

/// Rule: a zero timeout is a try-lock: it fails with `STATUS_TIMEOUT` while another thread holds
/// the lock, never waits, and is allowed at DISPATCH_LEVEL.
#[test]
fn wait_lock_zero_timeout_is_try_lock_allowed_at_dispatch() {
    let lock = WaitLock::new(());
    while_held_elsewhere(&lock, || {
        assert_eq!(
            lock.acquire(Some(Duration::ZERO)).unwrap_err(),
            NtStatus::TIMEOUT
        );
        let _g = irql::raise(Irql::Dispatch);
        assert_eq!(
            lock.acquire(Some(Duration::ZERO)).unwrap_err(),
            NtStatus::TIMEOUT,
            "a try-lock at DISPATCH_LEVEL times out (it is not refused)"
        );
    });
    let _g = irql::raise(Irql::Dispatch);
    let held = lock
        .acquire(Some(Duration::ZERO))
        .expect("a free wait lock can be try-acquired at DISPATCH_LEVEL");
    drop(held);
}

/// Rule: a non-zero timeout expires with `STATUS_TIMEOUT` (returned as an error, wdfkit's
/// deviation from the success-class status) while another thread holds the lock.
#[test]
fn wait_lock_nonzero_timeout_times_out_when_held() {
    let lock = WaitLock::new(());
    while_held_elsewhere(&lock, || {
        assert_eq!(
            lock.acquire(Some(Duration::from_millis(20))).unwrap_err(),
            NtStatus::TIMEOUT
        );
    });
    assert!(lock.acquire(Some(Duration::from_millis(20))).is_ok());
}

/// Rule: a waiting acquire (no timeout, or a non-zero one) needs PASSIVE_LEVEL; at
/// DISPATCH_LEVEL it is refused with `STATUS_INVALID_DEVICE_REQUEST`.
#[test]
fn wait_lock_waiting_acquire_at_dispatch_is_invalid_device_request() {
    let lock = WaitLock::new(());
    let _g = irql::raise(Irql::Dispatch);
    assert_eq!(
        lock.acquire(None).unwrap_err(),
        NtStatus::INVALID_DEVICE_REQUEST
    );
    assert_eq!(
        lock.acquire(Some(Duration::from_millis(10))).unwrap_err(),
        NtStatus::INVALID_DEVICE_REQUEST
    );
}

/// Rule: a framework spin lock raises to DISPATCH_LEVEL while held and restores the level.
#[test]
fn spin_lock_raises_to_dispatch() {
    let lock = SpinLock::new(0u64);
    assert_eq!(irql::current(), Irql::Passive);
    {
        let mut g = lock.lock();
        assert_eq!(irql::current(), Irql::Dispatch);
        *g += 1;
    }
    assert_eq!(irql::current(), Irql::Passive);
    {
        let _raised = irql::raise(Irql::Dispatch);
        let g = lock.lock();
        assert_eq!(*g, 1);
        assert_eq!(irql::current(), Irql::Dispatch);
        drop(g);
        assert_eq!(
            irql::current(),
            Irql::Dispatch,
            "restored to the caller's level"
        );
    }
    assert_eq!(irql::current(), Irql::Passive);
}
