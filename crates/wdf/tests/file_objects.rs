//! File objects (spec §1.4, §2.2, §3.3, §4.5): create/cleanup/close callbacks, their order, the
//! create's status, their lock and IRQL, and cleanup cancelling the handle's queued requests.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nt::NtStatus;
use nt::irql::{self, Irql};
use wdf::{
    DeviceInit, DispatchType, ExecutionLevel, FileObjectConfig, ObjectAttributes, QueueConfig,
    Request, SyncScope,
};

use common::*;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Create(u64),
    Cleanup(u64),
    Close(u64),
}

/// What a file callback saw: whether it got a token, and its IRQL.
type Ctx = (bool, Irql);

struct Files {
    events: Arc<Mutex<Vec<Ev>>>,
    contexts: Arc<Mutex<Vec<Ctx>>>,
}

fn ctx_of(token: Option<&mut wdf::ScopeToken>) -> Ctx {
    (token.is_some(), irql::current())
}

/// File-object callbacks that log their events; create returns `create_status`.
fn logging_files(
    attrs: Option<ObjectAttributes>,
    create_status: NtStatus,
) -> (FileObjectConfig, Files) {
    let events: Arc<Mutex<Vec<Ev>>> = Arc::default();
    let contexts: Arc<Mutex<Vec<Ctx>>> = Arc::default();
    let mut cfg = FileObjectConfig::default();
    cfg.attributes = attrs;
    let (e, c) = (events.clone(), contexts.clone());
    cfg.on_create(move |token, file| {
        c.lock().unwrap().push(ctx_of(token));
        e.lock().unwrap().push(Ev::Create(file.id()));
        create_status
    });
    let (e, c) = (events.clone(), contexts.clone());
    cfg.on_cleanup(move |token, file| {
        c.lock().unwrap().push(ctx_of(token));
        e.lock().unwrap().push(Ev::Cleanup(file.id()));
    });
    let (e, c) = (events.clone(), contexts.clone());
    cfg.on_close(move |token, file| {
        c.lock().unwrap().push(ctx_of(token));
        e.lock().unwrap().push(Ev::Close(file.id()));
    });
    (cfg, Files { events, contexts })
}

#[test]
fn create_cleanup_and_close_run_in_that_order() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let (files, log) = logging_files(None, NtStatus::SUCCESS);
    let mut init = DeviceInit::new("file-order");
    init.file_object(files);
    driver.create_device(init).unwrap();

    let h1 = kernel.io().open("file-order").unwrap();
    let f1 = h1.file().id();
    assert_eq!(*log.events.lock().unwrap(), vec![Ev::Create(f1)]);
    assert_eq!(h1.close(), NtStatus::SUCCESS);
    let h2 = kernel.io().open("file-order").unwrap();
    let f2 = h2.file().id();
    drop(h2); // dropping a handle closes it too
    assert_eq!(
        *log.events.lock().unwrap(),
        vec![
            Ev::Create(f1),
            Ev::Cleanup(f1),
            Ev::Close(f1),
            Ev::Create(f2),
            Ev::Cleanup(f2),
            Ev::Close(f2),
        ]
    );
    // No file-object attributes: Passive, scope None, so no token.
    assert!(
        log.contexts
            .lock()
            .unwrap()
            .iter()
            .all(|c| *c == (false, Irql::Passive))
    );
}

#[test]
fn a_failing_create_fails_the_open_with_its_status() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let (files, log) = logging_files(None, NtStatus::INSUFFICIENT_RESOURCES);
    let mut init = DeviceInit::new("file-fail");
    init.file_object(files);
    driver.create_device(init).unwrap();
    assert_eq!(
        kernel.io().open("file-fail").unwrap_err(),
        NtStatus::INSUFFICIENT_RESOURCES
    );
    let events = log.events.lock().unwrap().clone();
    assert_eq!(
        events.len(),
        1,
        "no cleanup or close for a failed open: {events:?}"
    );
    assert!(matches!(events[0], Ev::Create(_)));
}

#[test]
fn a_wdf_status_from_create_is_translated() {
    // Spec §6.2: WDF-private statuses are rewritten when a request is completed; the create's
    // status is its completion status.
    let kernel = kernel();
    let driver = driver(&kernel);
    let (files, _log) = logging_files(None, NtStatus::WDF_PAUSED);
    let mut init = DeviceInit::new("file-wdf-status");
    init.file_object(files);
    driver.create_device(init).unwrap();
    assert_eq!(
        kernel.io().open("file-wdf-status").unwrap_err(),
        NtStatus::DEVICE_BUSY
    );
}

#[test]
fn a_panicking_create_fails_the_open_with_internal_error() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let mut files = FileObjectConfig::default();
    files.on_create(|_t, _f| panic!("create bug on purpose"));
    let mut init = DeviceInit::new("file-panic");
    init.file_object(files);
    driver.create_device(init).unwrap();
    assert_eq!(
        kernel.io().open("file-panic").unwrap_err(),
        NtStatus::INTERNAL_ERROR
    );
}

