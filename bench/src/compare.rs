//! The comparison: starts a 3-node raftgres dev cluster (its own Postgres
//! instances), takes an already running etcd cluster's endpoints and
//! member pids, measures the raw Postgres ceiling, runs every point of
//! the sweep against both systems with the identical workload, and writes
//! the JSON, CSV, SVG plot and the Markdown section.
//!
//! One point, the etcd-API point, runs against three systems back to back:
//! raftgres through `raftgres.v1.Kv`, raftgres through the etcd API its
//! nodes serve, and etcd, so that the etcd API's own cost on raftgres is
//! measured under the same machine load as the etcd it stands in for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use raftgres_devcluster::cluster::{find_raftgres_binary, DevCluster, DevClusterOptions};

use crate::node_metrics::{self, NodeActivity, Samples};
use crate::process_stats::{self, ProcessSample};
use crate::report::{self, PointResult, ProcessReport, Report};
use crate::svg::{self, PlotSeries};
use crate::target::{self, Cluster, System};
use crate::workload::{self, default_connections, Workload};

/// Voters of the raftgres cluster (etcd's size is the script's choice).
const RAFTGRES_NODES: usize = 3;
/// Longest wait for a raftgres leader after start.
const LEADER_TIMEOUT: Duration = Duration::from_secs(120);
/// Most points one comparison runs (each is two runs, the etcd-API point
/// three), which bounds its time.
const POINTS_MAX: usize = 16;

/// Everything `raftgres-bench compare` needs.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Client counts of the write sweep.
    pub clients: Vec<usize>,
    /// Client count of the linearizable-read point (none when `None`).
    pub read_point_clients: Option<usize>,
    /// Client count of the 50 % read, 50 % write point.
    pub mix_point_clients: Option<usize>,
    /// Clients and value bytes of the large-value write point.
    pub large_value_point: Option<(usize, usize)>,
    /// Client count of the etcd-API write point (raftgres through both
    /// APIs, and etcd).
    pub etcd_api_point_clients: Option<usize>,
    /// The workload of every point (clients and read share are overridden).
    pub workload: Workload,
    /// etcd client endpoints, `host:port`.
    pub etcd_endpoints: Vec<String>,
    /// Pids of the etcd members, in member order.
    pub etcd_pids: Vec<u32>,
    /// Where the raftgres dev cluster lives (created; its data is kept).
    pub cluster_dir: PathBuf,
    /// Seconds per batch size of the Postgres ceiling (0 skips it).
    pub ceiling_seconds: f64,
    /// Where `results.json` and `results.csv` go.
    pub output_dir: PathBuf,
    /// The plot.
    pub svg_path: PathBuf,
    /// The Markdown file whose section is replaced (none: not written).
    pub markdown_path: Option<PathBuf>,
    /// How the run was started, quoted in the Markdown.
    pub command: String,
}

