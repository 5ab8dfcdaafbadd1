//! The framework's verifier rules, reported through `nt`'s engine so one table covers both.
//!
//! Equivalent to: the KMDF verifier's checks and the `WDF_VIOLATION` (0x10D) bug-check codes.

pub use nt::verifier::{Mode, count, counts, disable, enable, enabled, recent, report, reset};

/// The rules.
pub mod rules {
    use nt::verifier::Rule;

    /// A callback lock re-acquired on its owning thread. Fatal, verifier or not.
    pub static WDF_RECURSIVE_LOCK: Rule = Rule {
        name: "WDF_RECURSIVE_LOCK",
        code: 0x202,
        description: "a callback lock was acquired by the thread that already holds it",
        fatal: true,
    };

    /// A request dropped by the driver without being completed, forwarded or requeued.
    pub static REQUEST_NOT_COMPLETED: Rule = Rule {
        name: "REQUEST_NOT_COMPLETED",
        code: 0x203,
        description: "a driver-owned request was dropped without completion (completed with STATUS_CANCELLED)",
        fatal: false,
    };

    /// A completion whose information exceeds the buffer (`INFORMATION_LENGTH_MISMATCH`).
    pub static INFORMATION_LENGTH_MISMATCH: Rule = Rule {
        name: "WDF_REQUEST_INFORMATION_LENGTH_MISMATCH",
        code: 0x204,
        description: "a request was completed with more information than its buffer holds",
        fatal: false,
    };

    /// A driver callback panicked; the framework contained it.
    pub static CALLBACK_PANICKED: Rule = Rule {
        name: "WDF_CALLBACK_PANICKED",
        code: 0x205,
        description: "a driver callback panicked; the request was failed and the lock released",
        fatal: false,
    };

    /// `acquire_lock` on an object that has no callback lock (`WDF_INVALID_LOCK_OPERATION`).
    pub static INVALID_LOCK_OPERATION: Rule = Rule {
        name: "WDF_INVALID_LOCK_OPERATION",
        code: 0x20B,
        description: "a lock operation on an object without a callback lock",
        fatal: false,
    };

    /// A request operation that the request's state does not allow (e.g. requeue on a
    /// non-manual queue, forward to the same queue).
    pub static REQUEST_MISUSE: Rule = Rule {
        name: "WDF_REQUEST_MISUSE",
        code: 0x206,
        description: "a request operation that its queue or state does not allow",
        fatal: false,
    };

    /// A second outstanding stop or purge callback, or a state change on a deleted queue
    /// (`WDF_QUEUE_FATAL_ERROR`). Fatal, as in WDF.
    pub static WDF_QUEUE_FATAL_ERROR: Rule = Rule {
        name: "WDF_QUEUE_FATAL_ERROR",
        code: 0x20A,
        description: "a queue state operation WDF treats as fatal (a second outstanding stop/purge callback)",
        fatal: true,
    };

    /// A PASSIVE_LEVEL-only DDI called above PASSIVE_LEVEL (or where it could never finish).
    pub static PASSIVE_DDI_AT_DISPATCH: Rule = Rule {
        name: "WDF_PASSIVE_DDI_ABOVE_PASSIVE",
        code: 0x207,
        description: "a PASSIVE_LEVEL-only framework call was made above PASSIVE_LEVEL; it failed with STATUS_INVALID_DEVICE_REQUEST",
        fatal: false,
    };

    /// Callback locks acquired against the WDF order (driver < device < queue).
    pub static LOCK_ORDER: Rule = Rule {
        name: "WDF_LOCK_ORDER",
        code: 0x208,
        description: "a callback lock was acquired while holding one that WDF orders after it (driver < device < queue)",
        fatal: false,
    };

    /// A callback returned still holding a lock it took.
    pub static CALLBACK_RETURNED_HOLDING_LOCK: Rule = Rule {
        name: "WDF_CALLBACK_RETURNED_HOLDING_LOCK",
        code: 0x209,
        description: "a driver callback returned while still holding a lock it acquired",
        fatal: false,
    };

    /// The driver released the callback lock the framework holds around its callback.
    pub static CALLBACK_LOCK_RELEASED_BY_DRIVER: Rule = Rule {
        name: "WDF_CALLBACK_LOCK_RELEASED_BY_DRIVER",
        code: 0x20C,
        description: "the driver released the callback lock inside the callback it serializes",
        fatal: false,
    };

    /// Requests still owned by the driver when their queue was purged for device removal.
    pub static REQUEST_LEAKED: Rule = Rule {
        name: "WDF_REQUEST_LEAKED",
        code: 0x20D,
        description: "requests were still driver-owned when their device was removed",
        fatal: false,
    };

    /// Every framework rule.
    pub static ALL: &[&Rule] = &[
        &WDF_RECURSIVE_LOCK,
        &REQUEST_NOT_COMPLETED,
        &INFORMATION_LENGTH_MISMATCH,
        &CALLBACK_PANICKED,
        &REQUEST_MISUSE,
        &INVALID_LOCK_OPERATION,
        &WDF_QUEUE_FATAL_ERROR,
        &PASSIVE_DDI_AT_DISPATCH,
        &LOCK_ORDER,
        &CALLBACK_RETURNED_HOLDING_LOCK,
        &CALLBACK_LOCK_RELEASED_BY_DRIVER,
        &REQUEST_LEAKED,
    ];
}
