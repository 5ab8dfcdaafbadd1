//! `wdfkit serve-nbd --trace/--timeline`: a callback observer around an NBD server run.
//!
//! [`Observation`] implements [`nbd::cli::ServeHooks`]. When the RAM disk exists it installs a
//! [`Recorder`] (with a span limit, so a long-running server's memory stays bounded) for the
//! disk's two queues; when the server has stopped it uninstalls it, prints a summary and writes
//! the Chrome trace and the SVG timeline. Without `--trace` and `--timeline` the CLI does not
//! use it at all, and nothing observes the run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use drivers::ramdisk::RamdiskDevice;
use nbd::ServerStats;
use nbd::cli::ServeHooks;

use crate::chart;
use crate::demo::lock_id;
use crate::observe::{Class, ObjectSpec, Recorder, Recording};
use crate::trace;

/// The default of `--max-spans`: the most callbacks kept for the trace and the timeline.
pub const DEFAULT_MAX_SPANS: usize = 200_000;

/// How many callbacks the timeline draws (from the middle of the kept ones).
const TIMELINE_SPANS: usize = 150;

/// The objects a recorder watches on a RAM disk: its I/O queue and its flush queue (ids
/// `queue:<name>`, locks as `explain` names them: `device:<device>` under Device scope,
/// `queue:<queue>` under Queue scope, none otherwise; the flush queue is always created with
/// scope None), and its one device (`device:<name>`).
pub fn object_specs(disk: &RamdiskDevice) -> (Vec<ObjectSpec>, Vec<String>) {
    let device = disk.name();
    let specs = [disk.io_queue(), disk.flush_queue()]
        .into_iter()
        .map(|q| ObjectSpec {
            class: Class::Queue,
            name: q.name().to_string(),
            id: format!("queue:{}", q.name()),
            device: Some(0),
            lock: lock_id(device, q),
        })
        .collect();
    (specs, vec![format!("device:{device}")])
}

/// Observes one `serve-nbd` run and writes what was seen: the hooks behind `--trace`,
/// `--timeline` and `--max-spans`.
#[derive(Debug)]
pub struct Observation {
    title: String,
    trace: Option<PathBuf>,
    timeline: Option<PathBuf>,
    max_spans: usize,
    recorder: Option<Arc<Recorder>>,
    recording: Option<Recording>,
}

impl Observation {
    /// Hooks that write a Chrome trace to `trace` and an SVG timeline to `timeline` (either may
    /// be absent), keeping at most `max_spans` callbacks; `title` names the run in both (e.g.
    /// `serve-nbd ramdisk`).
    pub fn new(
        title: impl Into<String>,
        trace: Option<PathBuf>,
        timeline: Option<PathBuf>,
        max_spans: usize,
    ) -> Observation {
        Observation {
            title: title.into(),
            trace,
            timeline,
            max_spans,
            recorder: None,
            recording: None,
        }
    }

    /// What was recorded, once the server has stopped.
    pub fn recording(&self) -> Option<&Recording> {
        self.recording.as_ref()
    }
}

impl ServeHooks for Observation {
    fn started(&mut self, disk: &RamdiskDevice) -> Result<(), String> {
        let (specs, devices) = object_specs(disk);
        let recorder = Recorder::with_span_limit(specs, devices, self.max_spans);
        recorder.install();
        self.recorder = Some(recorder);
        Ok(())
    }

    fn stopped(&mut self, _disk: &RamdiskDevice, _stats: &ServerStats) -> Result<(), String> {
        let Some(recorder) = self.recorder.take() else {
            return Ok(());
        };
        Recorder::uninstall();
        let rec = recorder.finish();
        print!("{}", render(&rec, self.max_spans));
        if let Some(p) = &self.trace {
            trace::write(p, &rec, &self.title)
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            println!("  wrote trace {}", p.display());
        }
        if let Some(p) = &self.timeline {
            chart::timeline(
                p,
                &[chart::Panel {
                    title: self.title.clone(),
                    recording: &rec,
                }],
                TIMELINE_SPANS,
            )
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            println!("  wrote timeline {}", p.display());
        }
        self.recording = Some(rec);
        Ok(())
    }
}

