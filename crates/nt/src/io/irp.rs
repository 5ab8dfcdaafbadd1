//! I/O request packets and their completion.
//!
//! An [`Irp`] is an owned value: the device that receives it must complete it exactly once, and
//! [`Irp::complete`] consumes it, so a second completion does not compile. Dropping an IRP
//! without completing it is a verifier violation ([`rules::IRP_NOT_COMPLETED`]) and completes it
//! with `STATUS_CANCELLED`, so no client ever waits forever.
//!
//! The client side is a [`PendingIo`]: wait for it (PASSIVE_LEVEL), poll it, `.await` it, or
//! cancel it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::device_object::FileObject;
use crate::irql::{self, Irql};
use crate::status::NtStatus;
use crate::verifier::{self, rules};

/// The kind of request. Equivalent to: `IRP_MJ_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MajorFunction {
    /// `IRP_MJ_CREATE`: a handle is being opened.
    Create,
    /// `IRP_MJ_CLEANUP`: the last handle is closing; outstanding I/O should be cancelled.
    Cleanup,
    /// `IRP_MJ_CLOSE`: the file object is going away.
    Close,
    /// `IRP_MJ_READ`.
    Read,
    /// `IRP_MJ_WRITE`.
    Write,
    /// `IRP_MJ_DEVICE_CONTROL`.
    DeviceControl,
    /// `IRP_MJ_INTERNAL_DEVICE_CONTROL` (from other drivers).
    InternalDeviceControl,
    /// `IRP_MJ_FLUSH_BUFFERS`.
    FlushBuffers,
}

/// What a client asks a device to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// Read `length` bytes at byte `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes to read.
        length: usize,
    },
    /// Write `data` at byte `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// The bytes to write.
        data: Vec<u8>,
    },
    /// An I/O control request.
    DeviceControl {
        /// The control code.
        code: u32,
        /// Input buffer.
        input: Vec<u8>,
        /// Output buffer length.
        output_length: usize,
    },
    /// An internal I/O control request (from another driver).
    InternalDeviceControl {
        /// The control code.
        code: u32,
        /// Input buffer.
        input: Vec<u8>,
        /// Output buffer length.
        output_length: usize,
    },
    /// Flush buffered data to stable storage.
    Flush,
}

/// How a request finished. Equivalent to: `IO_STATUS_BLOCK` plus the returned buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct IoCompletion {
    /// The final status.
    pub status: NtStatus,
    /// The information count (bytes transferred, for reads and writes).
    pub information: usize,
    /// Output data: for reads and control requests, the first `information` bytes of the output
    /// buffer; empty otherwise.
    pub data: Vec<u8>,
}

impl fmt::Debug for IoCompletion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoCompletion")
            .field("status", &self.status)
            .field("information", &self.information)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// A cancel routine: run once, by the thread that cancels the request.
pub type CancelRoutine = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Slot {
    result: Option<IoCompletion>,
    waker: Option<Waker>,
}

pub(crate) struct IrpShared {
    id: u64,
    slot: Mutex<Slot>,
    cv: Condvar,
    completed: AtomicBool,
    cancelled: AtomicBool,
    cancel_routine: Mutex<Option<CancelRoutine>>,
}

static NEXT_IRP_ID: AtomicU64 = AtomicU64::new(1);

/// Ids are handed out to threads in blocks, so issuing a request writes no shared cache line.
const ID_BLOCK: u64 = 1024;

