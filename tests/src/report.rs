//! A campaign's report: operations by kind and outcome, faults applied,
//! recovery times per fault kind (p50 and max), the checks, how to replay
//! the seed; the history as tab-separated text; and throughput over time
//! with the faults marked, as an SVG.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::campaign::CampaignReport;
use crate::history::Record;

/// Recovery figures of one fault kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryFigures {
    /// Faults of the kind.
    pub faults: usize,
    /// Median and slowest time to the next acknowledged write.
    pub write_p50: Option<Duration>,
    /// Slowest time to the next acknowledged write.
    pub write_max: Option<Duration>,
    /// Median time to the next answered linearizable read.
    pub read_p50: Option<Duration>,
    /// Slowest time to the next answered linearizable read.
    pub read_max: Option<Duration>,
    /// Faults after which no write or read was ever answered.
    pub never: usize,
}

/// Recovery figures by fault kind name ("combined" for combinations).
pub fn recovery_by_kind(report: &CampaignReport) -> BTreeMap<String, RecoveryFigures> {
    let mut samples: BTreeMap<String, (Vec<Duration>, Vec<Duration>, usize, usize)> =
        BTreeMap::new();
    for recovery in &report.recoveries {
        let name = recovery
            .kind
            .map_or("combined", |kind| kind.name())
            .to_string();
        let entry = samples.entry(name).or_default();
        entry.2 += 1;
        match (recovery.write, recovery.read) {
            (Some(write), Some(read)) => {
                entry.0.push(write);
                entry.1.push(read);
            }
            _ => entry.3 += 1,
        }
    }
    samples
        .into_iter()
        .map(|(name, (mut writes, mut reads, faults, never))| {
            writes.sort();
            reads.sort();
            let figures = RecoveryFigures {
                faults,
                write_p50: writes.get(writes.len() / 2).copied(),
                write_max: writes.last().copied(),
                read_p50: reads.get(reads.len() / 2).copied(),
                read_max: reads.last().copied(),
                never,
            };
            (name, figures)
        })
        .collect()
}

fn milliseconds(duration: Option<Duration>) -> String {
    duration.map_or("-".to_string(), |duration| {
        format!("{}", duration.as_millis())
    })
}

/// The report as text.
pub fn text(report: &CampaignReport) -> String {
    let options = &report.options;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nemesis campaign: seed {}, {} nodes, {:?}, {} workers",
        options.seed, options.nodes, options.duration, options.workload.workers
    );
    let mut operations: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for record in &report.history {
        *operations
            .entry((record.request.kind_name(), record.outcome.name()))
            .or_default() += 1;
    }
    let _ = writeln!(out, "\noperations ({} in all):", report.history.len());
    let mut kinds: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for ((kind, outcome), count) in operations {
        kinds.entry(kind).or_default().insert(outcome, count);
    }
    for (kind, outcomes) in kinds {
        let get = |name| outcomes.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {kind:<18} ok {:>7}  failed {:>6}  unknown {:>6}",
            get("ok"),
            get("failed"),
            get("unknown")
        );
    }
    let _ = writeln!(out, "\nfaults ({} applied):", report.faults.len());
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for fault in &report.faults {
        *by_kind.entry(fault.kind.name()).or_default() += 1;
    }
    for (kind, count) in by_kind {
        let _ = writeln!(out, "  {kind:<24} {count}");
    }
    let _ = writeln!(
        out,
        "\nrecovery, ms from the fault to the next (target {} ms):",
        options.recovery_target().as_millis()
    );
    let _ = writeln!(
        out,
        "  {:<24} {:>6} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "kind", "faults", "write p50", "write max", "read p50", "read max", "never"
    );
    for (kind, figures) in recovery_by_kind(report) {
        let _ = writeln!(
            out,
            "  {kind:<24} {:>6} {:>10} {:>10} {:>10} {:>10} {:>6}",
            figures.faults,
            milliseconds(figures.write_p50),
            milliseconds(figures.write_max),
            milliseconds(figures.read_p50),
            milliseconds(figures.read_max),
            figures.never
        );
    }
    let coverage = report.linearizability;
    let _ = writeln!(
        out,
        "\nlinearizability: {} operations checked{}",
        coverage.operations,
        coverage
            .too_expensive_key
            .map_or(String::new(), |key| format!(
                "; search gave up on key {key} (not judged)"
            ))
    );
    let _ = writeln!(out, "final members: {:?}", report.members);
    if let Some(state) = report.states.values().next() {
        let _ = writeln!(
            out,
            "final state: applied index {}, {} rows, {} sessions (node {})",
            state.applied_index,
            state.rows.len(),
            state.sessions.len(),
            report.states.keys().next().copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "\nasserted checks: {} violation(s)",
        report.violations.len()
    );
    for violation in &report.violations {
        let _ = writeln!(out, "  VIOLATION {violation}");
    }
    let _ = writeln!(
        out,
        "reported, not asserted (see docs/NEMESIS.md): {}",
        report.reported.len()
    );
    for violation in report.reported.iter().take(40) {
        let _ = writeln!(out, "  {violation}");
    }
    if !report.passed() {
        let _ = writeln!(
            out,
            "\nreplay: make nemesis SEED={} MINUTES={}",
            options.seed,
            options.duration.as_secs().div_ceil(60)
        );
    }
    if let Some(dir) = &report.artifacts {
        let _ = writeln!(out, "artifacts: {}", dir.display());
    }
    out
}

