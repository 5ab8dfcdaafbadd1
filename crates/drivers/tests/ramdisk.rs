//! The RAM disk: data integrity under concurrent I/O in every sync configuration, sparse
//! memory, persistence across a restart, trim, write-zeroes, read-only, and bad input.

mod common;

use std::sync::Arc;

use drivers::ramdisk::{
    self, CHUNK_SIZE, DiskGeometry, EXTENT_SIZE, Extent, FIXED_MEDIA,
    IOCTL_DISK_GET_DRIVE_GEOMETRY, IOCTL_DISK_GET_LENGTH_INFO, IOCTL_DISK_IS_WRITABLE,
    IOCTL_RAMDISK_FLUSH_RANGE, IOCTL_RAMDISK_QUERY_ALLOCATED, IOCTL_RAMDISK_QUERY_RANGES,
    IOCTL_RAMDISK_TRIM, IOCTL_RAMDISK_WRITE_ZEROES, RamdiskConfig, RamdiskDevice, RangeInput,
};
use nt::io::{Handle, IoOp};
use nt::{Irql, NtStatus};
use wdf::{Driver, ExecutionLevel, SyncScope};

use common::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const SECTOR: u64 = 512;

fn make(driver: &Arc<Driver>, name: &str, config: RamdiskConfig) -> RamdiskDevice {
    ramdisk::create(driver, name, config).expect("create the RAM disk")
}

fn range(offset: u64, length: u64) -> Vec<u8> {
    RangeInput { offset, length }.to_bytes().to_vec()
}

fn allocated(h: &Handle) -> u64 {
    let c = ioctl(h, IOCTL_RAMDISK_QUERY_ALLOCATED, Vec::new(), 8);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 8));
    u64::from_le_bytes(c.data.try_into().unwrap())
}

fn trim(h: &Handle, offset: u64, length: u64) -> NtStatus {
    ioctl(h, IOCTL_RAMDISK_TRIM, range(offset, length), 0).status
}

fn write_zeroes(h: &Handle, offset: u64, length: u64) -> NtStatus {
    ioctl(h, IOCTL_RAMDISK_WRITE_ZEROES, range(offset, length), 0).status
}

#[track_caller]
fn write_ok(h: &Handle, offset: u64, data: Vec<u8>) {
    let len = data.len();
    let c = write(h, offset, data);
    assert_eq!(
        (c.status, c.information),
        (NtStatus::SUCCESS, len),
        "write at {offset}"
    );
}

#[track_caller]
fn read_ok(h: &Handle, offset: u64, length: u64) -> Vec<u8> {
    let c = read(h, offset, length as usize);
    assert_eq!(
        (c.status, c.information),
        (NtStatus::SUCCESS, length as usize),
        "read at {offset}"
    );
    c.data
}

fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Compares two buffers, reporting the first difference instead of both buffers.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let end = (i + 16).min(got.len());
        panic!(
            "{what}: first difference at byte {i}: got {:?}, want {:?}",
            &got[i..end],
            &want[i..end]
        );
    }
}

/// Checks that a buffer is all zeros.
#[track_caller]
fn assert_zeros(got: &[u8], what: &str) {
    if let Some(i) = got.iter().position(|&b| b != 0) {
        panic!("{what}: byte {i} is {} instead of 0", got[i]);
    }
}

/// The whole allocation map of `[offset, offset + length)`, asking with room for only
/// `per_call` extents at a time (continuing from where each answer ends).
fn extents(h: &Handle, offset: u64, length: u64, per_call: usize) -> Vec<Extent> {
    let end = offset + length;
    let mut at = offset;
    let mut all: Vec<Extent> = Vec::new();
    while at < end {
        let c = ioctl(
            h,
            IOCTL_RAMDISK_QUERY_RANGES,
            range(at, end - at),
            per_call * EXTENT_SIZE,
        );
        assert_eq!(c.status, NtStatus::SUCCESS);
        let got = Extent::parse_all(&c.data);
        assert!(!got.is_empty() && got.len() <= per_call);
        assert_eq!(got[0].offset, at);
        for e in got {
            assert_eq!(e.offset, at, "extents are contiguous");
            at += e.length;
            match all.last_mut() {
                Some(l) if l.allocated == e.allocated => l.length += e.length,
                _ => all.push(e),
            }
        }
    }
    assert_eq!(at, end);
    all
}

