//! The I/O manager: opening devices, requests and their completion, cancellation, IRQL of
//! delivery, verifier checks on completion, and `PendingIo` as a future.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use nt::io::{IoManager, IoOp, Irp, IrpHandler, MajorFunction};
use nt::irql::{self, Irql};
use nt::sync::SpinLock;
use nt::verifier::{self, rules};
use nt::{Dpc, Kernel, NtStatus};

use common::verifier_record;

// ---------------------------------------------------------------------------------------------
// Test devices

/// Control code: the output receives the buffer's size as a little-endian `u64`.
const IOCTL_GET_SIZE: u32 = 0x8000_2000;
/// Control code: the output receives the input reversed.
const IOCTL_REVERSE: u32 = 0x8000_2004;

/// An in-memory byte buffer: reads and writes at offsets, two control codes, and a log of the
/// file-object requests it saw.
struct MemDevice {
    data: SpinLock<Vec<u8>>,
    log: SpinLock<Vec<MajorFunction>>,
    create_status: NtStatus,
}

impl MemDevice {
    fn new() -> Arc<MemDevice> {
        Self::with_create_status(NtStatus::SUCCESS)
    }

    fn with_create_status(create_status: NtStatus) -> Arc<MemDevice> {
        Arc::new(MemDevice {
            data: SpinLock::named("mem data", Vec::new()),
            log: SpinLock::named("mem log", Vec::new()),
            create_status,
        })
    }

    fn log(&self) -> Vec<MajorFunction> {
        self.log.lock().clone()
    }
}

impl IrpHandler for MemDevice {
    fn dispatch(&self, mut irp: Irp) {
        self.log.lock().push(irp.major());
        match irp.major() {
            MajorFunction::Create => irp.complete(self.create_status, 0),
            MajorFunction::Cleanup | MajorFunction::Close | MajorFunction::FlushBuffers => {
                irp.complete(NtStatus::SUCCESS, 0)
            }
            MajorFunction::Read => {
                let offset = irp.offset() as usize;
                let n = {
                    let data = self.data.lock();
                    if offset > data.len() {
                        drop(data);
                        return irp.complete(NtStatus::END_OF_FILE, 0);
                    }
                    let n = irp.length().min(data.len() - offset);
                    irp.output()[..n].copy_from_slice(&data[offset..offset + n]);
                    n
                };
                irp.complete(NtStatus::SUCCESS, n);
            }
            MajorFunction::Write => {
                let offset = irp.offset() as usize;
                let n = irp.input().len();
                {
                    let mut data = self.data.lock();
                    if data.len() < offset + n {
                        data.resize(offset + n, 0);
                    }
                    data[offset..offset + n].copy_from_slice(irp.input());
                }
                irp.complete(NtStatus::SUCCESS, n);
            }
            MajorFunction::DeviceControl => match irp.ioctl_code() {
                IOCTL_GET_SIZE => {
                    if irp.output().len() < 8 {
                        return irp.complete(NtStatus::BUFFER_TOO_SMALL, 0);
                    }
                    let size = self.data.lock().len() as u64;
                    irp.output()[..8].copy_from_slice(&size.to_le_bytes());
                    irp.complete(NtStatus::SUCCESS, 8);
                }
                IOCTL_REVERSE => {
                    let reversed: Vec<u8> = irp.input().iter().rev().copied().collect();
                    if irp.output().len() < reversed.len() {
                        return irp.complete(NtStatus::BUFFER_TOO_SMALL, 0);
                    }
                    irp.output()[..reversed.len()].copy_from_slice(&reversed);
                    irp.complete(NtStatus::SUCCESS, reversed.len());
                }
                _ => irp.complete(NtStatus::INVALID_DEVICE_REQUEST, 0),
            },
            MajorFunction::InternalDeviceControl => irp.complete(NtStatus::NOT_SUPPORTED, 0),
        }
    }
}

/// A device that hands every read, write and control request to a closure; file-object
/// requests succeed.
struct FnDevice<F>(F);

