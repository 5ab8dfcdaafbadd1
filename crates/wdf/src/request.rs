//! Requests: owned values the driver must complete, forward or requeue.
//!
//! A [`Request`] is moved into the callback that receives it. [`Request::complete`],
//! [`Request::forward`] and [`Request::requeue`] consume it, so completing twice does not
//! compile. A request the driver drops is caught: the verifier reports `REQUEST_NOT_COMPLETED`
//! and the framework completes it with `STATUS_CANCELLED` (or `STATUS_INTERNAL_ERROR` when the
//! drop happens while a callback panics), so the client is never left waiting.
//!
//! Equivalent to: `WDFREQUEST` / `FxRequest`, `WdfRequestComplete*`,
//! `WdfRequestForwardToIoQueue`, `WdfRequestRequeue`, `WdfRequestRetrieve*Buffer`.

use std::fmt;
use std::sync::Arc;

use nt::io::{FileObject, Irp, MajorFunction};
use nt::{Irql, NtStatus};

use crate::queue::Queue;
use crate::verifier::{self, rules};

/// The kind of a request. Equivalent to: `WDF_REQUEST_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// `WdfRequestTypeCreate`.
    Create,
    /// `WdfRequestTypeCleanup`.
    Cleanup,
    /// `WdfRequestTypeClose`.
    Close,
    /// `WdfRequestTypeRead`.
    Read,
    /// `WdfRequestTypeWrite`.
    Write,
    /// `WdfRequestTypeDeviceControl`.
    DeviceControl,
    /// `WdfRequestTypeDeviceControlInternal`.
    InternalDeviceControl,
    /// `WdfRequestTypeFlushBuffers`.
    FlushBuffers,
}

impl RequestType {
    pub(crate) fn of(major: MajorFunction) -> RequestType {
        match major {
            MajorFunction::Create => RequestType::Create,
            MajorFunction::Cleanup => RequestType::Cleanup,
            MajorFunction::Close => RequestType::Close,
            MajorFunction::Read => RequestType::Read,
            MajorFunction::Write => RequestType::Write,
            MajorFunction::DeviceControl => RequestType::DeviceControl,
            MajorFunction::InternalDeviceControl => RequestType::InternalDeviceControl,
            MajorFunction::FlushBuffers => RequestType::FlushBuffers,
        }
    }

    pub(crate) const COUNT: usize = 8;

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A request's parameters. Equivalent to: `WDF_REQUEST_PARAMETERS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestParameters {
    /// The request kind.
    pub kind: RequestType,
    /// Byte offset (reads and writes).
    pub offset: u64,
    /// Transfer length (reads and writes).
    pub length: usize,
    /// Control code (control requests).
    pub ioctl_code: u32,
    /// Input buffer length (writes, control requests).
    pub input_length: usize,
    /// Output buffer length (reads, control requests).
    pub output_length: usize,
}

/// A request operation that failed and gave the request back to the driver, which still owns it.
pub struct RequestError {
    /// Why it failed.
    pub status: NtStatus,
    /// The request, still driver-owned: complete it or try again.
    pub request: Request,
}

impl fmt::Debug for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestError")
            .field("status", &self.status)
            .field("request", &self.request.id())
            .finish()
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}: {}", self.request.id(), self.status)
    }
}

impl std::error::Error for RequestError {}

/// How a request reaches its queue: through the per-handle route table it arrived by (no shared
/// reference count is touched per request), or an owned reference once it moves (forward).
pub(crate) enum QueueRef {
    /// Entry `index` of a handle's route table (always `Some` for requests built from it).
    Routed(Arc<crate::device::RouteTable>, usize),
    /// A queue held directly.
    Owned(Arc<Queue>),
}

impl QueueRef {
    #[inline]
    pub(crate) fn get(&self) -> &Arc<Queue> {
        match self {
            QueueRef::Routed(t, i) => t.queue(*i).expect("a routed request's table entry is set"),
            QueueRef::Owned(q) => q,
        }
    }
}

