//! The `wdfkit` binary: every command, exit codes, error messages and JSON shapes.

mod common;

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

fn wdfkit() -> assert_cmd::Command {
    cargo_bin_cmd!("wdfkit")
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scenario(name: &str) -> std::path::PathBuf {
    common::scenarios()
        .into_iter()
        .find(|p| p.file_name().is_some_and(|f| f == name))
        .unwrap_or_else(|| panic!("scenario {name}"))
}

/// A small run: `requests` total from 2 threads.
fn small(body: &str, requests: u64) -> String {
    format!(
        "{body}\n[workload]\nthreads = 2\nrequests = {requests}\nwork = {{ kind = \"spin\", us = 1 }}\n"
    )
}

#[test]
fn help_lists_every_command() {
    let out = wdfkit().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for c in [
        "demo",
        "explain",
        "run",
        "matrix",
        "list",
        "bench",
        "rules",
        "Exit codes",
    ] {
        assert!(text.contains(c), "--help mentions {c}:\n{text}");
    }
}

#[test]
fn explain_text_for_every_scenario() {
    for f in common::scenarios() {
        let out = wdfkit().arg("explain").arg(&f).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let rejected = f.to_string_lossy().contains("rejected");
        assert_eq!(
            out.status.code(),
            Some(if rejected { 1 } else { 0 }),
            "{}: {text}{}",
            f.display(),
            stderr(&out)
        );
        assert!(text.contains("serialization domains"), "{text}");
    }
}

#[test]
fn explain_json_shape() {
    let out = wdfkit()
        .args(["explain", "--json"])
        .arg(scenario("timer-device-scope.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out.stdout);
    assert_eq!(v["ok"], true);
    let objects = v["objects"].as_array().unwrap();
    for o in objects {
        for k in [
            "kind",
            "name",
            "execution_level",
            "sync_scope",
            "lock",
            "callback_irql",
        ] {
            assert!(o.get(k).is_some(), "object has {k}: {o}");
        }
        assert!(["spin", "mutex", "none"].contains(&o["lock"]["flavour"].as_str().unwrap()));
        if o["lock"]["flavour"] == "none" {
            assert!(o["lock"]["owner"].is_null());
        }
        assert!(["passive", "dispatch", "caller"].contains(&o["callback_irql"].as_str().unwrap()));
    }
    let ids: Vec<&str> = objects.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "driver",
            "device:dev0",
            "queue:rw",
            "dpc:complete",
            "timer:tick"
        ]
    );
    let timer = &objects[4];
    assert_eq!(timer["lock"]["owner"], "device:dev0");
    assert_eq!(timer["lock"]["flavour"], "spin");
    assert_eq!(timer["callback_irql"], "dispatch");
    let domains = v["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 1);
    assert_eq!(domains[0]["lock"], "device:dev0");
    assert_eq!(domains[0]["flavour"], "spin");
    assert_eq!(
        domains[0]["members"],
        serde_json::json!(["queue:rw", "dpc:complete", "timer:tick"])
    );
    assert_eq!(v["errors"], serde_json::json!([]));
    assert!(
        v["advice"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("DISPATCH_LEVEL"))
    );
}

#[test]
fn explain_scope_none_callbacks_run_at_the_callers_irql() {
    let out = wdfkit()
        .args(["explain", "--json"])
        .arg(scenario("stats-race.toml"))
        .output()
        .unwrap();
    let v = json(&out.stdout);
    let q = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "queue:rw")
        .unwrap()
        .clone();
    assert_eq!(q["callback_irql"], "caller");
    assert!(q["lock"]["owner"].is_null());
    assert_eq!(v["domains"], serde_json::json!([]));
}

#[test]
fn explain_rejections_name_status_and_code_and_exit_1() {
    for r in common::rejections() {
        let f = common::scratch(&format!("{}.toml", r.name), r.toml);
        let out = wdfkit()
            .args(["explain", "--json"])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: {}", r.name, stderr(&out));
        let v = json(&out.stdout);
        assert_eq!(v["ok"], false, "{}", r.name);
        let e = &v["errors"][0];
        assert_eq!(e["object"], r.object, "{}", r.name);
        assert_eq!(e["status"], r.status, "{}", r.name);
        let code = e["code"].as_str().unwrap();
        let status = nt::NtStatus::from_name(r.status).unwrap();
        assert_eq!(code, format!("0x{:08X}", status.0), "{}", r.name);
        assert!(!e["message"].as_str().unwrap().is_empty());
        // The text form prints name, hex and the reason.
        let out = wdfkit().arg("explain").arg(&f).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(r.status) && text.contains(code),
            "{}: {text}",
            r.name
        );
    }
}

