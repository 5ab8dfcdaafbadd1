//! Constraint resolution: the one place where "inherit from parent" is resolved, the lock
//! flavour is chosen, and invalid combinations are rejected.
//!
//! Each function takes the parent's resolved constraints and the object's attributes and returns
//! a plain [`Resolved`] value (or the WDF status of the rule broken). Object creation calls these
//! functions and nothing else decides; `wdfkit explain` prints the same values.
//!
//! | Object | Level when inherited | Scope when inherited | Source (spec §1.4) |
//! |---|---|---|---|
//! | driver | Dispatch | None | `FxDriver::ConfigureConstraints` |
//! | device | driver's | driver's | `FxDeviceBase::ConfigureConstraints` |
//! | queue | **device's** (never the parent object's) | device's | `FxIoQueue::ConfigureConstraints` |
//! | file object, no attributes | Passive | None | `FxPkgGeneral::ConfigureConstraints` |
//! | file object, attributes | device's | device's | same |
//!
//! ```
//! use wdf::sync::constraints::*;
//! use wdf::{ExecutionLevel, SyncScope, ObjectAttributes};
//! let driver = resolve_driver(&ObjectAttributes::default()).unwrap();
//! let device = resolve_device(&driver, &ObjectAttributes::scope(SyncScope::Device)).unwrap();
//! let queue = resolve_queue(&device, &ObjectAttributes::default()).unwrap();
//! assert_eq!(queue.execution_level, ExecutionLevel::Dispatch);
//! assert_eq!(queue.sync_scope, SyncScope::Device);
//! assert_eq!(queue.lock, LockOwner::Device); // shares the device's spin lock
//! let bad = resolve_queue(&device, &ObjectAttributes::level(ExecutionLevel::Passive)
//!     .with_scope(SyncScope::Device));
//! assert_eq!(bad.unwrap_err(), nt::NtStatus::INVALID_PARAMETER);
//! ```

use std::fmt;

use nt::NtStatus;
use nt::sync::LockFlavour;

use crate::object::ObjectAttributes;

/// Which callbacks the framework serializes, and with whose lock.
///
/// Equivalent to: `WDF_SYNCHRONIZATION_SCOPE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SyncScope {
    /// Take the parent's resolved scope (the default for devices and queues).
    #[default]
    InheritFromParent,
    /// One lock per device, shared by all its queues (and file objects, auto-serialized objects).
    Device,
    /// One lock per queue.
    Queue,
    /// No framework serialization: the driver brings its own locks.
    None,
}

/// The IRQL a object's callbacks run at, and so the flavour of its callback lock.
///
/// Equivalent to: `WDF_EXECUTION_LEVEL`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExecutionLevel {
    /// Take the parent's resolved level.
    #[default]
    InheritFromParent,
    /// Callbacks run at PASSIVE_LEVEL (mutex-flavour lock; arrivals at DISPATCH_LEVEL are
    /// deferred to a work item).
    Passive,
    /// Callbacks may run at DISPATCH_LEVEL (spin-flavour lock).
    Dispatch,
}

impl fmt::Display for SyncScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncScope::InheritFromParent => "inherit",
            SyncScope::Device => "device",
            SyncScope::Queue => "queue",
            SyncScope::None => "none",
        })
    }
}

impl fmt::Display for ExecutionLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutionLevel::InheritFromParent => "inherit",
            ExecutionLevel::Passive => "passive",
            ExecutionLevel::Dispatch => "dispatch",
        })
    }
}

/// Whose callback lock an object's callbacks take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockOwner {
    /// No lock is taken around callbacks.
    Nothing,
    /// The device's lock.
    Device,
    /// The object's own lock (a queue with Queue scope).
    Own,
}

/// The resolved constraints of one object: what `wdfkit explain` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Resolved {
    /// Passive or Dispatch (never Inherit).
    pub execution_level: ExecutionLevel,
    /// Device, Queue or None (never Inherit).
    pub sync_scope: SyncScope,
    /// Flavour of the object's callback lock (every device and queue has one, used or not).
    pub lock_flavour: LockFlavour,
    /// Whose lock the framework takes around the object's callbacks.
    pub lock: LockOwner,
    /// Whether the object's callbacks must run at PASSIVE_LEVEL (the "passive callbacks" flag
    /// auto-serialized children are checked against).
    pub passive_callbacks: bool,
}