impl<F: Fn(Irp) + Send + Sync> IrpHandler for FnDevice<F> {
    fn dispatch(&self, irp: Irp) {
        match irp.major() {
            MajorFunction::Create | MajorFunction::Cleanup | MajorFunction::Close => {
                irp.complete(NtStatus::SUCCESS, 0)
            }
            _ => (self.0)(irp),
        }
    }
}

fn fn_device(f: impl Fn(Irp) + Send + Sync + 'static) -> Arc<dyn IrpHandler> {
    Arc::new(FnDevice(f))
}

type Hook = Arc<dyn Fn() + Send + Sync>;

/// Keeps one request pending at a time, cancellable: the cancel routine takes it out of the slot
/// and completes it with `STATUS_CANCELLED`. `hook` runs at the start of the cancel routine.
struct ParkingDevice {
    slot: Arc<Mutex<Option<Irp>>>,
    hook: Option<Hook>,
}

impl ParkingDevice {
    fn new(hook: Option<Hook>) -> Arc<ParkingDevice> {
        Arc::new(ParkingDevice {
            slot: Arc::new(Mutex::new(None)),
            hook,
        })
    }

    fn is_holding(&self) -> bool {
        self.slot.lock().unwrap().is_some()
    }

    /// The race-free completion: complete only if the cancel routine could be removed (so it
    /// will never run); otherwise the cancel path owns the request. Returns whether it completed.
    fn complete_parked(&self, status: NtStatus, information: usize) -> bool {
        let mut slot = self.slot.lock().unwrap();
        match slot.as_ref() {
            Some(irp) if irp.clear_cancel_routine() => {
                let irp = slot.take().expect("checked above");
                drop(slot);
                irp.complete(status, information);
                true
            }
            _ => false,
        }
    }
}