// ---- data integrity under concurrency ------------------------------------------------------

/// A shared-region sector: 32 copies of (sector index, writer, sequence). A sector is
/// consistent if it is all zeros or 32 equal records naming its own index.
fn stamp(sector: u64, writer: u32, seq: u32) -> Vec<u8> {
    let mut rec = [0u8; 16];
    rec[0..8].copy_from_slice(&sector.to_le_bytes());
    rec[8..12].copy_from_slice(&writer.to_le_bytes());
    rec[12..16].copy_from_slice(&seq.to_le_bytes());
    rec.repeat((SECTOR / 16) as usize)
}

#[track_caller]
fn check_shared_sector(data: &[u8], sector: u64, writers: u32) {
    if data.iter().all(|&b| b == 0) {
        return;
    }
    let rec = &data[..16];
    for r in data.chunks_exact(16) {
        assert_eq!(r, rec, "sector {sector} is torn");
    }
    let idx = u64::from_le_bytes(rec[0..8].try_into().unwrap());
    let writer = u32::from_le_bytes(rec[8..12].try_into().unwrap());
    assert_eq!(idx, sector, "sector {sector} holds another sector's data");
    assert!(
        (1..=writers).contains(&writer),
        "sector {sector}: writer {writer}"
    );
}

/// Several threads, each with its own handle: random writes, reads, trims and write-zeroes
/// in a private region checked against a model, plus stamped writes and reads in a shared
/// region checked for torn or misplaced sectors. At the end the whole disk is checked.
fn integrity_under_concurrent_io(name: &str, scope: SyncScope, level: ExecutionLevel) {
    const THREADS: u64 = 4;
    const REGION: u64 = MIB;
    const SHARED: u64 = MIB;
    const OPS: usize = 250;
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let size = THREADS * REGION + SHARED;
    let config = RamdiskConfig::new(size).with_scope(scope).with_level(level);
    let dev = make(&driver, name, config);
    let shared_base = THREADS * REGION;
    let shared_sectors = SHARED / SECTOR;

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let kernel = &kernel;
            s.spawn(move || {
                let h = kernel.io().open(name).unwrap();
                let mut rng = Rng::new(0x5EED + t);
                let base = t * REGION;
                let mut model = vec![0u8; REGION as usize];
                let region_sectors = REGION / SECTOR;
                for op in 0..OPS {
                    let max = if rng.one_in(8) { 512 } else { 128 };
                    let sectors = 1 + rng.below(max);
                    let first = rng.below(region_sectors - sectors + 1);
                    let (off, len) = (first * SECTOR, sectors * SECTOR);
                    let at = (off as usize)..((off + len) as usize);
                    match rng.below(12) {
                        0..=3 => {
                            let data = pattern(rng.next_u64(), len);
                            model[at].copy_from_slice(&data);
                            write_ok(&h, base + off, data);
                        }
                        4..=5 => {
                            let got = read_ok(&h, base + off, len);
                            assert_same(&got, &model[at], &format!("thread {t}: read at {off}"));
                        }
                        6 => {
                            let status = if rng.one_in(2) {
                                trim(&h, base + off, len)
                            } else {
                                write_zeroes(&h, base + off, len)
                            };
                            assert_eq!(status, NtStatus::SUCCESS);
                            model[at].fill(0);
                        }
                        7..=9 => {
                            let n = 1 + rng.below(64.min(shared_sectors));
                            let first = rng.below(shared_sectors - n + 1);
                            let data: Vec<u8> = (first..first + n)
                                .flat_map(|sec| stamp(sec, t as u32 + 1, op as u32))
                                .collect();
                            write_ok(&h, shared_base + first * SECTOR, data);
                        }
                        10 => {
                            let n = 1 + rng.below(256.min(shared_sectors));
                            let first = rng.below(shared_sectors - n + 1);
                            let data = read_ok(&h, shared_base + first * SECTOR, n * SECTOR);
                            for (i, sec) in data.chunks_exact(SECTOR as usize).enumerate() {
                                check_shared_sector(sec, first + i as u64, THREADS as u32);
                            }
                        }
                        _ => {
                            let n = 1 + rng.below(32);
                            let first = rng.below(shared_sectors - n + 1);
                            let status = trim(&h, shared_base + first * SECTOR, n * SECTOR);
                            assert_eq!(status, NtStatus::SUCCESS);
                        }
                    }
                }
                let got = read_ok(&h, base, REGION);
                assert_same(&got, &model, &format!("thread {t}: final region"));
                assert_eq!(close(h), NtStatus::SUCCESS);
            });
        }
    });

    let h = kernel.io().open(name).unwrap();
    let data = read_ok(&h, shared_base, SHARED);
    for (i, sec) in data.chunks_exact(SECTOR as usize).enumerate() {
        check_shared_sector(sec, i as u64, THREADS as u32);
    }
    assert!(dev.allocated_bytes() <= size);
    assert_eq!(allocated(&h), dev.allocated_bytes());
    assert_no_violations();
}

