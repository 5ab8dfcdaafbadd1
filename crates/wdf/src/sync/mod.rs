//! Synchronization: constraints, callback locks, and scope evidence.
//!
//! Choosing a scope and level (the articles' advice, as a chart):
//!
//! ```text
//! Do callbacks share state that needs a lock?
//! ├─ no ───────────────────────────────► SyncScope::None (parallel queues scale)
//! └─ yes: is the critical section short and non-blocking?
//!    ├─ yes ──► SyncScope::None + an nt::sync::SpinLock in the device context,
//!    │          held only around the update (best throughput)
//!    └─ no, or the state is touched by DPCs/timers/work items too:
//!       ├─ one queue's state ──► SyncScope::Queue (+ auto-serialized timer/DPC under the queue)
//!       └─ device-wide state ──► SyncScope::Device (serializes *every* queue: use sparingly)
//!       Need to block or call PASSIVE-only code in callbacks? ──► ExecutionLevel::Passive
//! ```

pub mod callback_lock;
pub mod constraints;
pub mod scope;

pub use callback_lock::{CallbackLock, LockOrder};
pub use constraints::{ExecutionLevel, LockOwner, Resolved, SyncScope};
pub use scope::{ScopeLocked, ScopeToken};
