//! The listener and the per-connection threads.
//!
//! [`Server::bind`] listens on a Unix socket or a TCP address; [`Server::run`] accepts
//! connections until [`ShutdownHandle::shutdown`] is called, then waits for every connection to
//! finish and flushes the device.
//!
//! Each connection gets one thread (the *reader*) and, for requests that do not complete
//! inline, a *completer* thread:
//!
//! * The reader does the handshake, opens the connection's [`Session`] (a handle on the
//!   device), then loops: read a request, validate it, submit it. The framework usually runs
//!   the driver's callback inside `submit`, so the request is complete when `submit` returns,
//!   and the reader appends the reply to the connection's output buffer itself: no other
//!   thread is involved. The buffer is written to the socket when the reader has no buffered
//!   input left (it is about to block on `read`) or holds [`FLUSH_EVERY`] replies, so at queue
//!   depth 16 one `write` carries several replies without holding any back for long.
//! * A request still pending after `submit` (a busy sequential queue, a deferral to a work
//!   item) is polled as a `Future` with a waker that hands it to the connection's completer
//!   thread when it completes; the completer writes its reply. Replies therefore go out in
//!   completion order, not request order, and a slow request does not hold up later ones.
//!
//! Before a reader blocks in `read`, it polls the socket for a short while
//! ([`ServerOptions::spin`]): at queue depth 1 the next request usually arrives within tens of
//! microseconds, and finding the reader awake saves the wake-up of a sleeping thread.
//!
//! [`ReplyPath::WriterThread`] instead sends every reply to the completer thread (the classic
//! "reader + writer" design); it is kept to measure what that handoff costs (BENCHMARKS.md).
//!
//! Shutdown: stop accepting (the accept loop is woken by a connection to itself), shut the
//! read side of every connection (blocked reads return end-of-file), let each connection finish
//! its in-flight requests and send their replies, close the handles, then flush the device
//! (the RAM disk writes its backing file). Every wait is bounded by
//! [`ServerOptions::shutdown_grace`]: requests the device has not completed by then are
//! cancelled (their clients get an error reply), requests still held after a second grace
//! period are abandoned and counted ([`ServerStats::abandoned`]), and the sockets of
//! connections still open are closed. A driver that never completes a request therefore
//! delays the shutdown, but cannot hang it.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nt::NtStatus;
use nt::io::{IoManager, IoOp};
use parking_lot::{Condvar, Mutex};

use crate::handshake::{ExportInfo, Handshake, Step};
use crate::protocol::{self as p, Errno, OptionReply, Request};
use crate::transmission::{InFlight, Outcome, Reply, Session};

/// Read buffer per connection.
const READ_BUFFER: usize = 256 << 10;
/// The output buffer is written out once it holds this much.
const WRITE_HIGH_WATER: usize = 256 << 10;
/// Data at least this large is written directly instead of being copied into the buffer.
const DIRECT_WRITE: usize = 64 << 10;
/// Replies queued before they are written even though more requests are buffered
/// (measured: with 16 writes in flight, waiting for the whole batch cost a third of the IOPS).
pub const FLUSH_EVERY: usize = 4;
/// The default [`ServerOptions::shutdown_grace`].
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often a connection waiting for its in-flight requests looks at the shutdown flag.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Connections beyond this many are closed at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Where to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A Unix domain socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl fmt::Display for ListenAddr {
    /// The NBD URI a client would use for the export named `""`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Unix(path) => write!(f, "nbd+unix:///?socket={}", path.display()),
            ListenAddr::Tcp(addr) => write!(f, "nbd://{addr}"),
        }
    }
}

/// Who writes replies to the socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReplyPath {
    /// The reader thread writes the replies of requests that completed inline (the default);
    /// the completer thread writes the others.
    #[default]
    Inline,
    /// Every reply goes through the completer thread (for measurements).
    WriterThread,
}

