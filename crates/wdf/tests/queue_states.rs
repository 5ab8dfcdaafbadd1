//! Queue state operations (spec §5.7, §5.8, table "State operations"): start, stop,
//! stop-and-purge, purge, drain, their synchronous variants, the fatal misuse of a second
//! outstanding callback, ready notification, requeue during a purge, forwarding to a queue that
//! does not accept, and `Queue::status`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use nt::NtStatus;
use nt::io::Handle;
use nt::irql::{self, Irql};
use nt::verifier;
use wdf::verifier::rules;
use wdf::{
    Device, DispatchType, ExecutionLevel, IoContext, ObjectAttributes, Queue, QueueConfig,
    QueueStateCallback, QueueStatus, SyncScope,
};

use common::*;

/// What a queue-state callback saw: whether it had a scope token, and whether the thread held
/// the queue's callback lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    token: bool,
    locked: bool,
}

/// A state callback that reports what it saw on a channel.
fn reporting_callback(tx: &mpsc::Sender<Seen>) -> QueueStateCallback {
    let tx = Mutex::new(tx.clone());
    Box::new(move |cx: &mut IoContext<'_, '_>| {
        let seen = Seen {
            token: cx.scope().is_some(),
            locked: cx.queue().callback_lock().is_owned_by_current_thread(),
        };
        tx.lock().unwrap().send(seen).unwrap();
    })
}

/// A device with one default queue of `dispatch` type whose read callback keeps every request
/// in `held` (the driver owns them until the test completes them).
struct Fixture {
    _kernel: nt::Kernel,
    device: Arc<Device>,
    queue: Arc<Queue>,
    held: Arc<Held>,
    handle: Handle,
}

fn fixture(name: &str, dispatch: DispatchType, dev_attrs: ObjectAttributes) -> Fixture {
    let kernel = kernel();
    let driver = driver(&kernel);
    let device = device(&driver, name, dev_attrs);
    let held = Arc::new(Held::default());
    let mut cfg = QueueConfig::new(dispatch);
    cfg.default_queue = true;
    if dispatch != DispatchType::Manual {
        let h = held.clone();
        cfg.io_read(move |_cx, req, _len| h.push(req));
    }
    let queue = device
        .create_queue(cfg, ObjectAttributes::default())
        .unwrap();
    let handle = kernel.io().open(name).unwrap();
    Fixture {
        _kernel: kernel,
        device,
        queue,
        held,
        handle,
    }
}

#[track_caller]
fn complete_success(held: &Held) {
    let r = held.pop().expect("a request held by the driver");
    r.complete_with_information(NtStatus::SUCCESS, 0);
}

#[track_caller]
fn assert_no_event<T: std::fmt::Debug>(rx: &mpsc::Receiver<T>, what: &str) {
    if let Ok(v) = rx.recv_timeout(Duration::from_millis(50)) {
        panic!("{what} fired too early: {v:?}");
    }
}

/// Rule (table row Stop, Start): a stopped queue keeps accepting and queues arrivals; the
/// stop-complete callback fires once the driver owns nothing and is not serialized, even under
/// Device or Queue scope; start presents the queued requests.
#[test]
fn stop_queues_arrivals_and_idle_callback_is_unserialized_start_presents() {
    for (scope, name) in [
        (SyncScope::Device, "qs-stop-device"),
        (SyncScope::Queue, "qs-stop-queue"),
    ] {
        let f = fixture(
            name,
            DispatchType::Sequential,
            ObjectAttributes::scope(scope),
        );
        let (tx, rx) = mpsc::channel();

        let first = f.handle.submit(read_op(0, 4));
        f.held.wait_for(1);
        f.queue.stop(Some(reporting_callback(&tx)));
        let st = f.queue.status();
        assert!(st.accepting && !st.dispatching, "{scope:?}: {st:?}");
        assert_eq!(st.driver_owned, 1);

        let second = f.handle.submit(read_op(0, 4));
        assert!(!second.is_complete());
        assert_eq!(
            f.queue.status().queued,
            1,
            "{scope:?}: stop queues arrivals"
        );
        assert_eq!(f.queue.stats().presented, 1);
        assert_no_event(&rx, "stop-complete while a request is driver-owned");

        complete_success(&f.held);
        assert_eq!(wait(first).status, NtStatus::SUCCESS);
        let seen = rx.recv_timeout(TIMEOUT).expect("stop-complete callback");
        assert_eq!(
            seen,
            Seen {
                token: false,
                locked: false
            },
            "{scope:?}: the stop-complete callback is not serialized"
        );
        assert_no_event(&rx, "a second stop-complete");
        assert_eq!(f.queue.stats().presented, 1, "stopped: nothing presented");

        f.queue.start();
        f.held.wait_for(1);
        assert_eq!(f.queue.stats().presented, 2);
        complete_success(&f.held);
        assert_eq!(wait(second).status, NtStatus::SUCCESS);
    }
}

