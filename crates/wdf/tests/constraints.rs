//! Constraint resolution and rejections, through the public creation calls (spec §1.1, §1.4,
//! §2.1, §2.3, §5.1). Class-extension rules are not modelled by wdfkit and not tested.

mod common;

use std::sync::Arc;

use nt::NtStatus;
use nt::sync::LockFlavour;
use wdf::sync::constraints::{ObjectKind, validate_attributes};
use wdf::{
    DeviceInit, DispatchType, Driver, ExecutionLevel, FileObjectConfig, LockOwner,
    ObjectAttributes, QueueConfig, SyncScope,
};

use common::*;

/// A parallel queue configuration with a read handler.
fn parallel() -> QueueConfig {
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.io_read(|_cx, req, len| req.complete_with_information(NtStatus::SUCCESS, len));
    cfg
}

/// A device whose file objects have `file_attrs` (and no callbacks).
fn init_with_file_attrs(
    name: &str,
    attrs: ObjectAttributes,
    file_attrs: Option<ObjectAttributes>,
) -> DeviceInit {
    let mut init = DeviceInit::new(name);
    init.attributes(attrs);
    let mut files = FileObjectConfig::default();
    files.attributes = file_attrs;
    init.file_object(files);
    init
}

// ---------------------------------------------------------------------------------------------
// Inheritance (spec §1.4)

#[test]
fn defaults_are_dispatch_level_and_scope_none() {
    let kernel = kernel();
    let driver = driver(&kernel);
    assert_eq!(
        driver.constraints().execution_level,
        ExecutionLevel::Dispatch
    );
    assert_eq!(driver.constraints().sync_scope, SyncScope::None);
    let dev = device(&driver, "cons-defaults", ObjectAttributes::default());
    assert_eq!(dev.constraints().execution_level, ExecutionLevel::Dispatch);
    assert_eq!(dev.constraints().sync_scope, SyncScope::None);
    assert_eq!(dev.callback_lock().flavour(), LockFlavour::Spin);
    let q = dev
        .create_queue(parallel(), ObjectAttributes::default())
        .unwrap();
    assert_eq!(q.constraints().lock, LockOwner::Nothing);
    assert!(!q.constraints().serialized());
    // File objects without attributes: Passive and None whatever the device says.
    let f = dev.file_object_constraints();
    assert_eq!(f.execution_level, ExecutionLevel::Passive);
    assert_eq!(f.sync_scope, SyncScope::None);
    assert_eq!(f.lock, LockOwner::Nothing);
}

#[test]
fn device_and_queue_inherit_from_the_driver_through_the_device() {
    let kernel = kernel();
    let driver = Driver::create(
        &kernel,
        ObjectAttributes::scope(SyncScope::Device).with_level(ExecutionLevel::Passive),
    )
    .unwrap();
    let dev = device(&driver, "cons-inherit", ObjectAttributes::default());
    assert_eq!(dev.constraints().execution_level, ExecutionLevel::Passive);
    assert_eq!(dev.constraints().sync_scope, SyncScope::Device);
    assert_eq!(dev.callback_lock().flavour(), LockFlavour::Passive);
    let q = dev
        .create_queue(parallel(), ObjectAttributes::default())
        .unwrap();
    assert_eq!(q.constraints().execution_level, ExecutionLevel::Passive);
    assert_eq!(q.constraints().sync_scope, SyncScope::Device);
    assert_eq!(q.constraints().lock, LockOwner::Device);
    assert!(q.constraints().passive_callbacks);
    assert!(q.callback_lock().same_as(dev.callback_lock()));
}

// ---------------------------------------------------------------------------------------------
// Combination rules (spec §2.3)