impl Resolved {
    /// Whether the framework serializes this object's callbacks.
    pub fn serialized(&self) -> bool {
        self.lock != LockOwner::Nothing
    }
}

impl ObjectAttributes {
    /// The execution level, or `parent`'s when the attributes say InheritFromParent.
    fn level_or(&self, parent: ExecutionLevel) -> ExecutionLevel {
        match self.execution_level {
            ExecutionLevel::InheritFromParent => parent,
            l => l,
        }
    }

    /// The scope, or `parent`'s when the attributes say InheritFromParent.
    fn scope_or(&self, parent: SyncScope) -> SyncScope {
        match self.sync_scope {
            SyncScope::InheritFromParent => parent,
            s => s,
        }
    }
}

fn flavour(level: ExecutionLevel) -> LockFlavour {
    if level == ExecutionLevel::Passive {
        LockFlavour::Passive
    } else {
        LockFlavour::Spin
    }
}

/// Resolves the driver object: defaults Dispatch (KMDF) and None.
pub fn resolve_driver(attrs: &ObjectAttributes) -> Result<Resolved, NtStatus> {
    let level = attrs.level_or(ExecutionLevel::Dispatch);
    let scope = attrs.scope_or(SyncScope::None);
    Ok(Resolved {
        execution_level: level,
        sync_scope: scope,
        lock_flavour: LockFlavour::Passive, // the driver's private lock is always a mutex
        lock: if matches!(scope, SyncScope::Device | SyncScope::Queue) {
            LockOwner::Own
        } else {
            LockOwner::Nothing
        },
        passive_callbacks: true,
    })
}

/// Resolves a device: inherits from the driver.
///
/// The device's callback lock is always allocated (mutex if Passive, spin otherwise). Its
/// passive-callbacks flag follows the resolved level (spec §4.6 records that WDF sets it only for
/// an explicit Passive attribute; wdfkit deliberately uses the resolved level, closing that gap).
pub fn resolve_device(driver: &Resolved, attrs: &ObjectAttributes) -> Result<Resolved, NtStatus> {
    let level = attrs.level_or(driver.execution_level);
    let scope = attrs.scope_or(driver.sync_scope);
    Ok(Resolved {
        execution_level: level,
        sync_scope: scope,
        lock_flavour: flavour(level),
        lock: LockOwner::Own,
        passive_callbacks: level == ExecutionLevel::Passive,
    })
}

/// Resolves a queue: inherits from its **device**, whatever its parent object is.
///
/// Device scope with a level different from the device's: `STATUS_INVALID_PARAMETER`.
/// A queue may pick Device scope when the device's own scope is None or Queue (it shares the
/// device lock), and Queue scope under a Device-scope device.
pub fn resolve_queue(device: &Resolved, attrs: &ObjectAttributes) -> Result<Resolved, NtStatus> {
    let level = attrs.level_or(device.execution_level);
    let scope = attrs.scope_or(device.sync_scope);
    let lock = match scope {
        SyncScope::Device => {
            if level != device.execution_level {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            LockOwner::Device
        }
        SyncScope::Queue => LockOwner::Own,
        _ => LockOwner::Nothing,
    };
    Ok(Resolved {
        execution_level: level,
        sync_scope: scope,
        lock_flavour: if lock == LockOwner::Device {
            device.lock_flavour
        } else {
            flavour(level)
        },
        lock,
        passive_callbacks: level == ExecutionLevel::Passive,
    })
}

/// Resolves a device's file-object callbacks (create/cleanup/close).
///
/// No attributes: Passive and None. With attributes: inherit from the device; Queue scope is
/// rejected, and Device scope on a device that is not Passive is rejected, both with
/// `STATUS_INVALID_DEVICE_REQUEST` (at device creation).
pub fn resolve_file_object(
    device: &Resolved,
    attrs: Option<&ObjectAttributes>,
) -> Result<Resolved, NtStatus> {
    let Some(attrs) = attrs else {
        return Ok(Resolved {
            execution_level: ExecutionLevel::Passive,
            sync_scope: SyncScope::None,
            lock_flavour: LockFlavour::Passive,
            lock: LockOwner::Nothing,
            passive_callbacks: true,
        });
    };
    let level = attrs.level_or(device.execution_level);
    let scope = attrs.scope_or(device.sync_scope);
    let lock = match scope {
        SyncScope::Queue => return Err(NtStatus::INVALID_DEVICE_REQUEST),
        SyncScope::Device => {
            if device.execution_level != ExecutionLevel::Passive {
                return Err(NtStatus::INVALID_DEVICE_REQUEST);
            }
            LockOwner::Device
        }
        _ => LockOwner::Nothing,
    };
    Ok(Resolved {
        execution_level: level,
        sync_scope: scope,
        lock_flavour: device.lock_flavour,
        lock,
        passive_callbacks: level == ExecutionLevel::Passive,
    })
}

/// What auto-serialization needs to know about the parent of a DPC, timer or work item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    /// Whether the parent has a device ancestor (a driver does not).
    pub has_device: bool,
    /// The parent's "passive callbacks" flag (spec §4.1 step 4 compares against it).
    pub passive_callbacks: bool,
    /// The resolved scope of the nearest callback owner (the parent queue or device).
    pub scope: SyncScope,
}