/// Rule (table row StopAndPurge): the requests queued at the call are cancelled, cancelable
/// driver-owned ones get their cancel routine, later arrivals are queued (not cancelled); the
/// callback is not serialized.
#[test]
fn stop_and_purge_cancels_queued_and_queues_later_arrivals() {
    let f = fixture(
        "qs-stop-and-purge",
        DispatchType::Manual,
        ObjectAttributes::scope(SyncScope::Queue),
    );
    let (tx, rx) = mpsc::channel();
    let routine = Arc::new(AtomicUsize::new(0));

    let owned = f.handle.submit(read_op(0, 4));
    let a = f.handle.submit(read_op(0, 4));
    let b = f.handle.submit(read_op(0, 4));
    let r = f.queue.retrieve_next_request().unwrap();
    assert_eq!(r.id(), owned.id());
    let rc = routine.clone();
    let ticket = r
        .mark_cancelable(move |_cx, req| {
            rc.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::CANCELLED);
        })
        .unwrap();

    f.queue.stop_and_purge(Some(reporting_callback(&tx)));
    assert_eq!(wait(a).status, NtStatus::CANCELLED);
    assert_eq!(wait(b).status, NtStatus::CANCELLED);
    assert_eq!(wait(owned).status, NtStatus::CANCELLED);
    assert_eq!(
        routine.load(Ordering::SeqCst),
        1,
        "cancel routine of the owned one"
    );
    assert_eq!(ticket.unmark().unwrap_err(), NtStatus::CANCELLED);
    let seen = rx.recv_timeout(TIMEOUT).expect("stop-complete callback");
    assert_eq!(
        seen,
        Seen {
            token: false,
            locked: false
        }
    );

    let later = f.handle.submit(read_op(0, 4));
    assert!(
        !later.is_complete(),
        "a later arrival is queued, not cancelled"
    );
    let st = f.queue.status();
    assert!(st.accepting && !st.dispatching, "{st:?}");
    assert_eq!(st.queued, 1);

    f.queue.start();
    let r = f.queue.retrieve_next_request().unwrap();
    assert_eq!(r.id(), later.id());
    r.complete(NtStatus::SUCCESS);
    assert_eq!(wait(later).status, NtStatus::SUCCESS);
}

/// Rule (table row Purge): arrivals are rejected with `STATUS_INVALID_DEVICE_STATE`, queued
/// requests are cancelled, cancelable driver-owned ones get their cancel routine, non-cancelable
/// ones are awaited; the purge-complete callback is serialized and fires only after the driver
/// completed what it owns.
#[test]
fn purge_rejects_cancels_and_awaits_then_serialized_callback() {
    let f = fixture(
        "qs-purge",
        DispatchType::Manual,
        ObjectAttributes::scope(SyncScope::Queue),
    );
    let (tx, rx) = mpsc::channel();
    let routine_token = Arc::new(Mutex::new(None));

    let cancelable = f.handle.submit(read_op(0, 4));
    let kept = f.handle.submit(read_op(0, 4));
    let q1 = f.handle.submit(read_op(0, 4));
    let q2 = f.handle.submit(read_op(0, 4));
    let c = f.queue.retrieve_next_request().unwrap();
    let k = f.queue.retrieve_next_request().unwrap();
    assert_eq!((c.id(), k.id()), (cancelable.id(), kept.id()));
    let rt = routine_token.clone();
    let _ticket = c
        .mark_cancelable(move |cx, req| {
            *rt.lock().unwrap() = Some(cx.scope().is_some());
            req.complete(NtStatus::CANCELLED);
        })
        .unwrap();

    f.queue.purge(Some(reporting_callback(&tx)));
    assert_eq!(wait(q1).status, NtStatus::CANCELLED);
    assert_eq!(wait(q2).status, NtStatus::CANCELLED);
    assert_eq!(wait(cancelable).status, NtStatus::CANCELLED);
    assert_eq!(
        *routine_token.lock().unwrap(),
        Some(true),
        "the cancel routine ran, serialized"
    );

    let rejected = wait(f.handle.submit(read_op(0, 4)));
    assert_eq!(rejected.status, NtStatus::INVALID_DEVICE_STATE);
    let st = f.queue.status();
    assert!(!st.accepting, "{st:?}");
    assert_eq!((st.queued, st.driver_owned), (0, 1));
    assert!(!kept.is_complete());
    assert_no_event(&rx, "purge-complete while a request is driver-owned");

    k.complete(NtStatus::SUCCESS);
    assert_eq!(wait(kept).status, NtStatus::SUCCESS);
    let seen = rx.recv_timeout(TIMEOUT).expect("purge-complete callback");
    assert_eq!(
        seen,
        Seen {
            token: true,
            locked: true
        },
        "the purge-complete callback is serialized"
    );
    assert_no_event(&rx, "a second purge-complete");
    assert_eq!(f.queue.stats().rejected, 1);
}

