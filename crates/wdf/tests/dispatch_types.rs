//! Dispatch types (spec §5.7, §5.9, §6.2, §9): parallel limits, sequential presentation,
//! manual queues and retrieval, requeue, and where the next request is presented after a
//! completion.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nt::irql::{self, Irql};
use nt::{Dpc, NtStatus};
use wdf::verifier::rules;
use wdf::{DispatchType, ObjectAttributes, QueueConfig, Request, SyncScope};

use common::*;

type Held = Arc<Mutex<Vec<Request>>>;

#[test]
fn parallel_limit_caps_driver_owned_requests() {
    const LIMIT: u32 = 3;
    const THREADS: usize = 4;
    const PER_THREAD: usize = 4;
    const TOTAL: usize = THREADS * PER_THREAD;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-parallel-limit", ObjectAttributes::default());
    let held: Held = Arc::default();
    let max_owned = Arc::new(AtomicUsize::new(0));
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    cfg.parallel_limit = Some(LIMIT);
    let (hd, m) = (held.clone(), max_owned.clone());
    cfg.io_read(move |cx, req, _len| {
        m.fetch_max(cx.queue().driver_owned_count(), Ordering::SeqCst);
        hd.lock().unwrap().push(req);
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h = kernel.io().open("dt-parallel-limit").unwrap();
    let pending: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let h = &h;
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|_| h.submit(read_op(0, 4)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(q.driver_owned_count(), LIMIT as usize);
    assert_eq!(held.lock().unwrap().len(), LIMIT as usize);
    assert_eq!(q.pending_count(), TOTAL - LIMIT as usize);

    // Complete what the driver holds; each completion presents the next queued request.
    let deadline = Instant::now() + TIMEOUT;
    let mut completed = 0;
    while completed < TOTAL {
        assert!(
            Instant::now() < deadline,
            "stuck after {completed} completions"
        );
        let batch = std::mem::take(&mut *held.lock().unwrap());
        for req in batch {
            req.complete_with_information(NtStatus::SUCCESS, 4);
            completed += 1;
            assert!(q.driver_owned_count() <= LIMIT as usize);
        }
    }
    for p in pending {
        let c = wait(p);
        assert_eq!(c.status, NtStatus::SUCCESS);
        assert_eq!(c.information, 4);
    }
    assert_eq!(max_owned.load(Ordering::SeqCst), LIMIT as usize);
    assert_eq!(q.stats().presented, TOTAL as u64);
    assert_eq!(q.stats().completed, TOTAL as u64);
}

#[test]
fn sequential_queue_presents_the_next_request_only_after_completion() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-sequential-dpc", ObjectAttributes::default());
    let held: Held = Arc::default();
    let seen: Arc<Mutex<Vec<(u64, String, Irql)>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let (hd, sn) = (held.clone(), seen.clone());
    cfg.io_read(move |_cx, req, _len| {
        sn.lock()
            .unwrap()
            .push((req.parameters().offset, thread_name(), irql::current()));
        hd.lock().unwrap().push(req);
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h = kernel.io().open("dt-sequential-dpc").unwrap();
    let a = h.submit(read_op(0, 1));
    let b = h.submit(read_op(1, 1));
    assert_eq!(seen.lock().unwrap().len(), 1, "B waits for A");
    assert_eq!(q.pending_count(), 1);
    assert_eq!(q.driver_owned_count(), 1);

    // Complete A from a DPC: the completing thread, outside any dispatch loop, presents B.
    let (tx, rx) = mpsc::channel();
    let hd = held.clone();
    let tx = Mutex::new(tx);
    let dpc = Dpc::new(&kernel, "complete A", move || {
        let req = hd.lock().unwrap().pop().expect("A is held");
        req.complete_with_information(NtStatus::SUCCESS, 1);
        tx.lock().unwrap().send(()).unwrap();
    });
    assert!(dpc.insert());
    rx.recv_timeout(TIMEOUT).expect("the DPC ran");
    assert_eq!(wait(a).status, NtStatus::SUCCESS);

    let s = seen.lock().unwrap().clone();
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].0, 1);
    assert!(
        s[1].1.starts_with("nt-dpc"),
        "B is presented on the completing DPC, got {:?}",
        s[1].1
    );
    assert_eq!(s[1].2, Irql::Dispatch);

    let req = held.lock().unwrap().pop().expect("B is held");
    req.complete_with_information(NtStatus::SUCCESS, 1);
    assert_eq!(wait(b).status, NtStatus::SUCCESS);
}

#[test]
fn completion_inside_a_callback_does_not_recurse() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-no-recursion", ObjectAttributes::default());
    let held: Held = Arc::default();
    // (offset, callback nesting depth at entry, thread)
    let seen: Arc<Mutex<Vec<(u64, usize, u64)>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let (hd, sn) = (held.clone(), seen.clone());
    cfg.io_read(move |_cx, req, len| {
        let offset = req.parameters().offset;
        sn.lock()
            .unwrap()
            .push((offset, inside_depth(), nt::thread::current_id()));
        let _inside = InsideCallback::enter();
        if offset == 0 {
            hd.lock().unwrap().push(req);
        } else {
            // Completing frees the queue; the next request must be presented only after
            // this callback returns, not from inside `complete`.
            req.complete_with_information(NtStatus::SUCCESS, len);
        }
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h = kernel.io().open("dt-no-recursion").unwrap();
    let pending: Vec<_> = (0..4).map(|i| h.submit(read_op(i, 1))).collect();
    assert_eq!(seen.lock().unwrap().len(), 1);
    let a = held.lock().unwrap().pop().unwrap();
    a.complete_with_information(NtStatus::SUCCESS, 1);
    for p in pending {
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
    let me = nt::thread::current_id();
    let s = seen.lock().unwrap().clone();
    assert_eq!(
        s,
        vec![(0, 0, me), (1, 0, me), (2, 0, me), (3, 0, me)],
        "the completing thread presents the rest one after another, never nested"
    );
}

#[test]
fn manual_queue_presents_nothing_and_retrieval_is_fifo() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-manual", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h = kernel.io().open("dt-manual").unwrap();
    let pending: Vec<_> = (0..3u8)
        .map(|i| h.submit(write_op(0, vec![i; 1 + i as usize])))
        .collect();
    assert_eq!(q.pending_count(), 3);
    assert_eq!(q.stats().arrived, 3);
    assert_eq!(q.stats().presented, 0, "a manual queue presents nothing");
    assert!(pending.iter().all(|p| !p.is_complete()));

    for i in 0..3u8 {
        let req = q.retrieve_next_request().unwrap();
        assert_eq!(req.input_buffer(1).unwrap(), vec![i; 1 + i as usize]);
        assert_eq!(q.driver_owned_count(), 1);
        req.complete_with_information(NtStatus::SUCCESS, 1 + i as usize);
    }
    assert_eq!(
        q.retrieve_next_request().unwrap_err(),
        NtStatus::NO_MORE_ENTRIES
    );
    for (i, p) in pending.into_iter().enumerate() {
        let c = wait(p);
        assert_eq!(c.status, NtStatus::SUCCESS);
        assert_eq!(c.information, 1 + i);
    }
    assert_eq!(q.driver_owned_count(), 0);
}

#[test]
fn retrieval_from_a_parallel_queue_is_invalid_device_state() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-parallel-retrieve", ObjectAttributes::default());
    let held: Held = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    cfg.parallel_limit = Some(1);
    let hd = held.clone();
    cfg.io_read(move |_cx, req, _len| hd.lock().unwrap().push(req));
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("dt-parallel-retrieve").unwrap();
    let a = h.submit(read_op(0, 1));
    let b = h.submit(read_op(0, 1));
    assert_eq!(q.pending_count(), 1, "one is queued behind the limit");
    assert_eq!(
        q.retrieve_next_request().unwrap_err(),
        NtStatus::INVALID_DEVICE_STATE
    );
    assert_eq!(
        q.retrieve_request_by_file_object(h.file()).unwrap_err(),
        NtStatus::INVALID_DEVICE_STATE
    );
    // Still queued, and presented normally once the first completes.
    // (Take each request out before completing it: completion presents the next one, whose
    // callback pushes into `held`.)
    let first = held.lock().unwrap().pop().unwrap();
    first.complete(NtStatus::SUCCESS);
    let second = held.lock().unwrap().pop().expect("b was presented");
    second.complete(NtStatus::SUCCESS);
    assert_eq!(wait(a).status, NtStatus::SUCCESS);
    assert_eq!(wait(b).status, NtStatus::SUCCESS);
}

#[test]
fn requeue_puts_the_request_back_at_the_head() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-requeue", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("dt-requeue").unwrap();
    let pa = h.submit(read_op(10, 1));
    let pb = h.submit(read_op(20, 1));

    let a = q.retrieve_next_request().unwrap();
    assert_eq!(a.parameters().offset, 10);
    assert_eq!(q.driver_owned_count(), 1);
    a.requeue().expect("requeue on a manual queue");
    assert_eq!(q.driver_owned_count(), 0);
    assert_eq!(q.pending_count(), 2);
    assert!(!pa.is_complete());

    let again = q.retrieve_next_request().unwrap();
    assert_eq!(again.parameters().offset, 10, "requeue goes to the head");
    let b = q.retrieve_next_request().unwrap();
    assert_eq!(b.parameters().offset, 20);
    again.complete_with_information(NtStatus::SUCCESS, 1);
    b.complete_with_information(NtStatus::SUCCESS, 1);
    assert_eq!(wait(pa).status, NtStatus::SUCCESS);
    assert_eq!(wait(pb).status, NtStatus::SUCCESS);
}

#[test]
fn requeue_on_a_non_manual_queue_is_invalid_device_request() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    for (name, dt) in [
        ("dt-requeue-parallel", DispatchType::Parallel),
        ("dt-requeue-sequential", DispatchType::Sequential),
    ] {
        let dev = device(&driver, name, ObjectAttributes::scope(SyncScope::Device));
        let results = Arc::new(Mutex::new(Vec::new()));
        let mut cfg = QueueConfig::new(dt);
        cfg.default_queue = true;
        let r = results.clone();
        cfg.io_read(move |_cx, req, len| match req.requeue() {
            Ok(()) => r.lock().unwrap().push(Ok(())),
            Err(e) => {
                r.lock().unwrap().push(Err(e.status));
                // The request came back, still driver-owned: complete it.
                e.request.complete_with_information(NtStatus::SUCCESS, len);
            }
        });
        let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
        let h = kernel.io().open(name).unwrap();
        let c = read(&h, 0, 3);
        assert_eq!(c.status, NtStatus::SUCCESS, "{dt:?}");
        assert_eq!(c.information, 3);
        assert_eq!(
            *results.lock().unwrap(),
            vec![Err(NtStatus::INVALID_DEVICE_REQUEST)],
            "{dt:?}"
        );
        assert_eq!(q.driver_owned_count(), 0);
        assert_eq!(q.pending_count(), 0);
    }
    assert_eq!(wdf::verifier::count(&rules::REQUEST_MISUSE), 2);
}

