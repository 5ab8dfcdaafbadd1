//! Every request is completed exactly once, under concurrent inline, DPC, worker and cancel-path
//! completion, with a separate thread cancelling requests while they are outstanding.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Weak};

use nt::io::{IoOp, Irp, IrpCanceller, IrpHandler, MajorFunction};
use nt::irql::{self, Irql};
use nt::sync::SpinLock;
use nt::verifier;
use nt::{Dpc, Kernel, NtStatus, WorkItem};

use common::verifier_record;

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 20_000;
const WINDOW: usize = 64;
const REQUESTS: usize = CLIENTS * PER_CLIENT;

/// How the device completes request `index` (its read offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// In the dispatch routine, on the client's thread.
    Inline,
    /// From a DPC, at DISPATCH_LEVEL.
    Dpc,
    /// From a work item, at PASSIVE_LEVEL.
    Worker,
    /// Never by the device: only the cancel routine completes it.
    UntilCancelled,
}

fn path_of(index: usize) -> Path {
    match index % 4 {
        0 => Path::Inline,
        1 => Path::Dpc,
        2 => Path::Worker,
        _ => Path::UntilCancelled,
    }
}

/// Completes each read with its index as 8 little-endian bytes, along the path `path_of` gives.
struct StressDevice {
    me: Weak<StressDevice>,
    parked: SpinLock<HashMap<u64, Irp>>,
    to_dpc: SpinLock<Vec<u64>>,
    to_worker: SpinLock<Vec<u64>>,
    dpc: Dpc,
    worker: WorkItem,
    /// How many times the device completed each request, by index.
    completions: Vec<AtomicU8>,
    succeeded: AtomicUsize,
    cancelled: AtomicUsize,
}

impl StressDevice {
    fn new(kernel: &Kernel) -> Arc<StressDevice> {
        Arc::new_cyclic(|me: &Weak<StressDevice>| {
            let (d, w) = (me.clone(), me.clone());
            StressDevice {
                me: me.clone(),
                parked: SpinLock::named("parked", HashMap::new()),
                to_dpc: SpinLock::named("to_dpc", Vec::new()),
                to_worker: SpinLock::named("to_worker", Vec::new()),
                dpc: Dpc::new(kernel, "stress dpc", move || {
                    assert_eq!(irql::current(), Irql::Dispatch);
                    if let Some(dev) = d.upgrade() {
                        dev.drain(&dev.to_dpc);
                    }
                }),
                worker: WorkItem::new(kernel, "stress worker", move || {
                    assert_eq!(irql::current(), Irql::Passive);
                    if let Some(dev) = w.upgrade() {
                        dev.drain(&dev.to_worker);
                    }
                }),
                completions: (0..REQUESTS).map(|_| AtomicU8::new(0)).collect(),
                succeeded: AtomicUsize::new(0),
                cancelled: AtomicUsize::new(0),
            }
        })
    }

    /// Completes `irp`; the tally is taken first, so it is complete once the client has seen
    /// every completion.
    fn finish(&self, mut irp: Irp, status: NtStatus) {
        let index = irp.offset() as usize;
        self.completions[index].fetch_add(1, Ordering::SeqCst);
        if status == NtStatus::SUCCESS {
            self.succeeded.fetch_add(1, Ordering::SeqCst);
            irp.output()[..8].copy_from_slice(&(index as u64).to_le_bytes());
            irp.complete(status, 8);
        } else {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
            irp.complete(status, 0);
        }
    }

    /// Completes the parked requests listed in `queue`, unless their cancel routine has already
    /// been taken by the cancel path (which then owns them).
    fn drain(&self, queue: &SpinLock<Vec<u64>>) {
        let ids = std::mem::take(&mut *queue.lock());
        for id in ids {
            let irp = {
                let mut parked = self.parked.lock();
                match parked.get(&id) {
                    Some(irp) if irp.clear_cancel_routine() => parked.remove(&id),
                    _ => None,
                }
            };
            if let Some(irp) = irp {
                self.finish(irp, NtStatus::SUCCESS);
            }
        }
    }

    /// The cancel routine's body.
    fn cancel_parked(&self, id: u64) {
        let irp = self.parked.lock().remove(&id);
        if let Some(irp) = irp {
            self.finish(irp, NtStatus::CANCELLED);
        }
    }
}

