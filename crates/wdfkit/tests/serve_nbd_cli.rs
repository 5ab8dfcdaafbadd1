//! `wdfkit serve-nbd` observed: `--trace`, `--timeline` and `--max-spans` on a real server
//! process driven by qemu-io (skipped when qemu-io is not installed), and a plain run that
//! observes nothing.
//!
//! The server is started from `env!("CARGO_BIN_EXE_wdfkit")`, waited for on its
//! `listening on` line, and stopped with SIGTERM, as `crates/nbd/tests/process.rs` does.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_wdfkit");

/// The nbd crate's test support: `TempDir`, `have` (skip a test when a tool is missing) and
/// `qemu_io`.
#[path = "../../nbd/tests/common/mod.rs"]
mod nbd_common;

use nbd_common::{TempDir, have};

/// `name` inside `dir`, as a command-line argument.
fn file(dir: &TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

/// Runs qemu-io on the Unix socket `sock`; panics unless every command succeeded.
fn qemu_io(sock: &str, cmds: &[&str]) {
    let cmds: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
    nbd_common::qemu_io(
        &format!("driver=nbd,server.type=unix,server.path={sock}"),
        &cmds,
    );
}

/// A running `wdfkit serve-nbd`.
struct Server {
    child: Child,
    /// Collects stdout after the first line.
    reader: Option<JoinHandle<Vec<String>>>,
    /// Collects stderr.
    errors: Option<JoinHandle<Vec<String>>>,
    first: String,
}

/// What a server printed, and how it exited.
struct Exit {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Server {
    /// Starts `wdfkit serve-nbd ARGS` and waits for its `listening on` line.
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve-nbd")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wdfkit serve-nbd starts");
        let errors = BufReader::new(child.stderr.take().unwrap()).lines();
        let errors = std::thread::spawn(move || errors.map_while(Result::ok).collect());
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("a first line")
            .expect("readable stdout");
        assert!(
            first.starts_with("wdfkit serve-nbd: listening on "),
            "unexpected first line {first:?}"
        );
        // Keep draining stdout so the server never blocks on a full pipe.
        let reader = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        Server {
            child,
            reader: Some(reader),
            errors: Some(errors),
            first,
        }
    }

    /// Sends SIGTERM, waits for the exit (at most 30 s: writing the files is part of it) and
    /// returns whether it was 0, and everything printed.
    fn terminate(mut self) -> Exit {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = vec![self.first.clone()];
        stdout.extend(self.reader.take().unwrap().join().unwrap());
        let stderr = self.errors.take().unwrap().join().unwrap();
        Exit {
            ok: status.success(),
            stdout: stdout.join("\n"),
            stderr: stderr.join("\n"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The summary line of object `id`: its callback count.
fn summary_count(stdout: &str, id: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(id)).then(|| words.next()?.parse().ok())?
    })
}

#[test]
fn trace_and_timeline_of_real_nbd_traffic() {
    if !have("qemu-io") {
        return;
    }
    let dir = TempDir::new("trace");
    let sock = file(&dir, "s.sock");
    let trace = file(&dir, "t.json");
    let timeline = file(&dir, "t.svg");
    let server = Server::start(&[
        "--unix",
        &sock,
        "--size",
        "16M",
        "--trace",
        &trace,
        "--timeline",
        &timeline,
    ]);
    qemu_io(
        &sock,
        &[
            "write -P 0xab 0 1M",
            "read -P 0xab 0 1M",
            "write -P 0xcd 4M 64k",
            "flush",
        ],
    );
    let Exit { ok, stdout, stderr } = server.terminate();
    assert!(ok, "clean exit after SIGTERM:\n{stdout}\n{stderr}");

    // The summary: the I/O queue ran callbacks, the flush queue too, nothing was dropped.
    assert!(
        stdout.contains("wdfkit serve-nbd: observed "),
        "a summary:\n{stdout}"
    );
    let io = summary_count(&stdout, "queue:nbd-ramdisk-io")
        .unwrap_or_else(|| panic!("the I/O queue in the summary:\n{stdout}"));
    assert!(io >= 3, "{io} I/O callbacks:\n{stdout}");
    assert!(summary_count(&stdout, "queue:nbd-ramdisk-flush").is_some_and(|n| n >= 1));
    assert!(stdout.contains("DISPATCH_LEVEL"), "{stdout}");
    assert!(
        stdout.contains(" 0 dropped (--max-spans 200000)"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("wrote trace {trace}")), "{stdout}");
    assert!(
        stdout.contains(&format!("wrote timeline {timeline}")),
        "{stdout}"
    );
    // The stop line comes first, the summary after it.
    let stop = stdout
        .find("wdfkit serve-nbd: stopped:")
        .expect("stop line");
    assert!(stop < stdout.find("observed").unwrap());

    // The trace: valid JSON, named after the export, with the reads and writes.
    let text = std::fs::read_to_string(&trace).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e})"));
    assert_eq!(v["otherData"]["source"], "serve-nbd ramdisk");
    let names: Vec<&str> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for want in [
        "EvtIoWrite queue:nbd-ramdisk-io",
        "EvtIoRead queue:nbd-ramdisk-io",
        "EvtIoDefault queue:nbd-ramdisk-flush",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    // Scope None (the default): no callback holds a lock.
    assert!(
        v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .all(|e| e["args"]["lock"].is_null())
    );

    let svg = std::fs::read_to_string(&timeline).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("serve-nbd ramdisk"),
        "an SVG"
    );
}