#[test]
fn device_scope_file_callbacks_hold_the_device_lock() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let lock_seen: Arc<Mutex<Vec<(bool, bool, Irql)>>> = Arc::default();
    let dev_slot: Arc<std::sync::OnceLock<std::sync::Weak<wdf::Device>>> = Arc::default();
    let mut files = FileObjectConfig::default();
    files.attributes = Some(ObjectAttributes::scope(SyncScope::Device));
    let record = {
        let (seen, slot) = (lock_seen.clone(), dev_slot.clone());
        move |token: Option<&mut wdf::ScopeToken>| {
            let held = slot
                .get()
                .and_then(std::sync::Weak::upgrade)
                .is_some_and(|d| d.callback_lock().is_owned_by_current_thread());
            seen.lock()
                .unwrap()
                .push((token.is_some(), held, irql::current()));
        }
    };
    let r = record.clone();
    files.on_create(move |t, _f| {
        r(t);
        NtStatus::SUCCESS
    });
    let r = record.clone();
    files.on_cleanup(move |t, _f| r(t));
    files.on_close(move |t, _f| record(t));
    let mut init = DeviceInit::new("file-device-scope");
    init.attributes(ObjectAttributes::level(ExecutionLevel::Passive));
    init.file_object(files);
    let dev = driver.create_device(init).unwrap();
    dev_slot.set(Arc::downgrade(&dev)).unwrap();

    let h = kernel.io().open("file-device-scope").unwrap();
    h.close();
    assert_eq!(
        *lock_seen.lock().unwrap(),
        vec![(true, true, Irql::Passive); 3],
        "create, cleanup and close each run under the device's (passive) lock"
    );
    assert!(!dev.callback_lock().is_owned_by_current_thread());
}

#[test]
fn a_create_above_passive_fails_when_file_callbacks_are_passive() {
    // Spec §3.3: not deferred; failed with STATUS_INVALID_DEVICE_REQUEST.
    let kernel = kernel();
    let driver = driver(&kernel);
    let creates = Arc::new(AtomicUsize::new(0));
    let mut files = FileObjectConfig::default();
    let c = creates.clone();
    files.on_create(move |_t, _f| {
        c.fetch_add(1, Ordering::SeqCst);
        NtStatus::SUCCESS
    });
    let mut init = DeviceInit::new("file-dispatch-create");
    init.file_object(files);
    let dev = driver.create_device(init).unwrap();
    assert!(dev.file_object_constraints().passive_callbacks);
    let result = {
        let _raised = irql::raise(Irql::Dispatch);
        kernel.io().open("file-dispatch-create").map(|_| ())
    };
    assert_eq!(result.unwrap_err(), NtStatus::INVALID_DEVICE_REQUEST);
    assert_eq!(creates.load(Ordering::SeqCst), 0);
    assert!(kernel.io().open("file-dispatch-create").is_ok());
    assert_eq!(creates.load(Ordering::SeqCst), 1);
}

#[test]
fn closing_a_handle_cancels_only_its_queued_requests() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "file-flush", ObjectAttributes::default());
    let held: Arc<Mutex<Option<Request>>> = Arc::default();
    let presented: Arc<Mutex<Vec<u64>>> = Arc::default();
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
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h1 = kernel.io().open("file-flush").unwrap();
    let h2 = kernel.io().open("file-flush").unwrap();
    let x = h1.submit(read_op(0, 1)); // presented and held by the driver
    let a = h1.submit(read_op(1, 1)); // queued
    let c = h2.submit(read_op(3, 1)); // queued, other handle
    let b = h1.submit(read_op(2, 1)); // queued
    assert_eq!(q.pending_count(), 3);
    let (a_id, b_id) = (a.id(), b.id());

    assert_eq!(h1.close(), NtStatus::SUCCESS);
    for p in [a, b] {
        let done = wait(p);
        assert_eq!(done.status, NtStatus::CANCELLED);
    }
    assert_eq!(
        q.pending_count(),
        1,
        "the other handle's request stays queued"
    );
    assert!(!c.is_complete());
    assert!(
        !x.is_complete(),
        "cleanup cancels queued requests, not driver-owned ones"
    );

    let req = held.lock().unwrap().take().unwrap();
    req.complete_with_information(NtStatus::SUCCESS, 1);
    assert_eq!(wait(x).status, NtStatus::SUCCESS);
    let done = wait(c);
    assert_eq!((done.status, done.information), (NtStatus::SUCCESS, 1));
    let seen = presented.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(!seen.contains(&a_id) && !seen.contains(&b_id));
    assert_eq!(q.pending_count(), 0);
    drop(h2);
}

#[test]
fn device_scope_file_callbacks_are_serialized_with_queue_callbacks() {
    const ROUNDS: usize = 60;
    let kernel = kernel();
    let driver = driver(&kernel);
    let inflight = Arc::new(InFlight::default());
    let spin = std::time::Duration::from_micros(30);
    let mut files = FileObjectConfig::default();
    files.attributes = Some(ObjectAttributes::default()); // inherit the device's Device scope
    let f = inflight.clone();
    files.on_create(move |_t, _f| {
        let _g = f.enter();
        spin_for(spin);
        NtStatus::SUCCESS
    });
    let f = inflight.clone();
    files.on_cleanup(move |_t, _f| {
        let _g = f.enter();
        spin_for(spin);
    });
    let f = inflight.clone();
    files.on_close(move |_t, _f| {
        let _g = f.enter();
        spin_for(spin);
    });
    let mut init = DeviceInit::new("file-serialized");
    init.attributes(ObjectAttributes::scope(SyncScope::Device).with_level(ExecutionLevel::Passive));
    init.file_object(files);
    let dev = driver.create_device(init).unwrap();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let f = inflight.clone();
    cfg.io_read(move |_cx, req, len| {
        let g = f.enter();
        spin_for(spin);
        drop(g);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let reader = kernel.io().open("file-serialized").unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let kernel = &kernel;
            s.spawn(move || {
                for _ in 0..ROUNDS {
                    let h = kernel.io().open("file-serialized").unwrap();
                    assert_eq!(h.close(), NtStatus::SUCCESS);
                }
            });
            let reader = &reader;
            s.spawn(move || {
                for _ in 0..ROUNDS {
                    assert_eq!(read(reader, 0, 1).status, NtStatus::SUCCESS);
                }
            });
        }
    });
    assert_eq!(
        inflight.max(),
        1,
        "file callbacks with Device scope share the device lock with the queue callbacks"
    );
}
