//! Requests (spec §6): buffers, completion checks and status translation, what happens to a
//! request the driver drops or a callback that panics, and cancellation of queued and
//! driver-owned requests.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use nt::NtStatus;
use nt::irql::{self, Irql};
use wdf::verifier::{self, rules};
use wdf::{DispatchType, ObjectAttributes, QueueConfig, Request, SyncScope};

use common::*;

#[test]
fn buffers_of_the_wrong_direction_are_invalid_device_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "req-direction", ObjectAttributes::default());
    let got: Arc<Mutex<Vec<Result<usize, NtStatus>>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let g = got.clone();
    cfg.io_read(move |_cx, req, len| {
        g.lock().unwrap().push(req.input_buffer(0).map(<[u8]>::len));
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let g = got.clone();
    cfg.io_write(move |_cx, mut req, len| {
        g.lock()
            .unwrap()
            .push(req.output_buffer(0).map(|b| b.len()));
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("req-direction").unwrap();
    assert_eq!(read(&h, 0, 4).status, NtStatus::SUCCESS);
    assert_eq!(write(&h, 0, vec![1; 4]).status, NtStatus::SUCCESS);
    assert_eq!(
        *got.lock().unwrap(),
        vec![
            Err(NtStatus::INVALID_DEVICE_REQUEST),
            Err(NtStatus::INVALID_DEVICE_REQUEST)
        ],
        "a read has no input buffer, a write no output buffer"
    );
}

#[test]
fn short_or_empty_buffers_are_buffer_too_small() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "req-short", ObjectAttributes::default());
    // For each ioctl: (output_buffer(min_out), input_buffer(min_in)) results as lengths.
    type Got = (Result<usize, NtStatus>, Result<usize, NtStatus>);
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let g = got.clone();
    cfg.io_device_control(move |_cx, mut req, _out, _inp, code| {
        let (min_out, min_in) = ((code >> 8) as usize, (code & 0xff) as usize);
        let o = req.output_buffer(min_out).map(|b| b.len());
        let i = req.input_buffer(min_in).map(<[u8]>::len);
        g.lock().unwrap().push((o, i));
        req.complete(NtStatus::SUCCESS);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("req-short").unwrap();
    let code = |min_out: u32, min_in: u32| (min_out << 8) | min_in;
    ioctl(&h, code(8, 4), vec![0; 3], 4); // both shorter than required
    ioctl(&h, code(4, 3), vec![0; 3], 4); // exactly long enough
    ioctl(&h, code(2, 1), vec![0; 3], 6); // longer: the full length is returned
    ioctl(&h, code(0, 0), vec![], 0); // empty buffers, even with no minimum
    assert_eq!(
        *got.lock().unwrap(),
        vec![
            (
                Err(NtStatus::BUFFER_TOO_SMALL),
                Err(NtStatus::BUFFER_TOO_SMALL)
            ),
            (Ok(4), Ok(3)),
            (Ok(6), Ok(3)),
            (
                Err(NtStatus::BUFFER_TOO_SMALL),
                Err(NtStatus::BUFFER_TOO_SMALL)
            ),
        ]
    );
}

#[test]
fn buffers_carry_data_both_ways() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "req-data", ObjectAttributes::default());
    let stored: Arc<Mutex<Vec<u8>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let s = stored.clone();
    cfg.io_write(move |_cx, req, len| {
        *s.lock().unwrap() = req.input_buffer(len).unwrap().to_vec();
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let s = stored.clone();
    cfg.io_read(move |_cx, mut req, len| {
        let data = s.lock().unwrap().clone();
        let n = len.min(data.len());
        req.output_buffer(len).unwrap()[..n].copy_from_slice(&data[..n]);
        req.complete_with_information(NtStatus::SUCCESS, n);
    });
    cfg.io_device_control(|_cx, mut req, out, inp, _code| {
        let mut reversed = req.input_buffer(inp).unwrap().to_vec();
        reversed.reverse();
        let n = out.min(reversed.len());
        req.output_buffer(out).unwrap()[..n].copy_from_slice(&reversed[..n]);
        req.complete_with_information(NtStatus::SUCCESS, n);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("req-data").unwrap();
    assert_eq!(write(&h, 0, b"hello".to_vec()).information, 5);
    let r = read(&h, 0, 16);
    assert_eq!((r.information, r.data), (5, b"hello".to_vec()));
    let c = ioctl(&h, 1, b"abc".to_vec(), 8);
    assert_eq!(c.data, b"cba".to_vec());
}

#[test]
fn information_larger_than_the_buffer_is_clamped_and_reported() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "req-info-mismatch", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    cfg.io_read(|_cx, mut req, len| {
        req.output_buffer(len).unwrap().fill(0xAB);
        req.complete_with_information(NtStatus::SUCCESS, len + 100);
    });
    cfg.io_write(|_cx, req, len| req.complete_with_information(NtStatus::SUCCESS, len + 1));
    cfg.io_device_control(|_cx, req, out, _inp, _code| {
        req.complete_with_information(NtStatus::SUCCESS, out + 5)
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("req-info-mismatch").unwrap();
    let c = read(&h, 0, 4);
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert_eq!(
        c.information, 4,
        "information is clamped to the buffer length"
    );
    assert_eq!(c.data, vec![0xAB; 4]);
    assert_eq!(verifier::count(&rules::INFORMATION_LENGTH_MISMATCH), 1);
    // Writes: the limit is the data written; control requests: the output buffer.
    let c = write(&h, 0, vec![1; 3]);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 3));
    assert_eq!(verifier::count(&rules::INFORMATION_LENGTH_MISMATCH), 2);
    let c = ioctl(&h, 1, vec![], 2);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 2));
    assert_eq!(verifier::count(&rules::INFORMATION_LENGTH_MISMATCH), 3);
    assert_eq!(q.stats().completed, 3);
}

#[test]
fn a_dropped_request_is_cancelled_reported_and_frees_its_queue() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "req-dropped", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    cfg.io_read(|_cx, req, len| {
        if req.parameters().offset == 13 {
            drop(req); // forgotten by the driver
        } else {
            req.complete_with_information(NtStatus::SUCCESS, len);
        }
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("req-dropped").unwrap();
    let c = read(&h, 13, 4);
    assert_eq!(c.status, NtStatus::CANCELLED);
    assert_eq!(c.information, 0);
    assert_eq!(verifier::count(&rules::REQUEST_NOT_COMPLETED), 1);
    assert_eq!(q.driver_owned_count(), 0);
    // The sequential queue is free again.
    assert_eq!(read(&h, 0, 4).status, NtStatus::SUCCESS);
    assert_eq!(verifier::count(&rules::REQUEST_NOT_COMPLETED), 1);
}

#[test]
fn a_panicking_callback_fails_its_request_and_releases_the_lock() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "req-panic",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    cfg.io_read(|_cx, req, len| {
        if req.parameters().offset == 13 {
            panic!("driver bug on purpose");
        }
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("req-panic").unwrap();

    let c = read(&h, 13, 4);
    assert_eq!(c.status, NtStatus::INTERNAL_ERROR);
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 1);
    assert_eq!(
        verifier::count(&rules::REQUEST_NOT_COMPLETED),
        0,
        "a request dropped by a panic is not also reported as forgotten"
    );
    assert_eq!(
        irql::current(),
        Irql::Passive,
        "the client's IRQL is restored"
    );
    assert_eq!(q.driver_owned_count(), 0);
    // The lock was released and the queue keeps serving.
    assert!(!dev.callback_lock().is_owned_by_current_thread());
    let c = read(&h, 0, 4);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 4));
    drop(dev.acquire_lock());
    // From another thread too (a spin lock left held would make this spin forever).
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(read(&h, 0, 2).status, NtStatus::SUCCESS));
    });
}

