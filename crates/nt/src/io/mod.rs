//! The I/O manager: named devices, handles, and requests between them.
//!
//! A client opens a device by name and gets a [`Handle`] (a file object underneath; the device
//! sees `IRP_MJ_CREATE`). Each call on the handle builds an [`Irp`] and hands it to the device's
//! [`IrpHandler`] **on the calling thread**, at the IRQL the caller chose (so a test can play
//! "another driver sending at DISPATCH_LEVEL"). The call returns a [`PendingIo`]; the blocking
//! helpers wait on it. Closing the handle sends `IRP_MJ_CLEANUP`, then `IRP_MJ_CLOSE`.
//!
//! Equivalent to: `IoCreateDevice`, `ZwCreateFile`, `ZwReadFile`/`ZwWriteFile`,
//! `ZwDeviceIoControlFile`, `IoCallDriver`, `IoCancelIrp`, `ZwClose`.
//!
//! ```
//! use nt::io::{IrpHandler, Irp, IoManager, MajorFunction};
//! use nt::NtStatus;
//! use std::sync::Arc;
//!
//! struct Zeroes;
//! impl IrpHandler for Zeroes {
//!     fn dispatch(&self, irp: Irp) {
//!         let n = irp.length();
//!         match irp.major() {
//!             MajorFunction::Read => irp.complete(NtStatus::SUCCESS, n),
//!             _ => irp.complete(NtStatus::SUCCESS, 0),
//!         }
//!     }
//! }
//!
//! let io = IoManager::new();
//! io.create_device("zero", Arc::new(Zeroes)).unwrap();
//! let h = io.open("zero").unwrap();
//! let c = h.read(0, 4);
//! assert_eq!(c.status, NtStatus::SUCCESS);
//! assert_eq!(c.data, vec![0; 4]);
//! h.close();
//! ```

mod device_object;
mod irp;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

pub use device_object::{DeviceObject, FileObject, IrpHandler};
pub use irp::{CancelRoutine, IoCompletion, IoOp, Irp, IrpCanceller, MajorFunction, PendingIo};

use crate::irql::{self, Irql};
use crate::status::{NtStatus, Result};

/// The registry of named devices. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct IoManager {
    devices: Arc<Mutex<HashMap<String, Arc<DeviceObject>>>>,
}

impl IoManager {
    /// An empty I/O manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` under `name`. Fails with `STATUS_OBJECT_NAME_COLLISION` if the name is
    /// taken. Equivalent to: `IoCreateDevice`.
    pub fn create_device(
        &self,
        name: &str,
        handler: Arc<dyn IrpHandler>,
    ) -> Result<Arc<DeviceObject>> {
        let mut d = self.devices.lock();
        if d.contains_key(name) {
            return Err(NtStatus::OBJECT_NAME_COLLISION);
        }
        let dev = Arc::new(DeviceObject::new(name.to_owned(), handler));
        d.insert(name.to_owned(), dev.clone());
        Ok(dev)
    }

    /// Unregisters a device: new opens fail, and requests on existing handles fail with
    /// `STATUS_NO_SUCH_DEVICE`. Equivalent to: `IoDeleteDevice`.
    pub fn delete_device(&self, name: &str) -> Result<()> {
        let dev = self
            .devices
            .lock()
            .remove(name)
            .ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
        dev.mark_deleted();
        Ok(())
    }

    /// Names of the registered devices, sorted.
    pub fn device_names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.devices.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Opens `name`: creates a file object and sends `IRP_MJ_CREATE`, waiting for its result
    /// (PASSIVE_LEVEL). Equivalent to: `ZwCreateFile`.
    pub fn open(&self, name: &str) -> Result<Handle> {
        let dev = self
            .devices
            .lock()
            .get(name)
            .cloned()
            .ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
        let file = Arc::new(FileObject::new(dev.clone()));
        let (irp, pending) = Irp::new_file_op(file.clone(), MajorFunction::Create);
        dev.handler().dispatch(irp);
        let c = pending.wait();
        c.status.ok()?;
        Ok(Handle {
            file,
            closed: AtomicBool::new(false),
        })
    }
}

