//! Property tests of constraint resolution: random attribute trees (driver, devices with and
//! without file-object attributes, queues of every dispatch type, DPCs, timers and work items
//! under every kind of parent; every scope and level, including the combinations WDF refuses)
//! are written as configuration files and
//!
//! * `explain`'s verdict equals what creating the objects with `wdf` does (the comparison of
//!   `explain_matches_build.rs`: the same failing creation calls with the same statuses, and the
//!   same resolved constraints, locks and serialization for every object that is created);
//! * resolution is deterministic: explaining twice, or explaining the file parsed again, gives
//!   the same result.
//!
//! A failing case prints the configuration file, ready to save and feed to `wdfkit explain`.

mod common;

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use wdfkit::config::Config;
use wdfkit::explain;

const LEVELS: [&str; 3] = ["inherit", "passive", "dispatch"];
const SCOPES: [&str; 4] = ["inherit", "none", "device", "queue"];
const DISPATCH: [&str; 3] = ["sequential", "parallel", "manual"];
const HANDLERS: [&str; 5] = [
    "read",
    "write",
    "device_control",
    "internal_device_control",
    "default",
];
const EXEC_KINDS: [&str; 3] = ["dpc", "timer", "work_item"];

fn level() -> impl Strategy<Value = &'static str> {
    // Mostly inherit, so that inheritance chains are exercised, not only explicit values.
    prop_oneof![3 => Just(LEVELS[0]), 2 => Just(LEVELS[1]), 2 => Just(LEVELS[2])]
}

fn scope() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        3 => Just(SCOPES[0]),
        2 => Just(SCOPES[1]),
        2 => Just(SCOPES[2]),
        2 => Just(SCOPES[3]),
    ]
}

/// DPCs, timers and work items refuse any level or scope but inherit (and timers take
/// `passive`); keep refusals rare so that most of them reach automatic serialization.
fn exec_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![12 => Just(LEVELS[0]), 3 => Just(LEVELS[1]), 1 => Just(LEVELS[2])]
}

fn exec_scope() -> impl Strategy<Value = &'static str> {
    prop_oneof![14 => Just(SCOPES[0]), 1 => Just(SCOPES[1]), 1 => Just(SCOPES[2])]
}

#[derive(Clone, Debug)]
struct Device {
    level: &'static str,
    scope: &'static str,
    file_object: Option<(&'static str, &'static str)>,
}

#[derive(Clone, Debug)]
struct Queue {
    device: usize,
    dispatch: &'static str,
    limit: Option<u32>,
    level: &'static str,
    scope: &'static str,
    handlers: Vec<bool>,
    /// Manual queues keep their handlers (a refusal) only when this is set.
    manual_handlers: bool,
    default: bool,
    routes: Option<Vec<bool>>,
}

#[derive(Clone, Debug)]
struct Exec {
    kind: &'static str,
    /// 0: the driver; else 1 + an index into the devices and then the queues (modulo their
    /// number).
    parent: usize,
    automatic_serialization: bool,
    level: &'static str,
    scope: &'static str,
    periodic: bool,
}

#[derive(Clone, Debug)]
struct Tree {
    driver: (&'static str, &'static str),
    devices: Vec<Device>,
    queues: Vec<Queue>,
    execs: Vec<Exec>,
}

fn device() -> impl Strategy<Value = Device> {
    let file_scope = prop_oneof![
        2 => Just(SCOPES[0]),
        3 => Just(SCOPES[1]),
        1 => Just(SCOPES[2]),
        1 => Just(SCOPES[3]),
    ];
    (
        level(),
        scope(),
        proptest::option::weighted(0.3, (level(), file_scope)),
    )
        .prop_map(|(level, scope, file_object)| Device {
            level,
            scope,
            file_object,
        })
}

fn queue() -> impl Strategy<Value = Queue> {
    (
        0usize..8,
        prop_oneof![3 => Just(DISPATCH[0]), 3 => Just(DISPATCH[1]), 1 => Just(DISPATCH[2])],
        prop_oneof![12 => Just(None), 1 => Just(Some(0u32)), 3 => (1u32..4).prop_map(Some)],
        level(),
        scope(),
        proptest::collection::vec(prop::bool::weighted(0.4), 5),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        proptest::option::weighted(0.3, proptest::collection::vec(prop::bool::weighted(0.3), 4)),
    )
        .prop_map(
            |(
                device,
                dispatch,
                limit,
                level,
                scope,
                handlers,
                manual_handlers,
                default,
                routes,
            )| {
                Queue {
                    device,
                    dispatch,
                    limit,
                    level,
                    scope,
                    handlers,
                    manual_handlers,
                    default,
                    routes,
                }
            },
        )
}

fn exec() -> impl Strategy<Value = Exec> {
    (
        prop::sample::select(EXEC_KINDS.to_vec()),
        prop_oneof![1 => Just(0usize), 9 => 1usize..16],
        prop::bool::weighted(0.8),
        exec_level(),
        exec_scope(),
        prop::bool::ANY,
    )
        .prop_map(
            |(kind, parent, automatic_serialization, level, scope, periodic)| Exec {
                kind,
                parent,
                automatic_serialization,
                level,
                scope,
                periodic,
            },
        )
}

