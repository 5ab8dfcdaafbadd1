//! `wdfkit explain`: what the framework makes of a configuration, object by object.
//!
//! Every decision goes through `wdf::sync::constraints` — the functions object creation calls —
//! in the order creation calls them, so the verdict (resolved values, or the status a creation
//! call returns) is the framework's own: `tests/explain_matches_build.rs` builds every shipped
//! scenario with `wdf` and compares. The queue configuration rules come from
//! `constraints::validate_queue_config`; two device-level checks are mirrored here:
//! `Device::create_queue`'s "second default queue" and the "type already routed" rule of
//! `Device::configure_request_dispatching`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use nt::NtStatus;
use nt::sync::LockFlavour;
use serde::Serialize;
use wdf::sync::constraints::{self, LockOwner, ObjectKind, ParentInfo};
use wdf::{ExecutionLevel, ObjectAttributes, Resolved, SyncScope};

use crate::config::{ArrivalIrql, Config, Dispatch, ExecKind, Handler, StatsMode, Work};

/// A lock as `explain` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    /// `spin`, `mutex` or `none`.
    pub flavour: &'static str,
    /// The owning object's id (`device:dev0`, `queue:rw`, `driver`), or `null` for none.
    pub owner: Option<String>,
}

impl LockInfo {
    fn none() -> LockInfo {
        LockInfo {
            flavour: "none",
            owner: None,
        }
    }
}

/// One object that the framework would create.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectInfo {
    /// `driver`, `device`, `queue`, `file_object`, `dpc`, `timer`, `work_item`.
    pub kind: &'static str,
    /// The configured name (`driver` for the driver).
    pub name: String,
    /// `kind:name` (`driver` for the driver).
    pub id: String,
    /// Resolved level: `passive` or `dispatch`.
    pub execution_level: &'static str,
    /// Resolved scope: `device`, `queue` or `none` (DPCs, timers and work items: the scope of
    /// the lock automatic serialization gives them, else `none`).
    pub sync_scope: &'static str,
    /// The lock held around the object's callbacks.
    pub lock: LockInfo,
    /// `passive`, `dispatch`, or `caller` (no lock and Dispatch level: the IRQL the request
    /// arrived at).
    pub callback_irql: &'static str,
    /// The framework's resolved constraints (driver, device, queue, file object).
    #[serde(skip)]
    pub resolved: Option<Resolved>,
    /// The device the object belongs to (its index in the configuration).
    #[serde(skip)]
    pub device: Option<usize>,
}

/// A set of callbacks that never overlap: they all take one lock.
#[derive(Clone, Debug, Serialize)]
pub struct Domain {
    /// The lock owner's id.
    pub lock: String,
    /// `spin` or `mutex`.
    pub flavour: &'static str,
    /// Ids of the objects whose callbacks take it.
    pub members: Vec<String>,
}

/// A creation call that fails.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectError {
    /// The object's id.
    pub object: String,
    /// The WDF status name (`STATUS_...`).
    pub status: String,
    /// The status in hex (`0xC020020C`).
    pub code: String,
    /// Why, in one line.
    pub message: String,
    /// The status.
    #[serde(skip)]
    pub value: NtStatus,
    /// The creation call that fails: the object itself, or for a file object its device.
    #[serde(skip)]
    pub fails: String,
}

/// The whole verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// No creation call fails.
    pub ok: bool,
    /// Objects that would be created, in creation order.
    pub objects: Vec<ObjectInfo>,
    /// Serialization domains.
    pub domains: Vec<Domain>,
    /// Failing creation calls.
    pub errors: Vec<ObjectError>,
    /// The articles' guidance where it applies.
    pub advice: Vec<String>,
}

impl Explanation {
    /// The object with id `id`.
    pub fn object(&self, id: &str) -> Option<&ObjectInfo> {
        self.objects.iter().find(|o| o.id == id)
    }
}

/// `spin`/`mutex` for a flavour.
pub fn flavour_name(f: LockFlavour) -> &'static str {
    match f {
        LockFlavour::Spin => "spin",
        LockFlavour::Passive => "mutex",
    }
}