#[test]
fn integrity_scope_none_dispatch() {
    integrity_under_concurrent_io(
        "rd-int-none",
        SyncScope::None,
        ExecutionLevel::InheritFromParent,
    );
}

#[test]
fn integrity_device_scope_dispatch() {
    integrity_under_concurrent_io("rd-int-device", SyncScope::Device, ExecutionLevel::Dispatch);
}

#[test]
fn integrity_queue_scope_dispatch() {
    integrity_under_concurrent_io("rd-int-queue", SyncScope::Queue, ExecutionLevel::Dispatch);
}

#[test]
fn integrity_scope_none_passive() {
    integrity_under_concurrent_io(
        "rd-int-none-passive",
        SyncScope::None,
        ExecutionLevel::Passive,
    );
}

#[test]
fn integrity_device_scope_passive() {
    integrity_under_concurrent_io(
        "rd-int-device-passive",
        SyncScope::Device,
        ExecutionLevel::Passive,
    );
}

/// Requests sent at DISPATCH_LEVEL to a Passive-level disk are deferred, and still correct.
#[test]
fn requests_sent_at_dispatch_to_a_passive_disk_are_deferred() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let config = RamdiskConfig::new(MIB).with_level(ExecutionLevel::Passive);
    let dev = make(&driver, "rd-passive-dispatch", config);
    let h = kernel.io().open("rd-passive-dispatch").unwrap();
    let data = pattern(1, 4 * KIB);
    let w = h.submit_at(
        IoOp::Write {
            offset: 8 * KIB,
            data: data.clone(),
        },
        Irql::Dispatch,
    );
    assert_eq!(wait(w).status, NtStatus::SUCCESS);
    let r = h.submit_at(
        IoOp::Read {
            offset: 8 * KIB,
            length: 4096,
        },
        Irql::Dispatch,
    );
    assert_eq!(wait(r).data, data);
    assert!(dev.io_queue().stats().deferred_irql >= 2);
    assert_no_violations();
}

// ---- sparse memory ---------------------------------------------------------------------------

