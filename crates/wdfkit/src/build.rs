//! Creating a configuration's objects with `wdf`: the real driver, devices, queues, DPCs, timers
//! and work items, created in the order `explain` resolves them. A failing creation call is
//! recorded (with the status it returned) and the objects below it are skipped.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nt::{Kernel, NtStatus};
use wdf::{
    CallbackContext, Device, DeviceInit, Dpc, DpcConfig, Driver, FileObjectConfig, IoContext,
    ObjectAttributes, Parent, Queue, Request, Timer, TimerConfig, WorkItem, WorkItemConfig,
};

use crate::config::{Config, ExecKind, Handler};

/// What the created callbacks do. `run` supplies the workload's behaviour; [`Complete`] just
/// completes every request.
pub trait Hooks: Send + Sync + 'static {
    /// An I/O callback of queue `queue` (its index in the configuration) got `request`;
    /// `information` is the byte count to complete it with on success.
    fn io(&self, queue: usize, cx: &mut IoContext<'_, '_>, request: Request, information: usize);
    /// DPC, timer or work item `exec` (its index in [`Config::execs`] order) ran.
    fn exec(&self, exec: usize, cx: &mut CallbackContext<'_, '_>);
    /// A manual queue became non-empty (ready notification): retrieve and complete.
    fn ready(&self, queue: usize, cx: &mut IoContext<'_, '_>) {
        let q = cx.queue().clone();
        while let Ok(r) = q.retrieve_next_request() {
            self.io(queue, cx, r, 0);
        }
    }
}

/// Hooks that complete every request with success and do nothing else.
#[derive(Debug, Default)]
pub struct Complete;

impl Hooks for Complete {
    fn io(&self, _queue: usize, _cx: &mut IoContext<'_, '_>, request: Request, information: usize) {
        request.complete_with_information(NtStatus::SUCCESS, information);
    }

    fn exec(&self, _exec: usize, _cx: &mut CallbackContext<'_, '_>) {}
}

/// A created DPC, timer or work item.
#[derive(Clone, Debug)]
pub enum BuiltExec {
    /// `WDFDPC`.
    Dpc(Arc<Dpc>),
    /// `WDFTIMER`.
    Timer(Arc<Timer>),
    /// `WDFWORKITEM`.
    WorkItem(Arc<WorkItem>),
}

impl BuiltExec {
    /// Whether the framework serializes its callback with its parent.
    pub fn is_serialized(&self) -> bool {
        match self {
            BuiltExec::Dpc(d) => d.is_serialized(),
            BuiltExec::Timer(t) => t.is_serialized(),
            BuiltExec::WorkItem(w) => w.is_serialized(),
        }
    }
}

/// The objects created from a configuration, by configuration index.
pub struct Built {
    /// The kernel they run on.
    pub kernel: Kernel,
    /// The driver (`None` if its creation failed).
    pub driver: Option<Arc<Driver>>,
    /// Devices, by `[[device]]` index.
    pub devices: Vec<Option<Arc<Device>>>,
    /// Queues, by `[[queue]]` index.
    pub queues: Vec<Option<Arc<Queue>>>,
    /// DPCs, timers and work items, in [`Config::execs`] order.
    pub execs: Vec<Option<BuiltExec>>,
    /// Failing creation calls: `(object id, status)`.
    pub errors: Vec<(String, NtStatus)>,
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("devices", &self.devices.len())
            .field("queues", &self.queues.len())
            .field("errors", &self.errors)
            .finish()
    }
}

impl Built {
    /// Unloads the driver (deletes every device; cleanup callbacks run).
    pub fn unload(&self) {
        if let Some(d) = &self.driver {
            d.unload();
        }
    }
}

fn attrs(level: crate::config::Level, scope: crate::config::Scope) -> ObjectAttributes {
    ObjectAttributes::level(level.to_wdf()).with_scope(scope.to_wdf())
}

