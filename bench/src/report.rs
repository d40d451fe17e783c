//! Results of a comparison and their three renderings: JSON (everything,
//! for machines), CSV (one row per point, for spreadsheets) and the
//! Markdown section "## raftgres vs etcd" of `docs/BENCHMARKS.md`, which
//! this module replaces in place and leaves every other section alone.

use std::fmt::Write;

use serde::Serialize;

use crate::compare::PointKind;
use crate::node_metrics::NodeActivity;
use crate::postgres_ceiling::{nearest, CeilingPoint, Shape};
use crate::target::{Cluster, ReadMode, System};
use crate::workload::{RunResult, Workload};

/// The heading of the section this benchmark owns.
pub const SECTION_HEADING: &str = "## raftgres vs etcd";

/// One system at one point of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct PointResult {
    /// What the point is for (the write sweep, the etcd-API point, ...).
    pub kind: PointKind,
    /// The system measured.
    pub system: System,
    /// Concurrent clients.
    pub clients: usize,
    /// Connections they shared.
    pub connections: usize,
    /// Share of reads, percent.
    pub read_percent: u8,
    /// Bytes of every written value.
    pub value_bytes: usize,
    /// How reads were served.
    pub read_mode: ReadMode,
    /// Unmeasured load before the measured window.
    pub warmup_seconds: f64,
    /// Throughput, latency and errors.
    pub run: RunResult,
    /// CPU time of the system's server processes (raftgres nodes or etcd
    /// members) during the point, summed over the cluster.
    pub server_cpu_seconds: f64,
    /// CPU time of raftgres' Postgres servers during the point (raftgres only).
    pub postgres_cpu_seconds: Option<f64>,
    /// Per-node log-write and apply averages (raftgres only).
    pub nodes: Vec<NodeActivity>,
}

impl PointResult {
    /// Server CPU time (Postgres included) per operation of the whole run
    /// (warm-up included, as the CPU time is), in microseconds.
    pub fn cpu_us_per_operation(&self) -> f64 {
        let cpu = self.server_cpu_seconds + self.postgres_cpu_seconds.unwrap_or(0.0);
        if self.run.operations_total == 0 {
            0.0
        } else {
            cpu * 1e6 / self.run.operations_total as f64
        }
    }

    fn workload_label(&self) -> String {
        let mode = match self.read_mode {
            ReadMode::Linearizable => "linearizable",
            ReadMode::Lease => "lease",
        };
        let mix = match self.read_percent {
            0 => "write".to_string(),
            100 => format!("100% {mode} read"),
            reads => format!("{reads}% {mode} read, {}% write", 100 - reads),
        };
        format!("{mix}, {} B values", self.value_bytes)
    }

    /// The workload label of the results tables, with the API raftgres
    /// was driven through where a point runs it through both.
    fn row_label(&self) -> String {
        let workload = self.workload_label();
        match (self.kind, self.system) {
            (PointKind::EtcdApi, System::Raftgres) => {
                format!("{workload}, etcd-API point: raftgres via raftgres.v1")
            }
            (PointKind::EtcdApi, _) => format!("{workload}, etcd-API point: raftgres via etcd API"),
            _ => workload,
        }
    }

    /// Whether the two points ran the same workload (kind of point,
    /// clients, mix, values).
    fn same_workload(&self, other: &PointResult) -> bool {
        self.kind == other.kind
            && self.clients == other.clients
            && self.read_percent == other.read_percent
            && self.value_bytes == other.value_bytes
    }
}

/// A process of either cluster over the whole sweep.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessReport {
    /// "raftgres node 1", "postgres of node 1", "etcd member 2".
    pub name: String,
    /// CPU time from the first point's start to the last point's end.
    pub cpu_seconds: f64,
    /// Peak resident set size over the process' life, KiB (`None` for
    /// Postgres, whose shared buffers every backend counts again).
    pub rss_kib_peak: Option<u64>,
}

/// Everything one comparison measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// UTC date of the run.
    pub date: String,
    /// Logical CPUs of the machine.
    pub cores: usize,
    /// `/proc/loadavg` before and after.
    pub load_average_before: String,
    /// See `load_average_before`.
    pub load_average_after: String,
    /// `etcd --version`, first line.
    pub etcd_version: String,
    /// The workload of every point (clients and mix vary per point).
    pub workload: Workload,
    /// Every point, both systems.
    pub points: Vec<PointResult>,
    /// Every server process.
    pub processes: Vec<ProcessReport>,
    /// Multi-row INSERT on one of raftgres' Postgres instances.
    pub postgres_ceiling: Vec<CeilingPoint>,
}