thread_local! {
    static IDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

fn next_irp_id() -> u64 {
    IDS.with(|c| {
        let (next, end) = c.get();
        if next < end {
            c.set((next + 1, end));
            next
        } else {
            let start = NEXT_IRP_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
            c.set((start + 1, start + ID_BLOCK));
            start
        }
    })
}

impl IrpShared {
    fn new() -> Arc<IrpShared> {
        Arc::new(IrpShared {
            id: next_irp_id(),
            slot: Mutex::default(),
            cv: Condvar::new(),
            completed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            cancel_routine: Mutex::new(None),
        })
    }

    fn finish(&self, c: IoCompletion) {
        let waker = {
            let mut slot = self.slot.lock();
            debug_assert!(slot.result.is_none(), "IRP {} completed twice", self.id);
            slot.result = Some(c);
            self.completed.store(true, Ordering::Release);
            self.cv.notify_all();
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn cancel(&self) {
        if self.completed.load(Ordering::Acquire) {
            return;
        }
        let routine = {
            let mut r = self.cancel_routine.lock();
            self.cancelled.store(true, Ordering::Release);
            r.take()
        };
        if let Some(routine) = routine {
            routine();
        }
    }
}

/// An I/O request packet, owned by whichever layer is processing it.
pub struct Irp {
    shared: Arc<IrpShared>,
    major: MajorFunction,
    file: Arc<FileObject>,
    issued_at: Irql,
    offset: u64,
    code: u32,
    input: Vec<u8>,
    output: Vec<u8>,
    done: bool,
    /// Whether a cancel routine was ever installed: if not, completion has none to clear
    /// and skips the cancel-routine lock.
    routine_set: AtomicBool,
}

impl Irp {
    pub(crate) fn new(file: Arc<FileObject>, op: IoOp, issued_at: Irql) -> (Irp, PendingIo) {
        let shared = IrpShared::new();
        let (major, offset, code, input, output) = match op {
            IoOp::Read { offset, length } => {
                (MajorFunction::Read, offset, 0, Vec::new(), vec![0; length])
            }
            IoOp::Write { offset, data } => (MajorFunction::Write, offset, 0, data, Vec::new()),
            IoOp::DeviceControl {
                code,
                input,
                output_length,
            } => (
                MajorFunction::DeviceControl,
                0,
                code,
                input,
                vec![0; output_length],
            ),
            IoOp::InternalDeviceControl {
                code,
                input,
                output_length,
            } => (
                MajorFunction::InternalDeviceControl,
                0,
                code,
                input,
                vec![0; output_length],
            ),
            IoOp::Flush => (MajorFunction::FlushBuffers, 0, 0, Vec::new(), Vec::new()),
        };
        let pending = PendingIo {
            shared: shared.clone(),
        };
        (
            Irp {
                shared,
                major,
                file,
                issued_at,
                offset,
                code,
                input,
                output,
                done: false,
                routine_set: AtomicBool::new(false),
            },
            pending,
        )
    }

    pub(crate) fn new_file_op(file: Arc<FileObject>, major: MajorFunction) -> (Irp, PendingIo) {
        let shared = IrpShared::new();
        let pending = PendingIo {
            shared: shared.clone(),
        };
        let irp = Irp {
            shared,
            major,
            file,
            issued_at: irql::current(),
            offset: 0,
            code: 0,
            input: Vec::new(),
            output: Vec::new(),
            done: false,
            routine_set: AtomicBool::new(false),
        };
        (irp, pending)
    }

    /// A process-unique id, for tracing.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The request kind.
    pub fn major(&self) -> MajorFunction {
        self.major
    }

    /// The file object (handle) the request was sent on.
    pub fn file(&self) -> &Arc<FileObject> {
        &self.file
    }

    /// The IRQL the client issued the request at.
    pub fn issued_at(&self) -> Irql {
        self.issued_at
    }

    /// Byte offset (reads and writes).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The transfer length: bytes to read, or bytes to write.
    pub fn length(&self) -> usize {
        match self.major {
            MajorFunction::Read => self.output.len(),
            MajorFunction::Write => self.input.len(),
            _ => 0,
        }
    }

    /// The control code (control requests).
    pub fn ioctl_code(&self) -> u32 {
        self.code
    }

    /// The input buffer: the data of a write, or the input of a control request.
    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// The output buffer's length.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// The output buffer: where a read or a control request puts its result.
    pub fn output(&mut self) -> &mut [u8] {
        &mut self.output
    }

    /// Whether the client cancelled the request. Equivalent to: `Irp->Cancel`.
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// Installs `routine` to run if the request is cancelled. If it is already cancelled, the
    /// routine is handed back (`Err`) and the caller must complete the request itself.
    /// Equivalent to: `IoSetCancelRoutine` plus the `Irp->Cancel` re-check.
    pub fn set_cancel_routine(&self, routine: CancelRoutine) -> Result<(), CancelRoutine> {
        let mut r = self.shared.cancel_routine.lock();
        if self.shared.cancelled.load(Ordering::Acquire) {
            return Err(routine);
        }
        *r = Some(routine);
        self.routine_set.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Removes the cancel routine. Returns `true` if it was still installed (so it will not run),
    /// `false` if none was installed or the cancel path has taken it (it runs, or ran).
    /// Equivalent to: `IoSetCancelRoutine(Irp, NULL)`.
    pub fn clear_cancel_routine(&self) -> bool {
        self.shared.cancel_routine.lock().take().is_some()
    }

    /// A handle that can cancel this request later (what a client holds).
    pub fn canceller(&self) -> IrpCanceller {
        IrpCanceller {
            shared: self.shared.clone(),
        }
    }

    /// Completes the request with `status` and `information` (bytes transferred). Consumes it.
    /// Equivalent to: `IoCompleteRequest`.
    ///
    /// For a successful read or control request, `information` larger than the output buffer is
    /// a verifier violation ([`rules::INFORMATION_LENGTH_MISMATCH`]) and is clamped.
    pub fn complete(mut self, status: NtStatus, information: usize) {
        self.finish(status, information);
    }

    fn finish(&mut self, status: NtStatus, mut information: usize) {
        self.done = true;
        let limit = match self.major {
            MajorFunction::Read
            | MajorFunction::DeviceControl
            | MajorFunction::InternalDeviceControl => Some(self.output.len()),
            MajorFunction::Write => Some(self.input.len()),
            _ => None,
        };
        if let Some(limit) = limit
            && information > limit
            && status.is_success()
        {
            verifier::report(
                &rules::INFORMATION_LENGTH_MISMATCH,
                format_args!(
                    "IRP {} completed with information {information} > buffer {limit}",
                    self.id()
                ),
            );
            information = limit;
        }
        let data = match self.major {
            MajorFunction::Read
            | MajorFunction::DeviceControl
            | MajorFunction::InternalDeviceControl => {
                let mut out = std::mem::take(&mut self.output);
                out.truncate(information);
                out
            }
            _ => Vec::new(),
        };
        if self.routine_set.load(Ordering::Relaxed) {
            self.shared.cancel_routine.lock().take();
        }
        self.shared.finish(IoCompletion {
            status,
            information,
            data,
        });
    }
}

impl Drop for Irp {
    fn drop(&mut self) {
        if !self.done {
            let id = self.id();
            let major = self.major;
            self.finish(NtStatus::CANCELLED, 0);
            verifier::report(
                &rules::IRP_NOT_COMPLETED,
                format_args!("IRP {id} ({major:?}) dropped without completion"),
            );
        }
    }
}

impl fmt::Debug for Irp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Irp")
            .field("id", &self.id())
            .field("major", &self.major)
            .field("offset", &self.offset)
            .field("length", &self.length())
            .finish_non_exhaustive()
    }
}

/// Cancels a request it was made for. Equivalent to: `IoCancelIrp`.
#[derive(Clone)]
pub struct IrpCanceller {
    shared: Arc<IrpShared>,
}

impl IrpCanceller {
    /// Marks the request cancelled and runs its cancel routine, if one is installed, on this
    /// thread. Does nothing once the request is complete.
    pub fn cancel(&self) {
        self.shared.cancel();
    }
}

impl fmt::Debug for IrpCanceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IrpCanceller")
            .field("irp", &self.shared.id)
            .finish()
    }
}