impl IrpHandler for ParkingDevice {
    fn dispatch(&self, irp: Irp) {
        if matches!(
            irp.major(),
            MajorFunction::Create | MajorFunction::Cleanup | MajorFunction::Close
        ) {
            return irp.complete(NtStatus::SUCCESS, 0);
        }
        let mut slot = self.slot.lock().unwrap();
        assert!(slot.is_none(), "ParkingDevice holds one request at a time");
        let (s, hook) = (self.slot.clone(), self.hook.clone());
        let cancel = Box::new(move || {
            if let Some(hook) = hook {
                hook();
            }
            let taken = s.lock().unwrap().take();
            if let Some(irp) = taken {
                irp.complete(NtStatus::CANCELLED, 0);
            }
        });
        match irp.set_cancel_routine(cancel) {
            Ok(()) => *slot = Some(irp),
            Err(_) => {
                drop(slot);
                irp.complete(NtStatus::CANCELLED, 0);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny executor for `PendingIo` as a future

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Opening and closing

#[test]
fn open_of_an_unknown_name_fails_with_object_name_not_found() {
    let io = IoManager::new();
    io.create_device("mem", MemDevice::new()).unwrap();
    assert_eq!(
        io.open("nope").unwrap_err(),
        NtStatus::OBJECT_NAME_NOT_FOUND
    );
}

#[test]
fn creating_a_device_under_a_taken_name_fails_with_object_name_collision() {
    let io = IoManager::new();
    io.create_device("mem", MemDevice::new()).unwrap();
    assert_eq!(
        io.create_device("mem", MemDevice::new()).unwrap_err(),
        NtStatus::OBJECT_NAME_COLLISION
    );
    assert_eq!(io.device_names(), vec!["mem".to_string()]);
}

#[test]
fn a_failing_create_makes_open_fail_with_its_status() {
    let io = IoManager::new();
    let dev = MemDevice::with_create_status(NtStatus::DEVICE_BUSY);
    io.create_device("busy", dev.clone()).unwrap();
    assert_eq!(io.open("busy").unwrap_err(), NtStatus::DEVICE_BUSY);
    // No handle came into being, so no cleanup or close followed.
    assert_eq!(dev.log(), vec![MajorFunction::Create]);
}

#[test]
fn close_sends_cleanup_then_close() {
    let io = IoManager::new();
    let dev = MemDevice::new();
    io.create_device("mem", dev.clone()).unwrap();
    let h = io.open("mem").unwrap();
    assert_eq!(h.flush().status, NtStatus::SUCCESS);
    assert_eq!(h.close(), NtStatus::SUCCESS);
    assert_eq!(
        dev.log(),
        vec![
            MajorFunction::Create,
            MajorFunction::FlushBuffers,
            MajorFunction::Cleanup,
            MajorFunction::Close
        ]
    );
}

#[test]
fn dropping_a_handle_sends_cleanup_then_close() {
    let io = IoManager::new();
    let dev = MemDevice::new();
    io.create_device("mem", dev.clone()).unwrap();
    drop(io.open("mem").unwrap());
    assert_eq!(
        dev.log(),
        vec![
            MajorFunction::Create,
            MajorFunction::Cleanup,
            MajorFunction::Close
        ]
    );
}

#[test]
fn requests_to_a_deleted_device_fail_with_no_such_device() {
    let io = IoManager::new();
    let dev = MemDevice::new();
    io.create_device("mem", dev.clone()).unwrap();
    let h = io.open("mem").unwrap();
    io.delete_device("mem").unwrap();
    assert_eq!(h.read(0, 1).status, NtStatus::NO_SUCH_DEVICE);
    assert_eq!(io.open("mem").unwrap_err(), NtStatus::OBJECT_NAME_NOT_FOUND);
    assert_eq!(
        io.delete_device("mem").unwrap_err(),
        NtStatus::OBJECT_NAME_NOT_FOUND
    );
    assert_eq!(dev.log(), vec![MajorFunction::Create]);
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn read_write_and_ioctl_round_trip_with_status_and_information() {
    verifier_record();
    let io = IoManager::new();
    io.create_device("mem", MemDevice::new()).unwrap();
    let h = io.open("mem").unwrap();

    let w = h.write(0, b"hello".to_vec());
    assert_eq!((w.status, w.information), (NtStatus::SUCCESS, 5));
    assert!(w.data.is_empty());
    let w = h.write(5, b", world".to_vec());
    assert_eq!((w.status, w.information), (NtStatus::SUCCESS, 7));

    let r = h.read(0, 12);
    assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 12));
    assert_eq!(r.data, b"hello, world");
    // A short read: information and data are what was available.
    let r = h.read(7, 100);
    assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 5));
    assert_eq!(r.data, b"world");
    let r = h.read(13, 1);
    assert_eq!((r.status, r.information), (NtStatus::END_OF_FILE, 0));
    assert!(r.data.is_empty());

    let c = h.device_control(IOCTL_GET_SIZE, Vec::new(), 8);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 8));
    assert_eq!(c.data, 12u64.to_le_bytes());
    let c = h.device_control(IOCTL_GET_SIZE, Vec::new(), 4);
    assert_eq!((c.status, c.information), (NtStatus::BUFFER_TOO_SMALL, 0));
    let c = h.device_control(IOCTL_REVERSE, b"abc".to_vec(), 16);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 3));
    assert_eq!(c.data, b"cba");
    let c = h.device_control(0xDEAD, Vec::new(), 0);
    assert_eq!(c.status, NtStatus::INVALID_DEVICE_REQUEST);
    let c = h.internal_device_control(IOCTL_REVERSE, Vec::new(), 0);
    assert_eq!(c.status, NtStatus::NOT_SUPPORTED);

    assert_eq!(h.close(), NtStatus::SUCCESS);
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn handles_may_be_shared_by_threads() {
    let io = IoManager::new();
    io.create_device("mem", MemDevice::new()).unwrap();
    let h = Arc::new(io.open("mem").unwrap());
    let threads: Vec<_> = (0..4u8)
        .map(|i| {
            let h = h.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let w = h.write(u64::from(i), vec![i]);
                    assert_eq!(w.status, NtStatus::SUCCESS);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(h.read(0, 4).data, vec![0, 1, 2, 3]);
}

#[test]
fn request_issued_at_dispatch_arrives_at_dispatch() {
    verifier_record();
    let io = IoManager::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    io.create_device(
        "probe",
        fn_device(move |irp| {
            s.lock().unwrap().push((irql::current(), irp.issued_at()));
            irp.complete(NtStatus::SUCCESS, 0);
        }),
    )
    .unwrap();
    let h = io.open("probe").unwrap();
    let at_dispatch = h.submit_at(IoOp::Flush, Irql::Dispatch);
    // The caller is lowered again before it waits.
    assert_eq!(irql::current(), Irql::Passive);
    assert_eq!(at_dispatch.wait().status, NtStatus::SUCCESS);
    let at_passive = h.submit(IoOp::Flush);
    assert_eq!(at_passive.wait().status, NtStatus::SUCCESS);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (Irql::Dispatch, Irql::Dispatch),
            (Irql::Passive, Irql::Passive)
        ]
    );
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}

