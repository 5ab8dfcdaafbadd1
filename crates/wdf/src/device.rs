//! Devices: a named I/O target with queues, a callback lock, and file-object callbacks.
//!
//! A device is created from a [`DeviceInit`], registered with `nt`'s I/O manager under its
//! name, and from then on receives every request sent to a handle opened on it: creates,
//! cleanups and closes go to the file-object callbacks; reads, writes and control requests are
//! routed to a queue (a per-type queue from [`Device::configure_request_dispatching`], else the
//! default queue, else they fail with `STATUS_INVALID_DEVICE_REQUEST`).
//!
//! Equivalent to: `WDFDEVICE` / `FxDevice`, `WDFDEVICE_INIT`, `FxPkgIo` (routing),
//! `FxPkgGeneral` (file objects).

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nt::io::{FileObject, Irp, IrpHandler, MajorFunction};
use nt::irql::{self, Irql};
use nt::{Kernel, NtStatus};
use parking_lot::RwLock;

use crate::driver::Driver;
use crate::invoke::{self, Health, PanicPolicy};
use crate::object::{ObjectAttributes, ObjectHeader};
use crate::observe::CallbackKind;
use crate::power::StopAction;
use crate::queue::{Queue, QueueConfig};
use crate::request::{QueueRef, Request, RequestType};
use crate::sync::constraints::{self, LockOwner, ObjectKind, Resolved};
use crate::sync::{CallbackLock, LockOrder, ScopeLocked, ScopeToken};

