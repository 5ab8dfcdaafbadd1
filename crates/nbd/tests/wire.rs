//! Malformed and hostile input over a real socket, against an in-process server: every case
//! gets the right NBD error or a disconnect of that client only, and the server keeps serving.

mod common;

use common::{RawClient, TestServer, Transport, ramdisk};
use nbd::protocol::{self as p, ClientOption, Errno, InfoRequest, OptionHeader};

const SIZE: u64 = 4 << 20;

fn server() -> TestServer {
    TestServer::start(ramdisk(SIZE), Transport::Unix)
}

/// The server still answers a well-behaved client.
fn still_serving(s: &TestServer) {
    let mut c = s.connect();
    c.go(true, false);
    c.send(p::CMD_WRITE, 0, 1, 0, 512, &[7; 512]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(p::CMD_READ, 0, 2, 0, 512, &[]);
    let r = c.reply(512).unwrap();
    assert_eq!((r.error, r.data), (0, vec![7; 512]));
    c.send(p::CMD_DISC, 0, 3, 0, 0, &[]);
    assert!(c.closed_by_server());
}

#[test]
fn garbage_instead_of_client_flags_closes_only_that_client() {
    let s = server();
    let mut c = s.connect();
    c.read_n(p::GREETING_SIZE).unwrap();
    c.s.write_all(&[0xff; 4]).unwrap();
    assert!(c.closed_by_server());
    still_serving(&s);
}

use std::io::Write;

#[test]
fn garbage_option_magic_closes_the_connection() {
    let s = server();
    let mut c = s.connect();
    c.start();
    c.s.write_all(b"GARBAGE!GARBAGE!GARBAGE!").unwrap();
    assert!(c.closed_by_server());
    still_serving(&s);
}

#[test]
fn oversized_option_closes_the_connection() {
    let s = server();
    let mut c = s.connect();
    c.start();
    let h = OptionHeader {
        option: p::OPT_GO,
        length: u32::MAX,
    };
    c.s.write_all(&h.to_bytes()).unwrap();
    assert!(c.closed_by_server());
    still_serving(&s);
}

#[test]
fn unknown_and_malformed_options_get_errors_and_haggling_continues() {
    let s = server();
    let mut c = s.connect();
    c.start();
    assert_eq!(c.option(&ClientOption::Unknown(77))[0].0, p::REP_ERR_UNSUP);
    assert_eq!(c.option(&ClientOption::StartTls)[0].0, p::REP_ERR_UNSUP);
    // NBD_OPT_LIST with data.
    c.s.write_all(
        &OptionHeader {
            option: p::OPT_LIST,
            length: 3,
        }
        .to_bytes(),
    )
    .unwrap();
    c.s.write_all(b"abc").unwrap();
    assert_eq!(c.option_replies(p::OPT_LIST)[0].0, p::REP_ERR_INVALID);
    let r = c.option(&ClientOption::Go(InfoRequest {
        export: "no-such-export".into(),
        requests: vec![],
    }));
    assert_eq!(r[0].0, p::REP_ERR_UNKNOWN);
    let r = c.option(&ClientOption::List);
    assert_eq!(r[0].0, p::REP_SERVER);
    // And GO still works.
    let r = c.option(&ClientOption::Go(InfoRequest {
        export: "disk".into(),
        requests: vec![p::INFO_NAME],
    }));
    assert_eq!(r.last().unwrap().0, p::REP_ACK);
}

#[test]
fn abort_is_acknowledged_then_closed() {
    let s = server();
    let mut c = s.connect();
    c.start();
    assert_eq!(c.option(&ClientOption::Abort)[0].0, p::REP_ACK);
    assert!(c.closed_by_server());
}

#[test]
fn export_name_for_an_unknown_export_closes() {
    let s = server();
    let mut c = s.connect();
    c.start();
    c.s.write_all(&ClientOption::ExportName("nope".into()).to_bytes())
        .unwrap();
    assert!(c.closed_by_server());
    // The old-style entry works for the right name, without the 124 zeros.
    let mut c = s.connect();
    c.start();
    c.s.write_all(&ClientOption::ExportName("disk".into()).to_bytes())
        .unwrap();
    let r = c.read_n(10).unwrap();
    assert_eq!(u64::from_be_bytes(r[..8].try_into().unwrap()), SIZE);
    c.send(p::CMD_READ, 0, 5, 0, 512, &[]);
    assert_eq!(c.reply(512).unwrap().error, 0);
}

#[test]
fn garbage_request_magic_disconnects_that_client_only() {
    let s = server();
    let mut c = s.connect();
    c.go(false, false);
    c.s.write_all(&[0xAA; 28]).unwrap();
    assert!(c.closed_by_server());
    still_serving(&s);
}

#[test]
fn unknown_command_and_flags_are_einval() {
    for structured in [false, true] {
        let s = server();
        let mut c = s.connect();
        c.go(structured, false);
        c.send(99, 0, 1, 0, 512, &[]);
        assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
        c.send(p::CMD_CACHE, 0, 2, 0, 512, &[]);
        assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
        c.send(p::CMD_READ, 1 << 12, 3, 0, 512, &[]);
        assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
        // A write with a bad flag: the payload is consumed and the stream stays in step.
        c.send(p::CMD_WRITE, p::CMD_FLAG_REQ_ONE, 4, 0, 512, &[1; 512]);
        assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
        c.send(p::CMD_READ, 0, 5, 0, 512, &[]);
        let r = c.reply(512).unwrap();
        assert_eq!((r.cookie, r.error, r.data), (5, 0, vec![0; 512]));
    }
}

#[test]
fn requests_past_the_end() {
    let s = server();
    let mut c = s.connect();
    c.go(true, true);
    c.send(p::CMD_READ, 0, 1, SIZE, 512, &[]);
    let r = c.reply(0).unwrap();
    assert_eq!(
        (r.error, r.kind),
        (Errno::Inval.code(), Some(p::REPLY_TYPE_ERROR))
    );
    assert!(String::from_utf8_lossy(&r.data).contains("past the end"));
    c.send(p::CMD_WRITE, 0, 2, SIZE - 512, 1024, &[0; 1024]);
    assert_eq!(c.reply(0).unwrap().error, Errno::NoSpc.code());
    c.send(p::CMD_WRITE_ZEROES, 0, 3, SIZE, 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, Errno::NoSpc.code());
    c.send(p::CMD_TRIM, 0, 4, u64::MAX - 10, 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, Errno::NoSpc.code());
    c.send(p::CMD_BLOCK_STATUS, 0, 5, SIZE - 512, 1024, &[]);
    assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
    // The last sector is fine.
    c.send(p::CMD_WRITE, 0, 6, SIZE - 512, 512, &[9; 512]);
    assert_eq!(c.reply(0).unwrap().error, 0);
}

#[test]
fn misaligned_requests_are_einval() {
    let s = server();
    let mut c = s.connect();
    c.go(false, false);
    c.send(p::CMD_READ, 0, 1, 1, 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
    c.send(p::CMD_WRITE, 0, 2, 0, 100, &[0; 100]);
    assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
    // Trim is a hint: misaligned trims succeed on the whole sectors they cover.
    c.send(p::CMD_TRIM, 0, 3, 100, 1000, &[]);
    assert_eq!(c.reply(0).unwrap().error, 0);
}

#[test]
fn oversized_read_is_einval_and_the_connection_goes_on() {
    let s = TestServer::start(ramdisk(64 << 20), Transport::Unix);
    let mut c = s.connect();
    c.go(true, false);
    c.send(p::CMD_READ, 0, 1, 0, p::MAX_REQUEST_SIZE + 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
    // Exactly the limit is fine.
    c.send(p::CMD_READ, 0, 2, 0, p::MAX_REQUEST_SIZE, &[]);
    let r = c.reply(0).unwrap();
    assert_eq!((r.error, r.data.len()), (0, p::MAX_REQUEST_SIZE as usize));
}

#[test]
fn oversized_write_gets_einval_then_a_disconnect() {
    let s = TestServer::start(ramdisk(64 << 20), Transport::Unix);
    let mut c = s.connect();
    c.go(false, false);
    c.send(p::CMD_WRITE, 0, 1, 0, p::MAX_REQUEST_SIZE + 512, &[0; 4096]);
    let r = c.reply(0).unwrap();
    assert_eq!((r.cookie, r.error), (1, Errno::Inval.code()));
    assert!(c.closed_by_server());
    still_serving(&s);
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let s = TestServer::start(ramdisk(SIZE).read_only(), Transport::Unix);
    let mut c = s.connect();
    let flags = c.go(true, false);
    assert_ne!(flags & p::FLAG_READ_ONLY, 0);
    assert_eq!(flags & (p::FLAG_SEND_TRIM | p::FLAG_SEND_WRITE_ZEROES), 0);
    c.send(p::CMD_WRITE, 0, 1, 0, 512, &[1; 512]);
    assert_eq!(c.reply(0).unwrap().error, Errno::Perm.code());
    c.send(p::CMD_TRIM, 0, 2, 0, 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, Errno::Perm.code());
    c.send(p::CMD_WRITE_ZEROES, 0, 3, 0, 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, Errno::Perm.code());
    c.send(p::CMD_READ, 0, 4, 0, 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(p::CMD_FLUSH, 0, 5, 0, 0, &[]);
    assert_eq!(c.reply(0).unwrap().error, 0);
}

#[test]
fn block_status_before_selecting_a_context_is_einval() {
    let s = server();
    let mut c = s.connect();
    c.go(true, false);
    c.send(p::CMD_BLOCK_STATUS, 0, 1, 0, 512, &[]);
    assert_eq!(c.reply(0).unwrap().error, Errno::Inval.code());
}

#[test]
fn block_status_reports_holes_and_data() {
    let s = server();
    let mut c = s.connect();
    c.go(true, true);
    let chunk = drivers::ramdisk::CHUNK_SIZE;
    c.send(p::CMD_WRITE, 0, 1, chunk, 512, &[1; 512]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(p::CMD_BLOCK_STATUS, 0, 2, 0, (3 * chunk) as u32, &[]);
    let r = c.reply(0).unwrap();
    assert_eq!(r.kind, Some(p::REPLY_TYPE_BLOCK_STATUS));
    let mut d = nbd::protocol::Cursor::new(&r.data, "status");
    assert_eq!(d.u32().unwrap(), p::BASE_ALLOCATION_ID);
    let mut got = Vec::new();
    while d.remaining() > 0 {
        got.push((d.u32().unwrap(), d.u32().unwrap()));
    }
    let hole = p::STATE_HOLE | p::STATE_ZERO;
    let c32 = chunk as u32;
    assert_eq!(got, [(c32, hole), (c32, 0), (c32, hole)]);
    c.send(
        p::CMD_BLOCK_STATUS,
        p::CMD_FLAG_REQ_ONE,
        3,
        0,
        (3 * chunk) as u32,
        &[],
    );
    let r = c.reply(0).unwrap();
    assert_eq!(r.data.len(), 4 + 8);
}

#[test]
fn write_fua_flush_trim_and_zeroes_succeed() {
    let s = server();
    let mut c = s.connect();
    let flags = c.go(false, false);
    for f in [
        p::FLAG_SEND_FLUSH,
        p::FLAG_SEND_FUA,
        p::FLAG_SEND_TRIM,
        p::FLAG_SEND_WRITE_ZEROES,
        p::FLAG_CAN_MULTI_CONN,
    ] {
        assert_ne!(flags & f, 0, "flag {f:#x}");
    }
    c.send(p::CMD_WRITE, p::CMD_FLAG_FUA, 1, 0, 4096, &[5; 4096]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(
        p::CMD_WRITE_ZEROES,
        p::CMD_FLAG_NO_HOLE | p::CMD_FLAG_FUA,
        2,
        0,
        512,
        &[],
    );
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(p::CMD_TRIM, p::CMD_FLAG_FUA, 3, 1024, 1024, &[]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(p::CMD_FLUSH, 0, 4, 0, 0, &[]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(p::CMD_READ, 0, 5, 0, 4096, &[]);
    let r = c.reply(4096).unwrap();
    let mut want = vec![5u8; 4096];
    want[..512].fill(0);
    want[1024..2048].fill(0);
    assert_eq!(r.data, want);
}

#[test]
fn client_vanishing_mid_request_leaves_others_unaffected() {
    let s = server();
    // A second client mid-session all along.
    let mut other = s.connect();
    other.go(false, false);
    for cut in [10usize, 28 + 100] {
        let mut c = s.connect();
        c.go(false, false);
        let req = nbd::protocol::Request {
            flags: 0,
            command: p::CMD_WRITE,
            cookie: 1,
            offset: 0,
            length: 4096,
        };
        let mut bytes = req.to_bytes().to_vec();
        bytes.extend_from_slice(&[3; 4096]);
        c.s.write_all(&bytes[..cut]).unwrap();
        drop(c);
    }
    // A client that sends a read and leaves without reading the reply.
    let mut c = s.connect();
    c.go(false, false);
    c.send(p::CMD_READ, 0, 1, 0, 1 << 20, &[]);
    drop(c);
    // Vanishing during the handshake.
    let mut c = s.connect();
    c.start();
    c.s.write_all(&ClientOption::List.to_bytes()[..5]).unwrap();
    drop(c);
    other.send(p::CMD_READ, 0, 9, 0, 512, &[]);
    assert_eq!(other.reply(512).unwrap().error, 0);
    still_serving(&s);
    let stats = s.stop();
    assert!(stats.final_flush.is_success());
}

#[test]
fn shutdown_answers_in_flight_requests_and_ends_connections() {
    let s = server();
    let mut c = s.connect();
    c.go(false, false);
    c.send(p::CMD_WRITE, 0, 1, 0, 512, &[4; 512]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    let stats = s.stop();
    assert!(c.closed_by_server());
    assert_eq!(stats.connections, 1);
    assert!(stats.final_flush.is_success());
}

#[test]
fn many_clients_at_once() {
    let s = TestServer::start(ramdisk(SIZE), Transport::Tcp);
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                let mut c = RawClient::connect(&addr);
                c.go(i % 2 == 0, false);
                let off = u64::from(i) * 65536;
                for k in 0..50u64 {
                    let fill = i.wrapping_mul(31).wrapping_add(k as u8);
                    c.send(p::CMD_WRITE, 0, k, off, 4096, &[fill; 4096]);
                    assert_eq!(c.reply(0).unwrap().error, 0);
                    c.send(p::CMD_READ, 0, k + 1000, off, 4096, &[]);
                    let r = c.reply(4096).unwrap();
                    assert_eq!(r.data, vec![fill; 4096]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn shutdown_does_not_wait_forever_for_a_client_that_stopped_reading() {
    let s = TestServer::start(ramdisk(64 << 20), Transport::Unix);
    let mut c = s.connect();
    c.go(false, false);
    // Ask for far more than the socket buffers hold, and never read it.
    for k in 0..8 {
        c.send(p::CMD_READ, 0, k, 0, 8 << 20, &[]);
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let start = std::time::Instant::now();
    let stats = s.stop();
    assert!(start.elapsed() < std::time::Duration::from_secs(3));
    assert!(stats.final_flush.is_success());
}

/// A FUA write is on disk when its reply arrives, and it persists its own range only: an
/// earlier write without FUA (elsewhere on the disk) is not written to the file until a flush.
#[test]
fn a_fua_write_persists_its_own_range_before_the_reply() {
    let dir = common::TempDir::new("fua");
    let path = dir.path().join("disk.img");
    let s = TestServer::start(ramdisk(SIZE).with_backing_file(&path), Transport::Unix);
    let mut c = s.connect();
    c.go(true, false);
    c.send(p::CMD_WRITE, 0, 1, 0, 4096, &[0xa1; 4096]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(
        p::CMD_WRITE,
        p::CMD_FLAG_FUA,
        2,
        1 << 20,
        4096,
        &[0xb2; 4096],
    );
    assert_eq!(c.reply(0).unwrap().error, 0);
    let file = std::fs::read(&path).unwrap();
    assert!(file[1 << 20..(1 << 20) + 4096].iter().all(|&b| b == 0xb2));
    assert!(
        file[..4096].iter().all(|&b| b == 0),
        "the non-FUA write was not flushed"
    );
    // A flush writes the rest.
    c.send(p::CMD_FLUSH, 0, 3, 0, 0, &[]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    let file = std::fs::read(&path).unwrap();
    assert!(file[..4096].iter().all(|&b| b == 0xa1));
    // FUA on write-zeroes and trim persists their ranges too.
    c.send(p::CMD_WRITE_ZEROES, p::CMD_FLAG_FUA, 4, 1 << 20, 4096, &[]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    c.send(p::CMD_TRIM, p::CMD_FLAG_FUA, 5, 0, 4096, &[]);
    assert_eq!(c.reply(0).unwrap().error, 0);
    let file = std::fs::read(&path).unwrap();
    assert!(file[..4096].iter().all(|&b| b == 0));
    assert!(file[1 << 20..(1 << 20) + 4096].iter().all(|&b| b == 0));
    still_serving(&s);
}
