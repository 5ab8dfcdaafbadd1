//! The echo driver: round trip, the sample's edge cases, cancellation while pending, closing a
//! handle with pending requests, and many clients with random cancels (every request completes
//! exactly once).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use drivers::echo::{self, EchoConfig, EchoDevice, MAX_WRITE_LENGTH, STATUS_BUFFER_OVERFLOW};
use nt::NtStatus;
use nt::io::IoOp;
use wdf::Driver;

use common::*;

/// A delay no test waits for: requests stay pending until cancelled.
const FOREVER: Duration = Duration::from_secs(3600);

fn make(driver: &Arc<Driver>, name: &str, delay: Duration) -> EchoDevice {
    let config = EchoConfig {
        delay,
        ..EchoConfig::default()
    };
    echo::create(driver, name, config).expect("create the echo device")
}

fn write_op(data: &[u8]) -> IoOp {
    IoOp::Write {
        offset: 0,
        data: data.to_vec(),
    }
}

fn read_op(length: usize) -> IoOp {
    IoOp::Read { offset: 0, length }
}

/// Polls `cond` (no timing assertion: only a bound on how long to try).
#[track_caller]
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn echo_round_trip() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = make(&driver, "echo-rt", Duration::from_millis(1));
    let h = kernel.io().open("echo-rt").unwrap();

    let c = write(&h, 0, b"hello, echo".to_vec());
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 11));
    let c = read(&h, 0, 100);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 11));
    assert_eq!(c.data, b"hello, echo");
    // A shorter read gets the start; reading does not consume.
    assert_eq!(read(&h, 0, 5).data, b"hello");
    assert_eq!(read(&h, 0, 11).data, b"hello, echo");
    // A write replaces the buffer.
    assert_eq!(write(&h, 0, b"bye".to_vec()).information, 3);
    assert_eq!(read(&h, 0, 100).data, b"bye");
    assert_eq!(dev.stored().unwrap(), b"bye");

    let s = dev.stats();
    assert_eq!((s.writes, s.reads), (2, 4));
    assert_eq!(s.completed_by_timer, 6);
    assert_eq!(s.cancelled + s.cancelled_at_cleanup, 0);
    assert!(dev.timer().unwrap().is_serialized());
    assert_eq!(close(h), NtStatus::SUCCESS);
    assert_no_violations();
}

#[test]
fn read_before_any_write_returns_nothing_at_once() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    // Even with a delay nobody waits for, the sample completes such a read immediately.
    let dev = make(&driver, "echo-empty", FOREVER);
    let h = kernel.io().open("echo-empty").unwrap();
    let c = read(&h, 0, 64);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 0));
    assert!(dev.stored().is_none());
    assert_no_violations();
}

#[test]
fn an_oversized_write_is_buffer_overflow() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = make(&driver, "echo-big", Duration::from_millis(1));
    let h = kernel.io().open("echo-big").unwrap();
    let c = write(&h, 0, vec![1; MAX_WRITE_LENGTH + 1]);
    assert_eq!((c.status, c.information), (STATUS_BUFFER_OVERFLOW, 0));
    assert!(dev.stored().is_none());
    let c = write(&h, 0, vec![2; MAX_WRITE_LENGTH]);
    assert_eq!(
        (c.status, c.information),
        (NtStatus::SUCCESS, MAX_WRITE_LENGTH)
    );
    assert_no_violations();
}

#[test]
fn cancel_while_pending_completes_cancelled() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = make(&driver, "echo-cancel", FOREVER);
    let h = kernel.io().open("echo-cancel").unwrap();

    let w = h.submit(write_op(b"kept"));
    // The sequential queue presents the write at once; it waits, cancelable, for the timer.
    eventually("the write is driver-owned", || {
        dev.queue().driver_owned_count() == 1
    });
    assert!(!w.is_complete());
    w.cancel();
    let c = wait(w);
    assert_eq!((c.status, c.information), (NtStatus::CANCELLED, 0));
    // As in the sample, the data was stored when the write was presented.
    assert_eq!(dev.stored().unwrap(), b"kept");

    // The queue moves on: a read pends in turn and can be cancelled too.
    let r = h.submit(read_op(4));
    eventually("the read is driver-owned", || {
        dev.queue().driver_owned_count() == 1
    });
    r.cancel();
    assert_eq!(wait(r).status, NtStatus::CANCELLED);
    assert_eq!(dev.stats().cancelled, 2);
    assert_eq!(dev.stats().completed_by_timer, 0);
    assert_eq!(close(h), NtStatus::SUCCESS);
    assert_no_violations();
}