#[test]
fn device_scope_queue_with_a_different_level_is_invalid_parameter() {
    let kernel = kernel();
    let driver = driver(&kernel);
    // Dispatch device, Device-scope queue asking for Passive.
    let dev = device(
        &driver,
        "cons-level-mismatch-d",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let err = dev
        .create_queue(
            parallel(),
            ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Device),
        )
        .unwrap_err();
    assert_eq!(err, NtStatus::INVALID_PARAMETER);
    // The same with the Device scope inherited rather than explicit.
    let err = dev
        .create_queue(parallel(), ObjectAttributes::level(ExecutionLevel::Passive))
        .unwrap_err();
    assert_eq!(err, NtStatus::INVALID_PARAMETER);
    assert!(dev.queues().is_empty(), "a rejected queue is not added");

    // Passive device, Device-scope queue asking for Dispatch.
    let dev = device(
        &driver,
        "cons-level-mismatch-p",
        ObjectAttributes::scope(SyncScope::Device).with_level(ExecutionLevel::Passive),
    );
    let err = dev
        .create_queue(
            parallel(),
            ObjectAttributes::level(ExecutionLevel::Dispatch),
        )
        .unwrap_err();
    assert_eq!(err, NtStatus::INVALID_PARAMETER);
    // Same level as the device: fine.
    dev.create_queue(parallel(), ObjectAttributes::level(ExecutionLevel::Passive))
        .unwrap();
}

#[test]
fn queue_scope_queue_under_a_device_scope_device_gets_its_own_lock() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "cons-queue-under-device",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let q = dev
        .create_queue(parallel(), ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();
    assert_eq!(q.constraints().sync_scope, SyncScope::Queue);
    assert_eq!(q.constraints().lock, LockOwner::Own);
    assert!(!q.callback_lock().same_as(dev.callback_lock()));
    // A Queue-scope queue may even pick another level than the device (it has its own lock).
    let p = dev
        .create_queue(
            parallel(),
            ObjectAttributes::scope(SyncScope::Queue).with_level(ExecutionLevel::Passive),
        )
        .unwrap();
    assert_eq!(p.callback_lock().flavour(), LockFlavour::Passive);
}

#[test]
fn device_or_driver_queue_scope_gives_each_queue_its_own_lock() {
    let kernel = kernel();
    // Device with Queue scope.
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "cons-device-queue-scope",
        ObjectAttributes::scope(SyncScope::Queue),
    );
    let a = dev
        .create_queue(parallel(), ObjectAttributes::default())
        .unwrap();
    let b = dev
        .create_queue(parallel(), ObjectAttributes::default())
        .unwrap();
    for q in [&a, &b] {
        assert_eq!(q.constraints().sync_scope, SyncScope::Queue);
        assert_eq!(q.constraints().lock, LockOwner::Own);
        assert!(!q.callback_lock().same_as(dev.callback_lock()));
    }
    assert!(!a.callback_lock().same_as(b.callback_lock()));

    // Driver with Queue scope: the device inherits it, and so do its queues.
    let qdriver = Driver::create(&kernel, ObjectAttributes::scope(SyncScope::Queue)).unwrap();
    let dev = device(
        &qdriver,
        "cons-driver-queue-scope",
        ObjectAttributes::default(),
    );
    assert_eq!(dev.constraints().sync_scope, SyncScope::Queue);
    let c = dev
        .create_queue(parallel(), ObjectAttributes::default())
        .unwrap();
    assert_eq!(c.constraints().lock, LockOwner::Own);
    assert!(!c.callback_lock().same_as(dev.callback_lock()));
}

#[test]
fn device_scope_queue_under_a_scope_none_device_shares_the_device_lock() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "cons-device-queue-on-none",
        ObjectAttributes::default(),
    );
    assert_eq!(dev.constraints().sync_scope, SyncScope::None);
    let q = dev
        .create_queue(parallel(), ObjectAttributes::scope(SyncScope::Device))
        .unwrap();
    assert_eq!(q.constraints().sync_scope, SyncScope::Device);
    assert_eq!(q.constraints().lock, LockOwner::Device);
    assert!(q.callback_lock().same_as(dev.callback_lock()));
    // A sibling inheriting None takes no lock.
    let n = dev
        .create_queue(parallel(), ObjectAttributes::default())
        .unwrap();
    assert!(!n.constraints().serialized());
    assert!(!n.callback_lock().same_as(dev.callback_lock()));

    // The same under a Queue-scope device.
    let dev = device(
        &driver,
        "cons-device-queue-on-queue",
        ObjectAttributes::scope(SyncScope::Queue),
    );
    let q = dev
        .create_queue(parallel(), ObjectAttributes::scope(SyncScope::Device))
        .unwrap();
    assert_eq!(q.constraints().lock, LockOwner::Device);
    assert!(q.callback_lock().same_as(dev.callback_lock()));
}