/// How long a reader polls its socket before sleeping in `read` (see [`ServerOptions::spin`]).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// Tuning of a [`Server`]; the defaults are what `wdfkit serve-nbd` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerOptions {
    /// Who writes replies.
    pub reply_path: ReplyPath,
    /// After answering everything it had, a reader polls its socket (yielding the processor
    /// between polls) for up to this long before it blocks in `read`. A client that sends its
    /// next request within that window finds the reader awake: no wake-up of a sleeping
    /// thread, which costs 16-25 µs on the 2-vCPU build machine. Zero disables it. Costs up to
    /// this much CPU per idle period (BENCHMARKS.md, "NBD").
    pub spin: Duration,
    /// On shutdown, the device gets this long to complete what is in flight; then it is
    /// cancelled, and after as long again abandoned ([`ServerStats::abandoned`]). After those
    /// two periods the sockets of connections still open are closed (a client that stopped
    /// reading would otherwise hold the server). The final flush is also given this long.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            reply_path: ReplyPath::Inline,
            spin: DEFAULT_SPIN,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// A connected socket of either kind.
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tcp(s) => s.set_nonblocking(on),
        }
    }

    fn shutdown(&self, how: Shutdown) {
        // Errors (already closed, not connected) leave nothing to do.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                // Replies are small and latency-bound: never wait to coalesce them.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
    }
}

/// Counters kept while the server runs.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    pending: AtomicU64,
    abandoned: AtomicU64,
}

/// What [`Server::run`] reports when it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections: u64,
    /// Transmission requests received.
    pub requests: u64,
    /// Requests refused before reaching the device (validation errors).
    pub refused: u64,
    /// Requests that did not complete inside `submit` (finished by a completer thread).
    pub pending: u64,
    /// Requests the device still had not completed when shutdown gave up on them: after the
    /// grace period they were cancelled, and after a second grace period abandoned (their
    /// clients got no reply). 0 unless the driver holds requests and ignores cancellation.
    pub abandoned: u64,
    /// Status of the final flush of the device (`STATUS_TIMEOUT` if the device did not
    /// complete it within the grace period).
    pub final_flush: NtStatus,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    streams: HashMap<u64, Stream>,
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    registry: Mutex<Registry>,
    wake: ListenAddr,
    counters: Counters,
}

/// Stops a running [`Server`]. Cheap to clone; safe to call more than once.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Stops accepting, and ends every connection once its in-flight requests are answered.
    /// Returns at once; [`Server::run`] returns when everything is finished.
    pub fn shutdown(&self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut reg = self.shared.registry.lock();
            reg.stopping = true;
            for s in reg.streams.values() {
                s.shutdown(Shutdown::Read);
            }
        }
        // Wake the accept loop with a connection of our own; it sees the flag and stops.
        let _ = match &self.shared.wake {
            ListenAddr::Unix(path) => UnixStream::connect(path).map(drop),
            ListenAddr::Tcp(addr) => {
                TcpStream::connect_timeout(addr, Duration::from_secs(1)).map(drop)
            }
        };
    }

    /// Whether shutdown was requested.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }
}

/// What every connection needs.
#[derive(Debug)]
struct ConnCtx {
    io: IoManager,
    device: String,
    export: ExportInfo,
    options: ServerOptions,
    shared: Arc<Shared>,
}

/// An NBD server for one export of one device.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    local: ListenAddr,
    ctx: Arc<ConnCtx>,
}

fn loopback_of(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        match a {
            SocketAddr::V4(_) => a.set_ip(std::net::Ipv4Addr::LOCALHOST.into()),
            SocketAddr::V6(_) => a.set_ip(std::net::Ipv6Addr::LOCALHOST.into()),
        }
    }
    a
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                ));
            }
            // A stale socket left by a server that died.
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    UnixListener::bind(path)
}