fn tree() -> impl Strategy<Value = Tree> {
    (
        (level(), scope()),
        proptest::collection::vec(device(), 1..4),
        proptest::collection::vec(queue(), 0..5),
        proptest::collection::vec(exec(), 0..5),
    )
        .prop_map(|(driver, devices, queues, execs)| Tree {
            driver,
            devices,
            queues,
            execs,
        })
}

fn list(names: &[&str], picked: &[bool]) -> String {
    let items: Vec<String> = names
        .iter()
        .zip(picked)
        .filter(|(_, p)| **p)
        .map(|(n, _)| format!("{n:?}"))
        .collect();
    format!("[{}]", items.join(", "))
}

/// The tree as a configuration file.
fn render(t: &Tree) -> String {
    let mut s = format!(
        "[driver]\nexecution_level = {:?}\nsync_scope = {:?}\n",
        t.driver.0, t.driver.1
    );
    for (i, d) in t.devices.iter().enumerate() {
        s += &format!(
            "\n[[device]]\nname = \"d{i}\"\nexecution_level = {:?}\nsync_scope = {:?}\n",
            d.level, d.scope
        );
        if let Some((l, sc)) = d.file_object {
            s += &format!("file_object = {{ execution_level = {l:?}, sync_scope = {sc:?} }}\n");
        }
    }
    for (i, q) in t.queues.iter().enumerate() {
        s += &format!(
            "\n[[queue]]\nname = \"q{i}\"\ndevice = \"d{}\"\ndispatch = {:?}\nexecution_level = {:?}\nsync_scope = {:?}\nhandlers = {}\ndefault = {}\n",
            q.device % t.devices.len(),
            q.dispatch,
            q.level,
            q.scope,
            if q.dispatch == "manual" && !q.manual_handlers {
                "[]".to_string()
            } else {
                list(&HANDLERS, &q.handlers)
            },
            q.default
        );
        if let Some(l) = q.limit {
            s += &format!("parallel_limit = {l}\n");
        }
        if let Some(r) = &q.routes {
            s += &format!("routes = {}\n", list(&HANDLERS[..4], r));
        }
    }
    let parents = 1 + t.devices.len() + t.queues.len();
    for (i, e) in t.execs.iter().enumerate() {
        let p = if e.parent == 0 {
            0
        } else {
            1 + (e.parent - 1) % (parents - 1)
        };
        let parent = if p == 0 {
            "driver".to_string()
        } else if p <= t.devices.len() {
            format!("d{}", p - 1)
        } else {
            format!("q{}", p - 1 - t.devices.len())
        };
        s += &format!(
            "\n[[{}]]\nname = \"e{i}\"\nparent = {parent:?}\nautomatic_serialization = {}\nexecution_level = {:?}\nsync_scope = {:?}\n",
            e.kind, e.automatic_serialization, e.level, e.scope
        );
        if e.kind == "timer" && e.periodic {
            s += "period_ms = 1\n";
        }
    }
    s
}

/// Everything explain computes, including the resolved constraints its JSON leaves out.
fn fingerprint(e: &explain::Explanation) -> String {
    format!(
        "{}\n{e:?}",
        serde_json::to_string(e).expect("explain serializes")
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// explain's verdict (statuses of failing creation calls, resolved constraints, locks,
    /// serialization) equals what object creation does.
    #[test]
    fn explain_verdict_equals_object_creation(t in tree()) {
        let text = render(&t);
        let c = Config::parse(Path::new("random.toml"), &text)
            .unwrap_or_else(|e| panic!("generated configuration does not parse: {e}\n{text}"));
        let outcome = std::panic::catch_unwind(|| common::verdict::check("random.toml", &c));
        prop_assert!(outcome.is_ok(), "explain and wdf disagree on:\n{}", text);
    }

    /// Resolution is deterministic: twice on one configuration, and on the file parsed again.
    #[test]
    fn explain_is_deterministic(t in tree()) {
        let text = render(&t);
        let c = Config::parse(Path::new("random.toml"), &text).expect("parses");
        let first = fingerprint(&explain::explain(&c));
        prop_assert_eq!(&first, &fingerprint(&explain::explain(&c)), "{}", text);
        let again = Config::parse(Path::new("random.toml"), &text).expect("parses");
        prop_assert_eq!(&first, &fingerprint(&explain::explain(&again)), "{}", text);
    }
}

/// The generator reaches the interesting verdicts: accepted trees, and each kind of rejection
/// that `common::rejections` lists one example of.
#[test]
fn the_generator_covers_acceptance_and_every_rejection_status() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = tree();
    let mut accepted = 0;
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let t = strategy.new_tree(&mut runner).expect("a tree").current();
        let c = Config::parse(Path::new("random.toml"), &render(&t)).expect("parses");
        let e = explain::explain(&c);
        if e.ok {
            accepted += 1;
        }
        statuses.extend(e.errors.iter().map(|er| er.status.clone()));
    }
    assert!(accepted >= 40, "only {accepted} of 400 trees accepted");
    for want in common::rejections().iter().map(|r| r.status) {
        assert!(
            statuses.contains(want),
            "no generated tree is rejected with {want}; got {statuses:?}"
        );
    }
}
