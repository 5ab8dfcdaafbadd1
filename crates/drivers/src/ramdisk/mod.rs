//! A RAM disk: a block device of 512-byte sectors, sparse in memory, optionally backed by a
//! file.
//!
//! Reads and writes take a byte offset and a length, both multiples of 512 and within the disk.
//! A misaligned offset or length, a range past the end, or one whose end overflows is
//! `STATUS_INVALID_PARAMETER`. We use it for past-the-end too, rather than `STATUS_END_OF_FILE`,
//! as the WDK's RAMDisk sample does: a disk has no end-of-file, only an invalid sector range.
//! Zero-length reads and writes never reach the driver (the framework completes them with
//! success). Bad input is refused with a status and never panics. Control requests:
//! see [`IOCTL_DISK_GET_DRIVE_GEOMETRY`], [`IOCTL_DISK_GET_LENGTH_INFO`],
//! [`IOCTL_DISK_IS_WRITABLE`], [`IOCTL_RAMDISK_TRIM`], [`IOCTL_RAMDISK_WRITE_ZEROES`],
//! [`IOCTL_RAMDISK_QUERY_ALLOCATED`], [`IOCTL_RAMDISK_QUERY_RANGES`] and
//! [`IOCTL_RAMDISK_FLUSH_RANGE`]. A flush is `IRP_MJ_FLUSH_BUFFERS` (`IoOp::Flush`); a flush
//! of one range (what a FUA write needs) is [`IOCTL_RAMDISK_FLUSH_RANGE`].
//!
//! **Memory.** Storage is split into 64 KiB chunks ([`CHUNK_SIZE`]), allocated on the first
//! write that touches them. Untouched chunks cost nothing and read as zeros, so a 64 GiB disk
//! fits on a small machine (the largest disk is [`MAX_SIZE`], 64 TiB). Trim frees the chunks a range covers entirely. A chunk written
//! full of zeros stays allocated.
//!
//! **Backing file.** With [`RamdiskConfig::backing_file`] the disk loads the file's non-zero
//! chunks at creation (it reads the whole file: std has no way to skip holes). Writes go to
//! memory only. A flush writes the chunks changed since the last flush (zeros for trimmed
//! ones) and calls `sync_all`, so a device created again on the same file sees exactly what
//! was flushed. Nothing else writes the file; in particular removing the device does not flush
//! (un-flushed writes are lost, as in a power cut). Read-only: writes, trims and write-zeroes
//! fail with `STATUS_MEDIA_WRITE_PROTECTED`, and a flush succeeds with nothing to do.
//!
//! # Sync scope and execution level
//!
//! **The storage protects itself, whatever the scope.** It has a spin lock per chunk, held
//! for a copy of at most 64 KiB; chunks are found in a two-level table without a lock (see
//! the storage module). Reads and writes of different chunks run in parallel, and every lock is legal
//! at DISPATCH_LEVEL. So the I/O queue is parallel, and the default configuration is scope
//! None at the KMDF default level: Dispatch, which here means a callback runs at whatever
//! level the sender had. [`RamdiskConfig::sync_scope`] and
//! [`RamdiskConfig::execution_level`] can be changed, to measure what Device or Queue scope
//! costs (every transfer serialized, at DISPATCH_LEVEL under a spin lock) or what Passive level
//! costs (arrivals at DISPATCH_LEVEL deferred to a work item). The storage never relies on the
//! scope lock, because the flush below runs outside it.
//!
//! **Flush blocks, so it runs at PASSIVE_LEVEL on a queue of its own.** Writing and syncing a
//! file may sleep, which code at DISPATCH_LEVEL or under a spin lock must never do. With a
//! Dispatch-level queue the flush could run at DISPATCH_LEVEL (a sender at DISPATCH_LEVEL, or
//! the scope's spin lock). So flush requests are routed
//! (`configure_request_dispatching(FlushBuffers)`) to a **sequential queue created with
//! `ExecutionLevel::Passive` and scope None**. The framework calls it only at PASSIVE_LEVEL,
//! deferring a flush sent at DISPATCH_LEVEL to a work item. Sequential keeps flushes in order,
//! one at a time. Scope None keeps a slow flush from holding up reads and writes. (A work item
//! would also run at PASSIVE_LEVEL, but then the driver would have to queue and complete the
//! flush requests itself; a passive queue does that for us.) The flush takes each chunk's spin
//! lock only to copy it, and writes the copy with no lock held.

mod ioctl;
mod storage;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nt::NtStatus;
use wdf::{
    Device, DeviceInit, DispatchType, Driver, ExecutionLevel, ObjectAttributes, Queue, QueueConfig,
    Request, RequestType, SyncScope,
};

pub use ioctl::{
    DiskGeometry, EXTENT_ALLOCATED, EXTENT_SIZE, FIXED_MEDIA, IOCTL_DISK_GET_DRIVE_GEOMETRY,
    IOCTL_DISK_GET_LENGTH_INFO, IOCTL_DISK_IS_WRITABLE, IOCTL_RAMDISK_FLUSH_RANGE,
    IOCTL_RAMDISK_QUERY_ALLOCATED, IOCTL_RAMDISK_QUERY_RANGES, IOCTL_RAMDISK_TRIM,
    IOCTL_RAMDISK_WRITE_ZEROES, RangeInput,
};
pub use storage::{CHUNK_SIZE, Extent, MAX_SIZE};

