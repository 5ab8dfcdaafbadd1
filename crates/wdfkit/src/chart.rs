//! SVG charts drawn with plotters: a horizontal bar chart (throughput per configuration) and a
//! callback timeline (a Gantt chart: one row per thread, one bar per callback, one colour per
//! lock, so a reader sees that a Device-scope domain never overlaps and Queue scope does).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::observe::Recording;

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
const NO_LOCK: RGBColor = RGBColor(150, 150, 150);
const LEGEND_WIDTH: i32 = 250;

/// Draws a horizontal bar chart of `bars` (label, value) to `path`.
pub fn bar_chart(path: &Path, title: &str, unit: &str, bars: &[(String, f64)]) -> DrawResult<()> {
    let n = bars.len().max(1);
    let height = 90 + 34 * n as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.12;
    let longest = bars.iter().map(|b| b.0.len()).max().unwrap_or(8) as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size((longest * 7 + 16).clamp(80, 320))
        .build_cartesian_2d(0.0..max, (0..n - 1).into_segmented())?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let mut r = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*v, SegmentValue::Exact(i + 1)),
            ],
            PALETTE[i % PALETTE.len()].filled(),
        );
        r.set_margin(5, 5, 0, 0);
        r
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            format!("{v:.0}"),
            (*v + max * 0.01, SegmentValue::CenterOf(i)),
            ("sans-serif", 13),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// One panel of a timeline: a title and what the observer recorded.
#[derive(Debug)]
pub struct Panel<'a> {
    /// The panel's title.
    pub title: String,
    /// The recording (spans must have been kept).
    pub recording: &'a Recording,
}

/// The window of a recording to draw: about `target` callbacks from the middle of the run.
fn window(rec: &Recording, target: usize) -> (u64, u64) {
    let spans = &rec.spans;
    if spans.is_empty() {
        return (0, 1);
    }
    let first = spans.len().saturating_sub(target) / 2;
    let last = (first + target).min(spans.len()) - 1;
    let start = spans[first].start_ns;
    let end = spans[first..=last]
        .iter()
        .map(|s| s.start_ns + s.dur_ns)
        .max()
        .unwrap_or(start + 1);
    (start, end.max(start + 1))
}

/// Draws `panels` (stacked) as Gantt charts to `path`: one row per thread, one bar per
/// callback, coloured by the lock its callbacks take (grey: none).
pub fn timeline(path: &Path, panels: &[Panel<'_>], per_panel: usize) -> DrawResult<()> {
    // One colour per lock id across all panels.
    let mut colours: BTreeMap<String, RGBColor> = BTreeMap::new();
    for p in panels {
        for o in &p.recording.objects {
            if let Some(l) = &o.lock {
                let n = colours.len();
                colours
                    .entry(l.clone())
                    .or_insert(PALETTE[n % PALETTE.len()]);
            }
        }
    }
    let rows_total: usize = panels
        .iter()
        .map(|p| p.recording.thread_names.len().max(1))
        .sum();
    let height = (panels.len() as u32 * 130 + rows_total as u32 * 26).max(240);
    let root = SVGBackend::new(path, (1250, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = if panels.len() > 1 {
        let mut weights = Vec::new();
        for p in panels {
            weights.push(130 + 26 * p.recording.thread_names.len().max(1) as u32);
        }
        split_weighted(&root, &weights)
    } else {
        vec![root.clone()]
    };
    for (p, area) in panels.iter().zip(areas) {
        let rec = p.recording;
        let (start, end) = window(rec, per_panel);
        let mut threads: Vec<u64> = rec.thread_names.keys().copied().collect();
        // Client threads first, then kernel threads, each in number order (top to bottom).
        threads.sort_by_key(|t| {
            let name = rec.thread_names.get(t).cloned().unwrap_or_default();
            let digits: String = name.chars().filter(char::is_ascii_digit).collect();
            (
                std::cmp::Reverse(!name.starts_with("client")),
                std::cmp::Reverse(
                    name.chars()
                        .filter(|c| !c.is_ascii_digit())
                        .collect::<String>(),
                ),
                std::cmp::Reverse(digits.parse::<u64>().unwrap_or(0)),
            )
        });
        let labels: Vec<String> = threads
            .iter()
            .map(|t| rec.thread_names.get(t).cloned().unwrap_or_default())
            .collect();
        let rows = threads.len().max(1);
        let span_us = (end - start) as f64 / 1e3;
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!(
                    "{} — {span_us:.0} µs window, {} callbacks in the run",
                    p.title, rec.callbacks
                ),
                ("sans-serif", 16),
            )
            .margin(10)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(32)
            .y_label_area_size(110)
            .build_cartesian_2d(0.0..span_us, (0..rows - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("µs")
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()?;
        let row_of: BTreeMap<u64, usize> =
            threads.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        chart.draw_series(
            rec.spans
                .iter()
                .filter(|s| s.start_ns + s.dur_ns >= start && s.start_ns <= end)
                .map(|s| {
                    let o = &rec.objects[s.object as usize];
                    let colour = match (&o.lock, s.locked) {
                        (Some(l), true) => colours[l],
                        _ => NO_LOCK,
                    };
                    let row = row_of.get(&s.thread).copied().unwrap_or(0);
                    let x0 = (s.start_ns.max(start) - start) as f64 / 1e3;
                    let x1 = ((s.start_ns + s.dur_ns).min(end) - start) as f64 / 1e3;
                    let mut r = Rectangle::new(
                        [
                            (x0, SegmentValue::Exact(row)),
                            (x1.max(x0 + span_us / 2000.0), SegmentValue::Exact(row + 1)),
                        ],
                        colour.filled(),
                    );
                    r.set_margin(4, 4, 0, 0);
                    r
                }),
        )?;
        let used: Vec<(String, RGBColor)> = {
            let mut v: Vec<(String, RGBColor)> = rec
                .objects
                .iter()
                .filter_map(|o| o.lock.clone())
                .map(|l| {
                    let c = colours[&l];
                    (format!("lock {l}"), c)
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.dedup_by(|a, b| a.0 == b.0);
            if rec.objects.iter().any(|o| o.lock.is_none()) {
                v.push(("no lock".to_string(), NO_LOCK));
            }
            v
        };
        let (w, _) = area.dim_in_pixel();
        let x = w as i32 - LEGEND_WIDTH + 8;
        for (i, (label, c)) in used.into_iter().enumerate() {
            let y = 40 + 20 * i as i32;
            area.draw(&Rectangle::new([(x, y - 6), (x + 12, y + 6)], c.filled()))?;
            area.draw(&Text::new(label, (x + 18, y - 6), ("sans-serif", 12)))?;
        }
    }
    root.present()?;
    Ok(())
}

fn split_weighted<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    weights: &[u32],
) -> Vec<DrawingArea<SVGBackend<'a>, plotters::coord::Shift>> {
    let total: u32 = weights.iter().sum();
    let (_, h) = root.dim_in_pixel();
    let mut out = Vec::new();
    let mut rest = root.clone();
    for (i, w) in weights.iter().enumerate() {
        if i + 1 == weights.len() {
            out.push(rest.clone());
            break;
        }
        let px = (h as u64 * *w as u64 / total.max(1) as u64) as i32;
        let (top, bottom) = rest.split_vertically(px);
        out.push(top);
        rest = bottom;
    }
    out
}
