//! `NTSTATUS` values: the result code of every kernel and framework operation.
//!
//! Equivalent to: `NTSTATUS` and the `STATUS_*` constants of `ntstatus.h` / `wdfstatus.h`.
//!
//! ```
//! use nt::NtStatus;
//! assert!(NtStatus::SUCCESS.is_success());
//! assert!(NtStatus::TIMEOUT.is_success()); // 0x102 is a success-class code
//! assert!(NtStatus::CANCELLED.is_error());
//! assert_eq!(NtStatus::CANCELLED.to_string(), "STATUS_CANCELLED (0xC0000120)");
//! ```

use std::fmt;

/// An `NTSTATUS` code.
///
/// The top two bits give the severity: `00` success, `01` informational, `10` warning, `11` error.
/// Equivalent to: `NTSTATUS`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtStatus(pub u32);

/// `Result<T, NtStatus>`, the shape of every fallible call in `nt` and `wdf`.
pub type Result<T> = std::result::Result<T, NtStatus>;

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $code:literal;)*) => {
        impl NtStatus {
            $($(#[$doc])* pub const $name: NtStatus = NtStatus($code);)*

            /// The symbolic name (`STATUS_...`), if the code is one wdfkit knows.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($code => Some(concat!("STATUS_", stringify!($name))),)*
                    _ => None,
                }
            }

            /// Every status wdfkit names, for tables and lookups.
            pub const ALL: &'static [NtStatus] = &[$(NtStatus::$name),*];
        }
    };
}

statuses! {
    /// The operation completed successfully.
    SUCCESS = 0x0000_0000;
    /// The request was left pending (returned by dispatch routines that complete later).
    PENDING = 0x0000_0103;
    /// A wait or try-acquire timed out. Success-class: compare explicitly.
    TIMEOUT = 0x0000_0102;
    /// Unsuccessful, no further detail.
    UNSUCCESSFUL = 0xC000_0001;
    /// The operation is not implemented.
    NOT_IMPLEMENTED = 0xC000_0002;
    /// A structure's size field was wrong.
    INFO_LENGTH_MISMATCH = 0xC000_0004;
    /// A parameter was invalid.
    INVALID_PARAMETER = 0xC000_000D;
    /// The fourth parameter was invalid (a non-default queue without an output handle).
    INVALID_PARAMETER_4 = 0xC000_00F2;
    /// The request is not valid for this device or in this configuration.
    INVALID_DEVICE_REQUEST = 0xC000_0010;
    /// The buffer is too small for the operation.
    BUFFER_TOO_SMALL = 0xC000_0023;
    /// The object name was not found.
    OBJECT_NAME_NOT_FOUND = 0xC000_0034;
    /// The object name already exists.
    OBJECT_NAME_COLLISION = 0xC000_0035;
    /// Not enough resources to complete the request.
    INSUFFICIENT_RESOURCES = 0xC000_009A;
    /// The request was not supported.
    NOT_SUPPORTED = 0xC000_00BB;
    /// An internal error occurred.
    INTERNAL_ERROR = 0xC000_00E5;
    /// The I/O request was cancelled.
    CANCELLED = 0xC000_0120;
    /// The device is busy.
    DEVICE_BUSY = 0x8000_0011;
    /// The data was too large for the buffer; part of it was returned (a warning).
    BUFFER_OVERFLOW = 0x8000_0005;
    /// Access was denied.
    ACCESS_DENIED = 0xC000_0022;
    /// The device is not ready.
    DEVICE_NOT_READY = 0xC000_00A3;
    /// The device is not in a state to accept the request.
    INVALID_DEVICE_STATE = 0xC000_0184;
    /// No more entries (an empty manual queue).
    NO_MORE_ENTRIES = 0x8000_001A;
    /// The object was not found (a tag request that is not queued).
    NOT_FOUND = 0xC000_0225;
    /// The object is being deleted.
    DELETE_PENDING = 0xC000_0056;
    /// The handle is not valid (closed, or never opened).
    INVALID_HANDLE = 0xC000_0008;
    /// The device does not exist or was removed.
    NO_SUCH_DEVICE = 0xC000_000E;
    /// An access outside the device's range (e.g. past the end of a disk).
    END_OF_FILE = 0xC000_0011;
    /// The media is write-protected.
    MEDIA_WRITE_PROTECTED = 0xC000_00A2;
    /// A device I/O error.
    IO_DEVICE_ERROR = 0xC000_0185;
    /// WDF: the queue is stopped or powered off (`STATUS_WDF_PAUSED`).
    WDF_PAUSED = 0xC020_0203;
    /// WDF: the destination queue is not accepting (`STATUS_WDF_BUSY`).
    WDF_BUSY = 0xC020_0204;
    /// WDF: object attributes are invalid.
    WDF_OBJECT_ATTRIBUTES_INVALID = 0xC020_0209;
    /// WDF: the object is not allowed to have a parent.
    WDF_PARENT_ASSIGNMENT_NOT_ALLOWED = 0xC020_020A;
    /// WDF: the execution level is incompatible with the parent's.
    WDF_INCOMPATIBLE_EXECUTION_LEVEL = 0xC020_020C;
    /// WDF: a required callback was not supplied.
    WDF_NO_CALLBACK = 0xC020_020D;
    /// WDF: a synchronization scope that the object does not accept.
    WDF_SYNCHRONIZATION_SCOPE_INVALID = 0xC020_0210;
    /// WDF: an execution level that the object does not accept.
    WDF_EXECUTION_LEVEL_INVALID = 0xC020_0211;
    /// WDF: a parent object is required.
    WDF_PARENT_NOT_SPECIFIED = 0xC020_0212;
    /// WDF: an internal framework error.
    WDF_INTERNAL_ERROR = 0xC020_0200;
    /// WDF: too many transfers.
    WDF_TOO_MANY_TRANSFERS = 0xC020_0217;
    /// WDF: the request is too fragmented.
    WDF_TOO_FRAGMENTED = 0xC020_0201;
}

