//! `wdfkit list`: the sample drivers and the scenario files shipped in `scenarios/`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config;
use crate::explain;

/// A sample driver.
#[derive(Clone, Debug, Serialize)]
pub struct DriverInfo {
    /// Its short name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
}

/// A scenario file.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioInfo {
    /// The file name.
    pub file: String,
    /// Its path.
    pub path: String,
    /// Its `description`, or the error that stops it from loading.
    pub description: String,
    /// Whether the framework accepts it (`explain` exits 0); `null` if it does not load.
    pub accepted: Option<bool>,
}

/// What `list` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    /// The sample drivers.
    pub drivers: Vec<DriverInfo>,
    /// The `drivers::stats` variants (used by `demo`).
    pub stats_variants: Vec<&'static str>,
    /// The folder scanned.
    pub scenario_dir: String,
    /// The scenarios, by file name.
    pub scenarios: Vec<ScenarioInfo>,
}

/// `./scenarios` if it exists, else the repository's `scenarios/` (where this binary was
/// built from).
pub fn default_dir() -> PathBuf {
    let here = Path::new("scenarios");
    if here.is_dir() {
        return here.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

/// Lists drivers and the scenarios in `dir`.
pub fn list(dir: &Path) -> std::io::Result<Listing> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let scenarios = files
        .iter()
        .map(|p| {
            let file = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            match config::load(p) {
                Ok(c) => ScenarioInfo {
                    file,
                    path: p.display().to_string(),
                    accepted: Some(explain::explain(&c).ok),
                    description: c.description.unwrap_or_default(),
                },
                Err(e) => ScenarioInfo {
                    file,
                    path: p.display().to_string(),
                    description: format!("does not load: {e}"),
                    accepted: None,
                },
            }
        })
        .collect();
    Ok(Listing {
        drivers: drivers::SampleDriver::ALL
            .iter()
            .map(|d| DriverInfo {
                name: d.name(),
                description: d.description(),
            })
            .collect(),
        stats_variants: drivers::stats::StatsVariant::ALL
            .iter()
            .map(|v| v.name())
            .collect(),
        scenario_dir: dir.display().to_string(),
        scenarios,
    })
}

/// The text form.
pub fn render(l: &Listing) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "sample drivers (crates/drivers):");
    for d in &l.drivers {
        let _ = writeln!(s, "  {:<10} {}", d.name, d.description);
    }
    let _ = writeln!(s, "  stats variants: {}", l.stats_variants.join(", "));
    let _ = writeln!(s);
    let _ = writeln!(s, "scenarios ({}):", l.scenario_dir);
    for sc in &l.scenarios {
        let verdict = match sc.accepted {
            Some(true) => "",
            Some(false) => " [rejected by the framework]",
            None => " [invalid]",
        };
        let _ = writeln!(s, "  {:<40} {}{verdict}", sc.file, sc.description);
    }
    s
}