impl fmt::Debug for IoManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoManager")
            .field("devices", &self.device_names())
            .finish()
    }
}

/// An open handle to a device. Closing (or dropping) it sends cleanup and close.
///
/// Handles are `Sync`: several threads may issue requests on one handle concurrently.
pub struct Handle {
    file: Arc<FileObject>,
    closed: AtomicBool,
}

impl Handle {
    /// The file object behind the handle.
    pub fn file(&self) -> &Arc<FileObject> {
        &self.file
    }

    /// Sends `op` to the device at IRQL `at` (the thread is raised for the duration of the
    /// dispatch call and lowered again) and returns the pending request.
    pub fn submit_at(&self, op: IoOp, at: Irql) -> PendingIo {
        if self.closed.load(Ordering::Acquire) {
            return PendingIo::ready(NtStatus::INVALID_HANDLE);
        }
        let dev = self.file.device();
        if dev.is_deleted() {
            return PendingIo::ready(NtStatus::NO_SUCH_DEVICE);
        }
        let _raised = irql::raise(at.max(irql::current()));
        let (irp, pending) = Irp::new(self.file.clone(), op, irql::current());
        dev.handler().dispatch(irp);
        pending
    }

    /// Sends `op` at the caller's current IRQL.
    #[inline]
    pub fn submit(&self, op: IoOp) -> PendingIo {
        self.submit_at(op, irql::current())
    }

    /// Reads `length` bytes at `offset` and waits. Equivalent to: `ZwReadFile`.
    pub fn read(&self, offset: u64, length: usize) -> IoCompletion {
        self.submit(IoOp::Read { offset, length }).wait()
    }

    /// Writes `data` at `offset` and waits. Equivalent to: `ZwWriteFile`.
    pub fn write(&self, offset: u64, data: Vec<u8>) -> IoCompletion {
        self.submit(IoOp::Write { offset, data }).wait()
    }

    /// Sends a control request and waits. Equivalent to: `ZwDeviceIoControlFile`.
    pub fn device_control(&self, code: u32, input: Vec<u8>, output_length: usize) -> IoCompletion {
        self.submit(IoOp::DeviceControl {
            code,
            input,
            output_length,
        })
        .wait()
    }

    /// Sends an internal control request and waits.
    pub fn internal_device_control(
        &self,
        code: u32,
        input: Vec<u8>,
        output_length: usize,
    ) -> IoCompletion {
        self.submit(IoOp::InternalDeviceControl {
            code,
            input,
            output_length,
        })
        .wait()
    }

    /// Sends a flush and waits. Equivalent to: `ZwFlushBuffersFile`.
    pub fn flush(&self) -> IoCompletion {
        self.submit(IoOp::Flush).wait()
    }

    /// Closes the handle: `IRP_MJ_CLEANUP` then `IRP_MJ_CLOSE`, each awaited. Returns the close
    /// status. Equivalent to: `ZwClose`.
    pub fn close(self) -> NtStatus {
        self.close_inner()
    }

    fn close_inner(&self) -> NtStatus {
        if self.closed.swap(true, Ordering::AcqRel) {
            return NtStatus::INVALID_HANDLE;
        }
        let dev = self.file.device();
        if dev.is_deleted() {
            return NtStatus::SUCCESS;
        }
        let mut status = NtStatus::SUCCESS;
        for major in [MajorFunction::Cleanup, MajorFunction::Close] {
            let (irp, pending) = Irp::new_file_op(self.file.clone(), major);
            dev.handler().dispatch(irp);
            status = pending.wait().status;
        }
        status
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            self.close_inner();
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("file", &self.file)
            .field("closed", &self.closed)
            .finish()
    }
}