fn level_name(l: ExecutionLevel) -> &'static str {
    match l {
        ExecutionLevel::Passive => "passive",
        ExecutionLevel::Dispatch => "dispatch",
        ExecutionLevel::InheritFromParent => "inherit",
    }
}

fn scope_name(s: SyncScope) -> &'static str {
    match s {
        SyncScope::Device => "device",
        SyncScope::Queue => "queue",
        SyncScope::None => "none",
        SyncScope::InheritFromParent => "inherit",
    }
}

fn attrs(level: crate::config::Level, scope: crate::config::Scope) -> ObjectAttributes {
    ObjectAttributes::level(level.to_wdf()).with_scope(scope.to_wdf())
}

fn error(object: &str, fails: &str, status: NtStatus, message: String) -> ObjectError {
    ObjectError {
        object: object.to_owned(),
        status: status
            .name()
            .map_or_else(|| format!("0x{:08X}", status.0), str::to_owned),
        code: format!("0x{:08X}", status.0),
        message,
        value: status,
        fails: fails.to_owned(),
    }
}

/// The IRQL callbacks run at, given their lock and level.
fn irql_of(lock_flavour: Option<LockFlavour>, level: ExecutionLevel) -> &'static str {
    match lock_flavour {
        Some(LockFlavour::Spin) => "dispatch",
        Some(LockFlavour::Passive) => "passive",
        None if level == ExecutionLevel::Passive => "passive",
        None => "caller",
    }
}

/// The queue configuration rules of spec §5.1: the verdict is `wdf`'s own
/// (`constraints::validate_queue_config`, what `QueueConfig::validate` calls); only the reason
/// text is written here.
fn queue_config_status(
    dispatch: Dispatch,
    has_handlers: bool,
    limit: Option<u32>,
) -> Result<(), (NtStatus, &'static str)> {
    let dispatch_type = match dispatch {
        Dispatch::Sequential => wdf::DispatchType::Sequential,
        Dispatch::Parallel => wdf::DispatchType::Parallel,
        Dispatch::Manual => wdf::DispatchType::Manual,
    };
    constraints::validate_queue_config(dispatch_type, has_handlers, limit).map_err(|status| {
        let reason = match (dispatch, has_handlers, limit) {
            (Dispatch::Manual, true, _) => {
                "a manual queue presents nothing, so it takes no EvtIo handlers (use routes = [...] to send requests to it)"
            }
            (Dispatch::Sequential | Dispatch::Parallel, false, _) => {
                "a sequential or parallel queue needs at least one EvtIo handler"
            }
            (Dispatch::Parallel, _, Some(0)) => "parallel_limit must be at least 1",
            _ => "parallel_limit applies to parallel queues only",
        };
        (status, reason)
    })
}

struct DeviceState {
    resolved: Resolved,
    default_queue: Option<String>,
    routes: BTreeMap<Handler, String>,
}

