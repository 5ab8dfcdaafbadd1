//! The transmission phase: each NBD command becomes a request through `nt`'s I/O manager.
//!
//! A [`Session`] owns one [`Handle`] (one file object) on the device, opened when the client
//! enters transmission and closed when it leaves. Commands map to requests like this:
//!
//! | NBD command | Request(s) on the handle |
//! |---|---|
//! | `NBD_CMD_READ` | `IoOp::Read` |
//! | `NBD_CMD_WRITE` | `IoOp::Write`; with `NBD_CMD_FLAG_FUA`, then a flush of its range once the write completed (see below) |
//! | `NBD_CMD_FLUSH` | `IoOp::Flush` |
//! | `NBD_CMD_TRIM` | `IoOp::DeviceControl(IOCTL_RAMDISK_TRIM)` (shrunk to whole sectors; FUA: then a flush of its range) |
//! | `NBD_CMD_WRITE_ZEROES` | `IoOp::DeviceControl(IOCTL_RAMDISK_WRITE_ZEROES)` (FUA: then a flush of its range) |
//! | `NBD_CMD_BLOCK_STATUS` | `IoOp::DeviceControl(IOCTL_RAMDISK_QUERY_RANGES)` |
//! | `NBD_CMD_DISC` | none: the connection drains and the handle is closed |
//!
//! The flush of a FUA request's range is `IoOp::DeviceControl(IOCTL_RAMDISK_FLUSH_RANGE)` when
//! the device answers that code (probed when the session opens), so that a FUA write persists
//! its own data and not every change on the disk; otherwise it is a whole `IoOp::Flush`.
//!
//! So the device's queues, sync scope and execution level govern NBD traffic exactly as they
//! govern any in-process client. A request usually completes inside `submit` (the framework
//! calls the driver on the submitting thread); when it does not (a sequential queue that is
//! busy, a deferral to a work item), [`Session::start`] returns the [`InFlight`] request and
//! the server finishes it when its [`PendingIo`] completes, possibly after later requests:
//! replies go out in completion order.
//!
//! # NTSTATUS → NBD error
//!
//! Requests are validated before they are sent ([`crate::protocol::Request::validate`]), so
//! the driver's `STATUS_INVALID_PARAMETER` is rarely seen. What the device returns maps as in
//! [`STATUS_ERRNO`]; anything not listed is `EIO`:
//!
//! | NTSTATUS | NBD error |
//! |---|---|
//! | `STATUS_MEDIA_WRITE_PROTECTED`, `STATUS_ACCESS_DENIED` | `EPERM` |
//! | `STATUS_INVALID_PARAMETER`, `STATUS_INVALID_PARAMETER_4`, `STATUS_BUFFER_TOO_SMALL`, `STATUS_INFO_LENGTH_MISMATCH` | `EINVAL` |
//! | `STATUS_END_OF_FILE` | `ENOSPC` for writes, trims and write-zeroes; `EINVAL` otherwise |
//! | `STATUS_INSUFFICIENT_RESOURCES` | `ENOMEM` |
//! | `STATUS_BUFFER_OVERFLOW` | `EOVERFLOW` |
//! | `STATUS_NOT_SUPPORTED`, `STATUS_NOT_IMPLEMENTED`, `STATUS_INVALID_DEVICE_REQUEST` | `ENOTSUP` |
//! | `STATUS_NO_SUCH_DEVICE`, `STATUS_DELETE_PENDING`, `STATUS_INVALID_HANDLE` | `ESHUTDOWN` |
//! | anything else (`STATUS_IO_DEVICE_ERROR`, `STATUS_CANCELLED`, `STATUS_DEVICE_NOT_READY`, ...) | `EIO` |

use std::fmt;

