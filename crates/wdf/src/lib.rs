//! `wdf`: the KMDF I/O model on wdfkit's simulated kernel.
//!
//! A driver creates devices; each device has queues; each queue presents requests to the
//! driver's callbacks (`io_read` for `EvtIoRead`, ...). The framework can serialize those
//! callbacks: the **synchronization scope** ([`SyncScope`]) picks whose lock is held around each
//! callback (the device's, the queue's, or none), and the **execution level**
//! ([`ExecutionLevel`]) picks its flavour (a spin lock, callbacks at DISPATCH_LEVEL; or a passive
//! mutex, callbacks at PASSIVE_LEVEL, with arrivals at DISPATCH_LEVEL deferred to a work item).
//! The lock is held only while one callback runs.
//!
//! Rust's types carry two rules that KMDF leaves to discipline: data protected by a scope lock
//! ([`ScopeLocked`]) is reachable only with a [`ScopeToken`] proving that lock is held, and a
//! [`Request`] is an owned value consumed by completion, so it cannot be completed twice.
//!
//! ```
//! use wdf::*;
//! use nt::NtStatus;
//!
//! // The articles' statistics driver, Device scope: the framework's lock protects the block.
//! #[derive(Default)]
//! struct Stats { requests: u64, bytes_read: u64 }
//! struct Ctx { stats: ScopeLocked<Stats> }
//!
//! let kernel = nt::Kernel::builder().processors(2).workers(2).build();
//! let driver = Driver::create(&kernel, ObjectAttributes::default()).unwrap();
//! let mut init = DeviceInit::new("stats0");
//! init.attributes(ObjectAttributes::scope(SyncScope::Device));
//! init.context(|dev| Ctx { stats: dev.scope_locked(Stats::default()) });
//! let device = driver.create_device(init).unwrap();
//! let ctx = device.context::<Ctx>().unwrap();
//!
//! let mut cfg = QueueConfig::new(DispatchType::Parallel);
//! cfg.default_queue = true;
//! let c = ctx.clone();
//! cfg.io_read(move |cx, req, len| {
//!     let token = cx.scope().expect("Device scope lends a token");
//!     let s = c.stats.get(token);
//!     s.requests += 1;
//!     s.bytes_read += len as u64;
//!     req.complete_with_information(NtStatus::SUCCESS, len);
//! });
//! device.create_queue(cfg, ObjectAttributes::default()).unwrap();
//!
//! let h = kernel.io().open("stats0").unwrap();
//! assert_eq!(h.read(0, 16).information, 16);
//! let mut token = device.acquire_lock();
//! assert_eq!(ctx.stats.get(&mut token).bytes_read, 16);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
pub mod driver;
pub mod exec;
mod invoke;
pub use invoke::PanicPolicy;
pub mod locks;
pub mod object;
pub mod observe;
pub mod power;
pub mod queue;
pub mod request;
pub mod sync;
pub mod verifier;

pub use device::{Device, DeviceInit, FileObjectConfig};
pub use driver::Driver;
pub use exec::{
    CallbackContext, Dpc, DpcConfig, Parent, Timer, TimerConfig, WorkItem, WorkItemConfig,
};
pub use object::{ObjectAttributes, ObjectHeader, ObjectState};
pub use power::{StopAction, StopNotice};
pub use queue::{
    CancelableRequest, DispatchType, IoContext, Queue, QueueConfig, QueueStateCallback, QueueStats,
    QueueStatus,
};
pub use request::{Request, RequestError, RequestParameters, RequestType};
pub use sync::{
    CallbackLock, ExecutionLevel, LockOwner, Resolved, ScopeLocked, ScopeToken, SyncScope,
};