impl Report {
    /// The JSON rendering.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serialises")
    }

    /// The CSV rendering: one row per system and point.
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("system,clients,connections,read_percent,value_bytes,read_mode,operations,errors,measured_seconds,operations_per_second,latency_ms_p50,latency_ms_p90,latency_ms_p99,latency_ms_p999,latency_ms_max,server_cpu_seconds,postgres_cpu_seconds,kind\n");
        for point in &self.points {
            let latency = &point.run.latency;
            writeln!(
                csv,
                "{},{},{},{},{},{:?},{},{},{:.3},{:.1},{:.3},{:.3},{:.3},{:.3},{:.3},{:.2},{},{}",
                point.system.name(),
                point.clients,
                point.connections,
                point.read_percent,
                point.value_bytes,
                point.read_mode,
                point.run.operations,
                point.run.errors,
                point.run.measured_seconds,
                point.run.operations_per_second,
                latency.latency_ms_p50,
                latency.latency_ms_p90,
                latency.latency_ms_p99,
                latency.latency_ms_p999,
                latency.latency_ms_max,
                point.server_cpu_seconds,
                point
                    .postgres_cpu_seconds
                    .map_or(String::new(), |seconds| format!("{seconds:.2}")),
                point.kind.name()
            )
            .unwrap();
        }
        csv
    }

    /// Whether `point` belongs to the write sweep (all writes, the
    /// report's value size, one point per client count), which the plot
    /// and the targets use; the etcd-API point repeats such writes but is
    /// not part of it.
    pub fn in_write_sweep(&self, point: &PointResult) -> bool {
        point.kind == PointKind::Sweep
    }

    /// Whether the report has an etcd-API point.
    pub fn has_etcd_api_point(&self) -> bool {
        self.points
            .iter()
            .any(|point| point.system == System::RaftgresEtcdApi)
    }

    /// The pairs (raftgres, etcd) of points of the same kind with the same
    /// clients, mix and values, in sweep order. raftgres is either of its
    /// APIs: at the etcd-API point both are paired with the one etcd run.
    pub fn pairs(&self) -> Vec<(&PointResult, &PointResult)> {
        let etcd_points = || {
            self.points
                .iter()
                .filter(|point| point.system.cluster() == Cluster::Etcd)
        };
        self.points
            .iter()
            .filter(|point| point.system.cluster() == Cluster::Raftgres)
            .filter_map(|raftgres| {
                let etcd = etcd_points().find(|etcd| etcd.same_workload(raftgres))?;
                Some((raftgres, etcd))
            })
            .collect()
    }
}

fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator > 0.0 {
        format!("{:.2}", numerator / denominator)
    } else {
        "-".to_string()
    }
}

/// The results table: both systems side by side at every point.
pub fn results_table(report: &Report) -> String {
    let mut table = String::from(
        "| clients | workload | raftgres ops/s | etcd ops/s | ratio | p50 ms (r / e) | p90 ms (r / e) | p99 ms (r / e) | p99.9 ms (r / e) | errors (r / e) |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (raftgres, etcd) in report.pairs() {
        let (r, e) = (&raftgres.run.latency, &etcd.run.latency);
        writeln!(
            table,
            "| {} | {} | {:.0} | {:.0} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {} / {} |",
            raftgres.clients,
            raftgres.row_label(),
            raftgres.run.operations_per_second,
            etcd.run.operations_per_second,
            ratio(raftgres.run.operations_per_second, etcd.run.operations_per_second),
            r.latency_ms_p50,
            e.latency_ms_p50,
            r.latency_ms_p90,
            e.latency_ms_p90,
            r.latency_ms_p99,
            e.latency_ms_p99,
            r.latency_ms_p999,
            e.latency_ms_p999,
            raftgres.run.errors,
            etcd.run.errors
        )
        .unwrap();
    }
    table
}