#[test]
fn file_object_queue_scope_fails_device_creation() {
    let kernel = kernel();
    let driver = driver(&kernel);
    // Explicit Queue scope on the file object.
    let err = driver
        .create_device(init_with_file_attrs(
            "cons-file-queue-explicit",
            ObjectAttributes::level(ExecutionLevel::Passive),
            Some(ObjectAttributes::scope(SyncScope::Queue)),
        ))
        .unwrap_err();
    assert_eq!(err, NtStatus::INVALID_DEVICE_REQUEST);
    // Queue scope inherited from a Queue-scope device.
    let err = driver
        .create_device(init_with_file_attrs(
            "cons-file-queue-inherited",
            ObjectAttributes::scope(SyncScope::Queue).with_level(ExecutionLevel::Passive),
            Some(ObjectAttributes::default()),
        ))
        .unwrap_err();
    assert_eq!(err, NtStatus::INVALID_DEVICE_REQUEST);
    // A failed device is not registered.
    for name in ["cons-file-queue-explicit", "cons-file-queue-inherited"] {
        assert_eq!(
            kernel.io().open(name).unwrap_err(),
            NtStatus::OBJECT_NAME_NOT_FOUND
        );
    }
    assert!(driver.devices().is_empty());
}

#[test]
fn file_object_device_scope_on_a_dispatch_device_fails_device_creation() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let err = driver
        .create_device(init_with_file_attrs(
            "cons-file-device-dispatch",
            ObjectAttributes::default(),
            Some(ObjectAttributes::scope(SyncScope::Device)),
        ))
        .unwrap_err();
    assert_eq!(err, NtStatus::INVALID_DEVICE_REQUEST);
    // Consequence (spec §2.3): a Dispatch, Device-scope device that passes file-object
    // attributes left at InheritFromParent cannot be created...
    let err = driver
        .create_device(init_with_file_attrs(
            "cons-file-inherit-dispatch",
            ObjectAttributes::scope(SyncScope::Device),
            Some(ObjectAttributes::default()),
        ))
        .unwrap_err();
    assert_eq!(err, NtStatus::INVALID_DEVICE_REQUEST);
    // ...while passing no file-object attributes avoids the problem (scope None).
    let dev = driver
        .create_device(init_with_file_attrs(
            "cons-file-none-dispatch",
            ObjectAttributes::scope(SyncScope::Device),
            None,
        ))
        .unwrap();
    assert_eq!(dev.file_object_constraints().sync_scope, SyncScope::None);
    assert_eq!(dev.file_object_constraints().lock, LockOwner::Nothing);
}

#[test]
fn file_object_device_scope_on_a_passive_device_is_allowed() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = driver
        .create_device(init_with_file_attrs(
            "cons-file-device-passive",
            ObjectAttributes::level(ExecutionLevel::Passive),
            Some(ObjectAttributes::scope(SyncScope::Device)),
        ))
        .unwrap();
    let f = dev.file_object_constraints();
    assert_eq!(f.sync_scope, SyncScope::Device);
    assert_eq!(f.lock, LockOwner::Device);
    assert_eq!(f.execution_level, ExecutionLevel::Passive);
    // Inherited Device scope from a Passive device: allowed as well.
    let dev = driver
        .create_device(init_with_file_attrs(
            "cons-file-inherit-passive",
            ObjectAttributes::scope(SyncScope::Device).with_level(ExecutionLevel::Passive),
            Some(ObjectAttributes::default()),
        ))
        .unwrap();
    assert_eq!(dev.file_object_constraints().lock, LockOwner::Device);
    assert!(kernel.io().open("cons-file-inherit-passive").is_ok());
}

// ---------------------------------------------------------------------------------------------
// Queue configuration (spec §5.1)

#[test]
fn non_manual_queue_without_handlers_is_wdf_no_callback() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "cons-no-callback", ObjectAttributes::default());
    for dt in [DispatchType::Sequential, DispatchType::Parallel] {
        let err = dev
            .create_queue(QueueConfig::new(dt), ObjectAttributes::default())
            .unwrap_err();
        assert_eq!(err, NtStatus::WDF_NO_CALLBACK, "{dt:?}");
    }
    // Any one of the five handlers is enough.
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.io_default(|_cx, req| req.complete(NtStatus::SUCCESS));
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.io_internal_device_control(|_cx, req, _o, _i, _c| req.complete(NtStatus::SUCCESS));
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
}