/// Every fault with its times (seconds since the campaign started), for
/// lining up with the history and the node logs.
pub fn timeline(report: &CampaignReport) -> String {
    let mut out = String::new();
    for (fault, recovery) in report.faults.iter().zip(&report.recoveries) {
        let _ = writeln!(
            out,
            "{:>9.3} s .. {:>9.3} s  {}{}  {}  recovered: write {} ms, read {} ms{}",
            fault.started_ns as f64 / 1e9,
            fault.healed_ns as f64 / 1e9,
            fault.kind.name(),
            if fault.combined { " (combined)" } else { "" },
            fault.description,
            milliseconds(recovery.write),
            milliseconds(recovery.read),
            fault
                .error
                .as_ref()
                .map_or(String::new(), |error| format!("  error: {error}"))
        );
    }
    out
}

/// The history, one operation a line.
pub fn history_tsv(history: &[Record]) -> String {
    let mut out = String::from(
        "invoked_ns\tcompleted_ns\tworker\tkey\tkind\tsession\tnode\toutcome\twritten\tread\tswapped\tindex\terror\n",
    );
    for record in history {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            record.invoked_ns,
            record.completed_ns,
            record.worker,
            record.key,
            record.request.kind_name(),
            record.session,
            record.node.map_or("-".into(), |node| node.to_string()),
            record.outcome.name(),
            record
                .request
                .written_value()
                .map_or("-".into(), |value| value.to_string()),
            record
                .value_read
                .map_or("-".into(), |value| value.to_string()),
            record
                .swapped
                .map_or("-".into(), |swapped| swapped.to_string()),
            record.index.map_or("-".into(), |index| index.to_string()),
            record
                .error
                .as_deref()
                .unwrap_or("-")
                .replace(['\t', '\n'], " "),
        );
    }
    out
}

/// Acknowledged operations per second over the campaign, with each fault
/// drawn as a shaded span and its name.
pub fn throughput_svg(report: &CampaignReport) -> String {
    const WIDTH: f64 = 900.0;
    const HEIGHT: f64 = 300.0;
    const MARGIN: f64 = 40.0;
    let end_ns = report
        .history
        .iter()
        .map(|record| record.completed_ns)
        .max()
        .unwrap_or(1)
        .max(1);
    let seconds = end_ns.div_ceil(1_000_000_000) as usize;
    let mut per_second = vec![0u64; seconds.max(1)];
    for record in &report.history {
        if record.outcome == crate::history::Outcome::Ok {
            let second = (record.completed_ns / 1_000_000_000) as usize;
            if let Some(slot) = per_second.get_mut(second) {
                *slot += 1;
            }
        }
    }
    let peak = per_second.iter().copied().max().unwrap_or(1).max(1) as f64;
    let x = |ns: u64| MARGIN + (ns as f64 / end_ns as f64) * (WIDTH - 2.0 * MARGIN);
    let y = |count: u64| HEIGHT - MARGIN - (count as f64 / peak) * (HEIGHT - 2.0 * MARGIN);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"10\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{MARGIN}\" y=\"15\" font-size=\"12\">acknowledged operations per second, seed {} (peak {peak})</text>\n",
        report.options.seed
    );
    for fault in &report.faults {
        let (start, end) = (
            x(fault.started_ns),
            x(fault.healed_ns.max(fault.started_ns + 50_000_000)),
        );
        let _ = writeln!(
            svg,
            "<rect x=\"{start:.1}\" y=\"{MARGIN}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" opacity=\"0.25\"><title>{}: {}</title></rect>\n\
             <text x=\"{start:.1}\" y=\"{:.1}\" transform=\"rotate(90 {start:.1} {:.1})\" fill=\"#444\">{}</text>",
            (end - start).max(1.0),
            HEIGHT - 2.0 * MARGIN,
            if fault.kind.is_network() { "#4a90d9" } else { "#d9534f" },
            fault.kind.name(),
            escape(&fault.description),
            MARGIN + 2.0,
            MARGIN + 2.0,
            fault.kind.name()
        );
    }
    let points: Vec<String> = per_second
        .iter()
        .enumerate()
        .map(|(second, count)| {
            format!(
                "{:.1},{:.1}",
                x(second as u64 * 1_000_000_000 + 500_000_000),
                y(*count)
            )
        })
        .collect();
    let axis = HEIGHT - MARGIN;
    let right = WIDTH - MARGIN;
    let label = HEIGHT - MARGIN + 14.0;
    let end_label = WIDTH - MARGIN - 20.0;
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"black\" stroke-width=\"1.5\" points=\"{points}\"/>\n\
         <line x1=\"{MARGIN}\" y1=\"{axis:.1}\" x2=\"{right:.1}\" y2=\"{axis:.1}\" stroke=\"#888\"/>\n\
         <text x=\"{MARGIN}\" y=\"{label:.1}\">0 s</text>\n<text x=\"{end_label:.1}\" y=\"{label:.1}\">{seconds} s</text>\n</svg>",
        points = points.join(" "),
    );
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