/// Creates every object of `config` on `kernel`, with callbacks calling `hooks`.
pub fn build(config: &Config, kernel: &Kernel, hooks: Arc<dyn Hooks>) -> Built {
    let mut built = Built {
        kernel: kernel.clone(),
        driver: None,
        devices: Vec::new(),
        queues: Vec::new(),
        execs: Vec::new(),
        errors: Vec::new(),
    };
    let driver = match Driver::create(
        kernel,
        attrs(config.driver.execution_level, config.driver.sync_scope),
    ) {
        Ok(d) => d,
        Err(s) => {
            built.errors.push(("driver".into(), s));
            return built;
        }
    };
    for d in &config.device {
        let name = d.name.get_ref();
        let mut init = DeviceInit::new(name.clone());
        init.attributes(attrs(d.execution_level, d.sync_scope));
        if let Some(f) = &d.file_object {
            let mut fc = FileObjectConfig::default();
            fc.attributes = Some(attrs(f.execution_level, f.sync_scope));
            fc.on_create(|_, _| NtStatus::SUCCESS);
            fc.on_cleanup(|_, _| {});
            fc.on_close(|_, _| {});
            init.file_object(fc);
        }
        match driver.create_device(init) {
            Ok(dev) => built.devices.push(Some(dev)),
            Err(s) => {
                built.errors.push((format!("device:{name}"), s));
                built.devices.push(None);
            }
        }
    }
    for (qi, q) in config.queue.iter().enumerate() {
        let di = config.device_index(q.device.get_ref()).expect("checked");
        let Some(dev) = built.devices[di].clone() else {
            built.queues.push(None);
            continue;
        };
        let mut qc = wdf::QueueConfig::new(q.dispatch.to_wdf());
        qc.name = Some(q.name.get_ref().clone());
        qc.default_queue = q.default;
        qc.parallel_limit = q.parallel_limit;
        for h in &q.handlers {
            let hk = hooks.clone();
            match h {
                Handler::Read => {
                    qc.io_read(move |cx, r, len| hk.io(qi, cx, r, len));
                }
                Handler::Write => {
                    qc.io_write(move |cx, r, len| hk.io(qi, cx, r, len));
                }
                Handler::DeviceControl => {
                    qc.io_device_control(move |cx, r, _o, _i, _c| hk.io(qi, cx, r, 0));
                }
                Handler::InternalDeviceControl => {
                    qc.io_internal_device_control(move |cx, r, _o, _i, _c| hk.io(qi, cx, r, 0));
                }
                Handler::Default => {
                    qc.io_default(move |cx, r| hk.io(qi, cx, r, 0));
                }
            }
        }
        match dev.create_queue(qc, attrs(q.execution_level, q.sync_scope)) {
            Ok(queue) => {
                if q.dispatch == crate::config::Dispatch::Manual {
                    let hk = hooks.clone();
                    let _ = queue
                        .ready_notify(Some(move |cx: &mut IoContext<'_, '_>| hk.ready(qi, cx)));
                }
                built.queues.push(Some(queue));
            }
            Err(s) => {
                built
                    .errors
                    .push((format!("queue:{}", q.name.get_ref()), s));
                built.queues.push(None);
            }
        }
    }
    for (qi, q) in config.queue.iter().enumerate() {
        let Some(queue) = &built.queues[qi] else {
            continue;
        };
        let di = config.device_index(q.device.get_ref()).expect("checked");
        let Some(dev) = &built.devices[di] else {
            continue;
        };
        for t in q.routed_types() {
            let rt = t.request_type().expect("routes exclude default");
            if let Err(s) = dev.configure_request_dispatching(queue, rt) {
                built
                    .errors
                    .push((format!("queue:{}", q.name.get_ref()), s));
                break;
            }
        }
    }
    for (ei, (kind, e)) in config.execs().enumerate() {
        let name = e.name.get_ref().clone();
        let id = format!("{}:{name}", kind.name());
        let parent_name = e.parent.get_ref();
        let parent: Option<Parent<'_>> = if parent_name == "driver" {
            Some(Parent::Driver(&driver))
        } else if let Some(di) = config.device_index(parent_name) {
            built.devices[di].as_ref().map(Parent::Device)
        } else {
            let qi = config.queue_index(parent_name).expect("checked");
            built.queues[qi].as_ref().map(Parent::Queue)
        };
        let Some(parent) = parent else {
            built.execs.push(None);
            continue;
        };
        let a = attrs(e.execution_level, e.sync_scope);
        let hk = hooks.clone();
        let made = match kind {
            ExecKind::Dpc => {
                let mut c = DpcConfig::new(move |cx| hk.exec(ei, cx));
                c.automatic_serialization = e.automatic_serialization;
                c.name = Some(name);
                Dpc::create(parent, c, a).map(BuiltExec::Dpc)
            }
            ExecKind::Timer => {
                let cb = move |cx: &mut CallbackContext<'_, '_>| hk.exec(ei, cx);
                let mut c = if e.period_ms > 0 {
                    TimerConfig::periodic(Duration::from_millis(e.period_ms), cb)
                } else {
                    TimerConfig::new(cb)
                };
                c.automatic_serialization = e.automatic_serialization;
                c.name = Some(name);
                Timer::create(parent, c, a).map(BuiltExec::Timer)
            }
            ExecKind::WorkItem => {
                let mut c = WorkItemConfig::new(move |cx| hk.exec(ei, cx));
                c.automatic_serialization = e.automatic_serialization;
                c.name = Some(name);
                WorkItem::create(parent, c, a).map(BuiltExec::WorkItem)
            }
        };
        match made {
            Ok(x) => built.execs.push(Some(x)),
            Err(s) => {
                built.errors.push((id, s));
                built.execs.push(None);
            }
        }
    }
    built.driver = Some(driver);
    built
}