use drivers::ramdisk::{
    EXTENT_SIZE, Extent, IOCTL_DISK_GET_LENGTH_INFO, IOCTL_DISK_IS_WRITABLE,
    IOCTL_RAMDISK_FLUSH_RANGE, IOCTL_RAMDISK_QUERY_RANGES, IOCTL_RAMDISK_TRIM,
    IOCTL_RAMDISK_WRITE_ZEROES, RangeInput, SECTOR_SIZE,
};
use nt::NtStatus;
use nt::io::{Handle, IoCompletion, IoManager, IoOp, PendingIo};

use crate::handshake::{ExportInfo, Negotiated};
use crate::protocol::{self as p, Command, Errno, TransmissionParams};

/// How each device status maps to an NBD error (besides `STATUS_END_OF_FILE`, which depends
/// on the command, and the `EIO` default).
pub const STATUS_ERRNO: &[(NtStatus, Errno)] = &[
    (NtStatus::MEDIA_WRITE_PROTECTED, Errno::Perm),
    (NtStatus::ACCESS_DENIED, Errno::Perm),
    (NtStatus::INVALID_PARAMETER, Errno::Inval),
    (NtStatus::INVALID_PARAMETER_4, Errno::Inval),
    (NtStatus::BUFFER_TOO_SMALL, Errno::Inval),
    (NtStatus::INFO_LENGTH_MISMATCH, Errno::Inval),
    (NtStatus::INSUFFICIENT_RESOURCES, Errno::NoMem),
    (NtStatus::BUFFER_OVERFLOW, Errno::Overflow),
    (NtStatus::NOT_SUPPORTED, Errno::NotSup),
    (NtStatus::NOT_IMPLEMENTED, Errno::NotSup),
    (NtStatus::INVALID_DEVICE_REQUEST, Errno::NotSup),
    (NtStatus::NO_SUCH_DEVICE, Errno::Shutdown),
    (NtStatus::DELETE_PENDING, Errno::Shutdown),
    (NtStatus::INVALID_HANDLE, Errno::Shutdown),
];

/// The NBD error for a failed request; `writes` says whether the command writes (it decides
/// `STATUS_END_OF_FILE`).
pub fn errno_for(status: NtStatus, writes: bool) -> Errno {
    if status == NtStatus::END_OF_FILE {
        return if writes { Errno::NoSpc } else { Errno::Inval };
    }
    STATUS_ERRNO
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(Errno::Io, |(_, e)| *e)
}

/// Most extents asked of the device for one block-status request.
pub const MAX_EXTENTS: usize = 256;

/// Builds the export description of device `device` by asking it: its length
/// (`IOCTL_DISK_GET_LENGTH_INFO`), whether it is writable (`IOCTL_DISK_IS_WRITABLE`), whether
/// it answers trim, write-zeroes (zero-length probes) and range queries. `multi_conn` says
/// whether all handles see the same data (true for the RAM disk). PASSIVE_LEVEL.
pub fn probe_export(
    io: &IoManager,
    device: &str,
    name: &str,
    description: &str,
    multi_conn: bool,
) -> Result<ExportInfo, NtStatus> {
    let h = io.open(device)?;
    let len = h.device_control(IOCTL_DISK_GET_LENGTH_INFO, Vec::new(), 8);
    len.status.ok()?;
    let size = len
        .data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
    let read_only = !h
        .device_control(IOCTL_DISK_IS_WRITABLE, Vec::new(), 0)
        .status
        .is_success();
    let empty = RangeInput {
        offset: 0,
        length: 0,
    }
    .to_bytes()
    .to_vec();
    let ok = |code: u32, input: Vec<u8>, out: usize| {
        h.device_control(code, input, out).status.is_success()
    };
    let trim = !read_only && ok(IOCTL_RAMDISK_TRIM, empty.clone(), 0);
    let write_zeroes = !read_only && ok(IOCTL_RAMDISK_WRITE_ZEROES, empty, 0);
    let probe = RangeInput {
        offset: 0,
        length: size.min(u64::from(SECTOR_SIZE)),
    };
    let block_status = size > 0
        && ok(
            IOCTL_RAMDISK_QUERY_RANGES,
            probe.to_bytes().to_vec(),
            EXTENT_SIZE,
        );
    h.close();
    Ok(ExportInfo {
        name: name.to_owned(),
        description: description.to_owned(),
        size,
        read_only,
        flush: true,
        fua: true,
        trim,
        write_zeroes,
        multi_conn,
        block_status,
        min_block: SECTOR_SIZE,
        preferred_block: 4096,
        max_block: p::MAX_REQUEST_SIZE,
    })
}

