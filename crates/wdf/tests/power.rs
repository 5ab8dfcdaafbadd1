//! Power-managed queues (spec §5.11): `EvtIoStop` on power-down with `StopAction::Suspend`, the
//! two acknowledgements (requeue, keep → `EvtIoResume`), no presentation while powered down, a
//! queue without `EvtIoStop` waiting for its driver-owned requests, retrieval while powered
//! down, and the PASSIVE_LEVEL requirement.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use nt::NtStatus;
use nt::io::Handle;
use nt::irql::{self, Irql};
use wdf::{
    CancelableRequest, Device, DispatchType, ObjectAttributes, Queue, QueueConfig, StopAction,
    StopNotice, SyncScope,
};

use common::*;

/// How the driver answers `EvtIoStop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Requeue,
    Keep,
    Complete,
}

/// A parallel, Queue-scope, power-managed queue whose read callback keeps requests, with
/// `EvtIoStop` answering `answer` and `EvtIoResume` recording ids.
struct PowerFixture {
    _kernel: nt::Kernel,
    device: Arc<Device>,
    queue: Arc<Queue>,
    held: Arc<Held>,
    handle: Handle,
    /// Presentations per request id.
    presented: Arc<Mutex<HashMap<u64, usize>>>,
    /// `EvtIoStop` notices, and whether each had a scope token.
    stops: Arc<Mutex<Vec<(StopNotice, bool)>>>,
    /// `EvtIoResume` ids.
    resumes: Arc<Mutex<Vec<u64>>>,
}

fn power_fixture(name: &str, answer: Answer) -> PowerFixture {
    let kernel = kernel();
    let driver = driver(&kernel);
    let device = device(&driver, name, ObjectAttributes::scope(SyncScope::Queue));
    let held = Arc::new(Held::default());
    let presented: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let stops: Arc<Mutex<Vec<(StopNotice, bool)>>> = Arc::default();
    let resumes: Arc<Mutex<Vec<u64>>> = Arc::default();

    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (h, p) = (held.clone(), presented.clone());
    cfg.io_read(move |_cx, req, _len| {
        *p.lock().unwrap().entry(req.id()).or_default() += 1;
        h.push(req);
    });
    let (h, s) = (held.clone(), stops.clone());
    cfg.io_stop(move |cx, notice| {
        s.lock().unwrap().push((notice, cx.scope().is_some()));
        match answer {
            Answer::Requeue => {
                let req = h
                    .take(notice.request)
                    .expect("EvtIoStop for a held request");
                req.stop_acknowledge_requeue()
                    .expect("acknowledge with requeue");
            }
            Answer::Keep => {
                h.with(notice.request, |req| req.stop_acknowledge())
                    .expect("EvtIoStop for a held request");
            }
            Answer::Complete => {
                let req = h
                    .take(notice.request)
                    .expect("EvtIoStop for a held request");
                req.complete(NtStatus::CANCELLED);
            }
        }
    });
    let r = resumes.clone();
    cfg.io_resume(move |_cx, id| r.lock().unwrap().push(id));
    let queue = device
        .create_queue(cfg, ObjectAttributes::default())
        .unwrap();
    let handle = kernel.io().open(name).unwrap();
    PowerFixture {
        _kernel: kernel,
        device,
        queue,
        held,
        handle,
        presented,
        stops,
        resumes,
    }
}

fn power_down(device: &Arc<Device>) -> Result<(), NtStatus> {
    let d = device.clone();
    within("Device::power_down", move || d.power_down())
}

fn power_up(device: &Arc<Device>) -> Result<(), NtStatus> {
    let d = device.clone();
    within("Device::power_up", move || d.power_up())
}

