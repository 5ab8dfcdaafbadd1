//! The statistics driver of "Understanding Sync Scope in WDF Drivers".
//!
//! A device with two parallel queues, one for reads and writes and one for control requests. Every
//! `EvtIoRead`, `EvtIoWrite` and `EvtIoDeviceControl` counts its request in a statistics block
//! (total requests, bytes read, bytes written) and completes it. [`IOCTL_STATS_GET`] returns the
//! block ([`StatsBlock`], 24 bytes), [`IOCTL_STATS_RESET`] clears it. A request is counted when
//! its callback runs, control requests included: a GET's answer includes the GET, and a RESET
//! leaves zeros. Reads complete with zeros; zero-length reads and writes never reach the driver
//! (the framework completes them), so they are not counted.
//!
//! # Sync scope and execution level
//!
//! The block is shared by every callback of the device, so it needs one lock that all of them
//! agree on. The variant ([`StatsVariant`], chosen at creation) decides which:
//!
//! | Variant | Scope / level | What protects the block | Verdict |
//! |---|---|---|---|
//! | `unsynchronized` | None / Dispatch | nothing: a load, then a store | loses updates (the article's bug) |
//! | `device-scope` | Device / Dispatch | the device's spin lock, held around every callback of both queues | exact, but over-serialized: one callback of the device at a time, all of it at DISPATCH_LEVEL |
//! | `queue-scope` | Queue / Dispatch | each queue's lock; one block per queue | exact; reads and writes still one at a time |
//! | `spin-lock` | None / Dispatch | a spin lock in the device context, held only around the update | exact and parallel: the articles' advice |
//! | `passive-device-scope` | Device / Passive | the device's passive mutex, also around a work item | exact; callbacks may block, and a work item can share the data |
//!
//! Our reading of the articles: Device scope is the easy fix and the expensive one, since
//! all of a callback runs under the lock although only three additions need it. A short spin
//! lock around just the update is the usual best choice. Pick Passive level only when
//! callbacks must block or must share data with work items, which always run at PASSIVE_LEVEL.
//!
//! **Queue scope** gives the read/write queue and the control queue *different* locks, so no
//! single [`ScopeLocked`] block can serve both (a token of the wrong lock is refused). Each
//! queue keeps its own block under its own lock: the read/write queue counts reads and writes,
//! the control queue counts control requests. GET and RESET run under the control queue's lock
//! and take the read/write queue's lock too (`Queue::acquire_lock`, i.e.
//! `WdfObjectAcquireLock`), so they see (or clear) both halves at one instant. These two
//! locks are always taken in the order control queue, then read/write queue, and nothing takes
//! them the other way round, so this cannot deadlock. (Forwarding every control request to the
//! read/write queue would also be correct, but the control queue would then do nothing.)
//!
//! **Passive + Device scope** exists to show one thing: a work item parented to the device
//! with automatic serialization takes the device's lock, so it can reach the same
//! `ScopeLocked` block. A work item always runs at PASSIVE_LEVEL, so it can share only a
//! passive mutex, never a spin lock (`STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL`). Here
//! [`IOCTL_STATS_SNAPSHOT`] parks its request in the device context. The work item then
//! completes it with a copy of the block. The cost is that every callback is a PASSIVE_LEVEL
//! callback: requests that arrive at DISPATCH_LEVEL are deferred to a work item.
//!
//! [`StatsConfig::work`] adds a busy wait to every callback (outside the update), so a run
//! can show what serializing that work costs.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use nt::NtStatus;
use nt::sync::SpinLock;
use wdf::{
    CallbackContext, Device, DeviceInit, DispatchType, Driver, ExecutionLevel, IoContext,
    ObjectAttributes, Queue, QueueConfig, Request, RequestType, ScopeLocked, SyncScope, WorkItem,
    WorkItemConfig,
};

use crate::{FILE_ANY_ACCESS, FILE_DEVICE_UNKNOWN, METHOD_BUFFERED, ctl_code, le_u64, spin_for};

