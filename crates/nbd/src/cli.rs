//! `wdfkit serve-nbd`: a RAM disk served over NBD until SIGINT or SIGTERM.
//!
//! The whole command lives here so that the CLI crate only needs a one-line hook:
//! a `ServeNbd(nbd::cli::ServeArgs)` subcommand whose arm calls [`run`].
//!
//! # Hooks
//!
//! A front end that wants to watch a run (the `wdfkit` CLI installs a callback observer for
//! `--trace` and `--timeline`) calls [`run_with`] with its own [`ServeHooks`] instead, so this
//! crate never depends on the front end. The order of a run is:
//!
//! 1. the RAM disk is created and probed, the address is bound and the signal handlers are
//!    installed;
//! 2. [`ServeHooks::started`] runs, before the server accepts its first client;
//! 3. the `listening on` line is printed and clients are served until SIGINT or SIGTERM;
//! 4. once every connection is closed and the final flush is done, the `stopped:` line is
//!    printed and [`ServeHooks::stopped`] runs;
//! 5. the device is deleted.
//!
//! `stopped` runs if and only if `started` returned `Ok`. A hook's `Err(message)` fails the
//! command: `wdfkit serve-nbd: message` on stderr and exit code 1 (after `started` fails the
//! server never serves; after `stopped` fails the device is still deleted).
//!
//! ```no_run
//! use drivers::ramdisk::RamdiskDevice;
//! use nbd::cli::{ServeArgs, ServeHooks};
//! use nbd::ServerStats;
//!
//! struct Announce;
//! impl ServeHooks for Announce {
//!     fn started(&mut self, disk: &RamdiskDevice) -> Result<(), String> {
//!         println!("serving {} (queue {})", disk.name(), disk.io_queue().name());
//!         Ok(())
//!     }
//!     fn stopped(&mut self, _disk: &RamdiskDevice, stats: &ServerStats) -> Result<(), String> {
//!         println!("{} requests", stats.requests);
//!         Ok(())
//!     }
//! }
//!
//! # fn args() -> ServeArgs { unimplemented!() }
//! let code = nbd::cli::run_with(args(), &mut Announce);
//! ```

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use drivers::ramdisk::{self, RamdiskConfig, RamdiskDevice};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use wdf::{Driver, ExecutionLevel, ObjectAttributes, SyncScope};

use crate::server::{ListenAddr, ReplyPath, Server, ServerOptions, ServerStats};
use crate::transmission::probe_export;

/// The default TCP address: loopback only, on the IANA NBD port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10809";
/// The default size of a disk without a backing file.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// The name of the RAM disk device created for the export.
pub const DEVICE_NAME: &str = "nbd-ramdisk";

/// The device's synchronization scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// No framework serialization (the RAM disk's storage locks itself).
    #[default]
    None,
    /// One lock per queue.
    Queue,
    /// One lock for the whole device.
    Device,
}

/// The device's execution level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    /// Callbacks at PASSIVE_LEVEL (mutex-flavoured scope lock).
    Passive,
    /// Callbacks may run at DISPATCH_LEVEL (the KMDF default).
    #[default]
    Dispatch,
}

/// Who writes replies (a measurement knob; see `nbd::server::ReplyPath`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ReplyPathArg {
    /// The reader thread writes replies of requests that completed inline.
    #[default]
    Inline,
    /// Every reply is handed to a writer thread.
    WriterThread,
}

/// Options of `wdfkit serve-nbd`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Listen on a Unix domain socket at PATH (instead of TCP).
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub unix: Option<PathBuf>,
    /// Listen on this TCP address [default: 127.0.0.1:10809]. Port 0 picks a free port. A
    /// non-loopback address is only ever used when given here.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_addr)]
    pub listen: Option<SocketAddr>,
    /// Disk size (bytes, or with a K/M/G/T suffix; a multiple of 512) [default: 1G, or the
    /// backing file's length when it exists].
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Load the disk from this file and write flushes to it (created if missing).
    #[arg(long, value_name = "F")]
    pub backing_file: Option<PathBuf>,
    /// Refuse writes (the export is advertised read-only).
    #[arg(long)]
    pub read_only: bool,
    /// The export's name (clients asking for the empty name get it too).
    #[arg(long, value_name = "NAME", default_value = "ramdisk")]
    pub export_name: String,
    /// The RAM disk device's synchronization scope.
    #[arg(long, value_enum, default_value_t)]
    pub sync_scope: ScopeArg,
    /// The RAM disk device's execution level.
    #[arg(long, value_enum, default_value_t)]
    pub execution_level: LevelArg,
    /// Who writes replies to the socket (for measurements).
    #[arg(long, value_enum, default_value_t, hide = true)]
    pub reply_path: ReplyPathArg,
    /// Microseconds a connection polls for the next request before sleeping (for
    /// measurements; 0 disables).
    #[arg(long, value_name = "US", default_value_t = 100, hide = true)]
    pub spin_us: u64,
}

