//! Helpers shared by the integration tests. Each test binary uses only some of them.
#![allow(dead_code)]

use std::sync::Arc;

use nt::ManualClock;
use nt::verifier::{self, Mode};

/// Resets the verifier's counts, times it with a fresh manual clock (so no real duration can
/// trip the DPC watchdog) and turns it on in record mode. Returns the clock.
pub fn verifier_record() -> Arc<ManualClock> {
    verifier::reset();
    let clock = Arc::new(ManualClock::new());
    verifier::set_clock(clock.clone());
    verifier::enable(Mode::Record);
    clock
}

/// Runs `f` on a fresh thread (which starts at PASSIVE_LEVEL with no callback frame) and returns
/// its result; used by tests that deliberately leave a thread's IRQL in a broken state.
pub fn on_fresh_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().expect("test thread panicked")
}

/// The text of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        String::from("<non-string panic>")
    }
}
