//! The comparison: starts a 3-node raftgres dev cluster (its own Postgres
//! instances), takes an already running etcd cluster's endpoints and
//! member pids, measures the raw Postgres ceiling, runs every point of
//! the sweep against both systems with the identical workload, and writes
//! the JSON, CSV, SVG plot and the Markdown section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use raftgres_devcluster::cluster::{find_raftgres_binary, DevCluster, DevClusterOptions};

use crate::node_metrics::{self, NodeActivity, Samples};
use crate::process_stats::{self, ProcessSample};
use crate::report::{self, PointResult, ProcessReport, Report};
use crate::svg::{self, PlotSeries};
use crate::target::{self, System};
use crate::workload::{self, default_connections, Workload};

/// Voters of the raftgres cluster (etcd's size is the script's choice).
const RAFTGRES_NODES: usize = 3;
/// Longest wait for a raftgres leader after start.
const LEADER_TIMEOUT: Duration = Duration::from_secs(120);
/// Most points one comparison runs (each is two runs).
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
    let postgres_ceiling = if options.ceiling_seconds > 0.0 {
        eprintln!("measuring the raw Postgres ceiling on node {leader}'s instance");
        let conninfo = cluster.postgres(leader).conninfo();
        crate::postgres_ceiling::measure(
            &conninfo,
            &[1, 16, 256],
            options.ceiling_seconds,
            options.workload.value_bytes,
        )
        .await?
    } else {
        Vec::new()
    };
    let plan = plan(options);
    let sweep_start = watched.read();
    let mut points = Vec::new();
    for (position, point) in plan.iter().enumerate() {
        let workload = point_workload(&options.workload, point);
        for system in [System::Raftgres, System::Etcd] {
            let label = format!(
                "{}/{} {} {}c{}{}",
                position + 1,
                plan.len(),
                system.name(),
                point.clients,
                if point.read_percent > 0 {
                    format!(" {}% reads", point.read_percent)
                } else {
                    String::new()
                },
                if point.value_bytes != options.workload.value_bytes {
                    format!(" {} B values", point.value_bytes)
                } else {
                    String::new()
                }
            );
            let point = run_point(cluster, &watched, system, &workload, options, &label).await?;
            eprintln!(
                "{label}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                point.run.operations_per_second,
                point.run.latency.latency_ms_p50,
                point.run.latency.latency_ms_p99,
                point.run.errors
            );
            points.push(point);
        }
    }
    let sweep_end = watched.read();
    let processes = process_reports(&watched, &sweep_start, &sweep_end);
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

/// One point of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedPoint {
    /// Concurrent clients.
    pub clients: usize,
    /// Share of reads, percent.
    pub read_percent: u8,
    /// Bytes of every written value.
    pub value_bytes: usize,
}

/// The points `options` asks for, in the order they run: the write sweep,
/// then the read point, the 50/50 mix and the large-value writes.
pub fn plan(options: &CompareOptions) -> Vec<PlannedPoint> {
    let value_bytes = options.workload.value_bytes;
    let point = |clients, read_percent, value_bytes| PlannedPoint {
        clients,
        read_percent,
        value_bytes,
    };
    options
        .clients
        .iter()
        .map(|clients| point(*clients, 0, value_bytes))
        .chain(
            options
                .read_point_clients
                .map(|clients| point(clients, 100, value_bytes)),
        )
        .chain(
            options
                .mix_point_clients
                .map(|clients| point(clients, 50, value_bytes)),
        )
        .chain(
            options
                .large_value_point
                .map(|(clients, bytes)| point(clients, 0, bytes)),
        )
        .collect()
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
    workload: &Workload,
    options: &CompareOptions,
    label: &str,
) -> anyhow::Result<PointResult> {
    let (address, leader_id) = match system {
        System::Raftgres => {
            let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
            (cluster.node_address(leader).to_string(), Some(leader))
        }
        System::Etcd => (find_etcd_leader(&options.etcd_endpoints).await?, None),
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
    let (server_cpu_seconds, postgres_cpu_seconds) = match system {
        System::Raftgres => (
            sum_delta(&cpu_before.nodes, &cpu_after.nodes),
            Some(sum_delta(&cpu_before.postgres, &cpu_after.postgres)),
        ),
        System::Etcd => (
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
    if system == System::Raftgres {
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

/// The plot of the write points of both systems.
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
