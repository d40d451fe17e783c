//! Restarts the stopped follower and watches it catch up by a snapshot.
//!
//! Every [`POLL_INTERVAL`] it reads: the leader's metrics
//! (`raftgres_snapshot_chunks_sent_total`, `raftgres_snapshots_sent_total`),
//! the follower's staging tables (`raftgres_snapshot_staged`: chunks
//! staged, complete; the bytes in `raftgres_snapshot_chunks`), the
//! follower's status (applied index) and the follower's log since the
//! restart (the line "installed a snapshot from the leader"). The first
//! time each of them moves is an event of the transfer, timed from the
//! restart; the events are as precise as the poll (about 0.1 s), except
//! the install, which is timed by the log line's own timestamp.
//!
//! The follower counts as caught up once it has logged the install and its
//! status reports the leader's applied index. The status alone is not
//! enough: the core counts a snapshot as applied when it hands it to the
//! install, so the status reports the snapshot's index while the install
//! transaction still runs.
//!
//! Memory: a sampler reads `VmRSS` of the leader and the follower process
//! every [`RSS_SAMPLE_INTERVAL`] and keeps the largest; `VmHWM` (the
//! kernel's own peak) is read too: for the follower it covers its whole
//! life since the restart, for the leader its whole life (the load
//! included), which is why the sampled peak is the leader's figure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use raftgres::client::Client;
use raftgres_devcluster::cluster::DevCluster;

use super::rows::{self, WalActivity};
use crate::node_metrics;
use crate::process_stats;

/// How often the transfer is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often both processes' resident memory is read.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);
/// The transfer is declared stuck when nothing it is watched by moves for
/// this long (an install is one transaction and shows nothing while it
/// runs, so this is generous).
const STALL_MAX: Duration = Duration::from_secs(300);
/// How long the follower's status may report the leader's index without
/// the install being logged before the run concludes that the follower
/// caught up from the log instead.
const INSTALL_LINE_WAIT_MAX: Duration = Duration::from_secs(60);
const SECONDS_PER_DAY: f64 = 86_400.0;
/// The line a follower logs when a snapshot is in place.
const INSTALLED_LINE: &str = "installed a snapshot from the leader";
const CHUNKS_SENT: &str = "raftgres_snapshot_chunks_sent_total";
const SNAPSHOTS_SENT: &str = "raftgres_snapshots_sent_total";
const STAGED_SQL: &str = "
    SELECT next_seq, complete,
           (SELECT coalesce(sum(octet_length(data)), 0)::bigint FROM raftgres_snapshot_chunks),
           (SELECT wal_bytes::bigint FROM pg_stat_wal)
    FROM raftgres_snapshot_staged";
const WAL_POSITION_SQL: &str = "SELECT pg_current_wal_lsn()::text";
const ACTIVITY_SQL: &str = "
    SELECT coalesce(application_name, ''), coalesce(state, ''),
           coalesce(wait_event_type || ':' || wait_event, ''),
           coalesce(extract(epoch FROM now() - query_start)::float8, 0),
           left(coalesce(query, ''), 120)
    FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";

/// Seconds from the follower's restart to each event of the transfer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Events {
    /// The leader's chunk counter first moved.
    pub first_chunk_sent: Option<f64>,
    /// The follower had first staged a chunk.
    pub first_chunk_staged: Option<f64>,
    /// The follower had staged every chunk (`complete`).
    pub all_staged: Option<f64>,
    /// The follower's `pg_stat_wal.wal_bytes` at that poll.
    pub wal_bytes_all_staged: Option<u64>,
    /// The follower's status first reported the leader's applied index
    /// at the restart (while the install may still run).
    pub status_applied: Option<f64>,
    /// The follower logged the install (the log line's timestamp).
    pub installed: Option<f64>,
    /// Both: the install logged, and the status at the leader's index.
    pub caught_up: f64,
}

