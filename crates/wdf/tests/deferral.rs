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
