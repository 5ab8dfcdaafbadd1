//! The RAM disk's storage: sparse fixed-size chunks, each behind its own spin lock, optionally
//! backed by a file.
//!
//! * A chunk ([`CHUNK_SIZE`] bytes) is allocated on the first write that touches it; reads of
//!   a missing chunk return zeros. Trim frees whole chunks.
//! * Two kinds of lock, never nested: the **map lock** (an `nt` spin lock) protects the chunk
//!   map and is held only to look chunks up, insert or remove them. Each **chunk lock** (also
//!   a spin lock) protects the chunk's bytes and dirty flag. It is held for one copy of at
//!   most 64 KiB, a few microseconds, well inside the DISPATCH_LEVEL budget. Allocation and
//!   freeing happen outside both.
//! * Everything except [`Storage::open`] and [`Storage::flush`] is callable at DISPATCH_LEVEL.
//!   Those two do file I/O and must run at PASSIVE_LEVEL.
//! * With a backing file, a flush writes every dirty chunk, and zeros for every chunk freed
//!   since the last flush, then calls `sync_all`. A chunk's dirty flag is read and cleared
//!   under the chunk lock together with the copy that gets written. So a write that lands
//!   during a flush is either in that copy or marks the chunk dirty again: a later flush
//!   writes it, and nothing is lost.
//!
//! Callers validate ranges (see `super::check_range`): these functions assume
//! `offset + len <= size`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nt::NtStatus;
use nt::sync::SpinLock;

/// Bytes per chunk: the unit of allocation, trim and flush.
pub const CHUNK_SIZE: u64 = 64 * 1024;

/// One chunk's bytes.
struct ChunkData {
    bytes: Box<[u8]>,
    /// Written since the last flush copied it (only tracked with a backing file).
    dirty: bool,
}

struct Chunk {
    data: SpinLock<ChunkData>,
}

impl Chunk {
    fn new(bytes: Box<[u8]>, dirty: bool) -> Arc<Chunk> {
        Arc::new(Chunk {
            data: SpinLock::named("ramdisk chunk", ChunkData { bytes, dirty }),
        })
    }

    fn zeroed() -> Arc<Chunk> {
        Chunk::new(vec![0; CHUNK_SIZE as usize].into_boxed_slice(), false)
    }
}

#[derive(Default)]
struct ChunkMap {
    chunks: BTreeMap<u64, Arc<Chunk>>,
    /// Chunks freed since the last flush that the backing file may still hold data for.
    discarded: BTreeSet<u64>,
}

