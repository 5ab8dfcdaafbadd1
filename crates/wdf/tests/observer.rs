//! The observer hook: begin/end events for every callback, with its kind, object, request,
//! IRQL and whether a callback lock is held.

mod common;

use std::sync::{Arc, Mutex};

use nt::NtStatus;
use nt::irql::Irql;
use wdf::observe::{self, CallbackEvent, CallbackKind, Observer};
use wdf::{
    DeviceInit, DispatchType, FileObjectConfig, ObjectAttributes, QueueConfig, RequestType,
    SyncScope,
};

use common::*;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    begin: bool,
    kind: CallbackKind,
    object: String,
    request: Option<u64>,
    irql: Irql,
    locked: bool,
    thread: u64,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl Recorder {
    fn push(&self, begin: bool, e: &CallbackEvent<'_>) {
        self.0.lock().unwrap().push(Seen {
            begin,
            kind: e.kind,
            object: e.object.to_owned(),
            request: e.request,
            irql: e.irql,
            locked: e.locked,
            thread: e.thread,
        });
    }
}

impl Observer for Recorder {
    fn begin(&self, e: &CallbackEvent<'_>) {
        self.push(true, e);
    }
    fn end(&self, e: &CallbackEvent<'_>) {
        self.push(false, e);
    }
}

#[test]
fn observer_sees_begin_and_end_of_each_callback() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let mut files = FileObjectConfig::default();
    files.on_create(|_t, _f| NtStatus::SUCCESS);
    files.on_cleanup(|_t, _f| {});
    files.on_close(|_t, _f| {});
    let mut init = DeviceInit::new("obs-dev");
    init.attributes(ObjectAttributes::scope(SyncScope::Device));
    init.file_object(files);
    let dev = driver.create_device(init).unwrap();

    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.name = Some("obs-locked".into());
    cfg.io_read(|_cx, req, len| req.complete_with_information(NtStatus::SUCCESS, len));
    let locked = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.name = Some("obs-free".into());
    cfg.io_write(|_cx, req, len| req.complete_with_information(NtStatus::SUCCESS, len));
    cfg.io_default(|_cx, req| req.complete(NtStatus::SUCCESS));
    let free = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::None))
        .unwrap();
    dev.configure_request_dispatching(&locked, RequestType::Read)
        .unwrap();
    dev.configure_request_dispatching(&free, RequestType::Write)
        .unwrap();
    dev.configure_request_dispatching(&free, RequestType::DeviceControl)
        .unwrap();

    let recorder = Arc::new(Recorder::default());
    observe::set_observer(Some(recorder.clone()));
    let h = kernel.io().open("obs-dev").unwrap();
    let r = h.submit(read_op(0, 4));
    let read_id = r.id();
    assert_eq!(wait(r).status, NtStatus::SUCCESS);
    let w = h.submit(write_op(0, vec![1; 4]));
    let write_id = w.id();
    assert_eq!(wait(w).status, NtStatus::SUCCESS);
    let c = h.submit(ioctl_op(5, vec![], 0));
    let ioctl_id = c.id();
    assert_eq!(wait(c).status, NtStatus::SUCCESS);
    h.close();
    observe::set_observer(None);

    let seen: Vec<Seen> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| ["obs-dev", "obs-locked", "obs-free"].contains(&s.object.as_str()))
        .cloned()
        .collect();
    let me = nt::thread::current_id();
    let expect = |kind, object: &str, request: Option<u64>, irql, locked| {
        [true, false].map(|begin| Seen {
            begin,
            kind,
            object: object.to_owned(),
            request,
            irql,
            locked,
            thread: me,
        })
    };
    // File-object requests: their ids are the I/O manager's; take them from the events.
    let file_id = |kind| {
        seen.iter()
            .find(|s| s.kind == kind)
            .and_then(|s| s.request)
            .unwrap_or_else(|| panic!("no {kind:?} event: {seen:?}"))
    };
    let mut expected = Vec::new();
    let create = file_id(CallbackKind::FileCreate);
    let cleanup = file_id(CallbackKind::FileCleanup);
    let close = file_id(CallbackKind::FileClose);
    // No file-object attributes: Passive, scope None, unlocked.
    expected.extend(expect(
        CallbackKind::FileCreate,
        "obs-dev",
        Some(create),
        Irql::Passive,
        false,
    ));
    // Device scope, Dispatch level: locked, at DISPATCH_LEVEL.
    expected.extend(expect(
        CallbackKind::IoRead,
        "obs-locked",
        Some(read_id),
        Irql::Dispatch,
        true,
    ));
    // Scope None: unlocked, at the sender's IRQL.
    expected.extend(expect(
        CallbackKind::IoWrite,
        "obs-free",
        Some(write_id),
        Irql::Passive,
        false,
    ));
    expected.extend(expect(
        CallbackKind::IoDefault,
        "obs-free",
        Some(ioctl_id),
        Irql::Passive,
        false,
    ));
    expected.extend(expect(
        CallbackKind::FileCleanup,
        "obs-dev",
        Some(cleanup),
        Irql::Passive,
        false,
    ));
    expected.extend(expect(
        CallbackKind::FileClose,
        "obs-dev",
        Some(close),
        Irql::Passive,
        false,
    ));
    assert_eq!(seen, expected);
}
