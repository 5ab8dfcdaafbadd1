//! The RAM disk's control codes, their buffers, and `EvtIoDeviceControl`.
//!
//! Every buffer is little-endian. An input shorter than its structure, or an output shorter
//! than one result, is `STATUS_BUFFER_TOO_SMALL` (what `WdfRequestRetrieve*Buffer` reports);
//! a larger output buffer is fine, and the information count says how much was written.

use std::sync::Weak;

use nt::NtStatus;
use wdf::{Queue, Request};

use super::check_range;
use super::storage::{Extent, Storage};
use crate::{
    FILE_ANY_ACCESS, FILE_DEVICE_DISK, FILE_READ_ACCESS, FILE_WRITE_ACCESS, METHOD_BUFFERED,
    ctl_code, le_u64,
};

/// Windows' `IOCTL_DISK_GET_DRIVE_GEOMETRY`: output a [`DiskGeometry`] (24 bytes).
pub const IOCTL_DISK_GET_DRIVE_GEOMETRY: u32 =
    ctl_code(FILE_DEVICE_DISK, 0x0000, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Windows' `IOCTL_DISK_IS_WRITABLE`: no buffers; `STATUS_SUCCESS`, or
/// `STATUS_MEDIA_WRITE_PROTECTED` for a read-only disk.
pub const IOCTL_DISK_IS_WRITABLE: u32 =
    ctl_code(FILE_DEVICE_DISK, 0x0009, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Windows' `IOCTL_DISK_GET_LENGTH_INFO`: output the disk size in bytes (`u64`, 8 bytes).
pub const IOCTL_DISK_GET_LENGTH_INFO: u32 =
    ctl_code(FILE_DEVICE_DISK, 0x0017, METHOD_BUFFERED, FILE_READ_ACCESS);
/// Discard: input a [`RangeInput`]. The range reads as zeros afterwards, and the memory of the
/// chunks it covers entirely is freed. Alignment and bounds as for reads and writes.
pub const IOCTL_RAMDISK_TRIM: u32 =
    ctl_code(FILE_DEVICE_DISK, 0x800, METHOD_BUFFERED, FILE_WRITE_ACCESS);
/// Write zeroes: input a [`RangeInput`]. The range reads as zeros afterwards; allocation does
/// not change (allocated chunks are zero-filled, missing ones already read as zeros).
pub const IOCTL_RAMDISK_WRITE_ZEROES: u32 =
    ctl_code(FILE_DEVICE_DISK, 0x801, METHOD_BUFFERED, FILE_WRITE_ACCESS);
/// Output the bytes held by allocated chunks (`u64`, 8 bytes): a multiple of the chunk size.
pub const IOCTL_RAMDISK_QUERY_ALLOCATED: u32 =
    ctl_code(FILE_DEVICE_DISK, 0x802, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Allocation map of a byte range: input a [`RangeInput`] (any byte offset and length, within
/// the disk, length > 0). Output an array of [`Extent`]s of [`EXTENT_SIZE`] bytes each. They
/// alternate between allocated and unallocated, are contiguous, start at the input offset and
/// are clipped to the range. If the output buffer holds fewer than needed, the first ones that
/// fit are returned: they cover a prefix of the range, and the caller asks again from where they
/// end. (This is what NBD's `base:allocation` block status needs.)
pub const IOCTL_RAMDISK_QUERY_RANGES: u32 =
    ctl_code(FILE_DEVICE_DISK, 0x803, METHOD_BUFFERED, FILE_ANY_ACCESS);

/// Flush a range: input a [`RangeInput`] (alignment and bounds as for reads and writes). The
/// changes to the chunks the range touches are written to the backing file and synced, and
/// only those: what a write with FUA (force unit access) needs. Like a flush, it runs at
/// PASSIVE_LEVEL on the flush queue (the request is forwarded there); an empty range, a disk
/// without a backing file and a read-only disk succeed at once with nothing to do.
pub const IOCTL_RAMDISK_FLUSH_RANGE: u32 =
    ctl_code(FILE_DEVICE_DISK, 0x804, METHOD_BUFFERED, FILE_WRITE_ACCESS);

/// `MediaType` value of a fixed disk (`FixedMedia`).
pub const FIXED_MEDIA: u32 = 12;

/// The disk's geometry. Equivalent to: Windows' `DISK_GEOMETRY`, with the same layout:
///
/// | Bytes | Field |
/// |---|---|
/// | 0..8 | `cylinders: u64` |
/// | 8..12 | `media_type: u32` ([`FIXED_MEDIA`]) |
/// | 12..16 | `tracks_per_cylinder: u32` |
/// | 16..20 | `sectors_per_track: u32` |
/// | 20..24 | `bytes_per_sector: u32` |
///
/// The RAM disk reports 2 tracks per cylinder and 32 sectors per track (as the WDK's RAMDisk
/// sample does), so a cylinder is 32 KiB; `cylinders` is rounded down, so use
/// [`IOCTL_DISK_GET_LENGTH_INFO`] for the exact size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiskGeometry {
    /// Cylinders (rounded down).
    pub cylinders: u64,
    /// Always [`FIXED_MEDIA`].
    pub media_type: u32,
    /// Tracks per cylinder.
    pub tracks_per_cylinder: u32,
    /// Sectors per track.
    pub sectors_per_track: u32,
    /// Bytes per sector (512).
    pub bytes_per_sector: u32,
}

impl DiskGeometry {
    /// Size on the wire.
    pub const SIZE: usize = 24;

    /// The geometry reported for a disk of `size` bytes.
    pub fn for_size(size: u64) -> DiskGeometry {
        let (tracks, sectors, bytes) = (2u32, 32u32, super::SECTOR_SIZE);
        DiskGeometry {
            cylinders: size / (u64::from(tracks) * u64::from(sectors) * u64::from(bytes)),
            media_type: FIXED_MEDIA,
            tracks_per_cylinder: tracks,
            sectors_per_track: sectors,
            bytes_per_sector: bytes,
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0; Self::SIZE];
        b[0..8].copy_from_slice(&self.cylinders.to_le_bytes());
        b[8..12].copy_from_slice(&self.media_type.to_le_bytes());
        b[12..16].copy_from_slice(&self.tracks_per_cylinder.to_le_bytes());
        b[16..20].copy_from_slice(&self.sectors_per_track.to_le_bytes());
        b[20..24].copy_from_slice(&self.bytes_per_sector.to_le_bytes());
        b
    }

    /// Parses the wire form; `None` if `b` is too short.
    pub fn from_bytes(b: &[u8]) -> Option<DiskGeometry> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        Some(DiskGeometry {
            cylinders: le_u64(b, 0)?,
            media_type: u32_at(8)?,
            tracks_per_cylinder: u32_at(12)?,
            sectors_per_track: u32_at(16)?,
            bytes_per_sector: u32_at(20)?,
        })
    }
}

/// The input of trim, write-zeroes and the range query: `offset: u64` at byte 0, `length: u64`
/// at byte 8 (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RangeInput {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl RangeInput {
    /// Size on the wire.
    pub const SIZE: usize = 16;

    /// The wire form.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0; Self::SIZE];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.length.to_le_bytes());
        b
    }

    /// Parses the wire form; `None` if `b` is too short.
    pub fn from_bytes(b: &[u8]) -> Option<RangeInput> {
        Some(RangeInput {
            offset: le_u64(b, 0)?,
            length: le_u64(b, 8)?,
        })
    }
}