use storage::Storage;

/// Bytes per sector: offsets and lengths are multiples of it.
pub const SECTOR_SIZE: u32 = 512;

/// How to create a RAM disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamdiskConfig {
    /// Size in bytes: a multiple of 512, greater than 0, at most [`MAX_SIZE`] (otherwise
    /// `STATUS_INVALID_PARAMETER`). With a backing file, 0 means the file's length.
    pub size: u64,
    /// Load from this file at creation; flushes write to it. Created if missing (unless
    /// read-only); extended (sparsely) if shorter than `size`; longer is refused.
    pub backing_file: Option<PathBuf>,
    /// Refuse writes, trims and write-zeroes (`STATUS_MEDIA_WRITE_PROTECTED`).
    pub read_only: bool,
    /// The device's synchronization scope (default None: the storage locks itself).
    pub sync_scope: SyncScope,
    /// The device's execution level (default: inherit from the driver, Dispatch in KMDF).
    pub execution_level: ExecutionLevel,
}

impl RamdiskConfig {
    /// A memory-only disk of `size` bytes, scope None, default level.
    pub fn new(size: u64) -> Self {
        RamdiskConfig {
            size,
            backing_file: None,
            read_only: false,
            sync_scope: SyncScope::None,
            execution_level: ExecutionLevel::InheritFromParent,
        }
    }

    /// Sets the backing file.
    pub fn with_backing_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.backing_file = Some(path.into());
        self
    }

    /// Makes the disk read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Sets the synchronization scope.
    pub fn with_scope(mut self, scope: SyncScope) -> Self {
        self.sync_scope = scope;
        self
    }

    /// Sets the execution level.
    pub fn with_level(mut self, level: ExecutionLevel) -> Self {
        self.execution_level = level;
        self
    }
}

impl Default for RamdiskConfig {
    /// 64 MiB, memory only.
    fn default() -> Self {
        RamdiskConfig::new(64 << 20)
    }
}

/// Checks a byte range against the disk: offset and length multiples of 512, end within the
/// disk. `STATUS_INVALID_PARAMETER` otherwise.
fn check_range(size: u64, offset: u64, length: u64) -> Result<(), NtStatus> {
    let sector = u64::from(SECTOR_SIZE);
    let end = offset
        .checked_add(length)
        .ok_or(NtStatus::INVALID_PARAMETER)?;
    if !offset.is_multiple_of(sector) || !length.is_multiple_of(sector) || end > size {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(())
}

/// `EvtIoRead`.
fn on_read(storage: &Storage, mut req: Request, length: usize) {
    let offset = req.parameters().offset;
    if let Err(status) = check_range(storage.size(), offset, length as u64) {
        return req.complete(status);
    }
    match req.output_buffer(length) {
        Ok(out) => storage.read(offset, &mut out[..length]),
        Err(status) => return req.complete(status),
    }
    req.complete_with_information(NtStatus::SUCCESS, length);
}

/// `EvtIoWrite`.
fn on_write(storage: &Storage, req: Request, length: usize) {
    if storage.read_only() {
        return req.complete(NtStatus::MEDIA_WRITE_PROTECTED);
    }
    let offset = req.parameters().offset;
    if let Err(status) = check_range(storage.size(), offset, length as u64) {
        return req.complete(status);
    }
    match req.input_buffer(length) {
        Ok(data) => storage.write(offset, &data[..length]),
        Err(status) => return req.complete(status),
    }
    req.complete_with_information(NtStatus::SUCCESS, length);
}

/// `EvtIoDefault` of the passive flush queue: always at PASSIVE_LEVEL. Flushes, and ranged
/// flushes forwarded by the I/O queue.
fn on_flush(storage: &Storage, req: Request) {
    if req.kind() == RequestType::DeviceControl
        && req.parameters().ioctl_code == IOCTL_RAMDISK_FLUSH_RANGE
    {
        return ioctl::flush_range(storage, req);
    }
    let status = match storage.flush() {
        Ok(()) => NtStatus::SUCCESS,
        Err(status) => status,
    };
    req.complete(status);
}

/// A RAM disk made by [`create`].
pub struct RamdiskDevice {
    device: Arc<Device>,
    io_queue: Arc<Queue>,
    flush_queue: Arc<Queue>,
    storage: Arc<Storage>,
}

impl RamdiskDevice {
    /// The device's name (what clients open).
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The framework device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The parallel default queue: reads, writes and control requests.
    pub fn io_queue(&self) -> &Arc<Queue> {
        &self.io_queue
    }

    /// The sequential PASSIVE_LEVEL queue that receives flushes.
    pub fn flush_queue(&self) -> &Arc<Queue> {
        &self.flush_queue
    }

    /// The disk size in bytes.
    pub fn size(&self) -> u64 {
        self.storage.size()
    }

    /// Whether the disk refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.storage.read_only()
    }

    /// The backing file, if any.
    pub fn backing_file(&self) -> Option<&Path> {
        self.storage.backing_path()
    }

    /// Bytes held by allocated chunks (as [`IOCTL_RAMDISK_QUERY_ALLOCATED`] reports).
    pub fn allocated_bytes(&self) -> u64 {
        self.storage.allocated_bytes()
    }

    /// The geometry reported by [`IOCTL_DISK_GET_DRIVE_GEOMETRY`].
    pub fn geometry(&self) -> DiskGeometry {
        DiskGeometry::for_size(self.storage.size())
    }
}

