//! `nbd-serve`: the `wdfkit serve-nbd` command as a binary of this crate.
//!
//! It takes the same options and runs the same code ([`nbd::cli::run`]). It exists so that the
//! crate's integration tests can start a real server process (`env!("CARGO_BIN_EXE_nbd-serve")`,
//! which Cargo builds before the tests) and kill it with SIGKILL.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Serve a RAM disk over NBD until SIGINT/SIGTERM (same as `wdfkit serve-nbd`).
#[derive(Debug, Parser)]
#[command(name = "nbd-serve", version, about)]
struct Cli {
    #[command(flatten)]
    serve: nbd::cli::ServeArgs,
}

fn main() -> ExitCode {
    nbd::cli::run(Cli::parse().serve)
}
