//! The configuration file read by `explain`, `run` and `matrix`.
//!
//! ```toml
//! description = "Device scope with a parallel queue"   # optional, shown by `wdfkit list`
//!
//! [driver]                       # optional; defaults as in KMDF
//! execution_level = "dispatch"   # inherit | passive | dispatch
//! sync_scope = "none"            # inherit | none | device | queue
//!
//! [[device]]
//! name = "dev0"
//! execution_level = "inherit"
//! sync_scope = "device"
//! file_object = { execution_level = "inherit", sync_scope = "inherit" }  # optional
//!
//! [[queue]]
//! name = "rw"
//! device = "dev0"
//! dispatch = "parallel"          # sequential | parallel | manual
//! parallel_limit = 8             # optional, parallel only
//! handlers = ["read", "write"]   # read | write | device_control | internal_device_control | default
//! routes = ["read", "write"]     # optional: request types sent to this queue (default: its handlers)
//! default = true                 # optional: the device's default queue
//!
//! [[timer]]                      # also [[dpc]] and [[work_item]]
//! name = "t0"
//! parent = "rw"                  # a device or queue name ("driver" is refused, as in WDF)
//! automatic_serialization = true
//! execution_level = "inherit"    # timers: passive makes a passive timer
//! period_ms = 1
//!
//! [workload]
//! threads = 4
//! duration_ms = 2000             # or requests = N (total, over all threads)
//! mix = { read = 0.5, write = 0.4, device_control = 0.1 }
//! arrival_irql = "passive"       # passive | dispatch
//! work = { kind = "spin", us = 2 }   # spin | sleep | none
//! stats = "scope"                # scope | spin-lock | unsynchronized
//! ```
//!
//! Every table refuses unknown keys. [`load`] turns any problem into a [`ConfigError`] that
//! names the file, the line and column (or the field) and what was expected.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// An execution level as written in a configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `WdfExecutionLevelInheritFromParent`.
    #[default]
    Inherit,
    /// `WdfExecutionLevelPassive`.
    Passive,
    /// `WdfExecutionLevelDispatch`.
    Dispatch,
}

impl Level {
    /// The framework's value.
    pub fn to_wdf(self) -> wdf::ExecutionLevel {
        match self {
            Level::Inherit => wdf::ExecutionLevel::InheritFromParent,
            Level::Passive => wdf::ExecutionLevel::Passive,
            Level::Dispatch => wdf::ExecutionLevel::Dispatch,
        }
    }
}

/// A synchronization scope as written in a configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `WdfSynchronizationScopeInheritFromParent`.
    #[default]
    Inherit,
    /// `WdfSynchronizationScopeNone`.
    None,
    /// `WdfSynchronizationScopeDevice`.
    Device,
    /// `WdfSynchronizationScopeQueue`.
    Queue,
}

impl Scope {
    /// The framework's value.
    pub fn to_wdf(self) -> wdf::SyncScope {
        match self {
            Scope::Inherit => wdf::SyncScope::InheritFromParent,
            Scope::None => wdf::SyncScope::None,
            Scope::Device => wdf::SyncScope::Device,
            Scope::Queue => wdf::SyncScope::Queue,
        }
    }
}

/// A queue's dispatch type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    /// One driver-owned request at a time.
    Sequential,
    /// Many at once (up to `parallel_limit`).
    Parallel,
    /// The driver retrieves requests (wdfkit's runner does it from a ready notification).
    Manual,
}

impl Dispatch {
    /// The framework's value.
    pub fn to_wdf(self) -> wdf::DispatchType {
        match self {
            Dispatch::Sequential => wdf::DispatchType::Sequential,
            Dispatch::Parallel => wdf::DispatchType::Parallel,
            Dispatch::Manual => wdf::DispatchType::Manual,
        }
    }

    /// The name used in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Dispatch::Sequential => "sequential",
            Dispatch::Parallel => "parallel",
            Dispatch::Manual => "manual",
        }
    }
}

/// An I/O callback a queue registers (and, by default, the request type routed to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Handler {
    /// `EvtIoRead`.
    Read,
    /// `EvtIoWrite`.
    Write,
    /// `EvtIoDeviceControl`.
    DeviceControl,
    /// `EvtIoInternalDeviceControl`.
    InternalDeviceControl,
    /// `EvtIoDefault` (every type without its own handler; not a route).
    Default,
}

