//! Forwarding (spec §5.9, §3.2 rule 2): a request forwarded from inside a serialized callback to
//! a queue that shares the caller's lock is deferred (no recursion, no deadlock); to a queue
//! with another lock, or none, the destination's callback runs synchronously, nested. Forwarding
//! to the same queue or to another device's queue fails and hands the request back.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use nt::NtStatus;
use nt::irql::{self, Irql};
use wdf::verifier::rules;
use wdf::{
    Device, DispatchType, ExecutionLevel, ObjectAttributes, Queue, QueueConfig, Request, SyncScope,
};

use common::*;

/// What the source callback saw when `forward` returned.
#[derive(Debug)]
struct ForwardResult {
    /// `Ok` or the error status.
    result: Result<(), NtStatus>,
    /// Whether the destination's callback had already run.
    dest_ran_before_return: bool,
    /// The source callback's thread.
    thread_id: u64,
}

/// What the destination callback saw.
#[derive(Clone, Debug)]
struct DestSeen {
    /// Whether it ran nested inside the source callback, on its stack.
    nested: bool,
    thread: String,
    thread_id: u64,
    irql: Irql,
}

struct Setup {
    device: Arc<Device>,
    source: Arc<Queue>,
    dest: Arc<Queue>,
    results: mpsc::Receiver<ForwardResult>,
    dest_seen: Arc<Mutex<Vec<DestSeen>>>,
}

/// A device with a default parallel source queue whose read handler forwards every request to
/// `target` (the destination queue unless set otherwise), and a destination queue (not routed)
/// whose read handler completes it. A failed forward is completed by the source with SUCCESS.
fn setup_on(
    driver: &Arc<wdf::Driver>,
    name: &str,
    device_attrs: ObjectAttributes,
    dest_attrs: ObjectAttributes,
    target: Option<Arc<Queue>>,
) -> Setup {
    let device = device(driver, name, device_attrs);

    let dest_ran = Arc::new(AtomicBool::new(false));
    let dest_seen: Arc<Mutex<Vec<DestSeen>>> = Arc::default();
    let slot: Arc<OnceLock<Weak<Queue>>> = Arc::default();
    let (tx, results) = mpsc::channel();

    let mut src = QueueConfig::new(DispatchType::Parallel);
    src.default_queue = true;
    src.name = Some(format!("{name}-source"));
    let (s, ran) = (slot.clone(), dest_ran.clone());
    let target = target.map(|q| Arc::downgrade(&q));
    let tx = Mutex::new(tx);
    src.io_read(move |cx, req, _len| {
        let _inside = InsideCallback::enter();
        let dest = match &target {
            Some(t) => t.upgrade().expect("target queue"),
            None if req.parameters().offset == 1 => cx.queue().clone(),
            None => s.get().and_then(Weak::upgrade).expect("destination queue"),
        };
        let r = req.forward(&dest);
        let report = ForwardResult {
            result: r.as_ref().map(|_| ()).map_err(|e| e.status),
            dest_ran_before_return: ran.load(Ordering::SeqCst),
            thread_id: nt::thread::current_id(),
        };
        tx.lock().unwrap().send(report).unwrap();
        if let Err(e) = r {
            let req: Request = e.request;
            req.complete_with_information(NtStatus::SUCCESS, 0);
        }
    });
    let source = device
        .create_queue(src, ObjectAttributes::default())
        .unwrap();

    let mut dst = QueueConfig::new(DispatchType::Parallel);
    dst.name = Some(format!("{name}-dest"));
    let (ran, seen) = (dest_ran.clone(), dest_seen.clone());
    dst.io_read(move |_cx, req, len| {
        seen.lock().unwrap().push(DestSeen {
            nested: inside_depth() > 0,
            thread: thread_name(),
            thread_id: nt::thread::current_id(),
            irql: irql::current(),
        });
        ran.store(true, Ordering::SeqCst);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let dest = device.create_queue(dst, dest_attrs).unwrap();
    slot.set(Arc::downgrade(&dest)).unwrap();

    Setup {
        device,
        source,
        dest,
        results,
        dest_seen,
    }
}

/// [`setup_on`] with a fresh kernel and driver, forwarding to the destination queue.
fn setup(
    name: &str,
    device_attrs: ObjectAttributes,
    dest_attrs: ObjectAttributes,
) -> (nt::Kernel, Arc<wdf::Driver>, Setup) {
    let kernel = kernel();
    let driver = driver(&kernel);
    let s = setup_on(&driver, name, device_attrs, dest_attrs, None);
    (kernel, driver, s)
}

#[test]
fn forward_to_a_queue_sharing_the_device_lock_is_deferred_to_a_dpc() {
    let (kernel, _driver, s) = setup(
        "fwd-same-lock",
        ObjectAttributes::scope(SyncScope::Device),
        ObjectAttributes::default(),
    );
    assert!(s.dest.callback_lock().same_as(s.source.callback_lock()));

    let h = kernel.io().open("fwd-same-lock").unwrap();
    let c = read(&h, 0, 6);
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert_eq!(c.information, 6);

    let r = s.results.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(r.result, Ok(()));
    assert!(
        !r.dest_ran_before_return,
        "the destination shares the held lock: its callback must not run before forward returns"
    );
    let seen = s.dest_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].nested,
        "no recursion into the destination's callback"
    );
    assert!(
        seen[0].thread.starts_with("nt-dpc"),
        "a dispatch-level queue defers to its DPC; ran on {:?}",
        seen[0].thread
    );
    assert_eq!(seen[0].irql, Irql::Dispatch);
    assert!(s.dest.stats().deferred_lock >= 1, "{:?}", s.dest.stats());
    assert_eq!(s.source.driver_owned_count(), 0);
    assert_eq!(
        s.source.stats().completed,
        0,
        "a forward is not a completion"
    );
    // The DPC completed the request; its queue counts it just after the client is woken.
    eventually("the destination counts the completion", || {
        s.dest.stats().completed == 1
    });
}

