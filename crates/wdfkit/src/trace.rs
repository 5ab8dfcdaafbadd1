//! Chrome Trace Event format (`--trace`): one complete (`"ph": "X"`) event per callback, one
//! track per thread (`pid` 1, `tid` = wdfkit's thread id), times in microseconds. Opens in
//! Perfetto and chrome://tracing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::observe::{Recording, irql_name};

/// The arguments shown when a slice is selected.
#[derive(Debug, Serialize)]
pub struct SliceArgs {
    /// The object id (`queue:rw`).
    pub object: String,
    /// The IRQL it ran at.
    pub irql: &'static str,
    /// The lock held around it (its owner's id), if any.
    pub lock: Option<String>,
    /// The request id, if any.
    pub request: Option<u64>,
}

/// Thread or process metadata.
#[derive(Debug, Serialize)]
pub struct NameArgs {
    /// The name.
    pub name: String,
}

/// One trace event.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum TraceEvent {
    /// A complete slice.
    Complete {
        /// `EvtIoRead queue:rw`.
        name: String,
        /// The object kind.
        cat: String,
        /// Always `X`.
        ph: &'static str,
        /// Start, µs from the first callback.
        ts: f64,
        /// Duration, µs.
        dur: f64,
        /// Always 1.
        pid: u32,
        /// The thread.
        tid: u64,
        /// Details.
        args: SliceArgs,
    },
    /// Metadata (`process_name`, `thread_name`).
    Metadata {
        /// What is named.
        name: &'static str,
        /// Always `M`.
        ph: &'static str,
        /// Always 1.
        pid: u32,
        /// The thread (0 for the process).
        tid: u64,
        /// The name.
        args: NameArgs,
    },
}

/// The whole file.
#[derive(Debug, Serialize)]
pub struct Trace {
    /// The events.
    #[serde(rename = "traceEvents")]
    pub trace_events: Vec<TraceEvent>,
    /// Display unit.
    #[serde(rename = "displayTimeUnit")]
    pub display_time_unit: &'static str,
    /// What was run.
    #[serde(rename = "otherData")]
    pub other_data: BTreeMap<String, String>,
}

/// The trace of a recording.
pub fn trace(rec: &Recording, title: &str) -> Trace {
    let t0 = rec.spans.first().map_or(0, |s| s.start_ns);
    let mut events = vec![TraceEvent::Metadata {
        name: "process_name",
        ph: "M",
        pid: 1,
        tid: 0,
        args: NameArgs {
            name: format!("wdfkit: {title}"),
        },
    }];
    for (tid, name) in &rec.thread_names {
        events.push(TraceEvent::Metadata {
            name: "thread_name",
            ph: "M",
            pid: 1,
            tid: *tid,
            args: NameArgs { name: name.clone() },
        });
    }
    for s in &rec.spans {
        let o = &rec.objects[s.object as usize];
        events.push(TraceEvent::Complete {
            name: format!("{} {}", s.kind.wdf_name(), o.id),
            cat: o.id.split(':').next().unwrap_or("object").to_string(),
            ph: "X",
            ts: (s.start_ns - t0) as f64 / 1e3,
            dur: s.dur_ns as f64 / 1e3,
            pid: 1,
            tid: s.thread,
            args: SliceArgs {
                object: o.id.clone(),
                irql: irql_name(s.irql),
                lock: if s.locked { o.lock.clone() } else { None },
                request: s.request,
            },
        });
    }
    let mut other = BTreeMap::new();
    other.insert("source".into(), title.to_string());
    Trace {
        trace_events: events,
        display_time_unit: "ns",
        other_data: other,
    }
}

/// Writes the trace of `rec` to `path`.
pub fn write(path: &Path, rec: &Recording, title: &str) -> std::io::Result<()> {
    let f = std::io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer(f, &trace(rec, title)).map_err(std::io::Error::other)
}