impl NtStatus {
    /// Severity bits `00` or `01` (success or informational): `NT_SUCCESS`.
    #[inline]
    pub const fn is_success(self) -> bool {
        (self.0 as i32) >= 0
    }

    /// Severity `01` (informational): `NT_INFORMATION`.
    #[inline]
    pub const fn is_information(self) -> bool {
        self.0 >> 30 == 1
    }

    /// Severity `10` (warning): `NT_WARNING`.
    #[inline]
    pub const fn is_warning(self) -> bool {
        self.0 >> 30 == 2
    }

    /// Severity `11` (error): `NT_ERROR`.
    #[inline]
    pub const fn is_error(self) -> bool {
        self.0 >> 30 == 3
    }

    /// The facility field (bits 16..28); the WDF facility is `0x20`.
    #[inline]
    pub const fn facility(self) -> u16 {
        ((self.0 >> 16) & 0x0FFF) as u16
    }

    /// `Ok(())` for success-class codes, `Err(self)` otherwise.
    pub fn ok(self) -> Result<()> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }

    /// Looks a status up by its name, with or without the `STATUS_` prefix.
    pub fn from_name(name: &str) -> Option<NtStatus> {
        let wanted = name.strip_prefix("STATUS_").unwrap_or(name);
        Self::ALL
            .iter()
            .copied()
            .find(|s| s.name().and_then(|n| n.strip_prefix("STATUS_")) == Some(wanted))
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X})", self.0),
            None => write!(f, "0x{:08X}", self.0),
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NtStatus {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_gives_name_and_hex() {
        assert_eq!(
            NtStatus::WDF_INCOMPATIBLE_EXECUTION_LEVEL.to_string(),
            "STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL (0xC020020C)"
        );
        assert_eq!(NtStatus(0xC0DE_0001).to_string(), "0xC0DE0001");
    }

    #[test]
    fn severity_classes() {
        assert!(NtStatus::SUCCESS.is_success());
        assert!(NtStatus::PENDING.is_success());
        assert!(NtStatus::NO_MORE_ENTRIES.is_warning());
        assert!(!NtStatus::NO_MORE_ENTRIES.is_success());
        assert!(NtStatus::WDF_BUSY.is_error());
        assert_eq!(NtStatus::WDF_BUSY.facility(), 0x20);
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for s in NtStatus::ALL {
            assert!(seen.insert(s.0), "duplicate code {s}");
            assert_eq!(NtStatus::from_name(s.name().unwrap()), Some(*s));
        }
        assert_eq!(NtStatus::from_name("CANCELLED"), Some(NtStatus::CANCELLED));
    }
}