/// Runs the comparison; the raftgres cluster is stopped however it ends.
pub async fn compare(options: CompareOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(
        plan(&options).len() <= POINTS_MAX,
        "at most {POINTS_MAX} points"
    );
    anyhow::ensure!(
        !options.etcd_endpoints.is_empty(),
        "no etcd endpoints given"
    );
    let binary = find_raftgres_binary()?;
    eprintln!(
        "starting a {RAFTGRES_NODES}-node raftgres cluster in {} ({})",
        options.cluster_dir.display(),
        binary.display()
    );
    let mut cluster_options = DevClusterOptions::new(RAFTGRES_NODES, binary);
    cluster_options.leader_timeout = LEADER_TIMEOUT;
    cluster_options.log_filter = Some("warn".to_string());
    let mut cluster = DevCluster::start(&options.cluster_dir, cluster_options).await?;
    let outcome = tokio::select! {
        outcome = compare_on(&mut cluster, &options) => outcome,
        _ = stop_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    eprintln!("stopping the raftgres cluster");
    let stopped = cluster.shutdown();
    let report = outcome?;
    stopped.context("stopping the raftgres cluster")?;
    Ok(report)
}

pub(crate) async fn stop_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// The processes whose CPU and memory are tracked.
struct Watched {
    ticks_per_second: f64,
    /// (name, pid) of raftgres nodes, by node id.
    nodes: BTreeMap<u64, u32>,
    /// Postgres data directory, by node id.
    postgres_dirs: BTreeMap<u64, PathBuf>,
    etcd_pids: Vec<u32>,
}

#[derive(Clone, Default)]
struct CpuReading {
    nodes: BTreeMap<u64, f64>,
    postgres: BTreeMap<u64, f64>,
    etcd: Vec<f64>,
}

impl Watched {
    fn read(&self) -> CpuReading {
        let cpu = |pid: u32| {
            process_stats::sample(pid, self.ticks_per_second)
                .map_or(0.0, |sample| sample.cpu_seconds)
        };
        CpuReading {
            nodes: self
                .nodes
                .iter()
                .map(|(id, pid)| (*id, cpu(*pid)))
                .collect(),
            postgres: self
                .postgres_dirs
                .iter()
                .map(|(id, dir)| {
                    (
                        *id,
                        process_stats::postgres_cpu_seconds(dir, self.ticks_per_second)
                            .unwrap_or(0.0),
                    )
                })
                .collect(),
            etcd: self.etcd_pids.iter().map(|pid| cpu(*pid)).collect(),
        }
    }

    fn peak(&self, pid: u32) -> Option<u64> {
        process_stats::sample(pid, self.ticks_per_second)
            .map(|sample: ProcessSample| sample.rss_kib_peak)
    }
}

async fn compare_on(cluster: &mut DevCluster, options: &CompareOptions) -> anyhow::Result<Report> {
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let mut watched = Watched {
        ticks_per_second: process_stats::clock_ticks_per_second(),
        nodes: BTreeMap::new(),
        postgres_dirs: BTreeMap::new(),
        etcd_pids: options.etcd_pids.clone(),
    };
    for id in cluster.node_ids() {
        let pid = cluster
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        watched.nodes.insert(id, pid);
        watched
            .postgres_dirs
            .insert(id, cluster.postgres(id).data_dir().to_path_buf());
    }
    let load_average_before = load_average();
    let plan = plan(options);
    let sweep_start = watched.read();
    let mut points = Vec::new();
    for (position, point) in plan.iter().enumerate() {
        let workload = point_workload(&options.workload, point);
        for system in point.kind.systems() {
            let label = format!(
                "{}/{} {}",
                position + 1,
                plan.len(),
                point_label(*system, point, &options.workload)
            );
            let result = run_point(
                cluster, &watched, *system, point, &workload, options, &label,
            )
            .await?;
            eprintln!(
                "{label}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                result.run.operations_per_second,
                result.run.latency.latency_ms_p50,
                result.run.latency.latency_ms_p99,
                result.run.errors
            );
            points.push(result);
        }
    }
    let sweep_end = watched.read();
    let processes = process_reports(&watched, &sweep_start, &sweep_end);
    // After the sweep: the gigabytes the ceiling writes and drops slowed
    // the point measured after it (one client: 620 against 773 writes/s
    // without it, same build), even behind a CHECKPOINT.
    let postgres_ceiling = if options.ceiling_seconds > 0.0 {
        eprintln!("measuring the raw Postgres ceiling on node {leader}'s instance");
        let conninfo = cluster.postgres(leader).conninfo();
        let target = crate::postgres_ceiling::CeilingTarget {
            conninfo: &conninfo,
            data_dir: Some(cluster.postgres(leader).data_dir()),
            value_bytes: options.workload.value_bytes,
            keys: options.workload.keys,
        };
        crate::postgres_ceiling::measure(&target, &[1, 16, 64, 256], options.ceiling_seconds)
            .await?
    } else {
        Vec::new()
    };
    let report = Report {
        date: command_output("date", &["-u", "+%F"]).unwrap_or_default(),
        cores: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        load_average_before,
        load_average_after: load_average(),
        etcd_version: command_output("etcd", &["--version"])
            .unwrap_or_else(|| "etcd version unknown".into()),
        workload: options.workload.clone(),
        points,
        processes,
        postgres_ceiling,
    };
    write_outputs(&report, options)?;
    Ok(report)
}

/// What a point of the comparison is for. Results are paired within a
/// kind, and only the write sweep is plotted and checked against the
/// targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    /// A write point of the client sweep.
    Sweep,
    /// Reads only.
    Read,
    /// Reads and writes, half each.
    Mix,
    /// Writes of large values.
    LargeValue,
    /// Writes through raftgres' own API, through its etcd API, and to etcd.
    EtcdApi,
}

