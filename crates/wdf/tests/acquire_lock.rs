//! Locks exposed to drivers (spec §2.1, §2.5, §7.1): `acquire_lock` outside callbacks, scope
//! tokens and the data they unlock, and the fatal recursive acquisition inside a callback.

mod common;

use std::sync::Arc;

use nt::NtStatus;
use nt::irql::{self, Irql};
use wdf::verifier::{self, rules};
use wdf::{
    DeviceInit, DispatchType, ExecutionLevel, ObjectAttributes, QueueConfig, RequestType,
    ScopeLocked, SyncScope,
};

use common::*;

struct Counter {
    value: ScopeLocked<u64>,
}

#[test]
fn acquire_lock_outside_callbacks_unlocks_scope_locked_data() {
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 50;

    let kernel = kernel();
    let driver = driver(&kernel);
    let mut init = DeviceInit::new("lock-outside");
    init.attributes(ObjectAttributes::scope(SyncScope::Device));
    init.context(|dev| Counter {
        value: dev.scope_locked(0),
    });
    let dev = driver.create_device(init).unwrap();
    let ctx = dev.context::<Counter>().unwrap();

    // Each read increments the counter under the device lock and returns its new value.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let c = ctx.clone();
    cfg.io_read(move |cx, mut req, _len| {
        let token = cx.scope().expect("Device scope lends a token");
        let v = c.value.get(token);
        *v += 1;
        let bytes = v.to_le_bytes();
        req.output_buffer(8).unwrap().copy_from_slice(&bytes);
        req.complete_with_information(NtStatus::SUCCESS, 8);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h = kernel.io().open("lock-outside").unwrap();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let h = &h;
            s.spawn(move || {
                for _ in 0..PER_THREAD {
                    assert_eq!(read(h, 0, 8).status, NtStatus::SUCCESS);
                }
            });
        }
    });

    {
        let mut token = dev.acquire_lock();
        assert!(dev.callback_lock().is_owned_by_current_thread());
        assert_eq!(
            irql::current(),
            Irql::Dispatch,
            "holding a spin-flavour callback lock raises to DISPATCH_LEVEL"
        );
        let v = ctx.value.get(&mut token);
        assert_eq!(*v, THREADS as u64 * PER_THREAD);
        *v = 1000;
    }
    assert!(!dev.callback_lock().is_owned_by_current_thread());
    assert_eq!(irql::current(), Irql::Passive);

    let c = read(&h, 0, 8);
    assert_eq!(c.data, 1001u64.to_le_bytes().to_vec());
}

#[test]
fn passive_device_lock_is_held_at_passive_level() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "lock-passive",
        ObjectAttributes::scope(SyncScope::Device).with_level(ExecutionLevel::Passive),
    );
    let data = dev.scope_locked(String::from("a"));
    let mut token = dev.acquire_lock();
    assert_eq!(irql::current(), Irql::Passive);
    data.get(&mut token).push('b');
    assert_eq!(data.get(&mut token), "ab");
}

#[test]
fn every_queue_has_a_lock_even_with_scope_none() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "lock-scope-none", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.io_read(|_cx, req, _len| req.complete(NtStatus::SUCCESS));
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    assert!(!q.constraints().serialized());
    let data = q.scope_locked(5u32);
    let mut token = q.acquire_lock();
    assert!(q.callback_lock().is_owned_by_current_thread());
    *data.get(&mut token) += 1;
    assert_eq!(data.try_get(&mut token), Ok(&mut 6));
}

