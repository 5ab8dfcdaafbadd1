//! Locks and events.
//!
//! | Need | Use | Held at |
//! |---|---|---|
//! | short critical section, callable from DPCs | [`SpinLock`] | DISPATCH_LEVEL |
//! | may block or run long, PASSIVE code only | [`PassiveMutex`] | PASSIVE_LEVEL |
//! | explicit acquire/release, no data (framework locks) | [`RawSpinLock`], [`RawPassiveMutex`] | as above |
//! | data guarded by a lock kept elsewhere | [`LockedBy`] | as its owner |
//! | flavour chosen at run time | [`RawDynLock`] | as its flavour |
//! | wait for something to happen | [`Event`] | waits at PASSIVE_LEVEL |

mod dyn_lock;
mod event;
mod lock;
mod locked_by;
mod raw;

pub use dyn_lock::{LockFlavour, RawDynLock};
pub use event::{Event, EventKind};
pub use lock::{ArcLockGuard, Lock, LockGuard, PassiveMutex, SpinLock};
pub use locked_by::{LockProof, LockedBy};
pub use raw::{LockStats, RawLock, RawPassiveMutex, RawSpinLock};
