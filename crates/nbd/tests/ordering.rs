//! Replies leave in completion order: a device that holds one request back does not hold up
//! the requests behind it. Also checks the writer-thread reply path.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RawClient, TestServer, Transport, ramdisk};
use nbd::ExportInfo;
use nbd::protocol::{self as p, MAX_REQUEST_SIZE};
use nbd::server::{ListenAddr, ReplyPath, Server, ServerOptions};
use nt::NtStatus;
use nt::io::{Irp, IrpHandler, MajorFunction};

/// Completes every request at once, except reads at offset 0, which a helper thread completes
/// 300 ms later.
struct SlowFirstSector;

impl IrpHandler for SlowFirstSector {
    fn dispatch(&self, mut irp: Irp) {
        match irp.major() {
            MajorFunction::Read if irp.offset() == 0 => {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    let n = irp.length();
                    irp.output().fill(0xAA);
                    irp.complete(NtStatus::SUCCESS, n);
                });
            }
            MajorFunction::Read => {
                let n = irp.length();
                irp.output().fill(0xBB);
                irp.complete(NtStatus::SUCCESS, n);
            }
            _ => irp.complete(NtStatus::SUCCESS, 0),
        }
    }
}

#[test]
fn a_slow_request_does_not_hold_up_later_replies() {
    let io = nt::io::IoManager::new();
    io.create_device("slow", Arc::new(SlowFirstSector)).unwrap();
    let export = ExportInfo {
        name: "slow".into(),
        description: String::new(),
        size: 1 << 20,
        read_only: false,
        flush: true,
        fua: true,
        trim: false,
        write_zeroes: false,
        multi_conn: false,
        block_status: false,
        min_block: 512,
        preferred_block: 4096,
        max_block: MAX_REQUEST_SIZE,
    };
    let dir = common::TempDir::new("order");
    let listen = ListenAddr::Unix(dir.path().join("s.sock"));
    let server = Server::bind(io, "slow", export, &listen, ServerOptions::default()).unwrap();
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.run());

    let mut c = RawClient::connect(&listen);
    c.go(true, false);
    c.send(p::CMD_READ, 0, 1, 0, 512, &[]);
    c.send(p::CMD_READ, 0, 2, 512, 512, &[]);
    c.send(p::CMD_FLUSH, 0, 3, 0, 0, &[]);
    let first = c.reply(0).unwrap();
    let second = c.reply(0).unwrap();
    let third = c.reply(0).unwrap();
    assert_eq!((first.cookie, &first.data[..]), (2, &[0xBB; 512][..]));
    assert_eq!(second.cookie, 3);
    assert_eq!((third.cookie, &third.data[..]), (1, &[0xAA; 512][..]));

    // A disconnect while the slow read is in flight still answers it first.
    c.send(p::CMD_READ, 0, 4, 0, 512, &[]);
    c.send(p::CMD_DISC, 0, 5, 0, 0, &[]);
    let r = c.reply(0).unwrap();
    assert_eq!((r.cookie, r.error), (4, 0));
    assert!(c.closed_by_server());

    stop.shutdown();
    let stats = t.join().unwrap();
    assert_eq!(stats.pending, 2);
}

#[test]
fn writer_thread_reply_path_serves_correctly() {
    let s = TestServer::start_with(ramdisk(4 << 20), Transport::Tcp, ReplyPath::WriterThread);
    let mut c = s.connect();
    c.go(false, false);
    for k in 0..64u64 {
        c.send(p::CMD_WRITE, 0, k, k * 4096, 4096, &[k as u8; 4096]);
    }
    for _ in 0..64 {
        assert_eq!(c.reply(0).unwrap().error, 0);
    }
    for k in 0..64u64 {
        c.send(p::CMD_READ, 0, k, k * 4096, 4096, &[]);
        let r = c.reply(4096).unwrap();
        assert_eq!((r.cookie, r.data), (k, vec![k as u8; 4096]));
    }
    // Errors go the same way.
    c.send(p::CMD_READ, 0, 99, 4 << 20, 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, p::Errno::Inval.code());
}
