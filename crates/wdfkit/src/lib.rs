//! The `wdfkit` command line's library. The binary (`src/main.rs`) parses arguments and prints;
//! everything it reports is computed here:
//!
//! * [`config`]: the configuration file (schema, loading, checks with file/line errors);
//! * [`explain`]: resolution through `wdf::sync::constraints`, domains, rejections, advice;
//! * [`build`]: the configuration's objects created with `wdf`;
//! * [`run`]: the workload through `nt`'s I/O manager, measured;
//! * [`observe`]: the callback observer behind `run`'s measurements;
//! * [`trace`], [`chart`]: Chrome traces and SVG charts;
//! * [`matrix`], [`demo`], [`list`]: the other commands;
//! * [`mod@bench`]: the benchmark harness;
//! * [`soak`]: the soak test (a randomized run of everything at once, then an audit);
//! * [`serve`]: the observer around `serve-nbd` (`--trace`, `--timeline`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod build;
pub mod chart;
pub mod config;
pub mod demo;
pub mod explain;
pub mod list;
pub mod matrix;
pub mod observe;
pub mod progress;
pub mod run;
pub mod serve;
pub mod soak;
pub mod trace;
