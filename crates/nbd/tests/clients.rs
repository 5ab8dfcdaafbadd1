//! End to end with real, independent clients (qemu-io, qemu-img, nbdinfo) against an
//! in-process server, over a Unix socket and TCP loopback. A test whose tool is missing prints
//! SKIPPED and passes (CI installs them with ci/nbd-deps.sh).

mod common;

use std::process::Command;

use common::{TempDir, TestServer, Transport, have, qemu_io, ramdisk, run};
use wdf::{ExecutionLevel, SyncScope};

const SIZE: u64 = 16 << 20;

fn patterns(s: &TestServer) {
    // (pattern, offset, length): start, unaligned-to-chunk, straddling a 64 KiB chunk, the end.
    let cases: [(u8, u64, u64); 5] = [
        (0xab, 0, 1 << 20),
        (0x11, (1 << 20) + 3 * 4096, 4096),
        (0x5c, (2 << 20) - 512, 1024),
        (0x7e, 9 << 20, 2 << 20),
        (0xe1, SIZE - 65536, 65536),
    ];
    let mut cmds = Vec::new();
    for (pat, off, len) in cases {
        cmds.push(format!("write -P 0x{pat:x} {off} {len}"));
    }
    for (pat, off, len) in cases {
        cmds.push(format!("read -P 0x{pat:x} {off} {len}"));
    }
    // Never written: zeros.
    cmds.push(format!("read -P 0 {} {}", 4 << 20, 1 << 20));
    s.qemu_io(&cmds);
    // A second connection sees the same data.
    s.qemu_io(&[format!("read -P 0xab 0 {}", 1 << 20)]);
}

#[test]
fn qemu_io_patterns_over_unix_socket() {
    if !have("qemu-io") {
        return;
    }
    patterns(&TestServer::start(ramdisk(SIZE), Transport::Unix));
}

#[test]
fn qemu_io_patterns_over_tcp_loopback() {
    if !have("qemu-io") {
        return;
    }
    patterns(&TestServer::start(ramdisk(SIZE), Transport::Tcp));
}

#[test]
fn qemu_io_patterns_with_device_scope_at_passive_level() {
    if !have("qemu-io") {
        return;
    }
    let config = ramdisk(SIZE)
        .with_scope(SyncScope::Device)
        .with_level(ExecutionLevel::Passive);
    patterns(&TestServer::start(config, Transport::Unix));
}

#[test]
fn qemu_io_zeroes_discard_and_flush() {
    if !have("qemu-io") {
        return;
    }
    let s = TestServer::start(ramdisk(SIZE), Transport::Tcp);
    s.qemu_io(&[
        "write -P 0x33 0 256k".into(),
        "write -z 0 64k".into(),
        "write -z -u 128k 64k".into(),
        "discard 64k 64k".into(),
        "flush".into(),
        "read -P 0 0 64k".into(),
        "read -P 0 128k 64k".into(),
        "read -P 0x33 192k 64k".into(),
    ]);
    // The discard freed its chunk; the zeroed chunks stay allocated.
    assert_eq!(s.disk.allocated_bytes(), 3 * 65536);
}

#[test]
fn qemu_img_convert_in_and_out() {
    if !have("qemu-img") {
        return;
    }
    let s = TestServer::start(ramdisk(8 << 20), Transport::Unix);
    let dir = TempDir::new("convert");
    let src = dir.path().join("src.img");
    let out = dir.path().join("out.img");
    // 8 MiB: pseudo-random data with holes.
    let mut data = vec![0u8; 8 << 20];
    let mut x: u32 = 0x1234_5678;
    for (i, chunk) in data.chunks_mut(65536).enumerate() {
        if i % 3 == 1 {
            continue;
        }
        for b in chunk {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    }
    std::fs::write(&src, &data).unwrap();
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw"])
        .arg(&src)
        .arg("--target-image-opts")
        .arg(s.image_opts()));
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw", "--image-opts"])
        .arg(s.image_opts())
        .arg(&out));
    let back = std::fs::read(&out).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bytes differ after the round trip");
    // Holes were skipped: a third of the chunks were never written.
    assert!(s.disk.allocated_bytes() < 8 << 20);
}

