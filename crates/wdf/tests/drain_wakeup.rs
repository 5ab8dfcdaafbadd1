//! Found by `wdfkit soak` (seed 3, 5 minutes: "the state-change callback of
//! soak-none-dispatch/man never fired", queue not accepting, nothing queued, nothing owned).
//!
//! A drain's completion callback fires from a dispatch pass once nothing is queued or
//! driver-owned (`dispatch_events` step 4). When the *last queued request* leaves the queue by
//! being cancelled — its client cancels it (`Queue::cancel_pending`), or its handle is closed
//! (`Queue::flush_by_file_object`) — the request used to be completed on the spot with no
//! dispatch pass after it, so the callback waited for an event that never came; both paths now
//! run a guarded pass. A manual queue shows it most simply: its queued requests are not
//! presented, so a drain waits for them to be retrieved or cancelled.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nt::NtStatus;
use wdf::{DispatchType, ObjectAttributes, Queue, QueueConfig};

use common::*;

/// A manual default queue on its own device, and a handle to it.
fn manual(kernel: &nt::Kernel, name: &str) -> (Arc<Queue>, nt::io::Handle) {
    let driver = driver(kernel);
    let dev = device(&driver, name, ObjectAttributes::default());
    std::mem::forget(driver); // keep the driver object for the test's lifetime
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open(name).unwrap();
    (q, h)
}

fn counting_callback(fired: &Arc<AtomicUsize>) -> wdf::QueueStateCallback {
    let f = fired.clone();
    Box::new(move |_cx| {
        f.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn drain_completes_when_its_last_queued_request_is_cancelled() {
    let kernel = kernel();
    let (q, h) = manual(&kernel, "drain-cancel");
    let p = h.submit(read_op(0, 8));
    eventually("the request is queued", || q.pending_count() == 1);
    let fired = Arc::new(AtomicUsize::new(0));
    q.drain(Some(counting_callback(&fired)));
    assert_eq!(fired.load(Ordering::SeqCst), 0, "a request is still queued");

    p.cancel();
    assert_eq!(wait(p).status, NtStatus::CANCELLED);
    assert_eq!(q.pending_count(), 0);
    assert_eq!(q.driver_owned_count(), 0);
    eventually("the drain-complete callback", || {
        fired.load(Ordering::SeqCst) == 1
    });
}

#[test]
fn drain_completes_when_its_last_queued_request_is_flushed_by_handle_close() {
    let kernel = kernel();
    let (q, h) = manual(&kernel, "drain-close");
    let p = h.submit(read_op(0, 8));
    eventually("the request is queued", || q.pending_count() == 1);
    let fired = Arc::new(AtomicUsize::new(0));
    q.drain(Some(counting_callback(&fired)));
    assert_eq!(fired.load(Ordering::SeqCst), 0, "a request is still queued");

    let _ = h.close(); // cleanup cancels the handle's queued requests
    assert_eq!(wait(p).status, NtStatus::CANCELLED);
    assert_eq!(q.pending_count(), 0);
    eventually("the drain-complete callback", || {
        fired.load(Ordering::SeqCst) == 1
    });
}

/// The same drain completes when its last queued request is retrieved and completed instead
/// (the path that does run a pass): the control case for the two tests above.
#[test]
fn drain_completes_when_its_last_queued_request_is_retrieved_and_completed() {
    let kernel = kernel();
    let (q, h) = manual(&kernel, "drain-retrieve");
    let p = h.submit(read_op(0, 8));
    eventually("the request is queued", || q.pending_count() == 1);
    let fired = Arc::new(AtomicUsize::new(0));
    q.drain(Some(counting_callback(&fired)));
    assert_eq!(fired.load(Ordering::SeqCst), 0);

    let r = q.retrieve_next_request().expect("the queued request");
    r.complete(NtStatus::SUCCESS);
    assert_eq!(wait(p).status, NtStatus::SUCCESS);
    eventually("the drain-complete callback", || {
        fired.load(Ordering::SeqCst) == 1
    });
}
