//! The comparison behind `explain_matches_build.rs` and `explain_props.rs`: `explain`'s verdict
//! for a configuration against what creating its objects with `wdf` does.

use std::sync::Arc;

use wdfkit::build::{self, BuiltExec, Complete};
use wdfkit::config::{Config, ExecKind};
use wdfkit::explain;

/// Builds `config` with `wdf` and panics (naming `name`) unless creation fails exactly where
/// explain says (same status) and every created object has the constraints explain printed.
pub fn check(name: &str, config: &Config) {
    let e = explain::explain(config);
    let kernel = nt::Kernel::builder().processors(1).workers(1).build();
    let built = build::build(config, &kernel, Arc::new(Complete));
    let mut want: Vec<(String, nt::NtStatus)> = e
        .errors
        .iter()
        .map(|er| (er.fails.clone(), er.value))
        .collect();
    let mut got = built.errors.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{name}: creation errors differ from explain's");
    for (i, d) in config.device.iter().enumerate() {
        let Some(dev) = &built.devices[i] else {
            continue;
        };
        let id = format!("device:{}", d.name.get_ref());
        let o = e
            .object(&id)
            .unwrap_or_else(|| panic!("{name}: {id} explained"));
        assert_eq!(o.resolved.as_ref(), Some(dev.constraints()), "{name}: {id}");
        if d.file_object.is_some() {
            let fid = format!("file_object:{}", d.name.get_ref());
            let f = e.object(&fid).expect("file object explained");
            assert_eq!(
                f.resolved.as_ref(),
                Some(dev.file_object_constraints()),
                "{name}: {fid}"
            );
        }
    }
    for (i, q) in config.queue.iter().enumerate() {
        let Some(queue) = &built.queues[i] else {
            continue;
        };
        let id = format!("queue:{}", q.name.get_ref());
        let o = e
            .object(&id)
            .unwrap_or_else(|| panic!("{name}: {id} explained"));
        assert_eq!(
            o.resolved.as_ref(),
            Some(queue.constraints()),
            "{name}: {id}"
        );
        assert_eq!(
            o.lock.owner.is_some(),
            queue.constraints().serialized(),
            "{name}: {id} lock"
        );
    }
    for (i, (kind, x)) in config.execs().enumerate() {
        let Some(made) = &built.execs[i] else {
            continue;
        };
        let id = format!("{}:{}", kind.name(), x.name.get_ref());
        let o = e
            .object(&id)
            .unwrap_or_else(|| panic!("{name}: {id} explained"));
        assert_eq!(
            o.lock.owner.is_some(),
            made.is_serialized(),
            "{name}: {id} serialized"
        );
        if let (ExecKind::Timer, BuiltExec::Timer(t)) = (kind, made) {
            assert_eq!(
                o.execution_level == "passive",
                t.is_passive(),
                "{name}: {id} level"
            );
        }
    }
    built.unload();
}