/// A reply ready to send: a header (and any small payload), then bulk data (the data of a
/// read; empty otherwise).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Header bytes.
    pub head: Vec<u8>,
    /// Data after the header.
    pub data: Vec<u8>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("head", &self.head)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// What became of a request.
#[derive(Debug)]
pub enum Outcome {
    /// Finished: send this reply.
    Reply(Reply),
    /// Still running: poll its [`InFlight::pending`] and call [`Session::complete`].
    Pending(InFlight),
    /// `NBD_CMD_DISC`: finish what is in flight, then close.
    Disconnect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Read {
        offset: u64,
        length: u32,
    },
    /// `fua`: the range (offset, length) to flush once the write is done.
    Write {
        fua: Option<(u64, u32)>,
    },
    Zero {
        fua: Option<(u64, u32)>,
        trim: bool,
    },
    Flush,
    BlockStatus,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Read { .. } => "read",
            Stage::Write { .. } => "write",
            Stage::Zero { trim: true, .. } => "trim",
            Stage::Zero { trim: false, .. } => "write-zeroes",
            Stage::Flush => "flush",
            Stage::BlockStatus => "block-status",
        }
    }

    fn writes(self) -> bool {
        matches!(self, Stage::Write { .. } | Stage::Zero { .. })
    }
}

/// A request sent to the device and not completed yet.
pub struct InFlight {
    cookie: u64,
    stage: Stage,
    pending: PendingIo,
}

impl InFlight {
    /// The device request to wait for (a `Future`; or poll [`PendingIo::is_complete`]).
    pub fn pending(&mut self) -> &mut PendingIo {
        &mut self.pending
    }

    /// The client's cookie.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("cookie", &self.cookie)
            .field("stage", &self.stage)
            .field("pending", &self.pending)
            .finish()
    }
}

enum Next {
    Done(Reply),
    Again(InFlight),
}

/// One client's transmission phase: its handle on the device and what was negotiated.
#[derive(Debug)]
pub struct Session {
    handle: Handle,
    params: TransmissionParams,
    /// Whether the device flushes ranges (`IOCTL_RAMDISK_FLUSH_RANGE`).
    ranged_flush: bool,
}

impl Session {
    /// Opens a handle on `device` for a client that negotiated `n` on `export`.
    /// PASSIVE_LEVEL.
    pub fn open(
        io: &IoManager,
        device: &str,
        export: &ExportInfo,
        n: Negotiated,
    ) -> Result<Session, NtStatus> {
        let handle = io.open(device)?;
        // An empty range: a device that knows the code answers at once, with nothing to do.
        let empty = RangeInput {
            offset: 0,
            length: 0,
        };
        let ranged_flush = handle
            .device_control(IOCTL_RAMDISK_FLUSH_RANGE, empty.to_bytes().to_vec(), 0)
            .status
            .is_success();
        Ok(Session {
            handle,
            ranged_flush,
            params: TransmissionParams {
                size: export.size,
                flags: n.flags,
                structured: n.structured,
                block_status: n.block_status,
                min_block: export.min_block,
                max_payload: export.max_block.min(p::MAX_REQUEST_SIZE),
            },
        })
    }

    /// What requests are checked against.
    pub fn params(&self) -> &TransmissionParams {
        &self.params
    }

