//! Locks and events.
//!
//! | Need | Use | Held at |
//! |---|---|---|
//! | short critical section, callable from DPCs | [`SpinLock`] | DISPATCH_LEVEL |
//! | may block or run long, PASSIVE code only | [`PassiveMutex`] | PASSIVE_LEVEL |
//! | explicit acquire/release, no data (framework locks) | [`RawSpinLock`], [`RawPassiveMutex`] | as above |
//! | wait for something to happen | [`Event`] | waits at PASSIVE_LEVEL |

mod event;
mod lock;
mod raw;

pub use event::{Event, EventKind};
pub use lock::{Lock, LockGuard, PassiveMutex, SpinLock};
pub use raw::{LockStats, RawLock, RawPassiveMutex, RawSpinLock};