/// Rule: power-down calls `EvtIoStop` (serialized) once for each driver-owned request with
/// `StopAction::Suspend`; a request acknowledged with requeue goes back to the queue and is
/// presented again after power-up.
#[test]
fn io_stop_requeue_acknowledged_request_is_presented_again_after_power_up() {
    let f = power_fixture("pw-stop-requeue", Answer::Requeue);
    let p1 = f.handle.submit(read_op(0, 4));
    let p2 = f.handle.submit(read_op(0, 4));
    f.held.wait_for(2);

    power_down(&f.device).unwrap();
    {
        let stops = f.stops.lock().unwrap();
        let mut ids: Vec<u64> = stops.iter().map(|(n, _)| n.request).collect();
        ids.sort_unstable();
        let mut expected = vec![p1.id(), p2.id()];
        expected.sort_unstable();
        assert_eq!(ids, expected, "one EvtIoStop per driver-owned request");
        for (n, token) in stops.iter() {
            assert_eq!(n.action, StopAction::Suspend);
            assert!(!n.cancelable);
            assert!(*token, "EvtIoStop is serialized by the scope lock");
        }
    }
    let st = f.queue.status();
    assert!(!st.powered_on, "{st:?}");
    assert_eq!((st.queued, st.driver_owned), (2, 0), "requeued, not owned");
    assert!(!p1.is_complete() && !p2.is_complete());

    power_up(&f.device).unwrap();
    f.held.wait_for(2);
    {
        let presented = f.presented.lock().unwrap();
        assert_eq!(presented[&p1.id()], 2, "presented again after power-up");
        assert_eq!(presented[&p2.id()], 2);
    }
    assert!(f.resumes.lock().unwrap().is_empty(), "nothing was kept");
    while let Some(r) = f.held.pop() {
        r.complete_with_information(NtStatus::SUCCESS, 4);
    }
    assert_eq!(wait(p1).status, NtStatus::SUCCESS);
    assert_eq!(wait(p2).status, NtStatus::SUCCESS);
}

/// Rule: a request acknowledged without requeue stays driver-owned across the power-down and
/// the driver gets `EvtIoResume` with its id after power-up.
#[test]
fn io_stop_keep_acknowledged_request_gets_io_resume_after_power_up() {
    let f = power_fixture("pw-stop-keep", Answer::Keep);
    let p = f.handle.submit(read_op(0, 4));
    f.held.wait_for(1);

    power_down(&f.device).unwrap();
    assert_eq!(f.stops.lock().unwrap().len(), 1);
    let st = f.queue.status();
    assert!(!st.powered_on);
    assert_eq!((st.queued, st.driver_owned), (0, 1), "kept by the driver");
    assert!(
        f.resumes.lock().unwrap().is_empty(),
        "no resume before power-up"
    );

    power_up(&f.device).unwrap();
    assert_eq!(*f.resumes.lock().unwrap(), vec![p.id()]);
    assert_eq!(
        f.presented.lock().unwrap()[&p.id()],
        1,
        "not presented again"
    );
    let r = f.held.pop().unwrap();
    r.complete_with_information(NtStatus::SUCCESS, 4);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
}

/// Rule: while powered down a power-managed queue presents nothing; arrivals are queued and
/// presented after power-up.
#[test]
fn no_requests_presented_while_powered_down() {
    let f = power_fixture("pw-no-present", Answer::Requeue);
    power_down(&f.device).unwrap();
    assert!(
        f.stops.lock().unwrap().is_empty(),
        "nothing was driver-owned"
    );

    let pending: Vec<_> = (0..3).map(|_| f.handle.submit(read_op(0, 4))).collect();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(f.queue.stats().presented, 0, "presented while powered down");
    assert_eq!(f.queue.status().queued, 3);
    assert!(f.held.is_empty());

    power_up(&f.device).unwrap();
    f.held.wait_for(3);
    while let Some(r) = f.held.pop() {
        r.complete(NtStatus::SUCCESS);
    }
    for p in pending {
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
}

/// Rule: a power-managed queue without `EvtIoStop` makes power-down wait until its driver-owned
/// requests are completed.
#[test]
fn power_down_without_io_stop_waits_for_driver_owned_requests() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let device = device(&driver, "pw-no-io-stop", ObjectAttributes::default());
    let held = Arc::new(Held::default());
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let h = held.clone();
    cfg.io_read(move |_cx, req, _len| h.push(req));
    let queue = device
        .create_queue(cfg, ObjectAttributes::default())
        .unwrap();
    let handle = kernel.io().open("pw-no-io-stop").unwrap();

    let p = handle.submit(read_op(0, 4));
    held.wait_for(1);

    let (tx, rx) = mpsc::channel();
    let d = device.clone();
    let downer = std::thread::spawn(move || {
        let r = d.power_down();
        tx.send(r).unwrap();
    });
    // Rendezvous: the power-down has begun once the queue reports it is no longer on.
    eventually("power-down started", || !queue.status().powered_on);
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "power-down returned while the driver still owned a request"
    );
    let r = held.pop().unwrap();
    r.complete_with_information(NtStatus::SUCCESS, 4);
    let result = rx
        .recv_timeout(TIMEOUT)
        .expect("power-down did not return after the request completed");
    assert_eq!(result, Ok(()));
    downer.join().unwrap();
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
    power_up(&device).unwrap();
}