#[test]
fn acquire_lock_inside_a_device_scope_callback_is_a_fatal_recursive_lock() {
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "lock-recursive",
        ObjectAttributes::scope(SyncScope::Device),
    );
    // Reads: the default queue; writes: a second queue sharing the device lock.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    cfg.io_read(|cx, req, len| {
        if req.parameters().offset == 1 {
            let device = cx.queue().device().expect("device");
            let _token = device.acquire_lock(); // WdfObjectAcquireLock(device): fatal here
        }
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.io_write(|cx, req, len| {
        if req.parameters().offset == 1 {
            let _token = cx.queue().acquire_lock(); // the queue's lock is the device's
        }
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let writes = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    dev.configure_request_dispatching(&writes, RequestType::Write)
        .unwrap();

    let h = kernel.io().open("lock-recursive").unwrap();
    let c = read(&h, 1, 4);
    assert_eq!(
        c.status,
        NtStatus::INTERNAL_ERROR,
        "the bug check is contained: the callback's request fails"
    );
    assert_eq!(verifier::count(&rules::WDF_RECURSIVE_LOCK), 1);
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 1);

    let c = write(&h, 1, vec![0; 4]);
    assert_eq!(c.status, NtStatus::INTERNAL_ERROR);
    assert_eq!(verifier::count(&rules::WDF_RECURSIVE_LOCK), 2);
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 2);

    // The lock was released; the device keeps serving on every queue.
    assert!(!dev.callback_lock().is_owned_by_current_thread());
    assert_eq!(read(&h, 0, 4).status, NtStatus::SUCCESS);
    assert_eq!(write(&h, 0, vec![0; 4]).status, NtStatus::SUCCESS);
    drop(dev.acquire_lock());
    assert_eq!(writes.driver_owned_count(), 0);
}

#[test]
fn recursive_lock_is_fatal_even_with_the_verifier_off() {
    verifier::reset();
    verifier::disable();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "lock-recursive-off",
        ObjectAttributes::scope(SyncScope::Device).with_level(ExecutionLevel::Passive),
    );
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    cfg.io_read(|cx, req, len| {
        if req.parameters().offset == 1 {
            let device = cx.queue().device().unwrap();
            let _token = device.acquire_lock();
        }
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("lock-recursive-off").unwrap();
    assert_eq!(read(&h, 1, 4).status, NtStatus::INTERNAL_ERROR);
    assert_eq!(verifier::count(&rules::WDF_RECURSIVE_LOCK), 1);
    assert_eq!(read(&h, 0, 4).status, NtStatus::SUCCESS);
}

#[test]
fn try_get_with_a_token_of_another_lock_is_invalid_device_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let a = device(
        &driver,
        "lock-token-a",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let b = device(
        &driver,
        "lock-token-b",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let data_of_a = a.scope_locked(1u8);
    {
        let mut tb = b.acquire_lock();
        assert_eq!(
            data_of_a.try_get(&mut tb).unwrap_err(),
            NtStatus::INVALID_DEVICE_REQUEST
        );
    }
    let mut ta = a.acquire_lock();
    assert_eq!(data_of_a.try_get(&mut ta), Ok(&mut 1));
}

#[test]
fn callback_tokens_reach_exactly_their_scope_data() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "lock-token-scopes",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let device_data = Arc::new(dev.scope_locked(0u32));

    // Reads: Device scope (inherited) -> the device token.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    let d = device_data.clone();
    cfg.io_read(move |cx, req, _len| {
        let status = match cx.scope() {
            Some(t) => d.try_get(t).map_or_else(|e| e, |_| NtStatus::SUCCESS),
            None => NtStatus::UNSUCCESSFUL,
        };
        req.complete(status);
    });
    let reads = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    // Writes: Queue scope -> a token of the queue's own lock, not the device's.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    let d = device_data.clone();
    cfg.io_write(move |cx, req, _len| {
        let status = match cx.scope() {
            Some(t) => d.try_get(t).map_or_else(|e| e, |_| NtStatus::SUCCESS),
            None => NtStatus::UNSUCCESSFUL,
        };
        req.complete(status);
    });
    let writes = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();
    // Control requests: scope None -> no token at all.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.io_device_control(|cx, req, _o, _i, _c| {
        let status = if cx.scope().is_none() {
            NtStatus::SUCCESS
        } else {
            NtStatus::UNSUCCESSFUL
        };
        req.complete(status);
    });
    let ioctls = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::None))
        .unwrap();
    dev.configure_request_dispatching(&reads, RequestType::Read)
        .unwrap();
    dev.configure_request_dispatching(&writes, RequestType::Write)
        .unwrap();
    dev.configure_request_dispatching(&ioctls, RequestType::DeviceControl)
        .unwrap();

    let h = kernel.io().open("lock-token-scopes").unwrap();
    assert_eq!(read(&h, 0, 1).status, NtStatus::SUCCESS);
    assert_eq!(
        write(&h, 0, vec![1]).status,
        NtStatus::INVALID_DEVICE_REQUEST,
        "a Queue-scope token does not unlock device data"
    );
    assert_eq!(ioctl(&h, 0, vec![], 0).status, NtStatus::SUCCESS);
}