/// Returns the statistics block ([`StatsBlock::SIZE`] bytes). A smaller output buffer:
/// `STATUS_BUFFER_TOO_SMALL`.
pub const IOCTL_STATS_GET: u32 =
    ctl_code(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Clears the statistics block (no output).
pub const IOCTL_STATS_RESET: u32 =
    ctl_code(FILE_DEVICE_UNKNOWN, 0x801, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// `passive-device-scope` only: the request is completed by the device's work item with a
/// copy of the block (as [`IOCTL_STATS_GET`]). Other variants: `STATUS_NOT_SUPPORTED`.
pub const IOCTL_STATS_SNAPSHOT: u32 =
    ctl_code(FILE_DEVICE_UNKNOWN, 0x802, METHOD_BUFFERED, FILE_ANY_ACCESS);

/// The statistics block. On the wire (the output of [`IOCTL_STATS_GET`]): three little-endian
/// `u64`s, `total_requests` at byte 0, `bytes_read` at 8, `bytes_written` at 16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatsBlock {
    /// Requests whose callback ran (reads, writes and control requests).
    pub total_requests: u64,
    /// Bytes returned by reads.
    pub bytes_read: u64,
    /// Bytes accepted by writes.
    pub bytes_written: u64,
}

impl StatsBlock {
    /// Size of the block on the wire.
    pub const SIZE: usize = 24;

    /// The wire form.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0; Self::SIZE];
        b[0..8].copy_from_slice(&self.total_requests.to_le_bytes());
        b[8..16].copy_from_slice(&self.bytes_read.to_le_bytes());
        b[16..24].copy_from_slice(&self.bytes_written.to_le_bytes());
        b
    }

    /// Parses the wire form; `None` if `b` is shorter than [`StatsBlock::SIZE`].
    pub fn from_bytes(b: &[u8]) -> Option<StatsBlock> {
        Some(StatsBlock {
            total_requests: le_u64(b, 0)?,
            bytes_read: le_u64(b, 8)?,
            bytes_written: le_u64(b, 16)?,
        })
    }

    fn count(&mut self, what: Count) {
        self.total_requests = self.total_requests.wrapping_add(1);
        match what {
            Count::Read(n) => self.bytes_read = self.bytes_read.wrapping_add(n),
            Count::Write(n) => self.bytes_written = self.bytes_written.wrapping_add(n),
            Count::Control => {}
        }
    }

    fn sum(&self, other: &StatsBlock) -> StatsBlock {
        StatsBlock {
            total_requests: self.total_requests.wrapping_add(other.total_requests),
            bytes_read: self.bytes_read.wrapping_add(other.bytes_read),
            bytes_written: self.bytes_written.wrapping_add(other.bytes_written),
        }
    }
}

/// How the statistics block is protected (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatsVariant {
    /// Scope None, no lock: a read-modify-write that loses updates. The bug.
    Unsynchronized,
    /// Scope Device (Dispatch level): the device's spin lock around every callback.
    DeviceScope,
    /// Scope Queue: each queue's lock around its callbacks; one block per queue.
    QueueScope,
    /// Scope None, parallel callbacks, a spin lock held only around the update.
    SpinLock,
    /// Passive level + scope Device: a passive mutex, shared with an auto-serialized work item.
    PassiveDeviceScope,
}

impl StatsVariant {
    /// Every variant, in the order of the module docs.
    pub const ALL: [StatsVariant; 5] = [
        StatsVariant::Unsynchronized,
        StatsVariant::DeviceScope,
        StatsVariant::QueueScope,
        StatsVariant::SpinLock,
        StatsVariant::PassiveDeviceScope,
    ];