#[test]
fn submit_at_a_level_below_the_callers_uses_the_callers_level() {
    let io = IoManager::new();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    io.create_device(
        "probe",
        fn_device(move |irp| {
            *s.lock().unwrap() = Some(irp.issued_at());
            irp.complete(NtStatus::SUCCESS, 0);
        }),
    )
    .unwrap();
    let h = io.open("probe").unwrap();
    let p = {
        let _apc = irql::raise(Irql::Apc);
        h.submit_at(IoOp::Flush, Irql::Passive)
    };
    assert_eq!(p.wait().status, NtStatus::SUCCESS);
    assert_eq!(*seen.lock().unwrap(), Some(Irql::Apc));
}

// ---------------------------------------------------------------------------------------------
// Cancellation

#[test]
fn cancel_of_an_outstanding_request_completes_it_with_status_cancelled() {
    let io = IoManager::new();
    let dev = ParkingDevice::new(None);
    io.create_device("park", dev.clone()).unwrap();
    let h = io.open("park").unwrap();
    let p = h.submit(IoOp::Read {
        offset: 0,
        length: 4,
    });
    assert!(!p.is_complete());
    assert!(dev.is_holding());
    p.cancel();
    assert!(p.is_complete());
    assert!(!dev.is_holding(), "the cancel routine took the request");
    let c = p.wait();
    assert_eq!((c.status, c.information), (NtStatus::CANCELLED, 0));
    assert!(c.data.is_empty());
}

#[test]
fn cancel_from_another_thread_through_a_canceller_completes_the_request() {
    let io = IoManager::new();
    let dev = ParkingDevice::new(None);
    io.create_device("park", dev.clone()).unwrap();
    let h = io.open("park").unwrap();
    let p = h.submit(IoOp::Flush);
    let canceller = p.canceller();
    std::thread::spawn(move || canceller.cancel())
        .join()
        .unwrap();
    assert_eq!(p.wait().status, NtStatus::CANCELLED);
}

#[test]
fn completer_that_clears_the_cancel_routine_completes_and_a_later_cancel_does_nothing() {
    let io = IoManager::new();
    let dev = ParkingDevice::new(None);
    io.create_device("park", dev.clone()).unwrap();
    let h = io.open("park").unwrap();
    let p = h.submit(IoOp::Read {
        offset: 0,
        length: 4,
    });
    assert!(dev.complete_parked(NtStatus::SUCCESS, 4));
    p.cancel(); // already complete: no effect
    let c = p.wait();
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 4));
    assert_eq!(c.data, vec![0; 4]);
}

