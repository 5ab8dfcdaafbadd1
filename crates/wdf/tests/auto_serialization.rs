//! Automatic serialization of framework DPCs, timers and work items (spec §4.1, §4.2, §4.3,
//! §4.4), and the "Keeping It Consistent" examples of OSR's *Understanding Sync Scope in WDF
//! Drivers*: a spin-lock (Dispatch) scope can take in a DPC but not a work item; a passive
//! (mutex) scope can take in a work item but not a DPC; a "dead man timer" parented to a
//! serialized queue never races the queue's callbacks; an object parented to a Queue-scope queue
//! serializes with that queue only.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};
use std::time::{Duration, Instant};

use nt::irql::{self, Irql};
use nt::{ManualClock, NtStatus};
use wdf::{
    DispatchType, Dpc, DpcConfig, ExecutionLevel, ObjectAttributes, QueueConfig, RequestType,
    SyncScope, Timer, TimerConfig, WorkItem, WorkItemConfig,
};

use common::*;

const SPIN: Duration = Duration::from_micros(20);
/// Pause between enqueues of a DPC or work item under load (the load threads keep busy).
const PACE: Duration = Duration::from_micros(50);

fn noop() -> impl Fn(&mut wdf::CallbackContext<'_, '_>) + Send + Sync + 'static {
    |_cx| {}
}

/// A parallel default queue whose read callback enters `inflight`, spins, and completes.
fn counting_read_queue(
    device: &Arc<wdf::Device>,
    inflight: &Arc<InFlight>,
    reads: &Arc<AtomicUsize>,
) -> Arc<wdf::Queue> {
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (f, n) = (inflight.clone(), reads.clone());
    cfg.io_read(move |_cx, req, len| {
        let g = f.enter();
        spin_for(SPIN);
        drop(g);
        n.fetch_add(1, Ordering::SeqCst);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    device
        .create_queue(cfg, ObjectAttributes::default())
        .unwrap()
}

/// Client threads reading until `done` holds (bounded by [`TIMEOUT`]).
fn read_load(handle: &nt::io::Handle, threads: usize, done: impl Fn() -> bool + Sync) {
    let deadline = Instant::now() + TIMEOUT;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !done() {
                    assert!(Instant::now() < deadline, "load did not finish in time");
                    let c = wait(handle.submit(read_op(0, 8)));
                    assert_eq!(c.status, NtStatus::SUCCESS);
                    // Leave the CPU to the DPC / timer / worker threads now and then.
                    std::thread::sleep(PACE);
                }
            });
        }
    });
}

/// Keeping it consistent, spin-lock scope: with a default (Dispatch) Device-scope device, an
/// auto-serialized work item is refused (`STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL`), and a DPC
/// is accepted and never overlaps the device's I/O callbacks.
#[test]
fn keeping_it_consistent_spin_lock_scope_takes_dpc_not_work_item() {
    const DPC_RUNS: usize = 200;
    const MIN_READS: usize = 200;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "as-spin-scope",
        ObjectAttributes::scope(SyncScope::Device),
    );
    assert_eq!(
        WorkItem::create(
            &dev,
            WorkItemConfig::new(noop()),
            ObjectAttributes::default()
        )
        .unwrap_err(),
        NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL
    );

    let inflight = Arc::new(InFlight::default());
    let reads = Arc::new(AtomicUsize::new(0));
    let _queue = counting_read_queue(&dev, &inflight, &reads);
    let dpc_runs = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let (f, n, b) = (inflight.clone(), dpc_runs.clone(), bad.clone());
    let dpc = Dpc::create(
        &dev,
        DpcConfig::new(move |cx| {
            let g = f.enter();
            if !cx.is_serialized() || cx.scope().is_none() || irql::current() != Irql::Dispatch {
                b.fetch_add(1, Ordering::SeqCst);
            }
            spin_for(SPIN);
            drop(g);
            n.fetch_add(1, Ordering::SeqCst);
        }),
        ObjectAttributes::default(),
    )
    .expect("a DPC under a spin-lock scope is accepted");
    assert!(dpc.is_serialized());

    let h = kernel.io().open("as-spin-scope").unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + TIMEOUT;
            while dpc_runs.load(Ordering::SeqCst) < DPC_RUNS {
                assert!(
                    Instant::now() < deadline,
                    "the DPC did not run often enough"
                );
                dpc.enqueue();
                std::thread::sleep(PACE);
            }
            stop.store(true, Ordering::SeqCst);
        });
        read_load(&h, 3, || {
            stop.load(Ordering::SeqCst) && reads.load(Ordering::SeqCst) >= MIN_READS
        });
    });
    kernel.flush_dpcs();
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "DPC ran unserialized or not at DISPATCH"
    );
    assert_eq!(
        inflight.max(),
        1,
        "the auto-serialized DPC overlapped an EvtIoRead"
    );
}