    /// The variant's name (`"unsynchronized"`, `"device-scope"`, `"queue-scope"`,
    /// `"spin-lock"`, `"passive-device-scope"`).
    pub const fn name(self) -> &'static str {
        match self {
            StatsVariant::Unsynchronized => "unsynchronized",
            StatsVariant::DeviceScope => "device-scope",
            StatsVariant::QueueScope => "queue-scope",
            StatsVariant::SpinLock => "spin-lock",
            StatsVariant::PassiveDeviceScope => "passive-device-scope",
        }
    }

    /// The variant with this name.
    pub fn from_name(name: &str) -> Option<StatsVariant> {
        StatsVariant::ALL.into_iter().find(|v| v.name() == name)
    }

    /// One line on what the variant does.
    pub const fn description(self) -> &'static str {
        match self {
            StatsVariant::Unsynchronized => {
                "scope None and no lock: parallel callbacks race on the block (lost updates)"
            }
            StatsVariant::DeviceScope => {
                "scope Device: the device's spin lock around every callback of both queues"
            }
            StatsVariant::QueueScope => {
                "scope Queue: one lock and one block per queue; GET/RESET take both locks"
            }
            StatsVariant::SpinLock => {
                "scope None: parallel callbacks, a spin lock held only around the update"
            }
            StatsVariant::PassiveDeviceScope => {
                "Passive + scope Device: a passive mutex, shared with an auto-serialized work item"
            }
        }
    }

    /// The device's synchronization scope (queues inherit it, except under
    /// [`StatsVariant::QueueScope`], whose queues ask for Queue scope themselves).
    pub const fn sync_scope(self) -> SyncScope {
        match self {
            StatsVariant::DeviceScope | StatsVariant::PassiveDeviceScope => SyncScope::Device,
            StatsVariant::Unsynchronized | StatsVariant::QueueScope | StatsVariant::SpinLock => {
                SyncScope::None
            }
        }
    }

    /// The scope the queues are created with.
    pub const fn queue_scope(self) -> SyncScope {
        match self {
            StatsVariant::QueueScope => SyncScope::Queue,
            _ => SyncScope::InheritFromParent,
        }
    }

    /// The device's execution level.
    pub const fn execution_level(self) -> ExecutionLevel {
        match self {
            StatsVariant::PassiveDeviceScope => ExecutionLevel::Passive,
            _ => ExecutionLevel::Dispatch,
        }
    }

    /// Whether the variant counts exactly under concurrency (all but `unsynchronized`).
    pub const fn is_exact(self) -> bool {
        !matches!(self, StatsVariant::Unsynchronized)
    }
}

impl fmt::Display for StatsVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StatsVariant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StatsVariant::from_name(s).ok_or_else(|| {
            let names: Vec<_> = StatsVariant::ALL.iter().map(|v| v.name()).collect();
            format!("unknown stats variant {s:?}; expected one of {names:?}")
        })
    }
}

/// How to create a statistics device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsConfig {
    /// How the block is protected.
    pub variant: StatsVariant,
    /// Simulated work: every callback busy-waits this long, outside the update (but inside
    /// the scope lock, for the scoped variants). Default: none.
    pub work: Duration,
    /// `unsynchronized` only: a busy wait between reading the block and writing it back, to
    /// widen the window in which another callback's update is lost. Default: none.
    pub race_window: Duration,
    /// Count how many callbacks of the device run at once ([`StatsDevice::peak_concurrency`]).
    /// It costs two shared atomic operations per callback, so it is off by default.
    pub track_concurrency: bool,
}

impl StatsConfig {
    /// A configuration for `variant`, with no simulated work.
    pub fn new(variant: StatsVariant) -> Self {
        StatsConfig {
            variant,
            work: Duration::ZERO,
            race_window: Duration::ZERO,
            track_concurrency: false,
        }
    }
}

impl Default for StatsConfig {
    /// The articles' recommendation: [`StatsVariant::SpinLock`].
    fn default() -> Self {
        StatsConfig::new(StatsVariant::SpinLock)
    }
}

/// What a request adds to the block.
#[derive(Clone, Copy, Debug)]
enum Count {
    Read(u64),
    Write(u64),
    Control,
}

/// Which queue a callback belongs to (for the per-queue blocks of Queue scope).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    ReadWrite,
    Control,
}

/// What a control request does to the block after counting itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ControlOp {
    Get,
    Reset,
}

/// The `unsynchronized` block: each field is an atomic, but an update is a separate load and
/// store, so two callbacks can read the same old value and one increment is lost.
#[derive(Default)]
struct RacyBlock {
    total_requests: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

impl RacyBlock {
    fn count(&self, what: Count, window: Duration) {
        // Read the fields ...
        let total = self.total_requests.load(Ordering::Relaxed);
        let (field, add) = match what {
            Count::Read(n) => (Some(&self.bytes_read), n),
            Count::Write(n) => (Some(&self.bytes_written), n),
            Count::Control => (None, 0),
        };
        let bytes = field.map(|f| f.load(Ordering::Relaxed));
        // ... compute (anything here widens the window) ...
        spin_for(window);
        // ... and write them back: whatever another callback stored meanwhile is overwritten.
        self.total_requests
            .store(total.wrapping_add(1), Ordering::Relaxed);
        if let (Some(f), Some(b)) = (field, bytes) {
            f.store(b.wrapping_add(add), Ordering::Relaxed);
        }
    }

