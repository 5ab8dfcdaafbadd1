//! `wdfkit`: explain KMDF synchronization configurations, run workloads, and show what happened.
#![forbid(unsafe_code)]

use wdfkit::{bench, demo};

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
    /// Nanoseconds per request round trip through wdfkit next to baselines (direct call,
    /// std Mutex, crossbeam worker thread), min and median over repetitions.
    Bench {
        /// Fewer requests and repetitions (a smoke run).
        #[arg(long)]
        quick: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the scaling table: parallel queue with 1 and 2 client threads, scope None and
        /// Device scope.
        #[arg(long)]
        scaling: bool,
    },
    /// List the verifier rules (kernel and framework) with their codes.
    Rules,
    /// Serve a RAM disk over NBD (Unix socket or TCP, loopback by default) until SIGINT/SIGTERM.
    ServeNbd(nbd::cli::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ServeNbd(args) => nbd::cli::run(args),
        Command::Demo { threads, requests } => match demo::run(threads, requests) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wdfkit demo: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            quick,
            json,
            scaling,
        } => match run_bench(quick, json, scaling) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wdfkit bench: {e}");
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

fn run_bench(quick: bool, json: bool, scaling: bool) -> Result<(), nt::NtStatus> {
    let (n, reps) = if quick { (20_000, 3) } else { (200_000, 7) };
    let cases: &[bench::Case] = if scaling {
        &bench::Case::SCALING
    } else {
        &bench::Case::MAIN
    };
    let mut rows = Vec::new();
    for &case in cases {
        let n = if case == bench::Case::BaselineCrossbeamWorker {
            n / 4
        } else {
            n
        };
        rows.push((case, bench::summarize(case, n, reps)?));
    }
    let mutex = if scaling {
        None
    } else {
        rows.iter()
            .find(|(c, _)| *c == bench::Case::BaselineMutex)
            .map(|(_, s)| s.median)
    };
    if json {
        let results: Vec<String> = rows
            .iter()
            .map(|(c, s)| {
                format!(
                    "{{\"name\":\"{}\",\"ns_per_request\":{{\"min\":{:.1},\"median\":{:.1}}},\"ratio_to_mutex\":{}}}",
                    c.name(),
                    s.min,
                    s.median,
                    mutex.map_or("null".to_string(), |m| format!("{:.2}", s.median / m))
                )
            })
            .collect();
        println!("{{\"results\":[{}]}}", results.join(","));
        return Ok(());
    }
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "case", "min ns", "median ns", "x mutex"
    );
    for (c, s) in &rows {
        let ratio = mutex.map_or(String::from("-"), |m| format!("{:.1}", s.median / m));
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>10}",
            c.name(),
            s.min,
            s.median,
            ratio
        );
    }
    if scaling {
        let get = |c: bench::Case| rows.iter().find(|(x, _)| *x == c).map(|(_, s)| s.median);
        if let (Some(p1), Some(p2), Some(d1), Some(d2)) = (
            get(bench::Case::Parallel1),
            get(bench::Case::Parallel2),
            get(bench::Case::DeviceParallel1),
            get(bench::Case::DeviceParallel2),
        ) {
            println!();
            println!(
                "throughput, 2 threads / 1 thread: scope None {:.2}x, Device scope {:.2}x",
                p1 / p2,
                d1 / d2
            );
        }
    }
    Ok(())
}