/// Closing a handle cancels everything it still has at the driver: the request the driver
/// owns (by `EvtFileCleanup`) and the ones queued behind it. Another handle's request is not
/// touched.
#[test]
fn closing_a_handle_cancels_its_pending_requests() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = make(&driver, "echo-close", FOREVER);
    let h1 = kernel.io().open("echo-close").unwrap();
    let h2 = kernel.io().open("echo-close").unwrap();

    let first = h1.submit(write_op(b"one"));
    eventually("the first write is driver-owned", || {
        dev.queue().driver_owned_count() == 1
    });
    let queued: Vec<_> = vec![
        h1.submit(read_op(3)),
        h1.submit(write_op(b"two")),
        h1.submit(read_op(3)),
    ];
    let other = h2.submit(write_op(b"other"));
    let h1_more = h1.submit(read_op(1));
    assert_eq!(dev.queue().pending_count(), 5);

    assert_eq!(close(h1), NtStatus::SUCCESS);
    assert_eq!(wait(first).status, NtStatus::CANCELLED);
    for p in queued {
        assert_eq!(wait(p).status, NtStatus::CANCELLED);
    }
    assert_eq!(wait(h1_more).status, NtStatus::CANCELLED);
    assert!(dev.stats().cancelled_at_cleanup >= 1);

    // h2's write was not cancelled: it is the one the driver owns now.
    eventually("h2's write is driver-owned", || {
        dev.queue().driver_owned_count() == 1
    });
    assert!(!other.is_complete());
    assert_eq!(dev.stored().unwrap(), b"other");
    other.cancel();
    assert_eq!(wait(other).status, NtStatus::CANCELLED);
    assert_eq!(close(h2), NtStatus::SUCCESS);
    assert_no_violations();
}

/// Many clients doing write/read pairs, some cancelled at random moments: every request
/// completes (success or cancelled) exactly once, and the device's accounting agrees: each
/// success from the timer, each cancellation from the cancel routine or from the framework
/// while the request was still queued.
#[test]
fn many_clients_with_random_cancels_complete_every_request_exactly_once() {
    const CLIENTS: u64 = 4;
    const PAIRS: u64 = 60;
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = make(&driver, "echo-stress", Duration::from_micros(300));

    let payload = |client: u64, i: u64| format!("client {client} pair {i}").into_bytes();
    let all_payloads: HashSet<Vec<u8>> = (0..CLIENTS)
        .flat_map(|c| (0..PAIRS).map(move |i| payload(c, i)))
        .collect();

    let totals = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (kernel, all) = (&kernel, &all_payloads);
                s.spawn(move || {
                    let h = kernel.io().open("echo-stress").unwrap();
                    let mut rng = Rng::new(client + 100);
                    let (mut ok, mut cancelled, mut empty_reads) = (0u64, 0u64, 0u64);
                    for i in 0..PAIRS {
                        let ops = [write_op(&payload(client, i)), read_op(64)];
                        for op in ops {
                            let is_read = matches!(op, IoOp::Read { .. });
                            let p = h.submit(op);
                            if rng.one_in(4) {
                                if rng.one_in(2) {
                                    std::thread::sleep(Duration::from_micros(rng.below(500)));
                                }
                                p.cancel();
                            }
                            let c = wait(p);
                            match c.status {
                                NtStatus::SUCCESS => {
                                    ok += 1;
                                    if is_read {
                                        if c.information == 0 {
                                            empty_reads += 1;
                                        } else {
                                            assert!(all.contains(&c.data), "read {:?}", c.data);
                                        }
                                    }
                                }
                                NtStatus::CANCELLED => cancelled += 1,
                                other => panic!("unexpected status {other}"),
                            }
                        }
                    }
                    assert_eq!(close(h), NtStatus::SUCCESS);
                    (ok, cancelled, empty_reads)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    });
    let (ok, cancelled, empty_reads) = totals;
    assert_eq!(ok + cancelled, CLIENTS * PAIRS * 2);

    let s = dev.stats();
    let q = dev.queue().stats();
    // Successes: completed by the timer, or reads answered at once before any write.
    assert_eq!(ok, s.completed_by_timer + empty_reads, "{s:?}");
    // Cancellations: by the cancel routine, or by the framework while still queued.
    assert_eq!(
        cancelled,
        s.cancelled + s.cancelled_at_cleanup + q.cancelled_queued,
        "{s:?} {q:?}"
    );
    assert_eq!(dev.queue().driver_owned_count(), 0);
    assert_eq!(dev.queue().pending_count(), 0);
    assert_no_violations();
}

#[test]
fn the_device_routes_only_reads_and_writes() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    make(&driver, "echo-route", Duration::from_millis(1));
    let h = kernel.io().open("echo-route").unwrap();
    assert_eq!(
        ioctl(&h, 0x0022_2000, Vec::new(), 8).status,
        NtStatus::INVALID_DEVICE_REQUEST
    );
    assert_eq!(flush(&h).status, NtStatus::INVALID_DEVICE_REQUEST);
    assert_no_violations();
}