/// Keeping it consistent, passive scope: with a Passive Device-scope device (a mutex), an
/// auto-serialized work item is accepted and never overlaps the I/O callbacks, and a DPC is
/// refused (`STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL`).
#[test]
fn keeping_it_consistent_passive_scope_takes_work_item_not_dpc() {
    const ITEM_RUNS: usize = 100;
    const MIN_READS: usize = 200;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "as-passive-scope",
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Device),
    );
    assert_eq!(
        Dpc::create(&dev, DpcConfig::new(noop()), ObjectAttributes::default()).unwrap_err(),
        NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL
    );

    let inflight = Arc::new(InFlight::default());
    let reads = Arc::new(AtomicUsize::new(0));
    let _queue = counting_read_queue(&dev, &inflight, &reads);
    let runs = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let (f, n, b) = (inflight.clone(), runs.clone(), bad.clone());
    let item = WorkItem::create(
        &dev,
        WorkItemConfig::new(move |cx| {
            let g = f.enter();
            if !cx.is_serialized() || irql::current() != Irql::Passive {
                b.fetch_add(1, Ordering::SeqCst);
            }
            spin_for(SPIN);
            drop(g);
            n.fetch_add(1, Ordering::SeqCst);
        }),
        ObjectAttributes::default(),
    )
    .expect("a work item under a passive scope is accepted");
    assert!(item.is_serialized());

    let h = kernel.io().open("as-passive-scope").unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + TIMEOUT;
            while runs.load(Ordering::SeqCst) < ITEM_RUNS {
                assert!(
                    Instant::now() < deadline,
                    "the work item did not run often enough"
                );
                item.enqueue();
                std::thread::sleep(PACE);
            }
            stop.store(true, Ordering::SeqCst);
        });
        read_load(&h, 3, || {
            stop.load(Ordering::SeqCst) && reads.load(Ordering::SeqCst) >= MIN_READS
        });
    });
    let i = item.clone();
    within("WorkItem::flush", move || i.flush()).unwrap();
    assert_eq!(bad.load(Ordering::SeqCst), 0);
    assert_eq!(
        inflight.max(),
        1,
        "the auto-serialized work item overlapped an EvtIoRead"
    );
}