impl Server {
    /// Listens on `listen` for clients of device `device` (opened by name in `io`), offering
    /// `export` (see [`crate::transmission::probe_export`]), tuned by `options`.
    pub fn bind(
        io: IoManager,
        device: &str,
        export: ExportInfo,
        listen: &ListenAddr,
        options: ServerOptions,
    ) -> io::Result<Server> {
        let (listener, local) = match listen {
            ListenAddr::Unix(path) => (
                Listener::Unix(bind_unix(path)?),
                ListenAddr::Unix(path.clone()),
            ),
            ListenAddr::Tcp(addr) => {
                let l = TcpListener::bind(addr)?;
                let local = l.local_addr()?;
                (Listener::Tcp(l), ListenAddr::Tcp(local))
            }
        };
        let wake = match &local {
            ListenAddr::Tcp(a) => ListenAddr::Tcp(loopback_of(*a)),
            other => other.clone(),
        };
        Ok(Server {
            listener,
            local,
            ctx: Arc::new(ConnCtx {
                io,
                device: device.to_owned(),
                export,
                options,
                shared: Arc::new(Shared {
                    stop: AtomicBool::new(false),
                    registry: Mutex::new(Registry::default()),
                    wake,
                    counters: Counters::default(),
                }),
            }),
        })
    }

    /// Where the server listens (with the real port if port 0 was asked for).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.local
    }

    /// The export offered.
    pub fn export(&self) -> &ExportInfo {
        &self.ctx.export
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.ctx.shared.clone(),
        }
    }

    /// Accepts and serves connections until shutdown; then waits for all connections, flushes
    /// the device, removes the Unix socket, and reports. PASSIVE_LEVEL.
    pub fn run(self) -> ServerStats {
        let shared = self.ctx.shared.clone();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        loop {
            let accepted = self.listener.accept();
            if shared.stop.load(Ordering::Acquire) {
                break;
            }
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    if !matches!(
                        e.kind(),
                        ErrorKind::Interrupted
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::WouldBlock
                    ) {
                        thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                }
            };
            threads.retain(|t| !t.is_finished());
            let id = {
                let mut reg = shared.registry.lock();
                if reg.stopping || reg.streams.len() >= MAX_CONNECTIONS {
                    continue;
                }
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                reg.next_id += 1;
                let id = reg.next_id;
                reg.streams.insert(id, clone);
                id
            };
            shared.counters.connections.fetch_add(1, Ordering::Relaxed);
            let ctx = self.ctx.clone();
            let spawned = thread::Builder::new()
                .name(format!("nbd-conn-{id}"))
                .spawn(move || {
                    serve(&ctx, stream);
                    ctx.shared.registry.lock().streams.remove(&id);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(_) => {
                    shared.registry.lock().streams.remove(&id);
                }
            }
        }
        // Connections finish their in-flight requests and leave. One whose client stopped
        // reading can be stuck writing a reply: its socket is closed once the connections have
        // had their two grace periods (the device's, then the cancelled requests').
        let deadline = Instant::now() + 2 * self.ctx.options.shutdown_grace;
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        for s in shared.registry.lock().streams.values() {
            s.shutdown(Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
        let final_flush = match self.ctx.io.open(&self.ctx.device) {
            Ok(h) => {
                let s = match h
                    .submit(IoOp::Flush)
                    .wait_timeout(self.ctx.options.shutdown_grace)
                {
                    Ok(c) => c.status,
                    Err(pending) => {
                        pending.cancel();
                        NtStatus::TIMEOUT
                    }
                };
                h.close();
                s
            }
            Err(s) => s,
        };
        if let ListenAddr::Unix(path) = &self.local {
            let _ = std::fs::remove_file(path);
        }
        let c = &shared.counters;
        ServerStats {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
            final_flush,
        }
    }
}

/// Reads exactly `buf.len()` bytes. `Ok(false)`: end of file before the first byte (a clean
/// end between messages).
fn read_message(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) if at == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Polls the socket without blocking for up to `limit`, yielding the processor between
/// polls, so that a reply to the request just answered is picked up without the cost of a
/// sleeping thread being woken.
fn spin_for_input(reader: &mut BufReader<Stream>, limit: Duration) {
    use std::io::BufRead;
    if reader.get_ref().set_nonblocking(true).is_err() {
        return;
    }
    let start = Instant::now();
    loop {
        match reader.fill_buf() {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if start.elapsed() >= limit {
                    break;
                }
                thread::yield_now();
            }
            Err(_) => break,
        }
    }
    let _ = reader.get_ref().set_nonblocking(false);
}

