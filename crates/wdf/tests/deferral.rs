//! Deferral rule 1 (spec §3.2): a passive-level queue entered above PASSIVE_LEVEL hands the
//! dispatch pass to a system work item; a new request is queued first, so order is kept.
//! (Rule 2, the lock-ownership deferral, is exercised by `forwarding.rs`.)

mod common;

use std::sync::{Arc, Mutex};

use nt::NtStatus;
use nt::irql::{self, Irql};
use wdf::{Device, DispatchType, ExecutionLevel, ObjectAttributes, Queue, QueueConfig, SyncScope};

use common::*;

/// What a callback saw.
#[derive(Clone, Debug)]
struct Seen {
    irql: Irql,
    issued_at: Irql,
    thread: String,
    thread_id: u64,
    offset: u64,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn recording_queue(dev: &Arc<Device>, dispatch: DispatchType) -> (Arc<Queue>, Log) {
    let log: Log = Arc::default();
    let mut cfg = QueueConfig::new(dispatch);
    cfg.default_queue = true;
    let l = log.clone();
    cfg.io_read(move |_cx, req, len| {
        l.lock().unwrap().push(Seen {
            irql: irql::current(),
            issued_at: req.issued_at(),
            thread: thread_name(),
            thread_id: nt::thread::current_id(),
            offset: req.parameters().offset,
        });
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    (q, log)
}

#[test]
fn passive_queue_defers_a_dispatch_level_arrival_to_a_work_item() {
    let kernel = kernel();
    let driver = driver(&kernel);
    for (name, scope) in [
        ("defer-passive-none", SyncScope::None),
        ("defer-passive-device", SyncScope::Device),
        ("defer-passive-queue", SyncScope::Queue),
    ] {
        let dev = device(
            &driver,
            name,
            ObjectAttributes::level(ExecutionLevel::Passive).with_scope(scope),
        );
        let (q, log) = recording_queue(&dev, DispatchType::Parallel);
        assert!(q.constraints().passive_callbacks);

        let h = kernel.io().open(name).unwrap();
        let c = wait(h.submit_at(read_op(0, 8), Irql::Dispatch));
        assert_eq!(c.status, NtStatus::SUCCESS, "{scope:?}");
        assert_eq!(c.information, 8);

        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{scope:?}");
        assert_eq!(seen[0].issued_at, Irql::Dispatch);
        assert_eq!(
            seen[0].irql,
            Irql::Passive,
            "{scope:?}: a passive queue's callback runs at PASSIVE_LEVEL"
        );
        assert!(
            seen[0].thread.starts_with("nt-worker"),
            "{scope:?}: expected a system work item thread, ran on {:?}",
            seen[0].thread
        );
        assert!(q.stats().deferred_irql >= 1, "{scope:?}: {:?}", q.stats());
        assert_eq!(q.stats().deferred_lock, 0);
    }
}

#[test]
fn passive_queue_runs_a_passive_arrival_inline_on_the_sender_thread() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "defer-passive-inline",
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Device),
    );
    let (q, log) = recording_queue(&dev, DispatchType::Parallel);
    let h = kernel.io().open("defer-passive-inline").unwrap();
    let c = read(&h, 0, 2);
    assert_eq!(c.status, NtStatus::SUCCESS);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].irql, Irql::Passive);
    assert_eq!(
        seen[0].thread_id,
        nt::thread::current_id(),
        "with no contention the callback runs on the sender's thread"
    );
    assert_eq!(q.stats().deferred_irql, 0);
}

#[test]
fn deferred_arrivals_keep_their_order() {
    const N: u64 = 60;
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "defer-order",
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Device),
    );
    let (q, log) = recording_queue(&dev, DispatchType::Sequential);
    let h = kernel.io().open("defer-order").unwrap();

    // Alternate: two at DISPATCH_LEVEL (deferred), one at PASSIVE_LEVEL (inline), from one
    // thread without waiting in between.
    let pending: Vec<_> = (0..N)
        .map(|i| {
            let at = if i % 3 == 2 {
                Irql::Passive
            } else {
                Irql::Dispatch
            };
            h.submit_at(read_op(i, 1), at)
        })
        .collect();
    for p in pending {
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }

    let seen = log.lock().unwrap().clone();
    let offsets: Vec<u64> = seen.iter().map(|s| s.offset).collect();
    assert_eq!(
        offsets,
        (0..N).collect::<Vec<_>>(),
        "a deferred request is queued before the pass is deferred, so arrival order is kept"
    );
    assert!(seen.iter().all(|s| s.irql == Irql::Passive));
    assert!(q.stats().deferred_irql >= 1);
    assert_eq!(q.stats().presented, N);
}

/// A device with two sequential read queues, "holder" (routed reads at offset 0..) and
/// "other" (default), where the holder's first request is held so that the next one waits.
/// Returns the holder queue, the held slot, and the log of the holder's presentations.
struct TwoQueues {
    holder: Arc<Queue>,
    held: Arc<Mutex<Option<wdf::Request>>>,
    log: Log,
}

