//! Shared test support: an in-process server on a temporary socket, a raw NBD client, and
//! helpers to run the real clients (qemu-io, qemu-img, nbdinfo) with a skip when missing.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use drivers::ramdisk::{self, RamdiskConfig, RamdiskDevice};
use nbd::protocol::{
    self as p, ClientOption, InfoRequest, MetaContextRequest, OptionReply, ReplyHeader, Request,
};
use nbd::server::{ListenAddr, ReplyPath, Server, ServerOptions, ServerStats, ShutdownHandle};
use wdf::{Driver, ObjectAttributes};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wdfkit-nbd-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `tool` is on PATH; if not, says the test is skipped.
pub fn have(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
    if !found {
        // Straight to the process's stderr, past the test harness's capture, so the skip is
        // seen even when the test passes.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {tool} is not installed (ci/nbd-deps.sh installs it)"
        );
    }
    found
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
}

/// A RAM disk served in-process.
pub struct TestServer {
    pub kernel: nt::Kernel,
    pub disk: RamdiskDevice,
    pub addr: ListenAddr,
    pub stop: ShutdownHandle,
    thread: Option<JoinHandle<ServerStats>>,
    pub dir: TempDir,
}

impl TestServer {
    pub fn start(config: RamdiskConfig, transport: Transport) -> TestServer {
        TestServer::start_with(config, transport, ReplyPath::Inline)
    }

    pub fn start_with(config: RamdiskConfig, transport: Transport, path: ReplyPath) -> TestServer {
        let options = ServerOptions {
            reply_path: path,
            shutdown_grace: std::time::Duration::from_millis(300),
            ..ServerOptions::default()
        };
        TestServer::start_opts(config, transport, options)
    }

    pub fn start_opts(
        config: RamdiskConfig,
        transport: Transport,
        options: ServerOptions,
    ) -> TestServer {
        let kernel = nt::Kernel::builder().processors(2).workers(2).build();
        let driver = Driver::create(&kernel, ObjectAttributes::default()).unwrap();
        let disk = ramdisk::create(&driver, "rd", config).unwrap();
        let export = nbd::probe_export(kernel.io(), "rd", "disk", "test disk", true).unwrap();
        let dir = TempDir::new("srv");
        let listen = match transport {
            Transport::Unix => ListenAddr::Unix(dir.path().join("nbd.sock")),
            Transport::Tcp => ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        };
        let server = Server::bind(kernel.io().clone(), "rd", export, &listen, options).unwrap();
        let addr = server.local_addr().clone();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            kernel,
            disk,
            addr,
            stop,
            thread: Some(thread),
            dir,
        }
    }

    /// qemu's `--image-opts` for this server.
    pub fn image_opts(&self) -> String {
        match &self.addr {
            ListenAddr::Unix(p) => {
                format!("driver=nbd,server.type=unix,server.path={}", p.display())
            }
            ListenAddr::Tcp(a) => format!(
                "driver=nbd,server.type=inet,server.host={},server.port={}",
                a.ip(),
                a.port()
            ),
        }
    }

    /// The NBD URI (libnbd syntax).
    pub fn uri(&self) -> String {
        match &self.addr {
            ListenAddr::Unix(p) => format!("nbd+unix:///disk?socket={}", p.display()),
            ListenAddr::Tcp(a) => format!("nbd://{a}/disk"),
        }
    }

    /// Runs qemu-io with `cmds`; panics (with its output) unless every command succeeded.
    pub fn qemu_io(&self, cmds: &[String]) -> String {
        qemu_io(&self.image_opts(), cmds)
    }

    pub fn connect(&self) -> RawClient {
        RawClient::connect(&self.addr)
    }

    pub fn stop(mut self) -> ServerStats {
        self.stop.shutdown();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.shutdown();
            let _ = t.join();
        }
    }
}

/// Runs qemu-io on `image_opts`; panics unless every command succeeded.
pub fn qemu_io(image_opts: &str, cmds: &[String]) -> String {
    let mut c = Command::new("qemu-io");
    c.arg("--image-opts").arg(image_opts);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = c.output().expect("qemu-io runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("failed") && !text.contains("error"),
        "qemu-io {cmds:?} failed:\n{text}"
    );
    text
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A byte stream of either kind.
pub trait Io: Read + Write + Send {
    fn shutdown_write(&self);
}

impl Io for UnixStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Io for TcpStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// A hand-written NBD client that can send anything.
pub struct RawClient {
    pub s: Box<dyn Io>,
    pub structured: bool,
}

/// One reply as the raw client sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct RawReply {
    pub cookie: u64,
    /// 0 on success, else the NBD error.
    pub error: u32,
    /// Read data or the structured payload (without the offset of an OFFSET_DATA chunk).
    pub data: Vec<u8>,
    /// The structured chunk type, if structured.
    pub kind: Option<u16>,
}

