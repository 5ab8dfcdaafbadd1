//! The real server process (`nbd-serve`, the same code as `wdfkit serve-nbd`): persistence
//! across SIGKILL with a backing file, a clean SIGTERM shutdown that flushes, TCP on an
//! ephemeral loopback port, and bad arguments.
//!
//! The binary comes from `env!("CARGO_BIN_EXE_nbd-serve")`: Cargo builds a package's binaries
//! before its integration tests, in the same profile and target directory, so the path is
//! always right and always fresh. (`CARGO_BIN_EXE_wdfkit` exists only for tests of the wdfkit
//! package, and guessing the target directory from the test's own path breaks with
//! `--target`, custom target dirs and `cargo test -p nbd` alone, which does not build wdfkit.)

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, have, qemu_io};

const BIN: &str = env!("CARGO_BIN_EXE_nbd-serve");

struct Proc {
    child: Child,
    /// The `--image-opts` for qemu.
    opts: String,
}

impl Proc {
    /// Starts the server and waits for its "listening on" line.
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nbd-serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next()
            .expect("a first line")
            .expect("readable stdout");
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let uri = line
            .strip_prefix("wdfkit serve-nbd: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let opts = if let Some(rest) = uri.strip_prefix("nbd+unix:///") {
            let sock = rest.split_once("?socket=").unwrap().1;
            format!("driver=nbd,server.type=unix,server.path={sock}")
        } else {
            let hostport = uri
                .strip_prefix("nbd://")
                .unwrap()
                .split('/')
                .next()
                .unwrap();
            let (host, port) = hostport.rsplit_once(':').unwrap();
            format!("driver=nbd,server.type=inet,server.host={host},server.port={port}")
        };
        Proc { child, opts }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit (at most 10 s); returns whether it exited with 0.
    fn wait(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sock(dir: &Path) -> String {
    dir.join("s.sock").display().to_string()
}

#[test]
fn backing_file_survives_kill_9_after_flush() {
    if !have("qemu-io") {
        return;
    }
    let dir = TempDir::new("persist");
    let file = dir.path().join("disk.img");
    let f = file.display().to_string();
    let s = sock(dir.path());
    let p = Proc::start(&["--unix", &s, "--size", "8M", "--backing-file", &f]);
    qemu_io(
        &p.opts,
        &[
            "write -P 0x5a 1M 64k".into(),
            "write -P 0xa5 7M 4k".into(),
            "flush".into(),
        ],
    );
    p.signal("KILL");
    assert!(!p.wait(), "SIGKILL is not a clean exit");
    // Restarted on the same file (its size comes from the file), the flushed data is there.
    let p = Proc::start(&["--unix", &s, "--backing-file", &f]);
    qemu_io(
        &p.opts,
        &[
            "read -P 0x5a 1M 64k".into(),
            "read -P 0xa5 7M 4k".into(),
            "read -P 0 0 1M".into(),
        ],
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 8 << 20);
}

#[test]
fn sigterm_shuts_down_cleanly_and_flushes() {
    if !have("qemu-io") {
        return;
    }
    let dir = TempDir::new("term");
    let file = dir.path().join("disk.img");
    let f = file.display().to_string();
    let s = sock(dir.path());
    let p = Proc::start(&["--unix", &s, "--size", "4M", "--backing-file", &f]);
    // No flush from the client: the shutdown flushes.
    qemu_io(&p.opts, &["write -P 0x42 0 128k".into()]);
    p.signal("TERM");
    assert!(p.wait(), "clean exit after SIGTERM");
    assert!(!Path::new(&s).exists(), "the socket is removed");
    let data = std::fs::read(&file).unwrap();
    assert!(data[..128 << 10].iter().all(|&b| b == 0x42));
    assert!(data[128 << 10..].iter().all(|&b| b == 0));
}

#[test]
fn sigint_with_a_client_connected() {
    if !have("qemu-io") {
        return;
    }
    let dir = TempDir::new("int");
    let s = sock(dir.path());
    let p = Proc::start(&["--unix", &s, "--size", "4M"]);
    // A raw client sits in transmission when the signal arrives.
    let mut c = common::RawClient::connect(&nbd::ListenAddr::Unix(s.clone().into()));
    c.go(false, false);
    p.signal("INT");
    assert!(c.closed_by_server());
    assert!(p.wait());
}

#[test]
fn tcp_on_an_ephemeral_loopback_port() {
    if !have("qemu-io") {
        return;
    }
    let p = Proc::start(&[
        "--listen",
        "127.0.0.1:0",
        "--size",
        "4M",
        "--sync-scope",
        "queue",
        "--execution-level",
        "passive",
    ]);
    assert!(p.opts.contains("server.host=127.0.0.1"));
    assert!(!p.opts.ends_with("server.port=0"));
    qemu_io(
        &p.opts,
        &["write -P 0x99 4k 4k".into(), "read -P 0x99 4k 4k".into()],
    );
    p.signal("TERM");
    assert!(p.wait());
}

#[test]
fn read_only_process_refuses_writes() {
    if !have("qemu-io") {
        return;
    }
    let dir = TempDir::new("ro");
    let s = sock(dir.path());
    let p = Proc::start(&["--unix", &s, "--size", "1M", "--read-only"]);
    let out = Command::new("qemu-io")
        .args(["--image-opts", &p.opts, "-c", "write 0 4k"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() || text.contains("failed"), "{text}");
    // qemu refuses to open a read-only export for writing.
    assert!(
        text.contains("Permission denied") || text.contains("failed"),
        "{text}"
    );
    let out = Command::new("qemu-io")
        .args(["-r", "--image-opts", &p.opts, "-c", "read -P 0 0 4k"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("failed"));
}

#[test]
fn bad_arguments_fail_with_a_message() {
    for args in [
        &["--size", "12X"][..],
        &["--unix", "/tmp/x", "--listen", "127.0.0.1:0"],
        &["--sync-scope", "sometimes"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    // A size the RAM disk refuses (not a multiple of 512).
    let dir = TempDir::new("bad");
    let out = Command::new(BIN)
        .args(["--unix", &sock(dir.path()), "--size", "1000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("STATUS_INVALID_PARAMETER"), "{err}");
    assert!(err.contains("not a multiple of 512"), "{err}");
    // A size above the RAM disk's limit (64 TiB).
    let out = Command::new(BIN)
        .args(["--unix", &sock(dir.path()), "--size", "65T"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limit of 64 TiB"), "{err}");
}