#[test]
fn wdf_status_codes_are_translated_at_completion() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "req-translate", ObjectAttributes::default());
    let table = [
        (NtStatus::WDF_PAUSED, NtStatus::DEVICE_BUSY),
        (NtStatus::WDF_BUSY, NtStatus::DEVICE_BUSY),
        (NtStatus::WDF_INTERNAL_ERROR, NtStatus::INTERNAL_ERROR),
        (
            NtStatus::WDF_TOO_FRAGMENTED,
            NtStatus::INVALID_DEVICE_REQUEST,
        ),
        (
            NtStatus::WDF_TOO_MANY_TRANSFERS,
            NtStatus::INVALID_DEVICE_REQUEST,
        ),
        // Any other WDF error is unknown to the client: INVALID_DEVICE_REQUEST.
        (NtStatus::WDF_NO_CALLBACK, NtStatus::INVALID_DEVICE_REQUEST),
        // Non-WDF statuses pass through.
        (NtStatus::END_OF_FILE, NtStatus::END_OF_FILE),
        (NtStatus::SUCCESS, NtStatus::SUCCESS),
    ];
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let statuses: Vec<NtStatus> = table.iter().map(|(s, _)| *s).collect();
    cfg.io_device_control(move |_cx, req, _o, _i, code| req.complete(statuses[code as usize]));
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("req-translate").unwrap();
    for (i, (sent, seen)) in table.iter().enumerate() {
        assert_eq!(
            ioctl(&h, i as u32, vec![], 0).status,
            *seen,
            "completing with {sent:?}"
        );
    }
}

/// A sequential queue whose first request (offset 0) is held by the driver; every callback is
/// logged by request id.
struct HeldFirst {
    queue: Arc<wdf::Queue>,
    held: Arc<Mutex<Option<Request>>>,
    presented: Arc<Mutex<Vec<u64>>>,
    canceled_flags: Arc<Mutex<Vec<bool>>>,
}

fn held_first(dev: &Arc<wdf::Device>) -> HeldFirst {
    let held: Arc<Mutex<Option<Request>>> = Arc::default();
    let presented: Arc<Mutex<Vec<u64>>> = Arc::default();
    let canceled_flags: Arc<Mutex<Vec<bool>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let (hd, p) = (held.clone(), presented.clone());
    cfg.io_read(move |_cx, req, len| {
        p.lock().unwrap().push(req.id());
        if req.parameters().offset == 0 {
            *hd.lock().unwrap() = Some(req);
        } else {
            req.complete_with_information(NtStatus::SUCCESS, len);
        }
    });
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    HeldFirst {
        queue,
        held,
        presented,
        canceled_flags,
    }
}