/// One connection, from greeting to close. Never panics on client input; any protocol
/// violation or I/O error ends this connection only.
fn serve(ctx: &ConnCtx, stream: Stream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    if let Some(session) = handshake(ctx, &mut reader, &mut writer) {
        transmission(ctx, reader, writer.try_clone().ok(), session);
    }
    writer.shutdown(Shutdown::Both);
}

/// Option haggling; returns the session on entering transmission, `None` to close.
fn handshake(
    ctx: &ConnCtx,
    reader: &mut BufReader<Stream>,
    writer: &mut Stream,
) -> Option<Session> {
    let mut hs = Handshake::new(ctx.export.clone());
    writer.write_all(&hs.greeting()).ok()?;
    let mut flags = [0u8; 4];
    if !read_message(reader, &mut flags).ok()? {
        return None;
    }
    hs.client_flags(&flags).ok()?;
    let mut out = Vec::new();
    loop {
        let mut hdr = [0u8; p::OPTION_HEADER_SIZE];
        if !read_message(reader, &mut hdr).ok()? {
            return None;
        }
        let header = hs.option_header(&hdr).ok()?;
        let mut data = vec![0u8; header.length as usize];
        read_message(reader, &mut data).ok()?;
        out.clear();
        let step = hs.option(header, &data, &mut out).ok()?;
        match step {
            Step::Continue => writer.write_all(&out).ok()?,
            Step::Abort => {
                let _ = writer.write_all(&out);
                return None;
            }
            Step::Transmission(n) => {
                match Session::open(&ctx.io, &ctx.device, &ctx.export, n) {
                    Ok(session) => {
                        writer.write_all(&out).ok()?;
                        return Some(session);
                    }
                    // NBD_OPT_EXPORT_NAME has no error reply: close.
                    Err(_) if header.option == p::OPT_EXPORT_NAME => return None,
                    Err(status) => {
                        out.clear();
                        let msg = format!("cannot open the device: {status}");
                        OptionReply::write_error(
                            &mut out,
                            header.option,
                            p::REP_ERR_SHUTDOWN,
                            &msg,
                        );
                        writer.write_all(&out).ok()?;
                    }
                }
            }
        }
    }
}

/// The connection's output: replies are appended, then written in batches.
#[derive(Debug)]
struct Output {
    stream: Option<Stream>,
    buf: Vec<u8>,
    queued: usize,
}

impl Output {
    fn push(&mut self, r: &Reply) {
        if self.stream.is_none() {
            return;
        }
        self.buf.extend_from_slice(&r.head);
        self.queued += 1;
        if r.data.len() >= DIRECT_WRITE {
            self.flush();
            self.write(&r.data);
        } else {
            self.buf.extend_from_slice(&r.data);
            if self.buf.len() >= WRITE_HIGH_WATER {
                self.flush();
            }
        }
    }

    fn write(&mut self, mut b: &[u8]) {
        let Some(s) = &mut self.stream else {
            return;
        };
        while !b.is_empty() {
            match s.write(b) {
                Ok(0) => break,
                Ok(n) => b = &b[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The reader has the socket in non-blocking mode while it polls for input
                // (the flag is shared by both handles); that lasts microseconds.
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::yield_now(),
                Err(_) => break,
            }
        }
        if !b.is_empty() {
            // The client is gone: drop replies from now on; the reader sees the end too.
            s.shutdown(Shutdown::Both);
            self.stream = None;
        }
    }

    fn flush(&mut self) {
        self.queued = 0;
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.write(&buf);
            self.buf = buf;
            self.buf.clear();
        }
    }
}

enum Msg {
    /// A pending request's I/O completed (or may have): poll it again.
    Ready(Arc<Task>),
    /// A finished reply to write ([`ReplyPath::WriterThread`]).
    Reply(Reply),
    /// The reader is done and nothing is in flight.
    Stop,
}

