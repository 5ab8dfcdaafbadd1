//! Request round trips through wdfkit (the paths `wdfkit bench` reports) and the baselines, for
//! `cargo bench`.
//!
//! Run: `cargo bench -p wdfkit --bench dispatch -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::Mutex;

use criterion::{Criterion, criterion_group, criterion_main};
use wdfkit::bench::{Case, PAYLOAD, Rig, round_trip};

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("round trip");
    for case in [
        Case::Inline,
        Case::DeviceSpin,
        Case::Queue,
        Case::Passive,
        Case::Parallel1,
    ] {
        let rig = Rig::new(case).expect("bench device");
        let h = rig.open().expect("open");
        g.bench_function(case.name(), |b| b.iter(|| black_box(round_trip(&h))));
    }
    {
        let rig = Rig::new(Case::Inline).expect("bench device");
        let h = rig.open().expect("open");
        nt::verifier::enable(nt::verifier::Mode::Record);
        g.bench_function(Case::Verifier.name(), |b| {
            b.iter(|| black_box(round_trip(&h)))
        });
        nt::verifier::disable();
    }
    g.bench_function(Case::BaselineDirect.name(), |b| {
        b.iter(|| {
            let data = black_box(vec![0x5au8; PAYLOAD]);
            black_box(data.len())
        })
    });
    let total = Mutex::new(0usize);
    g.bench_function(Case::BaselineMutex.name(), |b| {
        b.iter(|| {
            let data = black_box(vec![0x5au8; PAYLOAD]);
            let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
            *t += data.len();
        })
    });
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