/// Rule (table row Drain): queued requests are still presented, arrivals are rejected, and the
/// serialized callback fires after every request is done.
#[test]
fn drain_presents_queued_rejects_arrivals_callback_after_all_done() {
    let f = fixture(
        "qs-drain",
        DispatchType::Sequential,
        ObjectAttributes::scope(SyncScope::Queue),
    );
    let (tx, rx) = mpsc::channel();
    let r1 = f.handle.submit(read_op(0, 4));
    let r2 = f.handle.submit(read_op(0, 4));
    let r3 = f.handle.submit(read_op(0, 4));
    f.held.wait_for(1);
    assert_eq!(f.queue.status().queued, 2);

    f.queue.drain(Some(reporting_callback(&tx)));
    let rejected = wait(f.handle.submit(read_op(0, 4)));
    assert_eq!(rejected.status, NtStatus::INVALID_DEVICE_STATE);

    for (i, p) in [r1, r2, r3].into_iter().enumerate() {
        assert_no_event(&rx, "drain-complete before every request is done");
        f.held.wait_for(1);
        assert_eq!(f.queue.stats().presented, i as u64 + 1);
        complete_success(&f.held);
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
    let seen = rx.recv_timeout(TIMEOUT).expect("drain-complete callback");
    assert_eq!(
        seen,
        Seen {
            token: true,
            locked: true
        },
        "the drain-complete callback is serialized"
    );
    assert!(!f.queue.status().accepting);
}

/// Rule (spec §5.8, §5.9): forwarding to a queue that is not accepting fails the call with
/// `STATUS_WDF_BUSY`; the request comes back, still owned by the driver.
#[test]
fn forward_to_non_accepting_queue_is_wdf_busy_and_driver_keeps_request() {
    let f = fixture(
        "qs-forward-busy",
        DispatchType::Sequential,
        ObjectAttributes::default(),
    );
    let dest = f
        .device
        .create_queue(
            QueueConfig::new(DispatchType::Manual),
            ObjectAttributes::default(),
        )
        .unwrap();
    dest.purge(None);
    assert!(!dest.status().accepting);

    let p = f.handle.submit(read_op(0, 4));
    f.held.wait_for(1);
    let req = f.held.pop().unwrap();
    let err = req.forward(&dest).expect_err("forward to a purged queue");
    assert_eq!(err.status, NtStatus::WDF_BUSY);
    assert_eq!(err.request.id(), p.id());
    assert_eq!(
        f.queue.driver_owned_count(),
        1,
        "the source still counts it"
    );
    assert_eq!(dest.stats().arrived, 0);
    assert!(!p.is_complete());
    err.request.complete_with_information(NtStatus::SUCCESS, 4);
    let c = wait(p);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 4));
    eventually("source idle", || f.queue.driver_owned_count() == 0);
}