#[test]
fn retrieve_by_file_object_takes_that_handles_first_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-by-file", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h1 = kernel.io().open("dt-by-file").unwrap();
    let h2 = kernel.io().open("dt-by-file").unwrap();
    assert_ne!(h1.file().id(), h2.file().id());

    let p1a = h1.submit(read_op(1, 1));
    let p2 = h2.submit(read_op(2, 1));
    let p1b = h1.submit(read_op(3, 1));

    let r2 = q.retrieve_request_by_file_object(h2.file()).unwrap();
    assert_eq!(r2.file_object().id(), h2.file().id());
    assert_eq!(r2.parameters().offset, 2);
    assert_eq!(
        q.retrieve_request_by_file_object(h2.file()).unwrap_err(),
        NtStatus::NO_MORE_ENTRIES
    );
    let r1 = q.retrieve_request_by_file_object(h1.file()).unwrap();
    assert_eq!(r1.file_object().id(), h1.file().id());
    assert_eq!(
        r1.parameters().offset,
        1,
        "the handle's first queued request"
    );
    assert_eq!(q.pending_count(), 1);
    let r1b = q.retrieve_next_request().unwrap();
    assert_eq!(r1b.parameters().offset, 3);

    for r in [r1, r2, r1b] {
        r.complete_with_information(NtStatus::SUCCESS, 1);
    }
    for p in [p1a, p2, p1b] {
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
}

