//! `nbd`: serve a wdfkit block device over the Network Block Device protocol, so that real,
//! independent clients (qemu-img, qemu-io, nbdinfo, nbdcopy, fio) drive it.
//!
//! # The protocol's two phases
//!
//! **Handshake.** The server greets the client (`NBDMAGIC`, `IHAVEOPT`, and the handshake flag
//! "fixed newstyle"); the client answers with its own flags and then sends *options*, one at a
//! time, each answered by one or more option replies. Options list the exports, describe one
//! (`NBD_OPT_INFO`), switch on structured replies, select the `base:allocation` metadata
//! context, or end the haggling: `NBD_OPT_GO` (with an export description) or the older
//! `NBD_OPT_EXPORT_NAME` enter transmission, `NBD_OPT_ABORT` closes. The server tells the
//! client what the export can do through its *transmission flags* (read-only, flush, FUA,
//! trim, write-zeroes, multi-connection). See [`handshake`].
//!
//! **Transmission.** The client sends requests (a 28-byte header, then the data of a write),
//! each with a cookie; the server answers each with a reply carrying the same cookie: a simple
//! reply (a 16-byte header, then the data of a read) or, if negotiated, one or more structured
//! chunks (read data, errors with a message, block-status descriptors). Replies may come in
//! any order. `NBD_CMD_DISC` ends the session. See [`transmission`]; every message layout and
//! constant is in [`protocol`], which does no I/O.
//!
//! # Mapping onto wdfkit
//!
//! Each connection opens its own [`nt::io::Handle`] (a file object) on the device, and each
//! command becomes a request through `nt`'s I/O manager: read, write, flush, or a control
//! request (trim, write-zeroes, block status use the RAM disk's control codes). The device's
//! queues, sync scope and execution level therefore govern NBD traffic exactly as they govern
//! in-process clients, and the framework's statistics and observers see it.
//!
//! # Threading
//!
//! One reader thread per connection submits each request inline: the framework presents it to
//! the driver on that thread, and when the request completes inside `submit` (the usual case)
//! the same thread queues the reply and writes all queued replies with one `write` before it
//! next blocks on the socket. A request that does not complete inline is polled as a
//! [`std::future::Future`] ([`nt::io::PendingIo`]); its waker hands it to the connection's
//! completer thread, which writes the reply when it is ready, so replies go out in completion
//! order. On this project's 2-vCPU machine, waking another thread costs 16–25 µs, more than
//! the whole request; the inline path has no wake-up at all, and before blocking on its socket
//! the reader polls it briefly so that the client's next request usually finds it awake. The measurement that settled it
//! is in BENCHMARKS.md ("NBD"). See [`server`].
//!
//! # Limits and bad input
//!
//! Reads and writes are limited to 32 MiB ([`protocol::MAX_REQUEST_SIZE`]); offsets and
//! lengths must be multiples of 512 (advertised as the minimum block size). Malformed options
//! get an error reply; a bad magic, unknown client flags, an unknown export in
//! `NBD_OPT_EXPORT_NAME` or an over-limit write end that connection only. Requests past the end
//! get `ENOSPC` (writes) or `EINVAL` (reads), writes to a read-only export `EPERM`, unknown
//! commands and flags `EINVAL`. No input panics.
//!
//! ```no_run
//! use drivers::ramdisk::{self, RamdiskConfig};
//! use nbd::server::{ListenAddr, Server, ServerOptions};
//! use wdf::{Driver, ObjectAttributes};
//!
//! let kernel = nt::Kernel::builder().build();
//! let driver = Driver::create(&kernel, ObjectAttributes::default()).unwrap();
//! ramdisk::create(&driver, "rd0", RamdiskConfig::new(1 << 30)).unwrap();
//! let export = nbd::transmission::probe_export(kernel.io(), "rd0", "disk", "", true).unwrap();
//! let listen = ListenAddr::Unix("/tmp/rd0.sock".into());
//! let options = ServerOptions::default();
//! let server = Server::bind(kernel.io().clone(), "rd0", export, &listen, options).unwrap();
//! let stop = server.shutdown_handle(); // call stop.shutdown() from elsewhere
//! let stats = server.run();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod handshake;
pub mod protocol;
pub mod server;
pub mod transmission;

pub use handshake::{ExportInfo, Handshake, Negotiated};
pub use server::{ListenAddr, ReplyPath, Server, ServerOptions, ServerStats, ShutdownHandle};
pub use transmission::{Session, probe_export};
