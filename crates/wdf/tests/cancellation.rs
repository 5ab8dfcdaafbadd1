//! Cancellation of driver-owned and queued requests (spec §5.10, §6.3): cancel routines,
//! `mark_cancelable` / `mark_cancelable_ex`, `unmark`, `EvtIoCanceledOnQueue`,
//! `is_canceled`, and the echo sample's timer-versus-cancel race.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use nt::NtStatus;
use nt::irql::{self, Irql};
use nt::verifier;
use wdf::verifier::rules;
use wdf::{
    CancelableRequest, DispatchType, ExecutionLevel, ObjectAttributes, Queue, QueueConfig,
    ScopeLocked, SyncScope, Timer, TimerConfig,
};

use common::*;

const SPIN: Duration = Duration::from_micros(30);

/// A manual queue with Queue scope on a default (Dispatch) device; the driver retrieves.
fn manual_queue(name: &str) -> (nt::Kernel, Arc<wdf::Device>, Arc<Queue>, nt::io::Handle) {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, name, ObjectAttributes::default());
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    let queue = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();
    let h = kernel.io().open(name).unwrap();
    (kernel, dev, queue, h)
}

/// Rule: a cancelable driver-owned request that its sender cancels goes to the driver's cancel
/// routine, which runs under the queue's scope lock (it gets a token, and never overlaps the
/// queue's I/O callbacks) and completes the request with `STATUS_CANCELLED`.
#[test]
fn cancel_routine_runs_under_queue_lock_and_completes_cancelled() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 60;

    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "cancel-routine-lock", ObjectAttributes::default());
    let inflight = Arc::new(InFlight::default());
    let routines = Arc::new(AtomicUsize::new(0));
    let routine_without_token = Arc::new(AtomicUsize::new(0));
    let routine_without_lock = Arc::new(AtomicUsize::new(0));
    let tickets: Arc<Mutex<Vec<CancelableRequest>>> = Arc::default();

    let mut cfg = QueueConfig::new(DispatchType::Parallel);
    cfg.default_queue = true;
    let (f, r, nt_, nl, t) = (
        inflight.clone(),
        routines.clone(),
        routine_without_token.clone(),
        routine_without_lock.clone(),
        tickets.clone(),
    );
    cfg.io_read(move |_cx, req, _len| {
        let g = f.enter();
        spin_for(SPIN);
        let (f, r, nt_, nl) = (f.clone(), r.clone(), nt_.clone(), nl.clone());
        let ticket = req
            .mark_cancelable(move |cx, req| {
                let g = f.enter();
                if cx.scope().is_none() {
                    nt_.fetch_add(1, Ordering::SeqCst);
                }
                if !cx.queue().callback_lock().is_owned_by_current_thread() {
                    nl.fetch_add(1, Ordering::SeqCst);
                }
                spin_for(SPIN);
                drop(g);
                r.fetch_add(1, Ordering::SeqCst);
                req.complete(NtStatus::CANCELLED);
            })
            .expect("mark_cancelable on a presented request");
        drop(g);
        t.lock().unwrap().push(ticket);
    });
    let queue = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();

    let h = kernel.io().open("cancel-routine-lock").unwrap();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let h = &h;
            s.spawn(move || {
                for _ in 0..PER_THREAD {
                    let p = h.submit(read_op(0, 8));
                    assert!(!p.is_complete(), "the driver keeps the request");
                    p.cancel();
                    let c = wait(p);
                    assert_eq!(c.status, NtStatus::CANCELLED);
                    assert_eq!(c.information, 0);
                }
            });
        }
    });

    let total = THREADS * PER_THREAD;
    assert_eq!(routines.load(Ordering::SeqCst), total);
    assert_eq!(
        routine_without_token.load(Ordering::SeqCst),
        0,
        "the cancel routine of a Queue-scope queue gets a scope token"
    );
    assert_eq!(
        routine_without_lock.load(Ordering::SeqCst),
        0,
        "the cancel routine runs holding the queue's callback lock"
    );
    assert_eq!(
        inflight.max(),
        1,
        "cancel routines must never overlap the queue's serialized I/O callbacks"
    );
    assert_eq!(queue.stats().cancel_routines, total as u64);
    // Every ticket lost the race: unmark reports the cancellation.
    for t in tickets.lock().unwrap().drain(..) {
        assert_eq!(t.unmark().unwrap_err(), NtStatus::CANCELLED);
    }
    eventually("no driver-owned request left", || {
        queue.driver_owned_count() == 0
    });
}