/// `other_attrs`: the attributes of the queue whose callback completes the held request.
fn two_queues(dev: &Arc<Device>, other_attrs: ObjectAttributes) -> TwoQueues {
    let held: Arc<Mutex<Option<wdf::Request>>> = Arc::default();
    let log: Log = Arc::default();
    // The holder: reads. Offset 0 is held; the others are completed and logged.
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    let (h, l) = (held.clone(), log.clone());
    cfg.io_read(move |_cx, req, len| {
        l.lock().unwrap().push(Seen {
            irql: irql::current(),
            issued_at: req.issued_at(),
            thread: format!(
                "{}{}",
                thread_name(),
                if inside_depth() > 0 { " (nested)" } else { "" }
            ),
            thread_id: nt::thread::current_id(),
            offset: req.parameters().offset,
        });
        if req.parameters().offset == 0 {
            *h.lock().unwrap() = Some(req);
        } else {
            req.complete_with_information(NtStatus::SUCCESS, len);
        }
    });
    let holder = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    dev.configure_request_dispatching(&holder, wdf::RequestType::Read)
        .unwrap();
    // The other queue: a write completes the held read from inside its callback.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    let h = held.clone();
    cfg.io_write(move |_cx, req, len| {
        let _inside = InsideCallback::enter();
        if let Some(held) = h.lock().unwrap().take() {
            held.complete_with_information(NtStatus::SUCCESS, 1);
        }
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let other = dev.create_queue(cfg, other_attrs).unwrap();
    dev.configure_request_dispatching(&other, wdf::RequestType::Write)
        .unwrap();
    TwoQueues { holder, held, log }
}

#[test]
fn completing_a_same_lock_queues_request_inside_a_callback_defers_its_next_presentation() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "defer-complete-shared",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let s = two_queues(&dev, ObjectAttributes::default());
    let h = kernel.io().open("defer-complete-shared").unwrap();
    let first = h.submit(read_op(0, 1));
    let second = h.submit(read_op(1, 1));
    assert_eq!(s.holder.pending_count(), 1);

    // The write's callback (holding the device lock) completes the held read: the holder's
    // next request must not be presented on this stack, but by the holder's DPC.
    assert_eq!(write(&h, 0, vec![1]).status, NtStatus::SUCCESS);
    assert_eq!(wait(first).status, NtStatus::SUCCESS);
    assert_eq!(wait(second).status, NtStatus::SUCCESS);
    let log = s.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    assert!(
        log[1].thread.starts_with("nt-dpc") && !log[1].thread.ends_with("(nested)"),
        "presented by the holder's DPC, got {:?}",
        log[1].thread
    );
    assert!(s.holder.stats().deferred_lock >= 1);
    assert!(s.held.lock().unwrap().is_none());
}

#[test]
fn completing_another_locks_queues_request_inside_a_callback_presents_the_next_nested() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "defer-complete-other",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let s = two_queues(&dev, ObjectAttributes::scope(SyncScope::Queue));
    let h = kernel.io().open("defer-complete-other").unwrap();
    let first = h.submit(read_op(0, 1));
    let second = h.submit(read_op(1, 1));

    // The write's callback holds only its own queue's lock: the holder's next request is
    // presented synchronously, nested in that callback, on this thread (spec §9.7).
    assert_eq!(write(&h, 0, vec![1]).status, NtStatus::SUCCESS);
    assert_eq!(wait(first).status, NtStatus::SUCCESS);
    assert_eq!(wait(second).status, NtStatus::SUCCESS);
    let log = s.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    assert!(log[1].thread.ends_with("(nested)"), "{:?}", log[1].thread);
    assert_eq!(log[1].thread_id, nt::thread::current_id());
    assert_eq!(s.holder.stats().deferred_lock, 0);
}

#[test]
fn completing_a_passive_queues_request_at_dispatch_level_defers_the_next_to_a_work_item() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "defer-complete-dispatch",
        ObjectAttributes::level(ExecutionLevel::Passive),
    );
    let held: Arc<Mutex<Option<wdf::Request>>> = Arc::default();
    let log: Log = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let (hd, l) = (held.clone(), log.clone());
    cfg.io_read(move |_cx, req, len| {
        l.lock().unwrap().push(Seen {
            irql: irql::current(),
            issued_at: req.issued_at(),
            thread: thread_name(),
            thread_id: nt::thread::current_id(),
            offset: req.parameters().offset,
        });
        if req.parameters().offset == 0 {
            *hd.lock().unwrap() = Some(req);
        } else {
            req.complete_with_information(NtStatus::SUCCESS, len);
        }
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("defer-complete-dispatch").unwrap();
    let first = h.submit(read_op(0, 1));
    let second = h.submit(read_op(1, 1));

    // Complete the held request from a DPC (DISPATCH_LEVEL): the passive queue's next
    // request is presented by its work item, at PASSIVE_LEVEL.
    let hd = held.clone();
    let dpc = nt::Dpc::new(&kernel, "complete held", move || {
        if let Some(r) = hd.lock().unwrap().take() {
            r.complete_with_information(NtStatus::SUCCESS, 1);
        }
    });
    assert!(dpc.insert());
    assert_eq!(wait(first).status, NtStatus::SUCCESS);
    assert_eq!(wait(second).status, NtStatus::SUCCESS);
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].irql, Irql::Passive);
    assert!(
        log[1].thread.starts_with("nt-worker"),
        "{:?}",
        log[1].thread
    );
    assert!(q.stats().deferred_irql >= 1);
}