#[test]
fn cancelling_a_queued_request_completes_it_cancelled_without_the_driver() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "req-cancel-queued",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let s = held_first(&dev);
    let h = kernel.io().open("req-cancel-queued").unwrap();

    let first = h.submit(read_op(0, 1));
    let second = h.submit(read_op(1, 1));
    let third = h.submit(read_op(2, 1));
    assert_eq!(s.queue.pending_count(), 2);
    let (second_id, third_id) = (second.id(), third.id());

    second.cancel();
    let c = wait(second);
    assert_eq!(c.status, NtStatus::CANCELLED);
    assert_eq!(c.information, 0);
    assert_eq!(s.queue.pending_count(), 1);

    // Completing the held one presents the third, never the cancelled second.
    let req = s.held.lock().unwrap().take().unwrap();
    req.complete_with_information(NtStatus::SUCCESS, 1);
    assert_eq!(wait(first).status, NtStatus::SUCCESS);
    assert_eq!(wait(third).status, NtStatus::SUCCESS);
    let presented = s.presented.lock().unwrap().clone();
    assert_eq!(presented.len(), 2);
    assert!(!presented.contains(&second_id), "the driver never saw it");
    assert_eq!(presented[1], third_id);
    assert_eq!(s.queue.stats().presented, 2);
    assert_eq!(s.queue.pending_count(), 0);
    assert_eq!(s.queue.driver_owned_count(), 0);
}

#[test]
fn cancelling_a_driver_owned_request_is_only_recorded() {
    // Spec §6.1: a driver-owned request is not cancelable by default; the cancel is recorded
    // and the driver, which still owns it, sees it with `is_canceled`.
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "req-cancel-owned", ObjectAttributes::default());
    let s = held_first(&dev);
    let h = kernel.io().open("req-cancel-owned").unwrap();
    let first = h.submit(read_op(0, 1));
    let req_id = first.id();
    first.cancel();
    assert!(
        !first.is_complete(),
        "the framework does not complete a driver-owned request on cancel"
    );
    let req = s.held.lock().unwrap().take().expect("held");
    assert_eq!(req.id(), req_id);
    s.canceled_flags.lock().unwrap().push(req.is_canceled());
    req.complete(NtStatus::CANCELLED);
    assert_eq!(wait(first).status, NtStatus::CANCELLED);
    assert_eq!(*s.canceled_flags.lock().unwrap(), vec![true]);
    assert_eq!(s.queue.driver_owned_count(), 0);
}

#[test]
fn many_requests_cancelled_while_queued_are_each_completed_once() {
    // Cancel from several threads while another thread completes the held request: every
    // request finishes exactly once, either presented (SUCCESS) or cancelled.
    const N: usize = 200;
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "req-cancel-race", ObjectAttributes::default());
    let presented = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<Request>();
    let tx = Mutex::new(tx);
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let p = presented.clone();
    cfg.io_read(move |_cx, req, _len| {
        p.fetch_add(1, Ordering::SeqCst);
        tx.lock().unwrap().send(req).unwrap();
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("req-cancel-race").unwrap();
    let pending: Vec<_> = (0..N).map(|i| h.submit(read_op(i as u64, 1))).collect();
    let cancellers: Vec<_> = pending.iter().map(|p| p.canceller()).collect();
    let all_finished = AtomicBool::new(false);

    let (ok, cancelled) = std::thread::scope(|s| {
        // The driver: completes whatever is presented, until every request is accounted for.
        let all_finished = &all_finished;
        let driver_thread = s.spawn(move || {
            let mut done = 0;
            while !all_finished.load(Ordering::SeqCst) {
                if let Ok(req) = rx.recv_timeout(std::time::Duration::from_millis(5)) {
                    req.complete_with_information(NtStatus::SUCCESS, 1);
                    done += 1;
                }
            }
            done
        });
        for chunk in cancellers.chunks(N / 4) {
            s.spawn(move || {
                for c in chunk.iter().skip(1).step_by(2) {
                    c.cancel();
                }
            });
        }
        let mut ok = 0;
        let mut cancelled = 0;
        for p in pending {
            match wait(p).status {
                NtStatus::SUCCESS => ok += 1,
                NtStatus::CANCELLED => cancelled += 1,
                other => panic!("unexpected status {other:?}"),
            }
        }
        all_finished.store(true, Ordering::SeqCst);
        let done = driver_thread.join().unwrap();
        assert_eq!(done, ok);
        (ok, cancelled)
    });
    assert_eq!(ok + cancelled, N);
    assert_eq!(presented.load(Ordering::SeqCst), ok);
    assert_eq!(q.stats().presented, ok as u64);
    assert_eq!(q.stats().completed, ok as u64);
    assert_eq!(q.pending_count(), 0);
    assert_eq!(q.driver_owned_count(), 0);
}