#[test]
fn explain_says_auto_serialization_is_ignored_under_scope_none() {
    let f = common::scratch(
        "ignored.toml",
        "[[device]]\nname = \"d\"\nsync_scope = \"none\"\n[[work_item]]\nname = \"w\"\nparent = \"d\"\n",
    );
    let out = wdfkit()
        .args(["explain", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json(&out.stdout);
    let advice = v["advice"].to_string();
    assert!(advice.contains("silently ignored"), "{advice}");
}

#[test]
fn bad_configs_exit_2_naming_file_and_place() {
    let cases = [
        (
            "unknown-field.toml",
            "[[device]]\nname = \"d\"\ncolour = \"blue\"\n",
            vec!["unknown-field.toml:3:", "unknown field `colour`"],
        ),
        (
            "unknown-device.toml",
            "[[device]]\nname = \"d\"\n[[queue]]\nname = \"q\"\ndevice = \"nope\"\ndispatch = \"parallel\"\nhandlers = [\"read\"]\n",
            vec![
                "unknown-device.toml:5:",
                "queue[0]",
                "\"nope\"",
                "no device",
            ],
        ),
        (
            "unknown-parent.toml",
            "[[device]]\nname = \"d\"\n[[timer]]\nname = \"t\"\nparent = \"q9\"\n",
            vec!["unknown-parent.toml:5:", "timer[0]", "\"q9\""],
        ),
        (
            "wrong-type.toml",
            "[workload]\nthreads = \"four\"\n",
            vec!["wrong-type.toml:2:", "invalid type"],
        ),
        (
            "bad-enum.toml",
            "[[device]]\nname = \"d\"\nsync_scope = \"global\"\n",
            vec!["bad-enum.toml:3:", "unknown variant `global`", "device"],
        ),
        (
            "duplicate-name.toml",
            "[[device]]\nname = \"d\"\n[[queue]]\nname = \"d\"\ndevice = \"d\"\ndispatch = \"parallel\"\nhandlers = [\"read\"]\n",
            vec!["duplicate-name.toml:4:", "already used"],
        ),
        (
            "not-toml.toml",
            "[[device]\nname = 1\n",
            vec!["not-toml.toml:1:"],
        ),
    ];
    for (name, text, needles) in cases {
        let f = common::scratch(name, text);
        for cmd in ["explain", "run", "matrix"] {
            let out = wdfkit().arg(cmd).arg(&f).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{cmd} {name}: {}", stderr(&out));
            let err = stderr(&out);
            for n in &needles {
                assert!(err.contains(n), "{cmd} {name}: {n:?} not in {err}");
            }
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let out = wdfkit()
        .args(["explain", "/no/such/file.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/no/such/file.toml"));
}

#[test]
fn run_json_reports_every_key() {
    let f = common::scratch(
        "run-keys.toml",
        &small(
            "[[device]]\nname = \"dev0\"\nsync_scope = \"device\"\n[[queue]]\nname = \"rw\"\ndevice = \"dev0\"\ndispatch = \"parallel\"\nhandlers = [\"read\", \"write\"]\ndefault = true\n[[queue]]\nname = \"ctl\"\ndevice = \"dev0\"\ndispatch = \"sequential\"\nhandlers = [\"device_control\"]\n[[timer]]\nname = \"t\"\nparent = \"dev0\"\nperiod_ms = 1\n",
            400,
        )
        .replace("work = ", "mix = { read = 0.4, write = 0.4, device_control = 0.2 }\nstats = \"scope\"\nwork = "),
    );
    let out = wdfkit().args(["run", "--json"]).arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out.stdout);
    for k in [
        "completed",
        "throughput_rps",
        "latency_us",
        "max_concurrent_callbacks",
        "callback_irqls",
        "deferrals",
        "dispatch_time_us",
        "watchdog",
        "verifier",
        "stats",
    ] {
        assert!(v.get(k).is_some(), "run --json has {k}: {v}");
    }
    for k in ["p50", "p99", "max"] {
        assert!(v["latency_us"][k].is_number());
    }
    for k in ["work_item", "dpc"] {
        assert!(v["deferrals"][k].is_number());
    }
    for k in ["expected", "counted", "lost_updates"] {
        assert!(v["stats"][k].is_number());
    }
    assert_eq!(v["completed"], 400);
    let m = &v["max_concurrent_callbacks"];
    // One lock for everything: never more than one callback of the device at a time.
    assert_eq!(m["device:dev0"], 1, "{m}");
    assert_eq!(m["queue:rw"], 1);
    assert!(m.get("queue:ctl").is_some());
    assert_eq!(
        v["callback_irqls"]["queue:rw"],
        serde_json::json!(["dispatch"])
    );
    assert_eq!(v["stats"]["lost_updates"], 0);
    assert_eq!(v["stats"]["expected"], v["stats"]["counted"]);
}

#[test]
fn run_trace_has_one_complete_slice_per_callback_and_timeline_is_svg() {
    let f = scenario("queue-scope-two-queues.toml");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wdfkit-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.json");
    let timeline = dir.join("timeline.svg");
    let out = wdfkit()
        .args(["run", "--json", "--requests", "600", "--trace"])
        .arg(&trace)
        .arg("--timeline")
        .arg(&timeline)
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out.stdout);
    let t: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len() as u64, report["callbacks"].as_u64().unwrap());
    assert!(slices.len() >= 600);
    for s in &slices {
        assert_eq!(s["pid"], 1);
        assert!(s["tid"].is_u64() && s["ts"].is_number() && s["dur"].is_number());
        assert!(s["name"].as_str().unwrap().starts_with("Evt"));
    }
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "M" && e["name"] == "thread_name")
    );
    let svg = std::fs::read_to_string(&timeline).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "SVG"
    );
    assert!(svg.contains("lock queue:rw"));
}