/// Rule: `mark_cancelable_ex` on a request that is already cancelled does not install or
/// schedule anything: it fails with `STATUS_CANCELLED` and gives the request back, still owned
/// by the driver, which completes it.
#[test]
fn mark_cancelable_ex_on_cancelled_request_returns_it() {
    let (_kernel, _dev, queue, h) = manual_queue("cancel-ex-already");
    let routine_ran = Arc::new(AtomicBool::new(false));

    let p = h.submit(read_op(0, 4));
    let req = queue.retrieve_next_request().unwrap();
    assert_eq!(req.id(), p.id());
    p.cancel();
    assert!(
        !p.is_complete(),
        "a driver-owned, non-cancelable request stays"
    );

    let ran = routine_ran.clone();
    let err = req
        .mark_cancelable_ex(move |_cx, req| {
            ran.store(true, Ordering::SeqCst);
            req.complete(NtStatus::CANCELLED);
        })
        .expect_err("mark_cancelable_ex on a cancelled request must fail");
    assert_eq!(err.status, NtStatus::CANCELLED);
    assert_eq!(err.request.id(), p.id());
    assert_eq!(queue.driver_owned_count(), 1, "the driver still owns it");
    assert!(!p.is_complete());

    err.request.complete(NtStatus::CANCELLED);
    let c = wait(p);
    assert_eq!(c.status, NtStatus::CANCELLED);
    assert!(
        !routine_ran.load(Ordering::SeqCst),
        "no routine was scheduled"
    );
    assert_eq!(queue.stats().cancel_routines, 0);
    eventually("driver-owned count back to 0", || {
        queue.driver_owned_count() == 0
    });
}

/// Rule: `mark_cancelable` (not Ex) on a request that is already cancelled schedules the cancel
/// routine: called from inside an I/O callback, the routine runs after that callback returns.
#[test]
fn mark_cancelable_on_cancelled_request_schedules_routine_after_callback() {
    let kernel = kernel();
    let driver = driver(&kernel);
    // Passive level: an arrival at DISPATCH_LEVEL is deferred to a work item, so the callback
    // runs on a worker while the test thread holds the pending request and can cancel it.
    let dev = device(
        &driver,
        "cancel-nonex-already",
        ObjectAttributes::level(ExecutionLevel::Passive).with_scope(SyncScope::Queue),
    );
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let cancelled_gate = Arc::new(Gate::default());
    let callback_returned = Arc::new(AtomicBool::new(false));
    let (events_tx, events_rx) = mpsc::channel::<String>();
    let events_tx = Arc::new(Mutex::new(events_tx));

    let mut cfg = QueueConfig::new(DispatchType::Sequential);
    cfg.default_queue = true;
    let (gate, returned, ev) = (
        cancelled_gate.clone(),
        callback_returned.clone(),
        events_tx.clone(),
    );
    cfg.io_read(move |_cx, req, _len| {
        entered_tx.lock().unwrap().send(()).unwrap();
        assert!(gate.wait(TIMEOUT), "the test never cancelled the request");
        assert!(req.is_canceled());
        let (returned2, ev2) = (returned.clone(), ev.clone());
        let ticket = req
            .mark_cancelable(move |cx, req| {
                let msg = format!(
                    "routine: after_callback={} token={}",
                    returned2.load(Ordering::SeqCst),
                    cx.scope().is_some()
                );
                ev2.lock().unwrap().send(msg).unwrap();
                req.complete(NtStatus::CANCELLED);
            })
            .expect("mark_cancelable on a cancelled request still succeeds");
        ev.lock()
            .unwrap()
            .send("callback: marked".to_owned())
            .unwrap();
        // The ticket is dropped: the cancel path owns the request now.
        drop(ticket);
        returned.store(true, Ordering::SeqCst);
    });
    let queue = dev.create_queue(cfg, ObjectAttributes::default()).unwrap();

    let h = kernel.io().open("cancel-nonex-already").unwrap();
    let p = h.submit_at(read_op(0, 4), Irql::Dispatch);
    assert_eq!(irql::current(), Irql::Passive);
    entered_rx
        .recv_timeout(TIMEOUT)
        .expect("the deferred callback never ran");
    p.cancel();
    cancelled_gate.open();

    let first = events_rx.recv_timeout(TIMEOUT).expect("callback event");
    let second = events_rx.recv_timeout(TIMEOUT).expect("routine event");
    assert_eq!(first, "callback: marked");
    assert_eq!(
        second, "routine: after_callback=true token=true",
        "the routine runs after the I/O callback returned, under the scope lock"
    );
    let c = wait(p);
    assert_eq!(c.status, NtStatus::CANCELLED);
    assert_eq!(queue.stats().cancel_routines, 1);
}

