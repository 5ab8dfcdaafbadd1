//! `wdfkit matrix`: the same workload across sync scope × execution level × dispatch type.
//!
//! Each combination sets every device's `sync_scope` and `execution_level`, resets every
//! queue's to `inherit`, and gives every non-manual queue the dispatch type (dropping
//! `parallel_limit` when it is not parallel). DPCs, timers, work items and file objects are
//! kept as configured, so some combinations are refused by the framework: those are listed with
//! the status the creation call returns and not run. Manual queues keep their type (a manual
//! queue takes no handlers, so turning queues manual is always refused).

use serde::Serialize;

use crate::config::{Config, Dispatch, Level, Scope};
use crate::explain::{self, ObjectError};
use crate::progress;
use crate::run::{self, Deferrals, Latency, RunError, RunOptions};

/// The measured part of a row.
#[derive(Clone, Debug, Serialize)]
pub struct RowResult {
    /// Requests completed per second.
    pub throughput_rps: f64,
    /// Round-trip latency.
    pub latency_us: Latency,
    /// The most callbacks of one device seen running at once.
    pub max_concurrent_device: u64,
    /// Time inside callbacks at DISPATCH_LEVEL, µs.
    pub dispatch_time_us: f64,
    /// Deferred dispatch passes.
    pub deferrals: Deferrals,
    /// Lost statistics updates.
    pub lost_updates: u64,
    /// `stats = "scope"`: updates from callbacks holding no scope lock (not made).
    pub skipped_updates: u64,
    /// Verifier violations, all rules.
    pub verifier_violations: u64,
}

/// One combination.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The devices' scope.
    pub sync_scope: Scope,
    /// The devices' level.
    pub execution_level: Level,
    /// The queues' dispatch type.
    pub dispatch: Dispatch,
    /// Whether the framework accepts it.
    pub ok: bool,
    /// Why not.
    pub errors: Vec<ObjectError>,
    /// What the run measured (accepted combinations).
    pub result: Option<RowResult>,
}

impl Row {
    /// `scope/level/dispatch`.
    pub fn label(&self) -> String {
        format!(
            "{}/{}/{}",
            scope_str(self.sync_scope),
            level_str(self.execution_level),
            self.dispatch.name()
        )
    }
}

fn scope_str(s: Scope) -> &'static str {
    match s {
        Scope::Inherit => "inherit",
        Scope::None => "none",
        Scope::Device => "device",
        Scope::Queue => "queue",
    }
}

fn level_str(l: Level) -> &'static str {
    match l {
        Level::Inherit => "inherit",
        Level::Passive => "passive",
        Level::Dispatch => "dispatch",
    }
}

/// The whole matrix.
#[derive(Clone, Debug, Serialize)]
pub struct Matrix {
    /// The configuration file.
    pub file: String,
    /// Every combination, in order.
    pub rows: Vec<Row>,
}

/// `config` with one combination applied.
pub fn apply(config: &Config, scope: Scope, level: Level, dispatch: Dispatch) -> Config {
    let mut c = config.clone();
    for d in &mut c.device {
        d.sync_scope = scope;
        d.execution_level = level;
    }
    for q in &mut c.queue {
        q.sync_scope = Scope::Inherit;
        q.execution_level = Level::Inherit;
        if q.dispatch != Dispatch::Manual {
            q.dispatch = dispatch;
            if dispatch != Dispatch::Parallel {
                q.parallel_limit = None;
            }
        }
    }
    c
}

/// The combinations, in table order.
pub fn combinations() -> Vec<(Scope, Level, Dispatch)> {
    let mut v = Vec::new();
    for scope in [Scope::None, Scope::Queue, Scope::Device] {
        for level in [Level::Dispatch, Level::Passive] {
            for dispatch in [Dispatch::Sequential, Dispatch::Parallel] {
                v.push((scope, level, dispatch));
            }
        }
    }
    v
}

/// Runs every combination.
pub fn matrix(
    file: &str,
    config: &Config,
    options: &RunOptions,
    progress: bool,
) -> Result<Matrix, RunError> {
    let combos = combinations();
    let bar = progress::bar(combos.len() as u64, "combinations", progress);
    let mut rows = Vec::new();
    for (scope, level, dispatch) in combos {
        let c = apply(config, scope, level, dispatch);
        let e = explain::explain(&c);
        bar.set_message(format!(
            "{}/{}/{}",
            scope_str(scope),
            level_str(level),
            dispatch.name()
        ));
        let mut row = Row {
            sync_scope: scope,
            execution_level: level,
            dispatch,
            ok: e.ok,
            errors: e.errors.clone(),
            result: None,
        };
        if e.ok {
            let o = run::run(&c, &e, options)?;
            let r = o.report;
            row.result = Some(RowResult {
                throughput_rps: r.throughput_rps,
                latency_us: r.latency_us,
                max_concurrent_device: r
                    .max_concurrent_callbacks
                    .iter()
                    .filter(|(k, _)| k.starts_with("device:"))
                    .map(|(_, v)| *v)
                    .max()
                    .unwrap_or(0),
                dispatch_time_us: r.dispatch_time_us,
                deferrals: r.deferrals,
                lost_updates: r.stats.lost_updates,
                skipped_updates: r.stats.skipped,
                verifier_violations: r.verifier.values().sum(),
            });
        }
        rows.push(row);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(Matrix {
        file: file.to_string(),
        rows,
    })
}

/// The text table.
pub fn render(m: &Matrix) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{}", m.file);
    let _ = writeln!(
        s,
        "{:<8} {:<9} {:<11} {:>10} {:>9} {:>8} {:>11} {:>9} {:>6} {:>9}",
        "scope",
        "level",
        "dispatch",
        "req/s",
        "p99 µs",
        "at once",
        "DISPATCH ms",
        "deferred",
        "lost",
        "verifier"
    );
    let mut skipped = false;
    for r in &m.rows {
        skipped |= r.result.as_ref().is_some_and(|x| x.skipped_updates > 0);
        let head = format!(
            "{:<8} {:<9} {:<11}",
            scope_str(r.sync_scope),
            level_str(r.execution_level),
            r.dispatch.name()
        );
        match &r.result {
            Some(x) => {
                let _ = writeln!(
                    s,
                    "{head} {:>10.0} {:>9.1} {:>8} {:>11.1} {:>9} {:>6}{} {:>9}",
                    x.throughput_rps,
                    x.latency_us.p99,
                    x.max_concurrent_device,
                    x.dispatch_time_us / 1e3,
                    x.deferrals.work_item + x.deferrals.dpc,
                    x.lost_updates,
                    if x.skipped_updates > 0 { "*" } else { " " },
                    x.verifier_violations
                );
            }
            None => {
                let why = r
                    .errors
                    .first()
                    .map(|e| format!("{} ({}) {}", e.status, e.code, e.object))
                    .unwrap_or_default();
                let _ = writeln!(s, "{head} rejected: {why}");
            }
        }
    }
    if skipped {
        let _ = writeln!(
            s,
            "* stats = \"scope\": callbacks holding no scope lock cannot reach scope-locked data; their updates were skipped"
        );
    }
    s
}