/// Resolves `config` as the framework would.
pub fn explain(config: &Config) -> Explanation {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let mut advice = Vec::new();
    let mut skipped = Vec::new();

    // The driver (WdfDriverCreate).
    let drv_attrs = attrs(config.driver.execution_level, config.driver.sync_scope);
    let driver = constraints::validate_attributes(ObjectKind::Driver, &drv_attrs)
        .and_then(|()| constraints::resolve_driver(&drv_attrs));
    let driver = match driver {
        Ok(r) => r,
        Err(s) => {
            errors.push(error(
                "driver",
                "driver",
                s,
                "the driver's attributes".into(),
            ));
            return finish(objects, errors, advice);
        }
    };
    objects.push(ObjectInfo {
        kind: "driver",
        name: "driver".into(),
        id: "driver".into(),
        execution_level: level_name(driver.execution_level),
        sync_scope: scope_name(driver.sync_scope),
        lock: if driver.serialized() {
            LockInfo {
                flavour: "mutex",
                owner: Some("driver".into()),
            }
        } else {
            LockInfo::none()
        },
        callback_irql: "passive",
        resolved: Some(driver),
        device: None,
    });

    // Devices (WdfDeviceCreate, file-object configuration included).
    let mut devices: Vec<Option<DeviceState>> = Vec::new();
    for (di, d) in config.device.iter().enumerate() {
        let name = d.name.get_ref();
        let id = format!("device:{name}");
        let fid = format!("file_object:{name}");
        let a = attrs(d.execution_level, d.sync_scope);
        let resolved = match constraints::validate_attributes(ObjectKind::Device, &a)
            .and_then(|()| constraints::resolve_device(&driver, &a))
        {
            Ok(r) => r,
            Err(s) => {
                errors.push(error(&id, &id, s, "the device's attributes".into()));
                devices.push(None);
                continue;
            }
        };
        let file = d
            .file_object
            .as_ref()
            .map(|f| attrs(f.execution_level, f.sync_scope));
        let file_resolved = match &file {
            Some(fa) => constraints::validate_attributes(ObjectKind::FileObject, fa),
            None => Ok(()),
        }
        .and_then(|()| constraints::resolve_file_object(&resolved, file.as_ref()));
        let file_resolved = match file_resolved {
            Ok(r) => r,
            Err(s) => {
                let why = if s == NtStatus::INVALID_DEVICE_REQUEST {
                    if file.as_ref().map(|f| f.sync_scope) == Some(SyncScope::Queue)
                        || (file.as_ref().map(|f| f.sync_scope)
                            == Some(SyncScope::InheritFromParent)
                            && resolved.sync_scope == SyncScope::Queue)
                    {
                        format!(
                            "file objects cannot use Queue scope (their callbacks belong to no queue); WdfDeviceCreate of {name} fails. Use sync_scope = \"none\", or \"device\" on a passive device"
                        )
                    } else {
                        format!(
                            "file-object callbacks run at PASSIVE_LEVEL and cannot take device {name}'s spin lock (Device scope on a Dispatch-level device); WdfDeviceCreate fails. Make the device passive, or give the file object sync_scope = \"none\" (or no file_object attributes)"
                        )
                    }
                } else {
                    format!(
                        "the file-object attributes are refused; WdfDeviceCreate of {name} fails"
                    )
                };
                errors.push(error(&fid, &id, s, why));
                devices.push(None);
                continue;
            }
        };
        objects.push(ObjectInfo {
            kind: "device",
            name: name.clone(),
            id: id.clone(),
            execution_level: level_name(resolved.execution_level),
            sync_scope: scope_name(resolved.sync_scope),
            lock: LockInfo::none(),  // filled in once the domains are known
            callback_irql: "caller", // set once the domains are known
            resolved: Some(resolved),
            device: Some(di),
        });
        if d.file_object.is_some() {
            let locked = file_resolved.lock == LockOwner::Device;
            objects.push(ObjectInfo {
                kind: "file_object",
                name: name.clone(),
                id: fid,
                execution_level: level_name(file_resolved.execution_level),
                sync_scope: scope_name(file_resolved.sync_scope),
                lock: if locked {
                    LockInfo {
                        flavour: flavour_name(resolved.lock_flavour),
                        owner: Some(id.clone()),
                    }
                } else {
                    LockInfo::none()
                },
                callback_irql: if file_resolved.passive_callbacks {
                    "passive"
                } else {
                    "caller"
                },
                resolved: Some(file_resolved),
                device: Some(di),
            });
        }
        devices.push(Some(DeviceState {
            resolved,
            default_queue: None,
            routes: BTreeMap::new(),
        }));
    }

    // Queues (WdfIoQueueCreate).
    let mut queues: Vec<Option<Resolved>> = Vec::new();
    for q in &config.queue {
        let name = q.name.get_ref();
        let id = format!("queue:{name}");
        let dname = q.device.get_ref();
        let di = config.device_index(dname).expect("checked when loading");
        let Some(dev) = devices[di].as_mut() else {
            skipped.push(format!("{id} (its device {dname} is not created)"));
            queues.push(None);
            continue;
        };
        if q.default
            && let Some(first) = &dev.default_queue
        {
            errors.push(error(
                &id,
                &id,
                NtStatus::INVALID_DEVICE_REQUEST,
                format!("device {dname} already has a default queue ({first})"),
            ));
            queues.push(None);
            continue;
        }
        let a = attrs(q.execution_level, q.sync_scope);
        let resolved = constraints::validate_attributes(ObjectKind::Queue, &a)
            .map_err(|s| (s, "the queue's attributes".to_string()))
            .and_then(|()| {
                queue_config_status(q.dispatch, !q.handlers.is_empty(), q.parallel_limit)
                    .map_err(|(s, m)| (s, m.to_string()))
            })
            .and_then(|()| {
                constraints::resolve_queue(&dev.resolved, &a).map_err(|s| {
                    let lvl = match a.execution_level {
                        ExecutionLevel::InheritFromParent => dev.resolved.execution_level,
                        l => l,
                    };
                    (
                        s,
                        format!(
                            "Device scope shares device {dname}'s {} lock, but the queue's level ({}) differs from the device's ({})",
                            flavour_name(dev.resolved.lock_flavour),
                            level_name(lvl),
                            level_name(dev.resolved.execution_level)
                        ),
                    )
                })
            });
        let resolved = match resolved {
            Ok(r) => r,
            Err((s, m)) => {
                errors.push(error(&id, &id, s, m));
                queues.push(None);
                continue;
            }
        };
        if q.default {
            dev.default_queue = Some(id.clone());
        }
        let (lock, flavour) = match resolved.lock {
            LockOwner::Device => (
                LockInfo {
                    flavour: flavour_name(resolved.lock_flavour),
                    owner: Some(format!("device:{dname}")),
                },
                Some(resolved.lock_flavour),
            ),
            LockOwner::Own => (
                LockInfo {
                    flavour: flavour_name(resolved.lock_flavour),
                    owner: Some(id.clone()),
                },
                Some(resolved.lock_flavour),
            ),
            LockOwner::Nothing => (LockInfo::none(), None),
        };
        objects.push(ObjectInfo {
            kind: "queue",
            name: name.clone(),
            id,
            execution_level: level_name(resolved.execution_level),
            sync_scope: scope_name(resolved.sync_scope),
            lock,
            callback_irql: irql_of(flavour, resolved.execution_level),
            resolved: Some(resolved),
            device: Some(di),
        });
        queues.push(Some(resolved));
    }

    // Request routing (WdfDeviceConfigureRequestDispatching), once every queue exists.
    for (qi, q) in config.queue.iter().enumerate() {
        if queues[qi].is_none() {
            continue;
        }
        let di = config.device_index(q.device.get_ref()).expect("checked");
        let Some(dev) = devices[di].as_mut() else {
            continue;
        };
        let id = format!("queue:{}", q.name.get_ref());
        for t in q.routed_types() {
            if let Some(first) = dev.routes.get(&t) {
                errors.push(error(
                    &id,
                    &id,
                    NtStatus::INVALID_DEVICE_REQUEST,
                    format!(
                        "{} requests of device {} are already dispatched to {first}",
                        t.name(),
                        q.device.get_ref()
                    ),
                ));
                break;
            }
            dev.routes.insert(t, id.clone());
        }
    }

    // DPCs, timers, work items (WdfDpcCreate, WdfTimerCreate, WdfWorkItemCreate).
    for (kind, e) in config.execs() {
        let name = e.name.get_ref();
        let id = format!("{}:{name}", kind.name());
        // A parent whose own creation failed has no handle to create this object under: the
        // creation call is never made (build skips it), so nothing about it can fail.
        let parent = e.parent.get_ref();
        if let Some(di) = config.device_index(parent)
            && devices[di].is_none()
        {
            skipped.push(format!("{id} (its parent device {parent} is not created)"));
            continue;
        }
        if let Some(qi) = config.queue_index(parent)
            && queues[qi].is_none()
        {
            skipped.push(format!("{id} (its parent queue {parent} is not created)"));
            continue;
        }
        let a = attrs(e.execution_level, e.sync_scope);
        let okind = match kind {
            ExecKind::Dpc => ObjectKind::Dpc,
            ExecKind::Timer => ObjectKind::Timer,
            ExecKind::WorkItem => ObjectKind::WorkItem,
        };
        let what = match kind {
            ExecKind::Dpc => "a DPC",
            ExecKind::Timer => "a timer",
            ExecKind::WorkItem => "a work item",
        };
        if let Err(s) = constraints::validate_attributes(okind, &a) {
            let why = if s == NtStatus::WDF_SYNCHRONIZATION_SCOPE_INVALID {
                format!(
                    "{what} takes no synchronization scope (use automatic_serialization to share its parent's lock)"
                )
            } else {
                match kind {
                    ExecKind::Dpc => {
                        "a DPC always runs at DISPATCH_LEVEL; it takes no execution level"
                            .to_string()
                    }
                    _ => "a work item always runs at PASSIVE_LEVEL; it takes no execution level"
                        .to_string(),
                }
            };
            errors.push(error(&id, &id, s, why));
            continue;
        }
        let needs_passive = match kind {
            ExecKind::Dpc => false,
            ExecKind::WorkItem => true,
            ExecKind::Timer => match constraints::resolve_timer_level(&a, e.period_ms > 0) {
                Ok(p) => p,
                Err(s) => {
                    errors.push(error(
                        &id,
                        &id,
                        s,
                        "periodic passive timers are not supported: a passive timer must be one-shot (period_ms = 0)".into(),
                    ));
                    continue;
                }
            },
        };
        // The parent: its ParentInfo, its lock (id, flavour) and its device.
        let (info, lock, device) = if parent == "driver" {
            (
                ParentInfo {
                    has_device: false,
                    passive_callbacks: true,
                    scope: SyncScope::None,
                },
                None,
                None,
            )
        } else if let Some(di) = config.device_index(parent) {
            let Some(dev) = &devices[di] else {
                skipped.push(format!("{id} (its parent device {parent} is not created)"));
                continue;
            };
            let r = dev.resolved;
            (
                ParentInfo {
                    has_device: true,
                    passive_callbacks: r.passive_callbacks,
                    scope: r.sync_scope,
                },
                Some((
                    format!("device:{parent}"),
                    r.lock_flavour,
                    SyncScope::Device,
                )),
                Some(di),
            )
        } else {
            let qi = config.queue_index(parent).expect("checked when loading");
            let Some(r) = queues[qi] else {
                skipped.push(format!("{id} (its parent queue {parent} is not created)"));
                continue;
            };
            let qdev = config.queue[qi].device.get_ref();
            let owner = if r.lock == LockOwner::Device {
                (format!("device:{qdev}"), r.lock_flavour, SyncScope::Device)
            } else {
                (format!("queue:{parent}"), r.lock_flavour, SyncScope::Queue)
            };
            (
                ParentInfo {
                    has_device: true,
                    passive_callbacks: r.passive_callbacks,
                    scope: r.sync_scope,
                },
                Some(owner),
                config.device_index(qdev),
            )
        };
        let serialized = match constraints::resolve_auto_serialization(
            needs_passive,
            e.automatic_serialization,
            &info,
        ) {
            Ok(s) => s,
            Err(s) => {
                let why = if s == NtStatus::INVALID_DEVICE_REQUEST {
                    format!(
                        "{what} needs a device ancestor (a device or queue parent); the driver has none"
                    )
                } else {
                    let (owner, fl, _) = lock.clone().expect("a device parent");
                    if needs_passive {
                        format!(
                            "{what} runs at PASSIVE_LEVEL and cannot take {owner}'s {} lock (Dispatch level); make the device passive, or set automatic_serialization = false",
                            flavour_name(fl)
                        )
                    } else {
                        format!(
                            "{what} runs at DISPATCH_LEVEL and cannot take {owner}'s passive mutex; use a dispatch-level parent, or set automatic_serialization = false"
                        )
                    }
                };
                errors.push(error(&id, &id, s, why));
                continue;
            }
        };
        if e.automatic_serialization && !serialized && info.scope == SyncScope::None {
            advice.push(format!(
                "{id}: automatic_serialization is silently ignored: its parent {parent} has scope None, so its callbacks run unserialized"
            ));
        }
        let (lock_info, scope, fl) = match (&lock, serialized) {
            (Some((owner, fl, scope)), true) => (
                LockInfo {
                    flavour: flavour_name(*fl),
                    owner: Some(owner.clone()),
                },
                scope_name(*scope),
                Some(*fl),
            ),
            _ => (LockInfo::none(), "none", None),
        };
        let level = if needs_passive { "passive" } else { "dispatch" };
        let _ = fl;
        objects.push(ObjectInfo {
            kind: kind.name(),
            name: name.clone(),
            id,
            execution_level: level,
            sync_scope: scope,
            lock: lock_info,
            callback_irql: level,
            resolved: None,
            device,
        });
    }
    for s in skipped {
        advice.push(format!("not checked: {s}"));
    }
    advise(config, &objects, &mut advice);
    finish(objects, errors, advice)
}