impl Handler {
    /// The name used in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Handler::Read => "read",
            Handler::Write => "write",
            Handler::DeviceControl => "device_control",
            Handler::InternalDeviceControl => "internal_device_control",
            Handler::Default => "default",
        }
    }

    /// The request type this handler receives (`None` for `default`).
    pub fn request_type(self) -> Option<wdf::RequestType> {
        match self {
            Handler::Read => Some(wdf::RequestType::Read),
            Handler::Write => Some(wdf::RequestType::Write),
            Handler::DeviceControl => Some(wdf::RequestType::DeviceControl),
            Handler::InternalDeviceControl => Some(wdf::RequestType::InternalDeviceControl),
            Handler::Default => None,
        }
    }
}

/// The IRQL requests arrive at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalIrql {
    /// From user mode (or a passive-level driver).
    #[default]
    Passive,
    /// Sent by another driver at DISPATCH_LEVEL.
    Dispatch,
}

impl ArrivalIrql {
    /// The kernel's value.
    pub fn irql(self) -> nt::Irql {
        match self {
            ArrivalIrql::Passive => nt::Irql::Passive,
            ArrivalIrql::Dispatch => nt::Irql::Dispatch,
        }
    }
}

/// What every callback does before it updates the statistics block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Work {
    /// Nothing.
    None,
    /// Busy-wait `us` microseconds.
    Spin {
        /// Microseconds.
        us: u64,
    },
    /// Block `us` microseconds in a kernel wait (a verifier violation above PASSIVE_LEVEL).
    Sleep {
        /// Microseconds.
        us: u64,
    },
}

impl Default for Work {
    fn default() -> Self {
        Work::Spin { us: 2 }
    }
}

/// How callbacks update the statistics block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsMode {
    /// Data protected by the framework's scope lock (`ScopeLocked`, reached with the
    /// callback's scope token); one block per lock.
    Scope,
    /// An `nt` spin lock per device held only around the update (the articles' advice).
    #[default]
    SpinLock,
    /// A separate load and store, no lock (the articles' race).
    Unsynchronized,
}

impl StatsMode {
    /// The name used in configurations.
    pub fn name(self) -> &'static str {
        match self {
            StatsMode::Scope => "scope",
            StatsMode::SpinLock => "spin-lock",
            StatsMode::Unsynchronized => "unsynchronized",
        }
    }
}

/// `[driver]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DriverConfig {
    /// Default Dispatch.
    #[serde(default)]
    pub execution_level: Level,
    /// Default None.
    #[serde(default)]
    pub sync_scope: Scope,
}

/// A device's `file_object = { ... }`: the attributes of its file-object callbacks.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileObjectAttributes {
    /// Level of `EvtDeviceFileCreate` / `EvtFileCleanup` / `EvtFileClose`.
    #[serde(default)]
    pub execution_level: Level,
    /// Scope of the same callbacks.
    #[serde(default)]
    pub sync_scope: Scope,
}

/// `[[device]]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device's name (what clients open).
    pub name: Spanned<String>,
    /// The device's execution level.
    #[serde(default)]
    pub execution_level: Level,
    /// The device's synchronization scope.
    #[serde(default)]
    pub sync_scope: Scope,
    /// Attributes of the file-object callbacks; absent: no attributes (Passive, scope None).
    #[serde(default)]
    pub file_object: Option<FileObjectAttributes>,
}

/// `[[queue]]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The queue's name.
    pub name: Spanned<String>,
    /// The device it belongs to.
    pub device: Spanned<String>,
    /// How it presents requests.
    pub dispatch: Dispatch,
    /// Parallel queues: the most driver-owned requests at once.
    #[serde(default)]
    pub parallel_limit: Option<u32>,
    /// The queue's execution level.
    #[serde(default)]
    pub execution_level: Level,
    /// The queue's synchronization scope.
    #[serde(default)]
    pub sync_scope: Scope,
    /// The EvtIoXxx callbacks it registers.
    #[serde(default)]
    pub handlers: Vec<Handler>,
    /// The request types routed to it (`WdfDeviceConfigureRequestDispatching`); default: its
    /// handlers, when it is not the default queue.
    #[serde(default)]
    pub routes: Option<Vec<Handler>>,
    /// Whether it is the device's default queue.
    #[serde(default)]
    pub default: bool,
}