/// Decides whether an auto-serialized DPC, timer or work item takes its parent's callback lock
/// (spec §4.1, `FxObject::_GetEffectiveLock`):
///
/// 1. no device ancestor: `STATUS_INVALID_DEVICE_REQUEST` (whatever the flag);
/// 2. `automatic_serialization` false: no lock;
/// 3. the owner's scope is None: no lock, and no error (the flag is silently ignored);
/// 4. the object must run at PASSIVE (work item, passive timer) and the parent's callbacks are
///    not passive, or the other way round (DPC, dispatch timer under a passive parent):
///    `STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL`;
/// 5. otherwise: the parent's callback lock (`Ok(true)`).
///
/// ```
/// use wdf::sync::constraints::{resolve_auto_serialization, ParentInfo};
/// use wdf::SyncScope;
/// let spin_device = ParentInfo { has_device: true, passive_callbacks: false, scope: SyncScope::Device };
/// // A work item always runs at PASSIVE_LEVEL: it cannot share a spin lock.
/// assert_eq!(resolve_auto_serialization(true, true, &spin_device),
///            Err(nt::NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL));
/// // A DPC can.
/// assert_eq!(resolve_auto_serialization(false, true, &spin_device), Ok(true));
/// ```
pub fn resolve_auto_serialization(
    needs_passive: bool,
    automatic_serialization: bool,
    parent: &ParentInfo,
) -> Result<bool, NtStatus> {
    if !parent.has_device {
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    if !automatic_serialization
        || matches!(parent.scope, SyncScope::None | SyncScope::InheritFromParent)
    {
        return Ok(false);
    }
    if needs_passive != parent.passive_callbacks {
        return Err(NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL);
    }
    Ok(true)
}

/// Checks a timer's configuration (spec §4.2): a passive timer only when the attributes say
/// Passive explicitly, and a periodic passive timer is `STATUS_NOT_SUPPORTED`. Returns whether
/// the timer is passive.
pub fn resolve_timer_level(attrs: &ObjectAttributes, periodic: bool) -> Result<bool, NtStatus> {
    let passive = attrs.execution_level == ExecutionLevel::Passive;
    if passive && periodic {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    Ok(passive)
}

/// Checks a queue configuration's rules (spec §5.1, `WdfIoQueueCreate`): a manual queue takes
/// no request handlers (`STATUS_INVALID_PARAMETER`), a sequential or parallel one needs at least
/// one (`STATUS_WDF_NO_CALLBACK`), and a presentation limit applies only to parallel queues and
/// must be at least 1 (`STATUS_INVALID_PARAMETER`).
pub fn validate_queue_config(
    dispatch_type: crate::DispatchType,
    has_handlers: bool,
    parallel_limit: Option<u32>,
) -> Result<(), NtStatus> {
    use crate::DispatchType::{Manual, Parallel, Sequential};
    match dispatch_type {
        Manual if has_handlers => return Err(NtStatus::INVALID_PARAMETER),
        Sequential | Parallel if !has_handlers => return Err(NtStatus::WDF_NO_CALLBACK),
        _ => {}
    }
    match (dispatch_type, parallel_limit) {
        (Parallel, Some(0)) | (Sequential | Manual, Some(_)) => Err(NtStatus::INVALID_PARAMETER),
        _ => Ok(()),
    }
}

/// Kinds of objects that carry attributes, for attribute validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `WDFDRIVER`.
    Driver,
    /// `WDFDEVICE`.
    Device,
    /// `WDFQUEUE`.
    Queue,
    /// File-object configuration.
    FileObject,
    /// `WDFREQUEST`.
    Request,
    /// `WDFTIMER`.
    Timer,
    /// `WDFDPC`.
    Dpc,
    /// `WDFWORKITEM`.
    WorkItem,
}

/// Checks that an object of `kind` accepts the scope and level in `attrs` (spec §1.1).
///
/// A scope on an object that takes none (anything but Inherit/None):
/// `STATUS_WDF_SYNCHRONIZATION_SCOPE_INVALID`; a level on an object that takes none:
/// `STATUS_WDF_EXECUTION_LEVEL_INVALID`.
pub fn validate_attributes(kind: ObjectKind, attrs: &ObjectAttributes) -> Result<(), NtStatus> {
    let takes_scope = matches!(
        kind,
        ObjectKind::Driver | ObjectKind::Device | ObjectKind::Queue | ObjectKind::FileObject
    );
    let takes_level = matches!(
        kind,
        ObjectKind::Driver
            | ObjectKind::Device
            | ObjectKind::Queue
            | ObjectKind::FileObject
            | ObjectKind::Timer
    );
    if !takes_scope
        && !matches!(
            attrs.sync_scope,
            SyncScope::InheritFromParent | SyncScope::None
        )
    {
        return Err(NtStatus::WDF_SYNCHRONIZATION_SCOPE_INVALID);
    }
    if !takes_level && attrs.execution_level != ExecutionLevel::InheritFromParent {
        return Err(NtStatus::WDF_EXECUTION_LEVEL_INVALID);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(level: ExecutionLevel, scope: SyncScope) -> ObjectAttributes {
        ObjectAttributes::level(level).with_scope(scope)
    }

    #[test]
    fn driver_defaults_are_dispatch_and_none() {
        let d = resolve_driver(&ObjectAttributes::default()).unwrap();
        assert_eq!(
            (d.execution_level, d.sync_scope),
            (ExecutionLevel::Dispatch, SyncScope::None)
        );
    }

    #[test]
    fn queue_inherits_from_device_not_driver() {
        let drv = resolve_driver(&attrs(ExecutionLevel::Dispatch, SyncScope::None)).unwrap();
        let dev = resolve_device(&drv, &attrs(ExecutionLevel::Passive, SyncScope::Queue)).unwrap();
        let q = resolve_queue(&dev, &ObjectAttributes::default()).unwrap();
        assert_eq!(q.execution_level, ExecutionLevel::Passive);
        assert_eq!(q.sync_scope, SyncScope::Queue);
        assert_eq!(q.lock, LockOwner::Own);
        assert_eq!(q.lock_flavour, LockFlavour::Passive);
    }

    #[test]
    fn scope_none_queue_still_has_a_lock_flavour_but_takes_no_lock() {
        let drv = resolve_driver(&ObjectAttributes::default()).unwrap();
        let dev = resolve_device(&drv, &ObjectAttributes::default()).unwrap();
        let q = resolve_queue(&dev, &ObjectAttributes::default()).unwrap();
        assert_eq!(q.lock, LockOwner::Nothing);
        assert!(!q.serialized());
        assert_eq!(q.lock_flavour, LockFlavour::Spin);
    }

    #[test]
    fn attribute_validation_per_kind() {
        let scoped = ObjectAttributes::scope(SyncScope::Device);
        assert_eq!(
            validate_attributes(ObjectKind::Timer, &scoped),
            Err(NtStatus::WDF_SYNCHRONIZATION_SCOPE_INVALID)
        );
        assert_eq!(
            validate_attributes(ObjectKind::Timer, &ObjectAttributes::scope(SyncScope::None)),
            Ok(())
        );
        let leveled = ObjectAttributes::level(ExecutionLevel::Passive);
        assert_eq!(validate_attributes(ObjectKind::Timer, &leveled), Ok(()));
        assert_eq!(
            validate_attributes(ObjectKind::WorkItem, &leveled),
            Err(NtStatus::WDF_EXECUTION_LEVEL_INVALID)
        );
        assert_eq!(
            validate_attributes(ObjectKind::Request, &leveled),
            Err(NtStatus::WDF_EXECUTION_LEVEL_INVALID)
        );
    }
}
