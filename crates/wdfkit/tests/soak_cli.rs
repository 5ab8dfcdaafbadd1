//! `wdfkit soak`: a short run through the binary (the debug build, so the IRP layer's
//! "completed twice" assertion is armed), and its argument checks.

use std::time::Duration;

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

fn wdfkit() -> assert_cmd::Command {
    cargo_bin_cmd!("wdfkit")
}

#[test]
fn a_two_second_soak_accounts_for_every_request() {
    let out = wdfkit()
        .args(["soak", "--seconds", "2", "--seed", "7", "--json"])
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "exit {:?}: {v:#}", out.status.code());
    assert_eq!(v["ok"], true, "{:#}", v["failures"]);
    assert_eq!(v["seed"], 7);

    let r = &v["requests"];
    assert_eq!(r["accounted"], true, "{r:#}");
    assert_eq!(r["stranded"], 0);
    assert_eq!(r["submitted"], r["completed"]);
    assert!(r["submitted"].as_u64().unwrap() > 100, "{r:#}");
    assert!(r["unexpected_statuses"].as_object().unwrap().is_empty());

    let queues = v["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 24, "6 devices x 4 queues");
    for q in queues {
        assert_eq!(q["balanced"], true, "{q:#}");
        assert_eq!(q["driver_owned"], 0, "{q:#}");
        assert_eq!(q["pending"], 0, "{q:#}");
    }
    for (scope, level) in [
        ("none", "passive"),
        ("none", "dispatch"),
        ("queue", "passive"),
        ("queue", "dispatch"),
        ("device", "passive"),
        ("device", "dispatch"),
    ] {
        assert!(
            queues
                .iter()
                .any(|q| q["scope"] == scope && q["level"] == level),
            "{scope}/{level}"
        );
    }

    assert!(
        v["objects"]["alive_after_unload"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(v["objects"]["created"], 37);
    assert!(v["unexpected_verifier"].as_object().unwrap().is_empty());
    assert_eq!(
        v["verifier"]["WDF_CALLBACK_PANICKED"],
        v["operations"]["panics_injected"]
    );
    assert_eq!(v["memory"]["flat"], true, "{:#}", v["memory"]);
    let ops = &v["operations"];
    for op in [
        "forwards",
        "held",
        "marked_cancelable",
        "state_callbacks",
        "panics_injected",
    ] {
        assert!(ops[op].as_u64().unwrap() > 0, "no {op}: {ops:#}");
    }
}

#[test]
fn soak_arguments_are_checked() {
    for args in [
        &["soak", "--seconds", "0"][..],
        &["soak", "--minutes", "1", "--seconds", "1"],
        &["soak", "--clients", "0"],
        &["soak", "--seed", "x"],
    ] {
        let out = wdfkit().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