#[test]
fn forward_to_a_passive_queue_sharing_the_device_lock_is_deferred_to_a_work_item() {
    let (kernel, _driver, s) = setup(
        "fwd-same-lock-passive",
        ObjectAttributes::scope(SyncScope::Device).with_level(ExecutionLevel::Passive),
        ObjectAttributes::default(),
    );
    let h = kernel.io().open("fwd-same-lock-passive").unwrap();
    let c = read(&h, 0, 3);
    assert_eq!(c.status, NtStatus::SUCCESS);

    let r = s.results.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(r.result, Ok(()));
    assert!(!r.dest_ran_before_return);
    let seen = s.dest_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].nested);
    assert!(
        seen[0].thread.starts_with("nt-worker"),
        "a passive-level queue defers to its work item; ran on {:?}",
        seen[0].thread
    );
    assert_eq!(seen[0].irql, Irql::Passive);
    assert!(s.dest.stats().deferred_lock >= 1);
}

#[test]
fn forward_to_a_queue_with_its_own_lock_runs_synchronously() {
    let (kernel, _driver, s) = setup(
        "fwd-queue-lock",
        ObjectAttributes::scope(SyncScope::Device),
        ObjectAttributes::scope(SyncScope::Queue),
    );
    assert!(!s.dest.callback_lock().same_as(s.source.callback_lock()));
    assert!(s.dest.constraints().serialized());

    let h = kernel.io().open("fwd-queue-lock").unwrap();
    let c = read(&h, 0, 5);
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert_eq!(c.information, 5);

    let r = s.results.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(r.result, Ok(()));
    assert!(
        r.dest_ran_before_return,
        "another lock: the destination's callback runs before forward returns"
    );
    let seen = s.dest_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].nested,
        "runs nested, on the forwarding callback's stack"
    );
    assert_eq!(seen[0].thread_id, r.thread_id);
    assert_eq!(s.dest.stats().deferred_lock, 0);
}

#[test]
fn forward_to_a_scope_none_queue_runs_synchronously() {
    let (kernel, _driver, s) = setup(
        "fwd-no-lock",
        ObjectAttributes::scope(SyncScope::Device),
        ObjectAttributes::scope(SyncScope::None),
    );
    assert!(!s.dest.constraints().serialized());

    let h = kernel.io().open("fwd-no-lock").unwrap();
    let c = read(&h, 0, 5);
    assert_eq!(c.status, NtStatus::SUCCESS);

    let r = s.results.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(r.result, Ok(()));
    assert!(r.dest_ran_before_return);
    let seen = s.dest_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].nested);
    assert_eq!(seen[0].thread_id, r.thread_id);
    assert_eq!(
        seen[0].irql,
        Irql::Dispatch,
        "nested inside the source's spin-lock callback, so still at DISPATCH_LEVEL"
    );
    assert_eq!(s.dest.stats().deferred_lock, 0);
}

