//! The parallel fast path: presenting and completing without the queue's object lock.
//!
//! A parallel queue with no presentation limit and no `EvtIoStop` has nothing to decide per
//! request while it is started, accepting, powered on and has nothing queued or waiting to be
//! notified: every arrival is presented at once. In that state ([`Queue::fast`] is true) the
//! arriving thread presents the request without taking the object lock, and counts it in its own
//! cache-padded shard instead of the shared `driver_io_count` and `dispatching` counters, so two
//! client threads never write the same cache line. The counts the loop's decisions need
//! ("nothing driver-owned", "alone in the loop") are the lock-protected counters plus the sum of
//! the shards.
//!
//! Correctness rests on two Dekker-style handshakes, both with sequentially consistent
//! operations:
//!
//! * a fast presenter increments its shard, *then* reads `fast`; a thread that makes the state
//!   non-fast stores `fast = false` (under the object lock), *then* reads the shards. One of the
//!   two sees the other: either the presenter falls back to the locked path, or the state change
//!   sees the request as driver-owned and in the loop;
//! * a fast presenter (or completer) decrements its shard, *then* reads `fast`; if it is false
//!   it runs a guarded pass of the loop, so work that appeared while it was inside (a cancel, a
//!   stop) is never stranded.

use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use super::{DispatchType, QueueState};

/// Number of shards; client threads map onto them by thread id.
pub(crate) const SHARDS: usize = 16;

/// One thread group's counters.
#[derive(Default)]
pub(crate) struct Shard {
    /// Driver-owned requests presented through this shard, not yet completed.
    pub(crate) owned: AtomicIsize,
    /// Fast presenters of this shard inside the loop.
    pub(crate) looping: AtomicIsize,
    pub(crate) arrived: AtomicU64,
    pub(crate) presented: AtomicU64,
    pub(crate) completed: AtomicU64,
}

/// The per-queue shards.
pub(crate) struct Shards {
    shards: Box<[CachePadded<Shard>]>,
}

impl Shards {
    pub(crate) fn new() -> Self {
        Shards {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Shard::default()))
                .collect(),
        }
    }

    /// The calling thread's shard index.
    #[inline]
    pub(crate) fn mine() -> u8 {
        (nt::thread::current_id() % SHARDS as u64) as u8
    }

    #[inline]
    pub(crate) fn get(&self, i: u8) -> &Shard {
        &self.shards[i as usize]
    }

    /// Driver-owned requests counted in shards.
    pub(crate) fn owned(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.owned.load(Ordering::SeqCst))
            .sum::<isize>()
            .max(0) as usize
    }

    /// Fast presenters inside the loop.
    pub(crate) fn looping(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.looping.load(Ordering::SeqCst))
            .sum::<isize>()
            .max(0) as usize
    }

    pub(crate) fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }
}

impl super::Queue {
    /// Whether this queue's configuration can ever use the fast path.
    pub(crate) fn fast_eligible(&self) -> bool {
        self.config.dispatch_type == DispatchType::Parallel
            && self.config.parallel_limit.is_none()
            && !self.tracks_owned()
    }

    /// Driver-owned requests, locked and sharded.
    pub(crate) fn owned_total(&self, st: &QueueState) -> usize {
        if self.fast_eligible() {
            st.driver_io_count + self.shards.owned()
        } else {
            st.driver_io_count
        }
    }

    /// Threads in the loop, locked and sharded.
    pub(crate) fn looping_total(&self, st: &QueueState) -> usize {
        if self.fast_eligible() {
            st.dispatching + self.shards.looping()
        } else {
            st.dispatching
        }
    }

    /// Recomputes the fast flag from the state; called with the object lock held after every
    /// change to the state. Turning it off happens before the lock is released, so no fast
    /// presenter can act on a state that has stopped being fast.
    pub(crate) fn update_fast(&self, st: &QueueState) {
        let fast = self.fast_eligible()
            && st.accepting
            && st.dispatching_enabled
            && !st.purging
            && st.power.is_on()
            && !st.power.notifying()
            && st.pending.is_empty()
            && st.cancelled.is_empty()
            && st.canceled_on_queue.is_empty()
            && st.stop_complete.is_none()
            && st.purge_complete.is_none();
        if self.fast.load(Ordering::Relaxed) != fast {
            self.fast.store(fast, Ordering::SeqCst);
        }
    }
}