impl IrpHandler for StressDevice {
    fn dispatch(&self, irp: Irp) {
        if irp.major() != MajorFunction::Read {
            return irp.complete(NtStatus::SUCCESS, 0);
        }
        let path = path_of(irp.offset() as usize);
        if path == Path::Inline {
            return self.finish(irp, NtStatus::SUCCESS);
        }
        let id = irp.id();
        {
            let mut parked = self.parked.lock();
            let me = self.me.clone();
            let cancel = Box::new(move || {
                if let Some(dev) = me.upgrade() {
                    dev.cancel_parked(id);
                }
            });
            match irp.set_cancel_routine(cancel) {
                Ok(()) => {
                    parked.insert(id, irp);
                }
                Err(_) => {
                    drop(parked);
                    return self.finish(irp, NtStatus::CANCELLED);
                }
            }
        }
        match path {
            Path::Dpc => {
                self.to_dpc.lock().push(id);
                self.dpc.insert();
            }
            Path::Worker => {
                self.to_worker.lock().push(id);
                self.worker.enqueue();
            }
            Path::UntilCancelled | Path::Inline => {}
        }
    }
}

/// xorshift64: a deterministic choice of which requests to cancel.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Default)]
struct ClientTally {
    /// Completions seen per request id.
    seen: HashMap<u64, u32>,
    succeeded: usize,
    cancelled: usize,
}

#[test]
fn every_request_is_completed_exactly_once_under_concurrent_completion_and_cancellation() {
    verifier_record();
    let kernel = Kernel::builder().processors(2).workers(2).build();
    let device = StressDevice::new(&kernel);
    kernel.io().create_device("stress", device.clone()).unwrap();
    let handle = Arc::new(kernel.io().open("stress").unwrap());

    let (cancel_tx, cancel_rx) = crossbeam_channel::unbounded::<IrpCanceller>();
    let canceller = std::thread::spawn(move || {
        let mut n = 0usize;
        for c in cancel_rx {
            c.cancel();
            n += 1;
        }
        n
    });

    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (handle, cancel_tx, start) = (handle.clone(), cancel_tx.clone(), start.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let mut tally = ClientTally::default();
                start.wait();
                let first = t * PER_CLIENT;
                for batch in (first..first + PER_CLIENT).step_by(WINDOW) {
                    let pending: Vec<_> = (batch..(batch + WINDOW).min(first + PER_CLIENT))
                        .map(|index| {
                            let p = handle.submit(IoOp::Read {
                                offset: index as u64,
                                length: 8,
                            });
                            let cancel = path_of(index) == Path::UntilCancelled
                                || rng.next().is_multiple_of(4);
                            if cancel {
                                cancel_tx.send(p.canceller()).unwrap();
                            }
                            (index, p)
                        })
                        .collect();
                    for (index, p) in pending {
                        let id = p.id();
                        let c = p.wait();
                        *tally.seen.entry(id).or_default() += 1;
                        match c.status {
                            NtStatus::SUCCESS => {
                                assert_ne!(path_of(index), Path::UntilCancelled);
                                assert_eq!(c.information, 8);
                                assert_eq!(c.data, (index as u64).to_le_bytes());
                                tally.succeeded += 1;
                            }
                            NtStatus::CANCELLED => {
                                assert_ne!(path_of(index), Path::Inline);
                                assert_eq!(c.information, 0);
                                tally.cancelled += 1;
                            }
                            other => panic!("request {index} completed with {other}"),
                        }
                    }
                }
                tally
            })
        })
        .collect();
    drop(cancel_tx);

    let mut seen: HashMap<u64, u32> = HashMap::new();
    let (mut succeeded, mut cancelled) = (0, 0);
    for c in clients {
        let tally = c.join().expect("client thread");
        assert_eq!(tally.seen.len(), PER_CLIENT);
        for (id, n) in tally.seen {
            assert!(
                seen.insert(id, n).is_none(),
                "request id {id} seen by two clients"
            );
        }
        succeeded += tally.succeeded;
        cancelled += tally.cancelled;
    }
    let cancel_calls = canceller.join().unwrap();
    eprintln!("{succeeded} succeeded, {cancelled} cancelled, {cancel_calls} cancel calls");

    // Client side: every request id completed exactly once.
    assert_eq!(seen.len(), REQUESTS);
    assert!(seen.values().all(|&n| n == 1));
    assert_eq!(succeeded + cancelled, REQUESTS);
    // Every UntilCancelled request was cancelled, so at least a quarter were.
    assert!(cancelled >= REQUESTS / 4, "{cancelled}");
    assert!(cancel_calls >= REQUESTS / 4);

    // Device side: the same totals, each request completed exactly once, nothing left parked.
    for (index, n) in device.completions.iter().enumerate() {
        assert_eq!(n.load(Ordering::SeqCst), 1, "request {index}");
    }
    assert_eq!(device.succeeded.load(Ordering::SeqCst), succeeded);
    assert_eq!(device.cancelled.load(Ordering::SeqCst), cancelled);
    assert!(device.parked.lock().is_empty());

    kernel.flush_dpcs();
    kernel.flush_work();
    assert!(device.to_dpc.lock().is_empty());
    assert!(device.to_worker.lock().is_empty());
    assert!(verifier::counts().is_empty(), "{:?}", verifier::recent());
}