/// Parses a size: digits with an optional `K`, `M`, `G` or `T` suffix (powers of 1024;
/// `KiB`, `MB` and so on are accepted too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("bad size suffix in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("bad address {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {s:?} resolves to nothing"))
}

/// The NBD URI of export `name` at `addr`.
pub fn uri(addr: &ListenAddr, name: &str) -> String {
    match addr {
        ListenAddr::Unix(path) => format!("nbd+unix:///{name}?socket={}", path.display()),
        ListenAddr::Tcp(a) => format!("nbd://{a}/{name}"),
    }
}

impl ServeArgs {
    /// Where to listen.
    pub fn listen_addr(&self) -> ListenAddr {
        match (&self.unix, self.listen) {
            (Some(path), _) => ListenAddr::Unix(path.clone()),
            (None, Some(addr)) => ListenAddr::Tcp(addr),
            (None, None) => ListenAddr::Tcp(
                parse_addr(DEFAULT_LISTEN)
                    .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 10809))),
            ),
        }
    }

    /// The RAM disk configuration.
    pub fn ramdisk_config(&self) -> RamdiskConfig {
        let size = self.size.unwrap_or_else(|| match &self.backing_file {
            // 0: take the file's length.
            Some(f) if std::fs::metadata(f).is_ok_and(|m| m.len() > 0) => 0,
            _ => DEFAULT_SIZE,
        });
        let mut c = RamdiskConfig::new(size)
            .with_scope(match self.sync_scope {
                ScopeArg::None => SyncScope::None,
                ScopeArg::Queue => SyncScope::Queue,
                ScopeArg::Device => SyncScope::Device,
            })
            .with_level(match self.execution_level {
                LevelArg::Passive => ExecutionLevel::Passive,
                LevelArg::Dispatch => ExecutionLevel::Dispatch,
            });
        if let Some(f) = &self.backing_file {
            c = c.with_backing_file(f);
        }
        if self.read_only {
            c = c.read_only();
        }
        c
    }
}

/// Lets a front end observe a run of [`run_with`] (see the [module docs](self#hooks) for when
/// each hook runs). Both methods default to doing nothing.
pub trait ServeHooks {
    /// Called once the RAM disk exists (created, probed, its address bound), before the server
    /// accepts any client. `Err(message)` fails the command with that message: the server
    /// never serves, the device is deleted and the exit code is 1.
    fn started(&mut self, disk: &RamdiskDevice) -> Result<(), String> {
        let _ = disk;
        Ok(())
    }

    /// Called after the server stopped (every connection closed, the final flush done, the
    /// `stopped:` line printed) and before the device is deleted; only if
    /// [`ServeHooks::started`] returned `Ok`. `Err(message)` fails the command with that
    /// message (exit code 1; the device is still deleted).
    fn stopped(&mut self, disk: &RamdiskDevice, stats: &ServerStats) -> Result<(), String> {
        let _ = (disk, stats);
        Ok(())
    }
}

/// Hooks that do nothing: what [`run`] uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl ServeHooks for NoHooks {}

/// Runs `wdfkit serve-nbd`: creates the RAM disk, prints where it listens, serves until
/// SIGINT or SIGTERM, then shuts down cleanly (in-flight requests answered, backing file
/// flushed). Exit code 0 on a clean shutdown, 1 on a setup error, a failed final flush, or
/// requests the device never completed ([`crate::server::ServerStats::abandoned`]).
/// The same as [`run_with`] with [`NoHooks`].
pub fn run(args: ServeArgs) -> ExitCode {
    run_with(args, &mut NoHooks)
}