/// Rule: retrieving from a powered-down manual queue fails with `STATUS_WDF_PAUSED`.
#[test]
fn retrieve_while_powered_down_is_wdf_paused() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let device = device(&driver, "pw-retrieve", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let queue = device
        .create_queue(cfg, ObjectAttributes::default())
        .unwrap();
    let handle = kernel.io().open("pw-retrieve").unwrap();

    let p = handle.submit(read_op(0, 4));
    power_down(&device).unwrap();
    assert_eq!(
        queue.retrieve_next_request().unwrap_err(),
        NtStatus::WDF_PAUSED
    );
    power_up(&device).unwrap();
    let r = queue.retrieve_next_request().unwrap();
    assert_eq!(r.id(), p.id());
    r.complete(NtStatus::SUCCESS);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
}

/// Rule: power transitions need PASSIVE_LEVEL; at DISPATCH_LEVEL they fail with
/// `STATUS_INVALID_DEVICE_REQUEST` and leave the queues powered.
#[test]
fn power_down_at_dispatch_is_invalid_device_request() {
    let f = power_fixture("pw-dispatch", Answer::Requeue);
    let r = {
        let _g = irql::raise(Irql::Dispatch);
        f.device.power_down()
    };
    assert_eq!(r, Err(NtStatus::INVALID_DEVICE_REQUEST));
    assert!(f.queue.status().powered_on);
    let r = {
        let _g = irql::raise(Irql::Dispatch);
        f.device.power_up()
    };
    assert_eq!(r, Err(NtStatus::INVALID_DEVICE_REQUEST));

    // Still fully working.
    let p = f.handle.submit(read_op(0, 4));
    f.held.wait_for(1);
    f.held.pop().unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
}

/// Rule (spec §5.11): on device removal the queues are purged and `EvtIoStop` is called with
/// `StopAction::Purge` for each driver-owned request; a driver that completes them there leaks
/// nothing.
#[test]
fn device_removal_calls_io_stop_with_purge_action() {
    verifier_record();
    let f = power_fixture("pw-removal", Answer::Complete);
    let p = f.handle.submit(read_op(0, 4));
    f.held.wait_for(1);
    let queued_behind = {
        // A second request stays driver-owned as well (parallel queue).
        let q = f.handle.submit(read_op(0, 4));
        f.held.wait_for(2);
        q
    };

    let d = f.device.clone();
    within("Device::delete", move || d.delete());
    {
        let stops = f.stops.lock().unwrap();
        assert_eq!(stops.len(), 2, "one EvtIoStop per driver-owned request");
        for (n, token) in stops.iter() {
            assert_eq!(n.action, StopAction::Purge);
            assert!(*token);
        }
    }
    assert_eq!(wait(p).status, NtStatus::CANCELLED);
    assert_eq!(wait(queued_behind).status, NtStatus::CANCELLED);
    assert_eq!(
        nt::verifier::count(&wdf::verifier::rules::REQUEST_LEAKED),
        0,
        "{:?}",
        nt::verifier::recent()
    );
    assert_eq!(f.queue.driver_owned_count(), 0);
}