struct Backing {
    file: File,
    path: PathBuf,
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
    map: SpinLock<ChunkMap>,
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

/// The chunks a request touches, sorted by index.
struct Present(Vec<(u64, Arc<Chunk>)>);

impl Present {
    fn get(&self, index: &u64) -> Option<&Arc<Chunk>> {
        self.0.iter().find(|(i, _)| i == index).map(|(_, c)| c)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn insert(&mut self, index: u64, chunk: Arc<Chunk>) {
        let pos = self.0.partition_point(|(i, _)| *i < index);
        self.0.insert(pos, (index, chunk));
    }
}

impl Storage {
    /// A storage of `size` bytes (a multiple of 512 greater than 0). With a backing file, it
    /// is opened (created if missing and not read-only) and its non-zero chunks are loaded;
    /// `size` 0 means "the file's length". A file longer than a non-zero `size`, or a length
    /// that is not a multiple of 512: `STATUS_INVALID_PARAMETER`. PASSIVE_LEVEL.
    pub(crate) fn open(
        size: u64,
        backing: Option<&Path>,
        read_only: bool,
    ) -> Result<Storage, NtStatus> {
        let Some(path) = backing else {
            if size == 0 || !size.is_multiple_of(512) {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            return Ok(Storage {
                size,
                read_only,
                map: SpinLock::named("ramdisk chunk map", ChunkMap::default()),
                backing: None,
            });
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
        if size == 0 || !size.is_multiple_of(512) || file_len > size {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if file_len < size && !read_only {
            // Extending leaves a hole: it costs no disk space.
            file.set_len(size).map_err(|e| io_status(&e))?;
        }
        let storage = Storage {
            size,
            read_only,
            map: SpinLock::named("ramdisk chunk map", ChunkMap::default()),
            backing: Some(Backing {
                file,
                path: path.to_owned(),
            }),
        };
        storage.load(file_len.min(size))?;
        Ok(storage)
    }

    /// Loads the non-zero chunks of the first `len` bytes of the backing file.
    fn load(&self, len: u64) -> Result<(), NtStatus> {
        let Some(b) = &self.backing else {
            return Ok(());
        };
        let mut loaded = BTreeMap::new();
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(CHUNK_SIZE) as usize;
            buf.fill(0);
            b.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| io_status(&e))?;
            if buf.iter().any(|&x| x != 0) {
                loaded.insert(
                    at / CHUNK_SIZE,
                    Chunk::new(buf.clone().into_boxed_slice(), false),
                );
            }
            at += CHUNK_SIZE;
        }
        self.map.lock().chunks = loaded;
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

    /// The allocated chunks among `first..=last`, in index order, looked up under one hold of
    /// the map lock. A plain vector: a request touches one or two chunks almost always, and
    /// building a map per request cost a quarter of a random write.
    fn present(&self, first: u64, last: u64) -> Present {
        let map = self.map.lock();
        let mut v = Vec::with_capacity((last - first + 1).min(8) as usize);
        v.extend(map.chunks.range(first..=last).map(|(&i, c)| (i, c.clone())));
        Present(v)
    }

    /// Copies `out.len()` bytes at `offset` into `out`; missing chunks read as zeros.
    pub(crate) fn read(&self, offset: u64, out: &mut [u8]) {
        if out.is_empty() {
            return;
        }
        let last = (offset + out.len() as u64 - 1) / CHUNK_SIZE;
        let present = self.present(offset / CHUNK_SIZE, last);
        for (index, within, n, at) in pieces(offset, out.len()) {
            let dst = &mut out[at..at + n];
            match present.get(&index) {
                Some(c) => dst.copy_from_slice(&c.data.lock().bytes[within..within + n]),
                None => dst.fill(0),
            }
        }
    }

    /// Copies `data` to `offset`, allocating the chunks it touches for the first time.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let first = offset / CHUNK_SIZE;
        let last = (offset + data.len() as u64 - 1) / CHUNK_SIZE;
        let mut present = self.present(first, last);
        if present.len() as u64 != last - first + 1 {
            // Allocate outside the lock, then insert; a chunk another writer inserted
            // meanwhile wins, and ours is dropped (outside the lock too).
            let fresh: Vec<(u64, Arc<Chunk>)> = (first..=last)
                .filter(|i| present.get(i).is_none())
                .map(|i| (i, Chunk::zeroed()))
                .collect();
            let mut unused = Vec::new();
            {
                let mut guard = self.map.lock();
                let map = &mut *guard;
                for (i, c) in fresh {
                    let slot = map.chunks.entry(i).or_insert_with(|| c.clone());
                    if Arc::ptr_eq(slot, &c) {
                        map.discarded.remove(&i);
                    } else {
                        unused.push(c);
                    }
                    present.insert(i, slot.clone());
                }
            }
            drop(unused);
        }
        let track = self.backing.is_some();
        for (index, within, n, at) in pieces(offset, data.len()) {
            if let Some(c) = present.get(&index) {
                let mut d = c.data.lock();
                d.bytes[within..within + n].copy_from_slice(&data[at..at + n]);
                d.dirty |= track;
            }
        }
    }

    /// Makes `[offset, offset + len)` read as zeros. With `free`, chunks the range covers
    /// entirely are freed (trim); otherwise allocated chunks stay allocated and are zero-filled
    /// (write-zeroes). Partially covered chunks are zero-filled either way.
    pub(crate) fn zero(&self, offset: u64, len: u64, free: bool) {
        if len == 0 {
            return;
        }
        let first = offset / CHUNK_SIZE;
        let last = (offset + len - 1) / CHUNK_SIZE;
        let track = self.backing.is_some();
        let mut freed = Vec::new();
        let present = {
            let mut map = self.map.lock();
            if free {
                // Whole chunks: from the first boundary at or after `offset` to the last one
                // at or before the end.
                let whole_first = offset.div_ceil(CHUNK_SIZE);
                let end = offset + len;
                let whole_end = if end == self.size {
                    // The last chunk may be short: covering the end of the disk covers it.
                    end.div_ceil(CHUNK_SIZE)
                } else {
                    end / CHUNK_SIZE
                };
                if whole_first < whole_end {
                    let doomed: Vec<u64> = map
                        .chunks
                        .range(whole_first..whole_end)
                        .map(|(&i, _)| i)
                        .collect();
                    for i in doomed {
                        if let Some(c) = map.chunks.remove(&i) {
                            freed.push(c);
                        }
                        if track {
                            map.discarded.insert(i);
                        }
                    }
                }
            }
            map.chunks
                .range(first..=last)
                .map(|(&i, c)| (i, c.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        drop(freed);
        // Only allocated chunks need zero-filling: the cost follows memory, not the range.
        let end = offset + len;
        for (index, c) in present {
            let start = index * CHUNK_SIZE;
            let (from, to) = (offset.max(start), end.min(start + CHUNK_SIZE));
            if from < to {
                let mut d = c.data.lock();
                d.bytes[(from - start) as usize..(to - start) as usize].fill(0);
                d.dirty |= track;
            }
        }
    }

    /// Bytes held by allocated chunks.
    pub(crate) fn allocated_bytes(&self) -> u64 {
        self.map.lock().chunks.len() as u64 * CHUNK_SIZE
    }

    /// Allocation of `[offset, offset + len)` as alternating extents, at most `max` of them,
    /// covering a prefix of the range (all of it if `max` suffices). The scan stops once `max`
    /// extents are final, so its cost follows `max`, not the size of the range.
    pub(crate) fn extents(&self, offset: u64, len: u64, max: usize) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        if len == 0 || max == 0 {
            return out;
        }
        let end = offset + len;
        let push = |out: &mut Vec<Extent>, from: u64, to: u64, allocated: bool| {
            let (from, to) = (from.max(offset), to.min(end));
            if from >= to {
                return;
            }
            match out.last_mut() {
                Some(e) if e.allocated == allocated && e.offset + e.length == from => {
                    e.length += to - from;
                }
                _ => out.push(Extent {
                    offset: from,
                    length: to - from,
                    allocated,
                }),
            }
        };
        let first = offset / CHUNK_SIZE;
        let last = (end - 1) / CHUNK_SIZE;
        let mut at = first * CHUNK_SIZE;
        let mut complete = true;
        {
            let map = self.map.lock();
            for &i in map.chunks.range(first..=last).map(|(i, _)| i) {
                let start = i * CHUNK_SIZE;
                push(&mut out, at, start, false);
                push(&mut out, start, start + CHUNK_SIZE, true);
                at = start + CHUNK_SIZE;
                // The first `max` extents can no longer change once there is one more.
                if out.len() > max {
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            push(&mut out, at, end, false);
        }
        out.truncate(max);
        out
    }

    /// Writes what changed since the last flush to the backing file and syncs it. Without a
    /// backing file (or read-only) there is nothing to do. PASSIVE_LEVEL: it blocks.
    pub(crate) fn flush(&self) -> Result<(), NtStatus> {
        let Some(b) = &self.backing else {
            return Ok(());
        };
        if self.read_only {
            return Ok(());
        }
        let (chunks, discarded) = {
            let mut map = self.map.lock();
            let discarded = std::mem::take(&mut map.discarded);
            let chunks: Vec<(u64, Arc<Chunk>)> =
                map.chunks.iter().map(|(&i, c)| (i, c.clone())).collect();
            (chunks, discarded)
        };
        let zeros = vec![0u8; CHUNK_SIZE as usize];
        let mut result = Ok(());
        let mut failed_discards = Vec::new();
        for &i in &discarded {
            let (at, n) = self.chunk_span(i);
            if let Err(e) = b.file.write_all_at(&zeros[..n], at) {
                result = Err(io_status(&e));
                failed_discards.push(i);
            }
        }
        let mut copy = vec![0u8; CHUNK_SIZE as usize];
        for (i, c) in chunks {
            {
                let mut d = c.data.lock();
                if !d.dirty {
                    continue;
                }
                copy.copy_from_slice(&d.bytes);
                d.dirty = false;
            }
            let (at, n) = self.chunk_span(i);
            if let Err(e) = b.file.write_all_at(&copy[..n], at) {
                result = Err(io_status(&e));
                c.data.lock().dirty = true;
            }
        }
        if !failed_discards.is_empty() {
            let mut map = self.map.lock();
            for i in failed_discards {
                if !map.chunks.contains_key(&i) {
                    map.discarded.insert(i);
                }
            }
        }
        result?;
        b.file.sync_all().map_err(|e| io_status(&e))
    }

    /// Where chunk `i` lives in the file: (offset, length), the last chunk possibly short.
    fn chunk_span(&self, i: u64) -> (u64, usize) {
        let at = i * CHUNK_SIZE;
        (at, self.size.saturating_sub(at).min(CHUNK_SIZE) as usize)
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
    }
}