fn finish(
    mut objects: Vec<ObjectInfo>,
    errors: Vec<ObjectError>,
    advice: Vec<String>,
) -> Explanation {
    // Domains: group objects by the lock they take.
    let mut domains: Vec<Domain> = Vec::new();
    for o in &objects {
        if let Some(owner) = &o.lock.owner {
            match domains.iter_mut().find(|d| &d.lock == owner) {
                Some(d) => d.members.push(o.id.clone()),
                None => domains.push(Domain {
                    lock: owner.clone(),
                    flavour: o.lock.flavour,
                    members: vec![o.id.clone()],
                }),
            }
        }
    }
    // A device reports its lock if any callback takes it.
    for o in objects.iter_mut().filter(|o| o.kind == "device") {
        let flavour = domains.iter().find(|d| d.lock == o.id).map(|d| {
            o.lock = LockInfo {
                flavour: d.flavour,
                owner: Some(o.id.clone()),
            };
            d.flavour
        });
        o.callback_irql = match flavour {
            Some("spin") => "dispatch",
            Some(_) => "passive",
            None if o.execution_level == "passive" => "passive",
            None => "caller",
        };
    }
    Explanation {
        ok: errors.is_empty(),
        objects,
        domains,
        errors,
        advice,
    }
}

/// The articles' guidance, where it applies.
fn advise(config: &Config, objects: &[ObjectInfo], advice: &mut Vec<String>) {
    let w = &config.workload;
    for (di, d) in config.device.iter().enumerate() {
        let dname = d.name.get_ref();
        let did = format!("device:{dname}");
        let sharing: Vec<&ObjectInfo> = objects
            .iter()
            .filter(|o| o.kind == "queue" && o.lock.owner.as_deref() == Some(did.as_str()))
            .collect();
        if sharing.len() >= 2 {
            let names: Vec<&str> = sharing.iter().map(|o| o.name.as_str()).collect();
            let how_many = if names.len() == 2 {
                "both".to_string()
            } else {
                format!("all {}", names.len())
            };
            advice.push(format!(
                "{did}: Device scope serializes {how_many} of its queues ({}): only one EvtIo callback of the device runs at a time, whatever their dispatch types. Sync Scope Device is rarely the right answer: prefer Queue scope, or scope None with a lock held only around the shared data",
                names.join(", ")
            ));
        }
        for o in &sharing {
            let qi = config.queue_index(&o.name).expect("a configured queue");
            if config.queue[qi].dispatch == Dispatch::Parallel {
                advice.push(format!(
                    "{}: the queue is parallel, but its callbacks take {did}'s lock, so at most one runs at a time (the forum question: yes, Device scope serializes a parallel queue's callbacks)",
                    o.id
                ));
            }
        }
        let spin_queues: Vec<&str> = objects
            .iter()
            .filter(|o| o.kind == "queue" && o.device == Some(di) && o.lock.flavour == "spin")
            .map(|o| o.name.as_str())
            .collect();
        if !spin_queues.is_empty() {
            advice.push(format!(
                "{did}: a spin-lock scope means the callbacks of {} run at DISPATCH_LEVEL even when requests arrive at PASSIVE_LEVEL: keep them short (DPC guidance: well under 100 µs), never block, and remember that work items and file callbacks cannot share the lock",
                spin_queues.join(", ")
            ));
        }
        let passive_queues: Vec<&str> = objects
            .iter()
            .filter(|o| o.kind == "queue" && o.device == Some(di) && o.execution_level == "passive")
            .map(|o| o.name.as_str())
            .collect();
        if !passive_queues.is_empty() && w.arrival_irql == ArrivalIrql::Dispatch {
            advice.push(format!(
                "{did}: requests arrive at DISPATCH_LEVEL but {} are passive-level: every such request is deferred to a work item before its callback runs (extra latency and a thread switch)",
                passive_queues.join(", ")
            ));
        }
        let unlocked: Vec<&str> = objects
            .iter()
            .filter(|o| o.kind == "queue" && o.device == Some(di) && o.lock.owner.is_none())
            .map(|o| o.name.as_str())
            .collect();
        if !unlocked.is_empty() {
            let extra = match w.stats {
                StatsMode::Unsynchronized => {
                    " (the workload's stats = \"unsynchronized\" will lose updates here)"
                }
                StatsMode::Scope => {
                    " (stats = \"scope\" cannot reach scope-locked data from them: those updates are skipped)"
                }
                StatsMode::SpinLock => "",
            };
            advice.push(format!(
                "{did}: queues {} take no framework lock (scope None): their callbacks can overlap, and shared data needs the driver's own lock, held only around the update{extra}",
                unlocked.join(", ")
            ));
        }
        // Request types the workload sends that no queue of this device receives.
        let has_default = config
            .queue
            .iter()
            .any(|q| q.device.get_ref() == dname && q.default);
        if let Some(dq) = config
            .queue
            .iter()
            .find(|q| q.device.get_ref() == dname && q.default)
            && dq.dispatch != Dispatch::Manual
            && !dq.handlers.contains(&Handler::Default)
        {
            for (t, _) in w.mix.weights() {
                let routed = config
                    .queue
                    .iter()
                    .any(|q| q.device.get_ref() == dname && q.routed_types().contains(&t));
                if !routed && !dq.handlers.contains(&t) {
                    advice.push(format!(
                        "{did}: the workload sends {} requests; they reach the default queue {}, which has no handler for them: they fail with STATUS_INVALID_DEVICE_REQUEST",
                        t.name(),
                        dq.name.get_ref()
                    ));
                }
            }
        }
        if !has_default {
            for (t, _) in w.mix.weights() {
                let routed = config
                    .queue
                    .iter()
                    .any(|q| q.device.get_ref() == dname && q.routed_types().contains(&t));
                if !routed {
                    advice.push(format!(
                        "{did}: the workload sends {} requests but no queue receives them (no default queue, no route): they fail with STATUS_INVALID_DEVICE_REQUEST",
                        t.name()
                    ));
                }
            }
        }
    }
    if matches!(w.work, Work::Sleep { .. })
        && objects
            .iter()
            .any(|o| o.callback_irql == "dispatch" || o.callback_irql == "caller")
    {
        advice.push(
            "work = sleep: blocking in a callback at DISPATCH_LEVEL is a bug check on Windows; `run` reports each such wait as BLOCKING_WAIT_ABOVE_PASSIVE".into(),
        );
    }
}