#[test]
fn retrieve_matching_finds_a_request_by_its_parameters() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-matching", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("dt-matching").unwrap();
    let pending: Vec<_> = (0..3).map(|i| h.submit(read_op(i * 10, 1))).collect();

    assert_eq!(
        q.retrieve_matching(|p| p.offset == 99).unwrap_err(),
        NtStatus::NOT_FOUND
    );
    let r = q.retrieve_matching(|p| p.offset == 10).unwrap();
    assert_eq!(r.parameters().offset, 10);
    r.complete_with_information(NtStatus::SUCCESS, 1);
    for want in [0, 20] {
        let r = q.retrieve_next_request().unwrap();
        assert_eq!(r.parameters().offset, want);
        r.complete_with_information(NtStatus::SUCCESS, 1);
    }
    for p in pending {
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
}

#[test]
fn a_request_cancelled_in_a_manual_queue_is_completed_cancelled() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-manual-cancel", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("dt-manual-cancel").unwrap();
    let a = h.submit(read_op(1, 1));
    let b = h.submit(read_op(2, 1));
    a.cancel();
    assert_eq!(wait(a).status, NtStatus::CANCELLED);
    assert_eq!(q.pending_count(), 1);
    let r = q.retrieve_next_request().unwrap();
    assert_eq!(r.parameters().offset, 2);
    r.complete_with_information(NtStatus::SUCCESS, 1);
    assert_eq!(wait(b).status, NtStatus::SUCCESS);
}

#[test]
fn requeueing_a_cancelled_request_completes_it_cancelled() {
    // Spec §5.4: inserting an already-cancelled request into a queue completes it with
    // STATUS_CANCELLED; the requeue call itself succeeds (§5.9).
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "dt-requeue-cancelled", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("dt-requeue-cancelled").unwrap();
    let p = h.submit(read_op(0, 1));
    let r = q.retrieve_next_request().unwrap();
    p.cancel(); // driver-owned: only recorded
    assert!(r.is_canceled());
    assert!(!p.is_complete());
    r.requeue().expect("requeue succeeds");
    let c = wait(p);
    assert_eq!(c.status, NtStatus::CANCELLED);
    assert_eq!(q.pending_count(), 0);
    assert_eq!(q.driver_owned_count(), 0);
    assert_eq!(
        q.retrieve_next_request().unwrap_err(),
        NtStatus::NO_MORE_ENTRIES
    );
}