/// The summary printed when an observed server stops: callbacks observed; per queue its
/// callbacks, the most running at once, their IRQLs and the lock they take; the device's
/// callbacks and most at once; time at DISPATCH_LEVEL; spans kept and dropped. `max_spans`
/// is the limit the recorder had. The recorder's objects must all belong to one device (as
/// [`object_specs`] makes them).
pub fn render(rec: &Recording, max_spans: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "wdfkit serve-nbd: observed {} callbacks", rec.callbacks);
    let width = rec
        .objects
        .iter()
        .map(|o| o.id.len())
        .max()
        .unwrap_or(0)
        .max(12);
    for o in &rec.objects {
        let count = rec.counts.get(&o.id).copied().unwrap_or(0);
        let at_once = rec.max_concurrent.get(&o.id).copied().unwrap_or(0);
        let irqls = rec
            .irqls
            .get(&o.id)
            .filter(|v| !v.is_empty())
            .map_or_else(|| "-".to_string(), |v| v.join(", "));
        let lock = o.lock.as_deref().unwrap_or("none");
        let _ = writeln!(
            s,
            "  {:<width$} {count:>9} callbacks, at most {at_once} at once, IRQL {irqls}, lock {lock}",
            o.id
        );
    }
    // Every object watched belongs to the one device, so its callbacks are all of them.
    for (id, at_once) in rec
        .max_concurrent
        .iter()
        .filter(|(k, _)| k.starts_with("device:"))
    {
        let _ = writeln!(
            s,
            "  {id:<width$} {:>9} callbacks, at most {at_once} at once",
            rec.callbacks
        );
    }
    let _ = writeln!(
        s,
        "  DISPATCH_LEVEL  {:.1} ms of {:.1} ms inside callbacks",
        rec.dispatch_ns as f64 / 1e6,
        rec.busy_ns as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "  spans      {} kept, {} dropped (--max-spans {max_spans})",
        rec.spans.len(),
        rec.spans_dropped
    );
    s
}

/// Whether `path`'s parent folder exists (or it has none): checked before the server starts,
/// so a typo in `--trace` fails at once rather than after hours of serving.
pub fn parent_exists(path: &Path) -> bool {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.is_dir(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drivers::ramdisk::{self, RamdiskConfig};
    use wdf::{Driver, ObjectAttributes, SyncScope};

    fn locks(scope: SyncScope) -> Vec<(String, Option<String>)> {
        let kernel = nt::Kernel::builder().processors(1).workers(1).build();
        let driver = Driver::create(&kernel, ObjectAttributes::default()).unwrap();
        let disk =
            ramdisk::create(&driver, "rd", RamdiskConfig::new(1 << 20).with_scope(scope)).unwrap();
        let (specs, devices) = object_specs(&disk);
        assert_eq!(devices, ["device:rd"]);
        assert!(
            specs
                .iter()
                .all(|s| s.class == Class::Queue && s.device == Some(0))
        );
        let out = specs.into_iter().map(|s| (s.id, s.lock)).collect();
        disk.device().delete();
        out
    }

    #[test]
    fn queue_ids_and_locks_follow_the_scope() {
        let io = "queue:rd-io".to_string();
        let flush = "queue:rd-flush".to_string();
        assert_eq!(
            locks(SyncScope::None),
            [(io.clone(), None), (flush.clone(), None)]
        );
        assert_eq!(
            locks(SyncScope::Queue),
            [(io.clone(), Some(io.clone())), (flush.clone(), None)]
        );
        assert_eq!(
            locks(SyncScope::Device),
            [(io, Some("device:rd".into())), (flush, None)]
        );
    }
}