/// Rule (spec §5.11, under concurrency): with arrivals and completions racing on a parallel
/// queue without `EvtIoStop` (the lock-free fast path), power-down returns only once the driver
/// owns nothing, and nothing is presented until power-up.
#[test]
fn power_down_under_load_returns_only_when_driver_owns_nothing() {
    const CYCLES: usize = 30;
    let kernel = kernel();
    let driver = driver(&kernel);
    let device = device(&driver, "pw-load", ObjectAttributes::default());
    let held = Arc::new(Held::default());
    let outstanding = Arc::new(AtomicUsize::new(0));
    let inflight = Arc::new(InFlight::default());
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (h, o, fl) = (held.clone(), outstanding.clone(), inflight.clone());
    cfg.io_read(move |_cx, req, len| {
        let g = fl.enter();
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
    let queue = device
        .create_queue(cfg, ObjectAttributes::default())
        .unwrap();
    let handle = kernel.io().open("pw-load").unwrap();

    let done = AtomicBool::new(false);
    let clients_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    while !done.load(Ordering::SeqCst) {
                        assert_eq!(wait(handle.submit(read_op(0, 8))).status, NtStatus::SUCCESS);
                    }
                })
            })
            .collect();
        // The completer runs until every client has stopped sending, then empties `held`.
        s.spawn(|| {
            loop {
                match held.pop() {
                    Some(r) => {
                        outstanding.fetch_sub(1, Ordering::SeqCst);
                        r.complete(NtStatus::SUCCESS);
                    }
                    None if clients_done.load(Ordering::SeqCst) => break,
                    None => std::thread::yield_now(),
                }
            }
        });
        // However the cycles end, the clients must stop, or the scope would never end.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let rng = Rng::new(3);
            for cycle in 0..CYCLES {
                std::thread::sleep(Duration::from_micros(rng.below(2000)));
                power_down(&device).unwrap();
                assert_eq!(
                    (outstanding.load(Ordering::SeqCst), inflight.now()),
                    (0, 0),
                    "cycle {cycle}: power-down returned while the driver owned requests"
                );
                let st = queue.status();
                assert_eq!(st.driver_owned, 0, "cycle {cycle}");
                assert!(!st.powered_on);
                let presented = queue.stats().presented;
                std::thread::sleep(Duration::from_micros(300));
                assert_eq!(
                    queue.stats().presented,
                    presented,
                    "cycle {cycle}: presented while powered down"
                );
                power_up(&device).unwrap();
            }
        }));
        done.store(true, Ordering::SeqCst);
        let results: Vec<_> = clients.into_iter().map(|t| t.join()).collect();
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

/// Rule (spec §5.11): `EvtIoStop` flags a request the driver marked cancelable
/// (`WdfRequestStopRequestCancelable`); the driver unmarks it before acknowledging.
#[test]
fn io_stop_flags_cancelable_requests() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let device = device(&driver, "pw-cancelable", ObjectAttributes::default());
    let tickets: Arc<Mutex<Vec<CancelableRequest>>> = Arc::default();
    let notices: Arc<Mutex<Vec<StopNotice>>> = Arc::default();
    let presented = Arc::new(AtomicUsize::new(0));
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (t, n) = (tickets.clone(), presented.clone());
    cfg.io_read(move |_cx, req, _len| {
        n.fetch_add(1, Ordering::SeqCst);
        let ticket = req
            .mark_cancelable(|_cx, req| req.complete(NtStatus::CANCELLED))
            .unwrap();
        t.lock().unwrap().push(ticket);
    });
    let (t, n) = (tickets.clone(), notices.clone());
    cfg.io_stop(move |_cx, notice| {
        n.lock().unwrap().push(notice);
        let ticket = {
            let mut v = t.lock().unwrap();
            let pos = v.iter().position(|t| t.id() == notice.request).unwrap();
            v.swap_remove(pos)
        };
        let req = ticket.unmark().expect("not cancelled");
        req.stop_acknowledge_requeue().unwrap();
    });
    let _queue = device
        .create_queue(cfg, ObjectAttributes::default())
        .unwrap();
    let handle = kernel.io().open("pw-cancelable").unwrap();

    let p = handle.submit(read_op(0, 4));
    assert_eq!(presented.load(Ordering::SeqCst), 1);
    power_down(&device).unwrap();
    {
        let notices = notices.lock().unwrap();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].request, p.id());
        assert_eq!(notices[0].action, StopAction::Suspend);
        assert!(
            notices[0].cancelable,
            "EvtIoStop must flag a request that is marked cancelable"
        );
    }
    power_up(&device).unwrap();
    assert_eq!(presented.load(Ordering::SeqCst), 2, "presented again");
    let ticket = tickets.lock().unwrap().pop().unwrap();
    ticket.unmark().unwrap().complete(NtStatus::SUCCESS);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
}
