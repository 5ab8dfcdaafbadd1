//! `explain`'s verdict is the framework's: for every shipped scenario and every rejection
//! case, building the objects with `wdf` fails exactly where explain says (same status), and
//! every object that is created has the constraints explain printed.

mod common;

use std::path::Path;

use common::verdict::check;
use wdfkit::config::Config;
use wdfkit::explain;

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

/// Found by `explain_props.rs`: a DPC, timer or work item whose parent's creation fails is never
/// created, so explain must not report its own attributes as a failing creation call.
#[test]
fn children_of_a_parent_that_fails_are_not_checked() {
    let toml = r#"
[[device]]
name = "d0"
file_object = { sync_scope = "device" }   # WdfDeviceCreate fails (spin lock, passive callbacks)

[[dpc]]
name = "e0"
parent = "d0"
execution_level = "passive"               # would be STATUS_WDF_EXECUTION_LEVEL_INVALID

[[timer]]
name = "t0"
parent = "d0"
execution_level = "passive"
period_ms = 1                             # would be STATUS_NOT_SUPPORTED
"#;
    let c = Config::parse(Path::new("children.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let e = explain::explain(&c);
    let failing: Vec<&str> = e.errors.iter().map(|er| er.object.as_str()).collect();
    assert_eq!(failing, ["file_object:d0"]);
    assert!(
        e.advice
            .iter()
            .any(|a| a.contains("dpc:e0 (its parent device d0 is not created)")),
        "{:?}",
        e.advice
    );
    check("children.toml", &c);
}
