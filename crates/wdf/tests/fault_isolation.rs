//! Fault isolation: a driver callback that panics never takes the process down. The request it
//! held is completed with an error, the panic is reported with the callback and object named,
//! the callback lock is released, and the device keeps serving or is marked failed, as its
//! [`PanicPolicy`] says.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nt::NtStatus;
use wdf::verifier::{self, rules};
use wdf::{
    DeviceInit, DispatchType, ObjectAttributes, PanicPolicy, QueueConfig, Request, SyncScope,
};

use common::*;

/// A Device-scope device whose reads panic while `boom` is set and whose writes are held.
fn panicking_device(
    kernel: &nt::Kernel,
    name: &str,
    policy: PanicPolicy,
) -> (Arc<wdf::Device>, Arc<AtomicBool>, Arc<Mutex<Vec<Request>>>) {
    let driver = driver(kernel);
    let mut init = DeviceInit::new(name);
    init.attributes(ObjectAttributes::scope(SyncScope::Device));
    init.panic_policy(policy);
    let dev = driver.create_device(init).unwrap();
    std::mem::forget(driver); // keep the driver object for the test's lifetime
    let boom = Arc::new(AtomicBool::new(true));
    let held = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let b = boom.clone();
    cfg.io_read(move |_cx, req, len| {
        if b.load(Ordering::SeqCst) {
            panic!("driver bug in EvtIoRead");
        }
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let h = held.clone();
    cfg.io_write(move |_cx, req, _len| h.lock().unwrap().push(req));
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    (dev, boom, held)
}

#[test]
fn a_panicking_callback_fails_its_request_reports_and_releases_the_lock() {
    verifier_record();
    let kernel = kernel();
    let (dev, boom, _held) = panicking_device(&kernel, "fault-keep", PanicPolicy::KeepServing);
    let h = kernel.io().open("fault-keep").unwrap();
    assert_eq!(
        wait(h.submit(read_op(0, 8))).status,
        NtStatus::INTERNAL_ERROR
    );
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 1);
    let report = verifier::recent()
        .into_iter()
        .find(|v| v.rule.name == rules::CALLBACK_PANICKED.name)
        .unwrap();
    assert!(report.message.contains("EvtIoRead"), "{}", report.message);
    assert!(report.message.contains("queue"), "{}", report.message);
    // The device lock was released: taking it from outside works.
    drop(dev.acquire_lock());
    assert!(!dev.callback_lock().is_owned_by_current_thread());
    // And the device keeps serving.
    boom.store(false, Ordering::SeqCst);
    let c = wait(h.submit(read_op(0, 8)));
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 8));
    assert!(!dev.is_failed());
}

#[test]
fn fail_device_policy_marks_the_device_failed_and_cancels_its_queued_requests() {
    verifier_record();
    let kernel = kernel();
    let (dev, _boom, held) = panicking_device(&kernel, "fault-fail", PanicPolicy::FailDevice);
    let h = kernel.io().open("fault-fail").unwrap();
    // A write the driver keeps occupies the sequential queue; a read waits behind it.
    let w = h.submit(write_op(0, vec![1; 4]));
    eventually("write held", || held.lock().unwrap().len() == 1);
    let queued = h.submit(read_op(0, 8));
    // The driver completes the write; the queued read is presented and panics.
    take(&held).complete(NtStatus::SUCCESS);
    assert_eq!(wait(w).status, NtStatus::SUCCESS);
    assert_eq!(wait(queued).status, NtStatus::INTERNAL_ERROR);
    eventually("device marked failed", || dev.is_failed());
    // New requests fail at once; the process is still fine.
    assert_eq!(
        wait(h.submit(read_op(0, 8))).status,
        NtStatus::NO_SUCH_DEVICE
    );
    assert_eq!(
        wait(h.submit(write_op(0, vec![2; 4]))).status,
        NtStatus::NO_SUCH_DEVICE
    );
    assert_eq!(
        kernel.io().open("fault-fail").unwrap_err(),
        NtStatus::NO_SUCH_DEVICE
    );
}

#[test]
fn a_failed_device_cancels_requests_that_were_already_queued() {
    verifier_record();
    let kernel = kernel();
    let (dev, _boom, held) = panicking_device(&kernel, "fault-queued", PanicPolicy::FailDevice);
    let h = kernel.io().open("fault-queued").unwrap();
    // The sequential queue: a held write, then a read (which will panic), then two writes.
    let w = h.submit(write_op(0, vec![1; 4]));
    eventually("write held", || held.lock().unwrap().len() == 1);
    let read = h.submit(read_op(0, 8));
    let q1 = h.submit(write_op(0, vec![2; 4]));
    let q2 = h.submit(write_op(0, vec![3; 4]));
    // Completing the held write presents the read, which panics and fails the device at once:
    // the two writes queued behind it never reach the driver and are cancelled.
    take(&held).complete(NtStatus::SUCCESS);
    assert_eq!(wait(w).status, NtStatus::SUCCESS);
    assert_eq!(wait(read).status, NtStatus::INTERNAL_ERROR);
    assert!(dev.is_failed());
    assert_eq!(wait(q1).status, NtStatus::CANCELLED);
    assert_eq!(wait(q2).status, NtStatus::CANCELLED);
    assert!(
        held.lock().unwrap().is_empty(),
        "nothing reached the driver after the failure"
    );
}

/// Takes the one held request (the lock is released before the caller completes it: completing
/// may present the next request inline, and its callback takes the same lock).
fn take(held: &Mutex<Vec<Request>>) -> Request {
    held.lock().unwrap().pop().expect("a held request")
}