/// The article's dead man timer: a periodic timer parented to a Device-scope queue never runs
/// at the same time as that queue's callbacks.
#[test]
fn dead_man_timer_never_overlaps_its_queue_callbacks() {
    const TICKS: usize = 30;
    const MIN_READS: usize = 200;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "as-dead-man-timer",
        ObjectAttributes::scope(SyncScope::Device),
    );
    let inflight = Arc::new(InFlight::default());
    let reads = Arc::new(AtomicUsize::new(0));
    let queue = counting_read_queue(&dev, &inflight, &reads);
    let ticks = Arc::new(AtomicUsize::new(0));
    let unserialized = Arc::new(AtomicUsize::new(0));
    let (f, t, u) = (inflight.clone(), ticks.clone(), unserialized.clone());
    let timer = Timer::create(
        &queue,
        TimerConfig::periodic(Duration::from_millis(1), move |cx| {
            let g = f.enter();
            if cx.scope().is_none() {
                u.fetch_add(1, Ordering::SeqCst);
            }
            spin_for(SPIN);
            drop(g);
            t.fetch_add(1, Ordering::SeqCst);
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    assert!(timer.is_serialized());
    assert!(!timer.is_passive());
    timer.start(Duration::from_millis(1));

    let h = kernel.io().open("as-dead-man-timer").unwrap();
    read_load(&h, 3, || {
        ticks.load(Ordering::SeqCst) >= TICKS && reads.load(Ordering::SeqCst) >= MIN_READS
    });
    let t = timer.clone();
    assert!(within("Timer::stop(true)", move || t.stop(true)));
    assert_eq!(unserialized.load(Ordering::SeqCst), 0);
    assert_eq!(
        inflight.max(),
        1,
        "the timer ran while an EvtIoRead of its queue was running"
    );
}

/// An object parented to a Queue-scope queue serializes with that queue only: it never overlaps
/// that queue's callbacks, and does overlap another queue's (a rendezvous that only succeeds if
/// both callbacks run at once).
#[test]
fn queue_scope_object_serializes_with_its_queue_only() {
    const DPC_RUNS: usize = 200;
    const MIN_READS: usize = 200;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "as-queue-scope", ObjectAttributes::default());
    let inflight = Arc::new(InFlight::default());
    let reads = Arc::new(AtomicUsize::new(0));

    let mut a_cfg = QueueConfig::new(DispatchType::Parallel);
    let (f, n) = (inflight.clone(), reads.clone());
    a_cfg.io_read(move |_cx, req, len| {
        let g = f.enter();
        spin_for(SPIN);
        drop(g);
        n.fetch_add(1, Ordering::SeqCst);
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let queue_a = dev
        .create_queue(a_cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();
    dev.configure_request_dispatching(&queue_a, RequestType::Read)
        .unwrap();

    let rv = Arc::new(Rendezvous::new(2));
    let b_met = Arc::new(Mutex::new(None));
    let mut b_cfg = QueueConfig::new(DispatchType::Parallel);
    let (r, m) = (rv.clone(), b_met.clone());
    b_cfg.io_write(move |_cx, req, len| {
        *m.lock().unwrap() = Some(r.meet(RENDEZVOUS_TIMEOUT));
        req.complete_with_information(NtStatus::SUCCESS, len);
    });
    let queue_b = dev
        .create_queue(b_cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();
    dev.configure_request_dispatching(&queue_b, RequestType::Write)
        .unwrap();

    // Phase 1: a DPC parented to A meets B's EvtIoWrite.
    let (seen_tx, seen_rx) = mpsc::channel();
    let seen_tx = Mutex::new(seen_tx);
    let (qa, qb, r) = (queue_a.clone(), queue_b.clone(), rv.clone());
    let meet_dpc = Dpc::create(
        &queue_a,
        DpcConfig::new(move |cx| {
            let holds_a = qa.callback_lock().is_owned_by_current_thread();
            let holds_b = qb.callback_lock().is_owned_by_current_thread();
            let met = r.meet(RENDEZVOUS_TIMEOUT);
            seen_tx
                .lock()
                .unwrap()
                .send((cx.is_serialized(), holds_a, holds_b, met))
                .unwrap();
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    assert!(meet_dpc.is_serialized());
    let h = kernel.io().open("as-queue-scope").unwrap();
    assert!(meet_dpc.enqueue());
    let c = wait(h.submit(write_op(0, vec![0x5a; 4])));
    assert_eq!(c.status, NtStatus::SUCCESS);
    let (serialized, holds_a, holds_b, dpc_met) =
        seen_rx.recv_timeout(TIMEOUT).expect("the DPC ran");
    assert!(serialized && holds_a, "the DPC holds queue A's lock");
    assert!(!holds_b, "the DPC does not hold queue B's lock");
    assert!(
        dpc_met && b_met.lock().unwrap().unwrap(),
        "the DPC parented to queue A must run alongside queue B's EvtIoWrite"
    );

    // Phase 2: a DPC parented to A never overlaps A's EvtIoRead.
    let runs = Arc::new(AtomicUsize::new(0));
    let (f, n) = (inflight.clone(), runs.clone());
    let load_dpc = Dpc::create(
        &queue_a,
        DpcConfig::new(move |_cx| {
            let g = f.enter();
            spin_for(SPIN);
            drop(g);
            n.fetch_add(1, Ordering::SeqCst);
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + TIMEOUT;
            while runs.load(Ordering::SeqCst) < DPC_RUNS {
                assert!(
                    Instant::now() < deadline,
                    "the DPC did not run often enough"
                );
                load_dpc.enqueue();
                std::thread::sleep(PACE);
            }
            stop.store(true, Ordering::SeqCst);
        });
        read_load(&h, 3, || {
            stop.load(Ordering::SeqCst) && reads.load(Ordering::SeqCst) >= MIN_READS
        });
    });
    kernel.flush_dpcs();
    assert_eq!(
        inflight.max(),
        1,
        "a DPC parented to queue A overlapped queue A's EvtIoRead"
    );
}

/// Spec §4.1 step 3 / §9 item 9: when the nearest callback owner's scope is None, a requested
/// automatic serialization is silently ignored: creation succeeds (even for a work item under a
/// Dispatch-level device) and the callbacks run without a lock.
#[test]
fn scope_none_ignores_automatic_serialization_silently() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "as-scope-none", ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    cfg.io_read(|_cx, req, _len| req.complete(NtStatus::SUCCESS));
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let (tx, rx) = mpsc::channel::<(&'static str, bool, bool)>();
    let report = |what: &'static str| {
        let tx = Mutex::new(tx.clone());
        move |cx: &mut wdf::CallbackContext<'_, '_>| {
            let serialized = cx.is_serialized();
            let token = cx.scope().is_some();
            tx.lock().unwrap().send((what, serialized, token)).unwrap();
        }
    };
    let dpc_cfg = DpcConfig::new(report("dpc"));
    assert!(
        dpc_cfg.automatic_serialization,
        "the default asks for serialization"
    );
    let dpc = Dpc::create(&dev, dpc_cfg, ObjectAttributes::default()).unwrap();
    let timer = Timer::create(
        &dev,
        TimerConfig::new(report("timer")),
        ObjectAttributes::default(),
    )
    .unwrap();
    let item = WorkItem::create(
        &dev,
        WorkItemConfig::new(report("work item")),
        ObjectAttributes::default(),
    )
    .expect("a work item under a Dispatch scope-None device is accepted");
    let queue_item = WorkItem::create(
        &queue,
        WorkItemConfig::new(report("queue work item")),
        ObjectAttributes::default(),
    )
    .unwrap();
    assert!(!dpc.is_serialized());
    assert!(!timer.is_serialized());
    assert!(!item.is_serialized());
    assert!(!queue_item.is_serialized());

    dpc.enqueue();
    timer.start(Duration::from_millis(1));
    item.enqueue();
    queue_item.enqueue();
    let mut seen: Vec<_> = (0..4)
        .map(|_| rx.recv_timeout(TIMEOUT).expect("callback ran"))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("dpc", false, false),
            ("queue work item", false, false),
            ("timer", false, false),
            ("work item", false, false),
        ]
    );
}

/// Spec §4.1 step 1 (wdfkit order): a DPC, timer or work item parented to the driver (no device
/// ancestor) is refused with `STATUS_INVALID_DEVICE_REQUEST`, whatever the flag says.
#[test]
fn driver_parent_is_invalid_device_request() {
    let kernel = kernel();
    let driver = driver(&kernel);
    for auto in [true, false] {
        let mut d = DpcConfig::new(noop());
        d.automatic_serialization = auto;
        assert_eq!(
            Dpc::create(&driver, d, ObjectAttributes::default()).unwrap_err(),
            NtStatus::INVALID_DEVICE_REQUEST
        );
        let mut t = TimerConfig::new(noop());
        t.automatic_serialization = auto;
        assert_eq!(
            Timer::create(&driver, t, ObjectAttributes::default()).unwrap_err(),
            NtStatus::INVALID_DEVICE_REQUEST
        );
        let mut w = WorkItemConfig::new(noop());
        w.automatic_serialization = auto;
        assert_eq!(
            WorkItem::create(&driver, w, ObjectAttributes::default()).unwrap_err(),
            NtStatus::INVALID_DEVICE_REQUEST
        );
    }
}

/// Spec §4.2/§4.3: a timer is passive only when its attributes say Passive explicitly. Under a
/// Passive Device-scope device a default timer is a DISPATCH_LEVEL timer and is refused as
/// incompatible; an explicit Passive timer is accepted, serialized, and called at PASSIVE_LEVEL
/// on a system worker.
#[test]
fn passive_timer_only_when_attributes_say_passive() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "as-passive-timer",
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Device),
    );
    assert_eq!(
        Timer::create(&dev, TimerConfig::new(noop()), ObjectAttributes::default()).unwrap_err(),
        NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL
    );

    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let timer = Timer::create(
        &dev,
        TimerConfig::new(move |cx| {
            tx.lock()
                .unwrap()
                .send((irql::current(), thread_name(), cx.is_serialized()))
                .unwrap();
        }),
        ObjectAttributes::level(ExecutionLevel::Passive),
    )
    .expect("an explicit Passive timer under a passive scope");
    assert!(timer.is_passive());
    assert!(timer.is_serialized());
    timer.start(Duration::from_millis(1));
    let (level, thread, serialized) = rx.recv_timeout(TIMEOUT).expect("the timer fired");
    assert_eq!(level, Irql::Passive);
    assert!(
        thread.starts_with("nt-worker"),
        "a passive timer runs on a system worker, not {thread:?}"
    );
    assert!(serialized);
}

/// Spec §4.2: periodic passive timers are not supported.
#[test]
fn periodic_passive_timer_is_not_supported() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "as-periodic-passive",
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Device),
    );
    assert_eq!(
        Timer::create(
            &dev,
            TimerConfig::periodic(Duration::from_millis(1), noop()),
            ObjectAttributes::level(ExecutionLevel::Passive),
        )
        .unwrap_err(),
        NtStatus::NOT_SUPPORTED
    );
}

