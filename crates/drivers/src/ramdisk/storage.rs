//! The RAM disk's storage: sparse fixed-size chunks, each in its own slot behind its own spin
//! lock, optionally backed by a file.
//!
//! * A chunk ([`CHUNK_SIZE`] bytes) is allocated on the first write that touches it; reads of
//!   a missing chunk return zeros. Trim frees whole chunks.
//! * Chunks are found by index in a two-level table, like a page table: a directory sized to
//!   the disk, and leaves of slots, each leaf allocated on the first write into its range
//!   (`LEAF_MIN_SLOTS` slots of at most 96 bytes for every 32 MiB written into, or more
//!   for very large disks so that the directory stays at most `DIRECTORY_MAX` entries).
//!   A lookup is two array indexings: no map lock, no tree walk, no reference count, nothing
//!   allocated per request. A leaf, once there, stays until the disk is dropped.
//! * One kind of lock on the data path: each **slot lock** (an `nt` spin lock) protects the
//!   chunk's bytes and its dirty flag. It is held for one copy of at most 64 KiB, a few
//!   microseconds, well inside the DISPATCH_LEVEL budget. Allocation and freeing of chunks
//!   happen outside it. With a backing file, a second spin lock protects the list of dirty
//!   slots; it is never taken while a slot lock is held.
//! * Everything except [`Storage::open`] and [`Storage::flush`] is callable at DISPATCH_LEVEL.
//!   Those two do file I/O and must run at PASSIVE_LEVEL.
//! * With a backing file, a flush writes every dirty chunk, and zeros for every chunk freed
//!   since the last flush, then calls `sync_all`. A slot's dirty flag is read and cleared
//!   under the slot lock together with the copy that gets written, and a write that sets the
//!   flag adds the slot to the dirty list after releasing the slot lock. So a write that
//!   lands during a flush is either in that copy or marks the slot dirty again and lists it:
//!   a later flush writes it, and nothing is lost. The cost of a flush follows what is dirty,
//!   not the size of the disk. A ranged flush ([`Storage::flush_range`]) writes the dirty
//!   chunks of one range the same way and leaves the others for the next flush.
//!
//! Callers validate ranges (see `super::check_range`): these functions assume
//! `offset + len <= size`.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use nt::NtStatus;
use nt::sync::SpinLock;

/// Bytes per chunk: the unit of allocation, trim and flush.
pub const CHUNK_SIZE: u64 = 64 * 1024;

/// The largest disk: 64 TiB. Larger sizes are refused with `STATUS_INVALID_PARAMETER`, so
/// that the chunk table's fixed part stays small (at most `DIRECTORY_MAX` directory entries,
/// about 1.5 MiB, and leaves of at most 16384 slots).
pub const MAX_SIZE: u64 = 64 << 40;

/// Slots per leaf for disks up to `LEAF_MIN_SLOTS * DIRECTORY_MAX` chunks (2 TiB).
const LEAF_MIN_SLOTS: u64 = 512;

/// Directory entries at most; larger disks get larger leaves instead.
const DIRECTORY_MAX: u64 = 65536;

/// One chunk's slot.
///
/// `bytes` is the chunk, or `None` if it is not allocated. `dirty` (only tracked with a
/// backing file) means the file is out of date for this chunk: it holds bytes written since
/// the last flush, or, with `bytes == None`, the chunk was freed and the file may still hold
/// its old data.
struct Slot {
    bytes: Option<Box<[u8]>>,
    dirty: bool,
}

impl Slot {
    /// Marks the slot dirty if changes are tracked (`track`: there is a backing file).
    /// Returns whether that made it newly dirty: the caller then lists it
    /// ([`Storage::listed_dirty`]) once the slot lock is released.
    fn mark_dirty(&mut self, track: bool) -> bool {
        let newly = track && !self.dirty;
        self.dirty |= track;
        newly
    }
}

type Leaf = Box<[SpinLock<Slot>]>;

struct Backing {
    file: File,
    path: PathBuf,
    /// Slots whose dirty flag went from clear to set since the last flush took the list.
    dirty: SpinLock<Vec<u64>>,
}

/// A run of chunks that are all allocated or all not, clipped to a queried range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Whether the range is backed by allocated chunks (otherwise it reads as zeros and costs
    /// no memory).
    pub allocated: bool,
}

