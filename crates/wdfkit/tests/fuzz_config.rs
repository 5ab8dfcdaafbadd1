//! Property-based fuzzing of the configuration parser and `explain`: arbitrary text and mutated
//! valid scenario files never panic. Every input is either accepted (and then explained,
//! rendered and serialized without a panic) or refused with a clean [`ConfigError`]: a message,
//! a position inside the file, and the offending line; through the binary, that is exit code 2
//! with the message on stderr and no panic. (A coverage-guided cargo-fuzz target over the same
//! entry points lives in crates/wdfkit/fuzz; see its README.)

mod common;

use std::path::Path;

use assert_cmd::cargo::cargo_bin_cmd;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use wdfkit::config::{Config, ConfigError};
use wdfkit::explain;

/// Parses `text`; an accepted configuration is explained, rendered and serialized; a refused
/// one must carry a usable error. Panics (fails the property) otherwise.
fn parse_and_explain(text: &str) -> Result<(), ConfigError> {
    let path = Path::new("fuzz.toml");
    match Config::parse(path, text) {
        Ok(c) => {
            let e = explain::explain(&c);
            let _ = explain::render("fuzz.toml", c.description.as_deref(), &e);
            serde_json::to_string(&e).expect("an explanation serializes");
            // The workload settings the run command would use are all readable.
            let _ = c.workload.amount();
            let _ = c.workload.mix.weights();
            Ok(())
        }
        Err(err) => {
            assert!(!err.message.trim().is_empty(), "an error without a message");
            assert_eq!(err.path, path);
            let lines = text.split('\n').count();
            assert!(
                err.line <= lines,
                "error line {} past the end ({lines} lines): {err}",
                err.line
            );
            if err.line > 0 {
                assert!(err.column >= 1, "{err}");
                assert_eq!(
                    err.source_line.as_deref(),
                    text.lines().nth(err.line - 1).map(str::trim_end),
                    "{err}"
                );
            }
            let shown = err.to_string();
            assert!(shown.starts_with("fuzz.toml"), "{shown}");
            Err(err)
        }
    }
}

/// The shipped scenarios and every rejection example: the seeds of the mutations.
fn seeds() -> Vec<String> {
    let mut v: Vec<String> = common::scenarios()
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("a scenario"))
        .collect();
    v.extend(common::rejections().iter().map(|r| r.toml.to_string()));
    v
}

/// Pieces of TOML and of the schema, spliced into valid files.
const SNIPPETS: &[&str] = &[
    "[[device]]\n",
    "[[queue]]\n",
    "[[timer]]\n",
    "[[dpc]]\n",
    "[[work_item]]\n",
    "[driver]\n",
    "[workload]\n",
    "name = \"dev0\"\n",
    "name = \"\"\n",
    "name = \"driver\"\n",
    "name = \"a b\"\n",
    "device = \"nope\"\n",
    "parent = \"driver\"\n",
    "dispatch = \"manual\"\n",
    "dispatch = 7\n",
    "parallel_limit = 0\n",
    "parallel_limit = -1\n",
    "parallel_limit = 99999999999999999999\n",
    "execution_level = \"passive\"\n",
    "sync_scope = \"queue\"\n",
    "sync_scope = \"bogus\"\n",
    "handlers = [\"read\", \"read\"]\n",
    "handlers = []\n",
    "routes = [\"default\"]\n",
    "default = true\n",
    "period_ms = 18446744073709551615\n",
    "threads = 0\n",
    "threads = 100000\n",
    "requests = 0\n",
    "duration_ms = 1\n",
    "bytes = 0\n",
    "mix = { read = -1.0 }\n",
    "mix = { read = nan }\n",
    "mix = { read = inf, write = 1e308 }\n",
    "work = { kind = \"sleep\", us = 1 }\n",
    "work = { kind = \"warp\" }\n",
    "file_object = { sync_scope = \"device\" }\n",
    "file_object = 3\n",
    "colour = \"blue\"\n",
    "= \n",
    "[\n",
    "]]\n",
    "\"\"\"\n",
    "'\n",
    "\\u{0}",
    "é",
    "🦀",
    "\r\n",
    "\t",
    "#",
    "=",
    ",",
    "{",
    "}",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// Delete bytes `[at, at + len)` (clamped to character boundaries).
    Delete(usize, usize),
    /// Insert a snippet at a position.
    Insert(usize, usize),
    /// Insert a snippet as a line of its own (often still valid TOML: a new key or table).
    InsertLine(usize, usize),
    /// Replace a whole line with a snippet.
    ReplaceLine(usize, usize),
    /// Duplicate a line.
    DuplicateLine(usize),
    /// Swap two lines.
    SwapLines(usize, usize),
    /// Cut the file.
    Truncate(usize),
    /// Insert arbitrary characters.
    Garbage(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<usize>(), 1usize..40).prop_map(|(a, l)| Mutation::Delete(a, l)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, s)| Mutation::Insert(a, s)),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(a, s)| Mutation::InsertLine(a, s)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, s)| Mutation::ReplaceLine(a, s)),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), ".{1,8}").prop_map(|(a, g)| Mutation::Garbage(a, g)),
    ]
}