type SyncOp = fn(&Arc<Queue>) -> Result<(), NtStatus>;
type SyncResult = (&'static str, Result<(), NtStatus>);

const SYNC_OPS: [(&str, SyncOp); 4] = [
    ("stop_synchronously", |q| q.stop_synchronously()),
    ("stop_and_purge_synchronously", |q| {
        q.stop_and_purge_synchronously()
    }),
    ("purge_synchronously", |q| q.purge_synchronously()),
    ("drain_synchronously", |q| q.drain_synchronously()),
];

/// Rule: each synchronous variant returns only after its operation completed (here: after the
/// driver completed the request it owned, from another thread).
#[test]
fn synchronous_variants_return_after_completion() {
    for (i, (what, op)) in SYNC_OPS.into_iter().enumerate() {
        let f = fixture(
            &format!("qs-sync-{i}"),
            DispatchType::Sequential,
            ObjectAttributes::scope(SyncScope::Queue),
        );
        let p = f.handle.submit(read_op(0, 4));
        f.held.wait_for(1);
        let completed = Arc::new(AtomicUsize::new(0));
        let (held, c) = (f.held.clone(), completed.clone());
        let completer = std::thread::spawn(move || {
            // An opportunity for a wrong implementation to return early.
            std::thread::sleep(Duration::from_millis(30));
            c.store(1, Ordering::SeqCst);
            let r = held.pop().unwrap();
            r.complete(NtStatus::SUCCESS);
        });
        let q = f.queue.clone();
        let r = within(what, move || op(&q));
        assert_eq!(r, Ok(()), "{what}");
        assert_eq!(
            completed.load(Ordering::SeqCst),
            1,
            "{what} returned before the driver completed its request"
        );
        assert_eq!(f.queue.driver_owned_count(), 0, "{what}");
        completer.join().unwrap();
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
}

/// Rule: the synchronous variants need PASSIVE_LEVEL; at DISPATCH_LEVEL they fail with
/// `STATUS_INVALID_DEVICE_REQUEST` and change nothing.
#[test]
fn synchronous_variants_at_dispatch_are_invalid_device_request() {
    let f = fixture(
        "qs-sync-dispatch",
        DispatchType::Sequential,
        ObjectAttributes::scope(SyncScope::Queue),
    );
    for (what, op) in SYNC_OPS {
        let r = {
            let _g = irql::raise(Irql::Dispatch);
            op(&f.queue)
        };
        assert_eq!(r, Err(NtStatus::INVALID_DEVICE_REQUEST), "{what}");
        let st = f.queue.status();
        assert!(
            st.accepting && st.dispatching,
            "{what} changed the queue: {st:?}"
        );
    }
}

/// Rule: a synchronous variant called from inside one of the queue's own serialized callbacks
/// could never finish; it fails with `STATUS_INVALID_DEVICE_REQUEST` instead of hanging
/// (Passive level, so only the lock-ownership check can refuse it).
#[test]
fn synchronous_variant_inside_own_serialized_callback_is_refused() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "qs-sync-inside",
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Queue),
    );
    let results: Arc<Mutex<Vec<SyncResult>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let res = results.clone();
    cfg.io_read(move |cx, req, _len| {
        assert_eq!(irql::current(), Irql::Passive);
        for (what, op) in SYNC_OPS {
            let r = op(cx.queue());
            res.lock().unwrap().push((what, r));
        }
        req.complete(NtStatus::SUCCESS);
    });
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("qs-sync-inside").unwrap();
    let c = within(
        "a read whose callback calls the synchronous variants",
        move || wait(h.submit(read_op(0, 4))),
    );
    assert_eq!(c.status, NtStatus::SUCCESS);
    let results = results.lock().unwrap();
    assert_eq!(results.len(), SYNC_OPS.len());
    for (what, r) in results.iter() {
        assert_eq!(*r, Err(NtStatus::INVALID_DEVICE_REQUEST), "{what}");
    }
    let st = queue.status();
    assert!(
        st.accepting && st.dispatching,
        "refused calls change nothing: {st:?}"
    );
}