/// `EvtDeviceFileCreate`: decides the create's status (wdfkit completes the create with it).
pub type FileCreateHandler =
    Box<dyn Fn(Option<&mut ScopeToken<'_>>, &Arc<FileObject>) -> NtStatus + Send + Sync>;
/// `EvtFileCleanup` / `EvtFileClose`.
pub type FileHandler = Box<dyn Fn(Option<&mut ScopeToken<'_>>, &Arc<FileObject>) + Send + Sync>;

/// File-object callbacks and their attributes. Equivalent to: `WDF_FILEOBJECT_CONFIG` plus the
/// attributes passed to `WdfDeviceInitSetFileObjectConfig`.
///
/// Deviation: `EvtDeviceFileCreate` returns the create's status instead of completing a request.
#[derive(Default)]
pub struct FileObjectConfig {
    /// `None`: Passive and scope None, whatever the device says (spec §1.4).
    pub attributes: Option<ObjectAttributes>,
    pub(crate) create: Option<FileCreateHandler>,
    pub(crate) cleanup: Option<FileHandler>,
    pub(crate) close: Option<FileHandler>,
}

impl FileObjectConfig {
    /// Registers `EvtDeviceFileCreate`.
    pub fn on_create(
        &mut self,
        f: impl Fn(Option<&mut ScopeToken<'_>>, &Arc<FileObject>) -> NtStatus + Send + Sync + 'static,
    ) -> &mut Self {
        self.create = Some(Box::new(f));
        self
    }

    /// Registers `EvtFileCleanup`.
    pub fn on_cleanup(
        &mut self,
        f: impl Fn(Option<&mut ScopeToken<'_>>, &Arc<FileObject>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.cleanup = Some(Box::new(f));
        self
    }

    /// Registers `EvtFileClose`.
    pub fn on_close(
        &mut self,
        f: impl Fn(Option<&mut ScopeToken<'_>>, &Arc<FileObject>) + Send + Sync + 'static,
    ) -> &mut Self {
        self.close = Some(Box::new(f));
        self
    }
}

impl fmt::Debug for FileObjectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileObjectConfig")
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

type ContextFactory = Box<dyn FnOnce(&Arc<Device>) -> Arc<dyn Any + Send + Sync> + Send>;

/// What a device is created from. Equivalent to: `WDFDEVICE_INIT`.
pub struct DeviceInit {
    name: String,
    panic_policy: PanicPolicy,
    attributes: ObjectAttributes,
    file_object: Option<FileObjectConfig>,
    contexts: Vec<ContextFactory>,
}

impl DeviceInit {
    /// A device to be registered under `name`.
    pub fn new(name: impl Into<String>) -> Self {
        DeviceInit {
            name: name.into(),
            panic_policy: PanicPolicy::default(),
            attributes: ObjectAttributes::default(),
            file_object: None,
            contexts: Vec::new(),
        }
    }

    /// The device's attributes (scope, level, cleanup).
    pub fn attributes(&mut self, attrs: ObjectAttributes) -> &mut Self {
        self.attributes = attrs;
        self
    }

    /// What happens to the device when one of its callbacks panics (default: keep serving).
    pub fn panic_policy(&mut self, policy: PanicPolicy) -> &mut Self {
        self.panic_policy = policy;
        self
    }

    /// File-object callbacks. Equivalent to: `WdfDeviceInitSetFileObjectConfig`.
    pub fn file_object(&mut self, config: FileObjectConfig) -> &mut Self {
        self.file_object = Some(config);
        self
    }

    /// A typed context built once the device exists (so it can hold [`ScopeLocked`] data made
    /// with [`Device::scope_locked`]). Equivalent to: the context type in the attributes.
    pub fn context<T: Any + Send + Sync>(
        &mut self,
        make: impl FnOnce(&Arc<Device>) -> T + Send + 'static,
    ) -> &mut Self {
        self.contexts.push(Box::new(move |d| {
            Arc::new(make(d)) as Arc<dyn Any + Send + Sync>
        }));
        self
    }
}

impl fmt::Debug for DeviceInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceInit")
            .field("name", &self.name)
            .field("attributes", &self.attributes)
            .finish()
    }
}

struct FileObjects {
    resolved: Resolved,
    config: FileObjectConfig,
}

/// How long [`Device::delete`] waits for the driver to complete the requests it owns.
pub const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

static NEXT_DEVICE: AtomicU64 = AtomicU64::new(1);

/// A device. Equivalent to: `WDFDEVICE`.
pub struct Device {
    id: u64,
    /// Weak: the kernel's I/O manager holds the device, so a strong handle would keep the
    /// kernel's threads alive forever.
    kernel: nt::WeakKernel,
    driver: std::sync::Weak<Driver>,
    header: Arc<ObjectHeader>,
    resolved: Resolved,
    lock: CallbackLock,
    files: FileObjects,
    routes: RwLock<Routes>,
    /// Bumped on every routing change; handles rebuild their route table when it moves.
    route_generation: AtomicU64,
    pub(crate) health: Arc<Health>,
}

#[derive(Default)]
struct Routes {
    default: Option<Arc<Queue>>,
    by_type: [Option<Arc<Queue>>; RequestType::COUNT],
    queues: Vec<Arc<Queue>>,
}

impl Routes {
    fn table(&self) -> RouteTable {
        RouteTable {
            queues: std::array::from_fn(|i| {
                self.by_type[i].clone().or_else(|| self.default.clone())
            }),
        }
    }
}

/// Which queue receives each request type, as one handle sees it.
///
/// Every open handle keeps its own copy, so taking a reference to it per request touches a
/// reference count no other handle shares (see `Request`'s queue reference).
pub(crate) struct RouteTable {
    queues: [Option<Arc<Queue>>; RequestType::COUNT],
}

impl RouteTable {
    pub(crate) fn queue(&self, index: usize) -> Option<&Arc<Queue>> {
        self.queues[index].as_ref()
    }
}

/// What the framework keeps in each file object it created.
struct FileState {
    routes: parking_lot::Mutex<(u64, Arc<RouteTable>)>,
}

impl Device {
    pub(crate) fn create(driver: &Arc<Driver>, init: DeviceInit) -> Result<Arc<Device>, NtStatus> {
        crate::queue::passive_ddi("WdfDeviceCreate")?;
        constraints::validate_attributes(ObjectKind::Device, &init.attributes)?;
        let resolved = constraints::resolve_device(driver.constraints(), &init.attributes)?;
        let mut file_config = init.file_object.unwrap_or_default();
        if let Some(a) = &file_config.attributes {
            constraints::validate_attributes(ObjectKind::FileObject, a)?;
        }
        let file_resolved =
            constraints::resolve_file_object(&resolved, file_config.attributes.as_ref())?;
        let cleanup = init.attributes.cleanup;
        let device = Arc::new(Device {
            id: NEXT_DEVICE.fetch_add(1, Ordering::Relaxed),
            kernel: driver.kernel().downgrade(),
            driver: Arc::downgrade(driver),
            header: ObjectHeader::new("device", init.name.clone(), cleanup),
            lock: CallbackLock::new(resolved.lock_flavour, LockOrder::Device, "device"),
            resolved,
            files: FileObjects {
                resolved: file_resolved,
                config: std::mem::take(&mut file_config),
            },
            routes: RwLock::new(Routes::default()),
            route_generation: AtomicU64::new(0),
            health: Arc::new(Health::new(init.panic_policy)),
        });
        device.health.attach(Arc::downgrade(&device));
        for make in init.contexts {
            let ctx = make(&device);
            device.header.add_context_dyn(ctx);
        }
        // Register first: a name collision must leave nothing behind in the object tree.
        driver
            .kernel()
            .io()
            .create_device(&init.name, device.clone())?;
        driver.header().add_child(device.header.clone());
        Ok(device)
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The kernel the device runs on (`None` once it has shut down).
    pub(crate) fn kernel(&self) -> Option<Kernel> {
        self.kernel.upgrade()
    }

    /// The name the device is registered under.
    pub fn name(&self) -> &str {
        self.header.name()
    }

    /// The object header (contexts, state).
    pub fn header(&self) -> &Arc<ObjectHeader> {
        &self.header
    }

    /// The device's typed context of type `T`. Equivalent to: `WdfObjectGetTypedContext`.
    pub fn context<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.header.context::<T>()
    }

    /// The resolved device constraints.
    pub fn constraints(&self) -> &Resolved {
        &self.resolved
    }

    /// The resolved constraints of the device's file-object callbacks.
    pub fn file_object_constraints(&self) -> &Resolved {
        &self.files.resolved
    }

    /// The device's callback lock (always allocated; used by Device-scope queues).
    pub fn callback_lock(&self) -> &CallbackLock {
        &self.lock
    }

    /// Data protected by the device's callback lock.
    pub fn scope_locked<T>(&self, value: T) -> ScopeLocked<T> {
        ScopeLocked::new(&self.lock, value)
    }

    /// Acquires the device's callback lock from code outside its callbacks. Re-acquiring on the
    /// owning thread is the fatal `WDF_RECURSIVE_LOCK`. Equivalent to:
    /// `WdfObjectAcquireLock(device)`; dropping the token is `WdfObjectReleaseLock`.
    pub fn acquire_lock(&self) -> ScopeToken<'_> {
        ScopeToken::acquire(&self.lock)
    }

    /// Creates a queue on this device. Equivalent to: `WdfIoQueueCreate`.
    ///
    /// A second default queue: `STATUS_INVALID_DEVICE_REQUEST`.
    pub fn create_queue(
        self: &Arc<Self>,
        config: QueueConfig,
        attrs: ObjectAttributes,
    ) -> Result<Arc<Queue>, NtStatus> {
        let default = config.default_queue;
        if default && self.routes.read().default.is_some() {
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        let queue = Queue::create(self, config, attrs)?;
        let mut r = self.routes.write();
        if default {
            if r.default.is_some() {
                return Err(NtStatus::INVALID_DEVICE_REQUEST);
            }
            r.default = Some(queue.clone());
        }
        r.queues.push(queue.clone());
        self.route_generation.fetch_add(1, Ordering::Release);
        Ok(queue)
    }

    /// Sends every request of `kind` to `queue` instead of the default queue. The queue must
    /// belong to this device, and a type can be configured once:
    /// `STATUS_INVALID_DEVICE_REQUEST` otherwise; create/cleanup/close cannot be routed
    /// (`STATUS_INVALID_PARAMETER`). Equivalent to: `WdfDeviceConfigureRequestDispatching`.
    pub fn configure_request_dispatching(
        &self,
        queue: &Arc<Queue>,
        kind: RequestType,
    ) -> Result<(), NtStatus> {
        if matches!(
            kind,
            RequestType::Create | RequestType::Cleanup | RequestType::Close
        ) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if queue.device_id != self.id {
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        let mut r = self.routes.write();
        let slot = &mut r.by_type[kind.index()];
        if slot.is_some() {
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        *slot = Some(queue.clone());
        self.route_generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The device's queues, in creation order.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.routes.read().queues.clone()
    }

    /// The default queue, if one was created.
    pub fn default_queue(&self) -> Option<Arc<Queue>> {
        self.routes.read().default.clone()
    }

    /// Powers the device down: every power-managed queue stops presenting, `EvtIoStop` is
    /// called for each driver-owned request, and the call returns (PASSIVE_LEVEL) when every
    /// such request is completed, requeued or acknowledged. See [`crate::power`].
    pub fn power_down(&self) -> Result<(), NtStatus> {
        self.power_transition(Some(StopAction::Suspend))
    }

    /// Powers the device up: `EvtIoResume` for the requests the driver kept, then presentation
    /// resumes. PASSIVE_LEVEL.
    pub fn power_up(&self) -> Result<(), NtStatus> {
        self.power_transition(None)
    }

    fn power_transition(&self, down: Option<StopAction>) -> Result<(), NtStatus> {
        crate::queue::passive_ddi(if down.is_some() {
            "power_down"
        } else {
            "power_up"
        })?;
        let waits: Vec<_> = self
            .queues()
            .iter()
            .filter_map(|q| match down {
                Some(action) => q.power_down_begin(action),
                None => q.power_up_begin(),
            })
            .collect();
        for w in waits {
            w.wait();
        }
        Ok(())
    }

    /// Whether a callback panic marked the device failed ([`PanicPolicy::FailDevice`]).
    pub fn is_failed(&self) -> bool {
        self.health.failed()
    }

    /// A failed device cancels everything queued on it.
    pub(crate) fn fail_queues(&self) {
        for q in self.queues() {
            q.removal_purge();
        }
    }

    /// Removes the device: unregisters it; purges every queue (queued requests and cancelable
    /// driver-owned ones are cancelled) and calls `EvtIoStop` with [`StopAction::Purge`] for the
    /// requests the driver owns; waits (at PASSIVE_LEVEL, up to [`REMOVAL_WAIT`]) for the driver
    /// to complete them; reports the ones it still owns (`WDF_REQUEST_LEAKED`); then runs the
    /// cleanup callbacks of its subtree, children first, with no callback lock held.
    /// Equivalent to: surprise/orderly removal and `WdfObjectDelete(device)`.
    pub fn delete(&self) {
        if let Some(kernel) = self.kernel() {
            let _ = kernel.io().delete_device(self.name());
        }
        if let Some(driver) = self.driver.upgrade() {
            driver.forget_device(self.id);
        }
        let queues = self.queues();
        for q in &queues {
            q.removal_purge();
            let _ = q.power_down_begin(StopAction::Purge);
        }
        let can_wait = irql::current() == Irql::Passive;
        let deadline = std::time::Instant::now() + REMOVAL_WAIT;
        for q in &queues {
            if can_wait && !q.callback_lock().is_owned_by_current_thread() {
                while q.driver_owned_count() > 0 && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            let owned = q.driver_owned_count();
            if owned > 0 {
                nt::verifier::report(
                    &crate::verifier::rules::REQUEST_LEAKED,
                    format_args!(
                        "{owned} request(s) still owned by the driver on queue {} at removal",
                        q.name()
                    ),
                );
            }
        }
        self.header.delete();
        let mut r = self.routes.write();
        r.default = None;
        r.by_type = Default::default();
        r.queues.clear();
        self.route_generation.fetch_add(1, Ordering::Release);
    }

    /// The route table for a request on `file`: the handle's own copy, rebuilt if routing
    /// changed since it was made.
    fn routes_for(&self, file: &FileObject) -> Arc<RouteTable> {
        let generation = self.route_generation.load(Ordering::Acquire);
        if let Some(state) = file.context().and_then(|c| c.downcast_ref::<FileState>()) {
            let mut cached = state.routes.lock();
            if cached.0 != generation {
                *cached = (generation, Arc::new(self.routes.read().table()));
            }
            return cached.1.clone();
        }
        Arc::new(self.routes.read().table())
    }

    fn file_lock(&self) -> Option<&CallbackLock> {
        (self.files.resolved.lock == LockOwner::Device).then_some(&self.lock)
    }

    fn on_create(&self, irp: Irp) {
        if self.files.resolved.passive_callbacks && irql::current() > Irql::Passive {
            irp.complete(NtStatus::INVALID_DEVICE_REQUEST, 0);
            return;
        }
        let status = match &self.files.config.create {
            Some(h) => invoke::run(
                self.file_lock(),
                CallbackKind::FileCreate,
                self.name(),
                &self.health,
                Some(irp.id()),
                |t| h(t, irp.file()),
            )
            .unwrap_or(NtStatus::INTERNAL_ERROR),
            None => NtStatus::SUCCESS,
        };
        if status.is_success() {
            let generation = self.route_generation.load(Ordering::Acquire);
            let table = Arc::new(self.routes.read().table());
            let _ = irp.file().set_context(Arc::new(FileState {
                routes: parking_lot::Mutex::new((generation, table)),
            }));
        }
        irp.complete(crate::request::translate_status(status), 0);
    }

    fn on_file(&self, irp: Irp, kind: CallbackKind) {
        let handler = if kind == CallbackKind::FileCleanup {
            &self.files.config.cleanup
        } else {
            &self.files.config.close
        };
        if let Some(h) = handler {
            invoke::run(
                self.file_lock(),
                kind,
                self.name(),
                &self.health,
                Some(irp.id()),
                |t| h(t, irp.file()),
            );
        }
        if kind == CallbackKind::FileCleanup {
            for q in self.queues() {
                q.flush_by_file_object(irp.file());
            }
        }
        irp.complete(NtStatus::SUCCESS, 0);
    }
}

impl IrpHandler for Device {
    fn dispatch(&self, irp: Irp) {
        if self.health.failed() {
            irp.complete(NtStatus::NO_SUCH_DEVICE, 0);
            return;
        }
        match irp.major() {
            MajorFunction::Create => self.on_create(irp),
            MajorFunction::Cleanup => self.on_file(irp, CallbackKind::FileCleanup),
            MajorFunction::Close => self.on_file(irp, CallbackKind::FileClose),
            major => {
                let index = RequestType::of(major).index();
                let table = self.routes_for(irp.file());
                // A second reference to the handle's own table (no shared count is touched)
                // keeps the queue reachable while the request moves in.
                let keep = table.clone();
                match keep.queue(index) {
                    Some(queue) => {
                        let req = Request::new(irp, QueueRef::Routed(table, index));
                        let _ = queue.dispatch_events(crate::queue::Event::Arrival(req));
                    }
                    None => irp.complete(NtStatus::INVALID_DEVICE_REQUEST, 0),
                }
            }
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name())
            .field("constraints", &self.resolved)
            .finish()
    }
}
