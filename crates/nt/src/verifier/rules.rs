//! The kernel's verifier rules (Driver Verifier's share). The framework adds its own.

use super::Rule;

/// A blocking wait above PASSIVE_LEVEL (`KeWaitForSingleObject` with a non-zero timeout).
pub static BLOCKING_WAIT_ABOVE_PASSIVE: Rule = Rule {
    name: "BLOCKING_WAIT_ABOVE_PASSIVE",
    code: 0x101,
    description: "a thread blocked in a wait while above PASSIVE_LEVEL",
    fatal: false,
};

/// A passive mutex acquired above PASSIVE_LEVEL.
pub static PASSIVE_MUTEX_ABOVE_PASSIVE: Rule = Rule {
    name: "PASSIVE_MUTEX_ABOVE_PASSIVE",
    code: 0x102,
    description: "a PassiveMutex was acquired above PASSIVE_LEVEL",
    fatal: false,
};

/// An IRQL guard found the level changed under it: something raised or lowered without restoring.
pub static IRQL_NOT_RESTORED: Rule = Rule {
    name: "IRQL_NOT_RESTORED",
    code: 0x103,
    description: "code changed the IRQL and did not restore it",
    fatal: false,
};

/// A recursive acquire of a non-recursive lock on its owning thread (would deadlock).
pub static RECURSIVE_LOCK_ACQUIRE: Rule = Rule {
    name: "RECURSIVE_LOCK_ACQUIRE",
    code: 0x104,
    description: "a thread re-acquired a lock it already owns",
    fatal: true,
};

/// A lock released by a thread that does not own it (or released when not held).
pub static RELEASE_BY_NON_OWNER: Rule = Rule {
    name: "RELEASE_BY_NON_OWNER",
    code: 0x105,
    description: "a lock was released by a thread that does not own it",
    fatal: false,
};

/// One DPC, or one continuous stretch at DISPATCH_LEVEL, exceeded the single budget.
pub static DPC_WATCHDOG_SINGLE: Rule = Rule {
    name: "DPC_WATCHDOG_SINGLE",
    code: 0x106,
    description: "a DPC or a continuous stretch at DISPATCH_LEVEL exceeded its time budget",
    fatal: false,
};

/// A processor ran DPCs back to back at DISPATCH_LEVEL longer than the cumulative budget.
pub static DPC_WATCHDOG_CUMULATIVE: Rule = Rule {
    name: "DPC_WATCHDOG_CUMULATIVE",
    code: 0x107,
    description: "a processor stayed at DISPATCH_LEVEL running DPCs longer than the cumulative budget",
    fatal: false,
};

/// `KeRaiseIrql` to a level below the current one.
pub static IRQL_NOT_GREATER_OR_EQUAL: Rule = Rule {
    name: "IRQL_NOT_GREATER_OR_EQUAL",
    code: 0x108,
    description: "an IRQL raise asked for a level below the current one",
    fatal: false,
};

/// Lowering below the IRQL a callback was entered at.
pub static IRQL_BELOW_ENTRY: Rule = Rule {
    name: "IRQL_BELOW_ENTRY",
    code: 0x109,
    description: "code lowered the IRQL below the level its callback was entered at",
    fatal: false,
};

/// A callback returned at a different IRQL than it was entered with.
pub static CALLBACK_IRQL_MISMATCH: Rule = Rule {
    name: "CALLBACK_IRQL_MISMATCH",
    code: 0x10A,
    description: "a callback returned at a different IRQL than it was entered with",
    fatal: false,
};

/// A spin lock acquired above DISPATCH_LEVEL.
pub static SPIN_LOCK_ABOVE_DISPATCH: Rule = Rule {
    name: "SPIN_LOCK_ABOVE_DISPATCH",
    code: 0x10B,
    description: "a SpinLock was acquired above DISPATCH_LEVEL",
    fatal: false,
};

/// An I/O request packet dropped without being completed.
pub static IRP_NOT_COMPLETED: Rule = Rule {
    name: "IRP_NOT_COMPLETED",
    code: 0x10C,
    description: "an IRP was dropped without being completed (completed with STATUS_CANCELLED instead)",
    fatal: false,
};

/// A call made at an IRQL above the maximum its contract allows.
pub static IRQL_TOO_HIGH: Rule = Rule {
    name: "IRQL_TOO_HIGH",
    code: 0x10D,
    description: "a routine was called above the maximum IRQL it allows",
    fatal: false,
};

/// An I/O completion whose information count exceeds the buffer it describes.
pub static INFORMATION_LENGTH_MISMATCH: Rule = Rule {
    name: "INFORMATION_LENGTH_MISMATCH",
    code: 0x10E,
    description: "a completion reported more bytes than the request's buffer holds",
    fatal: false,
};

/// A callback panicked; the panic was contained.
pub static CALLBACK_PANICKED: Rule = Rule {
    name: "CALLBACK_PANICKED",
    code: 0x10F,
    description: "a callback panicked; the panic was caught and contained",
    fatal: false,
};

/// Every kernel rule, for tables.
pub const ALL: &[&Rule] = &[
    &BLOCKING_WAIT_ABOVE_PASSIVE,
    &PASSIVE_MUTEX_ABOVE_PASSIVE,
    &IRQL_NOT_RESTORED,
    &RECURSIVE_LOCK_ACQUIRE,
    &RELEASE_BY_NON_OWNER,
    &DPC_WATCHDOG_SINGLE,
    &DPC_WATCHDOG_CUMULATIVE,
    &IRQL_NOT_GREATER_OR_EQUAL,
    &IRQL_BELOW_ENTRY,
    &CALLBACK_IRQL_MISMATCH,
    &SPIN_LOCK_ABOVE_DISPATCH,
    &IRP_NOT_COMPLETED,
    &IRQL_TOO_HIGH,
    &INFORMATION_LENGTH_MISMATCH,
    &CALLBACK_PANICKED,
];
