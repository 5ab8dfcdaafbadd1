//! The object tree (spec §1.3): cleanup callbacks run children first, exactly once, at
//! PASSIVE_LEVEL and never under a callback lock; typed contexts.

mod common;

use std::sync::{Arc, Mutex, OnceLock, Weak};

use nt::NtStatus;
use nt::irql::{self, Irql};
use wdf::verifier::{self, rules};
use wdf::{
    Device, DeviceInit, DispatchType, Driver, ObjectAttributes, ObjectState, QueueConfig, SyncScope,
};

use common::*;

/// One cleanup: the object's name, the IRQL, and whether the device lock was held.
type Log = Arc<Mutex<Vec<(String, Irql, bool)>>>;

fn cleanup(log: &Log, name: &str, dev: Arc<OnceLock<Weak<Device>>>) -> ObjectAttributes {
    let (log, name) = (log.clone(), name.to_owned());
    ObjectAttributes::default().with_cleanup(move || {
        let locked = dev
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|d| d.callback_lock().is_owned_by_current_thread());
        log.lock().unwrap().push((name, irql::current(), locked));
    })
}

fn queue_config() -> QueueConfig {
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.io_read(|_cx, req, len| req.complete_with_information(NtStatus::SUCCESS, len));
    cfg
}

/// A driver with two Device-scope devices of two queues each, all logging their cleanup.
fn tree(kernel: &nt::Kernel, log: &Log, prefix: &str) -> (Arc<Driver>, Vec<Arc<Device>>) {
    let none = Arc::new(OnceLock::new());
    let driver = Driver::create(kernel, cleanup(log, "driver", none)).unwrap();
    let mut devices = Vec::new();
    for d in ["d1", "d2"] {
        let slot = Arc::new(OnceLock::new());
        let mut init = DeviceInit::new(format!("{prefix}-{d}"));
        init.attributes(cleanup(log, d, slot.clone()).with_scope(SyncScope::Device));
        let dev = driver.create_device(init).unwrap();
        slot.set(Arc::downgrade(&dev)).unwrap();
        for q in ["qa", "qb"] {
            let mut cfg = queue_config();
            cfg.default_queue = q == "qa";
            dev.create_queue(cfg, cleanup(log, &format!("{d}.{q}"), slot.clone()))
                .unwrap();
        }
        devices.push(dev);
    }
    (driver, devices)
}

fn names(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .map(|(n, _, _)| n.clone())
        .collect()
}

fn position(names: &[String], name: &str) -> usize {
    names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("{name} never cleaned up: {names:?}"))
}

#[test]
fn unload_runs_cleanups_children_first_exactly_once() {
    let kernel = kernel();
    let log: Log = Arc::default();
    let (driver, devices) = tree(&kernel, &log, "tree-unload");
    let h = kernel.io().open("tree-unload-d1").unwrap();
    assert_eq!(read(&h, 0, 1).status, NtStatus::SUCCESS);

    driver.unload();
    let n = names(&log);
    assert_eq!(n.len(), 7, "{n:?}");
    for d in ["d1", "d2"] {
        for q in ["qa", "qb"] {
            assert!(
                position(&n, &format!("{d}.{q}")) < position(&n, d),
                "queue cleanups run before their device's: {n:?}"
            );
        }
        assert!(
            position(&n, d) < position(&n, "driver"),
            "device cleanups run before the driver's: {n:?}"
        );
    }
    for (name, at, locked) in log.lock().unwrap().iter() {
        assert_eq!(*at, Irql::Passive, "{name}");
        assert!(!locked, "{name}: cleanup runs without the callback lock");
    }
    for d in &devices {
        assert_eq!(d.header().state(), ObjectState::Deleted);
    }
    assert_eq!(driver.header().state(), ObjectState::Deleted);

    // Exactly once: deleting again runs nothing.
    driver.unload();
    for d in &devices {
        d.delete();
    }
    assert_eq!(names(&log).len(), 7);

    // The devices are gone from the I/O manager.
    assert_eq!(
        kernel.io().open("tree-unload-d2").unwrap_err(),
        NtStatus::OBJECT_NAME_NOT_FOUND
    );
    assert_eq!(read(&h, 0, 1).status, NtStatus::NO_SUCH_DEVICE);
}

