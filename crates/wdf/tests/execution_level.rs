//! Execution level (spec §3.1): the lock flavour decides the IRQL serialized callbacks run at;
//! unserialized callbacks run at whatever IRQL the request arrived at.

mod common;

use std::sync::{Arc, Mutex};

use nt::irql::{self, Irql};
use nt::sync::LockFlavour;
use nt::{NtStatus, io::IoOp};
use wdf::{Device, DispatchType, ExecutionLevel, ObjectAttributes, Queue, QueueConfig, SyncScope};

use common::*;

/// What a callback saw: the IRQL it ran at, and the IRQL the request was issued at.
type Seen = Arc<Mutex<Vec<(Irql, Irql)>>>;

/// A default parallel queue whose read handler records what it saw and completes.
fn recording_queue(dev: &Arc<Device>, attrs: ObjectAttributes) -> (Arc<Queue>, Seen) {
    let seen: Seen = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let s = seen.clone();
    cfg.io_read(move |_cx, req, len| {
        s.lock().unwrap().push((irql::current(), req.issued_at()));
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let q = dev.create_queue(cfg, attrs).unwrap();
    (q, seen)
}

#[test]
fn spin_flavour_serialized_callbacks_run_at_dispatch_level() {
    let kernel = kernel();
    let driver = driver(&kernel);
    for (name, scope) in [
        ("irql-spin-device", SyncScope::Device),
        ("irql-spin-queue", SyncScope::Queue),
    ] {
        let dev = device(&driver, name, ObjectAttributes::scope(scope));
        assert_eq!(dev.constraints().execution_level, ExecutionLevel::Dispatch);
        let (q, seen) = recording_queue(&dev, ObjectAttributes::default());
        assert_eq!(q.callback_lock().flavour(), LockFlavour::Spin);

        let h = kernel.io().open(name).unwrap();
        assert_eq!(irql::current(), Irql::Passive);
        let c = read(&h, 0, 4);
        assert_eq!(c.status, NtStatus::SUCCESS);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(Irql::Dispatch, Irql::Passive)],
            "{scope:?} scope, Dispatch level: the spin lock raises a PASSIVE arrival to DISPATCH_LEVEL"
        );
        assert_eq!(
            irql::current(),
            Irql::Passive,
            "the client's IRQL is restored"
        );
    }
}

#[test]
fn passive_level_serialized_callbacks_run_at_passive_level() {
    let kernel = kernel();
    let driver = driver(&kernel);
    for (name, scope) in [
        ("irql-passive-device", SyncScope::Device),
        ("irql-passive-queue", SyncScope::Queue),
    ] {
        let dev = device(
            &driver,
            name,
            ObjectAttributes::scope(scope).with_level(ExecutionLevel::Passive),
        );
        let (q, seen) = recording_queue(&dev, ObjectAttributes::default());
        assert_eq!(q.callback_lock().flavour(), LockFlavour::Passive);
        assert!(q.constraints().serialized());

        let h = kernel.io().open(name).unwrap();
        let c = read(&h, 0, 4);
        assert_eq!(c.status, NtStatus::SUCCESS);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(Irql::Passive, Irql::Passive)],
            "{scope:?} scope, Passive level: callbacks run at PASSIVE_LEVEL"
        );
    }
}

#[test]
fn scope_none_dispatch_callbacks_run_at_the_arriving_irql() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "irql-none-dispatch", ObjectAttributes::default());
    let (q, seen) = recording_queue(&dev, ObjectAttributes::default());
    assert!(!q.constraints().serialized());
    assert_eq!(q.constraints().execution_level, ExecutionLevel::Dispatch);

    let h = kernel.io().open("irql-none-dispatch").unwrap();
    let passive = read(&h, 0, 4);
    assert_eq!(passive.status, NtStatus::SUCCESS);
    let dispatch = wait(h.submit_at(
        IoOp::Read {
            offset: 0,
            length: 4,
        },
        Irql::Dispatch,
    ));
    assert_eq!(dispatch.status, NtStatus::SUCCESS);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (Irql::Passive, Irql::Passive),
            (Irql::Dispatch, Irql::Dispatch)
        ],
        "scope None: the callback runs at the IRQL the request arrived at"
    );
}

#[test]
fn queue_scope_none_under_device_scope_device_runs_at_arriving_irql() {
    // A queue may opt out of the device's scope; it then takes no lock and does not raise.
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "irql-queue-none",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let (q, seen) = recording_queue(&dev, ObjectAttributes::scope(SyncScope::None));
    assert!(!q.constraints().serialized());
    let h = kernel.io().open("irql-queue-none").unwrap();
    assert_eq!(read(&h, 0, 1).status, NtStatus::SUCCESS);
    assert_eq!(*seen.lock().unwrap(), vec![(Irql::Passive, Irql::Passive)]);
}