/// Size of one [`Extent`] in the output of [`IOCTL_RAMDISK_QUERY_RANGES`].
pub const EXTENT_SIZE: usize = 24;

/// Flag bit of an allocated [`Extent`] on the wire.
pub const EXTENT_ALLOCATED: u32 = 1;

impl Extent {
    /// The wire form: `offset: u64` at byte 0, `length: u64` at 8, `flags: u32` at 16
    /// ([`EXTENT_ALLOCATED`]), 4 reserved zero bytes at 20.
    pub fn to_bytes(&self) -> [u8; EXTENT_SIZE] {
        let mut b = [0; EXTENT_SIZE];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.length.to_le_bytes());
        let flags = if self.allocated { EXTENT_ALLOCATED } else { 0 };
        b[16..20].copy_from_slice(&flags.to_le_bytes());
        b
    }

    /// Parses one wire extent; `None` if `b` is too short.
    pub fn from_bytes(b: &[u8]) -> Option<Extent> {
        let flags = u32::from_le_bytes(b.get(16..20)?.try_into().ok()?);
        Some(Extent {
            offset: le_u64(b, 0)?,
            length: le_u64(b, 8)?,
            allocated: flags & EXTENT_ALLOCATED != 0,
        })
    }

    /// Parses the whole output of [`IOCTL_RAMDISK_QUERY_RANGES`].
    pub fn parse_all(b: &[u8]) -> Vec<Extent> {
        b.chunks_exact(EXTENT_SIZE)
            .filter_map(Extent::from_bytes)
            .collect()
    }
}

/// `EvtIoDeviceControl` of the I/O queue. A ranged flush is forwarded to `flush_queue`.
pub(super) fn device_control(
    storage: &Storage,
    flush_queue: &Weak<Queue>,
    mut req: Request,
    code: u32,
) {
    if code == IOCTL_RAMDISK_FLUSH_RANGE {
        return forward_flush_range(storage, flush_queue, req);
    }
    match handle(storage, &mut req, code) {
        Ok(information) => req.complete_with_information(NtStatus::SUCCESS, information),
        Err(status) => req.complete(status),
    }
}

