//! Synchronization scope (spec §2): which callbacks the framework serializes, with whose lock,
//! and for how long. "At most N at once" is measured with an in-flight counter inside callbacks
//! that spin or sleep a little so that overlap would be observed if it were possible; "they do
//! overlap" is made deterministic with a rendezvous between the callbacks.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nt::NtStatus;
use wdf::{
    DispatchType, ExecutionLevel, ObjectAttributes, QueueConfig, Request, RequestType, SyncScope,
};

use common::*;

const SPIN: Duration = Duration::from_micros(20);

#[test]
fn device_scope_parallel_queue_runs_one_callback_at_a_time() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 200;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "sync-devscope-parallel",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let inflight = Arc::new(InFlight::default());
    let without_token = Arc::new(AtomicUsize::new(0));

    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (f, t) = (inflight.clone(), without_token.clone());
    cfg.io_read(move |cx, req, len| {
        if cx.scope().is_none() {
            t.fetch_add(1, Ordering::SeqCst);
        }
        let g = f.enter();
        spin_for(SPIN);
        drop(g);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    assert!(queue.callback_lock().same_as(dev.callback_lock()));

    let h = kernel.io().open("sync-devscope-parallel").unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let h = &h;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let len = 1 + (t * PER_THREAD + i) % 64;
                    let c = read(h, i as u64, len);
                    assert_eq!(c.status, NtStatus::SUCCESS);
                    assert_eq!(c.information, len);
                }
            });
        }
    });

    assert_eq!(
        inflight.max(),
        1,
        "Device scope must serialize the callbacks of a parallel queue"
    );
    assert_eq!(without_token.load(Ordering::SeqCst), 0);
    let st = queue.stats();
    assert_eq!(st.presented, (THREADS * PER_THREAD) as u64);
    assert_eq!(st.completed, (THREADS * PER_THREAD) as u64);
}

/// Where the read callback parks its request, and how it says so.
type HeldRead = (Arc<Mutex<Option<Request>>>, mpsc::Sender<()>);

/// One sequential queue per request type, all under the device's lock.
struct ThreeQueues {
    read: Arc<wdf::Queue>,
    write: Arc<wdf::Queue>,
    ioctl: Arc<wdf::Queue>,
}

fn three_sequential_queues(
    dev: &Arc<wdf::Device>,
    inflight: &Arc<InFlight>,
    held_read: Option<HeldRead>,
) -> ThreeQueues {
    let mut rc = QueueConfig::new(DispatchType::Sequential);
    rc.name = Some("read".into());
    let f = inflight.clone();
    let held = Mutex::new(held_read);
    rc.io_read(move |_cx, req, len| {
        let g = f.enter();
        spin_for(SPIN);
        drop(g);
        match &*held.lock().unwrap() {
            Some((slot, tx)) => {
                *slot.lock().unwrap() = Some(req);
                tx.send(()).unwrap();
            }
            None => req.complete_with_information(NtStatus::SUCCESS, len),
        }
    });
    let mut wc = QueueConfig::new(DispatchType::Sequential);
    wc.name = Some("write".into());
    let f = inflight.clone();
    wc.io_write(move |_cx, req, len| {
        let g = f.enter();
        spin_for(SPIN);
        drop(g);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let mut ic = QueueConfig::new(DispatchType::Sequential);
    ic.name = Some("ioctl".into());
    let f = inflight.clone();
    ic.io_device_control(move |_cx, req, out, _inp, _code| {
        let g = f.enter();
        spin_for(SPIN);
        drop(g);
        req.complete_with_information(NtStatus::SUCCESS, out);
    });
    let read = dev.create_queue(rc, ObjectAttributes::default()).unwrap();
    let write = dev.create_queue(wc, ObjectAttributes::default()).unwrap();
    let ioctl = dev.create_queue(ic, ObjectAttributes::default()).unwrap();
    dev.configure_request_dispatching(&read, RequestType::Read)
        .unwrap();
    dev.configure_request_dispatching(&write, RequestType::Write)
        .unwrap();
    dev.configure_request_dispatching(&ioctl, RequestType::DeviceControl)
        .unwrap();
    for q in [&read, &write, &ioctl] {
        assert!(q.callback_lock().same_as(dev.callback_lock()));
    }
    ThreeQueues { read, write, ioctl }
}

#[test]
fn device_scope_serializes_callbacks_across_three_sequential_queues() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 150;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "sync-devscope-three",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let inflight = Arc::new(InFlight::default());
    let qs = three_sequential_queues(&dev, &inflight, None);

    let h = kernel.io().open("sync-devscope-three").unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let h = &h;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let c = match (t + i) % 3 {
                        0 => read(h, 0, 8),
                        1 => write(h, 0, vec![7; 8]),
                        _ => ioctl(h, 0x10, vec![1], 8),
                    };
                    assert_eq!(c.status, NtStatus::SUCCESS);
                    assert_eq!(c.information, 8);
                }
            });
        }
    });

    assert_eq!(
        inflight.max(),
        1,
        "Device scope must serialize callbacks across all of the device's queues"
    );
    let total: u64 = [&qs.read, &qs.write, &qs.ioctl]
        .iter()
        .map(|q| {
            let st = q.stats();
            assert_eq!(st.presented, st.completed, "{}", q.name());
            st.completed
        })
        .sum();
    assert_eq!(total, (THREADS * PER_THREAD) as u64);
}