/// Where the time and CPU went, per point.
pub fn activity_table(report: &Report) -> String {
    let mut table = String::from(
        "| clients | workload | entries/txn leader | entries/txn followers | entries per Postgres txn (leader) | applied in the log write % (leader) | log write ms leader | log write ms followers | apply ms per batch (leader) | leader log writer busy % | leader applier busy % | committed entries/s | of the log-row ceiling % | CPU s raftgres nodes | CPU s their Postgres | CPU s etcd | CPU us/op raftgres (with Postgres) | CPU us/op etcd | Postgres CPU us/op: raftgres / 3 x the write ceiling |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (raftgres, etcd) in report.pairs() {
        let leader = raftgres.nodes.iter().find(|node| node.leader);
        let followers: Vec<&NodeActivity> =
            raftgres.nodes.iter().filter(|node| !node.leader).collect();
        let follower_mean = |value: fn(&NodeActivity) -> f64| {
            if followers.is_empty() {
                0.0
            } else {
                followers.iter().map(|node| value(node)).sum::<f64>() / followers.len() as f64
            }
        };
        let committed_per_second = leader.map_or(0.0, |node| {
            node.committed_entries / run_seconds(raftgres).max(f64::MIN_POSITIVE)
        });
        writeln!(
            table,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {} |",
            raftgres.clients,
            raftgres.row_label(),
            leader.map_or(0.0, |node| node.entries_per_transaction),
            follower_mean(|node| node.entries_per_transaction),
            leader.map_or(0.0, NodeActivity::entries_per_postgres_transaction),
            leader.map_or(0.0, NodeActivity::applied_with_write_percent),
            leader.map_or(0.0, |node| node.storage_write_ms_mean),
            follower_mean(|node| node.storage_write_ms_mean),
            leader.map_or(0.0, |node| node.apply_ms_mean),
            leader.map_or(0.0, |node| busy_percent(node.log_write_transactions, node.storage_write_ms_mean, raftgres)),
            leader.map_or(0.0, |node| busy_percent(node.apply_batches, node.apply_ms_mean, raftgres)),
            committed_per_second,
            log_row_ceiling(report).map_or("-".to_string(), |ceiling| {
                format!("{:.1}", committed_per_second / ceiling * 100.0)
            }),
            raftgres.server_cpu_seconds,
            raftgres.postgres_cpu_seconds.unwrap_or(0.0),
            etcd.server_cpu_seconds,
            raftgres.cpu_us_per_operation(),
            etcd.cpu_us_per_operation(),
            postgres_against_write_ceiling(report, raftgres)
        )
        .unwrap();
    }
    table
}

/// Seconds a point ran, warm-up included (as the metric deltas and the
/// CPU times are).
fn run_seconds(point: &PointResult) -> f64 {
    point.run.measured_seconds + point.warmup_seconds
}

/// The most log rows per second Postgres committed in the ceiling run.
fn log_row_ceiling(report: &Report) -> Option<f64> {
    report
        .postgres_ceiling
        .iter()
        .filter(|point| point.shape == Shape::LogRows)
        .map(|point| point.rows_per_second)
        .max_by(f64::total_cmp)
        .filter(|rows| *rows > 0.0)
}

/// For a write point: raftgres' Postgres CPU per write (all three
/// instances, the whole run) against three times the write ceiling's
/// Postgres CPU per write at the batch size nearest the leader's entries
/// per Postgres transaction: what the three instances would spend on the
/// rows alone. "-" for points with reads or without the figures.
fn postgres_against_write_ceiling(report: &Report, point: &PointResult) -> String {
    let leader = point.nodes.iter().find(|node| node.leader);
    let (Some(postgres_seconds), Some(leader), 0) =
        (point.postgres_cpu_seconds, leader, point.read_percent)
    else {
        return "-".into();
    };
    let ceiling = nearest(
        &report.postgres_ceiling,
        Shape::Writes,
        leader.entries_per_postgres_transaction(),
    )
    .and_then(|ceiling| {
        Some((
            ceiling.rows_per_transaction,
            ceiling.postgres_cpu_us_per_row?,
        ))
    });
    match ceiling {
        Some((rows, cpu)) if point.run.operations_total > 0 => format!(
            "{:.0} / {:.0} (at {rows} per txn)",
            postgres_seconds * 1e6 / point.run.operations_total as f64,
            3.0 * cpu
        ),
        _ => "-".into(),
    }
}

/// Share of the run (warm-up included, as the metric deltas are) that a
/// one-at-a-time stage spent working: `count` operations of `mean_ms` each.
/// Near 100 % the stage is the bottleneck.
fn busy_percent(count: f64, mean_ms: f64, point: &PointResult) -> f64 {
    let run_seconds = run_seconds(point);
    if run_seconds > 0.0 {
        count * mean_ms / 1000.0 / run_seconds * 100.0
    } else {
        0.0
    }
}

/// CPU and peak memory of every process over the sweep.
pub fn process_table(report: &Report) -> String {
    let mut table =
        String::from("| process | CPU seconds (whole sweep) | peak RSS MiB |\n|---|---:|---:|\n");
    for process in &report.processes {
        writeln!(
            table,
            "| {} | {:.1} | {} |",
            process.name,
            process.cpu_seconds,
            process
                .rss_kib_peak
                .map_or("-".to_string(), |kib| format!("{:.1}", kib as f64 / 1024.0))
        )
        .unwrap();
    }
    table
}

