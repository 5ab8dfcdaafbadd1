//! Where deferred work runs.
//!
//! | Object | Runs on | IRQL | Queued twice? |
//! |---|---|---|---|
//! | [`Dpc`](dpc::Dpc) | a DPC processor thread (one per simulated processor) | DISPATCH_LEVEL | no: `insert` returns `false` |
//! | [`Timer`](timer::Timer) | expiry queues its DPC | DISPATCH_LEVEL | expiries coalesce in the DPC |
//! | [`WorkItem`](work_queue::WorkItem) | a system worker thread | PASSIVE_LEVEL | no: `enqueue` returns `false` |
//!
//! All of them run their routine inside an IRQL [`CallbackFrame`](crate::irql::CallbackFrame)
//! and contain a panicking routine (reported as `CALLBACK_PANICKED`) so the thread survives.

pub mod clock;
pub mod dpc;
pub mod timer;
pub mod work_queue;