#[test]
fn acquiring_another_lock_inside_a_callback_is_allowed() {
    // Only re-acquiring the lock the thread already holds is fatal (spec §2.5): a Queue-scope
    // callback may take the device's lock to reach device-wide data.
    verifier_record();
    let kernel = kernel();
    let driver = driver(&kernel);
    let mut init = DeviceInit::new("lock-other");
    init.attributes(ObjectAttributes::scope(SyncScope::Queue));
    init.context(|dev| Counter {
        value: dev.scope_locked(0),
    });
    let dev = driver.create_device(init).unwrap();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    cfg.io_read(|cx, req, len| {
        assert!(cx.scope().is_some(), "Queue scope lends the queue's token");
        let device = cx.queue().device().unwrap();
        let ctx = device.context::<Counter>().unwrap();
        let mut token = device.acquire_lock();
        *ctx.value.get(&mut token) += 1;
        drop(token);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("lock-other").unwrap();
    for _ in 0..3 {
        assert_eq!(read(&h, 0, 1).status, NtStatus::SUCCESS);
    }
    let ctx = dev.context::<Counter>().unwrap();
    assert_eq!(*ctx.value.get(&mut dev.acquire_lock()), 3);
    assert_eq!(verifier::count(&rules::WDF_RECURSIVE_LOCK), 0);
    assert_eq!(verifier::count(&rules::CALLBACK_PANICKED), 0);
}

/// A thread that holds the device lock (here through `acquire_lock`, as a driver's own thread
/// would) and sends a request to a Device-scope parallel queue must not have it presented on
/// its own stack (that would re-acquire the lock): the fast path sees the thread's ownership
/// and defers, and the request runs on the queue's DPC once the lock is free.
#[test]
fn a_request_sent_while_holding_the_device_lock_is_deferred_not_presented_inline() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let mut init = DeviceInit::new("held-by-sender");
    init.attributes(ObjectAttributes::scope(SyncScope::Device));
    let dev = driver.create_device(init).unwrap();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let ran_on = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r = ran_on.clone();
    cfg.io_read(move |_cx, req, len| {
        r.lock().unwrap().push(thread_name());
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("held-by-sender").unwrap();

    // Not holding it: presented inline, on this thread.
    assert_eq!(read(&h, 0, 8).status, NtStatus::SUCCESS);
    assert_eq!(ran_on.lock().unwrap().as_slice(), [thread_name()]);

    let token = dev.acquire_lock();
    let pending = h.submit(read_op(0, 8));
    assert!(
        !pending.is_complete(),
        "presented while its sender holds the lock"
    );
    assert_eq!(ran_on.lock().unwrap().len(), 1);
    drop(token);
    assert_eq!(wait(pending).status, NtStatus::SUCCESS);
    let ran = ran_on.lock().unwrap().clone();
    assert_eq!(ran.len(), 2);
    assert_ne!(ran[1], thread_name(), "the deferred request ran on the DPC");
    assert!(q.stats().deferred_lock >= 1, "{:?}", q.stats());

    // And with the lock released, the next one is inline again.
    assert_eq!(read(&h, 0, 8).status, NtStatus::SUCCESS);
    assert_eq!(ran_on.lock().unwrap()[2], thread_name());
}