/// The raw Postgres ceiling table.
pub fn ceiling_table(report: &Report) -> String {
    let mut table = String::from(
        "| rows | rows (writes) per transaction | transactions/s | rows (writes)/s | Postgres CPU us per row (write) |\n|---|---:|---:|---:|---:|\n",
    );
    for point in &report.postgres_ceiling {
        writeln!(
            table,
            "| {} | {} | {:.0} | {:.0} | {} |",
            point.shape.label(),
            point.rows_per_transaction,
            point.transactions_per_second,
            point.rows_per_second,
            point
                .postgres_cpu_us_per_row
                .map_or("-".to_string(), |cpu| format!("{cpu:.1}"))
        )
        .unwrap();
    }
    table
}

/// One target: its text and whether it was met.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetCheck {
    /// What the target asks and what was measured.
    pub text: String,
    /// Whether it was met.
    pub met: bool,
}

/// The four targets of the issue, checked against the write points.
pub fn target_checks(report: &Report) -> Vec<TargetCheck> {
    let writes = |clients: usize| {
        report
            .pairs()
            .into_iter()
            .find(|(raftgres, _)| raftgres.clients == clients && report.in_write_sweep(raftgres))
    };
    let mut checks = Vec::new();
    if let Some((raftgres, etcd)) = writes(1) {
        let (r, e) = (
            raftgres.run.latency.latency_ms_p50,
            etcd.run.latency.latency_ms_p50,
        );
        checks.push(TargetCheck {
            text: format!(
                "single-client write p50 at or below etcd's: {r:.2} ms against {e:.2} ms"
            ),
            met: r <= e,
        });
    }
    for clients in [64, 256] {
        if let Some((raftgres, etcd)) = writes(clients) {
            let (r, e) = (
                raftgres.run.operations_per_second,
                etcd.run.operations_per_second,
            );
            checks.push(TargetCheck {
                text: format!(
                    "write throughput at {clients} clients at least 2x etcd's: {r:.0} against {e:.0} ops/s ({}x)",
                    ratio(r, e)
                ),
                met: r >= 2.0 * e,
            });
        }
    }
    if let Some((raftgres, etcd)) = writes(256) {
        let (r, e) = (
            raftgres.run.latency.latency_ms_p99,
            etcd.run.latency.latency_ms_p99,
        );
        checks.push(TargetCheck {
            text: format!(
                "write p99 at 256 clients at or below etcd's: {r:.2} ms against {e:.2} ms"
            ),
            met: r <= e,
        });
    }
    let peak = |prefix: &str| {
        report
            .processes
            .iter()
            .filter(|process| process.name.starts_with(prefix))
            .filter_map(|process| process.rss_kib_peak)
            .max()
    };
    if let (Some(node), Some(member)) = (peak("raftgres node"), peak("etcd member")) {
        checks.push(TargetCheck {
            text: format!(
                "peak RSS of a raftgres node at or below an etcd member's: {:.1} MiB against {:.1} MiB (largest of each; Postgres not counted)",
                node as f64 / 1024.0,
                member as f64 / 1024.0
            ),
            met: node <= member,
        });
    }
    checks
}

