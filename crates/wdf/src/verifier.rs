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

    /// Every framework rule.
    pub static ALL: &[&Rule] = &[
        &WDF_RECURSIVE_LOCK,
        &REQUEST_NOT_COMPLETED,
        &INFORMATION_LENGTH_MISMATCH,
        &CALLBACK_PANICKED,
        &REQUEST_MISUSE,
        &INVALID_LOCK_OPERATION,
    ];
}