#[test]
fn device_scope_lock_is_held_per_callback_not_per_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "sync-devscope-release",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let inflight = Arc::new(InFlight::default());
    let slot: Arc<Mutex<Option<Request>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let qs = three_sequential_queues(&dev, &inflight, Some((slot.clone(), tx)));

    let h = kernel.io().open("sync-devscope-release").unwrap();
    // The read callback keeps its request and returns.
    let pending_read = h.submit(read_op(0, 8));
    rx.recv_timeout(TIMEOUT)
        .expect("the read was never presented");
    assert!(!pending_read.is_complete());
    assert_eq!(qs.read.driver_owned_count(), 1);
    assert!(!dev.callback_lock().is_owned_by_current_thread());

    // The device lock is free again: a write on another queue is presented and completes
    // while the read is still owned by the driver.
    let w = write(&h, 0, vec![1; 4]);
    assert_eq!(w.status, NtStatus::SUCCESS);
    assert_eq!(w.information, 4);
    let c = ioctl(&h, 0x20, vec![], 8);
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert!(!pending_read.is_complete());
    assert_eq!(qs.read.driver_owned_count(), 1);

    // Now the driver completes the read, outside any callback.
    let req = slot.lock().unwrap().take().expect("the read request");
    req.complete_with_information(NtStatus::SUCCESS, 8);
    let r = wait(pending_read);
    assert_eq!(r.status, NtStatus::SUCCESS);
    assert_eq!(r.information, 8);
    assert_eq!(qs.read.driver_owned_count(), 0);
    assert_eq!(inflight.max(), 1);
}