impl QueueConfig {
    /// The request types routed to this queue by type.
    pub fn routed_types(&self) -> Vec<Handler> {
        match &self.routes {
            Some(r) => r.clone(),
            None if self.default => Vec::new(),
            None => self.handlers.clone(),
        }
        .into_iter()
        .filter(|h| *h != Handler::Default)
        .collect()
    }
}

fn yes() -> bool {
    true
}

/// The kind of a DPC, timer or work item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecKind {
    /// `WDFDPC`.
    Dpc,
    /// `WDFTIMER`.
    Timer,
    /// `WDFWORKITEM`.
    WorkItem,
}

impl ExecKind {
    /// The kind's name in object ids (`dpc`, `timer`, `work_item`).
    pub fn name(self) -> &'static str {
        match self {
            ExecKind::Dpc => "dpc",
            ExecKind::Timer => "timer",
            ExecKind::WorkItem => "work_item",
        }
    }
}

/// `[[timer]]`, `[[dpc]]` or `[[work_item]]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The object's name.
    pub name: Spanned<String>,
    /// A device or queue name (or `driver`, which WDF refuses).
    pub parent: Spanned<String>,
    /// Serialize with the parent's callbacks (default true, as the WDF config init macros).
    #[serde(default = "yes")]
    pub automatic_serialization: bool,
    /// Timers: `passive` makes a passive timer. DPCs and work items take none
    /// (`STATUS_WDF_EXECUTION_LEVEL_INVALID`).
    #[serde(default)]
    pub execution_level: Level,
    /// No DPC, timer or work item takes a scope (`STATUS_WDF_SYNCHRONIZATION_SCOPE_INVALID`
    /// for device or queue).
    #[serde(default)]
    pub sync_scope: Scope,
    /// Timers: the period (0: one-shot).
    #[serde(default)]
    pub period_ms: u64,
    /// Timers: the first expiry (default: the period, or 1 ms for one-shot timers).
    #[serde(default)]
    pub due_ms: Option<u64>,
}

/// `mix = { ... }`: relative weights of the request types.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Reads.
    #[serde(default)]
    pub read: f64,
    /// Writes.
    #[serde(default)]
    pub write: f64,
    /// Device controls.
    #[serde(default)]
    pub device_control: f64,
    /// Internal device controls.
    #[serde(default)]
    pub internal_device_control: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            read: 0.5,
            write: 0.5,
            device_control: 0.0,
            internal_device_control: 0.0,
        }
    }
}

impl Mix {
    /// `(type, weight)` pairs with a positive weight.
    pub fn weights(&self) -> Vec<(Handler, f64)> {
        [
            (Handler::Read, self.read),
            (Handler::Write, self.write),
            (Handler::DeviceControl, self.device_control),
            (Handler::InternalDeviceControl, self.internal_device_control),
        ]
        .into_iter()
        .filter(|(_, w)| *w > 0.0)
        .collect()
    }
}

/// `[workload]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Client threads issuing I/O.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// How long to run (default 2000 ms unless `requests` is set).
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Total requests to send (over all threads).
    #[serde(default)]
    pub requests: Option<u64>,
    /// Request types and their weights.
    #[serde(default)]
    pub mix: Mix,
    /// IRQL the requests arrive at.
    #[serde(default)]
    pub arrival_irql: ArrivalIrql,
    /// What each callback does.
    #[serde(default)]
    pub work: Work,
    /// How callbacks update the statistics block.
    #[serde(default)]
    pub stats: StatsMode,
    /// `unsynchronized` stats: a busy wait between the load and the store, in microseconds
    /// (widens the race window).
    #[serde(default)]
    pub race_window_us: u64,
    /// Bytes per read or write.
    #[serde(default = "default_bytes")]
    pub bytes: usize,
}

fn default_threads() -> usize {
    4
}

fn default_bytes() -> usize {
    64
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            threads: default_threads(),
            duration_ms: None,
            requests: None,
            mix: Mix::default(),
            arrival_irql: ArrivalIrql::default(),
            work: Work::default(),
            stats: StatsMode::default(),
            race_window_us: 0,
            bytes: default_bytes(),
        }
    }
}

/// How long a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// For this long.
    Duration(std::time::Duration),
    /// Until this many requests completed.
    Requests(u64),
}

impl Workload {
    /// The run length (`duration_ms`, `requests`, or 2 s).
    pub fn amount(&self) -> Amount {
        match (self.requests, self.duration_ms) {
            (Some(n), _) => Amount::Requests(n),
            (None, Some(ms)) => Amount::Duration(std::time::Duration::from_millis(ms)),
            (None, None) => Amount::Duration(std::time::Duration::from_millis(2000)),
        }
    }
}