/// Rule: `mark_cancelable` on an already-cancelled request outside any callback (no dispatch
/// loop active) runs the cancel routine before it returns.
#[test]
fn mark_cancelable_on_cancelled_request_outside_callback_runs_routine_at_once() {
    let (_kernel, _dev, queue, h) = manual_queue("cancel-nonex-outside");
    let ran = Arc::new(AtomicUsize::new(0));
    let p = h.submit(read_op(0, 4));
    let req = queue.retrieve_next_request().unwrap();
    p.cancel();
    let r = ran.clone();
    let ticket = req
        .mark_cancelable(move |_cx, req| {
            r.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::CANCELLED);
        })
        .unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(p.is_complete());
    assert_eq!(ticket.unmark().unwrap_err(), NtStatus::CANCELLED);
    assert_eq!(wait(p).status, NtStatus::CANCELLED);
}

/// Rule: once the cancel path has claimed a cancelable request, `unmark` fails with
/// `STATUS_CANCELLED` (the cancel routine completes it).
#[test]
fn unmark_after_cancel_returns_cancelled() {
    let (_kernel, _dev, queue, h) = manual_queue("cancel-unmark-late");
    let ran = Arc::new(AtomicUsize::new(0));
    let p = h.submit(read_op(0, 4));
    let req = queue.retrieve_next_request().unwrap();
    let r = ran.clone();
    let ticket = req
        .mark_cancelable(move |_cx, req| {
            r.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::CANCELLED);
        })
        .unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    p.cancel();
    let c = wait(p);
    assert_eq!(c.status, NtStatus::CANCELLED);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(ticket.unmark().unwrap_err(), NtStatus::CANCELLED);
    eventually("driver-owned count back to 0", || {
        queue.driver_owned_count() == 0
    });
}

/// Rule: `unmark` before any cancellation gives the request back; a later cancel no longer
/// reaches the cancel routine, and the driver completes the request normally.
#[test]
fn unmark_before_cancel_returns_request() {
    let (_kernel, _dev, queue, h) = manual_queue("cancel-unmark-early");
    let ran = Arc::new(AtomicUsize::new(0));
    let p = h.submit(read_op(0, 4));
    let req = queue.retrieve_next_request().unwrap();
    let r = ran.clone();
    let ticket = req
        .mark_cancelable(move |_cx, req| {
            r.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::CANCELLED);
        })
        .unwrap();
    assert_eq!(ticket.id(), p.id());
    let req = ticket.unmark().expect("unmark before a cancel succeeds");
    assert_eq!(req.id(), p.id());
    p.cancel();
    assert!(!p.is_complete());
    assert!(req.is_canceled());
    req.complete_with_information(NtStatus::SUCCESS, 4);
    let c = wait(p);
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert_eq!(c.information, 4);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the routine never runs");
    assert_eq!(queue.stats().cancel_routines, 0);
}