impl PointKind {
    /// Name as in the JSON and CSV.
    pub fn name(self) -> &'static str {
        match self {
            PointKind::Sweep => "sweep",
            PointKind::Read => "read",
            PointKind::Mix => "mix",
            PointKind::LargeValue => "large-value",
            PointKind::EtcdApi => "etcd-api",
        }
    }

    /// The systems a point of this kind runs against, in order; etcd is
    /// last, and every other system's result is compared with it.
    pub fn systems(self) -> &'static [System] {
        match self {
            PointKind::EtcdApi => &[System::Raftgres, System::RaftgresEtcdApi, System::Etcd],
            _ => &[System::Raftgres, System::Etcd],
        }
    }
}

/// One point of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedPoint {
    /// What the point is for.
    pub kind: PointKind,
    /// Concurrent clients.
    pub clients: usize,
    /// Share of reads, percent.
    pub read_percent: u8,
    /// Bytes of every written value.
    pub value_bytes: usize,
}

/// The points `options` asks for, in the order they run: the write sweep,
/// then the read point, the 50/50 mix, the large-value writes and the
/// etcd-API writes.
pub fn plan(options: &CompareOptions) -> Vec<PlannedPoint> {
    let value_bytes = options.workload.value_bytes;
    let point = |kind, clients, read_percent, value_bytes| PlannedPoint {
        kind,
        clients,
        read_percent,
        value_bytes,
    };
    options
        .clients
        .iter()
        .map(|clients| point(PointKind::Sweep, *clients, 0, value_bytes))
        .chain(
            options
                .read_point_clients
                .map(|clients| point(PointKind::Read, clients, 100, value_bytes)),
        )
        .chain(
            options
                .mix_point_clients
                .map(|clients| point(PointKind::Mix, clients, 50, value_bytes)),
        )
        .chain(
            options
                .large_value_point
                .map(|(clients, bytes)| point(PointKind::LargeValue, clients, 0, bytes)),
        )
        .chain(
            options
                .etcd_api_point_clients
                .map(|clients| point(PointKind::EtcdApi, clients, 0, value_bytes)),
        )
        .collect()
}

/// The progress label of `system` at `point`: what differs from the
/// template workload.
fn point_label(system: System, point: &PlannedPoint, template: &Workload) -> String {
    let mut label = format!("{} {}c", system.name(), point.clients);
    if point.read_percent > 0 {
        label.push_str(&format!(" {}% reads", point.read_percent));
    }
    if point.value_bytes != template.value_bytes {
        label.push_str(&format!(" {} B values", point.value_bytes));
    }
    label
}

/// The workload of `point`: `template` with its clients, mix and values.
pub fn point_workload(template: &Workload, point: &PlannedPoint) -> Workload {
    Workload {
        clients: point.clients,
        connections: default_connections(point.clients),
        read_percent: point.read_percent,
        value_bytes: point.value_bytes,
        ..template.clone()
    }
}