/// [`run`], calling `hooks` when the disk is ready ([`ServeHooks::started`]) and when the
/// server has stopped ([`ServeHooks::stopped`]). A hook's error is reported like a setup
/// error: `wdfkit serve-nbd: message` on stderr, exit code 1.
pub fn run_with(args: ServeArgs, hooks: &mut dyn ServeHooks) -> ExitCode {
    match serve(&args, hooks) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wdfkit serve-nbd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs, hooks: &mut dyn ServeHooks) -> Result<ExitCode, String> {
    let kernel = nt::Kernel::builder().build();
    let driver = Driver::create(&kernel, ObjectAttributes::default())
        .map_err(|s| format!("creating the driver: {s}"))?;
    let config = args.ramdisk_config();
    let disk = ramdisk::create(&driver, DEVICE_NAME, config.clone()).map_err(|s| {
        let why = match config.size {
            n if n > ramdisk::MAX_SIZE => {
                format!(" (--size {n} is above the RAM disk's limit of 64 TiB)")
            }
            n if !n.is_multiple_of(512) => format!(" (--size {n} is not a multiple of 512)"),
            _ => String::new(),
        };
        format!("creating the RAM disk: {s}{why}")
    })?;
    let description = format!(
        "wdfkit RAM disk (sync scope {}, execution level {})",
        config.sync_scope, config.execution_level
    );
    let export = probe_export(
        kernel.io(),
        DEVICE_NAME,
        &args.export_name,
        &description,
        true,
    )
    .map_err(|s| format!("probing the RAM disk: {s}"))?;
    let reply_path = match args.reply_path {
        ReplyPathArg::Inline => ReplyPath::Inline,
        ReplyPathArg::WriterThread => ReplyPath::WriterThread,
    };
    let options = ServerOptions {
        reply_path,
        spin: std::time::Duration::from_micros(args.spin_us),
        ..ServerOptions::default()
    };
    let server = Server::bind(
        kernel.io().clone(),
        DEVICE_NAME,
        export.clone(),
        &args.listen_addr(),
        options,
    )
    .map_err(|e| format!("cannot listen on {}: {e}", args.listen_addr()))?;
    let stop = server.shutdown_handle();
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("installing signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    let stopper = Arc::new(stop);
    let s2 = stopper.clone();
    let signal_thread = std::thread::Builder::new()
        .name("nbd-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                eprintln!("wdfkit serve-nbd: {name}: shutting down");
                s2.shutdown();
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;

    if let Err(e) = hooks.started(&disk) {
        // Nothing was accepted yet: undo the setup and fail.
        signal_handle.close();
        let _ = signal_thread.join();
        if let ListenAddr::Unix(path) = server.local_addr() {
            let _ = std::fs::remove_file(path);
        }
        drop(server);
        disk.device().delete();
        return Err(e);
    }

    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "wdfkit serve-nbd: listening on {}",
        uri(server.local_addr(), &export.name)
    );
    let _ = writeln!(
        stdout,
        "wdfkit serve-nbd: export {:?}: {} bytes{}, {}{}",
        export.name,
        export.size,
        if export.read_only { ", read-only" } else { "" },
        description,
        match disk.backing_file() {
            Some(p) => format!(", backing file {}", p.display()),
            None => String::new(),
        }
    );
    let _ = stdout.flush();
    drop(stdout);

    let stats = server.run();
    signal_handle.close();
    let _ = signal_thread.join();
    let io = disk.io_queue().stats();
    println!(
        "wdfkit serve-nbd: stopped: {} connections, {} requests ({} refused, {} completed \
         asynchronously); I/O queue: {} arrived, {} presented, {} deferred; final flush {}",
        stats.connections,
        stats.requests,
        stats.refused,
        stats.pending,
        io.arrived,
        io.presented,
        io.deferred_irql + io.deferred_lock,
        stats.final_flush
    );
    if stats.abandoned > 0 {
        eprintln!(
            "wdfkit serve-nbd: {} requests were still not complete after cancellation; their \
             clients got no reply",
            stats.abandoned
        );
    }
    drop(stopper);
    let hooked = hooks.stopped(&disk, &stats);
    disk.device().delete();
    hooked?;
    Ok(if stats.final_flush.is_success() && stats.abandoned == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    fn args() -> ServeArgs {
        ServeArgs {
            unix: None,
            listen: None,
            size: None,
            backing_file: None,
            read_only: false,
            export_name: "x".into(),
            sync_scope: ScopeArg::None,
            execution_level: LevelArg::Dispatch,
            reply_path: ReplyPathArg::Inline,
            spin_us: 100,
        }
    }

    #[test]
    fn default_listen_is_loopback() {
        let a = args();
        match a.listen_addr() {
            ListenAddr::Tcp(addr) => assert!(addr.ip().is_loopback()),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.ramdisk_config().size, DEFAULT_SIZE);
    }

    /// Refuses to start, and records what it was called with.
    #[derive(Default)]
    struct Refuse {
        started: Vec<(String, String, String)>,
        stopped: bool,
    }

    impl ServeHooks for Refuse {
        fn started(&mut self, disk: &RamdiskDevice) -> Result<(), String> {
            self.started.push((
                disk.name().to_string(),
                disk.io_queue().name().to_string(),
                disk.flush_queue().name().to_string(),
            ));
            Err("no thanks".into())
        }

        fn stopped(&mut self, _disk: &RamdiskDevice, _stats: &ServerStats) -> Result<(), String> {
            self.stopped = true;
            Ok(())
        }
    }

    #[test]
    fn a_failing_start_hook_fails_the_command_before_serving() {
        let dir = std::env::temp_dir().join(format!("nbd-cli-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let mut a = args();
        a.unix = Some(sock.clone());
        a.size = Some(1 << 20);
        let mut hooks = Refuse::default();
        assert_eq!(run_with(a, &mut hooks), ExitCode::FAILURE);
        assert_eq!(
            hooks.started,
            [(
                DEVICE_NAME.to_string(),
                format!("{DEVICE_NAME}-io"),
                format!("{DEVICE_NAME}-flush")
            )]
        );
        assert!(!hooks.stopped, "stopped runs only after a successful start");
        assert!(!sock.exists(), "the socket is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