/// Rule: a previously presented request cancelled while queued goes to `EvtIoCanceledOnQueue`
/// (serialized, driver-owned again); a never-presented one is completed with
/// `STATUS_CANCELLED` by the framework without the callback.
#[test]
fn canceled_on_queue_only_for_previously_presented_requests() {
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = device(&driver, "cancel-on-queue", ObjectAttributes::default());
    let (tx, rx) = mpsc::channel::<(u64, bool)>();
    let tx = Mutex::new(tx);
    let mut cfg = QueueConfig::new(DispatchType::Manual);
    cfg.default_queue = true;
    cfg.io_canceled_on_queue(move |cx, req| {
        tx.lock()
            .unwrap()
            .send((req.id(), cx.scope().is_some()))
            .unwrap();
        // Distinguishable from the framework's own STATUS_CANCELLED completion.
        req.complete_with_information(NtStatus::CANCELLED, 0);
    });
    let queue = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();
    let h = kernel.io().open("cancel-on-queue").unwrap();

    let presented = h.submit(read_op(0, 4));
    let never = h.submit(read_op(0, 4));
    let r = queue.retrieve_next_request().unwrap();
    assert_eq!(r.id(), presented.id());
    r.requeue().unwrap();
    assert_eq!(queue.status().queued, 2);

    presented.cancel();
    let (id, token) = rx
        .recv_timeout(TIMEOUT)
        .expect("EvtIoCanceledOnQueue was not called");
    assert_eq!(id, presented.id());
    assert!(
        token,
        "EvtIoCanceledOnQueue is serialized by the scope lock"
    );
    assert_eq!(wait(presented).status, NtStatus::CANCELLED);

    never.cancel();
    assert_eq!(wait(never).status, NtStatus::CANCELLED);
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "a never-presented request must not reach EvtIoCanceledOnQueue"
    );
    assert_eq!(queue.stats().cancelled_queued, 2);
    assert_eq!(queue.status().queued, 0);
    eventually("driver-owned count back to 0", || {
        queue.driver_owned_count() == 0
    });
}

/// Rule: `is_canceled` on a driver-owned request that is not cancelable reports the sender's
/// cancel (the driver polls it; nothing else happens).
#[test]
fn is_canceled_reports_cancel_of_non_cancelable_driver_owned_request() {
    let (_kernel, _dev, queue, h) = manual_queue("cancel-is-canceled");
    let p = h.submit(read_op(0, 4));
    let req = queue.retrieve_next_request().unwrap();
    assert!(!req.is_canceled());
    p.cancel();
    assert!(req.is_canceled());
    assert!(
        !p.is_complete(),
        "cancelling a non-cancelable request completes nothing"
    );
    req.complete(NtStatus::CANCELLED);
    assert_eq!(wait(p).status, NtStatus::CANCELLED);
}

// ---------------------------------------------------------------------------------------------
// The echo sample's race: a timer completes cancelable requests, senders cancel them.
// ---------------------------------------------------------------------------------------------

/// The echo driver's device context: the tickets of the requests in flight, protected by the
/// queue's scope lock, and what each completion path did.
#[derive(Default)]
struct EchoCtx {
    tickets: OnceLock<ScopeLocked<Vec<(CancelableRequest, usize)>>>,
    by_timer: AtomicUsize,
    lost_by_timer: AtomicUsize,
    by_cancel_routine: AtomicUsize,
    unserialized: AtomicUsize,
}

struct EchoOutcome {
    total: usize,
    success: usize,
    cancelled: usize,
}