/// The disk's contents.
pub(crate) struct Storage {
    size: u64,
    read_only: bool,
    /// Slots per leaf.
    leaf_slots: u64,
    directory: Box<[OnceLock<Leaf>]>,
    /// Allocated chunks.
    allocated: AtomicU64,
    backing: Option<Backing>,
}

/// Pieces of `[offset, offset + len)` split at chunk boundaries: (chunk index, offset in
/// chunk, length, offset in the caller's buffer).
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let end = offset.saturating_add(len as u64);
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let index = at / CHUNK_SIZE;
        let within = (at % CHUNK_SIZE) as usize;
        let n = (CHUNK_SIZE - at % CHUNK_SIZE).min(end - at) as usize;
        let piece = (index, within, n, (at - offset) as usize);
        at += n as u64;
        Some(piece)
    })
}

fn io_status(e: &std::io::Error) -> NtStatus {
    match e.kind() {
        ErrorKind::NotFound => NtStatus::OBJECT_NAME_NOT_FOUND,
        ErrorKind::InvalidInput => NtStatus::INVALID_PARAMETER,
        _ => NtStatus::IO_DEVICE_ERROR,
    }
}

fn zeroed_chunk() -> Box<[u8]> {
    vec![0; CHUNK_SIZE as usize].into_boxed_slice()
}

impl Storage {
    /// A storage of `size` bytes (a multiple of 512, greater than 0, at most [`MAX_SIZE`]).
    /// With a backing file, it is opened (created if missing and not read-only) and its
    /// non-zero chunks are loaded; `size` 0 means "the file's length". A file longer than a
    /// non-zero `size`, or a bad size: `STATUS_INVALID_PARAMETER`. PASSIVE_LEVEL.
    pub(crate) fn open(
        size: u64,
        backing: Option<&Path>,
        read_only: bool,
    ) -> Result<Storage, NtStatus> {
        Storage::open_with_leaves(size, backing, read_only, LEAF_MIN_SLOTS)
    }

    /// [`Storage::open`] with leaves of at least `min_leaf` slots (tests use small leaves to
    /// cross leaf boundaries on small disks).
    fn open_with_leaves(
        size: u64,
        backing: Option<&Path>,
        read_only: bool,
        min_leaf: u64,
    ) -> Result<Storage, NtStatus> {
        let valid = |size: u64| size != 0 && size.is_multiple_of(512) && size <= MAX_SIZE;
        let Some(path) = backing else {
            if !valid(size) {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            return Ok(Storage::empty(size, read_only, None, min_leaf));
        };
        let file = if read_only {
            File::open(path)
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        }
        .map_err(|e| io_status(&e))?;
        let file_len = file.metadata().map_err(|e| io_status(&e))?.len();
        let size = if size == 0 { file_len } else { size };
        if !valid(size) || file_len > size {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if file_len < size && !read_only {
            // Extending leaves a hole: it costs no disk space.
            file.set_len(size).map_err(|e| io_status(&e))?;
        }
        let backing = Backing {
            file,
            path: path.to_owned(),
            dirty: SpinLock::named("ramdisk dirty list", Vec::new()),
        };
        let storage = Storage::empty(size, read_only, Some(backing), min_leaf);
        storage.load(file_len.min(size))?;
        Ok(storage)
    }

    fn empty(size: u64, read_only: bool, backing: Option<Backing>, min_leaf: u64) -> Storage {
        let chunks = size.div_ceil(CHUNK_SIZE);
        let leaf_slots = min_leaf.max(chunks.div_ceil(DIRECTORY_MAX));
        let directory = (0..chunks.div_ceil(leaf_slots))
            .map(|_| OnceLock::new())
            .collect();
        Storage {
            size,
            read_only,
            leaf_slots,
            directory,
            allocated: AtomicU64::new(0),
            backing,
        }
    }

    /// The slot of chunk `index`, if its leaf exists.
    fn slot(&self, index: u64) -> Option<&SpinLock<Slot>> {
        let leaf = self.directory[(index / self.leaf_slots) as usize].get()?;
        Some(&leaf[(index % self.leaf_slots) as usize])
    }

    /// The chunks `first..=last` in order, as `(index, next, slot)`: the slot of chunk `index`
    /// (and `next == index + 1`), or `None` when the chunk's leaf does not exist, in which case
    /// nothing is allocated in `index..next` and `next` is the next leaf's first chunk. A walk
    /// therefore costs the leaves it touches, not the length of the range.
    fn walk(
        &self,
        first: u64,
        last: u64,
    ) -> impl Iterator<Item = (u64, u64, Option<&SpinLock<Slot>>)> {
        let mut index = first;
        std::iter::from_fn(move || {
            if index > last {
                return None;
            }
            let at = index;
            let step = match self.slot(at) {
                Some(slot) => (at, at + 1, Some(slot)),
                None => (at, (at / self.leaf_slots + 1) * self.leaf_slots, None),
            };
            index = step.1;
            Some(step)
        })
    }

    /// The existing slots among chunks `first..=last`, with their indexes (see
    /// [`Storage::walk`]).
    fn slots_in(&self, first: u64, last: u64) -> impl Iterator<Item = (u64, &SpinLock<Slot>)> {
        self.walk(first, last)
            .filter_map(|(index, _, slot)| slot.map(|s| (index, s)))
    }

    /// The slot of chunk `index`, creating its leaf if needed.
    fn slot_or_create(&self, index: u64) -> &SpinLock<Slot> {
        let leaf = self.directory[(index / self.leaf_slots) as usize].get_or_init(|| {
            (0..self.leaf_slots)
                .map(|_| {
                    SpinLock::named(
                        "ramdisk chunk",
                        Slot {
                            bytes: None,
                            dirty: false,
                        },
                    )
                })
                .collect()
        });
        &leaf[(index % self.leaf_slots) as usize]
    }

    /// Records that slot `index`'s dirty flag was just set. Called with no slot lock held.
    fn listed_dirty(&self, index: u64) {
        if let Some(b) = &self.backing {
            b.dirty.lock().push(index);
        }
    }

    /// Loads the non-zero chunks of the first `len` bytes of the backing file.
    fn load(&self, len: u64) -> Result<(), NtStatus> {
        let Some(b) = &self.backing else {
            return Ok(());
        };
        let mut buf = zeroed_chunk();
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(CHUNK_SIZE) as usize;
            buf.fill(0);
            b.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| io_status(&e))?;
            if buf.iter().any(|&x| x != 0) {
                self.slot_or_create(at / CHUNK_SIZE).lock().bytes = Some(buf.clone());
                self.allocated.fetch_add(1, Ordering::Relaxed);
            }
            at += CHUNK_SIZE;
        }
        Ok(())
    }