#[test]
fn a_64_gib_disk_holds_only_what_was_written() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let size = 64 * GIB;
    let dev = make(&driver, "rd-sparse", RamdiskConfig::new(size));
    let h = kernel.io().open("rd-sparse").unwrap();
    assert_eq!(allocated(&h), 0);
    let before = rss_bytes();

    // 1 MiB in 64 KiB writes spread over the disk: the start, the middle, the very end.
    let offsets: Vec<u64> = (0..4)
        .map(|i| i * CHUNK_SIZE)
        .chain((0..8).map(|i| 32 * GIB + i * CHUNK_SIZE))
        .chain((1..=4).map(|i| size - i * CHUNK_SIZE))
        .collect();
    for (i, &off) in offsets.iter().enumerate() {
        write_ok(&h, off, pattern(i as u64, CHUNK_SIZE));
    }
    assert_eq!(allocated(&h), MIB);
    assert_eq!(dev.allocated_bytes(), MIB);
    for (i, &off) in offsets.iter().enumerate() {
        assert_same(
            &read_ok(&h, off, CHUNK_SIZE),
            &pattern(i as u64, CHUNK_SIZE),
            "written",
        );
    }
    // Reading untouched space returns zeros and allocates nothing.
    assert_zeros(&read_ok(&h, 48 * GIB, MIB), "untouched");
    assert_eq!(allocated(&h), MIB);

    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 64 * MIB,
        "resident memory grew by {} MiB",
        grown / MIB
    );

    // The allocation map of the whole disk: three allocated runs.
    let map = extents(&h, 0, size, 64);
    let allocated_runs: Vec<(u64, u64)> = map
        .iter()
        .filter(|e| e.allocated)
        .map(|e| (e.offset, e.length))
        .collect();
    assert_eq!(
        allocated_runs,
        vec![
            (0, 4 * CHUNK_SIZE),
            (32 * GIB, 8 * CHUNK_SIZE),
            (size - 4 * CHUNK_SIZE, 4 * CHUNK_SIZE)
        ]
    );

    // Trimming the whole disk gives all of it back.
    assert_eq!(trim(&h, 0, size), NtStatus::SUCCESS);
    assert_eq!(allocated(&h), 0);
    assert_zeros(&read_ok(&h, 32 * GIB, CHUNK_SIZE), "trimmed");
    assert_no_violations();
}

// ---- persistence ---------------------------------------------------------------------------

/// What was flushed is what a device created again on the same file sees: written data,
/// trimmed ranges as zeros, and nothing written after the last flush.
#[test]
fn flushed_data_survives_a_restart() {
    verifier_on();
    let dir = TempDir::new("rd-persist");
    let path = dir.path().join("disk.img");
    // Not a multiple of the chunk size: the last chunk is short.
    let size = 4 * MIB + 3 * SECTOR;
    let kernel = kernel();
    let driver = driver(&kernel);

    let a = pattern(1, 100 * KIB);
    let b = pattern(2, 3 * SECTOR);
    let c = pattern(3, CHUNK_SIZE);
    {
        let config = RamdiskConfig::new(size).with_backing_file(&path);
        let dev = make(&driver, "rd-persist", config);
        assert_eq!(dev.backing_file(), Some(path.as_path()));
        let h = kernel.io().open("rd-persist").unwrap();
        write_ok(&h, 0, a.clone());
        write_ok(&h, size - 3 * SECTOR, b.clone());
        write_ok(&h, MIB, c.clone());
        assert_eq!(flush(&h).status, NtStatus::SUCCESS);
        // Trimmed after one flush and flushed again: the file must lose it too.
        assert_eq!(trim(&h, MIB, CHUNK_SIZE), NtStatus::SUCCESS);
        assert_eq!(flush(&h).status, NtStatus::SUCCESS);
        // Never flushed: lost with the device.
        write_ok(&h, 2 * MIB, pattern(4, 8 * KIB));
        assert_eq!(close(h), NtStatus::SUCCESS);
        dev.device().delete();
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);

    let config = RamdiskConfig::new(size).with_backing_file(&path);
    let dev = make(&driver, "rd-persist", config);
    let h = kernel.io().open("rd-persist").unwrap();
    assert_same(&read_ok(&h, 0, a.len() as u64), &a, "flushed a");
    assert_same(&read_ok(&h, size - 3 * SECTOR, 3 * SECTOR), &b, "flushed b");
    assert_zeros(&read_ok(&h, MIB, CHUNK_SIZE), "trimmed and flushed");
    assert_zeros(&read_ok(&h, 2 * MIB, 8 * KIB), "never flushed");
    // Loaded sparsely: `a` spans two chunks, `b` one.
    assert_eq!(dev.allocated_bytes(), 3 * CHUNK_SIZE);
    // Size 0 means "the file's length".
    dev.device().delete();
    let dev = make(
        &driver,
        "rd-persist",
        RamdiskConfig::new(0).with_backing_file(&path),
    );
    assert_eq!(dev.size(), size);
    assert_no_violations();
}