fn echo_race(name: &str, dispatch: DispatchType) -> (EchoOutcome, Arc<EchoCtx>, Arc<Queue>) {
    const CLIENTS: u64 = 4;
    const BATCHES: usize = 100;
    const WINDOW: usize = 4;

    verifier_record();
    let kernel = nt::Kernel::builder().processors(2).workers(2).build();
    let driver = driver(&kernel);
    let mut init = wdf::DeviceInit::new(name);
    init.context(|_| EchoCtx::default());
    let dev = driver.create_device(init).unwrap();
    let ctx = dev.context::<EchoCtx>().unwrap();

    let mut cfg = QueueConfig::new(dispatch);
    cfg.default_queue = true;
    let c = ctx.clone();
    cfg.io_read(move |cx, req, len| {
        let c2 = c.clone();
        let ticket = req
            .mark_cancelable(move |cx, req| {
                if cx.scope().is_none() {
                    c2.unserialized.fetch_add(1, Ordering::SeqCst);
                }
                c2.by_cancel_routine.fetch_add(1, Ordering::SeqCst);
                req.complete(NtStatus::CANCELLED);
            })
            .expect("mark_cancelable");
        let token = cx.scope().expect("Queue scope lends a token");
        let list = c.tickets.get().expect("tickets set up before any I/O");
        list.get(token).push((ticket, len));
    });
    let queue = dev
        .create_queue(cfg, ObjectAttributes::scope(SyncScope::Queue))
        .unwrap();
    assert!(ctx.tickets.set(queue.scope_locked(Vec::new())).is_ok());

    let c = ctx.clone();
    let timer = Timer::create(
        &queue,
        TimerConfig::periodic(Duration::from_millis(1), move |cx| {
            let token = cx.scope().expect("the timer is serialized with the queue");
            let list = c.tickets.get().unwrap();
            let taken: Vec<_> = list.get(token).drain(..).collect();
            for (ticket, len) in taken {
                match ticket.unmark() {
                    Ok(req) => {
                        c.by_timer.fetch_add(1, Ordering::SeqCst);
                        req.complete_with_information(NtStatus::SUCCESS, len);
                    }
                    // The cancel routine owns it and completes it.
                    Err(status) => {
                        assert_eq!(status, NtStatus::CANCELLED);
                        c.lost_by_timer.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }),
        ObjectAttributes::default(),
    )
    .unwrap();
    assert!(timer.is_serialized());
    timer.start(Duration::from_millis(1));

    let h = kernel.io().open(name).unwrap();
    let success = AtomicUsize::new(0);
    let cancelled = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let (h, success, cancelled) = (&h, &success, &cancelled);
            s.spawn(move || {
                let rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ ((client + 1) * 0x1234_5678));
                for _ in 0..BATCHES {
                    let mut window = Vec::with_capacity(WINDOW);
                    for _ in 0..WINDOW {
                        let len = 1 + rng.below(32) as usize;
                        let action = rng.below(3);
                        window.push((h.submit(read_op(0, len)), len, action));
                    }
                    for (p, _, action) in &window {
                        match action {
                            0 => p.cancel(),
                            1 => {
                                std::thread::sleep(Duration::from_micros(rng.below(1500)));
                                p.cancel();
                            }
                            _ => {}
                        }
                    }
                    for (p, len, action) in window {
                        let c = wait(p);
                        match c.status {
                            NtStatus::SUCCESS => {
                                assert_eq!(c.information, len);
                                success.fetch_add(1, Ordering::SeqCst);
                            }
                            NtStatus::CANCELLED => {
                                assert_ne!(action, 2, "a request nobody cancelled was cancelled");
                                assert_eq!(c.information, 0);
                                cancelled.fetch_add(1, Ordering::SeqCst);
                            }
                            other => panic!("unexpected completion status {other}"),
                        }
                    }
                }
            });
        }
    });

    // Every request is complete on the client side; let the timer drop the lost tickets.
    eventually("the timer has handled every ticket", || {
        let mut token = queue.acquire_lock();
        ctx.tickets.get().unwrap().get(&mut token).is_empty()
    });
    let stopped = within("Timer::stop(true)", {
        let timer = timer.clone();
        move || timer.stop(true)
    });
    assert!(stopped, "the periodic timer was running");
    eventually("driver-owned count back to 0", || {
        queue.driver_owned_count() == 0
    });

    let outcome = EchoOutcome {
        total: CLIENTS as usize * BATCHES * WINDOW,
        success: success.load(Ordering::SeqCst),
        cancelled: cancelled.load(Ordering::SeqCst),
    };
    (outcome, ctx, queue)
}

fn assert_no_lost_or_double_completion() {
    for rule in [
        &rules::REQUEST_NOT_COMPLETED,
        &rules::CALLBACK_PANICKED,
        &nt::verifier::rules::IRP_NOT_COMPLETED,
        &nt::verifier::rules::CALLBACK_PANICKED,
    ] {
        assert_eq!(
            verifier::count(rule),
            0,
            "{}: {:?}",
            rule.name,
            verifier::recent()
        );
    }
}