    /// The disk size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Whether writes are refused.
    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    /// The backing file, if any.
    pub(crate) fn backing_path(&self) -> Option<&Path> {
        self.backing.as_ref().map(|b| b.path.as_path())
    }

    /// Copies `out.len()` bytes at `offset` into `out`; missing chunks read as zeros.
    pub(crate) fn read(&self, offset: u64, out: &mut [u8]) {
        for (index, within, n, at) in pieces(offset, out.len()) {
            let dst = &mut out[at..at + n];
            match self.slot(index) {
                Some(slot) => match &slot.lock().bytes {
                    Some(bytes) => dst.copy_from_slice(&bytes[within..within + n]),
                    None => dst.fill(0),
                },
                None => dst.fill(0),
            }
        }
    }

    /// Copies `data` to `offset`, allocating the chunks it touches for the first time.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) {
        let track = self.backing.is_some();
        for (index, within, n, at) in pieces(offset, data.len()) {
            let slot = self.slot_or_create(index);
            let src = &data[at..at + n];
            let mut fresh = None;
            let newly_dirty = loop {
                let mut s = slot.lock();
                if s.bytes.is_none() {
                    match fresh.take() {
                        Some(chunk) => {
                            s.bytes = Some(chunk);
                            self.allocated.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            // Allocate outside the lock; if another writer allocates
                            // meanwhile, theirs wins and ours is dropped below.
                            drop(s);
                            fresh = Some(zeroed_chunk());
                            continue;
                        }
                    }
                }
                if let Some(bytes) = &mut s.bytes {
                    bytes[within..within + n].copy_from_slice(src);
                }
                break s.mark_dirty(track);
            };
            drop(fresh);
            if newly_dirty {
                self.listed_dirty(index);
            }
        }
    }

    /// Makes `[offset, offset + len)` read as zeros. With `free`, chunks the range covers
    /// entirely are freed (trim); otherwise allocated chunks stay allocated and are zero-filled
    /// (write-zeroes). Partially covered chunks are zero-filled either way. The cost follows
    /// the leaves the range touches, not its length.
    pub(crate) fn zero(&self, offset: u64, len: u64, free: bool) {
        if len == 0 {
            return;
        }
        let end = offset + len;
        let track = self.backing.is_some();
        for (index, slot) in self.slots_in(offset / CHUNK_SIZE, (end - 1) / CHUNK_SIZE) {
            let (start, chunk_len) = self.chunk_span(index);
            let (from, to) = (offset.max(start), end.min(start + chunk_len as u64));
            let whole = from == start && to == start + chunk_len as u64;
            let mut freed = None;
            let newly_dirty = {
                let mut s = slot.lock();
                if s.bytes.is_none() {
                    false
                } else {
                    if free && whole {
                        freed = s.bytes.take();
                        self.allocated.fetch_sub(1, Ordering::Relaxed);
                    } else if let Some(bytes) = &mut s.bytes {
                        bytes[(from - start) as usize..(to - start) as usize].fill(0);
                    }
                    s.mark_dirty(track)
                }
            };
            drop(freed);
            if newly_dirty {
                self.listed_dirty(index);
            }
        }
    }

    /// Bytes held by allocated chunks.
    pub(crate) fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed) * CHUNK_SIZE
    }

    /// Allocation of `[offset, offset + len)` as alternating extents, at most `max` of them,
    /// covering a prefix of the range (all of it if `max` suffices). The scan stops once `max`
    /// extents are final, so its cost follows `max` and the leaves the range touches.
    pub(crate) fn extents(&self, offset: u64, len: u64, max: usize) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        if len == 0 || max == 0 {
            return out;
        }
        let end = offset + len;
        for (index, next, slot) in self.walk(offset / CHUNK_SIZE, (end - 1) / CHUNK_SIZE) {
            // The first `max` extents can no longer change once there is one more.
            if out.len() > max {
                break;
            }
            let allocated = slot.is_some_and(|s| s.lock().bytes.is_some());
            let from = (index * CHUNK_SIZE).max(offset);
            let to = next.saturating_mul(CHUNK_SIZE).min(end);
            match out.last_mut() {
                Some(e) if e.allocated == allocated => e.length += to - from,
                _ => out.push(Extent {
                    offset: from,
                    length: to - from,
                    allocated,
                }),
            }
        }
        out.truncate(max);
        out
    }

    /// Writes what changed since the last flush to the backing file and syncs it. Without a
    /// backing file (or read-only) there is nothing to do. PASSIVE_LEVEL: it blocks.
    pub(crate) fn flush(&self) -> Result<(), NtStatus> {
        let Some(b) = self.writable_backing() else {
            return Ok(());
        };
        let mut listed = std::mem::take(&mut *b.dirty.lock());
        listed.sort_unstable();
        listed.dedup();
        let mut copy = zeroed_chunk();
        let mut result = Ok(());
        for index in listed {
            let Some(slot) = self.slot(index) else {
                continue;
            };
            if let Err(status) = self.write_back(b, index, slot, &mut copy) {
                result = Err(status);
            }
        }
        result?;
        b.file.sync_all().map_err(|e| io_status(&e))
    }

    /// Writes what changed in the chunks that `[offset, offset + len)` touches to the backing
    /// file and syncs it: what a FUA write needs, without writing the rest of the disk's
    /// changes. A chunk written here stays on the dirty list, marked clean, and a later
    /// [`Storage::flush`] skips it. Nothing to do for an empty range, without a backing file
    /// or when read-only. The cost follows the leaves the range touches. PASSIVE_LEVEL.
    pub(crate) fn flush_range(&self, offset: u64, len: u64) -> Result<(), NtStatus> {
        let Some(b) = self.writable_backing() else {
            return Ok(());
        };
        if len == 0 {
            return Ok(());
        }
        let mut copy = zeroed_chunk();
        let mut result = Ok(());
        for (index, slot) in self.slots_in(offset / CHUNK_SIZE, (offset + len - 1) / CHUNK_SIZE) {
            if let Err(status) = self.write_back(b, index, slot, &mut copy) {
                result = Err(status);
            }
        }
        result?;
        b.file.sync_all().map_err(|e| io_status(&e))
    }

    /// Whether a flush has anything it could write: a backing file on a writable disk.
    pub(crate) fn needs_flushing(&self) -> bool {
        self.writable_backing().is_some()
    }

    /// The backing file, unless there is none or the disk is read-only.
    fn writable_backing(&self) -> Option<&Backing> {
        self.backing.as_ref().filter(|_| !self.read_only)
    }

    /// Writes chunk `index` (its `slot`) to the file if it is dirty (zeros if it was freed),
    /// through the caller's chunk-sized buffer `copy`. The dirty flag is cleared under the
    /// slot lock together with the copy; if the file write fails it is set again (and the slot
    /// listed again if that makes it newly dirty), so the next flush retries.
    fn write_back(
        &self,
        b: &Backing,
        index: u64,
        slot: &SpinLock<Slot>,
        copy: &mut [u8],
    ) -> Result<(), NtStatus> {
        {
            let mut s = slot.lock();
            if !s.dirty {
                return Ok(());
            }
            match &s.bytes {
                Some(bytes) => copy.copy_from_slice(bytes),
                None => copy.fill(0),
            }
            s.dirty = false;
        }
        let (at, n) = self.chunk_span(index);
        if let Err(e) = b.file.write_all_at(&copy[..n], at) {
            let newly = slot.lock().mark_dirty(true);
            if newly {
                self.listed_dirty(index);
            }
            return Err(io_status(&e));
        }
        Ok(())
    }

    /// Where chunk `i` lives: (offset, length), the last chunk possibly short.
    fn chunk_span(&self, i: u64) -> (u64, usize) {
        let at = i * CHUNK_SIZE;
        (at, self.size.saturating_sub(at).min(CHUNK_SIZE) as usize)
    }
}