/// A flush sent at DISPATCH_LEVEL still runs at PASSIVE_LEVEL: its queue defers it.
#[test]
fn a_flush_sent_at_dispatch_is_deferred_to_passive() {
    verifier_on();
    let dir = TempDir::new("rd-flush-dispatch");
    let path = dir.path().join("disk.img");
    let kernel = kernel();
    let driver = driver(&kernel);
    let config = RamdiskConfig::new(MIB).with_backing_file(&path);
    let dev = make(&driver, "rd-flush-dispatch", config);
    let h = kernel.io().open("rd-flush-dispatch").unwrap();
    let data = pattern(9, 4 * KIB);
    write_ok(&h, 64 * KIB, data.clone());
    let f = h.submit_at(IoOp::Flush, Irql::Dispatch);
    assert_eq!(wait(f).status, NtStatus::SUCCESS);
    assert!(dev.flush_queue().stats().deferred_irql >= 1);
    let file = std::fs::read(&path).unwrap();
    assert_same(&file[64 * KIB as usize..68 * KIB as usize], &data, "file");
    assert_no_violations();
}

/// A ranged flush (what a FUA write needs) writes the chunks its range touches and no others,
/// in every sync configuration and from DISPATCH_LEVEL too (forwarded to the passive flush
/// queue); a full flush then writes the rest. Bad ranges are refused like bad writes.
#[test]
fn a_ranged_flush_writes_only_its_range() {
    for (i, (scope, level, at)) in [
        (SyncScope::None, ExecutionLevel::Dispatch, Irql::Passive),
        (SyncScope::Device, ExecutionLevel::Dispatch, Irql::Dispatch),
        (SyncScope::Queue, ExecutionLevel::Passive, Irql::Dispatch),
    ]
    .into_iter()
    .enumerate()
    {
        verifier_on();
        let name = format!("rd-fua-{i}");
        let dir = TempDir::new(&name);
        let path = dir.path().join("disk.img");
        let kernel = kernel();
        let driver = driver(&kernel);
        let config = RamdiskConfig::new(4 * MIB)
            .with_backing_file(&path)
            .with_scope(scope)
            .with_level(level);
        let dev = make(&driver, &name, config);
        let h = kernel.io().open(&name).unwrap();
        let other = pattern(1, 8 * KIB);
        let fua = pattern(2, 8 * KIB);
        write_ok(&h, 0, other.clone());
        // Straddles a chunk boundary: both chunks are written.
        let fua_at = 3 * CHUNK_SIZE - 4 * KIB;
        write_ok(&h, fua_at, fua.clone());
        let c = wait(h.submit_at(
            IoOp::DeviceControl {
                code: IOCTL_RAMDISK_FLUSH_RANGE,
                input: range(fua_at, 8 * KIB),
                output_length: 0,
            },
            at,
        ));
        assert_eq!(c.status, NtStatus::SUCCESS, "{scope:?} {level:?} at {at}");
        let file = std::fs::read(&path).unwrap();
        let span = |o: u64, n: u64| &file[o as usize..(o + n) as usize];
        assert_same(span(fua_at, 8 * KIB), &fua, "the flushed range");
        assert_zeros(span(0, 8 * KIB), "outside the range: not written yet");
        assert!(dev.flush_queue().stats().presented >= 1);
        assert_eq!(flush(&h).status, NtStatus::SUCCESS);
        let file = std::fs::read(&path).unwrap();
        assert_same(&file[..8 * KIB as usize], &other, "after the full flush");
        // Empty: nothing to do; misaligned or past the end: refused.
        assert_eq!(
            ioctl(&h, IOCTL_RAMDISK_FLUSH_RANGE, range(0, 0), 0).status,
            NtStatus::SUCCESS
        );
        for (o, n) in [(1, SECTOR), (0, 5 * MIB), (4 * MIB, SECTOR)] {
            assert_eq!(
                ioctl(&h, IOCTL_RAMDISK_FLUSH_RANGE, range(o, n), 0).status,
                NtStatus::INVALID_PARAMETER,
                "{o} {n}"
            );
        }
        assert_eq!(
            ioctl(&h, IOCTL_RAMDISK_FLUSH_RANGE, vec![0; 8], 0).status,
            NtStatus::BUFFER_TOO_SMALL
        );
        assert_eq!(close(h), NtStatus::SUCCESS);
        dev.device().delete();
        assert_no_violations();
    }
}