/// The client's side of an outstanding request.
///
/// Wait for it ([`PendingIo::wait`], PASSIVE_LEVEL only), poll it, `.await` it, or cancel it.
pub struct PendingIo {
    shared: Arc<IrpShared>,
}

impl PendingIo {
    /// A request that completed with `status` before reaching any device (a closed handle, a
    /// deleted device).
    pub(crate) fn ready(status: NtStatus) -> PendingIo {
        let shared = IrpShared::new();
        shared.finish(IoCompletion {
            status,
            information: 0,
            data: Vec::new(),
        });
        PendingIo { shared }
    }

    /// The request's id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Whether the request has completed.
    pub fn is_complete(&self) -> bool {
        self.shared.completed.load(Ordering::Acquire)
    }

    /// Blocks until the request completes and returns how it finished.
    /// Waiting above PASSIVE_LEVEL is a verifier violation.
    pub fn wait(self) -> IoCompletion {
        irql::check_at_most(
            Irql::Passive,
            &rules::BLOCKING_WAIT_ABOVE_PASSIVE,
            "PendingIo::wait",
        );
        let mut slot = self.shared.slot.lock();
        loop {
            if let Some(c) = slot.result.take() {
                return c;
            }
            self.shared.cv.wait(&mut slot);
        }
    }

    /// Waits up to `timeout`; returns the completion, or the still-pending request.
    pub fn wait_timeout(self, timeout: Duration) -> Result<IoCompletion, PendingIo> {
        irql::check_at_most(
            Irql::Passive,
            &rules::BLOCKING_WAIT_ABOVE_PASSIVE,
            "PendingIo::wait_timeout",
        );
        // A timeout too long to be a deadline (`Duration::MAX`) means "no timeout".
        let deadline = std::time::Instant::now().checked_add(timeout);
        {
            let mut slot = self.shared.slot.lock();
            loop {
                if let Some(c) = slot.result.take() {
                    return Ok(c);
                }
                match deadline {
                    Some(deadline) => {
                        if self.shared.cv.wait_until(&mut slot, deadline).timed_out() {
                            break;
                        }
                    }
                    None => self.shared.cv.wait(&mut slot),
                }
            }
        }
        Err(self)
    }

    /// Cancels the request (see [`IrpCanceller::cancel`]).
    pub fn cancel(&self) {
        self.shared.cancel();
    }

    /// A cancel handle that can be sent to another thread.
    pub fn canceller(&self) -> IrpCanceller {
        IrpCanceller {
            shared: self.shared.clone(),
        }
    }
}

impl Future for PendingIo {
    type Output = IoCompletion;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoCompletion> {
        let mut slot = self.shared.slot.lock();
        match slot.result.take() {
            Some(c) => Poll::Ready(c),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl fmt::Debug for PendingIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingIo")
            .field("id", &self.id())
            .field("complete", &self.is_complete())
            .finish()
    }
}