/// A fresh backing-file path in a directory of its own, removed on drop (a failing test
/// leaves nothing behind either).
#[cfg(test)]
struct ScratchFile {
    dir: PathBuf,
    path: PathBuf,
}

#[cfg(test)]
impl ScratchFile {
    fn new(tag: &str) -> ScratchFile {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wdfkit-storage-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        ScratchFile { dir, path }
    }
}

#[cfg(test)]
impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: u64) -> Storage {
        Storage::open(size, None, false).unwrap()
    }

    #[test]
    fn pieces_split_at_chunk_boundaries() {
        let p: Vec<_> = pieces(CHUNK_SIZE - 512, 1024).collect();
        assert_eq!(p, vec![(0, 65024, 512, 0), (1, 0, 512, 512)]);
        assert_eq!(pieces(0, 0).count(), 0);
    }

    #[test]
    fn sparse_reads_are_zero_and_writes_allocate() {
        let s = mem(4 * CHUNK_SIZE);
        let mut buf = vec![1u8; 1024];
        s.read(0, &mut buf);
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(s.allocated_bytes(), 0);
        s.write(CHUNK_SIZE - 512, &[7; 1024]);
        assert_eq!(s.allocated_bytes(), 2 * CHUNK_SIZE);
        s.read(CHUNK_SIZE - 512, &mut buf);
        assert!(buf.iter().all(|&b| b == 7));
    }

    #[test]
    fn trim_frees_whole_chunks_and_zeroes_partial_ones() {
        let s = mem(4 * CHUNK_SIZE);
        s.write(0, &vec![9; (4 * CHUNK_SIZE) as usize]);
        // From the middle of chunk 0 to the middle of chunk 3: chunks 1 and 2 are freed.
        s.zero(CHUNK_SIZE / 2, 3 * CHUNK_SIZE, true);
        assert_eq!(s.allocated_bytes(), 2 * CHUNK_SIZE);
        let mut all = vec![0u8; (4 * CHUNK_SIZE) as usize];
        s.read(0, &mut all);
        let half = (CHUNK_SIZE / 2) as usize;
        assert!(all[..half].iter().all(|&b| b == 9));
        assert!(
            all[half..half + 3 * CHUNK_SIZE as usize]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(
            all[half + 3 * CHUNK_SIZE as usize..]
                .iter()
                .all(|&b| b == 9)
        );
    }

    #[test]
    fn extents_merge_runs_and_clip() {
        let s = mem(8 * CHUNK_SIZE);
        s.write(2 * CHUNK_SIZE, &[1; 512]);
        s.write(3 * CHUNK_SIZE, &[1; 512]);
        s.write(6 * CHUNK_SIZE, &[1; 512]);
        let e = s.extents(512, 8 * CHUNK_SIZE - 1024, 16);
        let want = [
            (512, 2 * CHUNK_SIZE - 512, false),
            (2 * CHUNK_SIZE, 2 * CHUNK_SIZE, true),
            (4 * CHUNK_SIZE, 2 * CHUNK_SIZE, false),
            (6 * CHUNK_SIZE, CHUNK_SIZE, true),
            (7 * CHUNK_SIZE, CHUNK_SIZE - 512, false),
        ];
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.offset, e.length, e.allocated))
            .collect();
        assert_eq!(got, want);
        assert_eq!(s.extents(0, 8 * CHUNK_SIZE, 2).len(), 2);
    }

    #[test]
    fn extents_stop_at_max_without_losing_the_prefix() {
        let s = mem(8 * CHUNK_SIZE);
        for i in [0, 2, 4, 6] {
            s.write(i * CHUNK_SIZE, &[1; 512]);
        }
        let all = s.extents(0, 8 * CHUNK_SIZE, 100);
        assert_eq!(all.len(), 8);
        assert!(
            all.iter()
                .enumerate()
                .all(|(k, e)| e.allocated == (k % 2 == 0))
        );
        for max in 1..8 {
            assert_eq!(s.extents(0, 8 * CHUNK_SIZE, max), all[..max]);
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Storage::open(0, None, false).is_err());
        assert!(Storage::open(513, None, false).is_err());
        assert_eq!(
            Storage::open(MAX_SIZE + 512, None, false).err(),
            Some(NtStatus::INVALID_PARAMETER)
        );
        assert!(Storage::open(MAX_SIZE, None, false).is_ok());
    }

    #[test]
    fn the_table_stays_small_for_large_disks() {
        // 64 GiB: 1 Mi chunks in leaves of the minimum size.
        let s = mem(64 << 30);
        assert_eq!(s.leaf_slots, LEAF_MIN_SLOTS);
        assert_eq!(s.directory.len(), (1 << 20) / LEAF_MIN_SLOTS as usize);
        // The largest disk: the directory is capped, the leaves grow instead.
        let s = mem(MAX_SIZE);
        assert_eq!(s.directory.len() as u64, DIRECTORY_MAX);
        assert_eq!(s.leaf_slots, (MAX_SIZE / CHUNK_SIZE) / DIRECTORY_MAX);
        // Nothing written: no leaf exists, and a write creates exactly one.
        assert!(s.directory.iter().all(|l| l.get().is_none()));
        s.write(MAX_SIZE - 512, &[5; 512]);
        assert_eq!(s.directory.iter().filter(|l| l.get().is_some()).count(), 1);
        let mut b = [0u8; 1024];
        s.read(MAX_SIZE - 1024, &mut b);
        assert!(b[..512].iter().all(|&x| x == 0) && b[512..].iter().all(|&x| x == 5));
    }

    /// Writers race a flushing thread: every write that returned before the last flush is in
    /// the file, whichever flush's copy it landed in or missed (the dirty-list protocol).
    #[test]
    fn writes_racing_flushes_all_reach_the_file() {
        let scratch = ScratchFile::new("race");
        let path = &scratch.path;
        // Small leaves: the writers also race to create leaves.
        let size = 16 * CHUNK_SIZE;
        let s = Storage::open_with_leaves(size, Some(path), false, 2).unwrap();
        const WRITERS: u64 = 4;
        const ROUNDS: u8 = 200;
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|t| {
            t.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    s.flush().unwrap();
                }
            });
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let s = &s;
                    t.spawn(move || {
                        for round in 1..=ROUNDS {
                            // Each writer owns every WRITERS-th KiB, in every chunk.
                            for k in 0..size / (1024 * WRITERS) {
                                let at = (k * WRITERS + w) * 1024;
                                s.write(at, &[round; 1024]);
                            }
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        s.flush().unwrap();
        drop(s);
        let file = std::fs::read(path).unwrap();
        assert_eq!(file.len() as u64, size);
        assert!(
            file.iter().all(|&b| b == ROUNDS),
            "a write is missing from the file"
        );
    }

    #[test]
    fn a_slot_costs_at_most_96_bytes() {
        // A leaf of 512 slots covers 32 MiB: at most 48 KiB of table per 32 MiB written into
        // (0.15%), the figure the module documentation and BENCHMARKS.md give.
        let slot = std::mem::size_of::<SpinLock<Slot>>();
        assert!(slot <= 96, "{slot}");
    }

    #[test]
    fn writes_across_a_leaf_boundary_land_in_both_leaves() {
        let s = mem(4 * LEAF_MIN_SLOTS * CHUNK_SIZE);
        let boundary = LEAF_MIN_SLOTS * CHUNK_SIZE;
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        s.write(boundary - 2048, &data);
        assert_eq!(s.directory.iter().filter(|l| l.get().is_some()).count(), 2);
        let mut back = vec![0u8; 4096];
        s.read(boundary - 2048, &mut back);
        assert_eq!(back, data);
        assert_eq!(s.allocated_bytes(), 2 * CHUNK_SIZE);
        // Extents skip the leaves that do not exist and merge across the one that does.
        let e = s.extents(0, 4 * boundary, 16);
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.offset, e.length, e.allocated))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, boundary - CHUNK_SIZE, false),
                (boundary - CHUNK_SIZE, 2 * CHUNK_SIZE, true),
                (boundary + CHUNK_SIZE, 3 * boundary - CHUNK_SIZE, false),
            ]
        );
        // Trimming the whole disk frees both chunks and walks only the two leaves.
        s.zero(0, 4 * boundary, true);
        assert_eq!(s.allocated_bytes(), 0);
        s.read(boundary - 2048, &mut back);
        assert!(back.iter().all(|&x| x == 0));
    }

    #[test]
    fn flush_writes_dirty_chunks_and_zeros_for_freed_ones() {
        let scratch = ScratchFile::new("flush");
        let path = scratch.path.clone();
        let s = Storage::open(4 * CHUNK_SIZE, Some(&path), false).unwrap();
        s.write(0, &[1; 512]);
        s.write(2 * CHUNK_SIZE, &[2; 512]);
        // Listed once per chunk, however many writes dirty it.
        s.write(512, &[1; 512]);
        assert_eq!(s.backing.as_ref().unwrap().dirty.lock().len(), 2);
        s.flush().unwrap();
        assert!(s.backing.as_ref().unwrap().dirty.lock().is_empty());
        let file = std::fs::read(&path).unwrap();
        assert!(file[..1024].iter().all(|&x| x == 1));
        assert!(
            file[2 * CHUNK_SIZE as usize..][..512]
                .iter()
                .all(|&x| x == 2)
        );
        // Trim chunk 2: the next flush zeroes it in the file; an unchanged chunk 0 is not
        // rewritten (its bytes in the file are overwritten here to show that).
        s.zero(2 * CHUNK_SIZE, CHUNK_SIZE, true);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&[9; 512], 1024)
            .unwrap();
        s.flush().unwrap();
        let file = std::fs::read(&path).unwrap();
        assert!(
            file[2 * CHUNK_SIZE as usize..][..512]
                .iter()
                .all(|&x| x == 0)
        );
        assert!(file[1024..1536].iter().all(|&x| x == 9));
        drop(s);
        // Reopening loads exactly what the file holds.
        let s = Storage::open(0, Some(&path), false).unwrap();
        assert_eq!(s.allocated_bytes(), CHUNK_SIZE);
    }
}