#[test]
fn queue_scope_serializes_each_queue_but_two_queues_overlap() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 24;
    const NAP: Duration = Duration::from_millis(2);

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "sync-queuescope",
        ObjectAttributes::scope(SyncScope::Queue).with_level(ExecutionLevel::Passive),
    );
    let all = Arc::new(InFlight::default());
    let rendezvous = Arc::new(Rendezvous::new(2));
    let met = Arc::new(AtomicUsize::new(0));

    // Each callback: count itself, the first one of each queue waits for the first one of the
    // other queue, then sleep (PASSIVE_LEVEL) to give other threads a chance to overlap.
    let body = {
        let (all, rendezvous, met) = (all.clone(), rendezvous.clone(), met.clone());
        move |mine: &InFlight, first: &AtomicBool| {
            let _a = all.enter();
            let _m = mine.enter();
            if !first.swap(true, Ordering::SeqCst) && rendezvous.meet(RENDEZVOUS_TIMEOUT) {
                met.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(NAP);
        }
    };

    let rw_inflight = Arc::new(InFlight::default());
    let rw_first = Arc::new(AtomicBool::new(false));
    let mut rw = QueueConfig::new(DispatchType::Parallel);
    rw.name = Some("rw".into());
    let (b, f, first) = (body.clone(), rw_inflight.clone(), rw_first.clone());
    rw.io_read(move |_cx, req, len| {
        b(&f, &first);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let (b, f, first) = (body.clone(), rw_inflight.clone(), rw_first.clone());
    rw.io_write(move |_cx, req, len| {
        b(&f, &first);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let io_inflight = Arc::new(InFlight::default());
    let io_first = Arc::new(AtomicBool::new(false));
    let mut io = QueueConfig::new(DispatchType::Parallel);
    io.name = Some("ioctl".into());
    let (b, f, first) = (body.clone(), io_inflight.clone(), io_first.clone());
    io.io_device_control(move |_cx, req, out, _inp, _code| {
        b(&f, &first);
        req.complete_with_information(NtStatus::SUCCESS, out);
    });
    let rwq = dev.create_queue(rw, ObjectAttributes::default()).unwrap();
    let ioq = dev.create_queue(io, ObjectAttributes::default()).unwrap();
    dev.configure_request_dispatching(&rwq, RequestType::Read)
        .unwrap();
    dev.configure_request_dispatching(&rwq, RequestType::Write)
        .unwrap();
    dev.configure_request_dispatching(&ioq, RequestType::DeviceControl)
        .unwrap();
    assert!(!rwq.callback_lock().same_as(ioq.callback_lock()));
    assert!(!rwq.callback_lock().same_as(dev.callback_lock()));

    let h = kernel.io().open("sync-queuescope").unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let h = &h;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let c = match (t + i) % 3 {
                        0 => read(h, 0, 4),
                        1 => write(h, 0, vec![2; 4]),
                        _ => ioctl(h, 1, vec![], 4),
                    };
                    assert_eq!(c.status, NtStatus::SUCCESS);
                    assert_eq!(c.information, 4);
                }
            });
        }
    });

    assert_eq!(
        met.load(Ordering::SeqCst),
        2,
        "the first callbacks of two Queue-scope queues must be able to run at the same time"
    );
    assert_eq!(rw_inflight.max(), 1, "Queue scope serializes the rw queue");
    assert_eq!(
        io_inflight.max(),
        1,
        "Queue scope serializes the ioctl queue"
    );
    assert_eq!(all.max(), 2);
}

#[test]
fn device_scope_callbacks_of_two_devices_overlap() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let all = Arc::new(InFlight::default());
    let rendezvous = Arc::new(Rendezvous::new(2));
    let met = Arc::new(AtomicUsize::new(0));
    let names = ["sync-two-devices-a", "sync-two-devices-b"];
    for name in names {
        let dev = device(&driver, name, ObjectAttributes::scope(SyncScope::Device));
        let mut cfg = QueueConfig::new(DispatchType::Parallel);
        cfg.default_queue = true;
        let (all, rendezvous, met) = (all.clone(), rendezvous.clone(), met.clone());
        cfg.io_read(move |cx, req, len| {
            assert!(cx.scope().is_some());
            let _g = all.enter();
            if rendezvous.meet(RENDEZVOUS_TIMEOUT) {
                met.fetch_add(1, Ordering::SeqCst);
            }
            req.complete_with_information(NtStatus::SUCCESS, len);
        });
        dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    }

    std::thread::scope(|s| {
        for name in names {
            let kernel = &kernel;
            s.spawn(move || {
                let h = kernel.io().open(name).unwrap();
                let c = read(&h, 0, 2);
                assert_eq!(c.status, NtStatus::SUCCESS);
            });
        }
    });

    assert_eq!(
        met.load(Ordering::SeqCst),
        2,
        "two devices have two device locks: their callbacks must be able to overlap"
    );
    assert_eq!(all.max(), 2);
}