    fn load(&self) -> StatsBlock {
        StatsBlock {
            total_requests: self.total_requests.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }

    fn clear(&self) {
        self.total_requests.store(0, Ordering::Relaxed);
        self.bytes_read.store(0, Ordering::Relaxed);
        self.bytes_written.store(0, Ordering::Relaxed);
    }
}

/// Queue scope: one block per queue, each protected by its queue's lock.
struct PerQueue {
    read_write: ScopeLocked<StatsBlock>,
    control: ScopeLocked<StatsBlock>,
    read_write_queue: Weak<Queue>,
}

/// Where the block lives, per variant.
enum Block {
    Racy(RacyBlock),
    /// Device scope (either level): protected by the device's callback lock.
    Device(ScopeLocked<StatsBlock>),
    /// Set once both queues exist (requests are routed to them only afterwards).
    PerQueue(OnceLock<PerQueue>),
    Spin(SpinLock<StatsBlock>),
}

/// Counts callbacks running at once.
#[derive(Default)]
struct Tracker {
    now: AtomicUsize,
    peak: AtomicUsize,
}

struct Busy<'a>(&'a Tracker);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The device context.
struct StatsContext {
    variant: StatsVariant,
    work: Duration,
    race_window: Duration,
    block: Block,
    tracker: Option<Tracker>,
    /// `passive-device-scope`: snapshot requests waiting for the work item.
    waiting: Option<ScopeLocked<Vec<Request>>>,
    work_item: OnceLock<Arc<WorkItem>>,
    snapshots: AtomicU64,
}

impl StatsContext {
    fn new(device: &Arc<Device>, config: &StatsConfig) -> StatsContext {
        let variant = config.variant;
        let block = match variant {
            StatsVariant::Unsynchronized => Block::Racy(RacyBlock::default()),
            StatsVariant::DeviceScope | StatsVariant::PassiveDeviceScope => {
                Block::Device(device.scope_locked(StatsBlock::default()))
            }
            StatsVariant::QueueScope => Block::PerQueue(OnceLock::new()),
            StatsVariant::SpinLock => {
                Block::Spin(SpinLock::named("stats block", StatsBlock::default()))
            }
        };
        StatsContext {
            variant,
            work: config.work,
            race_window: config.race_window,
            block,
            tracker: config.track_concurrency.then(Tracker::default),
            waiting: (variant == StatsVariant::PassiveDeviceScope)
                .then(|| device.scope_locked(Vec::new())),
            work_item: OnceLock::new(),
            snapshots: AtomicU64::new(0),
        }
    }

    fn enter(&self) -> Option<Busy<'_>> {
        let t = self.tracker.as_ref()?;
        let n = t.now.fetch_add(1, Ordering::SeqCst) + 1;
        t.peak.fetch_max(n, Ordering::SeqCst);
        Some(Busy(t))
    }

    /// Counts one request in the block this callback may touch.
    fn count(&self, cx: &mut IoContext<'_, '_>, role: Role, what: Count) -> Result<(), NtStatus> {
        match &self.block {
            Block::Racy(b) => b.count(what, self.race_window),
            Block::Device(b) => {
                let token = cx.scope().ok_or(NtStatus::INTERNAL_ERROR)?;
                b.try_get(token)?.count(what);
            }
            Block::PerQueue(p) => {
                let p = p.get().ok_or(NtStatus::INVALID_DEVICE_STATE)?;
                let token = cx.scope().ok_or(NtStatus::INTERNAL_ERROR)?;
                let b = match role {
                    Role::ReadWrite => &p.read_write,
                    Role::Control => &p.control,
                };
                b.try_get(token)?.count(what);
            }
            Block::Spin(b) => b.lock().count(what),
        }
        Ok(())
    }