impl RawClient {
    /// Connects with a 10 s read timeout, so a broken server cannot hang a test.
    pub fn connect(addr: &ListenAddr) -> RawClient {
        with_timeout(addr)
    }

    pub fn read_n(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b)?;
        Ok(b)
    }

    /// Reads the greeting and sends the client flags.
    pub fn start(&mut self) {
        let g = self.read_n(p::GREETING_SIZE).unwrap();
        p::parse_greeting(&g).unwrap();
        self.s
            .write_all(&(p::FLAG_C_FIXED_NEWSTYLE | p::FLAG_C_NO_ZEROES).to_be_bytes())
            .unwrap();
    }

    /// Sends an option and reads replies up to the final one: (reply type, data) each.
    pub fn option(&mut self, o: &ClientOption) -> Vec<(u32, Vec<u8>)> {
        self.s.write_all(&o.to_bytes()).unwrap();
        self.option_replies(o.code())
    }

    pub fn option_replies(&mut self, code: u32) -> Vec<(u32, Vec<u8>)> {
        let mut v = Vec::new();
        loop {
            let h = self.read_n(p::OPTION_REPLY_HEADER_SIZE).unwrap();
            let (opt, ty, len) = OptionReply::parse_header(&h).unwrap();
            assert_eq!(opt, code);
            let data = self.read_n(len as usize).unwrap();
            let last = ty != p::REP_INFO && ty != p::REP_SERVER && ty != p::REP_META_CONTEXT;
            v.push((ty, data));
            if last {
                return v;
            }
        }
    }

    /// Full handshake with NBD_OPT_GO; returns the transmission flags.
    pub fn go(&mut self, structured: bool, meta: bool) -> u16 {
        self.start();
        if structured {
            let r = self.option(&ClientOption::StructuredReply);
            assert_eq!(r[0].0, p::REP_ACK);
            self.structured = true;
        }
        if meta {
            let r = self.option(&ClientOption::SetMetaContext(MetaContextRequest {
                export: String::new(),
                queries: vec![p::BASE_ALLOCATION.into()],
            }));
            assert_eq!(r[0].0, p::REP_META_CONTEXT);
        }
        let r = self.option(&ClientOption::Go(InfoRequest {
            export: String::new(),
            requests: vec![],
        }));
        assert_eq!(r.last().unwrap().0, p::REP_ACK, "{r:?}");
        let info = &r[0].1;
        u16::from_be_bytes([info[10], info[11]])
    }

    pub fn send(
        &mut self,
        command: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) {
        let r = Request {
            flags,
            command,
            cookie,
            offset,
            length,
        };
        self.s.write_all(&r.to_bytes()).unwrap();
        self.s.write_all(payload).unwrap();
    }

    /// Reads one reply; `read_len` is the data length of a successful simple read reply
    /// (simple replies do not say).
    pub fn reply(&mut self, read_len: usize) -> std::io::Result<RawReply> {
        let first = self.read_n(4)?;
        let magic = u32::from_be_bytes(first[..4].try_into().unwrap());
        let rest = if magic == p::SIMPLE_REPLY_MAGIC {
            12
        } else {
            16
        };
        let mut h = first;
        h.extend(self.read_n(rest)?);
        let (hdr, _) = ReplyHeader::parse(&h).unwrap();
        match hdr {
            ReplyHeader::Simple { error, cookie } => {
                let data = if error == 0 {
                    self.read_n(read_len)?
                } else {
                    Vec::new()
                };
                Ok(RawReply {
                    cookie,
                    error,
                    data,
                    kind: None,
                })
            }
            ReplyHeader::Structured {
                flags,
                kind,
                cookie,
                length,
            } => {
                assert_ne!(flags & p::REPLY_FLAG_DONE, 0, "one chunk per reply here");
                let payload = self.read_n(length as usize)?;
                let (error, data) = match kind {
                    p::REPLY_TYPE_ERROR => (
                        u32::from_be_bytes(payload[..4].try_into().unwrap()),
                        payload[6..].to_vec(),
                    ),
                    p::REPLY_TYPE_OFFSET_DATA => (0, payload[8..].to_vec()),
                    _ => (0, payload),
                };
                Ok(RawReply {
                    cookie,
                    error,
                    data,
                    kind: Some(kind),
                })
            }
        }
    }

    /// Whether the server closed the connection (reads end of file within 5 s).
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }
}

/// Connects with a 10 s read timeout.
pub fn with_timeout(addr: &ListenAddr) -> RawClient {
    let s: Box<dyn Io> = match addr {
        ListenAddr::Unix(p) => {
            let s = UnixStream::connect(p).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Box::new(s)
        }
        ListenAddr::Tcp(a) => {
            let s = TcpStream::connect(a).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Box::new(s)
        }
    };
    RawClient {
        s,
        structured: false,
    }
}

pub fn ramdisk(size: u64) -> RamdiskConfig {
    RamdiskConfig::new(size)
}