#[test]
fn nbdinfo_reports_size_and_flags() {
    if !have("nbdinfo") {
        return;
    }
    for read_only in [false, true] {
        let config = if read_only {
            ramdisk(SIZE).read_only()
        } else {
            ramdisk(SIZE)
        };
        let s = TestServer::start(config, Transport::Tcp);
        let out = run(Command::new("nbdinfo").arg("--json").arg(s.uri()));
        let json = String::from_utf8(out.stdout).unwrap();
        let has = |k: &str, v: &str| {
            let needle = format!("\"{k}\": {v}");
            assert!(json.contains(&needle), "{needle} not in\n{json}");
        };
        has("export-size", &SIZE.to_string());
        has("export-name", "\"disk\"");
        has("is_read_only", &read_only.to_string());
        has("can_flush", "true");
        has("can_fua", "true");
        has("can_multi_conn", "true");
        has("can_trim", &(!read_only).to_string());
        has("can_zero", &(!read_only).to_string());
        has("can_cache", "false");
        has("block_size_minimum", "512");
        has("block_size_maximum", &(32 << 20).to_string());
        assert!(json.contains("base:allocation"), "{json}");
        let size = run(Command::new("nbdinfo").arg("--size").arg(s.uri()));
        assert_eq!(
            String::from_utf8_lossy(&size.stdout).trim(),
            SIZE.to_string()
        );
    }
}

#[test]
fn nbdinfo_map_shows_allocation() {
    if !have("nbdinfo") || !have("qemu-io") {
        return;
    }
    let s = TestServer::start(ramdisk(1 << 20), Transport::Unix);
    s.qemu_io(&["write -P 1 64k 64k".into()]);
    let out = run(Command::new("nbdinfo").arg("--map").arg(s.uri()));
    let map = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["0", "65536", "3"],
            vec!["65536", "65536", "0"],
            vec!["131072", "917504", "3"]
        ],
        "{map}"
    );
}

#[test]
fn several_qemu_io_clients_at_once() {
    if !have("qemu-io") {
        return;
    }
    let s = TestServer::start(ramdisk(SIZE), Transport::Unix);
    let opts = s.image_opts();
    let clients: Vec<_> = (1..=4u8)
        .map(|i| {
            let opts = opts.clone();
            std::thread::spawn(move || {
                let off = u64::from(i) << 20;
                let mut cmds = Vec::new();
                for k in 0..8u64 {
                    cmds.push(format!("aio_write -P 0x{i:x}{k:x} {} 64k", off + k * 65536));
                }
                cmds.push("aio_flush".into());
                for k in 0..8u64 {
                    cmds.push(format!("read -P 0x{i:x}{k:x} {} 64k", off + k * 65536));
                }
                qemu_io(&opts, &cmds);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // All four regions, checked again from one more connection.
    let mut cmds = Vec::new();
    for i in 1..=4u64 {
        for k in 0..8u64 {
            cmds.push(format!(
                "read -P 0x{i:x}{k:x} {} 64k",
                (i << 20) + k * 65536
            ));
        }
    }
    s.qemu_io(&cmds);
    let stats = s.stop();
    assert_eq!(stats.connections, 5);
    assert!(stats.final_flush.is_success());
}

#[test]
fn nbdcopy_in_and_out() {
    if !have("nbdcopy") {
        return;
    }
    let s = TestServer::start(ramdisk(4 << 20), Transport::Tcp);
    let dir = TempDir::new("nbdcopy");
    let src = dir.path().join("src.img");
    let out = dir.path().join("out.img");
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i / 4096 * 7 + i % 251) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    run(Command::new("nbdcopy").arg(&src).arg(s.uri()));
    run(Command::new("nbdcopy").arg(s.uri()).arg(&out));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "bytes differ after nbdcopy"
    );
}

#[test]
fn fio_nbd_engine_writes_and_verifies() {
    if !have("fio") {
        return;
    }
    let s = TestServer::start(ramdisk(16 << 20), Transport::Unix);
    let uri = s.uri().replace("/disk?", "/?");
    let out = run(Command::new("fio")
        .args([
            "--name=verify",
            "--ioengine=nbd",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=8m",
            "--verify=crc32c",
            "--do_verify=1",
        ])
        .arg(format!("--uri={uri}")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("verify: bad"), "{text}");
    assert!(text.contains("err= 0"), "{text}");
}
