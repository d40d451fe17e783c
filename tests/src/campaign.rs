//! One nemesis campaign: a cluster of real nodes behind fault-injecting
//! proxies, the workload recording its history, the nemesis applying
//! faults from a seed, then healing, convergence, and every check.
//!
//! ```text
//!   start cluster (peers through ProxyMesh) ── workload ──► history
//!        │                                        ▲ (address book)
//!        └── nemesis: fault, hold, heal, quiet ───┘  (seeded schedule)
//!   heal all ─► wait for a leader ─► settle the membership ─► stop workload
//!   ─► wait until every member applied the same index ─► read each
//!   member's Postgres ─► checks ─► report
//! ```
//!
//! Membership faults add and remove nodes: the workers' address book
//! follows every change, and the final checks cover the members the
//! leader lists at the end (every one of them, a node added during the
//! campaign included; none that was removed).
//!
//! One check is reported and not asserted (docs/NEMESIS.md): recovery
//! within two election timeouts of every fault, which pauses of the leader
//! and faults of its Postgres still miss.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use raftgres_proto::v1::ReadMode;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checks::convergence::{read_database_state, DatabaseState};
use crate::checks::{self, Violation};
use crate::history::{Clock, Outcome, Record, Request};
use crate::nemesis::{self, membership, FaultEvent, FaultKind};
use crate::proxy::ProxyMesh;
use crate::workload::{AddressBook, Workload, WorkloadOptions};
use crate::TestCluster;

/// How a campaign runs.
#[derive(Clone, Debug)]
pub struct CampaignOptions {
    /// Seeds the fault schedule and the workers' choices.
    pub seed: u64,
    /// Voters (3 or 5).
    pub nodes: usize,
    /// How long the workload and the nemesis run.
    pub duration: Duration,
    /// The fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// How long a fault is held: drawn between these.
    pub hold_min: Duration,
    /// Upper end of the hold.
    pub hold_max: Duration,
    /// Quiet time after each heal: drawn between these.
    pub quiet_min: Duration,
    /// Upper end of the quiet time.
    pub quiet_max: Duration,
    /// Chance that a process fault comes with a network fault.
    pub combine_probability: f64,
    /// The workers.
    pub workload: WorkloadOptions,
    /// `raft.election_ticks_max` of every node (the recovery target is two
    /// of these).
    pub election_ticks_max: u64,
    /// Linearizability search budget per key.
    pub linearizability_steps_max: u64,
    /// Show a progress bar.
    pub progress: bool,
    /// Where history, report and logs go when the campaign fails (and
    /// always, when `keep_artifacts`).
    pub artifacts_dir: PathBuf,
    /// Keep artifacts of a passing campaign too.
    pub keep_artifacts: bool,
    /// The nodes' log filter (`RUST_LOG` syntax).
    pub log_filter: String,
}

impl CampaignOptions {
    /// A short campaign of every fault kind.
    pub fn new(seed: u64, duration: Duration) -> CampaignOptions {
        CampaignOptions {
            seed,
            nodes: 3,
            duration,
            faults: FaultKind::ALL.to_vec(),
            hold_min: Duration::from_millis(1500),
            hold_max: Duration::from_secs(4),
            quiet_min: Duration::from_millis(500),
            quiet_max: Duration::from_secs(2),
            combine_probability: 0.2,
            workload: WorkloadOptions::default(),
            election_ticks_max: 20,
            linearizability_steps_max: 2_000_000,
            progress: false,
            artifacts_dir: std::env::temp_dir().join("raftgres-nemesis"),
            keep_artifacts: false,
            log_filter: "info".into(),
        }
    }

    /// Two maximum election timeouts: the recovery target.
    pub fn recovery_target(&self) -> Duration {
        Duration::from_millis(2 * self.election_ticks_max * crate::TICK_MS)
    }
}

/// Recovery after one fault: from its start to the first acknowledged
/// write and the first answered linearizable read invoked after it.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The fault's kind (`None` for a combination).
    pub kind: Option<FaultKind>,
    /// To the next acknowledged write.
    pub write: Option<Duration>,
    /// To the next answered linearizable read.
    pub read: Option<Duration>,
}