    /// A control request on the control queue: counts itself, then reads (and for RESET
    /// clears) the whole block as one step. Returns the block as it is afterwards.
    fn control(&self, cx: &mut IoContext<'_, '_>, op: ControlOp) -> Result<StatsBlock, NtStatus> {
        match &self.block {
            Block::Racy(b) => {
                b.count(Count::Control, self.race_window);
                if op == ControlOp::Reset {
                    b.clear();
                }
                Ok(b.load())
            }
            Block::Device(b) => {
                let token = cx.scope().ok_or(NtStatus::INTERNAL_ERROR)?;
                let b = b.try_get(token)?;
                b.count(Count::Control);
                if op == ControlOp::Reset {
                    *b = StatsBlock::default();
                }
                Ok(*b)
            }
            Block::PerQueue(p) => {
                let p = p.get().ok_or(NtStatus::INVALID_DEVICE_STATE)?;
                let token = cx.scope().ok_or(NtStatus::INTERNAL_ERROR)?;
                let control = p.control.try_get(token)?;
                control.count(Count::Control);
                // The other half is the read/write queue's: take its lock too (control queue
                // lock first, read/write queue lock second, always in that order).
                let rw_queue = p
                    .read_write_queue
                    .upgrade()
                    .ok_or(NtStatus::INVALID_DEVICE_STATE)?;
                let mut rw_token = rw_queue.acquire_lock();
                let rw = p.read_write.try_get(&mut rw_token)?;
                if op == ControlOp::Reset {
                    *rw = StatsBlock::default();
                    *control = StatsBlock::default();
                }
                Ok(rw.sum(control))
            }
            Block::Spin(b) => {
                let mut b = b.lock();
                b.count(Count::Control);
                if op == ControlOp::Reset {
                    *b = StatsBlock::default();
                }
                Ok(*b)
            }
        }
    }

    /// `EvtIoRead` / `EvtIoWrite`.
    fn on_read_write(&self, cx: &mut IoContext<'_, '_>, req: Request, what: Count, length: usize) {
        let _busy = self.enter();
        spin_for(self.work);
        match self.count(cx, Role::ReadWrite, what) {
            Ok(()) => req.complete_with_information(NtStatus::SUCCESS, length),
            Err(status) => req.complete(status),
        }
    }

    /// `EvtIoDeviceControl`.
    fn on_control(
        &self,
        cx: &mut IoContext<'_, '_>,
        mut req: Request,
        output_length: usize,
        code: u32,
    ) {
        let _busy = self.enter();
        spin_for(self.work);
        match code {
            IOCTL_STATS_GET => match self.control(cx, ControlOp::Get) {
                Ok(block) => match req.output_buffer(StatsBlock::SIZE) {
                    Ok(out) => {
                        out[..StatsBlock::SIZE].copy_from_slice(&block.to_bytes());
                        req.complete_with_information(NtStatus::SUCCESS, StatsBlock::SIZE);
                    }
                    Err(status) => req.complete(status),
                },
                Err(status) => req.complete(status),
            },
            IOCTL_STATS_RESET => match self.control(cx, ControlOp::Reset) {
                Ok(_) => req.complete(NtStatus::SUCCESS),
                Err(status) => req.complete(status),
            },
            IOCTL_STATS_SNAPSHOT => self.park_for_snapshot(cx, req, output_length),
            _ => {
                let status = match self.count(cx, Role::Control, Count::Control) {
                    Ok(()) => NtStatus::INVALID_DEVICE_REQUEST,
                    Err(status) => status,
                };
                req.complete(status);
            }
        }
    }

    /// [`IOCTL_STATS_SNAPSHOT`]: counts the request and leaves it for the work item.
    fn park_for_snapshot(&self, cx: &mut IoContext<'_, '_>, req: Request, output_length: usize) {
        if let Err(status) = self.count(cx, Role::Control, Count::Control) {
            req.complete(status);
            return;
        }
        let (Some(waiting), Some(item)) = (&self.waiting, self.work_item.get()) else {
            req.complete(NtStatus::NOT_SUPPORTED);
            return;
        };
        if output_length < StatsBlock::SIZE {
            req.complete(NtStatus::BUFFER_TOO_SMALL);
            return;
        }
        let Some(token) = cx.scope() else {
            req.complete(NtStatus::INTERNAL_ERROR);
            return;
        };
        match waiting.try_get(token) {
            Ok(list) => list.push(req),
            Err(status) => {
                req.complete(status);
                return;
            }
        }
        // Already pending: that run has not started yet and will find this request too.
        item.enqueue();
    }