/// A whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One line on what the scenario shows (for `wdfkit list`).
    #[serde(default)]
    pub description: Option<String>,
    /// Driver attributes.
    #[serde(default)]
    pub driver: DriverConfig,
    /// Devices.
    #[serde(default)]
    pub device: Vec<DeviceConfig>,
    /// Queues.
    #[serde(default)]
    pub queue: Vec<QueueConfig>,
    /// Timers.
    #[serde(default)]
    pub timer: Vec<ExecConfig>,
    /// DPCs.
    #[serde(default)]
    pub dpc: Vec<ExecConfig>,
    /// Work items.
    #[serde(default)]
    pub work_item: Vec<ExecConfig>,
    /// What `run` and `matrix` send.
    #[serde(default)]
    pub workload: Workload,
}

impl Config {
    /// DPCs, timers and work items in creation order, with their kind.
    pub fn execs(&self) -> impl Iterator<Item = (ExecKind, &ExecConfig)> {
        self.dpc
            .iter()
            .map(|e| (ExecKind::Dpc, e))
            .chain(self.timer.iter().map(|e| (ExecKind::Timer, e)))
            .chain(self.work_item.iter().map(|e| (ExecKind::WorkItem, e)))
    }

    /// The index of the device named `name`.
    pub fn device_index(&self, name: &str) -> Option<usize> {
        self.device.iter().position(|d| d.name.get_ref() == name)
    }

    /// The index of the queue named `name`.
    pub fn queue_index(&self, name: &str) -> Option<usize> {
        self.queue.iter().position(|q| q.name.get_ref() == name)
    }

    /// Parses `text` (read from `path`, for messages) and checks names and references.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
                source_line: source_line(text, line),
            }
        })?;
        config.check(path, text)?;
        Ok(config)
    }

    /// Checks what serde cannot: unique names, references to devices and queues, workload
    /// bounds.
    fn check(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError {
                path: path.to_owned(),
                line,
                column,
                message,
                source_line: source_line(text, line),
            }
        };
        let mut seen: HashMap<&str, String> = HashMap::new();
        let mut names: Vec<(&Spanned<String>, String)> = Vec::new();
        for (i, d) in self.device.iter().enumerate() {
            names.push((&d.name, format!("device[{i}]")));
        }
        for (i, q) in self.queue.iter().enumerate() {
            names.push((&q.name, format!("queue[{i}]")));
        }
        for kind in [ExecKind::Dpc, ExecKind::Timer, ExecKind::WorkItem] {
            for (i, (_, e)) in self.execs().filter(|(k, _)| *k == kind).enumerate() {
                names.push((&e.name, format!("{}[{i}]", kind.name())));
            }
        }
        for (name, field) in &names {
            let n = name.get_ref().as_str();
            if n.is_empty() || n == "driver" || n.contains(char::is_whitespace) {
                return Err(err(
                    Some(name.span()),
                    format!(
                        "{field}.name = {n:?}: expected a non-empty name without spaces, other than \"driver\""
                    ),
                ));
            }
            if let Some(first) = seen.insert(n, field.clone()) {
                return Err(err(
                    Some(name.span()),
                    format!(
                        "{field}.name = {n:?}: the name is already used by {first}; names must be unique"
                    ),
                ));
            }
        }
        let devices: Vec<&str> = self
            .device
            .iter()
            .map(|d| d.name.get_ref().as_str())
            .collect();
        let queues: Vec<&str> = self
            .queue
            .iter()
            .map(|q| q.name.get_ref().as_str())
            .collect();
        for (i, q) in self.queue.iter().enumerate() {
            if self.device_index(q.device.get_ref()).is_none() {
                return Err(err(
                    Some(q.device.span()),
                    format!(
                        "queue[{i}] ({:?}).device = {:?}: no device has that name; expected one of {devices:?}",
                        q.name.get_ref(),
                        q.device.get_ref()
                    ),
                ));
            }
            let mut hs = q.handlers.clone();
            hs.sort();
            if hs.windows(2).any(|w| w[0] == w[1]) {
                return Err(err(
                    Some(q.name.span()),
                    format!(
                        "queue[{i}] ({:?}).handlers: a handler is listed twice",
                        q.name.get_ref()
                    ),
                ));
            }
        }
        for kind in [ExecKind::Dpc, ExecKind::Timer, ExecKind::WorkItem] {
            for (i, (_, e)) in self.execs().filter(|(k, _)| *k == kind).enumerate() {
                let p = e.parent.get_ref();
                if p != "driver" && self.device_index(p).is_none() && self.queue_index(p).is_none()
                {
                    return Err(err(
                        Some(e.parent.span()),
                        format!(
                            "{}[{i}] ({:?}).parent = {p:?}: no device or queue has that name; expected \"driver\" or one of {:?}",
                            kind.name(),
                            e.name.get_ref(),
                            devices.iter().chain(queues.iter()).collect::<Vec<_>>()
                        ),
                    ));
                }
            }
        }
        let w = &self.workload;
        let wspan = find_key(text, "[workload]");
        if w.threads == 0 || w.threads > 256 {
            return Err(err(
                wspan.clone(),
                format!(
                    "workload.threads = {}: expected 1 to 256 client threads",
                    w.threads
                ),
            ));
        }
        if w.duration_ms.is_some() && w.requests.is_some() {
            return Err(err(
                wspan,
                "workload: set either duration_ms or requests, not both".into(),
            ));
        }
        if w.requests == Some(0) || w.duration_ms == Some(0) {
            return Err(err(
                wspan,
                "workload: duration_ms and requests must be greater than 0".into(),
            ));
        }
        let weights = [
            w.mix.read,
            w.mix.write,
            w.mix.device_control,
            w.mix.internal_device_control,
        ];
        if weights.iter().any(|x| !x.is_finite() || *x < 0.0) || weights.iter().sum::<f64>() <= 0.0
        {
            return Err(err(
                wspan,
                "workload.mix: expected non-negative weights with a positive sum".into(),
            ));
        }
        if w.bytes == 0 || w.bytes > 1 << 20 {
            return Err(err(
                wspan,
                format!("workload.bytes = {}: expected 1 to 1048576", w.bytes),
            ));
        }
        Ok(())
    }
}

