//! Acquire + release cost of nt's locks, uncontended with the verifier off and on, and
//! contended by two threads (a handoff of the lock between processors on every acquisition),
//! against `std::sync::Mutex` and `parking_lot::Mutex`.
//!
//! Run: `cargo bench -p nt --bench locks -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use nt::sync::{PassiveMutex, RawLock, RawPassiveMutex, RawSpinLock, SpinLock};
use nt::verifier::{self, Mode};

fn bench_all(g: &mut BenchmarkGroup<'_, WallTime>) {
    let spin = SpinLock::named("bench spin", 0u64);
    g.bench_function("nt::SpinLock", |b| {
        b.iter(|| {
            let mut guard = spin.lock();
            *guard = black_box(*guard + 1);
        })
    });

    let mutex = PassiveMutex::named("bench mutex", 0u64);
    g.bench_function("nt::PassiveMutex", |b| {
        b.iter(|| {
            let mut guard = mutex.lock();
            *guard = black_box(*guard + 1);
        })
    });

    let raw_spin = RawSpinLock::new("bench raw spin");
    g.bench_function("nt::RawSpinLock", |b| {
        b.iter(|| {
            black_box(&raw_spin).acquire();
            black_box(&raw_spin).release();
        })
    });

    let raw_mutex = RawPassiveMutex::new("bench raw mutex");
    g.bench_function("nt::RawPassiveMutex", |b| {
        b.iter(|| {
            black_box(&raw_mutex).acquire();
            black_box(&raw_mutex).release();
        })
    });

    let std_mutex = std::sync::Mutex::new(0u64);
    g.bench_function("std::sync::Mutex", |b| {
        b.iter(|| {
            let mut guard = std_mutex.lock().unwrap();
            *guard = black_box(*guard + 1);
        })
    });

    let pl_mutex = parking_lot::Mutex::new(0u64);
    g.bench_function("parking_lot::Mutex", |b| {
        b.iter(|| {
            let mut guard = pl_mutex.lock();
            *guard = black_box(*guard + 1);
        })
    });
}

/// `iters` acquisitions in all, half on each of two threads that hammer one lock, each
/// holding it for one read-modify-write of the protected counter: the wall time.
fn two_threads(iters: u64, op: impl Fn() + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..iters / 2 {
                    op();
                }
            });
        }
    });
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    verifier::disable();
    let mut g = c.benchmark_group("contended_2_threads");
    let spin = SpinLock::named("bench spin", 0u64);
    g.bench_function("nt::SpinLock", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let mut guard = spin.lock();
                *guard = black_box(*guard + 1);
            })
        })
    });
    let std_mutex = std::sync::Mutex::new(0u64);
    g.bench_function("std::sync::Mutex", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let mut guard = std_mutex.lock().unwrap();
                *guard = black_box(*guard + 1);
            })
        })
    });
    let pl_mutex = parking_lot::Mutex::new(0u64);
    g.bench_function("parking_lot::Mutex", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let mut guard = pl_mutex.lock();
                *guard = black_box(*guard + 1);
            })
        })
    });
    g.finish();
}

fn locks(c: &mut Criterion) {
    verifier::disable();
    let mut g = c.benchmark_group("uncontended/verifier_off");
    bench_all(&mut g);
    g.finish();

    // The verifier on, timed with the real clock: every acquire and release reads it (hold-time
    // statistics, the DISPATCH_LEVEL stretch watchdog) and updates the held-locks list.
    verifier::reset();
    verifier::enable(Mode::Record);
    let mut g = c.benchmark_group("uncontended/verifier_on");
    bench_all(&mut g);
    g.finish();
    verifier::disable();
    let violations = verifier::counts();
    assert!(
        violations
            .iter()
            .all(|(r, _)| r.name == "DPC_WATCHDOG_SINGLE"),
        "unexpected violations while benchmarking: {violations:?}"
    );
}

criterion_group!(benches, locks, contended);
criterion_main!(benches);