// ---- trim, write-zeroes, read-only ----------------------------------------------------------

#[test]
fn trim_zeroes_the_range_and_frees_whole_chunks() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    make(&driver, "rd-trim", RamdiskConfig::new(MIB));
    let h = kernel.io().open("rd-trim").unwrap();
    let data = pattern(5, 4 * CHUNK_SIZE);
    write_ok(&h, 0, data.clone());
    assert_eq!(allocated(&h), 4 * CHUNK_SIZE);

    // From the middle of chunk 0 to the middle of chunk 3.
    let (off, len) = (CHUNK_SIZE / 2, 3 * CHUNK_SIZE);
    assert_eq!(trim(&h, off, len), NtStatus::SUCCESS);
    assert_eq!(allocated(&h), 2 * CHUNK_SIZE);
    let now = read_ok(&h, 0, 4 * CHUNK_SIZE);
    let (o, e) = (off as usize, (off + len) as usize);
    assert_same(&now[..o], &data[..o], "before the trim");
    assert_zeros(&now[o..e], "trimmed");
    assert_same(&now[e..], &data[e..], "after the trim");
    let map = extents(&h, 0, 4 * CHUNK_SIZE, 8);
    let runs: Vec<_> = map
        .iter()
        .map(|e| (e.offset, e.length, e.allocated))
        .collect();
    assert_eq!(
        runs,
        vec![
            (0, CHUNK_SIZE, true),
            (CHUNK_SIZE, 2 * CHUNK_SIZE, false),
            (3 * CHUNK_SIZE, CHUNK_SIZE, true)
        ]
    );
    // A zero-length trim does nothing.
    assert_eq!(trim(&h, 0, 0), NtStatus::SUCCESS);
    assert_eq!(allocated(&h), 2 * CHUNK_SIZE);
    assert_no_violations();
}

#[test]
fn write_zeroes_zeroes_without_changing_allocation() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    make(&driver, "rd-wz", RamdiskConfig::new(MIB));
    let h = kernel.io().open("rd-wz").unwrap();
    write_ok(&h, 0, pattern(6, 2 * CHUNK_SIZE));
    assert_eq!(write_zeroes(&h, 0, 2 * CHUNK_SIZE), NtStatus::SUCCESS);
    assert_zeros(&read_ok(&h, 0, 2 * CHUNK_SIZE), "zeroed");
    assert_eq!(allocated(&h), 2 * CHUNK_SIZE);
    // Zeroing never-written space allocates nothing.
    assert_eq!(
        write_zeroes(&h, 4 * CHUNK_SIZE, 4 * CHUNK_SIZE),
        NtStatus::SUCCESS
    );
    assert_eq!(allocated(&h), 2 * CHUNK_SIZE);
    assert_no_violations();
}

