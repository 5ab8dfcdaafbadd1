//! Routing of incoming I/O (spec §5.3, §5.6): per-type queues, the default queue, handler
//! selection, the zero-length filter, and the configuration errors.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nt::NtStatus;
use nt::io::IoOp;
use wdf::{DispatchType, ObjectAttributes, Queue, QueueConfig, RequestParameters, RequestType};

use common::*;

type Log = Arc<Mutex<Vec<(String, RequestType)>>>;

/// A queue named `name` whose `io_default` logs (queue, kind) and completes with SUCCESS.
fn logging_queue(
    dev: &Arc<wdf::Device>,
    name: &str,
    dispatch: DispatchType,
    default: bool,
    log: &Log,
) -> Arc<Queue> {
    let mut cfg = QueueConfig::new(dispatch);
    cfg.default_queue = default;
    cfg.name = Some(name.to_owned());
    let l = log.clone();
    cfg.io_default(move |cx, req| {
        l.lock()
            .unwrap()
            .push((cx.queue().name().to_owned(), req.kind()));
        req.complete(NtStatus::SUCCESS);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap()
}

fn all_ops() -> Vec<IoOp> {
    vec![
        read_op(0, 2),
        write_op(0, vec![1, 2]),
        ioctl_op(7, vec![], 2),
        IoOp::InternalDeviceControl {
            code: 8,
            input: vec![],
            output_length: 2,
        },
        IoOp::Flush,
    ]
}

#[test]
fn default_queue_receives_every_type_without_its_own_queue() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "route-default", ObjectAttributes::default());
    let log: Log = Arc::default();
    let q = logging_queue(&dev, "default", DispatchType::Parallel, true, &log);
    assert!(q.is_default_queue());
    assert!(Arc::ptr_eq(&dev.default_queue().unwrap(), &q));

    let h = kernel.io().open("route-default").unwrap();
    for op in all_ops() {
        assert_eq!(wait(h.submit(op)).status, NtStatus::SUCCESS);
    }
    let kinds: Vec<_> = log.lock().unwrap().iter().map(|(_, k)| *k).collect();
    assert_eq!(
        kinds,
        vec![
            RequestType::Read,
            RequestType::Write,
            RequestType::DeviceControl,
            RequestType::InternalDeviceControl,
            RequestType::FlushBuffers,
        ]
    );
}

#[test]
fn configured_type_goes_to_its_own_queue() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "route-configured", ObjectAttributes::default());
    let log: Log = Arc::default();
    logging_queue(&dev, "default", DispatchType::Parallel, true, &log);
    let writes = logging_queue(&dev, "writes", DispatchType::Sequential, false, &log);
    dev.configure_request_dispatching(&writes, RequestType::Write)
        .unwrap();

    let h = kernel.io().open("route-configured").unwrap();
    for op in all_ops() {
        assert_eq!(wait(h.submit(op)).status, NtStatus::SUCCESS);
    }
    let got = log.lock().unwrap().clone();
    let expect: Vec<(String, RequestType)> = [
        ("default", RequestType::Read),
        ("writes", RequestType::Write),
        ("default", RequestType::DeviceControl),
        ("default", RequestType::InternalDeviceControl),
        ("default", RequestType::FlushBuffers),
    ]
    .iter()
    .map(|(q, k)| (q.to_string(), *k))
    .collect();
    assert_eq!(got, expect);
}

