//! `explain`'s verdict is the framework's: for every shipped scenario and every rejection
//! case, building the objects with `wdf` fails exactly where explain says (same status), and
//! every object that is created has the constraints explain printed.

mod common;

use std::path::Path;
use std::sync::Arc;

use wdfkit::build::{self, BuiltExec, Complete};
use wdfkit::config::{Config, ExecKind};
use wdfkit::explain;

fn check(name: &str, config: &Config) {
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

#[test]
fn every_scenario_builds_as_explained() {
    let files = common::scenarios();
    assert!(files.len() >= 6, "scenarios/ holds the shipped scenarios");
    for f in files {
        let c = wdfkit::config::load(&f).unwrap_or_else(|e| panic!("{e}"));
        check(&f.display().to_string(), &c);
    }
}

#[test]
fn every_rejection_fails_at_creation_with_explains_status() {
    for r in common::rejections() {
        let c = Config::parse(Path::new(r.name), r.toml).unwrap_or_else(|e| panic!("{e}"));
        let e = explain::explain(&c);
        assert!(!e.ok, "{}: explain accepts it", r.name);
        assert_eq!(e.errors[0].object, r.object, "{}", r.name);
        assert_eq!(e.errors[0].status, r.status, "{}", r.name);
        check(r.name, &c);
    }
}
