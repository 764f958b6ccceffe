//! Rendering a comparison as an aligned table, JSON or CSV.

use std::fmt::Write as _;

use super::{BenchReport, BenchRow};
use crate::text_table::{Align, TextTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// The cells of a row as shown in the table and CSV; with `range`, the
/// spread of the per-round cost ratios too.
fn cells(row: &BenchRow, range: bool) -> Vec<String> {
    let mut cells = vec![
        row.policy.clone(),
        row.capacity_label.clone(),
        row.requests.to_string(),
        row.misses.to_string(),
        format!("{:.4}", row.miss_ratio),
        opt(row.gap_vs_belady, |g| format!("{g:+.4}")),
        row.evictions
            .map_or_else(|| "-".to_owned(), |e| e.to_string()),
        format!("{:.2}", row.throughput_mrps),
        format!("{:.1}", row.wall_ms),
        opt(row.cost_vs_lru, |c| format!("{c:.2}x")),
    ];
    if range {
        cells.push(
            row.cost_vs_lru_range
                .map_or_else(|| "-".to_owned(), |[lo, hi]| format!("{lo:.2}-{hi:.2}x")),
        );
    }
    cells.push(opt(calls_per_thousand(row), |c| format!("{c:.1}")));
    cells
}

/// A WebAssembly policy's calls per 1,000 requests.
fn calls_per_thousand(row: &BenchRow) -> Option<f64> {
    let calls = row.policy_calls?;
    (row.requests > 0).then(|| calls as f64 * 1000.0 / row.requests as f64)
}

/// Whether the report has per-round spreads to show (more than one round).
fn has_range(report: &BenchReport) -> bool {
    report.rows.iter().any(|r| r.cost_vs_lru_range.is_some())
}

fn headers(range: bool) -> Vec<&'static str> {
    let mut headers = HEADERS.to_vec();
    if range {
        headers.push("cost range");
    }
    headers.push(CALLS_HEADER);
    headers
}

/// Calls into the sandbox per 1,000 requests (`-` for the built-ins).
const CALLS_HEADER: &str = "calls/1k";

const HEADERS: [&str; 10] = [
    "policy",
    "capacity",
    "requests",
    "misses",
    "miss ratio",
    "vs belady",
    "evictions",
    "M req/s",
    "wall ms",
    "cost vs lru",
];

pub fn render(report: &BenchReport, format: OutputFormat) -> Result<String, serde_json::Error> {
    Ok(match format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(report)?;
            s.push('\n');
            s
        }
        OutputFormat::Csv => {
            let range = has_range(report);
            let mut s = headers(range).join(",").replace(' ', "_");
            s.push('\n');
            for row in &report.rows {
                let cells: Vec<String> = cells(row, range).iter().map(|c| csv_field(c)).collect();
                let _ = writeln!(s, "{}", cells.join(","));
            }
            s
        }
        OutputFormat::Table => table(report),
    })
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn table(report: &BenchReport) -> String {
    let range = has_range(report);
    // The first two columns are names; the rest are numbers.
    let mut table = TextTable::new(
        headers(range)
            .into_iter()
            .enumerate()
            .map(|(i, h)| (h, if i < 2 { Align::Left } else { Align::Right })),
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "trace {}: {} requests, {} distinct objects, capacity in {}",
        report.trace, report.requests, report.distinct_objects, report.mode
    );
    if report.rounds > 1 {
        let _ = write!(
            out,
            "; wall times are medians of {} rounds, cost vs lru the median of per-round ratios",
            report.rounds
        );
    }
    out.push('\n');
    let mut previous_capacity: Option<&str> = None;
    for row in &report.rows {
        if previous_capacity.is_some_and(|p| p != row.capacity_label) {
            table.gap();
        }
        previous_capacity = Some(&row.capacity_label);
        table.row(cells(row, range));
    }
    out.push_str(&table.render());
    if let Some(peak) = report.peak_rss_bytes {
        let _ = writeln!(
            out,
            "\npeak memory (RSS): {:.1} MiB",
            peak as f64 / (1 << 20) as f64
        );
    }
    out
}