#[test]
fn a_type_with_no_queue_and_no_default_queue_is_invalid_device_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "route-none", ObjectAttributes::default());
    let h = kernel.io().open("route-none").unwrap();
    // No queue at all yet.
    assert_eq!(read(&h, 0, 1).status, NtStatus::INVALID_DEVICE_REQUEST);

    let log: Log = Arc::default();
    let reads = logging_queue(&dev, "reads", DispatchType::Parallel, false, &log);
    dev.configure_request_dispatching(&reads, RequestType::Read)
        .unwrap();
    for op in all_ops() {
        let is_read = matches!(op, IoOp::Read { .. });
        let c = wait(h.submit(op));
        let expect = if is_read {
            NtStatus::SUCCESS
        } else {
            NtStatus::INVALID_DEVICE_REQUEST
        };
        assert_eq!(c.status, expect);
    }
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[test]
fn typed_handler_wins_over_io_default_and_a_missing_handler_fails_the_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "route-handlers", ObjectAttributes::default());
    let typed = Arc::new(AtomicUsize::new(0));
    let fallback = Arc::new(AtomicUsize::new(0));

    // Default queue: read handler + io_default.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let t = typed.clone();
    cfg.io_read(move |_cx, req, len| {
        t.fetch_add(1, Ordering::SeqCst);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let f = fallback.clone();
    cfg.io_default(move |_cx, req| {
        f.fetch_add(1, Ordering::SeqCst);
        req.complete(NtStatus::SUCCESS);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    // Ioctl queue: only a write handler, so ioctls have no handler at all.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.io_write(|_cx, req, _len| req.complete(NtStatus::UNSUCCESSFUL));
    let ioctls = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    dev.configure_request_dispatching(&ioctls, RequestType::DeviceControl)
        .unwrap();

    let h = kernel.io().open("route-handlers").unwrap();
    assert_eq!(read(&h, 0, 3).status, NtStatus::SUCCESS);
    assert_eq!(write(&h, 0, vec![1]).status, NtStatus::SUCCESS);
    assert_eq!(typed.load(Ordering::SeqCst), 1);
    assert_eq!(fallback.load(Ordering::SeqCst), 1);
    assert_eq!(
        ioctl(&h, 1, vec![], 0).status,
        NtStatus::INVALID_DEVICE_REQUEST,
        "no typed handler and no io_default"
    );
    assert_eq!(ioctls.stats().presented, 1);
    assert_eq!(ioctls.stats().completed, 1);
    assert_eq!(ioctls.driver_owned_count(), 0);
}

#[test]
fn zero_length_reads_and_writes_are_completed_without_calling_the_driver() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let calls = Arc::new(AtomicUsize::new(0));
    for (name, allow) in [("route-zero", false), ("route-zero-allowed", true)] {
        let dev = device(&driver, name, ObjectAttributes::default());
        let mut cfg = QueueConfig::new(DispatchType::Sequential);
        cfg.default_queue = true;
        cfg.allow_zero_length_requests = allow;
        let c = calls.clone();
        cfg.io_read(move |_cx, req, len| {
            assert_eq!(len, 0);
            c.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::END_OF_FILE);
        });
        let c = calls.clone();
        cfg.io_write(move |_cx, req, len| {
            assert_eq!(len, 0);
            c.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::END_OF_FILE);
        });
        let c = calls.clone();
        cfg.io_device_control(move |_cx, req, _o, _i, _code| {
            c.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::END_OF_FILE);
        });
        let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
        let h = kernel.io().open(name).unwrap();
        calls.store(0, Ordering::SeqCst);

        let r = read(&h, 0, 0);
        let w = write(&h, 0, vec![]);
        if allow {
            assert_eq!(r.status, NtStatus::END_OF_FILE, "presented to the driver");
            assert_eq!(w.status, NtStatus::END_OF_FILE);
            assert_eq!(calls.load(Ordering::SeqCst), 2);
        } else {
            assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 0));
            assert_eq!((w.status, w.information), (NtStatus::SUCCESS, 0));
            assert_eq!(
                calls.load(Ordering::SeqCst),
                0,
                "the driver never sees them"
            );
        }
        // The filter is for reads and writes only: a control request without buffers is
        // presented.
        calls.store(0, Ordering::SeqCst);
        assert_eq!(ioctl(&h, 3, vec![], 0).status, NtStatus::END_OF_FILE);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(q.driver_owned_count(), 0);
    }
}