/// The whole section, heading included. `plot_path` is the SVG's path
/// relative to the Markdown file; `command` how the numbers were made.
pub fn markdown_section(report: &Report, plot_path: &str, command: &str) -> String {
    let workload = &report.workload;
    let mut section = format!("{SECTION_HEADING}\n\n");
    writeln!(
        section,
        "What is measured: the same closed-loop workload driven through gRPC against a 3-node \
raftgres cluster (each node with its own PostgreSQL 15, fsync on, synchronous_commit on) and a \
3-member etcd cluster (default durability: fsync of its WAL on every commit), every process on \
this one machine, on loopback. Each client has one request in flight; clients share \
min(clients, 16) HTTP/2 connections opened to the leader (found before every point). Keys are \
drawn uniformly from {} keys with the same seed for both systems, values are {} bytes; writes are \
raftgres `Kv.Put` and etcd `KV.Put`, linearizable reads are raftgres `Kv.Get` (ReadIndex) and \
etcd `KV.Range` (not serializable). Each point runs {} s of warm-up, then {} s measured (at most \
{} operations); latency is an HDR histogram of every operation completed in the measured window. \
raftgres runs first at every point, then etcd.\n",
        workload.keys,
        workload.value_bytes,
        workload.warmup_seconds,
        workload.duration_seconds,
        workload.operations_max
    )
    .unwrap();
    if let Some(description) = etcd_api_point_description(report) {
        writeln!(section, "{description}\n").unwrap();
    }
    writeln!(section, "Command:\n\n```\n{command}\n```\n").unwrap();
    writeln!(
        section,
        "Machine: {} cores, shared with other engineers' builds; load average {} before, {} after. \
{}. Date: {}.\n",
        report.cores, report.load_average_before, report.load_average_after, report.etcd_version, report.date
    )
    .unwrap();
    writeln!(
        section,
        "![throughput and p99 latency against concurrent clients]({plot_path})\n"
    )
    .unwrap();
    let raftgres_api = if report.has_etcd_api_point() {
        ", through `raftgres.v1.Kv` unless the row says etcd API"
    } else {
        ""
    };
    writeln!(
        section,
        "Results (r = raftgres{raftgres_api}, e = etcd; ratio = raftgres ops/s over etcd ops/s):\n"
    )
    .unwrap();
    section.push_str(&results_table(report));
    section.push_str("\nTargets:\n\n");
    for check in target_checks(report) {
        writeln!(
            section,
            "- {}: {}",
            if check.met { "met" } else { "MISSED" },
            check.text
        )
        .unwrap();
    }
    section.push_str(
        "\nWhere raftgres' time and CPU go (deltas of each node's metrics over the whole run of a point, warm-up included; \
entries/txn is `raftgres_append_batch_entries_sum / _count` (entries per log write); entries per \
Postgres txn counts the apply transactions of their own too (appended entries over log writes plus \
`raftgres_apply_seconds_count`), and applied in the log write is \
`raftgres_applied_with_write_entries_total` over the appended entries (committed entries ride the \
next log write's transaction; only when no write waits do they get one of their own); log write is \
`raftgres_storage_write_seconds` (with the applies it carries), apply is `raftgres_apply_seconds` \
(applies of their own); busy % is transactions (or apply batches) times their mean time over the \
run: the leader writes one log batch and applies one batch at a time, so a stage near 100 % caps \
throughput; committed entries/s is the leader's `raftgres_commit_index` over the run, set against \
the most log rows per second Postgres committed in the ceiling run below; CPU from /proc over the \
whole run, warm-up included, and per operation of the whole run; Postgres counted as the postmaster \
and all its children; the last column sets the three Postgres instances' CPU per write against three \
times the write ceiling's (below) at the batch size nearest the leader's entries per Postgres txn: \
what the rows alone would cost them):\n\n",
    );
    section.push_str(&activity_table(report));
    section.push_str("\nProcesses over the whole sweep (peak RSS is `VmHWM`; for Postgres it is not shown because every backend counts the shared buffers again):\n\n");
    section.push_str(&process_table(report));
    section.push_str(
        "\nRaw Postgres ceiling, on the raftgres leader's Postgres instance with throwaway tables, \
after the sweep (before it, it slowed the first point), one client: log rows are BEGIN, one multi-row `INSERT ... VALUES` of rows \
shaped like log entries (same value size), COMMIT (the idea of the baseline in \
`bench/examples/append_bench.rs`); writes are what a plain put asks of each node's Postgres at \
the least: BEGIN, the batch's log rows, its history rows, the upsert of its keys' current rows \
(as many keys as the workload's, distinct within a transaction and spread over the key space), COMMIT; Postgres CPU is the \
instance's server processes' over each batch size:\n\n",
    );
    section.push_str(&ceiling_table(report));
    section
}

/// What the etcd-API point is, when the report has one.
fn etcd_api_point_description(report: &Report) -> Option<String> {
    let point = report
        .points
        .iter()
        .find(|point| point.system == System::RaftgresEtcdApi)?;
    Some(format!(
        "The etcd-API point ({} clients, {}) runs the same generator with the same seed against \
three systems, back to back: raftgres through `raftgres.v1.Kv`, raftgres through the etcd v3 API \
its nodes serve on the same client port (docs/ETCD.md), then etcd. The second run sends the \
raftgres leader the very requests etcd gets (`KV.Put`; reads would be `KV.Range`, serializable \
only in lease mode). Both raftgres rows of that point are compared with its one etcd run, so the \
two differ only in the API raftgres was driven through, and all three are measured under the \
same load of the machine.",
        point.clients,
        point.workload_label()
    ))
}