#[test]
fn a_read_only_disk_refuses_changes() {
    verifier_on();
    let dir = TempDir::new("rd-ro");
    let path = dir.path().join("disk.img");
    let mut image = vec![0u8; MIB as usize];
    let data = pattern(7, 8 * KIB);
    image[128 * KIB as usize..136 * KIB as usize].copy_from_slice(&data);
    std::fs::write(&path, &image).unwrap();

    let kernel = kernel();
    let driver = driver(&kernel);
    let config = RamdiskConfig::new(0).with_backing_file(&path).read_only();
    let dev = make(&driver, "rd-ro", config);
    assert!(dev.is_read_only());
    assert_eq!(dev.size(), MIB);
    let h = kernel.io().open("rd-ro").unwrap();
    assert_same(&read_ok(&h, 128 * KIB, 8 * KIB), &data, "image");
    assert_eq!(dev.allocated_bytes(), CHUNK_SIZE);
    let w = write(&h, 0, vec![1; 512]);
    assert_eq!(
        (w.status, w.information),
        (NtStatus::MEDIA_WRITE_PROTECTED, 0)
    );
    assert_eq!(trim(&h, 0, CHUNK_SIZE), NtStatus::MEDIA_WRITE_PROTECTED);
    assert_eq!(
        write_zeroes(&h, 0, CHUNK_SIZE),
        NtStatus::MEDIA_WRITE_PROTECTED
    );
    assert_eq!(
        ioctl(&h, IOCTL_DISK_IS_WRITABLE, Vec::new(), 0).status,
        NtStatus::MEDIA_WRITE_PROTECTED
    );
    assert_eq!(flush(&h).status, NtStatus::SUCCESS);
    assert_same(&std::fs::read(&path).unwrap(), &image, "the image file");

    // Read-only needs the file to exist.
    let missing = RamdiskConfig::new(MIB)
        .with_backing_file(dir.path().join("missing.img"))
        .read_only();
    assert_eq!(
        ramdisk::create(&driver, "rd-ro-missing", missing).unwrap_err(),
        NtStatus::OBJECT_NAME_NOT_FOUND
    );
    assert_no_violations();
}

// ---- control codes and bad input ------------------------------------------------------------

#[test]
fn geometry_length_and_writability() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let dev = make(&driver, "rd-geo", RamdiskConfig::new(64 * MIB));
    let h = kernel.io().open("rd-geo").unwrap();
    let c = ioctl(&h, IOCTL_DISK_GET_LENGTH_INFO, Vec::new(), 8);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 8));
    assert_eq!(c.data, (64 * MIB).to_le_bytes());
    let c = ioctl(&h, IOCTL_DISK_GET_DRIVE_GEOMETRY, Vec::new(), 64);
    assert_eq!(
        (c.status, c.information),
        (NtStatus::SUCCESS, DiskGeometry::SIZE)
    );
    let g = DiskGeometry::from_bytes(&c.data).unwrap();
    assert_eq!(g, dev.geometry());
    assert_eq!(
        (g.cylinders, g.media_type, g.tracks_per_cylinder),
        (2048, FIXED_MEDIA, 2)
    );
    assert_eq!((g.sectors_per_track, g.bytes_per_sector), (32, 512));
    assert_eq!(
        ioctl(&h, IOCTL_DISK_IS_WRITABLE, Vec::new(), 0).status,
        NtStatus::SUCCESS
    );
    assert_no_violations();
}