#[test]
fn max_spans_keeps_that_many_and_counts_the_rest() {
    if !have("qemu-io") {
        return;
    }
    let dir = TempDir::new("cap");
    let sock = file(&dir, "s.sock");
    let trace = file(&dir, "t.json");
    let server = Server::start(&[
        "--unix",
        &sock,
        "--size",
        "16M",
        "--sync-scope",
        "device",
        "--trace",
        &trace,
        "--max-spans",
        "2",
    ]);
    qemu_io(
        &sock,
        &[
            "write -P 1 0 4k",
            "write -P 2 4k 4k",
            "write -P 3 8k 4k",
            "read -P 1 0 4k",
        ],
    );
    let Exit { ok, stdout, stderr } = server.terminate();
    assert!(ok, "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("spans "))
        .unwrap_or_else(|| panic!("a spans line:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[1..3], ["2", "kept,"], "{line}");
    let dropped: u64 = words[3].parse().unwrap();
    // Every callback is still counted: kept plus dropped.
    let observed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("wdfkit serve-nbd: observed "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(observed, 2 + dropped, "{stdout}");
    assert!(summary_count(&stdout, "queue:nbd-ramdisk-io").unwrap() >= 4);
    // Device scope: the I/O queue's callbacks take the device's lock.
    assert!(
        stdout.contains("lock device:nbd-ramdisk"),
        "the device lock in the summary:\n{stdout}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let slices = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .count();
    assert_eq!(slices, 2);
}

#[test]
fn without_trace_or_timeline_nothing_is_observed() {
    let dir = TempDir::new("plain");
    let sock = file(&dir, "s.sock");
    let server = Server::start(&["--unix", &sock, "--size", "16M", "--sync-scope", "none"]);
    if have("qemu-io") {
        qemu_io(&sock, &["write -P 0xab 0 64k", "read -P 0xab 0 64k"]);
    }
    let Exit { ok, stdout, stderr } = server.terminate();
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("wdfkit serve-nbd: stopped:"), "{stdout}");
    for absent in ["observed", "queue:nbd-ramdisk", "spans", "wrote"] {
        assert!(!stdout.contains(absent), "no {absent:?} in:\n{stdout}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no files"
    );
}

#[test]
fn an_unwritable_trace_fails_the_command_and_names_the_path() {
    let dir = TempDir::new("unwritable");
    let sock = file(&dir, "s.sock");
    // A folder where the trace file should go: creating the file fails when the server stops.
    let trace = file(&dir, "t.json");
    std::fs::create_dir(&trace).unwrap();
    let server = Server::start(&["--unix", &sock, "--size", "1M", "--trace", &trace]);
    let Exit { ok, stdout, stderr } = server.terminate();
    assert!(
        !ok,
        "exit 1 when the trace cannot be written:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("wdfkit serve-nbd: cannot write {trace}: ")),
        "{stderr}"
    );
    // The summary is printed before the files are written; the server still shut down.
    assert!(stdout.contains("wdfkit serve-nbd: observed "), "{stdout}");
    assert!(!stdout.contains("wrote trace"), "{stdout}");
    assert!(!Path::new(&sock).exists(), "the socket is removed");

    // A missing folder is refused before the server starts (bad input, exit 2).
    let missing = dir.path().join("no-such-dir").join("t.json");
    let out = cargo_bin_cmd!("wdfkit")
        .args(["serve-nbd", "--unix", &sock, "--trace"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot write {}", missing.display())),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing served");
}

#[test]
fn max_spans_needs_trace_or_timeline() {
    let out = cargo_bin_cmd!("wdfkit")
        .args([
            "serve-nbd",
            "--max-spans",
            "10",
            "--unix",
            "/nonexistent/s.sock",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--trace") && err.contains("--timeline"),
        "{err}"
    );
}