/// Rule (echo sample, parallel queue): with a serialized timer completing cancelable requests
/// and senders cancelling them at random, every request is completed exactly once, by the timer
/// (after a successful unmark) or by its cancel routine.
#[test]
fn echo_timer_and_cancel_complete_each_request_once_parallel() {
    let (o, ctx, queue) = echo_race("echo-race-parallel", DispatchType::Parallel);
    assert_eq!(o.success + o.cancelled, o.total);
    let by_timer = ctx.by_timer.load(Ordering::SeqCst);
    let by_routine = ctx.by_cancel_routine.load(Ordering::SeqCst);
    assert_eq!(by_timer + by_routine, o.total, "driver-side completions");
    assert_eq!(by_timer, o.success);
    assert_eq!(by_routine, o.cancelled);
    assert!(ctx.lost_by_timer.load(Ordering::SeqCst) <= by_routine);
    assert_eq!(ctx.unserialized.load(Ordering::SeqCst), 0);
    // Parallel queues present every request at once: none is cancelled while queued.
    assert_eq!(queue.stats().cancelled_queued, 0);
    assert_eq!(queue.stats().cancel_routines, by_routine as u64);
    assert_no_lost_or_double_completion();
}

/// Rule (echo sample, sequential queue): same race; requests cancelled while still queued are
/// completed by the framework, and the three paths add up to the total.
#[test]
fn echo_timer_and_cancel_complete_each_request_once_sequential() {
    let (o, ctx, queue) = echo_race("echo-race-sequential", DispatchType::Sequential);
    assert_eq!(o.success + o.cancelled, o.total);
    let by_timer = ctx.by_timer.load(Ordering::SeqCst);
    let by_routine = ctx.by_cancel_routine.load(Ordering::SeqCst);
    let while_queued = queue.stats().cancelled_queued as usize;
    assert_eq!(
        by_timer + by_routine + while_queued,
        o.total,
        "driver-side completions"
    );
    assert_eq!(by_timer, o.success);
    assert_eq!(by_routine + while_queued, o.cancelled);
    assert_eq!(ctx.unserialized.load(Ordering::SeqCst), 0);
    assert_no_lost_or_double_completion();
}

/// Rule (spec §6.3, §5.8): while a purge is in progress, marking a driver-owned request
/// cancelable is a cancellation: the Ex variant fails with `STATUS_CANCELLED` and gives the
/// request back; the plain variant runs the cancel routine.
#[test]
fn mark_cancelable_during_purge_is_a_cancellation() {
    let (_kernel, _dev, queue, h) = manual_queue("cancel-during-purge");
    let p1 = h.submit(read_op(0, 4));
    let p2 = h.submit(read_op(0, 4));
    let r1 = queue.retrieve_next_request().unwrap();
    let r2 = queue.retrieve_next_request().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    queue.purge(Some(Box::new(move |_cx: &mut wdf::IoContext<'_, '_>| {
        tx.lock().unwrap().send(()).unwrap();
    })));
    assert!(
        !p1.is_complete() && !p2.is_complete(),
        "non-cancelable: awaited"
    );

    let err = r1
        .mark_cancelable_ex(|_cx, req| req.complete(NtStatus::CANCELLED))
        .expect_err("mark_cancelable_ex during a purge");
    assert_eq!(err.status, NtStatus::CANCELLED);
    err.request.complete(NtStatus::CANCELLED);
    assert_eq!(wait(p1).status, NtStatus::CANCELLED);

    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let ticket = r2
        .mark_cancelable(move |_cx, req| {
            r.fetch_add(1, Ordering::SeqCst);
            req.complete(NtStatus::CANCELLED);
        })
        .unwrap();
    assert_eq!(wait(p2).status, NtStatus::CANCELLED);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(ticket.unmark().unwrap_err(), NtStatus::CANCELLED);
    rx.recv_timeout(TIMEOUT).expect("purge-complete callback");
}