impl fmt::Debug for RamdiskDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamdiskDevice")
            .field("name", &self.name())
            .field("size", &self.size())
            .field("read_only", &self.is_read_only())
            .field("backing_file", &self.backing_file())
            .finish()
    }
}

/// Creates a RAM disk named `name`: opens (and loads) the backing file if any, then creates the
/// device (scope and level from `config`), the passive flush queue and the parallel default
/// queue. PASSIVE_LEVEL. A bad size: `STATUS_INVALID_PARAMETER`; a missing read-only backing
/// file: `STATUS_OBJECT_NAME_NOT_FOUND`; other file errors: `STATUS_IO_DEVICE_ERROR`; a name
/// in use: `STATUS_OBJECT_NAME_COLLISION`.
///
/// ```
/// use drivers::ramdisk::{self, RamdiskConfig, IOCTL_DISK_GET_LENGTH_INFO};
/// use wdf::{Driver, ObjectAttributes};
///
/// let kernel = nt::Kernel::builder().processors(2).workers(2).build();
/// let driver = Driver::create(&kernel, ObjectAttributes::default()).unwrap();
/// let disk = ramdisk::create(&driver, "rd-doc", RamdiskConfig::new(64 << 30)).unwrap();
/// let h = kernel.io().open("rd-doc").unwrap();
/// assert_eq!(h.write(4096, vec![0xAB; 512]).information, 512);
/// assert_eq!(h.read(4096, 512).data, vec![0xAB; 512]);
/// assert_eq!(disk.allocated_bytes(), ramdisk::CHUNK_SIZE);
/// let len = h.device_control(IOCTL_DISK_GET_LENGTH_INFO, Vec::new(), 8);
/// assert_eq!(len.data, (64u64 << 30).to_le_bytes());
/// ```
pub fn create(
    driver: &Arc<Driver>,
    name: &str,
    config: RamdiskConfig,
) -> Result<RamdiskDevice, NtStatus> {
    let storage = Arc::new(Storage::open(
        config.size,
        config.backing_file.as_deref(),
        config.read_only,
    )?);
    let mut init = DeviceInit::new(name);
    init.attributes(ObjectAttributes::level(config.execution_level).with_scope(config.sync_scope));
    let device = driver.create_device(init)?;
    let made = build(&device, name, storage);
    if made.is_err() {
        device.delete();
    }
    made
}

fn build(
    device: &Arc<Device>,
    name: &str,
    storage: Arc<Storage>,
) -> Result<RamdiskDevice, NtStatus> {
    // The flush queue first, and routed before the default queue exists, so that no flush can
    // ever reach the default queue.
    let mut flush = QueueConfig::new(DispatchType::Sequential);
    flush.name = Some(format!("{name}-flush"));
    let s = storage.clone();
    flush.io_default(move |_cx, req| on_flush(&s, req));
    let flush_queue = device.create_queue(
        flush,
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::None),
    )?;
    device.configure_request_dispatching(&flush_queue, RequestType::FlushBuffers)?;

    let mut io = QueueConfig::new(DispatchType::Parallel);
    io.name = Some(format!("{name}-io"));
    io.default_queue = true;
    let s = storage.clone();
    io.io_read(move |_cx, req, len| on_read(&s, req, len));
    let s = storage.clone();
    io.io_write(move |_cx, req, len| on_write(&s, req, len));
    let s = storage.clone();
    let flush_to = Arc::downgrade(&flush_queue);
    io.io_device_control(move |_cx, req, _out, _in, code| {
        ioctl::device_control(&s, &flush_to, req, code)
    });
    let io_queue = device.create_queue(io, ObjectAttributes::default())?;

    Ok(RamdiskDevice {
        device: device.clone(),
        io_queue,
        flush_queue,
        storage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks() {
        assert_eq!(check_range(4096, 0, 4096), Ok(()));
        assert_eq!(check_range(4096, 4096, 0), Ok(()));
        assert_eq!(check_range(4096, 1, 512), Err(NtStatus::INVALID_PARAMETER));
        assert_eq!(check_range(4096, 0, 511), Err(NtStatus::INVALID_PARAMETER));
        assert_eq!(
            check_range(4096, 3584, 1024),
            Err(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            check_range(u64::MAX - 511, u64::MAX - 511, 1024),
            Err(NtStatus::INVALID_PARAMETER)
        );
    }
}