/// The text form of an explanation.
pub fn render(path: &str, description: Option<&str>, e: &Explanation) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{path}");
    if let Some(d) = description {
        let _ = writeln!(s, "  {d}");
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<24} {:<9} {:<7} {:<28} callbacks at",
        "object", "level", "scope", "lock"
    );
    for o in &e.objects {
        let lock = match &o.lock.owner {
            Some(owner) => format!("{} {owner}", o.lock.flavour),
            None => "-".to_string(),
        };
        let _ = writeln!(
            s,
            "{:<24} {:<9} {:<7} {:<28} {}",
            o.id,
            o.execution_level,
            o.sync_scope,
            lock,
            match o.callback_irql {
                "passive" => "PASSIVE_LEVEL",
                "dispatch" => "DISPATCH_LEVEL",
                _ => "caller's IRQL",
            }
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "serialization domains (callbacks that never overlap):");
    if e.domains.is_empty() {
        let _ = writeln!(s, "  none: no callback takes a framework lock");
    }
    for d in &e.domains {
        let _ = writeln!(s, "  {} ({}): {}", d.lock, d.flavour, d.members.join(", "));
    }
    if !e.errors.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "rejected:");
        for er in &e.errors {
            let _ = writeln!(s, "  {}: {} ({})", er.object, er.status, er.code);
            let _ = writeln!(s, "    {}", er.message);
        }
    }
    if !e.advice.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "advice:");
        for a in &e.advice {
            let _ = writeln!(s, "  - {a}");
        }
    }
    s
}