#[test]
fn completer_that_loses_the_race_leaves_the_request_to_the_cancel_routine() {
    let io = IoManager::new();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    // The cancel routine announces itself, then waits until the completer has tried.
    let hook: Hook = Arc::new(move || {
        started_tx.send(()).unwrap();
        go_rx.lock().unwrap().recv().unwrap();
    });
    let dev = ParkingDevice::new(Some(hook));
    io.create_device("park", dev.clone()).unwrap();
    let h = io.open("park").unwrap();
    let p = h.submit(IoOp::Read {
        offset: 0,
        length: 4,
    });
    let canceller = p.canceller();
    let cancelling = std::thread::spawn(move || canceller.cancel());
    started_rx.recv().unwrap();
    // The cancel path has taken the routine: the completer must not complete.
    assert!(!dev.complete_parked(NtStatus::SUCCESS, 4));
    assert!(dev.is_holding());
    assert!(!p.is_complete());
    go_tx.send(()).unwrap();
    cancelling.join().unwrap();
    assert_eq!(p.wait().status, NtStatus::CANCELLED);
    assert!(!dev.is_holding());
}

#[test]
fn setting_a_cancel_routine_on_a_cancelled_request_hands_it_back() {
    let io = IoManager::new();
    let outcome = Arc::new(Mutex::new(None));
    let o = outcome.clone();
    io.create_device(
        "cancel-first",
        fn_device(move |irp| {
            irp.canceller().cancel(); // as if the client cancelled before the device got here
            let handed_back = irp.set_cancel_routine(Box::new(|| {})).is_err();
            *o.lock().unwrap() = Some((irp.is_cancelled(), handed_back));
            irp.complete(NtStatus::CANCELLED, 0);
        }),
    )
    .unwrap();
    let h = io.open("cancel-first").unwrap();
    assert_eq!(h.flush().status, NtStatus::CANCELLED);
    assert_eq!(*outcome.lock().unwrap(), Some((true, true)));
}

#[test]
fn completing_a_request_removes_its_cancel_routine() {
    let io = IoManager::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    io.create_device(
        "complete",
        fn_device(move |irp| {
            let r = r.clone();
            irp.set_cancel_routine(Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap_or_else(|_| panic!("not cancelled"));
            irp.complete(NtStatus::SUCCESS, 0);
        }),
    )
    .unwrap();
    let h = io.open("complete").unwrap();
    let p = h.submit(IoOp::Flush);
    // The routine (and what it captured) is gone as soon as the request completed, even
    // though the client still holds the request: only `ran` and the device's copy remain.
    assert_eq!(
        Arc::strong_count(&ran),
        2,
        "completion dropped the cancel routine"
    );
    p.cancel();
    assert_eq!(p.wait().status, NtStatus::SUCCESS);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// Verifier checks on completion

#[test]
fn information_larger_than_the_buffer_is_reported_and_clamped() {
    verifier_record();
    let io = IoManager::new();
    io.create_device(
        "liar",
        fn_device(|irp| {
            let n = irp.length();
            irp.complete(NtStatus::SUCCESS, n + 10);
        }),
    )
    .unwrap();
    let h = io.open("liar").unwrap();
    let c = h.read(0, 4);
    assert_eq!(verifier::count(&rules::INFORMATION_LENGTH_MISMATCH), 1);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 4));
    assert_eq!(c.data.len(), 4);
    let c = h.write(0, vec![1, 2, 3]);
    assert_eq!(verifier::count(&rules::INFORMATION_LENGTH_MISMATCH), 2);
    assert_eq!(c.information, 3);
}

#[test]
fn dropping_an_irp_uncompleted_reports_irp_not_completed_and_the_client_sees_cancelled() {
    verifier_record();
    let io = IoManager::new();
    io.create_device("leaky", fn_device(drop)).unwrap();
    let h = io.open("leaky").unwrap();
    let c = h.read(0, 8);
    assert_eq!(verifier::count(&rules::IRP_NOT_COMPLETED), 1);
    assert_eq!((c.status, c.information), (NtStatus::CANCELLED, 0));
    assert!(c.data.is_empty());
}