    /// The work item (`passive-device-scope`): runs at PASSIVE_LEVEL holding the device's
    /// lock, so it reads the block and the waiting list with the lock's token like any
    /// callback.
    fn snapshot_work(&self, wcx: &mut CallbackContext<'_, '_>) {
        let _busy = self.enter();
        spin_for(self.work);
        // Always serialized: created with automatic serialization under a Device scope.
        let Some(token) = wcx.scope() else { return };
        let (Block::Device(block), Some(waiting)) = (&self.block, &self.waiting) else {
            return;
        };
        let Ok(snapshot) = block.try_get(token).map(|b| *b) else {
            return;
        };
        let Ok(list) = waiting.try_get(token) else {
            return;
        };
        let list = std::mem::take(list);
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        for mut req in list {
            match req.output_buffer(StatsBlock::SIZE) {
                Ok(out) => {
                    out[..StatsBlock::SIZE].copy_from_slice(&snapshot.to_bytes());
                    req.complete_with_information(NtStatus::SUCCESS, StatsBlock::SIZE);
                }
                Err(status) => req.complete(status),
            }
        }
    }
}

/// A statistics device made by [`create`].
pub struct StatsDevice {
    device: Arc<Device>,
    read_write_queue: Arc<Queue>,
    control_queue: Arc<Queue>,
    ctx: Arc<StatsContext>,
}

impl StatsDevice {
    /// The device's name (what clients open).
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The framework device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The variant it was created with.
    pub fn variant(&self) -> StatsVariant {
        self.ctx.variant
    }

    /// The parallel queue for reads and writes.
    pub fn read_write_queue(&self) -> &Arc<Queue> {
        &self.read_write_queue
    }

    /// The parallel queue for control requests.
    pub fn control_queue(&self) -> &Arc<Queue> {
        &self.control_queue
    }

    /// The snapshot work item (`passive-device-scope` only).
    pub fn work_item(&self) -> Option<&Arc<WorkItem>> {
        self.ctx.work_item.get()
    }

    /// How many times the snapshot work item ran with requests to complete.
    pub fn snapshots_taken(&self) -> u64 {
        self.ctx.snapshots.load(Ordering::Relaxed)
    }

    /// The most callbacks (I/O callbacks and the work item) that ran at once, if
    /// [`StatsConfig::track_concurrency`] was set.
    pub fn peak_concurrency(&self) -> Option<usize> {
        self.ctx
            .tracker
            .as_ref()
            .map(|t| t.peak.load(Ordering::SeqCst))
    }

    /// Reads the block from outside the driver's callbacks, taking the lock that protects it
    /// (the device's lock, both queues' locks, or the spin lock). Call it at PASSIVE_LEVEL and
    /// never from inside one of this device's callbacks (re-acquiring a callback lock is the
    /// fatal `WDF_RECURSIVE_LOCK`). Unsynchronized: three separate loads.
    pub fn block(&self) -> Result<StatsBlock, NtStatus> {
        match &self.ctx.block {
            Block::Racy(b) => Ok(b.load()),
            Block::Device(b) => {
                let mut token = self.device.acquire_lock();
                Ok(*b.try_get(&mut token)?)
            }
            Block::PerQueue(p) => {
                let p = p.get().ok_or(NtStatus::INVALID_DEVICE_STATE)?;
                let mut control_token = self.control_queue.acquire_lock();
                let mut rw_token = self.read_write_queue.acquire_lock();
                let control = *p.control.try_get(&mut control_token)?;
                let rw = *p.read_write.try_get(&mut rw_token)?;
                Ok(rw.sum(&control))
            }
            Block::Spin(b) => Ok(*b.lock()),
        }
    }
}

impl fmt::Debug for StatsDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsDevice")
            .field("name", &self.name())
            .field("variant", &self.variant())
            .finish()
    }
}