    /// The handle (file object) the session's requests go through.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The reply to a request refused before reaching the device.
    pub fn refusal(&self, cookie: u64, errno: Errno, message: &str) -> Reply {
        let mut head = Vec::new();
        p::error_reply(&mut head, self.params.structured, cookie, errno, message);
        Reply {
            head,
            data: Vec::new(),
        }
    }

    fn ok(&self, cookie: u64) -> Reply {
        // Structured replies may still use a simple reply when there is no payload.
        Reply {
            head: p::simple_reply(cookie, 0).to_vec(),
            data: Vec::new(),
        }
    }

    /// Persists `[offset, offset + length)`: a ranged flush if the device has one, else a
    /// whole flush.
    fn flush_range(&self, cookie: u64, offset: u64, length: u32) -> InFlight {
        let op = if self.ranged_flush {
            IoOp::DeviceControl {
                code: IOCTL_RAMDISK_FLUSH_RANGE,
                input: RangeInput {
                    offset,
                    length: u64::from(length),
                }
                .to_bytes()
                .to_vec(),
                output_length: 0,
            }
        } else {
            IoOp::Flush
        };
        self.submit(cookie, Stage::Flush, op)
    }

    fn submit(&self, cookie: u64, stage: Stage, op: IoOp) -> InFlight {
        InFlight {
            cookie,
            stage,
            pending: self.handle.submit(op),
        }
    }

    /// Starts validated command `cmd` (with the payload of a write).
    pub fn start(&self, cookie: u64, cmd: Command, payload: Vec<u8>) -> Outcome {
        let range = |offset: u64, length: u32| {
            RangeInput {
                offset,
                length: u64::from(length),
            }
            .to_bytes()
            .to_vec()
        };
        let f = match cmd {
            Command::Disconnect => return Outcome::Disconnect,
            Command::Read { offset, length } => self.submit(
                cookie,
                Stage::Read { offset, length },
                IoOp::Read {
                    offset,
                    length: length as usize,
                },
            ),
            Command::Write {
                offset,
                length,
                fua,
            } => self.submit(
                cookie,
                Stage::Write {
                    fua: fua.then_some((offset, length)),
                },
                IoOp::Write {
                    offset,
                    data: payload,
                },
            ),
            Command::Flush => self.submit(cookie, Stage::Flush, IoOp::Flush),
            Command::Trim { length: 0, fua, .. } => {
                // Nothing whole to discard.
                if !fua {
                    return Outcome::Reply(self.ok(cookie));
                }
                self.submit(cookie, Stage::Flush, IoOp::Flush)
            }
            Command::Trim {
                offset,
                length,
                fua,
            }
            | Command::WriteZeroes {
                offset,
                length,
                fua,
            } => {
                let trim = matches!(cmd, Command::Trim { .. });
                let code = if trim {
                    IOCTL_RAMDISK_TRIM
                } else {
                    IOCTL_RAMDISK_WRITE_ZEROES
                };
                self.submit(
                    cookie,
                    Stage::Zero {
                        fua: fua.then_some((offset, length)),
                        trim,
                    },
                    IoOp::DeviceControl {
                        code,
                        input: range(offset, length),
                        output_length: 0,
                    },
                )
            }
            Command::BlockStatus {
                offset,
                length,
                req_one,
            } => {
                let n = if req_one { 1 } else { MAX_EXTENTS };
                self.submit(
                    cookie,
                    Stage::BlockStatus,
                    IoOp::DeviceControl {
                        code: IOCTL_RAMDISK_QUERY_RANGES,
                        input: range(offset, length),
                        output_length: n * EXTENT_SIZE,
                    },
                )
            }
        };
        self.advance(f)
    }

    /// Continues a request whose pending I/O completed with `c` (a FUA write goes on to its
    /// flush; everything else is finished).
    pub fn complete(&self, f: InFlight, c: IoCompletion) -> Outcome {
        match self.step(f.cookie, f.stage, c) {
            Next::Done(r) => Outcome::Reply(r),
            Next::Again(f) => self.advance(f),
        }
    }

