//! The snapshot benchmark's results: a table for the terminal and the
//! Markdown section "## Snapshots: N MiB" of `docs/BENCHMARKS.md`, which
//! [`crate::report::replace_section`] puts in place, leaving every other
//! section alone.

use std::fmt::Write as _;

use super::dump_restore::{self, DumpRestoreFigures};
use super::load::Loaded;
use super::rows::{RowSummary, WalActivity};
use super::watch::{Memory, TransferFigures};
use super::{mebibytes, SnapshotOptions};

/// The options a report quotes.
#[derive(Clone, Debug)]
pub struct OptionsSummary {
    /// Mebibytes of values.
    pub mebibytes: u64,
    /// Bytes of every value.
    pub value_bytes: usize,
    /// Concurrent puts of the load.
    pub clients: usize,
    /// `raft.compaction_entries`.
    pub compaction_entries: u64,
    /// How the run was started.
    pub command: String,
}

impl From<&SnapshotOptions> for OptionsSummary {
    fn from(options: &SnapshotOptions) -> OptionsSummary {
        OptionsSummary {
            mebibytes: options.mebibytes,
            value_bytes: options.value_bytes,
            clients: options.clients,
            compaction_entries: options.compaction_entries,
            command: options.command.clone(),
        }
    }
}

/// Everything one run measured.
#[derive(Clone, Debug)]
pub struct SnapshotReport {
    /// What was asked for.
    pub options_summary: OptionsSummary,
    /// The load.
    pub loaded: Loaded,
    /// The leader during the transfer.
    pub leader: u64,
    /// The follower that caught up.
    pub follower: u64,
    /// The leader's applied index when the follower restarted.
    pub target_index: u64,
    /// The leader's rows (the follower's and the restored ones equal them).
    pub leader_rows: RowSummary,
    /// The raftgres transfer.
    pub transfer: TransferFigures,
    /// `pg_dump | pg_restore`, compressed and not.
    pub baselines: Vec<DumpRestoreFigures>,
    /// 1-minute load average before the run.
    pub load_average_before: String,
    /// 1-minute load average after it.
    pub load_average_after: String,
}

impl SnapshotReport {
    /// The section's heading.
    pub fn heading(&self) -> String {
        format!("## Snapshots: {} MiB", self.options_summary.mebibytes)
    }
}

fn seconds(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |value| format!("{value:.1}"))
}

fn mib_of_kib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The comparison table, Markdown (also what the terminal shows).
pub fn comparison_table(report: &SnapshotReport) -> String {
    let transfer = &report.transfer;
    let events = &transfer.events;
    type Cell = fn(&DumpRestoreFigures) -> String;
    let rows: Vec<(&str, String, Cell)> = vec![
        (
            "wall time, s",
            format!(
                "{} (first chunk sent to installed); {:.1} from the follower's restart to caught up",
                seconds(events.transfer_seconds()),
                events.caught_up
            ),
            |baseline| format!("{:.1}", baseline.seconds),
        ),
        (
            "data moved",
            format!(
                "{} chunks sent, {} staged, {:.1} MiB staged; {} snapshot(s) started",
                transfer.chunks_sent,
                transfer.chunks_staged,
                mebibytes(transfer.bytes_staged),
                transfer.snapshots_sent
            ),
            |_| "one custom-format archive through a pipe".to_string(),
        ),
        (
            "peak RSS of the sender, MiB",
            memory_cell("leader", &transfer.leader_memory, false),
            |baseline| format!("pg_dump {}", mib_of_kib(baseline.dump.rss_kib_peak)),
        ),
        (
            "peak RSS of the receiver, MiB",
            memory_cell("follower", &transfer.follower_memory, true),
            |baseline| format!("pg_restore {}", mib_of_kib(baseline.restore.rss_kib_peak)),
        ),
        (
            "WAL written by the receiver's Postgres, MiB (full-page images; checkpoints)",
            format!(
                "{}, of which {} while staging",
                wal_cell(&transfer.follower_wal),
                transfer
                    .follower_wal_bytes_staging
                    .map_or("-".to_string(), |bytes| format!("{:.1}", mebibytes(bytes)))
            ),
            |baseline| wal_cell(&baseline.target_wal),
        ),
        (
            "CPU s, sender / its Postgres",
            format!(
                "{:.1} / {:.1}",
                transfer.cpu.leader_node, transfer.cpu.leader_postgres
            ),
            |baseline| {
                format!(
                    "{:.1} / {:.1}",
                    baseline.dump.cpu_seconds, baseline.source_postgres_cpu_seconds
                )
            },
        ),
        (
            "CPU s, receiver / its Postgres",
            format!(
                "{:.1} / {:.1}",
                transfer.cpu.follower_node, transfer.cpu.follower_postgres
            ),
            |baseline| {
                format!(
                    "{:.1} / {:.1}",
                    baseline.restore.cpu_seconds, baseline.target_postgres_cpu_seconds
                )
            },
        ),
    ];
    let mut table = String::from("| | raftgres snapshot |");
    for baseline in &report.baselines {
        write!(table, " {} |", baseline.compression.label()).unwrap();
    }
    table.push_str("\n|---|---|");
    table.push_str(&"---|".repeat(report.baselines.len()));
    table.push('\n');
    for (what, raftgres, cell) in rows {
        write!(table, "| {what} | {raftgres} |").unwrap();
        for baseline in &report.baselines {
            write!(table, " {} |", cell(baseline)).unwrap();
        }
        table.push('\n');
    }
    table
}

