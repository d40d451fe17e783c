//! `raftgres-bench snapshot`: how long a follower that fell behind the
//! leader's compacted log takes to receive and install a snapshot of a
//! large state machine, and what it costs in memory, against `pg_dump |
//! pg_restore` of the same table on the same machine.
//!
//! The run, in order, all of it bounded by one deadline:
//!
//! 1. start a 3-node dev cluster (each node with its own Postgres) with a
//!    small `raft.compaction_entries`, so that the log is compacted;
//! 2. stop one follower and load the rows through the leader ([`load`]);
//! 3. start the follower again and watch it catch up ([`watch`]): the
//!    leader's chunk counter, the follower's staging tables, its applied
//!    index and its log, and both processes' memory;
//! 4. compare the follower's rows with the leader's ([`rows`]): count and
//!    checksum; a run whose rows differ fails;
//! 5. the baseline ([`dump_restore`]): `pg_dump -Fc -t raftgres_kv` of the
//!    leader's database piped into `pg_restore` into a fresh database on
//!    the follower's Postgres, checked the same way; with pg_dump's default
//!    compression, then without;
//! 6. the table and the Markdown section ([`report`]).
//!
//! Everything the run starts is stopped when it ends, fails, times out or
//! is interrupted (the cluster stops its nodes and Postgres servers on
//! drop). The cluster directory is removed after a run that passed and
//! kept, with its node logs, after one that failed.

mod dump_restore;
mod load;
mod report;
mod rows;
mod watch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use raftgres::client::{Client, ClientOptions, Role};
use raftgres_devcluster::cluster::{find_raftgres_binary, DevCluster, DevClusterOptions};

pub use report::{print_table, SnapshotReport};

use dump_restore::Compression;

/// Voters of the cluster.
const NODES: usize = 3;
/// Longest wait for a leader, at start and after the load.
const LEADER_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest state machine one run loads.
pub const MEBIBYTES_MAX: u64 = 4096;
/// Most concurrent clients of the load.
pub const CLIENTS_MAX: usize = 1024;
/// Timeout of one status request while polling.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the leader is polled while its applies catch up with its
/// commits after the load.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What one run does.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// Mebibytes of values loaded (keys and row overhead come on top).
    pub mebibytes: u64,
    /// Bytes of every value.
    pub value_bytes: usize,
    /// Concurrent clients of the load, one put in flight each.
    pub clients: usize,
    /// `raft.compaction_entries` of every node.
    pub compaction_entries: u64,
    /// Where the cluster lives (created; removed after a run that passed).
    pub cluster_dir: PathBuf,
    /// Keep the cluster directory after a run that passed too (for
    /// `pg_waldump` and the node logs).
    pub keep_cluster_dir: bool,
    /// The whole run, cluster start included, is abandoned after this.
    pub timeout: Duration,
    /// How the run was started, quoted in the Markdown.
    pub command: String,
}

impl SnapshotOptions {
    /// Checks the options, with errors a person can act on.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MEBIBYTES_MAX).contains(&self.mebibytes),
            "--mebibytes must be between 1 and {MEBIBYTES_MAX}"
        );
        anyhow::ensure!(
            (1024..=load::VALUE_BYTES_MAX).contains(&self.value_bytes),
            "--value-bytes must be between 1024 and {} (a put is one log entry)",
            load::VALUE_BYTES_MAX
        );
        anyhow::ensure!(
            (1..=CLIENTS_MAX).contains(&self.clients),
            "--clients must be between 1 and {CLIENTS_MAX}"
        );
        anyhow::ensure!(
            self.compaction_entries >= 1,
            "--compaction-entries must be at least 1"
        );
        anyhow::ensure!(
            (self.rows() as u64) > 2 * self.compaction_entries,
            "{} rows do not outgrow a log compacted every {} entries: the follower would catch up from the log; lower --compaction-entries",
            self.rows(),
            self.compaction_entries
        );
        Ok(())
    }

    /// Rows loaded: the values' total over the value size, rounded up.
    pub fn rows(&self) -> usize {
        ((self.mebibytes << 20) as usize).div_ceil(self.value_bytes)
    }
}

