//! The driver object: the root of the object tree and the default constraints.
//!
//! Equivalent to: `WDFDRIVER` / `FxDriver`, `WdfDriverCreate`.

use std::fmt;
use std::sync::Arc;

use nt::{Kernel, NtStatus};
use parking_lot::Mutex;

use crate::device::{Device, DeviceInit};
use crate::object::{ObjectAttributes, ObjectHeader};
use crate::sync::constraints::{self, ObjectKind, Resolved};

/// A driver: owns devices, supplies the constraints devices inherit.
pub struct Driver {
    kernel: Kernel,
    header: Arc<ObjectHeader>,
    resolved: Resolved,
    devices: Mutex<Vec<Arc<Device>>>,
}

impl Driver {
    /// Creates the driver object on `kernel`. Defaults (KMDF): Dispatch level, scope None.
    /// Equivalent to: `WdfDriverCreate`.
    pub fn create(kernel: &Kernel, attrs: ObjectAttributes) -> Result<Arc<Driver>, NtStatus> {
        constraints::validate_attributes(ObjectKind::Driver, &attrs)?;
        let resolved = constraints::resolve_driver(&attrs)?;
        Ok(Arc::new(Driver {
            kernel: kernel.clone(),
            header: ObjectHeader::new("driver", "driver".into(), attrs.cleanup),
            resolved,
            devices: Mutex::new(Vec::new()),
        }))
    }

    /// Creates a device (registering it with the I/O manager under its name).
    /// Equivalent to: `WdfDeviceCreate`.
    pub fn create_device(self: &Arc<Self>, init: DeviceInit) -> Result<Arc<Device>, NtStatus> {
        let device = Device::create(self, init)?;
        self.devices.lock().push(device.clone());
        Ok(device)
    }

    /// The kernel the driver runs on.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The resolved driver constraints.
    pub fn constraints(&self) -> &Resolved {
        &self.resolved
    }

    /// The object header.
    pub fn header(&self) -> &Arc<ObjectHeader> {
        &self.header
    }

    /// The driver's devices.
    pub fn devices(&self) -> Vec<Arc<Device>> {
        self.devices.lock().clone()
    }

    /// Unloads the driver: deletes every device (children's cleanup callbacks first), then runs
    /// the driver's own cleanup callback. Equivalent to: `EvtDriverUnload` + object teardown.
    pub fn unload(&self) {
        let devices = std::mem::take(&mut *self.devices.lock());
        for d in devices {
            d.delete();
        }
        self.header.delete();
    }

    pub(crate) fn forget_device(&self, id: u64) {
        self.devices.lock().retain(|d| d.id() != id);
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("constraints", &self.resolved)
            .finish()
    }
}