fn wal_cell(wal: &WalActivity) -> String {
    format!(
        "{:.1} ({} FPI; {})",
        mebibytes(wal.bytes),
        wal.full_page_images,
        wal.checkpoints
    )
}

/// The sampled peak, and `VmHWM` (which for the leader spans the load too).
fn memory_cell(name: &str, memory: &Memory, since_restart: bool) -> String {
    let hwm_span = if since_restart {
        "since its restart"
    } else {
        "over its whole life, load included"
    };
    let at_restart = if since_restart {
        String::new()
    } else {
        format!(", {} at the restart", mib_of_kib(memory.rss_at_restart_kib))
    };
    format!(
        "{name} {} sampled (VmRSS{at_restart}); VmHWM {} {hwm_span}",
        mib_of_kib(memory.rss_sampled_max_kib),
        mib_of_kib(memory.hwm_kib)
    )
}

/// When each step of the catch-up happened, from the follower's restart.
pub fn timeline_table(report: &SnapshotReport) -> String {
    let events = &report.transfer.events;
    let steps = [
        (
            "the leader's chunk counter first moved",
            events.first_chunk_sent,
        ),
        (
            "the follower had staged its first chunk",
            events.first_chunk_staged,
        ),
        ("the follower had staged every chunk", events.all_staged),
        (
            "the follower's status first reported the leader's index (install under way)",
            events.status_applied,
        ),
        (
            "the follower logged the install (log timestamp)",
            events.installed,
        ),
        (
            "seen caught up: install logged, status at the leader's index",
            Some(events.caught_up),
        ),
    ];
    let mut table = String::from("| step | seconds after the follower's restart |\n|---|---:|\n");
    for (step, at) in steps {
        writeln!(table, "| {step} | {} |", seconds(at)).unwrap();
    }
    table
}

/// The terminal's view.
pub fn print_table(report: &SnapshotReport) {
    println!(
        "leader node {}, follower node {}; the follower's WAL from {} to {}; it logged: {}\n",
        report.leader,
        report.follower,
        report.transfer.follower_wal_positions.0,
        report.transfer.follower_wal_positions.1,
        report.transfer.installed_line.as_deref().unwrap_or("-")
    );
    println!("{}", comparison_table(report));
    println!("{}", timeline_table(report));
}