/// The storage against a model (a map of non-zero 512-byte sectors, each filled with one byte)
/// under random writes, reads, write-zeroes, trims, flushes and reopenings from the backing
/// file, on a disk that spans two leaves and ends in a short chunk. Offsets cluster around
/// chunk and leaf boundaries and the end of the disk, where the table's index arithmetic is.
#[cfg(test)]
mod model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const SECTOR: u64 = 512;
    /// Slots per leaf in this model (production leaves have 512; the arithmetic is the same).
    const LEAF: u64 = 4;
    /// Two full leaves and one and a half chunks more.
    const SIZE: u64 = 2 * LEAF * CHUNK_SIZE + CHUNK_SIZE + CHUNK_SIZE / 2;

    #[derive(Clone, Debug)]
    enum Op {
        Write { at: u64, sectors: u64, byte: u8 },
        Read { at: u64, sectors: u64 },
        Zero { at: u64, sectors: u64, free: bool },
        Flush,
        Reopen,
    }

    /// A sector near an interesting place: a chunk boundary, a leaf boundary, the end.
    fn offset() -> impl Strategy<Value = u64> {
        let sectors = SIZE / SECTOR;
        let per_chunk = CHUNK_SIZE / SECTOR;
        let per_leaf = LEAF * per_chunk;
        prop_oneof![
            (0..sectors),
            (1..2 * LEAF + 2, -3i64..3).prop_map(move |(c, d)| {
                (c * per_chunk).saturating_add_signed(d).min(sectors - 1)
            }),
            (1..3u64, -3i64..3).prop_map(move |(l, d)| {
                (l * per_leaf).saturating_add_signed(d).min(sectors - 1)
            }),
            (1..=4u64).prop_map(move |d| sectors - d),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (offset(), 1..300u64, 1..=255u8)
                .prop_map(|(at, sectors, byte)| Op::Write { at, sectors, byte }),
            3 => (offset(), 1..300u64).prop_map(|(at, sectors)| Op::Read { at, sectors }),
            2 => (offset(), 1..600u64, any::<bool>())
                .prop_map(|(at, sectors, free)| Op::Zero { at, sectors, free }),
            1 => (any::<bool>()).prop_map(|free| Op::Zero { at: 0, sectors: SIZE / SECTOR, free }),
            1 => Just(Op::Flush),
            1 => Just(Op::Reopen),
        ]
    }

    /// Clips `[at, at + sectors)` to the disk, in bytes.
    fn range(at: u64, sectors: u64) -> (u64, u64) {
        let start = at * SECTOR;
        (start, (sectors * SECTOR).min(SIZE - start))
    }

    fn clear(model: &mut BTreeMap<u64, u8>, start: u64, len: u64) {
        let doomed: Vec<u64> = model
            .range(start / SECTOR..(start + len) / SECTOR)
            .map(|(k, _)| *k)
            .collect();
        for k in doomed {
            model.remove(&k);
        }
    }

    fn check(s: &Storage, model: &BTreeMap<u64, u8>, start: u64, len: u64) {
        let mut buf = vec![0xEE; len as usize];
        s.read(start, &mut buf);
        for (i, sector) in buf.chunks(SECTOR as usize).enumerate() {
            let want = model
                .get(&(start / SECTOR + i as u64))
                .copied()
                .unwrap_or(0);
            assert!(
                sector.iter().all(|&b| b == want),
                "sector {} reads {:?}, want {want}",
                start / SECTOR + i as u64,
                &sector[..4]
            );
        }
    }

    fn run(ops: Vec<Op>, path: &Path) {
        let open = || Storage::open_with_leaves(SIZE, Some(path), false, LEAF).unwrap();
        let mut s = open();
        let mut model: BTreeMap<u64, u8> = BTreeMap::new();
        let mut flushed = model.clone();
        for op in ops {
            match op {
                Op::Write { at, sectors, byte } => {
                    let (start, len) = range(at, sectors);
                    s.write(start, &vec![byte; len as usize]);
                    for k in start / SECTOR..(start + len) / SECTOR {
                        model.insert(k, byte);
                    }
                }
                Op::Read { at, sectors } => {
                    let (start, len) = range(at, sectors);
                    check(&s, &model, start, len);
                }
                Op::Zero { at, sectors, free } => {
                    let (start, len) = range(at, sectors);
                    s.zero(start, len, free);
                    clear(&mut model, start, len);
                }
                Op::Flush => {
                    s.flush().unwrap();
                    flushed = model.clone();
                }
                Op::Reopen => {
                    // What was not flushed is lost, as in a power cut; what was, survives.
                    drop(s);
                    s = open();
                    model = flushed.clone();
                }
            }
            // Memory follows data: every chunk holding a non-zero sector is allocated, and
            // at most the chunks ever written are.
            let needed: std::collections::BTreeSet<u64> =
                model.keys().map(|k| k * SECTOR / CHUNK_SIZE).collect();
            assert!(s.allocated_bytes() >= needed.len() as u64 * CHUNK_SIZE);
            for e in s
                .extents(0, SIZE, usize::MAX)
                .iter()
                .filter(|e| !e.allocated)
            {
                assert!(
                    model
                        .range(e.offset / SECTOR..(e.offset + e.length) / SECTOR)
                        .next()
                        .is_none(),
                    "data in an extent reported unallocated: {e:?}"
                );
            }
        }
        check(&s, &model, 0, SIZE);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn storage_matches_its_model(ops in proptest::collection::vec(op(), 1..40)) {
            run(ops, &ScratchFile::new("model").path);
        }
    }
}
