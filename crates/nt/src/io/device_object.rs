//! Device objects (what a driver registers) and file objects (what a handle refers to).

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::irp::Irp;

/// What a device does with the requests sent to it: the dispatch routine.
///
/// `dispatch` takes ownership of the [`Irp`]; it must complete it exactly once, now or later, on
/// any thread. The framework (`wdf`) implements this trait; tests may implement it directly.
/// Equivalent to: `DRIVER_OBJECT::MajorFunction[]`.
pub trait IrpHandler: Send + Sync {
    /// Handles one request, on the sender's thread at the sender's IRQL.
    fn dispatch(&self, irp: Irp);
}

/// A named device registered with the I/O manager. Equivalent to: `DEVICE_OBJECT`.
pub struct DeviceObject {
    name: String,
    handler: Arc<dyn IrpHandler>,
    deleted: AtomicBool,
}

impl DeviceObject {
    pub(crate) fn new(name: String, handler: Arc<dyn IrpHandler>) -> Self {
        DeviceObject {
            name,
            handler,
            deleted: AtomicBool::new(false),
        }
    }

    /// The name it was registered under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the device was deleted; requests to it fail with `STATUS_NO_SUCH_DEVICE`.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    pub(crate) fn handler(&self) -> &Arc<dyn IrpHandler> {
        &self.handler
    }
}

impl fmt::Debug for DeviceObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceObject")
            .field("name", &self.name)
            .field("deleted", &self.is_deleted())
            .finish()
    }
}

static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(1);

/// One open instance of a device. Equivalent to: `FILE_OBJECT`.
///
/// The driver may attach one context object to it, once ([`FileObject::set_context`]); the
/// framework keeps its own file-object state there.
pub struct FileObject {
    id: u64,
    device: Arc<DeviceObject>,
    context: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl FileObject {
    pub(crate) fn new(device: Arc<DeviceObject>) -> Self {
        FileObject {
            id: NEXT_FILE_ID.fetch_add(1, Ordering::Relaxed),
            device,
            context: OnceLock::new(),
        }
    }

    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The device it was opened on.
    pub fn device(&self) -> &Arc<DeviceObject> {
        &self.device
    }

    /// Attaches a context; returns it back if one is already attached.
    pub fn set_context(
        &self,
        ctx: Arc<dyn Any + Send + Sync>,
    ) -> Result<(), Arc<dyn Any + Send + Sync>> {
        self.context.set(ctx)
    }

    /// The attached context, if any.
    pub fn context(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.context.get()
    }
}

impl fmt::Debug for FileObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileObject")
            .field("id", &self.id)
            .field("device", &self.device.name)
            .finish()
    }
}