/// Runs the benchmark; everything it started is stopped however it ends.
pub async fn run(options: SnapshotOptions) -> anyhow::Result<SnapshotReport> {
    options.validate()?;
    let started = Instant::now();
    let binary = find_raftgres_binary()?;
    std::fs::create_dir_all(&options.cluster_dir)
        .with_context(|| format!("creating {}", options.cluster_dir.display()))?;
    eprintln!(
        "snapshot bench: starting a {NODES}-node cluster in {} ({}), compaction every {} entries",
        options.cluster_dir.display(),
        binary.display(),
        options.compaction_entries
    );
    let mut cluster_options = DevClusterOptions::new(NODES, binary);
    cluster_options.leader_timeout = LEADER_TIMEOUT;
    cluster_options.log_filter = Some("info".to_string());
    cluster_options.raft_extra = vec![(
        "compaction_entries".to_string(),
        options.compaction_entries.to_string(),
    )];
    let mut cluster = DevCluster::start(&options.cluster_dir, cluster_options).await?;
    let remaining = options.timeout.saturating_sub(started.elapsed());
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(remaining, run_on(&mut cluster, &options)) => {
            outcome.unwrap_or_else(|_| Err(anyhow::anyhow!(
                "the snapshot benchmark did not finish within {:?}",
                options.timeout
            )))
        }
        _ = crate::compare::stop_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if outcome.is_err() {
        eprintln!("--- node logs (ends) ---\n{}", cluster.log_tails());
    }
    eprintln!("snapshot bench: stopping the cluster");
    let stopped = cluster.shutdown();
    let report = outcome.with_context(|| {
        format!(
            "snapshot benchmark failed; node logs and data kept in {}",
            options.cluster_dir.display()
        )
    })?;
    stopped.context("stopping the cluster")?;
    drop(cluster);
    if options.keep_cluster_dir {
        eprintln!("snapshot bench: kept {}", options.cluster_dir.display());
    } else if let Err(error) = std::fs::remove_dir_all(&options.cluster_dir) {
        eprintln!(
            "snapshot bench: could not remove {}: {error}",
            options.cluster_dir.display()
        );
    }
    Ok(report)
}

async fn run_on(
    cluster: &mut DevCluster,
    options: &SnapshotOptions,
) -> anyhow::Result<SnapshotReport> {
    let load_average_before = load_average();
    let first_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|id| *id != first_leader)
        .expect("a cluster of three nodes has a follower");
    eprintln!("snapshot bench: leader is node {first_leader}; stopping follower node {follower}");
    cluster.stop_node_gracefully(follower).await?;

    let plan = load::LoadPlan {
        rows: options.rows(),
        value_bytes: options.value_bytes,
        clients: options.clients,
    };
    let loaded = load::load(&cluster.client()?, &plan).await?;
    // Leadership may have moved between the two live nodes under load.
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let status_client = status_client(cluster)?;
    let target_index = wait_applied_all(&status_client, cluster.node_address(leader)).await?;
    let leader_rows = rows::summarise(&cluster.postgres(leader).conninfo()).await?;
    anyhow::ensure!(
        leader_rows.rows == plan.rows as i64,
        "the leader holds {} rows, {} were loaded",
        leader_rows.rows,
        plan.rows
    );
    eprintln!(
        "snapshot bench: leader node {leader} applied up to index {target_index}; table raftgres_kv is {:.1} MiB on disk; starting follower node {follower}",
        mebibytes(leader_rows.table_bytes as u64)
    );

    let transfer = watch::watch(cluster, &status_client, leader, follower, target_index).await?;
    let follower_rows = rows::summarise(&cluster.postgres(follower).conninfo()).await?;
    anyhow::ensure!(
        follower_rows.same_rows(&leader_rows),
        "the follower's rows differ from the leader's: leader {leader_rows:?}, follower {follower_rows:?}"
    );
    eprintln!("snapshot bench: the follower's rows equal the leader's ({} rows, checksum {}); now pg_dump | pg_restore", follower_rows.rows, follower_rows.checksum);

    let source = dump_restore::Server::of(cluster.postgres(leader));
    let target = dump_restore::Server::of(cluster.postgres(follower));
    let mut baselines = Vec::new();
    for compression in [Compression::Default, Compression::Off] {
        baselines.push(dump_restore::run(&source, &target, &leader_rows, compression).await?);
    }
    Ok(SnapshotReport {
        options_summary: report::OptionsSummary::from(options),
        loaded,
        leader,
        follower,
        target_index,
        leader_rows,
        transfer,
        baselines,
        load_average_before,
        load_average_after: load_average(),
    })
}

/// Replaces (or appends) the report's section of the Markdown file at
/// `path`, leaving every other section alone.
pub fn write_section(report: &SnapshotReport, path: &Path, date: &str) -> anyhow::Result<()> {
    let document = std::fs::read_to_string(path).unwrap_or_default();
    let section = report::markdown_section(report, date);
    let updated = crate::report::replace_section(&document, &report.heading(), &section);
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

/// One attempt per status request, short timeouts: the poller's own.
fn status_client(cluster: &DevCluster) -> anyhow::Result<Client> {
    let options = ClientOptions {
        attempts_max: 1,
        request_timeout: STATUS_TIMEOUT,
        connect_timeout: STATUS_TIMEOUT,
        ..ClientOptions::default()
    };
    Ok(Client::with_options(cluster.addresses(), options)?)
}

/// Waits until the leader at `address` has applied everything it has
/// committed; returns that index.
async fn wait_applied_all(client: &Client, address: &str) -> anyhow::Result<u64> {
    loop {
        if let Ok(status) = client.status(address).await {
            anyhow::ensure!(
                status.role == Role::Leader as i32,
                "node {} stopped leading before the follower restarted",
                status.node_id
            );
            if status.applied_index >= status.commit_index {
                return Ok(status.commit_index);
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

fn mebibytes(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