#[test]
fn waiting_for_a_request_at_dispatch_reports_blocking_wait_above_passive() {
    verifier_record();
    let io = IoManager::new();
    io.create_device("mem", MemDevice::new()).unwrap();
    let h = io.open("mem").unwrap();
    let p = h.submit(IoOp::Flush);
    let dispatch = irql::raise(Irql::Dispatch);
    assert_eq!(p.wait().status, NtStatus::SUCCESS);
    drop(dispatch);
    assert_eq!(verifier::count(&rules::BLOCKING_WAIT_ABOVE_PASSIVE), 1);
}

// ---------------------------------------------------------------------------------------------
// The client side: waiting with a timeout, and PendingIo as a future

#[test]
fn wait_timeout_hands_back_a_request_that_is_still_pending() {
    let io = IoManager::new();
    let dev = ParkingDevice::new(None);
    io.create_device("park", dev.clone()).unwrap();
    let h = io.open("park").unwrap();
    let p = h.submit(IoOp::Flush);
    let p = p
        .wait_timeout(Duration::from_millis(1))
        .expect_err("still pending");
    assert!(dev.complete_parked(NtStatus::SUCCESS, 0));
    let c = p.wait_timeout(Duration::from_secs(60)).expect("completed");
    assert_eq!(c.status, NtStatus::SUCCESS);
}

#[test]
fn wait_timeout_with_an_unbounded_timeout_waits_for_completion() {
    let io = IoManager::new();
    io.create_device("mem", MemDevice::new()).unwrap();
    let h = io.open("mem").unwrap();
    let c = h
        .submit(IoOp::Flush)
        .wait_timeout(Duration::MAX)
        .expect("completed");
    assert_eq!(c.status, NtStatus::SUCCESS);
}

#[test]
fn pending_io_is_a_future_that_wakes_its_waker_on_completion() {
    let io = IoManager::new();
    let dev = ParkingDevice::new(None);
    io.create_device("park", dev.clone()).unwrap();
    let h = io.open("park").unwrap();
    let mut p = h.submit(IoOp::Read {
        offset: 0,
        length: 2,
    });
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(std::pin::Pin::new(&mut p).poll(&mut cx).is_pending());
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    assert!(dev.complete_parked(NtStatus::SUCCESS, 2));
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "completion wakes the waker"
    );
    match std::pin::Pin::new(&mut p).poll(&mut cx) {
        Poll::Ready(c) => assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 2)),
        Poll::Pending => panic!("completed request must be ready"),
    }
}

#[test]
fn pending_io_completed_by_a_dpc_can_be_awaited() {
    let kernel = Kernel::builder().processors(1).workers(1).build();
    let parked: Arc<SpinLock<Vec<Irp>>> = Arc::new(SpinLock::named("parked", Vec::new()));
    let q = parked.clone();
    let dpc = Dpc::new(&kernel, "complete", move || {
        let irps = std::mem::take(&mut *q.lock());
        for mut irp in irps {
            assert_eq!(irql::current(), Irql::Dispatch);
            let n = irp.length();
            irp.output().fill(0xAB);
            irp.complete(NtStatus::SUCCESS, n);
        }
    });
    let q = parked.clone();
    kernel
        .io()
        .create_device(
            "deferred",
            fn_device(move |irp| {
                q.lock().push(irp);
                dpc.insert();
            }),
        )
        .unwrap();
    let h = kernel.io().open("deferred").unwrap();
    let c = block_on(h.submit(IoOp::Read {
        offset: 0,
        length: 3,
    }));
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 3));
    assert_eq!(c.data, vec![0xAB; 3]);
    // And several at once, awaited in turn.
    let pending: Vec<_> = (0..8)
        .map(|i| {
            h.submit(IoOp::Read {
                offset: 0,
                length: i,
            })
        })
        .collect();
    let done = block_on(async {
        let mut v = Vec::new();
        for p in pending {
            v.push(p.await.information);
        }
        v
    });
    assert_eq!(done, (0..8).collect::<Vec<_>>());
}