/// The whole section, heading included.
pub fn markdown_section(report: &SnapshotReport, date: &str) -> String {
    let options = &report.options_summary;
    let loaded = &report.loaded;
    let mut section = format!("{}\n\n", report.heading());
    writeln!(
        section,
        "What is measured: a follower that was stopped while {rows} rows of {value} B values \
         ({total:.0} MiB of values, pseudo-random so that nothing compresses them; table \
         `raftgres_kv` {table:.0} MiB on disk with its TOAST table and index) were loaded \
         through the leader of a 3-node cluster (each node with its own PostgreSQL, fsync on, \
         `raft.compaction_entries = {compaction}`, other settings default: \
         `raft.message_bytes_max` 1 MiB, `raft.snapshot_chunks_in_flight` 4) is started \
         again and catches up by a snapshot. The transfer is timed from the first time the \
         leader's `raftgres_snapshot_chunks_sent` moved to the timestamp of the follower's log \
         line \"installed a snapshot from the leader\"; the catch-up from the follower's restart \
         to both that line and its status reporting the leader's applied index ({index}) (the \
         status alone is not enough: it reports the snapshot's index as soon as the install \
         begins). Events are polled every 0.1 s (the leader's metrics, the follower's \
         `raftgres_snapshot_staged` and `raftgres_snapshot_chunks`, its status and its log). \
         Peak RSS: `VmRSS` of both node \
         processes sampled every 10 ms from the restart to the catch-up, and `VmHWM` at the \
         end. CPU: /proc times over the same window; Postgres counted as the postmaster and \
         all its children. WAL: `pg_stat_wal` (bytes and full-page images, FPI) and \
         `pg_stat_bgwriter` (checkpoints) of the receiving server over the same window; \
         \"while staging\" is up to the first poll that saw every chunk staged. The follower's rows were then checked against the leader's (count, \
         bytes and an md5 over every row's key, value and modification index, in key order): \
         equal.\n",
        rows = loaded.rows,
        value = options.value_bytes,
        total = mebibytes(loaded.value_bytes_total),
        table = mebibytes(report.leader_rows.table_bytes as u64),
        compaction = options.compaction_entries,
        index = report.target_index,
    )
    .unwrap();
    writeln!(
        section,
        "Baseline, in the same run after the transfer: `pg_dump --format custom --table raftgres_kv` \
         of the leader's database piped into `pg_restore --no-owner` into a fresh database on the \
         follower's PostgreSQL, each under `/usr/bin/time` (peak RSS is its `%M`), once with \
         pg_dump's default compression and once with `--compress 0` (raftgres' chunks are not \
         compressed); the restored rows were checked the same way both times: equal. {}\n",
        postgres_version()
    )
    .unwrap();
    writeln!(
        section,
        "Command:\n\n```\n{}\n```\n\nMachine: 2 cores, shared with other engineers' builds and test \
         clusters; load average {} before, {} after. Date: {date}. The load took {:.0} s \
         ({} concurrent puts).\n",
        options.command,
        report.load_average_before,
        report.load_average_after,
        loaded.seconds,
        options.clients
    )
    .unwrap();
    section.push_str(&comparison_table(report));
    section.push_str("\nThe catch-up step by step:\n\n");
    section.push_str(&timeline_table(report));
    section
}

/// `pg_dump --version`, or nothing when it cannot be run.
fn postgres_version() -> String {
    dump_restore::bin_dir()
        .and_then(|dir| {
            std::process::Command::new(dir.join("pg_dump"))
                .arg("--version")
                .output()
                .ok()
        })
        .map(|output| {
            format!(
                "Binaries: `{}`.",
                String::from_utf8_lossy(&output.stdout).trim()
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::dump_restore::Compression;
    use crate::snapshot::watch::Events;

    fn report() -> SnapshotReport {
        SnapshotReport {
            options_summary: OptionsSummary {
                mebibytes: 256,
                value_bytes: 16_384,
                clients: 64,
                compaction_entries: 1000,
                command: "make bench-snapshot".to_string(),
            },
            loaded: Loaded {
                rows: 16_384,
                value_bytes_total: 256 << 20,
                seconds: 60.0,
            },
            leader: 1,
            follower: 2,
            target_index: 16_400,
            leader_rows: RowSummary {
                rows: 16_384,
                value_bytes: 256 << 20,
                checksum: "abc".to_string(),
                table_bytes: 300 << 20,
            },
            transfer: TransferFigures {
                events: Events {
                    first_chunk_sent: Some(2.0),
                    first_chunk_staged: Some(2.5),
                    all_staged: Some(30.0),
                    wal_bytes_all_staged: Some(1 << 28),
                    status_applied: Some(31.0),
                    installed: Some(42.0),
                    caught_up: 42.3,
                },
                chunks_sent: 260,
                snapshots_sent: 1,
                ..TransferFigures::default()
            },
            baselines: vec![
                DumpRestoreFigures {
                    seconds: 20.0,
                    ..DumpRestoreFigures::default()
                },
                DumpRestoreFigures {
                    compression: Compression::Off,
                    seconds: 10.0,
                    ..DumpRestoreFigures::default()
                },
            ],
            load_average_before: "1.00".to_string(),
            load_average_after: "2.00".to_string(),
        }
    }

    #[test]
    fn the_section_has_its_heading_both_tables_and_the_transfer_time() {
        let section = markdown_section(&report(), "2026-12-03");
        assert!(section.starts_with("## Snapshots: 256 MiB\n"));
        assert!(section.contains("| wall time, s | 40.0 (first chunk sent to installed)"));
        assert!(section.contains("caught up | 20.0 | 10.0 |"));
        assert!(section.contains("| | raftgres snapshot | pg_dump \\| pg_restore | pg_dump --compress 0 \\| pg_restore |\n|---|---|---|---|\n"));
        assert!(section.contains("| the follower had staged every chunk | 30.0 |"));
        assert!(section.contains("Date: 2026-12-03"));
        let document = "# Benchmarks\n\n## Other\n\ntext\n";
        let replaced = crate::report::replace_section(document, "## Snapshots: 256 MiB", &section);
        assert!(replaced.starts_with(document));
        assert_eq!(
            crate::report::replace_section(&replaced, "## Snapshots: 256 MiB", &section),
            replaced
        );
    }
}
