//! The framework's verifier rules (spec §8), one test per rule, each named after it. Every test
//! resets the (process-global) verifier and records; nextest runs each test in its own process.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nt::NtStatus;
use nt::irql::{self, Irql};
use nt::sync::{RawLock, RawSpinLock};
use nt::verifier;
use wdf::locks::WaitLock;
use wdf::verifier::rules;
use wdf::{
    DeviceInit, DispatchType, ExecutionLevel, ObjectAttributes, QueueConfig, SyncScope, Timer,
    TimerConfig, WorkItem, WorkItemConfig,
};

use common::*;

/// `WDF_LOCK_ORDER`: acquiring a device's callback lock while holding a queue's own lock goes
/// against the order driver < device < queue and is reported; device then queue is fine.
#[test]
fn wdf_lock_order() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "vr-lock-order", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let queue = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();
    assert!(!queue.callback_lock().same_as(dev.callback_lock()));

    {
        let q = queue.acquire_lock();
        let d = dev.acquire_lock();
        drop(d);
        drop(q);
    }
    assert_eq!(
        verifier::count(&rules::LOCK_ORDER),
        1,
        "queue then device: {:?}",
        verifier::recent()
    );
    {
        let d = dev.acquire_lock();
        let q = queue.acquire_lock();
        drop(q);
        drop(d);
    }
    assert_eq!(
        verifier::count(&rules::LOCK_ORDER),
        1,
        "device then queue follows the order"
    );
    assert_eq!(irql::current(), Irql::Passive);
}

/// `WDF_CALLBACK_RETURNED_HOLDING_LOCK`: a callback that takes a lock and returns without
/// releasing it is reported when it returns.
#[test]
fn wdf_callback_returned_holding_lock() {
    static LEAKED: RawSpinLock = RawSpinLock::new("leaked by EvtIoRead");
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "vr-returned-holding",
        ObjectAttributes::scope(SyncScope::Queue),
    );
    let callback_thread = Arc::new(Mutex::new(None));
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let t = callback_thread.clone();
    cfg.io_read(move |_cx, req, _len| {
        LEAKED.acquire();
        *t.lock().unwrap() = Some(std::thread::current().id());
        req.complete(NtStatus::SUCCESS);
    });
    let _queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("vr-returned-holding").unwrap();

    let p = h.submit(read_op(0, 4));
    assert_eq!(
        *callback_thread.lock().unwrap(),
        Some(std::thread::current().id()),
        "the callback ran inline on this thread"
    );
    assert_eq!(
        verifier::count(&rules::CALLBACK_RETURNED_HOLDING_LOCK),
        1,
        "{:?}",
        verifier::recent()
    );
    // Clean up on the owning thread. The lock saved DISPATCH_LEVEL (it was taken inside the
    // spin-lock-serialized callback), so release it from DISPATCH_LEVEL.
    assert!(LEAKED.is_owned_by_current_thread());
    {
        let _g = irql::raise(Irql::Dispatch);
        LEAKED.release();
    }
    assert_eq!(irql::current(), Irql::Passive);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
    assert_eq!(verifier::count(&rules::CALLBACK_LOCK_RELEASED_BY_DRIVER), 0);
}

/// `WDF_CALLBACK_LOCK_RELEASED_BY_DRIVER`: releasing the callback lock inside the callback it
/// serializes needs the lent token to be moved or swapped out, and the token borrows the lock
/// for exactly the callback, so that does not compile (see the compile-fail doctest in
/// `wdf::sync::scope`). The runtime check stays as a second line of defence; here: a callback
/// that uses its token and another device's lock normally raises no report.
#[test]
fn wdf_callback_lock_released_by_driver() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let attrs = || ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Device);
    let dev = device(&driver, "vr-released-a", attrs());
    let other = device(&driver, "vr-released-b", attrs());
    let held = Arc::new(AtomicUsize::new(0));

    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let (o, r) = (other.clone(), held.clone());
    cfg.io_read(move |cx, req, _len| {
        let foreign = o.acquire_lock();
        let _lent = cx.scope().expect("Device scope lends a token");
        drop(foreign);
        if cx.queue().callback_lock().is_owned_by_current_thread() {
            r.fetch_add(1, Ordering::SeqCst);
        }
        req.complete(NtStatus::SUCCESS);
    });
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("vr-released-a").unwrap();
    let c = within("the read", move || wait(h.submit(read_op(0, 4))));
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert_eq!(
        held.load(Ordering::SeqCst),
        1,
        "the callback lock stays held throughout"
    );
    assert_eq!(
        verifier::count(&rules::CALLBACK_LOCK_RELEASED_BY_DRIVER),
        0,
        "{:?}",
        verifier::recent()
    );
    drop(queue.acquire_lock());
    drop(other.acquire_lock());
}