/// A pending request, woken as a `Future` by the completion of its I/O.
struct Task {
    slot: Mutex<Option<InFlight>>,
    tx: Sender<Msg>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        let tx = self.tx.clone();
        let _ = tx.send(Msg::Ready(self));
    }
}

struct Conn {
    session: Session,
    out: Mutex<Output>,
    inflight: Mutex<usize>,
    drained: Condvar,
    tx: Sender<Msg>,
    /// The requests that did not complete inside `submit`, so that shutdown can cancel them
    /// (a task lives while its request is pending: the request's waker holds it).
    tasks: Mutex<Vec<Weak<Task>>>,
}

impl Conn {
    fn begin(&self) {
        *self.inflight.lock() += 1;
    }

    fn end(&self) {
        let mut n = self.inflight.lock();
        *n -= 1;
        if *n == 0 {
            self.drained.notify_all();
        }
    }

    /// Remembers a pending request's task for [`Conn::cancel_in_flight`].
    fn track(&self, task: &Arc<Task>) {
        let mut tasks = self.tasks.lock();
        if tasks.len() >= 64 {
            tasks.retain(|t| t.strong_count() > 0);
        }
        tasks.push(Arc::downgrade(task));
    }

    /// Cancels every request still pending on the device (`IoCancelIrp`): a driver that
    /// made it cancelable, or still has it queued, completes it with `STATUS_CANCELLED`.
    fn cancel_in_flight(&self) {
        let tasks: Vec<Arc<Task>> = self.tasks.lock().iter().filter_map(Weak::upgrade).collect();
        for task in tasks {
            let canceller = task.slot.lock().as_mut().map(|f| f.pending().canceller());
            if let Some(c) = canceller {
                c.cancel();
            }
        }
    }

    /// Waits until no request is in flight. While the server is not shutting down that wait
    /// has no limit (the driver decides how long a request takes). Once it is, the wait lasts
    /// at most `grace`; then the requests still in flight are cancelled and given one more
    /// `grace`. Returns how many were still in flight after that: they are abandoned, so that
    /// a driver that holds requests forever cannot hang the shutdown.
    fn wait_drained(&self, stop: &AtomicBool, grace: Duration) -> usize {
        let mut n = self.inflight.lock();
        let mut deadline: Option<Instant> = None;
        let mut cancelled = false;
        while *n > 0 {
            self.drained.wait_for(&mut n, DRAIN_POLL);
            if *n == 0 || !stop.load(Ordering::Acquire) {
                continue;
            }
            let now = Instant::now();
            if now < *deadline.get_or_insert(now + grace) {
                continue;
            }
            if cancelled {
                return *n;
            }
            drop(n);
            self.cancel_in_flight();
            n = self.inflight.lock();
            cancelled = true;
            deadline = Some(Instant::now() + grace);
        }
        0
    }

    /// Polls a pending request until it is finished or waiting; writes its reply when done.
    fn drive(&self, task: Arc<Task>, mut f: InFlight) {
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        loop {
            // The slot stays locked from the poll until the request is parked in it, so a wake
            // that arrives in between finds it there.
            let mut slot = task.slot.lock();
            let c = match Pin::new(f.pending()).poll(&mut cx) {
                Poll::Ready(c) => c,
                Poll::Pending => {
                    *slot = Some(f);
                    return;
                }
            };
            drop(slot);
            match self.session.complete(f, c) {
                Outcome::Reply(r) => {
                    let mut out = self.out.lock();
                    out.push(&r);
                    out.flush();
                    drop(out);
                    self.end();
                    return;
                }
                Outcome::Pending(next) => f = next,
                Outcome::Disconnect => {
                    self.end();
                    return;
                }
            }
        }
    }
}

fn completer(conn: &Conn, rx: &Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Ready(task) => {
                let f = task.slot.lock().take();
                if let Some(f) = f {
                    conn.drive(task, f);
                }
            }
            Msg::Reply(r) => {
                let mut out = conn.out.lock();
                out.push(&r);
                if rx.is_empty() {
                    out.flush();
                }
                drop(out);
                conn.end();
            }
            Msg::Stop => break,
        }
    }
}

