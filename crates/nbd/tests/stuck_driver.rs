//! Shutdown against a block driver that does not complete a write: the server cancels what is
//! in flight after the grace period and abandons, after a second one, what the driver still
//! holds, so a misbehaving driver cannot hang the shutdown.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{RawClient, TempDir};
use drivers::ramdisk::{IOCTL_DISK_GET_LENGTH_INFO, IOCTL_DISK_IS_WRITABLE};
use nbd::protocol as p;
use nbd::server::{ListenAddr, Server, ServerOptions, ServerStats};
use nt::NtStatus;
use wdf::{
    CancelableRequest, DeviceInit, DispatchType, Driver, ObjectAttributes, QueueConfig, Request,
};

const SIZE: u64 = 1 << 20;
const GRACE: Duration = Duration::from_millis(300);

/// What the driver does with writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Keeps them, never completes them, ignores cancellation.
    Hold,
    /// Keeps them cancelable; the cancel routine completes them with `STATUS_CANCELLED`.
    HoldCancelable,
}

/// The requests the driver is sitting on.
#[derive(Default)]
struct Held {
    plain: Vec<Request>,
    cancelable: Vec<CancelableRequest>,
}

/// A block device that answers the probe and reads, and keeps every write.
fn stuck_disk(kernel: &nt::Kernel, writes: Writes) -> Arc<Mutex<Held>> {
    let driver = Driver::create(kernel, ObjectAttributes::default()).unwrap();
    let device = driver.create_device(DeviceInit::new("stuck")).unwrap();
    let held = Arc::new(Mutex::new(Held::default()));
    let mut q = QueueConfig::new(DispatchType::Parallel);
    q.default_queue = true;
    q.io_read(|_cx, mut req, len| match req.output_buffer(len) {
        Ok(out) => {
            out.fill(0);
            req.complete_with_information(NtStatus::SUCCESS, len);
        }
        Err(s) => req.complete(s),
    });
    let h = held.clone();
    q.io_write(move |_cx, req, _len| match writes {
        Writes::Hold => h.lock().unwrap().plain.push(req),
        Writes::HoldCancelable => {
            match req.mark_cancelable(|_cx, r| r.complete(NtStatus::CANCELLED)) {
                Ok(ticket) => h.lock().unwrap().cancelable.push(ticket),
                Err(e) => e.request.complete(e.status),
            }
        }
    });
    q.io_device_control(|_cx, mut req, _out, _in, code| match code {
        IOCTL_DISK_GET_LENGTH_INFO => match req.output_buffer(8) {
            Ok(out) => {
                out[..8].copy_from_slice(&SIZE.to_le_bytes());
                req.complete_with_information(NtStatus::SUCCESS, 8);
            }
            Err(s) => req.complete(s),
        },
        IOCTL_DISK_IS_WRITABLE => req.complete(NtStatus::SUCCESS),
        _ => req.complete(NtStatus::INVALID_DEVICE_REQUEST),
    });
    // Flushes: nothing to write.
    q.io_default(|_cx, req| req.complete(NtStatus::SUCCESS));
    device.create_queue(q, ObjectAttributes::default()).unwrap();
    held
}

/// Serves the stuck disk, sends one write and one read, stops the server once the write is
/// held, and returns the stats, how long the stop took, and the client.
fn run(writes: Writes) -> (ServerStats, Duration, RawClient, Arc<Mutex<Held>>) {
    let kernel = nt::Kernel::builder().processors(2).workers(2).build();
    let held = stuck_disk(&kernel, writes);
    let export = nbd::probe_export(kernel.io(), "stuck", "disk", "stuck test disk", false).unwrap();
    let dir = TempDir::new("stuck");
    let listen = ListenAddr::Unix(dir.path().join("nbd.sock"));
    let options = ServerOptions {
        shutdown_grace: GRACE,
        ..ServerOptions::default()
    };
    let server = Server::bind(kernel.io().clone(), "stuck", export, &listen, options).unwrap();
    let stop = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());

    let mut c = RawClient::connect(&listen);
    c.go(true, false);
    c.send(p::CMD_WRITE, 0, 1, 0, 512, &[1; 512]);
    c.send(p::CMD_READ, 0, 2, 0, 512, &[]);
    // The read is answered; the write stays with the driver.
    let r = c.reply(512).unwrap();
    assert_eq!((r.cookie, r.error), (2, 0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while {
        let h = held.lock().unwrap();
        h.plain.len() + h.cancelable.len() == 0
    } {
        assert!(
            Instant::now() < deadline,
            "the write never reached the driver"
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    let start = Instant::now();
    stop.shutdown();
    let stats = thread.join().unwrap();
    (stats, start.elapsed(), c, held)
}

#[test]
fn a_write_the_driver_never_completes_is_abandoned_after_two_grace_periods() {
    let (stats, took, mut c, held) = run(Writes::Hold);
    assert_eq!(stats.abandoned, 1);
    assert!(stats.final_flush.is_success(), "{}", stats.final_flush);
    // Two grace periods, not forever (with room for a loaded machine).
    assert!(took >= 2 * GRACE, "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The client gets no reply for the write: the connection just ends.
    assert!(c.closed_by_server());
    assert_eq!(held.lock().unwrap().plain.len(), 1);
}

#[test]
fn a_cancelable_write_is_cancelled_on_shutdown_and_the_client_told() {
    let (stats, took, mut c, held) = run(Writes::HoldCancelable);
    assert_eq!(stats.abandoned, 0);
    assert!(took >= GRACE, "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The cancel routine completed the write; the client got its error reply before the end.
    let r = c.reply(0).unwrap();
    assert_eq!(r.cookie, 1);
    assert_ne!(r.error, 0);
    assert!(c.closed_by_server());
    assert!(held.lock().unwrap().cancelable.len() == 1);
}