async fn run_point(
    cluster: &mut DevCluster,
    watched: &Watched,
    system: System,
    point: &PlannedPoint,
    workload: &Workload,
    options: &CompareOptions,
    label: &str,
) -> anyhow::Result<PointResult> {
    let (address, leader_id) = match system.cluster() {
        Cluster::Raftgres => {
            let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
            (cluster.node_address(leader).to_string(), Some(leader))
        }
        Cluster::Etcd => (find_etcd_leader(&options.etcd_endpoints).await?, None),
    };
    let metrics_before = scrape_all(cluster, system).await?;
    let cpu_before = watched.read();
    let run = workload::run(system, &address, workload, label).await?;
    let cpu_after = watched.read();
    let metrics_after = scrape_all(cluster, system).await?;
    let nodes: Vec<NodeActivity> = metrics_before
        .iter()
        .filter_map(|(id, before)| {
            let after = metrics_after.get(id)?;
            Some(node_metrics::activity(
                *id,
                Some(*id) == leader_id,
                before,
                after,
            ))
        })
        .collect();
    let sum_delta = |before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>| -> f64 {
        after
            .iter()
            .map(|(id, value)| value - before.get(id).copied().unwrap_or(0.0))
            .sum()
    };
    let (server_cpu_seconds, postgres_cpu_seconds) = match system.cluster() {
        Cluster::Raftgres => (
            sum_delta(&cpu_before.nodes, &cpu_after.nodes),
            Some(sum_delta(&cpu_before.postgres, &cpu_after.postgres)),
        ),
        Cluster::Etcd => (
            cpu_after
                .etcd
                .iter()
                .zip(&cpu_before.etcd)
                .map(|(after, before)| after - before)
                .sum(),
            None,
        ),
    };
    Ok(PointResult {
        kind: point.kind,
        system,
        clients: workload.clients,
        connections: workload.connections,
        read_percent: workload.read_percent,
        value_bytes: workload.value_bytes,
        read_mode: workload.read_mode,
        warmup_seconds: workload.warmup_seconds,
        run,
        server_cpu_seconds,
        postgres_cpu_seconds,
        nodes,
    })
}