/// The transmission loop of one connection.
fn transmission(
    ctx: &ConnCtx,
    mut reader: BufReader<Stream>,
    writer: Option<Stream>,
    session: Session,
) {
    let counters = &ctx.shared.counters;
    let (tx, rx) = crossbeam_channel::unbounded();
    let conn = Arc::new(Conn {
        session,
        out: Mutex::new(Output {
            stream: writer,
            buf: Vec::with_capacity(WRITE_HIGH_WATER),
            queued: 0,
        }),
        inflight: Mutex::new(0),
        drained: Condvar::new(),
        tx,
        tasks: Mutex::new(Vec::new()),
    });
    let c2 = conn.clone();
    let Ok(completer_thread) = thread::Builder::new()
        .name("nbd-complete".into())
        .spawn(move || completer(&c2, &rx))
    else {
        return;
    };
    let params = *conn.session.params();
    let deliver = |r: Reply| match ctx.options.reply_path {
        ReplyPath::Inline => conn.out.lock().push(&r),
        ReplyPath::WriterThread => {
            conn.begin();
            let _ = conn.tx.send(Msg::Reply(r));
        }
    };
    loop {
        if ctx.options.reply_path == ReplyPath::Inline {
            let mut out = conn.out.lock();
            if reader.buffer().is_empty() || out.queued >= FLUSH_EVERY {
                // About to block on the socket: send what is waiting first. With many
                // requests buffered, do not sit on their replies until all are done either:
                // the client can only send more once it has some back.
                out.flush();
            }
        }
        if reader.buffer().is_empty() && !ctx.options.spin.is_zero() {
            spin_for_input(&mut reader, ctx.options.spin);
        }
        let mut hdr = [0u8; p::REQUEST_SIZE];
        match read_message(&mut reader, &mut hdr) {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
        // A bad magic means the stream is out of step: nothing after it can be trusted.
        let Ok(req) = Request::parse(&hdr) else {
            break;
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let validated = req.validate(&params);
        let payload = if req.command == p::CMD_WRITE {
            if req.length > params.max_payload {
                // Too large to read into memory and too large to skip on trust: say why, then
                // disconnect.
                counters.refused.fetch_add(1, Ordering::Relaxed);
                let msg = format!(
                    "write of {} bytes is over the {}-byte request limit",
                    req.length, params.max_payload
                );
                deliver(conn.session.refusal(req.cookie, Errno::Inval, &msg));
                break;
            }
            // Read straight into the request's buffer (no zero-filling first).
            let len = req.length as usize;
            let mut data = Vec::with_capacity(len);
            match (&mut reader).take(len as u64).read_to_end(&mut data) {
                Ok(n) if n == len => data,
                // The client vanished mid-request.
                _ => break,
            }
        } else {
            Vec::new()
        };
        let cmd = match validated {
            Ok(cmd) => cmd,
            Err(refusal) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                deliver(
                    conn.session
                        .refusal(req.cookie, refusal.errno, &refusal.message),
                );
                continue;
            }
        };
        match conn.session.start(req.cookie, cmd, payload) {
            Outcome::Reply(r) => deliver(r),
            Outcome::Pending(f) => {
                counters.pending.fetch_add(1, Ordering::Relaxed);
                conn.begin();
                let task = Arc::new(Task {
                    slot: Mutex::new(None),
                    tx: conn.tx.clone(),
                });
                conn.track(&task);
                conn.drive(task, f);
            }
            Outcome::Disconnect => break,
        }
    }
    // Answer everything still in flight (within limits while shutting down), then close.
    let abandoned = conn.wait_drained(&ctx.shared.stop, ctx.options.shutdown_grace);
    counters
        .abandoned
        .fetch_add(abandoned as u64, Ordering::Relaxed);
    conn.out.lock().flush();
    let _ = conn.tx.send(Msg::Stop);
    let _ = completer_thread.join();
}