/// Rule: a second outstanding stop-type completion callback is the fatal
/// `WDF_QUEUE_FATAL_ERROR` (a bug check), not an error status.
#[test]
fn second_outstanding_stop_callback_is_fatal_queue_error() {
    verifier::reset();
    let f = fixture(
        "qs-stop-twice",
        DispatchType::Sequential,
        ObjectAttributes::default(),
    );
    let (tx1, rx1) = mpsc::channel();
    let (tx2, rx2) = mpsc::channel();
    let p = f.handle.submit(read_op(0, 4));
    f.held.wait_for(1);

    f.queue.stop(Some(reporting_callback(&tx1)));
    let msg = expect_bug_check(|| f.queue.stop(Some(reporting_callback(&tx2))));
    assert!(msg.contains("WDF_QUEUE_FATAL_ERROR"), "{msg}");
    assert_eq!(verifier::count(&rules::WDF_QUEUE_FATAL_ERROR), 1);

    complete_success(&f.held);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
    rx1.recv_timeout(TIMEOUT)
        .expect("the first stop callback still fires");
    assert_no_event(&rx1, "the first stop callback again");
    assert_no_event(&rx2, "the refused stop callback");
}

/// Rule: a second outstanding purge-type completion callback is the fatal
/// `WDF_QUEUE_FATAL_ERROR`.
#[test]
fn second_outstanding_purge_callback_is_fatal_queue_error() {
    verifier::reset();
    let f = fixture(
        "qs-purge-twice",
        DispatchType::Sequential,
        ObjectAttributes::default(),
    );
    let (tx1, rx1) = mpsc::channel();
    let (tx2, rx2) = mpsc::channel();
    let p = f.handle.submit(read_op(0, 4));
    f.held.wait_for(1);

    f.queue.purge(Some(reporting_callback(&tx1)));
    let msg = expect_bug_check(|| f.queue.purge(Some(reporting_callback(&tx2))));
    assert!(msg.contains("WDF_QUEUE_FATAL_ERROR"), "{msg}");
    assert_eq!(verifier::count(&rules::WDF_QUEUE_FATAL_ERROR), 1);

    complete_success(&f.held);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
    rx1.recv_timeout(TIMEOUT)
        .expect("the first purge callback still fires");
    assert_no_event(&rx1, "the first purge callback again");
    assert_no_event(&rx2, "the refused purge callback");
}