#[test]
fn manual_retrieval_skips_zero_length_requests() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "route-zero-manual", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("route-zero-manual").unwrap();
    let zero = h.submit(read_op(0, 0));
    let real = h.submit(read_op(5, 4));
    let req = q.retrieve_next_request().unwrap();
    assert_eq!(
        req.parameters().offset,
        5,
        "the zero-length read was filtered out"
    );
    assert_eq!(wait(zero).status, NtStatus::SUCCESS);
    req.complete_with_information(NtStatus::SUCCESS, 4);
    assert_eq!(wait(real).information, 4);
    assert_eq!(
        q.retrieve_next_request().unwrap_err(),
        NtStatus::NO_MORE_ENTRIES
    );
}

#[test]
fn configuring_a_type_twice_is_invalid_device_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "route-twice", ObjectAttributes::default());
    let log: Log = Arc::default();
    let a = logging_queue(&dev, "a", DispatchType::Parallel, false, &log);
    let b = logging_queue(&dev, "b", DispatchType::Parallel, false, &log);
    dev.configure_request_dispatching(&a, RequestType::Read)
        .unwrap();
    assert_eq!(
        dev.configure_request_dispatching(&b, RequestType::Read),
        Err(NtStatus::INVALID_DEVICE_REQUEST)
    );
    assert_eq!(
        dev.configure_request_dispatching(&a, RequestType::Read),
        Err(NtStatus::INVALID_DEVICE_REQUEST)
    );
    // The first configuration stands.
    let h = kernel.io().open("route-twice").unwrap();
    assert_eq!(read(&h, 0, 1).status, NtStatus::SUCCESS);
    assert_eq!(
        *log.lock().unwrap(),
        vec![("a".to_owned(), RequestType::Read)]
    );
}

#[test]
fn other_configuration_errors() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "route-errors", ObjectAttributes::default());
    let other = device(&driver, "route-errors-other", ObjectAttributes::default());
    let log: Log = Arc::default();
    let q = logging_queue(&dev, "q", DispatchType::Parallel, true, &log);
    let foreign = logging_queue(&other, "foreign", DispatchType::Parallel, false, &log);

    // File-object requests cannot be routed to queues.
    for kind in [
        RequestType::Create,
        RequestType::Cleanup,
        RequestType::Close,
    ] {
        assert_eq!(
            dev.configure_request_dispatching(&q, kind),
            Err(NtStatus::INVALID_PARAMETER),
            "{kind:?}"
        );
    }
    // A queue of another device.
    assert_eq!(
        dev.configure_request_dispatching(&foreign, RequestType::Write),
        Err(NtStatus::INVALID_DEVICE_REQUEST)
    );
    // A second default queue.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    cfg.io_default(|_cx, req| req.complete(NtStatus::SUCCESS));
    assert_eq!(
        dev.create_queue(cfg, ObjectAttributes::default())
            .unwrap_err(),
        NtStatus::INVALID_DEVICE_REQUEST
    );
    assert_eq!(dev.queues().len(), 1);
}

#[test]
fn parameters_describe_the_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "route-params", ObjectAttributes::default());
    let seen: Arc<Mutex<Vec<RequestParameters>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let s = seen.clone();
    cfg.io_default(move |_cx, req| {
        s.lock().unwrap().push(req.parameters());
        req.complete(NtStatus::SUCCESS);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("route-params").unwrap();
    read(&h, 100, 7);
    write(&h, 200, vec![0; 5]);
    ioctl(&h, 0x2222_0004, vec![0; 3], 9);

    let s = seen.lock().unwrap().clone();
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].kind, RequestType::Read);
    assert_eq!((s[0].offset, s[0].length), (100, 7));
    assert_eq!((s[0].input_length, s[0].output_length), (0, 7));
    assert_eq!(s[1].kind, RequestType::Write);
    assert_eq!((s[1].offset, s[1].length), (200, 5));
    assert_eq!((s[1].input_length, s[1].output_length), (5, 0));
    assert_eq!(s[2].kind, RequestType::DeviceControl);
    assert_eq!(s[2].ioctl_code, 0x2222_0004);
    assert_eq!((s[2].input_length, s[2].output_length), (3, 9));
}