/// The byte offset of character boundary number `n % (chars + 1)`.
fn boundary(text: &str, n: usize) -> usize {
    let count = text.chars().count() + 1;
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .nth(n % count)
        .expect("in range")
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let pick = |n: usize, len: usize| n % len.max(1);
    match m {
        Mutation::Delete(at, len) => {
            let a = boundary(text, *at);
            let b = boundary(&text[a..], *len % (text.len() - a + 1)) + a;
            format!("{}{}", &text[..a], &text[b..])
        }
        Mutation::Insert(at, s) => {
            let a = boundary(text, *at);
            format!(
                "{}{}{}",
                &text[..a],
                SNIPPETS[s % SNIPPETS.len()],
                &text[a..]
            )
        }
        Mutation::InsertLine(l, s) => {
            let i = pick(*l, lines.len() + 1);
            let line = SNIPPETS[s % SNIPPETS.len()]
                .trim_end_matches('\n')
                .to_owned();
            lines.insert(i, line);
            lines.join("\n")
        }
        Mutation::ReplaceLine(l, s) => {
            let i = pick(*l, lines.len());
            lines[i] = SNIPPETS[s % SNIPPETS.len()]
                .trim_end_matches('\n')
                .to_owned();
            lines.join("\n")
        }
        Mutation::DuplicateLine(l) => {
            let i = pick(*l, lines.len());
            let dup = lines[i].clone();
            lines.insert(i, dup);
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            let (i, j) = (pick(*a, lines.len()), pick(*b, lines.len()));
            lines.swap(i, j);
            lines.join("\n")
        }
        Mutation::Truncate(at) => text[..boundary(text, *at)].to_owned(),
        Mutation::Garbage(at, g) => {
            let a = boundary(text, *at);
            format!("{}{g}{}", &text[..a], &text[a..])
        }
    }
}

/// A seed file with one to three mutations applied.
fn mutated() -> impl Strategy<Value = String> {
    let seeds = seeds();
    (0..seeds.len(), proptest::collection::vec(mutation(), 1..4))
        .prop_map(move |(i, ms)| ms.iter().fold(seeds[i].clone(), |t, m| apply(&t, m)))
}

/// Lines that look like the schema, in random order: gets past the TOML syntax more often than
/// arbitrary text, into the schema and reference checks.
fn schema_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop::sample::select(SNIPPETS.to_vec()), 0..24)
        .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 600,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_and_explain(&text);
    }

    #[test]
    fn toml_like_text_never_panics(text in "[\\[\\]a-z_=\"{}, .0-9#\n-]{0,200}") {
        let _ = parse_and_explain(&text);
    }

    #[test]
    fn schema_soup_never_panics(text in schema_soup()) {
        let _ = parse_and_explain(&text);
    }

    #[test]
    fn mutated_scenarios_never_panic(text in mutated()) {
        let _ = parse_and_explain(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Through the binary: `explain` on a mutated file exits 0 (accepted), 1 (the framework
    /// refuses it) or 2 (bad input, the message naming the file), and never panics.
    #[test]
    fn explain_on_mutated_files_exits_cleanly(text in mutated(), as_bytes in any::<bool>(), junk in proptest::collection::vec(any::<u8>(), 0..16)) {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wdfkit-fuzz");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("case-{}.toml", std::process::id()));
        // Sometimes not UTF-8 at all.
        let mut bytes = text.clone().into_bytes();
        if as_bytes {
            bytes.extend_from_slice(&junk);
            bytes.push(0xFF);
        }
        std::fs::write(&file, &bytes).unwrap();
        let out = cargo_bin_cmd!("wdfkit").arg("explain").arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        prop_assert!(!stderr.contains("panicked"), "{}", stderr);
        let code = out.status.code();
        prop_assert!(matches!(code, Some(0..=2)), "exit {:?}: {}", code, stderr);
        let expected = match std::str::from_utf8(&bytes) {
            Ok(t) => match Config::parse(&file, t) {
                Ok(c) => if explain::explain(&c).ok { 0 } else { 1 },
                Err(_) => 2,
            },
            Err(_) => 2,
        };
        prop_assert_eq!(code, Some(expected), "{}", stderr);
        if expected == 2 {
            prop_assert!(stderr.contains(&*file.to_string_lossy()), "{}", stderr);
        }
    }
}

/// The mutated files reach both sides: some still parse (and go through explain), most do not.
#[test]
fn mutations_reach_acceptance_and_refusal() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = mutated();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..400 {
        let text = strategy.new_tree(&mut runner).expect("a case").current();
        match parse_and_explain(&text) {
            Ok(()) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    // Most mutations break the syntax or the schema (as a fuzzer's do); about one in twelve
    // still parses and goes on through explain.
    assert!(accepted >= 20, "only {accepted} of 400 mutated files parse");
    assert!(
        refused >= 40,
        "only {refused} of 400 mutated files are refused"
    );
}