#[test]
fn forward_to_the_same_queue_fails_and_returns_the_request() {
    verifier_record();
    let (kernel, _driver, s) = setup(
        "fwd-same-queue",
        ObjectAttributes::scope(SyncScope::Device),
        ObjectAttributes::default(),
    );
    let h = kernel.io().open("fwd-same-queue").unwrap();
    // Offset 1: the source forwards to its own queue.
    let c = read(&h, 1, 4);
    assert_eq!(
        c.status,
        NtStatus::SUCCESS,
        "the source got the request back and completed it"
    );
    let r = s.results.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(r.result, Err(NtStatus::INVALID_DEVICE_REQUEST));
    assert!(s.dest_seen.lock().unwrap().is_empty());
    assert_eq!(s.source.stats().completed, 1);
    assert_eq!(s.source.driver_owned_count(), 0);
    assert_eq!(wdf::verifier::count(&rules::REQUEST_MISUSE), 1);
}

#[test]
fn forward_to_another_devices_queue_fails_and_returns_the_request() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    // The other device's queue.
    let other = device(&driver, "fwd-other-device-b", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    let other_ran = Arc::new(AtomicBool::new(false));
    let o = other_ran.clone();
    cfg.io_read(move |_cx, req, _len| {
        o.store(true, Ordering::SeqCst);
        req.complete(NtStatus::SUCCESS);
    });
    let foreign = other
        .create_queue(cfg, ObjectAttributes::default())
        .unwrap();

    let s = setup_on(
        &driver,
        "fwd-other-device-a",
        ObjectAttributes::scope(SyncScope::Device),
        ObjectAttributes::default(),
        Some(foreign.clone()),
    );
    let h = kernel.io().open("fwd-other-device-a").unwrap();
    let c = read(&h, 0, 4);
    assert_eq!(c.status, NtStatus::SUCCESS);
    let r = s.results.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(r.result, Err(NtStatus::INVALID_DEVICE_REQUEST));
    assert!(!other_ran.load(Ordering::SeqCst));
    assert_eq!(foreign.stats().arrived, 0);
    assert_eq!(s.source.stats().completed, 1);
    assert_eq!(wdf::verifier::count(&rules::REQUEST_MISUSE), 1);
    assert_eq!(s.device.name(), "fwd-other-device-a");
}

#[test]
fn forward_frees_a_sequential_source_for_its_next_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "fwd-sequential", ObjectAttributes::default());
    let manual = dev
        .create_queue(
            QueueConfig::new(DispatchType::Manual),
            ObjectAttributes::default(),
        )
        .unwrap();
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let m = Arc::downgrade(&manual);
    cfg.io_read(move |_cx, req, _len| {
        // Park every request in the manual queue without completing it.
        let dest = m.upgrade().unwrap();
        req.forward(&dest).expect("forward to a manual queue");
    });
    let seq = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h = kernel.io().open("fwd-sequential").unwrap();
    let pending: Vec<_> = (0..3).map(|i| h.submit(read_op(i, 2))).collect();
    // None was completed, yet the sequential queue presented all three: each forward freed it.
    assert_eq!(seq.stats().presented, 3);
    assert_eq!(seq.driver_owned_count(), 0);
    assert_eq!(seq.pending_count(), 0);
    assert_eq!(manual.pending_count(), 3);
    for (i, p) in pending.into_iter().enumerate() {
        let req = manual.retrieve_next_request().unwrap();
        assert_eq!(
            req.parameters().offset,
            i as u64,
            "forwarding appends in order"
        );
        req.complete_with_information(NtStatus::SUCCESS, 2);
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
    assert_eq!(
        manual.retrieve_next_request().unwrap_err(),
        NtStatus::NO_MORE_ENTRIES
    );
}