/// Rule (spec §5.7 ReadyNotify): on a manual queue the notification is edge-triggered: once on
/// empty→non-empty, not for arrivals into a non-empty queue, again after the driver drained
/// the queue and a new request arrives, and on `start` while non-empty; it is serialized.
#[test]
fn ready_notify_fires_on_empty_to_non_empty_edge_and_on_start() {
    let f = fixture(
        "qs-ready-notify",
        DispatchType::Manual,
        ObjectAttributes::scope(SyncScope::Queue),
    );
    let count = Arc::new(AtomicUsize::new(0));
    let unserialized = Arc::new(AtomicUsize::new(0));
    let (c, u) = (count.clone(), unserialized.clone());
    f.queue
        .ready_notify(Some(move |cx: &mut IoContext<'_, '_>| {
            if cx.scope().is_none() {
                u.fetch_add(1, Ordering::SeqCst);
            }
            c.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "empty queue: no notification"
    );

    let r1 = f.handle.submit(read_op(0, 4));
    eventually("notified on empty→non-empty", || {
        count.load(Ordering::SeqCst) == 1
    });
    let r2 = f.handle.submit(read_op(0, 4));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "an arrival into a non-empty queue is not notified"
    );

    // The driver drains the queue.
    for p in [r1, r2] {
        let r = f.queue.retrieve_next_request().unwrap();
        assert_eq!(r.id(), p.id());
        r.complete(NtStatus::SUCCESS);
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
    assert_eq!(
        f.queue.retrieve_next_request().unwrap_err(),
        NtStatus::NO_MORE_ENTRIES
    );

    let r3 = f.handle.submit(read_op(0, 4));
    eventually("notified again after the drain", || {
        count.load(Ordering::SeqCst) == 2
    });

    f.queue.stop(None);
    let r4 = f.handle.submit(read_op(0, 4));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "a stopped queue does not notify"
    );
    f.queue.start();
    eventually("notified on start while non-empty", || {
        count.load(Ordering::SeqCst) == 3
    });
    assert_eq!(unserialized.load(Ordering::SeqCst), 0);

    for p in [r3, r4] {
        let r = f.queue.retrieve_next_request().unwrap();
        r.complete(NtStatus::SUCCESS);
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
}

/// Rule: ready notification exists only for manual queues.
#[test]
fn ready_notify_on_non_manual_queue_is_invalid_device_request() {
    let f = fixture(
        "qs-ready-non-manual",
        DispatchType::Parallel,
        ObjectAttributes::default(),
    );
    assert_eq!(
        f.queue.ready_notify(Some(|_cx: &mut IoContext<'_, '_>| {})),
        Err(NtStatus::INVALID_DEVICE_REQUEST)
    );
}

/// Rule: a second ready-notification registration is refused.
#[test]
fn ready_notify_second_registration_is_invalid_device_request() {
    let f = fixture(
        "qs-ready-twice",
        DispatchType::Manual,
        ObjectAttributes::default(),
    );
    assert_eq!(
        f.queue.ready_notify(Some(|_cx: &mut IoContext<'_, '_>| {})),
        Ok(())
    );
    assert_eq!(
        f.queue.ready_notify(Some(|_cx: &mut IoContext<'_, '_>| {})),
        Err(NtStatus::INVALID_DEVICE_REQUEST)
    );
}

/// Rule (spec §5.9): a requeue while a purge is in progress cancels the request instead (the
/// sender sees `STATUS_CANCELLED`), and the requeue call still succeeds.
#[test]
fn requeue_during_purge_cancels_request_and_returns_ok() {
    let f = fixture(
        "qs-requeue-purge",
        DispatchType::Manual,
        ObjectAttributes::scope(SyncScope::Queue),
    );
    let (tx, rx) = mpsc::channel();
    let p = f.handle.submit(read_op(0, 4));
    let r = f.queue.retrieve_next_request().unwrap();
    f.queue.purge(Some(reporting_callback(&tx)));
    assert_no_event(&rx, "purge-complete while a request is driver-owned");

    assert!(r.requeue().is_ok(), "requeue during a purge still succeeds");
    assert_eq!(wait(p).status, NtStatus::CANCELLED);
    assert_eq!(f.queue.status().queued, 0);
    rx.recv_timeout(TIMEOUT)
        .expect("purge completes once the requeued request is cancelled");
    assert_eq!(f.queue.driver_owned_count(), 0);
}

/// Rule: `Queue::status` reports accepting, dispatching, queued, driver-owned and power state.
#[test]
fn queue_status_reports_state_counts_and_power() {
    let f = fixture(
        "qs-status",
        DispatchType::Manual,
        ObjectAttributes::default(),
    );
    let all_on = QueueStatus {
        accepting: true,
        dispatching: true,
        queued: 0,
        driver_owned: 0,
        powered_on: true,
    };
    assert_eq!(f.queue.status(), all_on);

    let p1 = f.handle.submit(read_op(0, 4));
    let p2 = f.handle.submit(read_op(0, 4));
    assert_eq!(f.queue.status().queued, 2);
    let r1 = f.queue.retrieve_next_request().unwrap();
    assert_eq!(
        f.queue.status(),
        QueueStatus {
            queued: 1,
            driver_owned: 1,
            ..all_on
        }
    );

    f.queue.stop(None);
    assert_eq!(
        f.queue.status(),
        QueueStatus {
            dispatching: false,
            queued: 1,
            driver_owned: 1,
            ..all_on
        }
    );
    f.queue.start();
    r1.complete(NtStatus::SUCCESS);
    assert_eq!(wait(p1).status, NtStatus::SUCCESS);
    eventually("r1 no longer driver-owned", || {
        f.queue.driver_owned_count() == 0
    });

    let dev = f.device.clone();
    within("power_down", move || dev.power_down()).unwrap();
    assert_eq!(
        f.queue.status(),
        QueueStatus {
            queued: 1,
            powered_on: false,
            ..all_on
        }
    );
    let dev = f.device.clone();
    within("power_up", move || dev.power_up()).unwrap();
    assert!(f.queue.status().powered_on);

    f.queue.drain(None);
    assert_eq!(
        f.queue.status(),
        QueueStatus {
            accepting: false,
            queued: 1,
            ..all_on
        }
    );
    let r2 = f.queue.retrieve_next_request().unwrap();
    r2.complete(NtStatus::SUCCESS);
    assert_eq!(wait(p2).status, NtStatus::SUCCESS);
}

/// A parallel queue (eligible for the lock-free fast path) under load from client threads:
/// half the requests are completed inline, half by a separate completer thread.
struct Loaded {
    kernel: nt::Kernel,
    queue: Arc<Queue>,
    held: Arc<Held>,
    /// Requests the driver has not yet given up (decremented just before completing).
    outstanding: Arc<AtomicUsize>,
    inflight: Arc<InFlight>,
}

fn loaded_queue(name: &str) -> Loaded {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, name, ObjectAttributes::default());
    let held = Arc::new(Held::default());
    let outstanding = Arc::new(AtomicUsize::new(0));
    let inflight = Arc::new(InFlight::default());
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (h, o, f) = (held.clone(), outstanding.clone(), inflight.clone());
    cfg.io_read(move |_cx, req, len| {
        let g = f.enter();
        o.fetch_add(1, Ordering::SeqCst);
        if req.id() % 2 == 0 {
            o.fetch_sub(1, Ordering::SeqCst);
            drop(g);
            req.complete_with_information(NtStatus::SUCCESS, len);
        } else {
            h.push(req);
            drop(g);
        }
    });
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    Loaded {
        kernel,
        queue,
        held,
        outstanding,
        inflight,
    }
}

/// Runs `clients` reading threads and a completer thread until `body` returns; every read must
/// end with one of `allowed`.
fn with_load(l: &Loaded, name: &str, clients: usize, allowed: &[NtStatus], body: impl FnOnce()) {
    let done = AtomicBool::new(false);
    let clients_done = AtomicBool::new(false);
    let h = l.kernel.io().open(name).unwrap();
    std::thread::scope(|s| {
        let client_threads: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    while !done.load(Ordering::SeqCst) {
                        let c = match h.submit(read_op(0, 8)).wait_timeout(TIMEOUT) {
                            Ok(c) => c,
                            Err(p) => panic!(
                                "request {} stranded for {TIMEOUT:?}: status {:?}, stats {:?}, \
                                 held {}, outstanding {}",
                                p.id(),
                                l.queue.status(),
                                l.queue.stats(),
                                l.held.len(),
                                l.outstanding.load(Ordering::SeqCst)
                            ),
                        };
                        assert!(allowed.contains(&c.status), "unexpected {}", c.status);
                    }
                })
            })
            .collect();
        // The completer runs until every client has stopped sending, then empties `held`.
        s.spawn(|| {
            loop {
                match l.held.pop() {
                    Some(r) => {
                        l.outstanding.fetch_sub(1, Ordering::SeqCst);
                        r.complete(NtStatus::SUCCESS);
                    }
                    None if clients_done.load(Ordering::SeqCst) => break,
                    None => std::thread::yield_now(),
                }
            }
        });
        // However the body ends, the clients must stop, or the scope would never end.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        done.store(true, Ordering::SeqCst);
        let results: Vec<_> = client_threads.into_iter().map(|t| t.join()).collect();
        clients_done.store(true, Ordering::SeqCst);
        if let Err(p) = outcome {
            std::panic::resume_unwind(p);
        }
        for r in results {
            if let Err(p) = r {
                std::panic::resume_unwind(p);
            }
        }
    });
}