/// An I/O request delivered by a queue.
pub struct Request {
    irp: Option<Irp>,
    queue: QueueRef,
    kind: RequestType,
    pub(crate) driver_owned: bool,
    pub(crate) presented: bool,
    /// While driver-owned: the fast-path shard it is counted in (`None`: the locked counter).
    pub(crate) shard: Option<u8>,
}

impl Request {
    pub(crate) fn new(irp: Irp, queue: QueueRef) -> Request {
        let kind = RequestType::of(irp.major());
        Request {
            irp: Some(irp),
            queue,
            kind,
            driver_owned: false,
            presented: false,
            shard: None,
        }
    }

    #[inline]
    pub(crate) fn irp(&self) -> &Irp {
        self.irp
            .as_ref()
            .expect("a live request always holds its IRP")
    }

    #[inline]
    fn irp_mut(&mut self) -> &mut Irp {
        self.irp
            .as_mut()
            .expect("a live request always holds its IRP")
    }

    /// A process-unique id, for tracing.
    pub fn id(&self) -> u64 {
        self.irp().id()
    }

    /// The request kind. Equivalent to: `WDF_REQUEST_PARAMETERS.Type`.
    pub fn kind(&self) -> RequestType {
        self.kind
    }

    /// The request's parameters. Equivalent to: `WdfRequestGetParameters`.
    pub fn parameters(&self) -> RequestParameters {
        let irp = self.irp();
        let (input_length, output_length) = match self.kind {
            RequestType::Read => (0, irp.length()),
            RequestType::Write => (irp.length(), 0),
            _ => (irp.input().len(), irp.output_len()),
        };
        RequestParameters {
            kind: self.kind,
            offset: irp.offset(),
            length: irp.length(),
            ioctl_code: irp.ioctl_code(),
            input_length,
            output_length,
        }
    }

    /// The queue that owns the request now.
    pub fn queue(&self) -> &Arc<Queue> {
        self.queue.get()
    }

    /// The file object (handle) the request was sent on. Equivalent to: `WdfRequestGetFileObject`.
    pub fn file_object(&self) -> &Arc<FileObject> {
        self.irp().file()
    }

    /// The IRQL the sender issued the request at.
    pub fn issued_at(&self) -> Irql {
        self.irp().issued_at()
    }

    /// Whether the sender cancelled the request (meaningful for driver-owned requests that are
    /// not cancelable). Equivalent to: `WdfRequestIsCanceled`.
    pub fn is_canceled(&self) -> bool {
        self.irp().is_cancelled()
    }

