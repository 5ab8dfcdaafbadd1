//! Thread identity as the kernel sees it: a cheap numeric id, the simulated processor a thread
//! belongs to (DPC processors only), and the locks it holds (tracked while the verifier is on).
//!
//! Equivalent to: `KeGetCurrentThread`, `KeGetCurrentProcessorNumber`.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static ID: Cell<u64> = const { Cell::new(0) };
    static PROCESSOR: Cell<Option<usize>> = const { Cell::new(None) };
    static HELD: RefCell<Vec<(&'static str, usize)>> = const { RefCell::new(Vec::new()) };
}

/// A non-zero id for the calling thread, unique for the process's lifetime.
///
/// ```
/// let a = nt::thread::current_id();
/// let b = std::thread::spawn(nt::thread::current_id).join().unwrap();
/// assert_ne!(a, b);
/// assert_eq!(a, nt::thread::current_id());
/// ```
#[inline]
pub fn current_id() -> u64 {
    ID.with(|id| {
        let v = id.get();
        if v != 0 {
            v
        } else {
            let v = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            id.set(v);
            v
        }
    })
}

/// The simulated processor the calling thread is a DPC processor for, if any.
pub fn current_processor() -> Option<usize> {
    PROCESSOR.with(Cell::get)
}

pub(crate) fn set_processor(index: usize) {
    PROCESSOR.with(|p| p.set(Some(index)));
}

/// Names of the locks the calling thread holds, innermost last (tracked while the verifier is on).
pub fn locks_held() -> Vec<&'static str> {
    HELD.with(|h| h.borrow().iter().map(|(n, _)| *n).collect())
}

/// How many locks the calling thread holds (tracked while the verifier is on).
pub fn locks_held_count() -> usize {
    HELD.with(|h| h.borrow().len())
}

pub(crate) fn note_acquired(name: &'static str, addr: usize) {
    HELD.with(|h| h.borrow_mut().push((name, addr)));
}

pub(crate) fn note_released(addr: usize) {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        if let Some(pos) = h.iter().rposition(|(_, a)| *a == addr) {
            h.remove(pos);
        }
    });
}