impl Events {
    /// First chunk sent to install: the transfer itself.
    pub fn transfer_seconds(&self) -> Option<f64> {
        Some(self.installed? - self.first_chunk_sent?)
    }
}

/// Memory of one process during the transfer, in kibibytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS` at the restart.
    pub rss_at_restart_kib: u64,
    /// Largest `VmRSS` sampled between the restart and the catch-up.
    pub rss_sampled_max_kib: u64,
    /// `VmHWM` at the catch-up.
    pub hwm_kib: u64,
}

/// CPU seconds spent between the restart and the catch-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// The leader process.
    pub leader_node: f64,
    /// The leader's Postgres (postmaster and every backend).
    pub leader_postgres: f64,
    /// The follower process.
    pub follower_node: f64,
    /// The follower's Postgres.
    pub follower_postgres: f64,
}

/// What the watch saw.
#[derive(Clone, Debug, Default)]
pub struct TransferFigures {
    /// When things happened.
    pub events: Events,
    /// Chunks the leader sent (its counter's increase).
    pub chunks_sent: u64,
    /// Snapshots the leader started sending (its counter's increase).
    pub snapshots_sent: u64,
    /// Chunks the follower staged (last seen before the install).
    pub chunks_staged: u64,
    /// Bytes of the staged chunks (last seen before the install).
    pub bytes_staged: u64,
    /// The leader process.
    pub leader_memory: Memory,
    /// The follower process (started at the restart).
    pub follower_memory: Memory,
    /// CPU of the four processes involved.
    pub cpu: Cpu,
    /// WAL the follower's Postgres wrote between the restart and the
    /// catch-up.
    pub follower_wal: WalActivity,
    /// Of which while staging: up to the first poll that saw every chunk
    /// staged.
    pub follower_wal_bytes_staging: Option<u64>,
    /// The follower's WAL positions at the restart and at the catch-up
    /// (for `pg_waldump` on a kept cluster directory).
    pub follower_wal_positions: (String, String),
    /// The follower's install line, as logged.
    pub installed_line: Option<String>,
}

/// One poll's readings.
#[derive(Clone, Debug, Default, PartialEq)]
struct Reading {
    chunks_sent: f64,
    snapshots_sent: f64,
    /// (chunks staged, complete, bytes staged, WAL bytes so far).
    staged: Option<(u64, bool, u64, u64)>,
    applied: Option<u64>,
    installed_line: Option<String>,
}

/// The processes and addresses the watch reads.
struct Watched {
    leader_metrics: String,
    follower_address: String,
    follower_log: PathBuf,
    follower_log_offset: u64,
    leader_postgres_dir: PathBuf,
    follower_postgres_dir: PathBuf,
    follower_conninfo: String,
    leader_conninfo: String,
}

