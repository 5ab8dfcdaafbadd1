//! `wdfkit`: explain KMDF synchronization configurations, run workloads, and show what happened.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wdfkit::config::{self, Amount};
use wdfkit::run::{RunError, RunOptions};
use wdfkit::{bench, chart, demo, explain, list, matrix, run, serve, trace};

const EXIT_HELP: &str = "\
Exit codes: 0 success; 1 the framework rejects the configuration (or a run failed);
2 bad input (unreadable or invalid configuration file, bad arguments, unwritable output).";

/// The KMDF I/O model in user space: sync scopes, execution levels, queues and what they cost.
///
/// Configuration files (for explain, run and matrix) describe a driver, its devices, queues,
/// timers, DPCs and work items, and a workload; see scenarios/ and `wdfkit list`.
#[derive(Debug, Parser)]
#[command(name = "wdfkit", version, about, long_about, after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The articles' story on an embedded default: the statistics driver, six ways.
    ///
    /// Runs the sample statistics driver without a lock, with Device scope, Queue scope, a spin
    /// lock and a passive Device scope (also with requests sent at DISPATCH_LEVEL). Prints one table (throughput, p99 latency, time at DISPATCH_LEVEL, callbacks at once,
    /// deferrals, lost updates) and writes throughput.svg, timeline.svg and results.json.
    #[command(after_help = EXIT_HELP)]
    Demo {
        /// Folder for the chart, the timeline and results.json.
        #[arg(long, value_name = "DIR", default_value = "wdfkit-demo-out")]
        out: PathBuf,
        /// Client threads sending requests.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: u16,
        /// How long each variant runs, in milliseconds.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
        duration_ms: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resolve a configuration exactly as the framework would.
    ///
    /// Prints per object its execution level, scope, lock (flavour and owner) and callback IRQL;
    /// the serialization domains (callbacks that never overlap); the WDF status of every
    /// creation call that fails (exit code 1); and advice from the articles.
    #[command(after_help = EXIT_HELP)]
    Explain {
        /// The configuration file (TOML).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a configuration with the framework and run its workload.
    ///
    /// Requests go through the I/O manager with the verifier on. Reports throughput, latency,
    /// callbacks running at once per device and object, IRQLs, deferrals, time at
    /// DISPATCH_LEVEL, watchdog findings, verifier violations and lost updates.
    #[command(after_help = EXIT_HELP)]
    Run {
        /// The configuration file (TOML).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Write a Chrome Trace Event file (open in Perfetto or chrome://tracing).
        #[arg(long, value_name = "OUT.json")]
        trace: Option<PathBuf>,
        /// Write an SVG timeline: one row per thread, one bar per callback, colour per lock.
        #[arg(long, value_name = "OUT.svg")]
        timeline: Option<PathBuf>,
        /// Override workload.threads.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: Option<u16>,
        /// Override the run length: milliseconds.
        #[arg(long, conflicts_with = "requests")]
        duration_ms: Option<u64>,
        /// Override the run length: total requests.
        #[arg(long)]
        requests: Option<u64>,
    },
    /// Run the workload across sync scope x execution level x dispatch type.
    ///
    /// The combination is applied to every device (scope, level) and queue (dispatch type);
    /// combinations the framework refuses are listed with their status, not run.
    #[command(after_help = EXIT_HELP)]
    Matrix {
        /// The configuration file (TOML).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Write an SVG bar chart of throughput per combination.
        #[arg(long, value_name = "OUT.svg")]
        chart: Option<PathBuf>,
        /// Run length of each combination: milliseconds (default: the workload's, at most 500).
        #[arg(long, conflicts_with = "requests")]
        duration_ms: Option<u64>,
        /// Run length of each combination: total requests.
        #[arg(long)]
        requests: Option<u64>,
    },
    /// List the sample drivers and the scenario files.
    #[command(after_help = EXIT_HELP)]
    List {
        /// The scenario folder (default: ./scenarios, else the repository's).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Nanoseconds per request round trip through wdfkit next to baselines.
    ///
    /// Baselines: direct call, std Mutex, crossbeam worker thread; min and median over
    /// repetitions.
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
        /// Measure memory instead: resident bytes per queued request with 100,000 requests
        /// waiting in a queue, and whether it returns after they drain.
        #[arg(long)]
        memory: bool,
        /// Only the cases whose name contains this text (e.g. `inline`, `baseline`).
        #[arg(long)]
        case: Option<String>,
    },
    /// List the verifier rules (kernel and framework) with their codes.
    Rules,
    /// A long randomized run of everything at once, then an audit (exit 1 if it fails).
    ///
    /// Six devices (scope None/Queue/Device x level Passive/Dispatch), each with a sequential,
    /// a parallel, a limited parallel and a manual queue and a timer; client threads send I/O
    /// and cancel some of it; the driver completes, fails, holds, marks cancelable, forwards,
    /// requeues or panics; a control thread stops, purges, drains and restarts queues. Then:
    /// every request completed exactly once with an allowed status, every queue's books balance,
    /// no object survives unload, resident memory stayed flat, the verifier saw only the
    /// injected panics.
    #[command(after_help = EXIT_HELP)]
    Soak {
        /// How long the load runs, in minutes (default 1).
        #[arg(long, conflicts_with = "seconds", value_parser = clap::value_parser!(u64).range(1..=1440))]
        minutes: Option<u64>,
        /// How long the load runs, in seconds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        seconds: Option<u64>,
        /// Seeds every random choice; the same seed replays the same operations.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Client threads.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        clients: u16,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve a RAM disk over NBD (Unix socket or TCP, loopback by default) until SIGINT/SIGTERM.
    ///
    /// With --trace or --timeline, every callback of the disk's queues is observed while it
    /// serves; when it stops it prints a summary (callbacks per queue, most at once, IRQLs, time
    /// at DISPATCH_LEVEL) and writes the files.
    ServeNbd(ServeNbdArgs),
}

/// `wdfkit serve-nbd`: the server's options plus what to record.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("observe").args(["trace", "timeline"]).multiple(true)))]
struct ServeNbdArgs {
    #[command(flatten)]
    serve: nbd::cli::ServeArgs,
    /// When the server stops, write a Chrome Trace Event file of the callbacks it ran (open in
    /// Perfetto or chrome://tracing).
    #[arg(long, value_name = "OUT.json")]
    trace: Option<PathBuf>,
    /// When the server stops, write an SVG timeline: one row per thread, one bar per callback,
    /// colour per lock.
    #[arg(long, value_name = "OUT.svg")]
    timeline: Option<PathBuf>,
    /// The most callbacks kept for --trace and --timeline; later ones are only counted
    /// (the summary says how many were dropped).
    #[arg(long, value_name = "N", default_value_t = serve::DEFAULT_MAX_SPANS, requires = "observe")]
    max_spans: usize,
}

/// A failure and its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn input(message: impl std::fmt::Display) -> Failure {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }

    fn failed(message: impl std::fmt::Display) -> Failure {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(value).map_err(Failure::failed)?;
    println!("{s}");
    Ok(())
}

fn load(file: &Path) -> Result<config::Config, Failure> {
    config::load(file).map_err(Failure::input)
}

fn amount(duration_ms: Option<u64>, requests: Option<u64>) -> Result<Option<Amount>, Failure> {
    match (duration_ms, requests) {
        (Some(0), _) | (_, Some(0)) => Err(Failure::input(
            "--duration-ms and --requests must be greater than 0",
        )),
        (Some(ms), _) => Ok(Some(Amount::Duration(Duration::from_millis(ms)))),
        (None, Some(n)) => Ok(Some(Amount::Requests(n))),
        (None, None) => Ok(None),
    }
}

fn cmd_explain(file: &Path, as_json: bool) -> Result<ExitCode, Failure> {
    let c = load(file)?;
    let e = explain::explain(&c);
    if as_json {
        json(&e)?;
    } else {
        print!(
            "{}",
            explain::render(&file.display().to_string(), c.description.as_deref(), &e)
        );
    }
    Ok(if e.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cmd_run(
    file: &Path,
    as_json: bool,
    trace_out: Option<PathBuf>,
    timeline_out: Option<PathBuf>,
    options: RunOptions,
) -> Result<ExitCode, Failure> {
    let c = load(file)?;
    let e = explain::explain(&c);
    if !e.ok {
        if as_json {
            json(&e)?;
        } else {
            eprint!(
                "{}",
                explain::render(&file.display().to_string(), c.description.as_deref(), &e)
            );
        }
        return Err(Failure::failed(format!(
            "{}: the framework rejects this configuration; nothing was run",
            file.display()
        )));
    }
    let outcome = run::run(&c, &e, &options).map_err(|err| match err {
        RunError::Rejected(_) | RunError::Failed(_) => Failure::failed(err),
    })?;
    let title = file.display().to_string();
    if let Some(p) = &trace_out {
        trace::write(p, &outcome.recording, &title)
            .map_err(|err| Failure::input(format!("cannot write {}: {err}", p.display())))?;
    }
    if let Some(p) = &timeline_out {
        chart::timeline(
            p,
            &[chart::Panel {
                title: title.clone(),
                recording: &outcome.recording,
            }],
            150,
        )
        .map_err(|err| Failure::input(format!("cannot write {}: {err}", p.display())))?;
    }
    if as_json {
        json(&outcome.report)?;
    } else {
        print!("{}", run::render(&title, &outcome.report));
        for (what, p) in [("trace", &trace_out), ("timeline", &timeline_out)] {
            if let Some(p) = p {
                println!("  wrote {what} {}", p.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_matrix(
    file: &Path,
    as_json: bool,
    chart_out: Option<PathBuf>,
    amount: Option<Amount>,
) -> Result<ExitCode, Failure> {
    let c = load(file)?;
    let amount = amount.or_else(|| match c.workload.amount() {
        Amount::Duration(d) => Some(Amount::Duration(d.min(Duration::from_millis(500)))),
        a => Some(a),
    });
    let options = RunOptions {
        amount,
        ..RunOptions::default()
    };
    let m = matrix::matrix(&file.display().to_string(), &c, &options, !as_json)
        .map_err(Failure::failed)?;
    if let Some(p) = &chart_out {
        let bars: Vec<(String, f64)> = m
            .rows
            .iter()
            .filter_map(|r| r.result.as_ref().map(|x| (r.label(), x.throughput_rps)))
            .collect();
        chart::bar_chart(
            p,
            &format!("{}: requests/s per scope/level/dispatch", file.display()),
            "requests/s",
            &bars,
        )
        .map_err(|err| Failure::input(format!("cannot write {}: {err}", p.display())))?;
    }
    if as_json {
        json(&m)?;
    } else {
        print!("{}", matrix::render(&m));
        if let Some(p) = &chart_out {
            println!("wrote {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_serve_nbd(args: ServeNbdArgs) -> Result<ExitCode, Failure> {
    let ServeNbdArgs {
        serve: args,
        trace,
        timeline,
        max_spans,
    } = args;
    if trace.is_none() && timeline.is_none() {
        // Nothing observes the run.
        return Ok(nbd::cli::run(args));
    }
    for p in [&trace, &timeline].into_iter().flatten() {
        if !serve::parent_exists(p) {
            return Err(Failure::input(format!(
                "cannot write {}: its folder does not exist",
                p.display()
            )));
        }
    }
    let title = format!("serve-nbd {}", args.export_name);
    let mut hooks = serve::Observation::new(title, trace, timeline, max_spans);
    Ok(nbd::cli::run_with(args, &mut hooks))
}

fn dispatch(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::ServeNbd(args) => cmd_serve_nbd(args),
        Command::Demo {
            out,
            threads,
            duration_ms,
            json: as_json,
        } => {
            std::fs::create_dir_all(&out)
                .map_err(|e| Failure::input(format!("cannot create {}: {e}", out.display())))?;
            let opts = demo::DemoOptions {
                out,
                threads: threads as usize,
                duration: Duration::from_millis(duration_ms),
                progress: !as_json,
            };
            let report = demo::run(&opts).map_err(Failure::failed)?;
            if as_json {
                json(&report)?;
            } else {
                print!("{}", demo::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { file, json } => cmd_explain(&file, json),
        Command::Run {
            file,
            json,
            trace,
            timeline,
            threads,
            duration_ms,
            requests,
        } => {
            let options = RunOptions {
                keep_spans: trace.is_some() || timeline.is_some(),
                progress: !json,
                threads: threads.map(usize::from),
                amount: amount(duration_ms, requests)?,
            };
            cmd_run(&file, json, trace, timeline, options)
        }
        Command::Matrix {
            file,
            json,
            chart,
            duration_ms,
            requests,
        } => cmd_matrix(&file, json, chart, amount(duration_ms, requests)?),
        Command::List { dir, json: as_json } => {
            let dir = dir.unwrap_or_else(list::default_dir);
            let l = list::list(&dir)
                .map_err(|e| Failure::input(format!("cannot read {}: {e}", dir.display())))?;
            if as_json {
                json(&l)?;
            } else {
                print!("{}", list::render(&l));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            quick,
            json,
            scaling,
            memory,
            case,
        } => match bench::report(&bench::Options {
            quick,
            json,
            scaling,
            memory,
            case,
        }) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => Err(Failure::failed(format!("bench: {e}"))),
        },
        Command::Soak {
            minutes,
            seconds,
            seed,
            clients,
            json: as_json,
        } => {
            let duration = match (minutes, seconds) {
                (_, Some(s)) => Duration::from_secs(s),
                (Some(m), None) => Duration::from_secs(m * 60),
                (None, None) => Duration::from_secs(60),
            };
            let options = wdfkit::soak::SoakOptions {
                duration,
                seed,
                clients: usize::from(clients),
                progress: !as_json,
            };
            let report = wdfkit::soak::run(&options).map_err(Failure::failed)?;
            if as_json {
                json(&report)?;
            } else {
                print!("{}", wdfkit::soak::render(&report));
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
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
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("wdfkit: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