/// What the driver owned, according to its own bookkeeping, when a state callback ran.
fn idle_snapshot(l: &Loaded) -> impl Fn(&mut IoContext<'_, '_>) -> (usize, usize) + use<> {
    let (o, f) = (l.outstanding.clone(), l.inflight.clone());
    move |_cx| (o.load(Ordering::SeqCst), f.now())
}

/// Rule (table row Stop, under concurrency): with arrivals and completions racing on the
/// parallel fast path, the stop-complete callback fires exactly once per stop, only when the
/// driver owns nothing and no I/O callback is running, and nothing is presented until start.
#[test]
fn stop_callback_under_load_fires_only_when_driver_owns_nothing() {
    const CYCLES: usize = 40;
    let l = loaded_queue("qs-stop-load");
    with_load(&l, "qs-stop-load", 3, &[NtStatus::SUCCESS], || {
        let rng = Rng::new(7);
        for cycle in 0..CYCLES {
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
            let (tx, rx) = mpsc::channel();
            let snap = idle_snapshot(&l);
            l.queue
                .stop(Some(Box::new(move |cx: &mut IoContext<'_, '_>| {
                    tx.send(snap(cx)).unwrap();
                })));
            let (owned, running) = rx
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|_| panic!("cycle {cycle}: stop-complete never fired"));
            assert_eq!(
                (owned, running),
                (0, 0),
                "cycle {cycle}: stop-complete fired while the driver owned requests"
            );
            assert_eq!(l.queue.driver_owned_count(), 0, "cycle {cycle}");
            let presented = l.queue.stats().presented;
            std::thread::sleep(Duration::from_micros(300));
            assert_eq!(
                l.queue.stats().presented,
                presented,
                "cycle {cycle}: presented while stopped"
            );
            assert!(rx.try_recv().is_err(), "cycle {cycle}: fired twice");
            l.queue.start();
        }
    });
}