/// Starts node `follower` again and waits until it has applied up to
/// `target_index`; fails when the follower caught up without a snapshot,
/// when nothing moves for [`STALL_MAX`], or when a node exits.
pub async fn watch(
    cluster: &mut DevCluster,
    status_client: &Client,
    leader: u64,
    follower: u64,
    target_index: u64,
) -> anyhow::Result<TransferFigures> {
    let leader_pid = cluster
        .pid(leader)
        .with_context(|| format!("leader node {leader} does not run"))?;
    let follower_postgres = cluster.postgres(follower);
    let follower_conninfo = follower_postgres.conninfo();
    let follower_postgres_dir = follower_postgres.data_dir().to_path_buf();
    let leader_postgres = cluster.postgres(leader);
    let leader_conninfo = leader_postgres.conninfo();
    let leader_postgres_dir = leader_postgres.data_dir().to_path_buf();
    let follower_log = cluster.log_path(follower);
    let follower_log_offset = std::fs::metadata(&follower_log).map_or(0, |meta| meta.len());
    let (staging, connection) = tokio_postgres::connect(&follower_conninfo, tokio_postgres::NoTls)
        .await
        .context("connecting to the follower's Postgres")?;
    tokio::spawn(connection);
    let baseline = node_metrics::scrape(cluster.metrics_address(leader)).await?;
    let ticks = process_stats::clock_ticks_per_second();
    let leader_before = process_stats::sample(leader_pid, ticks).unwrap_or_default();
    let leader_rss_at_restart = rss_kib(leader_pid).unwrap_or(0);
    let cpu_before = postgres_cpu(&leader_postgres_dir, &follower_postgres_dir, ticks);
    let wal_before = rows::wal_activity(&follower_conninfo).await?;
    let wal_position_before = wal_position(&staging).await;

    let restarted = Instant::now();
    let restarted_time_of_day = time_of_day_now();
    let follower_pid = cluster.start_node(follower)?;
    let watched = Watched {
        leader_metrics: cluster.metrics_address(leader).to_string(),
        follower_address: cluster.node_address(follower).to_string(),
        follower_log,
        follower_log_offset,
        leader_postgres_dir,
        follower_postgres_dir,
        follower_conninfo,
        leader_conninfo,
    };
    let sampler = RssSampler::start(leader_pid, follower_pid);
    let polled = poll_until_caught_up(
        cluster,
        status_client,
        &staging,
        &watched,
        &baseline,
        target_index,
        (restarted, restarted_time_of_day),
    )
    .await;
    let (leader_rss_max, follower_rss_max) = sampler.stop();
    let (events, last, staged_max) = polled?;

    let leader_after = process_stats::sample(leader_pid, ticks).unwrap_or_default();
    let follower_after = process_stats::sample(follower_pid, ticks).unwrap_or_default();
    let cpu_after = postgres_cpu(
        &watched.leader_postgres_dir,
        &watched.follower_postgres_dir,
        ticks,
    );
    let follower_wal = rows::wal_activity(&watched.follower_conninfo).await? - wal_before;
    let figures = TransferFigures {
        follower_wal_bytes_staging: events
            .wal_bytes_all_staged
            .map(|at| at.saturating_sub(wal_before.bytes)),
        follower_wal_positions: (wal_position_before, wal_position(&staging).await),
        events,
        follower_wal,
        chunks_sent: (last.chunks_sent - counter(&baseline, CHUNKS_SENT)) as u64,
        snapshots_sent: (last.snapshots_sent - counter(&baseline, SNAPSHOTS_SENT)) as u64,
        chunks_staged: staged_max.0,
        bytes_staged: staged_max.1,
        leader_memory: Memory {
            rss_at_restart_kib: leader_rss_at_restart,
            rss_sampled_max_kib: leader_rss_max,
            hwm_kib: leader_after.rss_kib_peak,
        },
        follower_memory: Memory {
            rss_at_restart_kib: 0,
            rss_sampled_max_kib: follower_rss_max,
            hwm_kib: follower_after.rss_kib_peak,
        },
        cpu: Cpu {
            leader_node: leader_after.cpu_seconds - leader_before.cpu_seconds,
            leader_postgres: cpu_after.0 - cpu_before.0,
            follower_node: follower_after.cpu_seconds,
            follower_postgres: cpu_after.1 - cpu_before.1,
        },
        installed_line: last.installed_line,
    };
    anyhow::ensure!(
        figures.snapshots_sent >= 1 && figures.events.installed.is_some(),
        "follower node {follower} caught up without installing a snapshot (leader sent {} snapshots, {} chunks): the log was not compacted past it",
        figures.snapshots_sent,
        figures.chunks_sent
    );
    Ok(figures)
}