    /// Runs the request's stages as long as each completes inline.
    fn advance(&self, mut f: InFlight) -> Outcome {
        loop {
            if !f.pending.is_complete() {
                return Outcome::Pending(f);
            }
            let InFlight {
                cookie,
                stage,
                pending,
            } = f;
            match self.step(cookie, stage, pending.wait()) {
                Next::Done(r) => return Outcome::Reply(r),
                Next::Again(next) => f = next,
            }
        }
    }

    fn step(&self, cookie: u64, stage: Stage, c: IoCompletion) -> Next {
        if !c.status.is_success() {
            let errno = errno_for(c.status, stage.writes());
            let msg = format!("{}: the device failed it with {}", stage.name(), c.status);
            return Next::Done(self.refusal(cookie, errno, &msg));
        }
        match stage {
            Stage::Read { offset, length } => {
                if c.data.len() != length as usize {
                    let msg = format!(
                        "read: the device returned {} of {length} bytes",
                        c.data.len()
                    );
                    return Next::Done(self.refusal(cookie, Errno::Io, &msg));
                }
                let mut head = Vec::with_capacity(p::STRUCTURED_HEADER_SIZE + 8);
                if self.params.structured {
                    p::offset_data_header(&mut head, cookie, offset, length);
                } else {
                    head.extend_from_slice(&p::simple_reply(cookie, 0));
                }
                Next::Done(Reply { head, data: c.data })
            }
            Stage::Write {
                fua: Some((offset, length)),
            }
            | Stage::Zero {
                fua: Some((offset, length)),
                ..
            } => Next::Again(self.flush_range(cookie, offset, length)),
            Stage::Write { fua: None } | Stage::Zero { fua: None, .. } | Stage::Flush => {
                Next::Done(self.ok(cookie))
            }
            Stage::BlockStatus => {
                let extents: Vec<(u32, u32)> = Extent::parse_all(&c.data)
                    .into_iter()
                    .filter(|e| e.length > 0)
                    .map_while(|e| {
                        let flags = if e.allocated {
                            0
                        } else {
                            p::STATE_HOLE | p::STATE_ZERO
                        };
                        u32::try_from(e.length).ok().map(|l| (l, flags))
                    })
                    .collect();
                if extents.is_empty() {
                    let msg = "block-status: the device returned no extents";
                    return Next::Done(self.refusal(cookie, Errno::Io, msg));
                }
                let mut head = Vec::new();
                p::block_status_chunk(&mut head, cookie, p::BASE_ALLOCATION_ID, &extents);
                Next::Done(Reply {
                    head,
                    data: Vec::new(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(
            errno_for(NtStatus::MEDIA_WRITE_PROTECTED, true),
            Errno::Perm
        );
        assert_eq!(errno_for(NtStatus::INVALID_PARAMETER, false), Errno::Inval);
        assert_eq!(errno_for(NtStatus::END_OF_FILE, true), Errno::NoSpc);
        assert_eq!(errno_for(NtStatus::END_OF_FILE, false), Errno::Inval);
        assert_eq!(errno_for(NtStatus::IO_DEVICE_ERROR, false), Errno::Io);
        assert_eq!(errno_for(NtStatus::CANCELLED, false), Errno::Io);
        assert_eq!(errno_for(NtStatus::NO_SUCH_DEVICE, false), Errno::Shutdown);
        assert_eq!(
            errno_for(NtStatus::INSUFFICIENT_RESOURCES, true),
            Errno::NoMem
        );
        assert_eq!(errno_for(NtStatus(0xC0DE_0001), true), Errno::Io);
        // No status is listed twice.
        for (i, (s, _)) in STATUS_ERRNO.iter().enumerate() {
            assert!(STATUS_ERRNO[i + 1..].iter().all(|(t, _)| t != s), "{s}");
        }
    }
}