/// The etcd leader, waiting for the cluster to elect one (it may just
/// have started).
async fn find_etcd_leader(endpoints: &[String]) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + LEADER_TIMEOUT;
    loop {
        match target::find_leader(System::Etcd, endpoints).await {
            Ok(address) => return Ok(address),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(error.context(format!("no etcd leader within {LEADER_TIMEOUT:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn scrape_all(
    cluster: &DevCluster,
    system: System,
) -> anyhow::Result<BTreeMap<u64, Samples>> {
    let mut samples = BTreeMap::new();
    if system.cluster() == Cluster::Raftgres {
        for id in cluster.node_ids() {
            samples.insert(id, node_metrics::scrape(cluster.metrics_address(id)).await?);
        }
    }
    Ok(samples)
}

fn process_reports(watched: &Watched, start: &CpuReading, end: &CpuReading) -> Vec<ProcessReport> {
    let mut processes = Vec::new();
    for (id, pid) in &watched.nodes {
        processes.push(ProcessReport {
            name: format!("raftgres node {id}"),
            cpu_seconds: end.nodes[id] - start.nodes[id],
            rss_kib_peak: watched.peak(*pid),
        });
    }
    for id in watched.postgres_dirs.keys() {
        processes.push(ProcessReport {
            name: format!("postgres of node {id}"),
            cpu_seconds: end.postgres[id] - start.postgres[id],
            rss_kib_peak: None,
        });
    }
    for (position, pid) in watched.etcd_pids.iter().enumerate() {
        processes.push(ProcessReport {
            name: format!("etcd member {}", position + 1),
            cpu_seconds: end.etcd[position] - start.etcd[position],
            rss_kib_peak: watched.peak(*pid),
        });
    }
    processes
}

fn write_outputs(report: &Report, options: &CompareOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.output_dir)
        .with_context(|| format!("creating {}", options.output_dir.display()))?;
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(&options.output_dir.join("results.json"), &report.to_json())?;
    write(&options.output_dir.join("results.csv"), &report.to_csv())?;
    write(&options.svg_path, &plot(report))?;
    if let Some(markdown_path) = &options.markdown_path {
        let same_dir = options.svg_path.parent() == markdown_path.parent();
        let plot_path = match options.svg_path.file_name() {
            Some(name) if same_dir => name.to_string_lossy().into_owned(),
            _ => options.svg_path.display().to_string(),
        };
        let section = report::markdown_section(report, &plot_path, &options.command);
        // Read just before writing: another section may have changed meanwhile.
        let document = std::fs::read_to_string(markdown_path).unwrap_or_default();
        write(
            markdown_path,
            &report::replace_section(&document, report::SECTION_HEADING, &section),
        )?;
    }
    eprintln!(
        "wrote {}/results.json, results.csv and {}",
        options.output_dir.display(),
        options.svg_path.display()
    );
    Ok(())
}

/// The plot of the write sweep of both systems.
pub fn plot(report: &Report) -> String {
    let series = |system: System, color: &str| PlotSeries {
        name: system.name().to_string(),
        color: color.to_string(),
        points: report
            .points
            .iter()
            .filter(|point| point.system == system && report.in_write_sweep(point))
            .map(|point| {
                (
                    point.clients as u64,
                    point.run.operations_per_second,
                    point.run.latency.latency_ms_p99,
                )
            })
            .collect(),
    };
    let title = format!(
        "3-node raftgres vs 3-member etcd: {}-byte writes, one machine",
        report.workload.value_bytes
    );
    svg::throughput_and_p99_svg(
        &title,
        &[
            series(System::Raftgres, "#1f77b4"),
            series(System::Etcd, "#d62728"),
        ],
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn command_output(program: &str, arguments: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(arguments)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map(|line| line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::ReadMode;

    fn options() -> CompareOptions {
        CompareOptions {
            clients: vec![1, 64],
            read_point_clients: Some(64),
            mix_point_clients: None,
            large_value_point: Some((64, 1024)),
            etcd_api_point_clients: Some(64),
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
            etcd_endpoints: vec!["127.0.0.1:2379".into()],
            etcd_pids: Vec::new(),
            cluster_dir: PathBuf::from("/tmp/unused"),
            ceiling_seconds: 0.0,
            output_dir: PathBuf::from("/tmp/unused"),
            svg_path: PathBuf::from("/tmp/unused.svg"),
            markdown_path: None,
            command: "make bench".into(),
        }
    }

    #[test]
    fn the_etcd_api_point_runs_last_with_writes_against_three_systems() {
        let plan = plan(&options());
        let kinds: Vec<PointKind> = plan.iter().map(|point| point.kind).collect();
        assert_eq!(
            kinds,
            [
                PointKind::Sweep,
                PointKind::Sweep,
                PointKind::Read,
                PointKind::LargeValue,
                PointKind::EtcdApi
            ]
        );
        let etcd_api = plan[4];
        assert_eq!(
            (
                etcd_api.clients,
                etcd_api.read_percent,
                etcd_api.value_bytes
            ),
            (64, 0, 100)
        );
        assert_eq!(
            etcd_api.kind.systems(),
            [System::Raftgres, System::RaftgresEtcdApi, System::Etcd]
        );
        assert!(plan[..4]
            .iter()
            .all(|point| point.kind.systems() == [System::Raftgres, System::Etcd]));
        // Same generator, same seed: only clients and connections change.
        let workload = point_workload(&options().workload, &etcd_api);
        assert_eq!(
            (workload.clients, workload.connections, workload.seed),
            (64, 16, 1)
        );
    }

    #[test]
    fn no_etcd_api_point_when_its_clients_are_none() {
        let options = CompareOptions {
            etcd_api_point_clients: None,
            ..options()
        };
        assert!(plan(&options)
            .iter()
            .all(|point| point.kind != PointKind::EtcdApi));
    }

    #[test]
    fn a_point_label_names_the_system_and_what_differs() {
        let point = |kind, read_percent, value_bytes| PlannedPoint {
            kind,
            clients: 64,
            read_percent,
            value_bytes,
        };
        let template = options().workload;
        assert_eq!(
            point_label(
                System::RaftgresEtcdApi,
                &point(PointKind::EtcdApi, 0, 100),
                &template
            ),
            "raftgres-etcd-api 64c"
        );
        assert_eq!(
            point_label(System::Etcd, &point(PointKind::Mix, 50, 1024), &template),
            "etcd 64c 50% reads 1024 B values"
        );
    }
}