/// The line and column (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |p| before.len() - p - 1)
        + 1;
    (line, column)
}

fn source_line(text: &str, line: usize) -> Option<String> {
    (line > 0)
        .then(|| text.lines().nth(line - 1))
        .flatten()
        .map(|l| l.trim_end().to_owned())
}

fn find_key(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    text.find(key).map(|s| s..s + key.len())
}

/// A configuration that cannot be used: which file, where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0: unknown).
    pub line: usize,
    /// 1-based column (0: unknown).
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
    /// The offending line of the file, if known.
    pub source_line: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )?;
            if let Some(src) = &self.source_line {
                write!(
                    f,
                    "\n  {:>4} | {src}\n       | {:>width$}",
                    self.line,
                    "^",
                    width = self.column
                )?;
            }
            Ok(())
        } else {
            write!(f, "{}: {}", self.path.display(), self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and checks the configuration at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: 0,
        column: 0,
        message: format!("cannot read the file: {e}"),
        source_line: None,
    })?;
    Config::parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
description = "x"
[driver]
execution_level = "dispatch"
sync_scope = "none"
[[device]]
name = "dev0"
sync_scope = "device"
file_object = { execution_level = "inherit", sync_scope = "inherit" }
[[queue]]
name = "rw"
device = "dev0"
dispatch = "parallel"
parallel_limit = 8
handlers = ["read", "write"]
default = true
[[timer]]
name = "t0"
parent = "rw"
period_ms = 0
[workload]
threads = 4
duration_ms = 2000
mix = { read = 0.5, write = 0.4, device_control = 0.1 }
arrival_irql = "dispatch"
work = { kind = "spin", us = 2 }
stats = "scope"
"#,
        )
        .unwrap();
        assert_eq!(c.device[0].sync_scope, Scope::Device);
        assert_eq!(c.workload.work, Work::Spin { us: 2 });
        assert!(c.timer[0].automatic_serialization);
        assert_eq!(c.queue[0].routed_types(), vec![]);
    }

    #[test]
    fn unknown_field_names_line() {
        let e = parse("[[device]]\nname = \"d\"\ncolour = 1\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn unknown_device_reference() {
        let e = parse(
            "[[device]]\nname = \"d\"\n[[queue]]\nname = \"q\"\ndevice = \"nope\"\ndispatch = \"parallel\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.message.contains("queue[0]"), "{e}");
        assert!(e.message.contains("\"nope\""), "{e}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