/// Spec §4.3: passive-timer ticks coalesce while the work item of an earlier tick is pending
/// (a manual clock makes every tick exact; one worker, blocked in the first callback, keeps
/// the second tick's work item pending).
#[test]
fn passive_timer_ticks_coalesce_while_one_is_pending() {
    const TICKS: usize = 4;

    let clock = Arc::new(ManualClock::new());
    let kernel = manual_kernel(&clock, 1, 1);
    let driver = driver(&kernel);
    let dev = device(
        &driver,
        "as-passive-coalesce",
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Device),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    let (entered_tx, entered_rx) = mpsc::channel();
    let entered_tx = Mutex::new(entered_tx);
    let (c, g) = (calls.clone(), gate.clone());
    let timer = Timer::create(
        &dev,
        TimerConfig::new(move |_cx| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                entered_tx.lock().unwrap().send(()).unwrap();
                assert!(g.wait(TIMEOUT), "the test never released the callback");
            }
        }),
        ObjectAttributes::level(ExecutionLevel::Passive),
    )
    .unwrap();

    for tick in 0..TICKS {
        timer.start(Duration::from_millis(1));
        clock.advance(Duration::from_millis(1));
        kernel.flush_dpcs();
        if tick == 0 {
            entered_rx
                .recv_timeout(TIMEOUT)
                .expect("the first tick's callback never ran");
        }
    }
    gate.open();
    let t = timer.clone();
    within("Timer::stop(true)", move || t.stop(true));
    let k = kernel.clone();
    within("flush_work", move || k.flush_work());
    let n = calls.load(Ordering::SeqCst);
    assert!(n >= 1);
    assert!(
        n < TICKS,
        "{n} callbacks for {TICKS} ticks: ticks must coalesce while one is pending"
    );
}

