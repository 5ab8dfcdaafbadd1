//! Coverage-guided fuzzing of the configuration parser and `explain`: any input is either
//! refused with a clean error (a message and a position inside the file) or accepted, and then
//! explained, rendered and serialized. Any panic is a bug.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wdfkit::config::Config;
use wdfkit::explain;

fuzz_target!(|data: &[u8]| {
    // `wdfkit::config::load` refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("fuzz.toml"), text) {
        Ok(c) => {
            let e = explain::explain(&c);
            let _ = explain::render("fuzz.toml", c.description.as_deref(), &e);
            serde_json::to_string(&e).expect("an explanation serializes");
            let _ = c.workload.amount();
        }
        Err(err) => {
            assert!(!err.message.trim().is_empty());
            assert!(err.line <= text.split('\n').count());
            let _ = err.to_string();
        }
    }
});