/// What a campaign saw and concluded.
#[derive(Debug)]
pub struct CampaignReport {
    /// The options it ran with.
    pub options: CampaignOptions,
    /// Every operation.
    pub history: Vec<Record>,
    /// Every fault.
    pub faults: Vec<FaultEvent>,
    /// Recovery per fault, in fault order.
    pub recoveries: Vec<Recovery>,
    /// Asserted checks that failed.
    pub violations: Vec<Violation>,
    /// Checks that are reported, not asserted (see the module doc).
    pub reported: Vec<Violation>,
    /// Operations the linearizability search judged, and whether it gave up.
    pub linearizability: checks::linearizable::Coverage,
    /// Where the artifacts were written, if they were.
    pub artifacts: Option<PathBuf>,
    /// Each node's final database state.
    pub states: BTreeMap<u64, DatabaseState>,
    /// The final members, as the leader listed them (empty when it could
    /// not be read).
    pub members: BTreeSet<u64>,
}

impl CampaignReport {
    /// Whether every asserted check held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Upper bound of the time after the end of the campaign for the cluster
/// to elect a leader and converge.
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// Recovery after a fault is asserted to come within the fault's hold plus
/// this (the target, two election timeouts, is reported).
const RECOVERY_AFTER_HEAL_MAX: Duration = Duration::from_secs(20);

/// Runs one campaign.
pub async fn run(options: CampaignOptions) -> CampaignReport {
    let mesh = ProxyMesh::new();
    let election_ticks_max = options.election_ticks_max;
    let log_filter = options.log_filter.clone();
    let mut cluster = TestCluster::start_with(
        &format!("nemesis-{}", options.seed),
        options.nodes,
        |cluster_options| {
            mesh.install(cluster_options);
            cluster_options.log_filter = Some(log_filter);
            cluster_options
                .raft_extra
                .push(("election_ticks_max".into(), election_ticks_max.to_string()));
        },
    )
    .await;
    let clock = Clock::start();
    let deadline = Instant::now() + options.duration;
    let book = AddressBook::new(addresses_of(&cluster));
    let workload = Workload::start(
        book.clone(),
        options.workload.clone(),
        options.seed,
        clock,
        deadline + SETTLE_MAX,
    );
    let progress = options.progress.then(|| progress_bar(&options));
    let faults = run_nemesis(
        &options,
        &mut cluster,
        &mesh,
        clock,
        deadline,
        &workload,
        &book,
        progress.as_ref(),
    )
    .await;
    mesh.heal();
    if let Some(bar) = &progress {
        bar.set_message("settling");
    }
    let settled = settle(&mut cluster, options.nodes).await;
    book.set(addresses_of(&cluster));
    wait_for_recovery(&workload).await;
    let history = workload.finish().await;
    if let Some(bar) = progress {
        bar.finish_with_message("checking");
    }
    let states = match settled {
        Ok(()) => converged_states(&mut cluster, &mesh).await,
        Err(error) => Err(error),
    };
    let logs = node_logs(&cluster);
    let mut report = judge(options, history, faults, states, &logs);
    // The node logs are copied out, so the cluster directory can go.
    if !report.passed() || report.options.keep_artifacts {
        report.artifacts = Some(write_artifacts(&report, &cluster));
    }
    report
}

fn progress_bar(options: &CampaignOptions) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(options.duration.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} s  {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Every node of the test cluster, by id, at its client address.
fn addresses_of(cluster: &TestCluster) -> BTreeMap<u64, String> {
    cluster
        .node_ids()
        .into_iter()
        .map(|id| (id, cluster.node_address(id).to_string()))
        .collect()
}

/// Applies faults until `deadline`, keeping `book` on the nodes the
/// cluster has; returns what it did.
#[allow(clippy::too_many_arguments)]
async fn run_nemesis(
    options: &CampaignOptions,
    cluster: &mut TestCluster,
    mesh: &ProxyMesh,
    clock: Clock,
    deadline: Instant,
    workload: &Workload,
    book: &AddressBook,
    progress: Option<&indicatif::ProgressBar>,
) -> Vec<FaultEvent> {
    let mut random = ChaCha8Rng::seed_from_u64(options.seed);
    let mut events = Vec::new();
    let started = Instant::now();
    let show = |faults: usize, message: String| {
        if let Some(bar) = progress {
            let line = format!(
                "{} ops ({} ok), {faults} faults; {message}",
                workload.counters.operations.load(Ordering::Relaxed),
                workload.counters.ok.load(Ordering::Relaxed),
            );
            bar.set_position(started.elapsed().as_secs());
            if bar.is_hidden() {
                // Not a terminal (CI, a log file): one line per step instead.
                eprintln!("[{:>5} s] {line}", started.elapsed().as_secs());
            }
            bar.set_message(line);
        }
    };
    // Let the workload reach a steady state before the first fault.
    sleep_until_or(deadline, Instant::now() + options.quiet_max).await;
    // Bounded by time, and by count in case every draw is instant.
    for _ in 0..100_000 {
        if Instant::now() + options.hold_min >= deadline {
            break;
        }
        let first = *options.faults.choose(&mut random).expect("a fault kind");
        let mut kinds = vec![first];
        if random.gen_bool(options.combine_probability) {
            let partner: Vec<FaultKind> = options
                .faults
                .iter()
                .copied()
                .filter(|kind| {
                    kind.is_network() != first.is_network() && kind.combines() && first.combines()
                })
                .collect();
            if let Some(second) = partner.choose(&mut random) {
                kinds.push(*second);
            }
        }
        let combined = kinds.len() > 1;
        let mut applied = Vec::new();
        for kind in kinds {
            let started_ns = clock.now_ns();
            let result = nemesis::apply(kind, cluster, mesh, &mut random).await;
            book.set(addresses_of(cluster));
            let (fault, description, error) = match result {
                Ok((fault, description)) => (Some(fault), description, None),
                Err(error) => (None, String::new(), Some(error)),
            };
            show(events.len(), format!("{} {description}", kind.name()));
            applied.push((
                fault,
                FaultEvent {
                    kind,
                    combined,
                    description,
                    started_ns,
                    healed_ns: started_ns,
                    error,
                },
            ));
        }
        let hold = random.gen_range(options.hold_min..=options.hold_max);
        sleep_until_or(deadline, Instant::now() + hold).await;
        // Last applied, first healed: a membership change is healed once
        // the network fault applied around it is gone.
        let mut healed = Vec::new();
        for (fault, mut event) in applied.into_iter().rev() {
            if let Some(fault) = fault {
                if let Err(error) = nemesis::heal(&fault, cluster, mesh).await {
                    event.error.get_or_insert(format!("healing: {error}"));
                }
            }
            if event.kind.is_membership() {
                // Whatever a defeated step left, the next fault starts
                // from a settled membership of the campaign's size.
                if let Err(error) = membership::reconcile(cluster, options.nodes).await {
                    event.error.get_or_insert(format!("settling: {error}"));
                }
            }
            book.set(addresses_of(cluster));
            event.healed_ns = clock.now_ns();
            healed.push(event);
        }
        healed.reverse();
        events.extend(healed);
        show(events.len(), "healed".into());
        let quiet = random.gen_range(options.quiet_min..=options.quiet_max);
        sleep_until_or(deadline, Instant::now() + quiet).await;
    }
    events
}

async fn sleep_until_or(deadline: Instant, until: Instant) {
    tokio::time::sleep_until(until.min(deadline).into()).await;
}

/// Keeps the workload going after the last heal until writes and
/// linearizable reads are answered again (a fault cut short by the end of
/// the campaign must still show its recovery), bounded by
/// [`RECOVERY_AFTER_HEAL_MAX`]. Each worker has at most one operation in
/// flight, so once a worker's worth of new answers of each kind came, some
/// were invoked after the heal.
async fn wait_for_recovery(workload: &Workload) {
    let counters = &workload.counters;
    let writes = counters.ok_writes.load(Ordering::Relaxed);
    let reads = counters.ok_linearizable_reads.load(Ordering::Relaxed);
    let enough = 2 * workload.workers() as u64;
    let deadline = Instant::now() + RECOVERY_AFTER_HEAL_MAX;
    while Instant::now() < deadline {
        let new_writes = counters.ok_writes.load(Ordering::Relaxed) - writes;
        let new_reads = counters.ok_linearizable_reads.load(Ordering::Relaxed) - reads;
        if new_writes >= enough && new_reads >= enough {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every node running and agreeing on a leader, within [`SETTLE_MAX`],
/// and the membership settled on `voters` voters that are exactly the
/// nodes the test cluster runs.
async fn settle(cluster: &mut TestCluster, voters: usize) -> Result<(), String> {
    for id in cluster.node_ids() {
        if !cluster.is_running(id) {
            cluster.start_node(id).map_err(|e| e.to_string())?;
        }
    }
    cluster
        .wait_for_leader(SETTLE_MAX)
        .await
        .map_err(|error| error.to_string())?;
    membership::reconcile(cluster, voters)
        .await
        .map(|_| ())
        .map_err(|error| format!("settling the membership: {error}"))
}

/// What the nodes held at the end.
#[derive(Debug)]
struct FinalState {
    /// Each node's database, read directly.
    states: BTreeMap<u64, DatabaseState>,
    /// Why the members did not reach one applied index, if they did not.
    stuck: Option<String>,
    /// The members the leader listed.
    members: BTreeSet<u64>,
}

/// Reads the final members from the leader, waits (bounded) until every
/// member applied the same index with no client traffic, then reads every
/// node's Postgres. When they do not get there, what each member last
/// said goes into the error list.
async fn converged_states(
    cluster: &mut TestCluster,
    mesh: &ProxyMesh,
) -> Result<FinalState, String> {
    let deadline = Instant::now() + SETTLE_MAX;
    let members = final_members(cluster, deadline).await?;
    // Traffic on each link a while before the end of the wait, to tell a
    // node that sends nothing from a link that carries nothing.
    let mut traffic_before = None;
    let stuck = loop {
        let mut statuses = cluster.statuses().await;
        // A node the test cluster still runs but the membership no longer
        // lists owes no convergence (and is reported missing from neither).
        statuses.retain(|(id, _)| members.contains(id));
        let missing: Vec<u64> = members
            .iter()
            .copied()
            .filter(|id| !statuses.iter().any(|(node, _)| node == id))
            .collect();
        let applied: Vec<Option<u64>> = statuses
            .iter()
            .map(|(_, status)| status.as_ref().ok().map(|status| status.applied_index))
            .collect();
        let commits: Vec<Option<u64>> = statuses
            .iter()
            .map(|(_, status)| status.as_ref().ok().map(|status| status.commit_index))
            .collect();
        let all_equal = missing.is_empty()
            && applied
                .iter()
                .all(|index| index.is_some() && *index == applied[0])
            && commits.iter().all(|index| *index == applied[0]);
        if all_equal {
            break None;
        }
        if traffic_before.is_none() && Instant::now() + Duration::from_secs(5) >= deadline {
            traffic_before = Some(mesh.traffic());
        }
        if Instant::now() >= deadline {
            let links = describe_traffic(traffic_before.as_deref().unwrap_or(&[]), &mesh.traffic());
            let described: Vec<String> = statuses
                .iter()
                .map(|(id, status)| match status {
                    Ok(status) => {
                        let peers: Vec<String> = status
                            .peers
                            .iter()
                            .filter(|peer| peer.match_index > 0 || peer.next_index > 0)
                            .map(|peer| {
                                format!("{}: match {} next {}", peer.id, peer.match_index, peer.next_index)
                            })
                            .collect();
                        format!(
                            "node {id}: role {}, term {}, leader {}, commit {}, applied {}, last index {}, storage healthy {}, peers [{}]",
                            status.role, status.term, status.leader_id, status.commit_index,
                            status.applied_index, status.last_log_index, status.storage_healthy,
                            peers.join(", ")
                        )
                    }
                    Err(error) => format!("node {id}: {error}"),
                })
                .collect();
            break Some(format!(
                "the members {members:?} did not reach one applied index within {SETTLE_MAX:?} of healing (not running: {missing:?}); they last said:\n    {}\n  peer links over the last 5 s (new connections, request bytes, response bytes):\n    {}",
                described.join("\n    "),
                links
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut states = BTreeMap::new();
    for id in cluster.node_ids() {
        let conninfo = cluster.postgres(id).conninfo();
        let state = read_database_state(&conninfo)
            .await
            .map_err(|error| format!("reading node {id}'s Postgres: {error}"))?;
        states.insert(id, state);
    }
    Ok(FinalState {
        states,
        stuck,
        members,
    })
}

/// The members of the leader's settled (committed, not joint) membership,
/// asked until `deadline`.
async fn final_members(cluster: &TestCluster, deadline: Instant) -> Result<BTreeSet<u64>, String> {
    let client = cluster.client();
    loop {
        let last = client.member_list().await;
        if let Ok(listing) = &last {
            if crate::settled_voters(listing).is_some() {
                return Ok(membership::members_of(listing));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no settled membership within {SETTLE_MAX:?}; the last member list: {last:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What each link carried between two [`ProxyMesh::traffic`] readings.
fn describe_traffic(
    before: &[(u64, u64, u64, u64, u64)],
    after: &[(u64, u64, u64, u64, u64)],
) -> String {
    after
        .iter()
        .map(|(from, to, connections, request, response)| {
            let earlier = before
                .iter()
                .find(|link| link.0 == *from && link.1 == *to)
                .copied()
                .unwrap_or((*from, *to, 0, 0, 0));
            format!(
                "{from}->{to}: {} connections, {} B, {} B",
                connections - earlier.2,
                request - earlier.3,
                response - earlier.4
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every node's log, by node id: the nodes the campaign ran, removed
/// ones included.
fn node_logs(cluster: &TestCluster) -> BTreeMap<u64, String> {
    let ids = cluster.layout().configured_node_ids().unwrap_or_default();
    ids.into_iter()
        .filter_map(|id| {
            let log = std::fs::read(cluster.layout().log_path(id)).ok()?;
            Some((id, String::from_utf8_lossy(&log).into_owned()))
        })
        .collect()
}

/// Runs every check and measures recovery.
fn judge(
    options: CampaignOptions,
    history: Vec<Record>,
    faults: Vec<FaultEvent>,
    final_state: Result<FinalState, String>,
    logs: &BTreeMap<u64, String>,
) -> CampaignReport {
    let mut violations = checks::panics::check(logs);
    let mut reported = Vec::new();
    let (linearizable, coverage) =
        checks::linearizable::check(&history, options.linearizability_steps_max);
    violations.extend(linearizable);
    violations.extend(checks::stale_reads::check(&history));
    violations.extend(checks::applied_once::check(&history));
    let (states, members) = match final_state {
        Ok(FinalState {
            states,
            stuck,
            members,
        }) => {
            if let Some(stuck) = stuck {
                violations.push(Violation {
                    check: "convergence",
                    message: stuck,
                });
            }
            let (states, missing) = checks::convergence::of_members(states, &members);
            violations.extend(missing);
            violations.extend(checks::convergence::check(&states));
            violations.extend(checks::lost_writes::check(&history, &states));
            violations.extend(checks::convergence::check_sessions(&states));
            (states, members)
        }
        Err(error) => {
            violations.push(Violation {
                check: "convergence",
                message: format!("the cluster did not settle within {SETTLE_MAX:?}: {error}"),
            });
            (BTreeMap::new(), BTreeSet::new())
        }
    };
    for fault in &faults {
        if let Some(error) = &fault.error {
            reported.push(Violation {
                check: "nemesis",
                message: format!("{} ({}): {error}", fault.kind.name(), fault.description),
            });
        }
    }
    let recoveries = measure_recoveries(&history, &faults);
    let (asserted, target_misses) = check_recoveries(&options, &faults, &recoveries);
    violations.extend(asserted);
    reported.extend(target_misses);
    CampaignReport {
        options,
        history,
        faults,
        recoveries,
        violations,
        reported,
        linearizability: coverage,
        artifacts: None,
        states,
        members,
    }
}

/// For each fault: time from its start to the first acknowledged write,
/// and the first answered linearizable read, invoked after it.
pub fn measure_recoveries(history: &[Record], faults: &[FaultEvent]) -> Vec<Recovery> {
    faults
        .iter()
        .map(|fault| {
            let first_after = |wanted: &dyn Fn(&Record) -> bool| {
                history
                    .iter()
                    .filter(|record| {
                        record.invoked_ns >= fault.started_ns
                            && record.outcome == Outcome::Ok
                            && wanted(record)
                    })
                    .map(|record| record.completed_ns)
                    .min()
                    .map(|completed| Duration::from_nanos(completed - fault.started_ns))
            };
            Recovery {
                kind: (!fault.combined).then_some(fault.kind),
                write: first_after(&|record| record.request.is_write()),
                read: first_after(&|record| {
                    record.request
                        == Request::Get {
                            mode: ReadMode::Linearizable,
                        }
                }),
            }
        })
        .collect()
}

/// Asserted: every fault recovers, within its hold plus
/// [`RECOVERY_AFTER_HEAL_MAX`]. Reported: recoveries beyond the target.
fn check_recoveries(
    options: &CampaignOptions,
    faults: &[FaultEvent],
    recoveries: &[Recovery],
) -> (Vec<Violation>, Vec<Violation>) {
    let (mut asserted, mut reported) = (Vec::new(), Vec::new());
    for (fault, recovery) in faults.iter().zip(recoveries) {
        let hold = Duration::from_nanos(fault.healed_ns - fault.started_ns);
        let bound = hold + RECOVERY_AFTER_HEAL_MAX;
        for (what, took) in [
            ("write", recovery.write),
            ("linearizable read", recovery.read),
        ] {
            let name = if fault.combined {
                format!("{} (combined)", fault.kind.name())
            } else {
                fault.kind.name().to_string()
            };
            match took {
                Some(took) if took <= options.recovery_target() => {}
                Some(took) if took <= bound => reported.push(Violation {
                    check: "recovery_target",
                    message: format!(
                        "{name} ({}): first {what} after {took:?}, beyond the target {:?}",
                        fault.description,
                        options.recovery_target()
                    ),
                }),
                _ => asserted.push(Violation {
                    check: "recovery",
                    message: format!(
                        "{name} ({}): no {what} within {bound:?} (took {took:?})",
                        fault.description
                    ),
                }),
            }
        }
    }
    (asserted, reported)
}

/// Writes the history, the report and the node logs; returns the directory.
fn write_artifacts(report: &CampaignReport, cluster: &TestCluster) -> PathBuf {
    let dir = report
        .options
        .artifacts_dir
        .join(format!("seed-{}", report.options.seed));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("history.tsv"),
        crate::report::history_tsv(&report.history),
    );
    let text = format!(
        "{}\nfault timeline (the clock starts when the workload does):\n{}",
        crate::report::text(report),
        crate::report::timeline(report)
    );
    let _ = std::fs::write(dir.join("report.txt"), text);
    let _ = std::fs::write(
        dir.join("throughput.svg"),
        crate::report::throughput_svg(report),
    );
    // Every node the campaign ran, removed ones included.
    let ids = cluster.layout().configured_node_ids().unwrap_or_default();
    for id in ids {
        let _ = std::fs::copy(
            cluster.layout().log_path(id),
            dir.join(format!("node-{id}.log")),
        );
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_records::{get, put};

    fn fault(kind: FaultKind, started_ns: u64, combined: bool) -> FaultEvent {
        FaultEvent {
            kind,
            combined,
            description: String::new(),
            started_ns,
            healed_ns: started_ns + 1_000,
            error: None,
        }
    }

    #[test]
    fn recovery_counts_only_answers_to_operations_invoked_after_the_fault() {
        let history = [
            // Invoked before the fault: does not count, however late.
            put(1, 5, 10, (50, 900)),
            put(1, 6, 11, (120, 300)),
            get(1, ReadMode::Linearizable, 6, Some(11), (150, 400)),
            // Stale reads do not show that linearizable reads recovered.
            get(1, ReadMode::Stale, 6, Some(11), (110, 115)),
        ];
        let faults = [
            fault(FaultKind::KillLeader, 100, false),
            fault(FaultKind::Latency, 1_000, true),
        ];
        let recoveries = measure_recoveries(&history, &faults);
        assert_eq!(recoveries[0].kind, Some(FaultKind::KillLeader));
        assert_eq!(recoveries[0].write, Some(Duration::from_nanos(200)));
        assert_eq!(recoveries[0].read, Some(Duration::from_nanos(300)));
        // Nothing was invoked after the second fault: it never recovered.
        assert_eq!(recoveries[1].kind, None, "combined faults are apart");
        assert_eq!(recoveries[1].write, None);
    }

    #[test]
    fn a_fault_that_never_recovers_is_asserted_and_a_slow_one_reported() {
        let options = CampaignOptions::new(1, Duration::from_secs(1));
        let faults = [
            fault(FaultKind::KillLeader, 0, false),
            fault(FaultKind::PostgresCrashLeader, 0, false),
        ];
        let slow = Duration::from_secs(5);
        let recoveries = [
            Recovery {
                kind: Some(FaultKind::KillLeader),
                write: None,
                read: Some(Duration::from_millis(10)),
            },
            Recovery {
                kind: Some(FaultKind::PostgresCrashLeader),
                write: Some(slow),
                read: Some(slow),
            },
        ];
        let (asserted, reported) = check_recoveries(&options, &faults, &recoveries);
        assert_eq!(asserted.len(), 1, "{asserted:?}");
        assert!(asserted[0].message.starts_with("kill-leader"));
        assert_eq!(reported.len(), 2, "{reported:?}");
        assert!(reported
            .iter()
            .all(|violation| violation.check == "recovery_target"));
    }
}
