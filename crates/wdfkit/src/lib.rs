//! The `wdfkit` command line's library: the demo, the benchmark harness and (later) the
//! configuration, run and report machinery. The binary is `src/main.rs`.
#![forbid(unsafe_code)]

pub mod bench;
pub mod demo;