/// Rule (table row Purge, under concurrency): arrivals racing a purge are either presented or
/// rejected with `STATUS_INVALID_DEVICE_STATE`; the purge-complete callback fires once, only when
/// the driver owns nothing, and under the queue's lock only if the scope locks (None here).
#[test]
fn purge_callback_under_load_fires_only_when_driver_owns_nothing() {
    const CYCLES: usize = 40;
    let l = loaded_queue("qs-purge-load");
    let allowed = [NtStatus::SUCCESS, NtStatus::INVALID_DEVICE_STATE];
    with_load(&l, "qs-purge-load", 3, &allowed, || {
        let rng = Rng::new(11);
        for cycle in 0..CYCLES {
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
            let (tx, rx) = mpsc::channel();
            let snap = idle_snapshot(&l);
            l.queue
                .purge(Some(Box::new(move |cx: &mut IoContext<'_, '_>| {
                    tx.send(snap(cx)).unwrap();
                })));
            let (owned, running) = rx
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|_| panic!("cycle {cycle}: purge-complete never fired"));
            assert_eq!(
                (owned, running),
                (0, 0),
                "cycle {cycle}: purge-complete fired while the driver owned requests"
            );
            let st = l.queue.status();
            assert_eq!((st.queued, st.driver_owned), (0, 0), "cycle {cycle}");
            assert!(!st.accepting);
            assert!(rx.try_recv().is_err(), "cycle {cycle}: fired twice");
            l.queue.start();
        }
    });
    assert!(l.queue.stats().rejected > 0 || l.queue.stats().presented > 0);
}

/// Rule (table row StopAndPurge): the requests queued at the call are cancelled by the call, so
/// by the time its completion callback runs none of them is still queued; a driver that restarts
/// the queue from that callback must not be presented any of them.
#[test]
fn stop_and_purge_cancels_queued_requests_before_its_callback() {
    let f = fixture(
        "qs-stop-and-purge-order",
        DispatchType::Sequential,
        ObjectAttributes::default(),
    );
    f.queue.stop(None);
    let a = f.handle.submit(read_op(0, 4));
    let b = f.handle.submit(read_op(0, 4));
    assert_eq!(f.queue.status().queued, 2);

    let (tx, rx) = mpsc::channel();
    f.queue
        .stop_and_purge(Some(Box::new(move |cx: &mut IoContext<'_, '_>| {
            let queued = cx.queue().status().queued;
            // A common driver pattern: restart the queue once it is stopped and purged.
            cx.queue().start();
            tx.send(queued).unwrap();
        })));
    let queued_at_callback = rx.recv_timeout(TIMEOUT).expect("stop-complete callback");
    // Whatever the restarted queue presented, the driver completes, so the senders finish.
    eventually("a and b resolved", || {
        while let Some(r) = f.held.pop() {
            r.complete(NtStatus::SUCCESS);
        }
        a.is_complete() && b.is_complete()
    });
    let presented = f.queue.stats().presented;
    let (ca, cb) = (wait(a), wait(b));
    assert_eq!(
        (ca.status, cb.status, presented, queued_at_callback),
        (NtStatus::CANCELLED, NtStatus::CANCELLED, 0, 0),
        "(a, b, presented, queued when the callback ran): requests queued at the \
         stop-and-purge call must be cancelled before its callback, never presented"
    );

    // Restarted: a new arrival is presented normally.
    let c = f.handle.submit(read_op(0, 4));
    f.held.wait_for(1);
    complete_success(&f.held);
    assert_eq!(wait(c).status, NtStatus::SUCCESS);
}