/// `document` with the section starting at `heading` (up to the next `## `
/// heading or the end) replaced by `section`, or `section` appended when
/// there is no such heading. Other sections are kept byte for byte.
pub fn replace_section(document: &str, heading: &str, section: &str) -> String {
    let section = format!("{}\n", section.trim_end());
    let lines: Vec<&str> = document.split_inclusive('\n').collect();
    let Some(start) = lines.iter().position(|line| line.trim_end() == heading) else {
        let separator = if document.is_empty() || document.ends_with("\n\n") {
            ""
        } else if document.ends_with('\n') {
            "\n"
        } else {
            "\n\n"
        };
        return format!("{document}{separator}{section}");
    };
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.starts_with("## "))
        .map_or(lines.len(), |offset| start + 1 + offset);
    let mut output: String = lines[..start].concat();
    output.push_str(&section);
    if end < lines.len() {
        output.push('\n');
        output.push_str(&lines[end..].concat());
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencySummary;

    fn point(system: System, clients: usize, operations_per_second: f64, p99: f64) -> PointResult {
        PointResult {
            kind: PointKind::Sweep,
            system,
            clients,
            connections: clients.min(16),
            read_percent: 0,
            value_bytes: 100,
            read_mode: ReadMode::Linearizable,
            warmup_seconds: 3.0,
            run: RunResult {
                operations: (operations_per_second * 20.0) as u64,
                errors: 0,
                operations_total: (operations_per_second * 20.0) as u64,
                measured_seconds: 20.0,
                operations_per_second,
                latency: LatencySummary {
                    count: (operations_per_second * 20.0) as u64,
                    latency_ms_p50: p99 / 4.0,
                    latency_ms_p99: p99,
                    ..LatencySummary::default()
                },
                first_error: None,
            },
            server_cpu_seconds: 2.0,
            postgres_cpu_seconds: (system.cluster() == Cluster::Raftgres).then_some(1.0),
            nodes: Vec::new(),
        }
    }

    fn report() -> Report {
        Report {
            date: "2026-11-25".into(),
            cores: 2,
            load_average_before: "0.5".into(),
            load_average_after: "2.0".into(),
            etcd_version: "etcd Version: 3.4.23".into(),
            workload: Workload {
                clients: 1,
                connections: 1,
                duration_seconds: 20.0,
                warmup_seconds: 3.0,
                operations_max: 1_000_000,
                value_bytes: 100,
                keys: 10_000,
                read_percent: 0,
                read_mode: ReadMode::Linearizable,
                seed: 1,
            },
            points: vec![
                point(System::Raftgres, 1, 300.0, 8.0),
                point(System::Etcd, 1, 250.0, 9.0),
                point(System::Raftgres, 256, 30_000.0, 20.0),
                point(System::Etcd, 256, 10_000.0, 40.0),
            ],
            processes: vec![
                ProcessReport {
                    name: "raftgres node 1".into(),
                    cpu_seconds: 3.0,
                    rss_kib_peak: Some(20_480),
                },
                ProcessReport {
                    name: "etcd member 1".into(),
                    cpu_seconds: 4.0,
                    rss_kib_peak: Some(40_960),
                },
            ],
            postgres_ceiling: vec![
                CeilingPoint {
                    shape: Shape::LogRows,
                    rows_per_transaction: 256,
                    transactions_per_second: 300.0,
                    rows_per_second: 76_800.0,
                    postgres_cpu_us_per_row: Some(2.5),
                },
                CeilingPoint {
                    shape: Shape::Writes,
                    rows_per_transaction: 16,
                    transactions_per_second: 500.0,
                    rows_per_second: 8_000.0,
                    postgres_cpu_us_per_row: Some(20.0),
                },
                CeilingPoint {
                    shape: Shape::Writes,
                    rows_per_transaction: 64,
                    transactions_per_second: 200.0,
                    rows_per_second: 12_800.0,
                    postgres_cpu_us_per_row: Some(15.0),
                },
            ],
        }
    }

    /// The leader's activity over a point: `entries` committed and
    /// appended in log writes of `per_write` entries, nothing applied
    /// alone.
    fn leader_activity(entries: f64, per_write: f64) -> NodeActivity {
        NodeActivity {
            node_id: 1,
            leader: true,
            log_write_transactions: entries / per_write,
            entries_per_transaction: per_write,
            appended_entries: entries,
            committed_entries: entries,
            ..NodeActivity::default()
        }
    }

    #[test]
    fn committed_entries_and_postgres_cpu_are_set_against_the_ceilings() {
        let mut report = report();
        // 256 clients: 600,000 writes in 20 s measured plus 3 s of warm-up
        // (the metrics and CPU cover both), 50 per log write, 30 s of
        // Postgres CPU.
        report.points[2].nodes = vec![leader_activity(690_000.0, 50.0)];
        report.points[2].postgres_cpu_seconds = Some(30.0);
        let table = activity_table(&report);
        let row = table
            .lines()
            .find(|line| line.starts_with("| 256 |"))
            .unwrap();
        let cells: Vec<&str> = row.split(" | ").collect();
        // 690,000 / 23 s = 30,000 entries/s: 39.1 % of 76,800 log rows/s;
        // 50 per transaction is nearest the 64-write ceiling: 3 x 15 us
        // against 30 s / 600,000 = 50 us.
        assert_eq!(cells[11], "30000", "{row}");
        assert_eq!(cells[12], "39.1", "{row}");
        assert!(row.ends_with("| 50 / 45 (at 64 per txn) |"), "{row}");
        // Without the leader's figures (the 1-client point) or for reads:
        // no comparison made up.
        let one = table
            .lines()
            .find(|line| line.starts_with("| 1 |"))
            .unwrap();
        assert!(one.ends_with("| - |"), "{one}");
        report.points[2].read_percent = 50;
        assert_eq!(
            postgres_against_write_ceiling(&report, &report.points[2]),
            "-"
        );
        report.points[2].read_percent = 0;
        // No log-row ceiling measured: no share of it.
        report.postgres_ceiling.clear();
        let table = activity_table(&report);
        let row = table
            .lines()
            .find(|line| line.starts_with("| 256 |"))
            .unwrap();
        assert_eq!(row.split(" | ").nth(12), Some("-"), "{row}");
        let header = table.lines().next().unwrap();
        assert_eq!(header.split('|').count(), row.split('|').count());
    }

    #[test]
    fn the_ceiling_table_names_each_shape() {
        let table = ceiling_table(&report());
        assert!(
            table.contains("| log rows | 256 | 300 | 76800 | 2.5 |"),
            "{table}"
        );
        assert!(table.contains(
            "| writes (log row, history row, upsert of the key's row) | 64 | 200 | 12800 | 15.0 |"
        ));
    }

    #[test]
    fn json_holds_every_point_and_round_trips_through_a_parser() {
        let json: serde_json::Value = serde_json::from_str(&report().to_json()).unwrap();
        let points = json["points"].as_array().unwrap();
        assert_eq!(points.len(), 4);
        assert_eq!(points[0]["system"], "raftgres");
        assert_eq!(points[1]["system"], "etcd");
        assert_eq!(points[2]["clients"], 256);
        assert_eq!(points[2]["run"]["latency"]["latency_ms_p99"], 20.0);
        assert_eq!(points[1]["postgres_cpu_seconds"], serde_json::Value::Null);
        assert_eq!(json["workload"]["read_mode"], "linearizable");
        assert_eq!(json["postgres_ceiling"][0]["rows_per_second"], 76_800.0);
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_point() {
        let csv = report().to_csv();
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 5);
        let columns = rows[0].split(',').count();
        assert!(rows.iter().all(|row| row.split(',').count() == columns));
        assert!(rows[3].starts_with("raftgres,256,16,0,100,Linearizable,600000,0,"));
        assert!(rows[0].ends_with(",postgres_cpu_seconds,kind"));
        assert!(rows[3].ends_with(",1.00,sweep"), "{}", rows[3]);
    }

    #[test]
    fn the_section_pairs_systems_and_checks_targets() {
        let report = report();
        assert_eq!(report.pairs().len(), 2);
        let section = markdown_section(&report, "bench-throughput.svg", "make bench");
        assert!(section.starts_with(SECTION_HEADING));
        assert!(section.contains("| 256 | write, 100 B values | 30000 | 10000 | 3.00 |"));
        assert!(section.contains(
            "![throughput and p99 latency against concurrent clients](bench-throughput.svg)"
        ));
        let checks = target_checks(&report);
        assert_eq!(checks.len(), 4, "{checks:?}");
        assert!(checks.iter().all(|check| check.met), "{checks:?}");
        // Half a CPU-second per 1000 writes: 3 s of CPU over 6000 writes.
        assert!((report.points[0].cpu_us_per_operation() - 500.0).abs() < 1e-9);
    }

    #[test]
    fn a_mix_or_large_value_point_pairs_with_its_own_kind_and_stays_out_of_the_targets() {
        let mut report = report();
        // Same clients as a sweep point, 1 KiB values: far slower, and it
        // must not stand in for the sweep's 256-client point.
        for system in [System::Raftgres, System::Etcd] {
            let mut large = point(system, 256, 100.0, 900.0);
            large.kind = PointKind::LargeValue;
            large.value_bytes = 1024;
            report.points.push(large);
            let mut mix = point(system, 256, 50.0, 1.0);
            mix.kind = PointKind::Mix;
            mix.read_percent = 50;
            report.points.push(mix);
        }
        let pairs = report.pairs();
        assert_eq!(pairs.len(), 4);
        assert!(pairs
            .iter()
            .all(|(raftgres, etcd)| raftgres.same_workload(etcd)));
        let section = markdown_section(&report, "bench-throughput.svg", "make bench");
        assert!(section.contains("| 256 | write, 1024 B values | 100 | 100 |"));
        assert!(section.contains("| 256 | 50% linearizable read, 50% write, 100 B values |"));
        let checks = target_checks(&report);
        assert!(checks.iter().all(|check| check.met), "{checks:?}");
        let sweep: Vec<usize> = report
            .points
            .iter()
            .filter(|point| report.in_write_sweep(point))
            .map(|point| point.clients)
            .collect();
        assert_eq!(sweep, vec![1, 1, 256, 256]);
    }

    /// The etcd-API point: raftgres through both APIs and etcd, 64 clients
    /// writing, as the sweep's 64-client point but measured again.
    fn with_etcd_api_point(mut report: Report) -> Report {
        for (system, operations_per_second) in [
            (System::Raftgres, 5_000.0),
            (System::RaftgresEtcdApi, 4_000.0),
            (System::Etcd, 8_000.0),
        ] {
            if system != System::RaftgresEtcdApi {
                report.points.push(point(system, 64, 1.0, 1.0));
            }
            let mut etcd_api = point(system, 64, operations_per_second, 10.0);
            etcd_api.kind = PointKind::EtcdApi;
            report.points.push(etcd_api);
        }
        report
    }

    #[test]
    fn the_etcd_api_point_has_a_row_per_raftgres_api_against_its_own_etcd_run() {
        let report = with_etcd_api_point(report());
        let pairs: Vec<(System, usize, f64, f64)> = report
            .pairs()
            .iter()
            .filter(|(raftgres, _)| raftgres.kind == PointKind::EtcdApi)
            .map(|(raftgres, etcd)| {
                assert_eq!(etcd.kind, PointKind::EtcdApi);
                (
                    raftgres.system,
                    raftgres.clients,
                    raftgres.run.operations_per_second,
                    etcd.run.operations_per_second,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                (System::Raftgres, 64, 5_000.0, 8_000.0),
                (System::RaftgresEtcdApi, 64, 4_000.0, 8_000.0),
            ]
        );
        let table = results_table(&report);
        assert!(table.contains(
            "| 64 | write, 100 B values, etcd-API point: raftgres via raftgres.v1 | 5000 | 8000 | 0.62 |"
        ));
        assert!(table.contains(
            "| 64 | write, 100 B values, etcd-API point: raftgres via etcd API | 4000 | 8000 | 0.50 |"
        ));
        // The sweep's own 64-client row is paired with the sweep's etcd run.
        assert!(table.contains("| 64 | write, 100 B values | 1 | 1 | 1.00 |"));
        let section = markdown_section(&report, "bench-throughput.svg", "make bench");
        assert!(section.contains("The etcd-API point (64 clients, write, 100 B values)"));
        assert!(section.contains(
            "Results (r = raftgres, through `raftgres.v1.Kv` unless the row says etcd API, e = etcd;"
        ));
        assert!(activity_table(&report).contains("etcd-API point: raftgres via etcd API"));
        // Neither the plot nor the targets see it: they take the sweep.
        assert!(
            report
                .points
                .iter()
                .filter(|point| report.in_write_sweep(point))
                .all(|point| point.kind == PointKind::Sweep
                    && point.system != System::RaftgresEtcdApi)
        );
        assert!(target_checks(&report).iter().any(
            |check| check.text.contains("at 64 clients") && check.text.contains("1 against 1")
        ));
        // JSON and CSV name the system and the kind of point.
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let last = json["points"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (last["system"].as_str(), last["kind"].as_str()),
            (Some("etcd"), Some("etcd-api"))
        );
        assert!(report
            .to_csv()
            .lines()
            .any(|row| row.starts_with("raftgres-etcd-api,64,16,0,100,")
                && row.ends_with(",etcd-api")));
    }

    #[test]
    fn without_an_etcd_api_point_the_section_does_not_mention_one() {
        let section = markdown_section(&report(), "bench-throughput.svg", "make bench");
        assert!(!section.contains("etcd-API point"));
        assert!(section.contains("Results (r = raftgres, e = etcd;"));
    }

    #[test]
    fn replacing_the_section_keeps_the_others_intact() {
        let storage = "## Storage append\n\nkeep | this\n";
        let document = format!("# Benchmarks\n\n{storage}\n## raftgres vs etcd\n\nold numbers\n");
        let replaced = replace_section(&document, SECTION_HEADING, "## raftgres vs etcd\n\nnew");
        assert_eq!(
            replaced,
            format!("# Benchmarks\n\n{storage}\n## raftgres vs etcd\n\nnew\n")
        );
        // Before another section: that one survives too.
        let first = format!("# Benchmarks\n\n## raftgres vs etcd\n\nold\n\n{storage}");
        let replaced = replace_section(&first, SECTION_HEADING, "## raftgres vs etcd\n\nnew\n");
        assert_eq!(
            replaced,
            format!("# Benchmarks\n\n## raftgres vs etcd\n\nnew\n\n{storage}")
        );
        // Missing: appended after a blank line.
        let appended = replace_section(
            &format!("# Benchmarks\n\n{storage}"),
            SECTION_HEADING,
            "## raftgres vs etcd\n",
        );
        assert_eq!(
            appended,
            format!("# Benchmarks\n\n{storage}\n## raftgres vs etcd\n")
        );
    }
}