#[test]
fn deleting_a_device_cleans_up_its_subtree_only() {
    let kernel = kernel();
    let log: Log = Arc::default();
    let (driver, devices) = tree(&kernel, &log, "tree-delete");
    devices[0].delete();
    let n = names(&log);
    assert_eq!(n.len(), 3, "{n:?}");
    assert!(position(&n, "d1.qa") < position(&n, "d1"));
    assert!(position(&n, "d1.qb") < position(&n, "d1"));
    assert!(devices[0].queues().is_empty());
    assert_eq!(
        kernel.io().open("tree-delete-d1").unwrap_err(),
        NtStatus::OBJECT_NAME_NOT_FOUND
    );
    assert!(kernel.io().open("tree-delete-d2").is_ok());
    assert_eq!(driver.header().state(), ObjectState::Created);

    driver.unload();
    let n = names(&log);
    assert_eq!(n.len(), 7, "d1's cleanups do not run twice: {n:?}");
    assert_eq!(n.last().unwrap(), "driver");
}

#[test]
fn a_panicking_cleanup_is_contained() {
    verifier_record();
    let kernel = kernel();
    let log: Log = Arc::default();
    let driver =
        Driver::create(&kernel, cleanup(&log, "driver", Arc::new(OnceLock::new()))).unwrap();
    let dev = device(&driver, "tree-panic", ObjectAttributes::default());
    dev.create_queue(
        queue_config(),
        ObjectAttributes::default().with_cleanup(|| panic!("cleanup bug on purpose")),
    )
    .unwrap();
    driver.unload();
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 1);
    assert_eq!(
        names(&log),
        vec!["driver".to_owned()],
        "the rest still runs"
    );
}

#[derive(Debug)]
struct Named(String);
#[derive(Debug)]
struct Number(u32);
#[derive(Debug)]
struct Absent;

#[test]
fn typed_contexts_are_retrievable() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let mut init = DeviceInit::new("tree-context");
    init.context(|dev| Named(format!("ctx of {}", dev.name())));
    init.context(|_dev| Number(7));
    let dev = driver.create_device(init).unwrap();

    let named = dev.context::<Named>().expect("Named context");
    assert_eq!(named.0, "ctx of tree-context");
    assert_eq!(dev.context::<Number>().expect("Number context").0, 7);
    assert!(dev.context::<Absent>().is_none());
    assert!(
        Arc::ptr_eq(&named, &dev.context::<Named>().unwrap()),
        "the same context object every time"
    );

    // Contexts on other objects, one per type.
    let q = dev
        .create_queue(queue_config(), ObjectAttributes::default())
        .unwrap();
    assert!(q.header().context::<Number>().is_none());
    q.header().add_context(Arc::new(Number(9))).unwrap();
    let refused = q.header().add_context(Arc::new(Number(10))).unwrap_err();
    assert_eq!(refused.0, 10);
    assert_eq!(q.header().context::<Number>().unwrap().0, 9);
    driver.header().add_context(Arc::new(Absent)).unwrap();
    assert!(driver.header().context::<Absent>().is_some());
}

#[test]
fn unload_cancels_requests_still_queued() {
    // Spec §5.12: deleting a queue purges it; a client waiting on a queued request is not left
    // hanging, even though the driver still holds a reference to the queue.
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "tree-purge", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("tree-purge").unwrap();
    let pending: Vec<_> = (0..3).map(|i| h.submit(read_op(i, 1))).collect();
    assert_eq!(q.pending_count(), 3);

    driver.unload();
    for p in pending {
        assert_eq!(wait(p).status, NtStatus::CANCELLED);
    }
    assert_eq!(q.pending_count(), 0);
}

#[test]
fn a_device_whose_name_collides_leaves_nothing_in_the_tree() {
    let kernel = kernel();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let driver = driver(&kernel);
    let mut first = DeviceInit::new("tree-collide");
    first.attributes(cleanup(&log, "first", Arc::new(OnceLock::new())));
    driver.create_device(first).unwrap();
    let mut second = DeviceInit::new("tree-collide");
    second.attributes(cleanup(&log, "second", Arc::new(OnceLock::new())));
    assert_eq!(
        driver.create_device(second).unwrap_err(),
        NtStatus::OBJECT_NAME_COLLISION
    );
    driver.unload();
    let names: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(n, _, _)| n.clone())
        .collect();
    assert_eq!(
        names,
        vec!["first".to_string()],
        "the failed device's cleanup must never run"
    );
}