/// Request completed while still marked cancelable: prevented by the types (the compile-fail
/// doctest in `queue/cancel.rs` shows `CancelableRequest` has no `complete`). Behaviourally: a
/// marked request stays pending and driver-owned until `unmark` gives the `Request` back, and
/// only then can the driver complete it.
#[test]
fn request_completed_while_marked_cancelable() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "vr-cancelable-complete",
        ObjectAttributes::default(),
    );
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("vr-cancelable-complete").unwrap();
    let routine = Arc::new(AtomicUsize::new(0));

    let p = h.submit(read_op(0, 4));
    let req = queue.retrieve_next_request().unwrap();
    let r = routine.clone();
    let ticket = req
        .mark_cancelable(move |_cx, req| {
            r.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::CANCELLED);
        })
        .unwrap();
    // The framework holds the request: nothing can complete it but unmark + complete, or the
    // cancel routine.
    assert!(!p.is_complete());
    assert_eq!(queue.driver_owned_count(), 1);
    let req = ticket
        .unmark()
        .expect("not cancelled: unmark gives it back");
    req.complete_with_information(NtStatus::SUCCESS, 4);
    let c = wait(p);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 4));
    assert_eq!(routine.load(Ordering::SeqCst), 0);
    assert_eq!(verifier::count(&rules::REQUEST_MISUSE), 0);
    assert_eq!(verifier::count(&rules::REQUEST_NOT_COMPLETED), 0);
}

/// `WDF_REQUEST_LEAKED`: deleting a device while the driver still owns a request is reported.
#[test]
fn wdf_request_leaked() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "vr-leaked", ObjectAttributes::default());
    let held = Arc::new(Held::default());
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let hl = held.clone();
    cfg.io_read(move |_cx, req, _len| hl.push(req));
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("vr-leaked").unwrap();
    let p = h.submit(read_op(0, 4));
    held.wait_for(1);

    dev.delete();
    assert_eq!(
        verifier::count(&rules::REQUEST_LEAKED),
        1,
        "{:?}",
        verifier::recent()
    );
    // The driver completes it late; the sender is not left waiting.
    held.pop().unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
    assert_eq!(queue.driver_owned_count(), 0);
}

/// `WDF_PASSIVE_DDI_ABOVE_PASSIVE`: PASSIVE_LEVEL-only framework calls made at DISPATCH_LEVEL
/// fail with `STATUS_INVALID_DEVICE_REQUEST` (or `false` for `Timer::stop(true)`) and are
/// reported, one report per call.
#[test]
fn wdf_passive_ddi_above_passive() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "vr-passive-ddi", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let item = WorkItem::create(
        &dev,
        WorkItemConfig::new(|_cx| {}),
        ObjectAttributes::default(),
    )
    .unwrap();
    let timer = Timer::create(
        &dev,
        TimerConfig::new(|_cx| {}),
        ObjectAttributes::default(),
    )
    .unwrap();
    let wait_lock = WaitLock::new(());

    let count = || verifier::count(&rules::PASSIVE_DDI_AT_DISPATCH);
    let mut expected = 0;
    let mut check = |what: &str, refused: bool| {
        expected += 1;
        assert!(refused, "{what} at DISPATCH_LEVEL was not refused");
        assert_eq!(
            count(),
            expected,
            "{what} at DISPATCH_LEVEL: {:?}",
            verifier::recent()
        );
    };

    let at_dispatch = || irql::raise(Irql::Dispatch);
    let bad = Err(NtStatus::INVALID_DEVICE_REQUEST);
    {
        let _g = at_dispatch();
        check(
            "Queue::stop_synchronously",
            queue.stop_synchronously() == bad,
        );
        check(
            "Queue::stop_and_purge_synchronously",
            queue.stop_and_purge_synchronously() == bad,
        );
        check(
            "Queue::purge_synchronously",
            queue.purge_synchronously() == bad,
        );
        check(
            "Queue::drain_synchronously",
            queue.drain_synchronously() == bad,
        );
        check("WorkItem::flush", item.flush() == bad);
        check("Device::power_down", dev.power_down() == bad);
        check(
            "WaitLock::acquire(None)",
            wait_lock.acquire(None).map(drop) == bad,
        );
    }
    // Timer::stop(true) on a running timer: refused with false (a successful stop says true).
    timer.start(Duration::from_secs(3600));
    {
        let _g = at_dispatch();
        check("Timer::stop(true)", !timer.stop(true));
    }
    {
        let _g = at_dispatch();
        let created = driver.create_device(DeviceInit::new("vr-passive-ddi-2"));
        check(
            "Driver::create_device",
            matches!(created, Err(NtStatus::INVALID_DEVICE_REQUEST)),
        );
    }
    let st = queue.status();
    assert!(st.accepting && st.dispatching && st.powered_on, "{st:?}");
}
