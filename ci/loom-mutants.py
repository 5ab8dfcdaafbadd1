#!/usr/bin/env python3
"""Mutation check of the loom models: seeds one known bug at a time into
crates/wdf/tests/loom_protocols.rs, runs the test that should catch it, and restores the file.
Exit status 1 if any mutant survives. Usage: python3 ci/loom-mutants.py (LOOM_MAX_PREEMPTIONS,
default 4, as ci/loom.sh). Each mutant is a change the real code could plausibly suffer.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "crates", "wdf", "tests", "loom_protocols.rs")

MUTANTS = [
 ("callback_lock_admits_one_holder","relaxed acquire/release",
  [(".compare_exchange_weak(0, mine, Ordering::Acquire, Ordering::Relaxed)",".compare_exchange_weak(0, mine, Ordering::Relaxed, Ordering::Relaxed)"),
   (".compare_exchange(0, me << 8, Ordering::Acquire, Ordering::Relaxed)",".compare_exchange(0, me << 8, Ordering::Relaxed, Ordering::Relaxed)"),
   ("self.word.store(0, Ordering::Release);","self.word.store(0, Ordering::Relaxed);")]),
 ("request_completed_exactly_once_under_complete_cancel_purge","cancel_pending: find and remove under two lock holds",
  [("""            let Some(pos) = st.pending.iter().position(|r| r.id == id) else {
                return;
            };
            Some(st.pending.remove(pos).expect("position is in range"))""","""            let Some(pos) = st.pending.iter().position(|r| r.id == id) else {
                return;
            };
            drop(st);
            let mut st = self.state.lock().unwrap();
            Some(st.pending.remove(pos).expect("position is in range"))""")]),
 ("request_completed_exactly_once_under_complete_cancel_purge","irp cancel: cancelled flag set outside the routine lock",
  [("""            let mut r = self.cancel_routine.lock().unwrap();
            self.cancelled.store(true, Ordering::Release);
            r.take()""","""            let r = self.cancel_routine.lock().unwrap().take();
            self.cancelled.store(true, Ordering::Release);
            r""")]),
 ("request_completed_exactly_once_under_complete_cancel_purge","cancel_pending without its pass (the soak's bug)",
  [("""        if let Some(r) = req {
            r.complete_internal(Status::Cancelled);
        }
        self.dispatch_events(Event::Internal);""","""        if let Some(r) = req {
            r.complete_internal(Status::Cancelled);
        }""")]),
 ("cancelable_request_unmark_vs_cancel_exactly_one_owner","cancel_driver_owned runs no pass",
  [("""            st.cancelled.push_back(entry);
            self.update_fast(&st);
        }
        self.dispatch_events(Event::Internal);""","""            st.cancelled.push_back(entry);
            self.update_fast(&st);
        }""")]),
 ("cancelable_request_unmark_vs_cancel_exactly_one_owner","mark_cancelable ignores a purge in progress",
  [("let installed = !st.purging\n","let installed = true\n")]),
 ("sequential_queue_never_two_driver_owned","sequential limit off by one",
  [("self.dispatch_type == DispatchType::Sequential && self.owned_total(&st) > 0","self.dispatch_type == DispatchType::Sequential && self.owned_total(&st) > 1")]),
 ("dispatch_loop_never_loses_a_wakeup","loop exit outside the lock hold of the last check",
  [("""        if let Some(n) = new.take() {
            self.insert_pending(&mut st, n, false);
        }
        st.dispatching -= 1;""","""        if let Some(n) = new.take() {
            self.insert_pending(&mut st, n, false);
        }
        drop(st);
        let mut st = self.state.lock().unwrap();
        st.dispatching -= 1;""")]),
 ("dispatch_loop_never_loses_a_wakeup","completion always defers to a looping thread, even after decrementing nothing",
  [("""            Event::Completed => {
                st.driver_io_count -= 1;
                if self.looping_total(&st) > 0 {""","""            Event::Completed => {
                st.driver_io_count -= 1;
                drop(st);
                st = self.state.lock().unwrap();
                if self.looping_total(&st) > 0 || true {""")]),
 ("fast_path_handshake_never_loses_a_wakeup","no back-out pass",
  [("""            // The back-out: run the guarded pass this thread was counted for.
            self.dispatch_events(Event::Internal);""","")]),
 ("fast_path_handshake_never_loses_a_wakeup","presenter reads fast before counting itself",
  [("""        sh.owned.fetch_add(1, Ordering::SeqCst);
        sh.looping.fetch_add(1, Ordering::SeqCst);
        sc();
        if !self.fast.load(Ordering::SeqCst) {""","""        let fast_now = self.fast.load(Ordering::SeqCst);
        sh.owned.fetch_add(1, Ordering::SeqCst);
        sh.looping.fetch_add(1, Ordering::SeqCst);
        sc();
        if !fast_now {""")]),
 ("fast_path_handshake_never_loses_a_wakeup","completer does not re-check fast",
  [("""                self.shards[s].owned.fetch_sub(1, Ordering::SeqCst);
                sc();
                if !self.fast.load(Ordering::SeqCst) {""","""                self.shards[s].owned.fetch_sub(1, Ordering::SeqCst);
                sc();
                if false {""")]),
 ("dpc_is_never_queued_twice","flag cleared after the routine",
  [("""        self.queued.swap(false, Ordering::Release);
        // The routine: a dispatch pass over everything queued.
        self.runs.fetch_add(1, Ordering::SeqCst);
        let taken = std::mem::take(&mut *self.work.lock().unwrap());""","""        // The routine: a dispatch pass over everything queued.
        self.runs.fetch_add(1, Ordering::SeqCst);
        let taken = std::mem::take(&mut *self.work.lock().unwrap());
        self.queued.swap(false, Ordering::Release);""")]),
 ("dpc_is_never_queued_twice","insert with load-then-store instead of swap",
  [("""        if self.queued.swap(true, Ordering::AcqRel) {
            return false;
        }""","""        if self.queued.load(Ordering::Acquire) {
            return false;
        }
        self.queued.store(true, Ordering::Release);""")]),
]


def run(test):
    env = dict(os.environ)
    env.setdefault("LOOM_MAX_PREEMPTIONS", "4")
    env["RUSTFLAGS"] = "--cfg loom"
    env["CARGO_TARGET_DIR"] = env.get("LOOM_TARGET_DIR", os.path.join(ROOT, "target", "loom"))
    r = subprocess.run(
        ["cargo", "test", "-q", "-p", "wdf", "--test", "loom_protocols", "--release", "--", "--exact", test],
        cwd=ROOT, env=env, capture_output=True, text=True)
    out = r.stdout + r.stderr
    if "error[" in out:
        return "COMPILE ERROR", out
    return ("CAUGHT" if "test result: FAILED" in out else "SURVIVED"), out


def main():
    good = open(PATH).read()
    survived = 0
    try:
        for test, name, reps in MUTANTS:
            s = good
            for a, b in reps:
                if a not in s:
                    print(f"STALE    {test} / {name}: the code to mutate is gone; update this script")
                    survived += 1
                    break
                s = s.replace(a, b, 1)
            else:
                with open(PATH, "w") as f:
                    f.write(s)
                verdict, out = run(test)
                why = next((l for l in out.splitlines() if l.startswith("assertion") or "panicked at" in l), "")
                print(f"{verdict:8} {test} / {name}" + (f": {why}" if verdict == "CAUGHT" else ""))
                if verdict != "CAUGHT":
                    survived += 1
    finally:
        with open(PATH, "w") as f:
            f.write(good)
    print(f"{len(MUTANTS) - survived} of {len(MUTANTS)} mutants caught")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