/// Carries out one control request; returns the bytes written to the output buffer.
fn handle(storage: &Storage, req: &mut Request, code: u32) -> Result<usize, NtStatus> {
    match code {
        IOCTL_DISK_GET_DRIVE_GEOMETRY => {
            output(req, &DiskGeometry::for_size(storage.size()).to_bytes())
        }
        IOCTL_DISK_GET_LENGTH_INFO => output(req, &storage.size().to_le_bytes()),
        IOCTL_DISK_IS_WRITABLE => {
            if storage.read_only() {
                Err(NtStatus::MEDIA_WRITE_PROTECTED)
            } else {
                Ok(0)
            }
        }
        IOCTL_RAMDISK_TRIM | IOCTL_RAMDISK_WRITE_ZEROES => {
            if storage.read_only() {
                return Err(NtStatus::MEDIA_WRITE_PROTECTED);
            }
            let r = range_input(req)?;
            check_range(storage.size(), r.offset, r.length)?;
            storage.zero(r.offset, r.length, code == IOCTL_RAMDISK_TRIM);
            Ok(0)
        }
        IOCTL_RAMDISK_QUERY_ALLOCATED => output(req, &storage.allocated_bytes().to_le_bytes()),
        IOCTL_RAMDISK_QUERY_RANGES => {
            let r = range_input(req)?;
            let end = r
                .offset
                .checked_add(r.length)
                .ok_or(NtStatus::INVALID_PARAMETER)?;
            if r.length == 0 || end > storage.size() {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            let out = req.output_buffer(EXTENT_SIZE)?;
            let extents = storage.extents(r.offset, r.length, out.len() / EXTENT_SIZE);
            for (slot, e) in out.chunks_exact_mut(EXTENT_SIZE).zip(&extents) {
                slot.copy_from_slice(&e.to_bytes());
            }
            Ok(extents.len() * EXTENT_SIZE)
        }
        _ => Err(NtStatus::INVALID_DEVICE_REQUEST),
    }
}

/// Checks a ranged flush and hands it to the flush queue (it blocks on file I/O, which the
/// I/O queue's callbacks, possibly at DISPATCH_LEVEL, must not do).
fn forward_flush_range(storage: &Storage, flush_queue: &Weak<Queue>, req: Request) {
    let r = match range_input(&req) {
        Ok(r) => r,
        Err(status) => return req.complete(status),
    };
    if let Err(status) = check_range(storage.size(), r.offset, r.length) {
        return req.complete(status);
    }
    if r.length == 0 || !storage.needs_flushing() {
        return req.complete(NtStatus::SUCCESS);
    }
    match flush_queue.upgrade() {
        Some(q) => {
            if let Err(e) = req.forward(&q) {
                e.request.complete(e.status);
            }
        }
        None => req.complete(NtStatus::DELETE_PENDING),
    }
}

/// A ranged flush on the flush queue (PASSIVE_LEVEL): the range was checked before forwarding.
pub(super) fn flush_range(storage: &Storage, req: Request) {
    let status = match range_input(&req).map(|r| storage.flush_range(r.offset, r.length)) {
        Ok(Ok(())) => NtStatus::SUCCESS,
        Ok(Err(status)) | Err(status) => status,
    };
    req.complete(status);
}

fn range_input(req: &Request) -> Result<RangeInput, NtStatus> {
    let b = req.input_buffer(RangeInput::SIZE)?;
    RangeInput::from_bytes(b).ok_or(NtStatus::BUFFER_TOO_SMALL)
}

/// Copies `data` to the start of the output buffer (which must hold it).
fn output(req: &mut Request, data: &[u8]) -> Result<usize, NtStatus> {
    let out = req.output_buffer(data.len())?;
    out[..data.len()].copy_from_slice(data);
    Ok(data.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_windows() {
        assert_eq!(IOCTL_DISK_GET_DRIVE_GEOMETRY, 0x0007_0000);
        assert_eq!(IOCTL_DISK_IS_WRITABLE, 0x0007_0024);
        assert_eq!(IOCTL_DISK_GET_LENGTH_INFO, 0x0007_405C);
    }

    #[test]
    fn wire_forms_round_trip() {
        let g = DiskGeometry::for_size(64 << 30);
        assert_eq!(g.cylinders, (64u64 << 30) / (32 * 1024));
        assert_eq!(DiskGeometry::from_bytes(&g.to_bytes()), Some(g));
        let r = RangeInput {
            offset: 512,
            length: u64::MAX,
        };
        assert_eq!(RangeInput::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(RangeInput::from_bytes(&[0; 15]), None);
        let e = Extent {
            offset: 1,
            length: 2,
            allocated: true,
        };
        assert_eq!(Extent::from_bytes(&e.to_bytes()), Some(e));
        assert_eq!(
            Extent::parse_all(&[e.to_bytes(), e.to_bytes()].concat()).len(),
            2
        );
    }
}