#[test]
fn manual_queue_with_handlers_is_invalid_parameter() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "cons-manual-handlers", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.io_write(|_cx, req, _len| req.complete(NtStatus::SUCCESS));
    assert_eq!(
        dev.create_queue(cfg, ObjectAttributes::default())
            .unwrap_err(),
        NtStatus::INVALID_PARAMETER
    );
    dev.create_queue(
        QueueConfig::new(DispatchType::Manual),
        ObjectAttributes::default(),
    )
    .unwrap();
}

#[test]
fn parallel_limit_on_a_non_parallel_queue_is_invalid_parameter() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "cons-parallel-limit", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.io_read(|_cx, req, _len| req.complete(NtStatus::SUCCESS));
    cfg.parallel_limit = Some(2);
    assert_eq!(
        dev.create_queue(cfg, ObjectAttributes::default())
            .unwrap_err(),
        NtStatus::INVALID_PARAMETER
    );
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.parallel_limit = Some(1);
    assert_eq!(
        dev.create_queue(cfg, ObjectAttributes::default())
            .unwrap_err(),
        NtStatus::INVALID_PARAMETER
    );
    // wdfkit rejects a zero limit on a parallel queue too (it could never present anything).
    let mut cfg = parallel();
    cfg.parallel_limit = Some(0);
    assert_eq!(
        dev.create_queue(cfg, ObjectAttributes::default())
            .unwrap_err(),
        NtStatus::INVALID_PARAMETER
    );
    let mut cfg = parallel();
    cfg.parallel_limit = Some(3);
    dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Attribute validation (spec §1.1)

#[test]
fn attribute_validation_follows_the_object_kind_table() {
    use ExecutionLevel as L;
    use SyncScope as S;
    let all_scopes = [S::InheritFromParent, S::Device, S::Queue, S::None];
    let all_levels = [L::InheritFromParent, L::Passive, L::Dispatch];
    let attrs = |s, l| ObjectAttributes::scope(s).with_level(l);

    // Objects that take both: everything validates.
    for kind in [
        ObjectKind::Driver,
        ObjectKind::Device,
        ObjectKind::Queue,
        ObjectKind::FileObject,
    ] {
        for s in all_scopes {
            for l in all_levels {
                assert_eq!(validate_attributes(kind, &attrs(s, l)), Ok(()), "{kind:?}");
            }
        }
    }
    // Objects that take no scope: only InheritFromParent or None.
    for kind in [
        ObjectKind::Request,
        ObjectKind::Timer,
        ObjectKind::Dpc,
        ObjectKind::WorkItem,
    ] {
        for s in [S::InheritFromParent, S::None] {
            assert_eq!(
                validate_attributes(kind, &ObjectAttributes::scope(s)),
                Ok(()),
                "{kind:?} {s:?}"
            );
        }
        for s in [S::Device, S::Queue] {
            assert_eq!(
                validate_attributes(kind, &ObjectAttributes::scope(s)),
                Err(NtStatus::WDF_SYNCHRONIZATION_SCOPE_INVALID),
                "{kind:?} {s:?}"
            );
        }
    }
    // Of those, only the timer takes an execution level.
    for l in [L::Passive, L::Dispatch] {
        assert_eq!(
            validate_attributes(ObjectKind::Timer, &ObjectAttributes::level(l)),
            Ok(())
        );
        for kind in [ObjectKind::Request, ObjectKind::Dpc, ObjectKind::WorkItem] {
            assert_eq!(
                validate_attributes(kind, &ObjectAttributes::level(l)),
                Err(NtStatus::WDF_EXECUTION_LEVEL_INVALID),
                "{kind:?} {l:?}"
            );
        }
    }
}

#[test]
fn creating_two_devices_with_one_name_fails() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let _a: Arc<wdf::Device> = device(&driver, "cons-dup-name", ObjectAttributes::default());
    assert_eq!(
        driver
            .create_device(DeviceInit::new("cons-dup-name"))
            .unwrap_err(),
        NtStatus::OBJECT_NAME_COLLISION
    );
}