#[test]
fn run_of_a_rejected_configuration_exits_1() {
    let out = wdfkit()
        .arg("run")
        .arg(scenario("rejected-work-item-spin-scope.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL"));
}

#[test]
fn run_reports_lost_updates_and_sleeping_at_dispatch() {
    let f = common::scratch(
        "sleepy.toml",
        "[[device]]\nname = \"d\"\nsync_scope = \"device\"\n[[queue]]\nname = \"q\"\ndevice = \"d\"\ndispatch = \"parallel\"\nhandlers = [\"read\"]\ndefault = true\n[workload]\nthreads = 2\nrequests = 20\nmix = { read = 1 }\nwork = { kind = \"sleep\", us = 50 }\n",
    );
    let out = wdfkit().args(["run", "--json"]).arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out.stdout);
    assert!(
        v["verifier"]["BLOCKING_WAIT_ABOVE_PASSIVE"]
            .as_u64()
            .unwrap()
            >= 20,
        "{v}"
    );

    let out = wdfkit()
        .args(["run", "--json", "--requests", "20000"])
        .arg(scenario("stats-race.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out.stdout);
    let s = &v["stats"];
    assert_eq!(
        s["expected"].as_u64().unwrap(),
        s["counted"].as_u64().unwrap() + s["lost_updates"].as_u64().unwrap()
    );
}

#[test]
fn passive_deferral_defers_to_a_work_item() {
    let out = wdfkit()
        .args(["run", "--json", "--requests", "300"])
        .arg(scenario("passive-deferral.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out.stdout);
    assert!(v["deferrals"]["work_item"].as_u64().unwrap() >= 300, "{v}");
    assert_eq!(
        v["callback_irqls"]["queue:rw"],
        serde_json::json!(["passive"])
    );
    assert_eq!(v["max_concurrent_callbacks"]["device:dev0"], 1);
}

#[test]
fn matrix_lists_rejected_combinations_and_draws_a_chart() {
    let f = common::scratch(
        "matrix.toml",
        &small(
            "[[device]]\nname = \"d\"\n[[queue]]\nname = \"q\"\ndevice = \"d\"\ndispatch = \"parallel\"\nhandlers = [\"read\", \"write\"]\ndefault = true\n[[work_item]]\nname = \"w\"\nparent = \"d\"\n",
            100,
        ),
    );
    let chart = common::scratch("matrix.svg", "");
    let out = wdfkit()
        .args(["matrix", "--json", "--chart"])
        .arg(&chart)
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out.stdout);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    // A work item cannot share a spin lock: Device and Queue scope at Dispatch level are refused.
    let refused: Vec<&Value> = rows.iter().filter(|r| r["ok"] == false).collect();
    assert!(!refused.is_empty());
    for r in &refused {
        assert_eq!(r["execution_level"], "dispatch");
        assert_eq!(
            r["errors"][0]["status"],
            "STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL"
        );
        assert!(r["result"].is_null());
    }
    for r in rows.iter().filter(|r| r["ok"] == true) {
        assert!(r["result"]["throughput_rps"].as_f64().unwrap() > 0.0);
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg"));
    // The text table too.
    let out = wdfkit()
        .args(["matrix", "--requests", "50"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rejected: STATUS_WDF_INCOMPATIBLE_EXECUTION_LEVEL"),
        "{text}"
    );
}

#[test]
fn list_shows_drivers_and_scenarios() {
    let out = wdfkit().arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for n in [
        "stats",
        "echo",
        "ramdisk",
        "forum-device-scope-parallel.toml",
        "[rejected by the framework]",
    ] {
        assert!(text.contains(n), "{n}: {text}");
    }
    let out = wdfkit().args(["list", "--json"]).output().unwrap();
    let v = json(&out.stdout);
    assert_eq!(v["drivers"].as_array().unwrap().len(), 3);
    let sc = v["scenarios"].as_array().unwrap();
    assert!(sc.len() >= 6);
    for s in sc {
        assert!(!s["description"].as_str().unwrap().is_empty(), "{s}");
    }
}

#[test]
fn demo_writes_its_chart_and_timeline() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wdfkit-demo-test");
    let out = wdfkit()
        .args([
            "demo",
            "--duration-ms",
            "60",
            "--threads",
            "2",
            "--json",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out.stdout);
    let rows = v["rows"].as_array().unwrap();
    let variants: Vec<&str> = rows
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    for want in [
        "unsynchronized",
        "device-scope",
        "queue-scope",
        "spin-lock",
        "passive-device-scope",
    ] {
        assert!(variants.contains(&want), "{want}");
    }
    for r in rows {
        if r["variant"] != "unsynchronized" {
            assert_eq!(r["lost_updates"], 0, "{r}");
        }
        for k in [
            "throughput_rps",
            "latency_us",
            "dispatch_time_ms",
            "lost_updates",
        ] {
            assert!(r.get(k).is_some());
        }
    }
    let device = rows
        .iter()
        .find(|r| r["variant"] == "device-scope")
        .unwrap();
    assert_eq!(device["max_concurrent"], 1);
    for f in ["throughput.svg", "timeline.svg"] {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(svg.starts_with("<svg"), "{f}");
    }
}

#[test]
fn rules_lists_kernel_and_framework_rules() {
    let out = wdfkit().arg("rules").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DPC_WATCHDOG_SINGLE") && text.contains("WDF_RECURSIVE_LOCK"));
}