    /// The input buffer, at least `min_len` bytes long. Reads have none
    /// (`STATUS_INVALID_DEVICE_REQUEST`); an empty or short buffer is `STATUS_BUFFER_TOO_SMALL`.
    /// Equivalent to: `WdfRequestRetrieveInputBuffer`.
    pub fn input_buffer(&self, min_len: usize) -> Result<&[u8], NtStatus> {
        if self.kind == RequestType::Read {
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        let b = self.irp().input();
        if b.is_empty() || b.len() < min_len {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        Ok(b)
    }

    /// The output buffer, at least `min_len` bytes long. Writes have none
    /// (`STATUS_INVALID_DEVICE_REQUEST`); an empty or short buffer is `STATUS_BUFFER_TOO_SMALL`.
    /// Equivalent to: `WdfRequestRetrieveOutputBuffer`.
    pub fn output_buffer(&mut self, min_len: usize) -> Result<&mut [u8], NtStatus> {
        if self.kind == RequestType::Write {
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
        let b = self.irp_mut().output();
        if b.is_empty() || b.len() < min_len {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        Ok(b)
    }

    /// Completes the request with `status` and no information. Equivalent to: `WdfRequestComplete`.
    #[inline]
    pub fn complete(self, status: NtStatus) {
        self.complete_with_information(status, 0);
    }

    /// Completes the request with `status` and `information` (bytes transferred).
    /// Equivalent to: `WdfRequestCompleteWithInformation`.
    #[inline]
    pub fn complete_with_information(mut self, status: NtStatus, information: usize) {
        self.finish(status, information);
    }

    /// Moves the request to another queue of the same device. On failure the request comes back
    /// in the error, still owned by the driver: `STATUS_INVALID_DEVICE_REQUEST` for the same queue
    /// or another device's queue, `STATUS_WDF_BUSY` if the destination is not accepting.
    /// Equivalent to: `WdfRequestForwardToIoQueue`.
    pub fn forward(self, destination: &Arc<Queue>) -> Result<(), RequestError> {
        Queue::forward(self, destination)
    }

    /// Puts the request back at the head of its (manual) queue. Other queue types:
    /// `STATUS_INVALID_DEVICE_REQUEST`. Equivalent to: `WdfRequestRequeue`.
    pub fn requeue(self) -> Result<(), RequestError> {
        Queue::requeue(self)
    }

    pub(crate) fn set_queue(&mut self, queue: Arc<Queue>) {
        self.queue = QueueRef::Owned(queue);
    }

    /// Completes the request on the framework's behalf (never presented, or being cancelled).
    pub(crate) fn complete_internal(mut self, status: NtStatus) {
        self.driver_owned = false;
        self.finish(status, 0);
    }

    fn finish(&mut self, status: NtStatus, information: usize) {
        let Some(irp) = self.irp.take() else { return };
        let status = translate_status(status);
        let limit = match self.kind {
            RequestType::Read | RequestType::DeviceControl | RequestType::InternalDeviceControl => {
                Some(irp.output_len())
            }
            RequestType::Write => Some(irp.length()),
            _ => None,
        };
        let mut information = information;
        if let Some(limit) = limit
            && status.is_success()
            && information > limit
        {
            verifier::report(
                &rules::INFORMATION_LENGTH_MISMATCH,
                format_args!(
                    "request {} completed with information {information} > buffer length {limit}",
                    irp.id()
                ),
            );
            information = limit;
        }
        let id = irp.id();
        irp.complete(status, information);
        if self.driver_owned {
            self.driver_owned = false;
            self.queue.get().request_completed(id, self.shard.take());
        }
    }
}

/// Rewrites WDF-private status codes at completion (spec §6.2).
pub(crate) fn translate_status(status: NtStatus) -> NtStatus {
    match status {
        NtStatus::WDF_PAUSED | NtStatus::WDF_BUSY => NtStatus::DEVICE_BUSY,
        NtStatus::WDF_INTERNAL_ERROR => NtStatus::INTERNAL_ERROR,
        NtStatus::WDF_TOO_FRAGMENTED | NtStatus::WDF_TOO_MANY_TRANSFERS => {
            NtStatus::INVALID_DEVICE_REQUEST
        }
        s if s.facility() == 0x20 && s.is_error() => NtStatus::INVALID_DEVICE_REQUEST,
        s => s,
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.irp.is_none() {
            return;
        }
        if !self.driver_owned {
            self.finish(NtStatus::CANCELLED, 0);
        } else if std::thread::panicking() {
            self.finish(NtStatus::INTERNAL_ERROR, 0);
        } else {
            let id = self.id();
            let queue = self.queue.get().name().to_owned();
            self.finish(NtStatus::CANCELLED, 0);
            verifier::report(
                &rules::REQUEST_NOT_COMPLETED,
                format_args!("request {id} from queue {queue} was dropped by the driver"),
            );
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.irp {
            Some(irp) => f
                .debug_struct("Request")
                .field("id", &irp.id())
                .field("kind", &self.kind)
                .field("queue", &self.queue.get().name())
                .finish(),
            None => f.write_str("Request(completed)"),
        }
    }
}