/// Spec §4.4 (and `WdfDpcEnqueue`): enqueueing a DPC that is still pending queues nothing
/// (`false`); it runs once. The single processor is kept busy so the DPC stays pending.
#[test]
fn pending_dpc_is_not_queued_twice() {
    let kernel = nt::Kernel::builder().processors(1).workers(1).build();
    let driver = driver(&kernel);
    let dev = device(&driver, "as-dpc-twice", ObjectAttributes::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let dpc = Dpc::create(
        &dev,
        DpcConfig::new(move |_cx| {
            r.fetch_add(1, Ordering::SeqCst);
        }),
        ObjectAttributes::default(),
    )
    .unwrap();

    let (started, gate) = (Arc::new(AtomicBool::new(false)), Arc::new(Gate::default()));
    let (s, g) = (started.clone(), gate.clone());
    let blocker = nt::Dpc::new(&kernel, "occupy the processor", move || {
        s.store(true, Ordering::SeqCst);
        g.wait(TIMEOUT);
    });
    assert!(blocker.insert());
    eventually("the processor is occupied", || {
        started.load(Ordering::SeqCst)
    });

    assert!(dpc.enqueue(), "first enqueue queues the DPC");
    assert!(!dpc.enqueue(), "a pending DPC is not queued twice");
    assert!(!dpc.enqueue());
    gate.open();
    let k = kernel.clone();
    within("flush_dpcs", move || k.flush_dpcs());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(dpc.enqueue(), "queued again once it ran");
    let k = kernel.clone();
    within("flush_dpcs", move || k.flush_dpcs());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Spec §4.4: enqueueing a work item that is still pending queues nothing (`false`); it runs
/// once. The single worker is kept busy so the item stays pending.
#[test]
fn pending_work_item_is_not_queued_twice() {
    let kernel = nt::Kernel::builder().processors(1).workers(1).build();
    let driver = driver(&kernel);
    let dev = device(&driver, "as-work-twice", ObjectAttributes::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let item = WorkItem::create(
        &dev,
        WorkItemConfig::new(move |_cx| {
            r.fetch_add(1, Ordering::SeqCst);
        }),
        ObjectAttributes::default(),
    )
    .unwrap();

    let (started, gate) = (Arc::new(AtomicBool::new(false)), Arc::new(Gate::default()));
    let (s, g) = (started.clone(), gate.clone());
    kernel.queue_work("occupy the worker", move || {
        s.store(true, Ordering::SeqCst);
        g.wait(TIMEOUT);
    });
    eventually("the worker is occupied", || started.load(Ordering::SeqCst));

    assert!(item.enqueue(), "first enqueue queues the work item");
    assert!(!item.enqueue(), "a pending work item is not queued twice");
    assert!(!item.enqueue());
    gate.open();
    let i = item.clone();
    within("WorkItem::flush", move || i.flush()).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// `WdfTimerStop(Wait=TRUE)` returns only after a running callback has finished.
#[test]
fn timer_stop_with_wait_waits_for_running_callback() {
    let clock = Arc::new(ManualClock::new());
    let kernel = manual_kernel(&clock, 1, 1);
    let driver = driver(&kernel);
    let dev = device(&driver, "as-timer-stop-wait", ObjectAttributes::default());
    let (entered, finished, gate) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(Gate::default()),
    );
    let (e, f, g) = (entered.clone(), finished.clone(), gate.clone());
    let timer = Timer::create(
        &dev,
        TimerConfig::new(move |_cx| {
            e.store(true, Ordering::SeqCst);
            g.wait(TIMEOUT);
            f.store(true, Ordering::SeqCst);
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    timer.start(Duration::from_millis(1));
    clock.advance(Duration::from_millis(1));
    eventually("the timer callback is running", || {
        entered.load(Ordering::SeqCst)
    });

    let g = gate.clone();
    let opener = std::thread::spawn(move || {
        // An opportunity for a wrong implementation to return before the callback finished.
        std::thread::sleep(Duration::from_millis(30));
        g.open();
    });
    let t = timer.clone();
    within("Timer::stop(true)", move || t.stop(true));
    assert!(
        finished.load(Ordering::SeqCst),
        "Timer::stop(true) returned while the callback was still running"
    );
    opener.join().unwrap();
}

/// `WdfWorkItemFlush` returns only after a running callback has finished.
#[test]
fn work_item_flush_waits_for_running_callback() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "as-work-flush", ObjectAttributes::default());
    let (entered, finished, gate) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(Gate::default()),
    );
    let (e, f, g) = (entered.clone(), finished.clone(), gate.clone());
    let item = WorkItem::create(
        &dev,
        WorkItemConfig::new(move |_cx| {
            e.store(true, Ordering::SeqCst);
            g.wait(TIMEOUT);
            f.store(true, Ordering::SeqCst);
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    assert!(item.enqueue());
    eventually("the work item is running", || {
        entered.load(Ordering::SeqCst)
    });
    let g = gate.clone();
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        g.open();
    });
    let i = item.clone();
    within("WorkItem::flush", move || i.flush()).unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "WorkItem::flush returned while the callback was still running"
    );
    opener.join().unwrap();
}

/// Spec §4.3: `WdfTimerStop(Wait=TRUE)` from the timer's own callback is refused with `false`
/// instead of waiting for itself (a passive timer, so the IRQL check cannot be what refuses it).
#[test]
fn timer_stop_with_wait_from_own_callback_returns_false() {
    let clock = Arc::new(ManualClock::new());
    let kernel = manual_kernel(&clock, 1, 1);
    let driver = driver(&kernel);
    let dev = device(&driver, "as-timer-stop-self", ObjectAttributes::default());
    let me: Arc<OnceLock<Weak<Timer>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let m = me.clone();
    let timer = Timer::create(
        &dev,
        TimerConfig::new(move |_cx| {
            let t = m.get().and_then(Weak::upgrade).expect("the timer is alive");
            assert_eq!(irql::current(), Irql::Passive);
            // Re-armed, so a stop that did not refuse would report it was running.
            t.start(Duration::from_secs(3600));
            tx.lock().unwrap().send(t.stop(true)).unwrap();
        }),
        ObjectAttributes::level(ExecutionLevel::Passive),
    )
    .unwrap();
    assert!(me.set(Arc::downgrade(&timer)).is_ok());
    timer.start(Duration::from_millis(1));
    clock.advance(Duration::from_millis(1));
    let stopped = rx
        .recv_timeout(TIMEOUT)
        .expect("Timer::stop(true) from its own callback hung");
    assert!(
        !stopped,
        "Timer::stop(true) from its own callback must return false"
    );
}

/// A DPC's callback runs at DISPATCH_LEVEL on a processor; a work item's at PASSIVE_LEVEL on a
/// system worker.
#[test]
fn dpc_runs_at_dispatch_and_work_item_at_passive() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "as-levels", ObjectAttributes::default());
    let (tx, rx) = mpsc::channel();
    let tx2 = Mutex::new(tx.clone());
    let tx = Mutex::new(tx);
    let dpc = Dpc::create(
        &dev,
        DpcConfig::new(move |_cx| {
            tx.lock()
                .unwrap()
                .send(("dpc", irql::current(), thread_name()))
                .unwrap();
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    let item = WorkItem::create(
        &dev,
        WorkItemConfig::new(move |_cx| {
            tx2.lock()
                .unwrap()
                .send(("work item", irql::current(), thread_name()))
                .unwrap();
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    dpc.enqueue();
    item.enqueue();
    let mut seen: Vec<_> = (0..2)
        .map(|_| rx.recv_timeout(TIMEOUT).expect("callback ran"))
        .collect();
    seen.sort();
    assert_eq!((seen[0].0, seen[0].1), ("dpc", Irql::Dispatch));
    assert!(seen[0].2.starts_with("nt-dpc"), "{:?}", seen[0].2);
    assert_eq!((seen[1].0, seen[1].1), ("work item", Irql::Passive));
    assert!(seen[1].2.starts_with("nt-worker"), "{:?}", seen[1].2);
}

/// Spec §4.3: `WdfTimerStop(Wait=TRUE)` loops again if the running callback restarted the
/// timer, so once it returns the timer is stopped: a callback that re-arms itself while the stop
/// waits for it does not run again.
#[test]
fn timer_stop_with_wait_stops_a_timer_its_running_callback_restarted() {
    let clock = Arc::new(ManualClock::new());
    let kernel = manual_kernel(&clock, 1, 1);
    let driver = driver(&kernel);
    let dev = device(&driver, "as-timer-stop-rearm", ObjectAttributes::default());
    let me: Arc<OnceLock<Weak<Timer>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (entered, gate) = (Arc::new(AtomicBool::new(false)), Arc::new(Gate::default()));
    let (m, c, e, g) = (me.clone(), calls.clone(), entered.clone(), gate.clone());
    let timer = Timer::create(
        &dev,
        TimerConfig::new(move |_cx| {
            c.fetch_add(1, Ordering::SeqCst);
            e.store(true, Ordering::SeqCst);
            g.wait(TIMEOUT);
            // A self-re-arming one-shot timer (a watchdog that keeps itself going).
            if let Some(t) = m.get().and_then(Weak::upgrade) {
                t.start(Duration::from_millis(1));
            }
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    assert!(me.set(Arc::downgrade(&timer)).is_ok());
    timer.start(Duration::from_millis(1));
    clock.advance(Duration::from_millis(1));
    eventually("the timer callback is running", || {
        entered.load(Ordering::SeqCst)
    });

    let g = gate.clone();
    let opener = std::thread::spawn(move || {
        // Let the stop begin waiting before the callback re-arms the timer.
        std::thread::sleep(Duration::from_millis(30));
        g.open();
    });
    let t = timer.clone();
    within("Timer::stop(true)", move || t.stop(true));
    opener.join().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    for _ in 0..3 {
        clock.advance(Duration::from_millis(1));
        let k = kernel.clone();
        within("flush_dpcs", move || k.flush_dpcs());
        let k = kernel.clone();
        within("flush_work", move || k.flush_work());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the timer fired again after Timer::stop(true) returned"
    );
}