/// Creates a statistics device named `name`: the device (scope and level from the variant),
/// a parallel read/write queue, a parallel control queue and, for `passive-device-scope`,
/// the snapshot work item. Requests are routed to the queues last, once everything they touch
/// exists. A name already in use: `STATUS_OBJECT_NAME_COLLISION`.
pub fn create(
    driver: &Arc<Driver>,
    name: &str,
    config: StatsConfig,
) -> Result<StatsDevice, NtStatus> {
    let variant = config.variant;
    let mut init = DeviceInit::new(name);
    init.attributes(
        ObjectAttributes::level(variant.execution_level()).with_scope(variant.sync_scope()),
    );
    init.context(move |dev| StatsContext::new(dev, &config));
    let device = driver.create_device(init)?;
    let made = build(&device, name, variant);
    if made.is_err() {
        device.delete();
    }
    made
}

fn build(device: &Arc<Device>, name: &str, variant: StatsVariant) -> Result<StatsDevice, NtStatus> {
    let ctx = device
        .context::<StatsContext>()
        .ok_or(NtStatus::INTERNAL_ERROR)?;
    let queue_attrs = || ObjectAttributes::scope(variant.queue_scope());

    let mut rw = QueueConfig::new(DispatchType::Parallel);
    rw.name = Some(format!("{name}-rw"));
    let c = ctx.clone();
    rw.io_read(move |cx, req, len| c.on_read_write(cx, req, Count::Read(len as u64), len));
    let c = ctx.clone();
    rw.io_write(move |cx, req, len| c.on_read_write(cx, req, Count::Write(len as u64), len));
    let read_write_queue = device.create_queue(rw, queue_attrs())?;

    let mut control = QueueConfig::new(DispatchType::Parallel);
    control.name = Some(format!("{name}-control"));
    let c = ctx.clone();
    control.io_device_control(move |cx, req, out, _in, code| c.on_control(cx, req, out, code));
    let control_queue = device.create_queue(control, queue_attrs())?;

    if let Block::PerQueue(slot) = &ctx.block {
        let per_queue = PerQueue {
            read_write: read_write_queue.scope_locked(StatsBlock::default()),
            control: control_queue.scope_locked(StatsBlock::default()),
            read_write_queue: Arc::downgrade(&read_write_queue),
        };
        slot.set(per_queue).map_err(|_| NtStatus::INTERNAL_ERROR)?;
    }
    if variant == StatsVariant::PassiveDeviceScope {
        // Parented to the device with automatic serialization: it takes the device's mutex.
        let weak = Arc::downgrade(&ctx);
        let mut cfg = WorkItemConfig::new(move |wcx| {
            if let Some(c) = weak.upgrade() {
                c.snapshot_work(wcx);
            }
        });
        cfg.name = Some(format!("{name}-snapshot"));
        let item = WorkItem::create(device, cfg, ObjectAttributes::default())?;
        ctx.work_item
            .set(item)
            .map_err(|_| NtStatus::INTERNAL_ERROR)?;
    }

    device.configure_request_dispatching(&read_write_queue, RequestType::Read)?;
    device.configure_request_dispatching(&read_write_queue, RequestType::Write)?;
    device.configure_request_dispatching(&control_queue, RequestType::DeviceControl)?;
    Ok(StatsDevice {
        device: device.clone(),
        read_write_queue,
        control_queue,
        ctx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_wire_form_round_trips() {
        let b = StatsBlock {
            total_requests: 1,
            bytes_read: 2,
            bytes_written: u64::MAX,
        };
        assert_eq!(StatsBlock::from_bytes(&b.to_bytes()), Some(b));
        assert_eq!(StatsBlock::from_bytes(&[0; 23]), None);
    }

    #[test]
    fn variant_names_round_trip() {
        for v in StatsVariant::ALL {
            assert_eq!(v.name().parse::<StatsVariant>().unwrap(), v);
        }
        assert!("device".parse::<StatsVariant>().is_err());
    }

    #[test]
    fn control_codes_are_distinct() {
        assert_eq!(IOCTL_STATS_GET, 0x0022_2000);
        assert_ne!(IOCTL_STATS_GET, IOCTL_STATS_RESET);
        assert_ne!(IOCTL_STATS_RESET, IOCTL_STATS_SNAPSHOT);
    }
}
