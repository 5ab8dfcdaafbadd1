//! Sample drivers written only against `wdf`'s public API, the way a KMDF developer would write
//! them. They are documentation (each module says which synchronization it picks and why) and
//! the workloads of the CLI, the benchmarks and the NBD frontend.
//!
//! | Driver | Sync scope / execution level | Why |
//! |---|---|---|
//! | [`stats`] | chosen at creation ([`stats::StatsVariant`]): None (racy), Device, Queue, None + spin lock, Passive + Device | the articles' statistics block, protected each possible way, so the lost update and the cost of serialization can be seen side by side |
//! | [`echo`] | Queue scope, Dispatch level; sequential queue; timer parented to the queue with automatic serialization | the KMDF echo sample: the queue context is shared by the I/O callbacks, the cancel routine and the timer, and the queue's lock covers all three with no driver lock |
//! | [`ramdisk`] | configurable (default None, Dispatch); storage with its own short spin locks; a Passive queue for flush | copies under short per-chunk locks scale across processors; writing a backing file blocks, so flush runs at PASSIVE_LEVEL on its own queue |
//!
//! Every driver has the same shape: `create(&driver, name, config)` makes the device and its
//! queues (the caller makes the driver with `Driver::create(&kernel, ObjectAttributes::default())`)
//! and returns a small handle struct; clients reach the device with `kernel.io().open(name)`.
//! Control codes are `pub const`s built with [`ctl_code`], like `CTL_CODE`.
//!
//! ```
//! use drivers::stats::{self, StatsBlock, StatsConfig, StatsVariant, IOCTL_STATS_GET};
//! use nt::NtStatus;
//! use wdf::{Driver, ObjectAttributes};
//!
//! let kernel = nt::Kernel::builder().processors(2).workers(2).build();
//! let driver = Driver::create(&kernel, ObjectAttributes::default()).unwrap();
//! stats::create(&driver, "stats-doc", StatsConfig::new(StatsVariant::SpinLock)).unwrap();
//!
//! let h = kernel.io().open("stats-doc").unwrap();
//! assert_eq!(h.read(0, 100).information, 100);
//! assert_eq!(h.write(0, vec![1; 10]).information, 10);
//! let c = h.device_control(IOCTL_STATS_GET, Vec::new(), StatsBlock::SIZE);
//! assert_eq!(c.status, NtStatus::SUCCESS);
//! let block = StatsBlock::from_bytes(&c.data).unwrap();
//! // The GET counts itself: three requests.
//! assert_eq!((block.total_requests, block.bytes_read, block.bytes_written), (3, 100, 10));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

pub mod echo;
pub mod ramdisk;
pub mod stats;

/// `FILE_DEVICE_DISK`: the device type of disk control codes.
pub const FILE_DEVICE_DISK: u32 = 0x0000_0007;
/// `FILE_DEVICE_UNKNOWN`: the device type of private control codes of non-disk devices.
pub const FILE_DEVICE_UNKNOWN: u32 = 0x0000_0022;
/// `METHOD_BUFFERED`: input and output are copied through system buffers.
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS`.
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS`.
pub const FILE_READ_ACCESS: u32 = 1;
/// `FILE_WRITE_ACCESS`.
pub const FILE_WRITE_ACCESS: u32 = 2;

/// Builds a control code. Equivalent to: the `CTL_CODE` macro.
///
/// ```
/// use drivers::{ctl_code, FILE_DEVICE_DISK, METHOD_BUFFERED, FILE_READ_ACCESS};
/// // IOCTL_DISK_GET_LENGTH_INFO
/// assert_eq!(ctl_code(FILE_DEVICE_DISK, 0x17, METHOD_BUFFERED, FILE_READ_ACCESS), 0x0007_405C);
/// ```
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// The sample drivers, by name (for the CLI and the NBD frontend).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleDriver {
    /// [`stats`]: the articles' statistics driver.
    Stats,
    /// [`echo`]: the KMDF echo sample.
    Echo,
    /// [`ramdisk`]: a sparse RAM disk, optionally file-backed.
    Ramdisk,
}

impl SampleDriver {
    /// Every sample driver, in the order of the crate docs.
    pub const ALL: [SampleDriver; 3] = [
        SampleDriver::Stats,
        SampleDriver::Echo,
        SampleDriver::Ramdisk,
    ];

    /// The driver's short name (`"stats"`, `"echo"`, `"ramdisk"`).
    pub const fn name(self) -> &'static str {
        match self {
            SampleDriver::Stats => "stats",
            SampleDriver::Echo => "echo",
            SampleDriver::Ramdisk => "ramdisk",
        }
    }

    /// The driver with this short name.
    pub fn from_name(name: &str) -> Option<SampleDriver> {
        SampleDriver::ALL.into_iter().find(|d| d.name() == name)
    }

    /// One line on what the driver is and which synchronization it uses.
    pub const fn description(self) -> &'static str {
        match self {
            SampleDriver::Stats => {
                "statistics block updated by every request; five ways to protect it (variants)"
            }
            SampleDriver::Echo => {
                "KMDF echo sample: sequential queue, Queue scope, timer-completed cancelable requests"
            }
            SampleDriver::Ramdisk => {
                "sparse block device (512-byte sectors), trim/write-zeroes, optional file backing"
            }
        }
    }
}

impl fmt::Display for SampleDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SampleDriver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SampleDriver::from_name(s)
            .ok_or_else(|| format!("unknown driver {s:?}; expected one of {:?}", names()))
    }
}

/// The short names of the sample drivers.
pub fn names() -> Vec<&'static str> {
    SampleDriver::ALL.iter().map(|d| d.name()).collect()
}

/// Busy-waits for `d` (simulated work; a callback at DISPATCH_LEVEL must not sleep).
pub(crate) fn spin_for(d: Duration) {
    if d.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Little-endian `u64` at `at`, if the slice is long enough.
pub(crate) fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in SampleDriver::ALL {
            assert_eq!(d.name().parse::<SampleDriver>().unwrap(), d);
        }
        assert_eq!(names(), ["stats", "echo", "ramdisk"]);
        assert!("nope".parse::<SampleDriver>().is_err());
    }

    #[test]
    fn le_u64_is_bounds_checked() {
        let b = 7u64.to_le_bytes();
        assert_eq!(le_u64(&b, 0), Some(7));
        assert_eq!(le_u64(&b, 1), None);
        assert_eq!(le_u64(&b, usize::MAX), None);
    }
}
