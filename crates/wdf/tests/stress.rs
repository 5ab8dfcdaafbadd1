//! Stress: about a million requests over three queues with three synchronization setups, from
//! several client threads with several requests outstanding each; most are completed inline,
//! some later from a DPC. Every request is completed exactly once and the queues' counters
//! agree with the clients'.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use nt::io::IoOp;
use nt::sync::SpinLock;
use nt::{Dpc, NtStatus};
use wdf::{DispatchType, ObjectAttributes, QueueConfig, Request, RequestType, SyncScope};

use common::*;

const THREADS: usize = 4;
const PER_THREAD: usize = 250_000;
const TOTAL: usize = THREADS * PER_THREAD;
/// Requests each client keeps outstanding.
const WINDOW: usize = 16;
/// One ioctl in this many, and one write in `4 * DEFER_EVERY`, is completed later by a DPC.
const DEFER_EVERY: usize = 16;

/// Requests parked for the DPC, and the DPC that completes them.
struct Later {
    parked: SpinLock<Vec<Request>>,
    dpc: Dpc,
    completed: AtomicU64,
}

impl Later {
    fn park(&self, req: Request) {
        self.parked.lock().push(req);
        self.dpc.insert();
    }

    fn drain(&self) {
        let batch = std::mem::take(&mut *self.parked.lock());
        for req in batch {
            let len = match req.kind() {
                RequestType::Write => req.parameters().length,
                _ => req.parameters().output_length,
            };
            req.complete_with_information(NtStatus::SUCCESS, len);
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Ioctl,
}

#[test]
fn a_million_requests_are_each_completed_exactly_once() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "stress", ObjectAttributes::default());

    let later = Arc::new_cyclic(|me: &Weak<Later>| {
        let me = me.clone();
        Later {
            parked: SpinLock::named("stress parked", Vec::new()),
            dpc: Dpc::new(&kernel, "stress completer", move || {
                if let Some(l) = me.upgrade() {
                    l.drain();
                }
            }),
            completed: AtomicU64::new(0),
        }
    });

    // Reads: parallel, scope None, completed inline.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.name = Some("stress-reads".into());
    cfg.io_read(|_cx, mut req, len| {
        req.output_buffer(len).unwrap()[0] = 0x5A;
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let reads = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    // Writes: sequential, Device scope; one in 4 * DEFER_EVERY completed by the DPC.
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.name = Some("stress-writes".into());
    let l = Arc::downgrade(&later);
    cfg.io_write(move |cx, req, len| {
        assert!(cx.scope().is_some());
        if req.parameters().offset % (4 * DEFER_EVERY) as u64 == 1 {
            l.upgrade().unwrap().park(req);
        } else {
            req.complete_with_information(NtStatus::SUCCESS, len);
        }
    });
    let writes = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::Device))
        .unwrap();

    // Control requests: parallel, Queue scope; one in DEFER_EVERY completed by the DPC.
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.name = Some("stress-ioctls".into());
    let l = Arc::downgrade(&later);
    cfg.io_device_control(move |cx, req, out, _inp, code| {
        assert!(cx.scope().is_some());
        if code as usize % DEFER_EVERY == 2 {
            l.upgrade().unwrap().park(req);
        } else {
            req.complete_with_information(NtStatus::SUCCESS, out);
        }
    });
    let ioctls = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();

    dev.configure_request_dispatching(&reads, RequestType::Read)
        .unwrap();
    dev.configure_request_dispatching(&writes, RequestType::Write)
        .unwrap();
    dev.configure_request_dispatching(&ioctls, RequestType::DeviceControl)
        .unwrap();

    let h = kernel.io().open("stress").unwrap();
    let counts: Vec<[u64; 3]> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let h = &h;
                s.spawn(move || {
                    let mut done = [0u64; 3];
                    let mut window = VecDeque::with_capacity(WINDOW);
                    let check = |op: Op, c: nt::io::IoCompletion, done: &mut [u64; 3]| {
                        assert_eq!(c.status, NtStatus::SUCCESS, "{op:?}");
                        let expect = match op {
                            Op::Read => 2,
                            Op::Write => 3,
                            Op::Ioctl => 1,
                        };
                        assert_eq!(c.information, expect, "{op:?}");
                        if op == Op::Read {
                            assert_eq!(c.data, vec![0x5A, 0]);
                        }
                        done[op as usize] += 1;
                    };
                    for i in 0..PER_THREAD {
                        let n = (t * PER_THREAD + i) as u64;
                        let (op, io) = match i % 3 {
                            0 => (Op::Read, read_op(n, 2)),
                            1 => (Op::Write, write_op(n, vec![1, 2, 3])),
                            _ => (
                                Op::Ioctl,
                                IoOp::DeviceControl {
                                    code: i as u32,
                                    input: vec![],
                                    output_length: 1,
                                },
                            ),
                        };
                        if window.len() == WINDOW {
                            let (op, p) = window.pop_front().unwrap();
                            check(op, wait(p), &mut done);
                        }
                        window.push_back((op, h.submit(io)));
                    }
                    for (op, p) in window {
                        check(op, wait(p), &mut done);
                    }
                    done
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });

    // Client side: every request issued was completed once, with its own result.
    let mut by_op = [0u64; 3];
    for c in &counts {
        for (k, n) in c.iter().enumerate() {
            by_op[k] += n;
        }
    }
    let issued = |op: usize| {
        (0..THREADS * PER_THREAD)
            .filter(|i| i % PER_THREAD % 3 == op)
            .count()
    };
    for (k, n) in by_op.iter().enumerate() {
        assert_eq!(*n as usize, issued(k), "op {k}");
    }
    assert_eq!(by_op.iter().sum::<u64>() as usize, TOTAL);

    // Framework side. DPC completions bump the queue counters just after waking the client.
    kernel.flush_dpcs();
    eventually("every DPC-completed request is counted", || {
        [&reads, &writes, &ioctls]
            .iter()
            .map(|q| q.stats().completed)
            .sum::<u64>()
            == TOTAL as u64
    });
    let mut sum = 0;
    for (q, op) in [(&reads, 0), (&writes, 1), (&ioctls, 2)] {
        let st = q.stats();
        assert_eq!(st.arrived, by_op[op], "{}: {st:?}", q.name());
        assert_eq!(st.presented, st.arrived, "{}: {st:?}", q.name());
        assert_eq!(st.completed, st.presented, "{}: {st:?}", q.name());
        assert_eq!(q.driver_owned_count(), 0);
        assert_eq!(q.pending_count(), 0);
        sum += st.completed;
    }
    assert_eq!(sum, TOTAL as u64);
    assert!(later.completed.load(Ordering::Relaxed) > 0);
    assert!(later.parked.lock().is_empty());
}