/// Misaligned, out-of-range and overflowing requests are refused with a status (the device is
/// unharmed and nothing panics); short buffers are `STATUS_BUFFER_TOO_SMALL`.
#[test]
fn bad_offsets_and_lengths_are_invalid_parameter() {
    verifier_on();
    let kernel = kernel();
    let driver = driver(&kernel);
    let size = MIB;
    let dev = make(&driver, "rd-bad", RamdiskConfig::new(size));
    let h = kernel.io().open("rd-bad").unwrap();
    let bad: [(u64, u64); 7] = [
        (1, 512),
        (0, 100),
        (511, 513),
        (size - 512, 1024),
        (size, 512),
        (u64::MAX - 511, 1024),
        (!511u64, 512),
    ];
    for (off, len) in bad {
        let r = read(&h, off, len as usize);
        assert_eq!(
            (r.status, r.information),
            (NtStatus::INVALID_PARAMETER, 0),
            "read {off} {len}"
        );
        let w = write(&h, off, vec![1; len as usize]);
        assert_eq!(
            (w.status, w.information),
            (NtStatus::INVALID_PARAMETER, 0),
            "write {off} {len}"
        );
        assert_eq!(
            trim(&h, off, len),
            NtStatus::INVALID_PARAMETER,
            "trim {off}"
        );
        assert_eq!(
            write_zeroes(&h, off, len),
            NtStatus::INVALID_PARAMETER,
            "write-zeroes {off}"
        );
    }
    assert_eq!(trim(&h, 0, !511u64), NtStatus::INVALID_PARAMETER);
    // Short inputs and outputs.
    assert_eq!(
        ioctl(&h, IOCTL_RAMDISK_TRIM, vec![0; 8], 0).status,
        NtStatus::BUFFER_TOO_SMALL
    );
    assert_eq!(
        ioctl(&h, IOCTL_RAMDISK_WRITE_ZEROES, Vec::new(), 0).status,
        NtStatus::BUFFER_TOO_SMALL
    );
    assert_eq!(
        ioctl(&h, IOCTL_DISK_GET_LENGTH_INFO, Vec::new(), 7).status,
        NtStatus::BUFFER_TOO_SMALL
    );
    assert_eq!(
        ioctl(&h, IOCTL_DISK_GET_DRIVE_GEOMETRY, Vec::new(), 0).status,
        NtStatus::BUFFER_TOO_SMALL
    );
    assert_eq!(
        ioctl(&h, IOCTL_RAMDISK_QUERY_ALLOCATED, Vec::new(), 4).status,
        NtStatus::BUFFER_TOO_SMALL
    );
    // The range query: length 0, past the end, overflow, too small an output.
    for (off, len) in [(0, 0), (0, size + 1), (size, 1), (1, u64::MAX)] {
        let c = ioctl(&h, IOCTL_RAMDISK_QUERY_RANGES, range(off, len), 240);
        assert_eq!(c.status, NtStatus::INVALID_PARAMETER, "ranges {off} {len}");
    }
    let c = ioctl(
        &h,
        IOCTL_RAMDISK_QUERY_RANGES,
        range(0, size),
        EXTENT_SIZE - 1,
    );
    assert_eq!(c.status, NtStatus::BUFFER_TOO_SMALL);
    // Unaligned queries are fine: it is a byte range.
    let c = ioctl(&h, IOCTL_RAMDISK_QUERY_RANGES, range(3, 5), EXTENT_SIZE);
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert_eq!(
        Extent::parse_all(&c.data),
        vec![Extent {
            offset: 3,
            length: 5,
            allocated: false
        }]
    );
    assert_eq!(
        ioctl(&h, 0x0007_FFFC, Vec::new(), 64).status,
        NtStatus::INVALID_DEVICE_REQUEST
    );

    // Nothing was written, and the device still works.
    assert_eq!(dev.allocated_bytes(), 0);
    write_ok(&h, size - 512, vec![3; 512]);
    assert_eq!(read_ok(&h, size - 512, 512), vec![3; 512]);
    assert_no_violations();
}

#[test]
fn bad_sizes_and_backing_files_are_refused() {
    let dir = TempDir::new("rd-sizes");
    let kernel = kernel();
    let driver = driver(&kernel);
    for size in [0, 1000, 511] {
        assert_eq!(
            ramdisk::create(&driver, "rd-size", RamdiskConfig::new(size)).unwrap_err(),
            NtStatus::INVALID_PARAMETER,
            "size {size}"
        );
    }
    let odd = dir.path().join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let config = RamdiskConfig::new(0).with_backing_file(&odd);
    assert_eq!(
        ramdisk::create(&driver, "rd-size", config).unwrap_err(),
        NtStatus::INVALID_PARAMETER
    );
    let long = dir.path().join("long.img");
    std::fs::write(&long, vec![0u8; 8192]).unwrap();
    let config = RamdiskConfig::new(4096).with_backing_file(&long);
    assert_eq!(
        ramdisk::create(&driver, "rd-size", config).unwrap_err(),
        NtStatus::INVALID_PARAMETER
    );
    // None of the failures left the name taken.
    make(&driver, "rd-size", RamdiskConfig::new(4096));
    assert_eq!(
        ramdisk::create(&driver, "rd-size", RamdiskConfig::new(4096)).unwrap_err(),
        NtStatus::OBJECT_NAME_COLLISION
    );
}