#[test]
fn scope_none_parallel_queue_callbacks_overlap() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "sync-none-parallel", ObjectAttributes::default());
    assert_eq!(dev.constraints().sync_scope, SyncScope::None);
    let all = Arc::new(InFlight::default());
    let rendezvous = Arc::new(Rendezvous::new(2));
    let met = Arc::new(AtomicUsize::new(0));
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (a, r, m) = (all.clone(), rendezvous.clone(), met.clone());
    cfg.io_read(move |cx, req, len| {
        assert!(cx.scope().is_none(), "scope None lends no token");
        let _g = a.enter();
        if r.meet(RENDEZVOUS_TIMEOUT) {
            m.fetch_add(1, Ordering::SeqCst);
        }
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    assert!(!q.constraints().serialized());

    let h = kernel.io().open("sync-none-parallel").unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let h = &h;
            s.spawn(move || {
                let c = read(h, 0, 3);
                assert_eq!(c.status, NtStatus::SUCCESS);
                assert_eq!(c.information, 3);
            });
        }
    });

    assert_eq!(met.load(Ordering::SeqCst), 2);
    assert_eq!(all.max(), 2);
}

#[test]
fn scope_none_sequential_queue_presents_one_request_at_a_time() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 100;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "sync-none-sequential", ObjectAttributes::default());
    let inflight = Arc::new(InFlight::default());
    let with_token = Arc::new(AtomicUsize::new(0));
    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let (f, t) = (inflight.clone(), with_token.clone());
    cfg.io_read(move |cx, req, len| {
        if cx.scope().is_some() {
            t.fetch_add(1, Ordering::SeqCst);
        }
        let g = f.enter();
        spin_for(SPIN);
        drop(g);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h = kernel.io().open("sync-none-sequential").unwrap();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let h = &h;
            s.spawn(move || {
                for _ in 0..PER_THREAD {
                    let c = read(h, 0, 5);
                    assert_eq!(c.status, NtStatus::SUCCESS);
                }
            });
        }
    });

    assert_eq!(
        inflight.max(),
        1,
        "a sequential queue presents one request at a time even without a scope lock"
    );
    assert_eq!(with_token.load(Ordering::SeqCst), 0);
    assert_eq!(q.stats().completed, (THREADS * PER_THREAD) as u64);
}

#[test]
fn device_scope_parallel_queue_lets_the_driver_own_many_requests() {
    // Spec §9.3: the lock covers one callback, not the request: a parallel queue under Device
    // scope presents every request (one callback at a time) while the driver keeps them all.
    const THREADS: usize = 4;
    const PER_THREAD: usize = 10;
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "sync-devscope-owned",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let inflight = Arc::new(InFlight::default());
    let held: Arc<Mutex<Vec<Request>>> = Arc::default();
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (f, hd) = (inflight.clone(), held.clone());
    cfg.io_read(move |_cx, req, _len| {
        let _g = f.enter();
        spin_for(SPIN);
        hd.lock().unwrap().push(req);
    });
    let q = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();
    let h = kernel.io().open("sync-devscope-owned").unwrap();
    let pending: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let h = &h;
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|_| h.submit(read_op(0, 1)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(q.driver_owned_count(), THREADS * PER_THREAD);
    assert_eq!(q.pending_count(), 0);
    assert_eq!(inflight.max(), 1);
    let all = std::mem::take(&mut *held.lock().unwrap());
    for r in all {
        r.complete_with_information(NtStatus::SUCCESS, 1);
    }
    for p in pending {
        assert_eq!(wait(p).status, NtStatus::SUCCESS);
    }
}