/// Polls until the follower has applied `target_index`. Returns the
/// events, the last reading and the most chunks and bytes seen staged.
async fn poll_until_caught_up(
    cluster: &mut DevCluster,
    status_client: &Client,
    staging: &tokio_postgres::Client,
    watched: &Watched,
    baseline: &node_metrics::Samples,
    target_index: u64,
    (restarted, restarted_time_of_day): (Instant, f64),
) -> anyhow::Result<(Events, Reading, (u64, u64))> {
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{prefix:>12} {elapsed:>4} {msg}").expect("static template"),
    );
    progress.set_prefix("catching up");
    let mut events = Events::default();
    let mut staged_max = (0, 0);
    let mut last_change = Instant::now();
    let mut previous = Reading::default();
    loop {
        if let Some((node, status)) = cluster.reap_exited().into_iter().next() {
            progress.abandon();
            anyhow::bail!("node {node} exited ({status}) during the transfer");
        }
        let reading = read(status_client, staging, watched).await;
        let seconds = restarted.elapsed().as_secs_f64();
        let first = |event: &mut Option<f64>, happened: bool| {
            if happened && event.is_none() {
                *event = Some(seconds);
            }
        };
        first(
            &mut events.first_chunk_sent,
            reading.chunks_sent > counter(baseline, CHUNKS_SENT),
        );
        if let Some((chunks, complete, bytes, wal_bytes)) = reading.staged {
            first(&mut events.first_chunk_staged, chunks > 0);
            if complete && events.all_staged.is_none() {
                events.all_staged = Some(seconds);
                events.wal_bytes_all_staged = Some(wal_bytes);
            }
            staged_max = (staged_max.0.max(chunks), staged_max.1.max(bytes));
        }
        let applied = reading.applied.unwrap_or(0);
        first(&mut events.status_applied, applied >= target_index);
        if let Some(line) = &reading.installed_line {
            if events.installed.is_none() {
                let logged_at = log_time_of_day(line).unwrap_or(restarted_time_of_day + seconds);
                events.installed =
                    Some((logged_at - restarted_time_of_day).rem_euclid(SECONDS_PER_DAY));
            }
        }
        progress.set_message(format!(
            "leader sent {} chunks; follower staged {} chunks ({:.1} MiB), applied {applied}/{target_index}",
            reading.chunks_sent - counter(baseline, CHUNKS_SENT),
            staged_max.0,
            super::mebibytes(staged_max.1),
        ));
        if applied >= target_index && events.installed.is_some() {
            progress.finish();
            events.caught_up = seconds;
            return Ok((events, reading, staged_max));
        }
        if events
            .status_applied
            .is_some_and(|at| seconds - at >= INSTALL_LINE_WAIT_MAX.as_secs_f64())
        {
            progress.abandon();
            anyhow::bail!(
                "the follower's status reached index {target_index} at {:.1} s but it logged no install within {INSTALL_LINE_WAIT_MAX:?}: it caught up from the log (was the log not compacted past it?); last reading {reading:?}",
                events.status_applied.unwrap_or_default()
            );
        }
        if reading != previous {
            last_change = Instant::now();
            previous = reading;
        } else if last_change.elapsed() >= STALL_MAX {
            progress.abandon();
            anyhow::bail!(
                "the transfer is stuck: nothing moved for {STALL_MAX:?} ({seconds:.0} s after the follower's restart); last reading {previous:?}\n\
                 --- follower's Postgres sessions ---\n{}\n--- leader's Postgres sessions ---\n{}",
                activity(&watched.follower_conninfo).await,
                activity(&watched.leader_conninfo).await,
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One poll; what cannot be read is left empty.
async fn read(
    status_client: &Client,
    staging: &tokio_postgres::Client,
    watched: &Watched,
) -> Reading {
    let metrics = node_metrics::scrape(&watched.leader_metrics)
        .await
        .unwrap_or_default();
    let staged = staging
        .query_opt(STAGED_SQL, &[])
        .await
        .ok()
        .flatten()
        .map(|row| {
            let chunks: i64 = row.get(0);
            let bytes: i64 = row.get(2);
            let wal_bytes: i64 = row.get(3);
            (
                chunks as u64,
                row.get::<_, bool>(1),
                bytes as u64,
                wal_bytes as u64,
            )
        });
    let applied = status_client
        .status(&watched.follower_address)
        .await
        .ok()
        .map(|status| status.applied_index);
    Reading {
        chunks_sent: counter(&metrics, CHUNKS_SENT),
        snapshots_sent: counter(&metrics, SNAPSHOTS_SENT),
        staged,
        applied,
        installed_line: installed_line(&watched.follower_log, watched.follower_log_offset),
    }
}

fn counter(samples: &node_metrics::Samples, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// The install line the follower logged after `offset`, if any.
fn installed_line(log: &Path, offset: u64) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let since_restart = text.get(offset as usize..)?;
    String::from_utf8_lossy(since_restart)
        .lines()
        .find(|line| line.contains(INSTALLED_LINE))
        .map(str::to_string)
}

/// The server's current WAL insert position, or `?`.
async fn wal_position(client: &tokio_postgres::Client) -> String {
    match client.query_one(WAL_POSITION_SQL, &[]).await {
        Ok(row) => row.get(0),
        Err(_) => "?".to_string(),
    }
}

/// Seconds since midnight UTC now.
fn time_of_day_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() % SECONDS_PER_DAY)
}

/// Seconds since midnight UTC of a node log line, which starts with an
/// RFC 3339 timestamp (`2026-12-03T20:32:47.938404Z`).
fn log_time_of_day(line: &str) -> Option<f64> {
    let time = line.get(11..)?.split(['Z', ' ']).next()?;
    let mut parts = time.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// CPU seconds of the leader's and the follower's Postgres so far.
fn postgres_cpu(leader: &Path, follower: &Path, ticks: f64) -> (f64, f64) {
    let cpu = |dir| process_stats::postgres_cpu_seconds(dir, ticks).unwrap_or(0.0);
    (cpu(leader), cpu(follower))
}

/// What every client session of a Postgres server is doing, one a line.
async fn activity(conninfo: &str) -> String {
    let describe = async {
        let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let rows = client.query(ACTIVITY_SQL, &[]).await?;
        Ok::<_, tokio_postgres::Error>(
            rows.iter()
                .map(|row| {
                    format!(
                        "{} {} {} {:.1}s {}",
                        row.get::<_, String>(0),
                        row.get::<_, String>(1),
                        row.get::<_, String>(2),
                        row.get::<_, f64>(3),
                        row.get::<_, String>(4).replace('\n', " ")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    describe
        .await
        .unwrap_or_else(|error| format!("(cannot read: {error})"))
}

/// `VmRSS` of a process in kibibytes; `None` when it is gone.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples two processes' `VmRSS` on a thread of its own until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    maxima: Arc<[AtomicU64; 2]>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(leader_pid: u32, follower_pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let maxima = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let thread = {
            let stop = stop.clone();
            let maxima = maxima.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (maximum, pid) in maxima.iter().zip([leader_pid, follower_pid]) {
                        if let Some(kib) = rss_kib(pid) {
                            maximum.fetch_max(kib, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(RSS_SAMPLE_INTERVAL);
                }
            })
        };
        RssSampler {
            stop,
            maxima,
            thread,
        }
    }

    /// Stops sampling; returns the leader's and the follower's peaks.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        (
            self.maxima[0].load(Ordering::Relaxed),
            self.maxima[1].load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transfer_runs_from_the_first_chunk_sent_to_the_install() {
        let events = Events {
            first_chunk_sent: Some(1.5),
            installed: Some(31.5),
            ..Events::default()
        };
        assert_eq!(events.transfer_seconds(), Some(30.0));
        assert_eq!(Events::default().transfer_seconds(), None);
    }

    #[test]
    fn log_lines_are_timed_from_their_timestamp() {
        let line = "2026-12-03T20:32:47.938404Z  INFO node{node=1}: installed a snapshot";
        let seconds = log_time_of_day(line).unwrap();
        assert!((seconds - (20.0 * 3600.0 + 32.0 * 60.0 + 47.938404)).abs() < 1e-6);
        assert_eq!(log_time_of_day("no timestamp"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
