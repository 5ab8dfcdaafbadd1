//! `wdfkit`: explain KMDF synchronization configurations, run workloads, and show what happened.
#![forbid(unsafe_code)]

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The KMDF I/O model in user space: sync scopes, execution levels, queues and what they cost.
#[derive(Debug, Parser)]
#[command(name = "wdfkit", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tell the articles' story on an embedded default: the statistics block updated from
    /// parallel EvtIoRead callbacks with no lock, with Sync Scope Device, and with a spin lock.
    Demo {
        /// Client threads issuing reads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Reads per client thread.
        #[arg(long, default_value_t = 50_000)]
        requests: u64,
    },
    /// List the verifier rules (kernel and framework) with their codes.
    Rules,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { threads, requests } => match demo::run(threads, requests) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wdfkit demo: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Rules => {
            println!("{:<42} {:>6}  description", "rule", "code");
            for r in nt::verifier::rules::ALL
                .iter()
                .chain(wdf::verifier::rules::ALL.iter())
            {
                println!(
                    "{:<42} 0x{:03X}  {}{}",
                    r.name,
                    r.code,
                    r.description,
                    if r.fatal { " (fatal)" } else { "" }
                );
            }
            ExitCode::SUCCESS
        }
    }
}
