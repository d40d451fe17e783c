//! The load loop: `clients` concurrent tasks share `connections` HTTP/2
//! connections to one target; each task issues one request at a time
//! (closed loop), picks keys uniformly from the key space with its own
//! seeded generator, and records the latency of every operation that
//! completes inside the measured window (after the warm-up) in its own
//! histogram. The run stops at the deadline or at the operation cap,
//! whichever comes first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::latency::{LatencyRecorder, LatencySummary};
use crate::target::{connect, ReadMode, System, Target};

/// Most concurrent clients one run may have.
pub const CLIENTS_MAX: usize = 4096;
/// Most connections one run may open.
pub const CONNECTIONS_MAX: usize = 256;
/// Connections used when none are given: one per client up to this many.
pub const CONNECTIONS_DEFAULT_MAX: usize = 16;
/// Longest measured window of one run.
pub const DURATION_SECONDS_MAX: f64 = 3600.0;
/// Largest value.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// How often the progress bar is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// What one run does.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Concurrent clients, each with one request in flight.
    pub clients: usize,
    /// HTTP/2 connections the clients share (client i uses connection
    /// i mod connections).
    pub connections: usize,
    /// Length of the measured window.
    pub duration_seconds: f64,
    /// Load before the measured window, not recorded.
    pub warmup_seconds: f64,
    /// Operations issued at most (warm-up included); the run ends early
    /// when they are done.
    pub operations_max: u64,
    /// Bytes of every written value.
    pub value_bytes: usize,
    /// Keys are `key-00000000` .. `key-{keys - 1}`.
    pub keys: u64,
    /// Share of operations that are reads, 0 to 100.
    pub read_percent: u8,
    /// How reads are served.
    pub read_mode: ReadMode,
    /// Seed of the key and operation choices (client i uses seed + i).
    pub seed: u64,
}

/// Connections for `clients` clients when none are given.
pub fn default_connections(clients: usize) -> usize {
    clients.clamp(1, CONNECTIONS_DEFAULT_MAX)
}

impl Workload {
    /// Checks every bound once, with errors a person can act on.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=CLIENTS_MAX).contains(&self.clients),
            "clients must be between 1 and {CLIENTS_MAX}, not {}",
            self.clients
        );
        anyhow::ensure!(
            (1..=CONNECTIONS_MAX.min(self.clients)).contains(&self.connections),
            "connections must be between 1 and min({CONNECTIONS_MAX}, clients = {}), not {}",
            self.clients,
            self.connections
        );
        anyhow::ensure!(
            self.duration_seconds > 0.0 && self.duration_seconds <= DURATION_SECONDS_MAX,
            "duration must be above 0 and at most {DURATION_SECONDS_MAX} s"
        );
        anyhow::ensure!(
            (0.0..=DURATION_SECONDS_MAX).contains(&self.warmup_seconds),
            "warm-up must be between 0 and {DURATION_SECONDS_MAX} s"
        );
        anyhow::ensure!(
            self.operations_max > 0,
            "the operation cap must be at least 1"
        );
        anyhow::ensure!(
            (1..=VALUE_BYTES_MAX).contains(&self.value_bytes),
            "value size must be between 1 and {VALUE_BYTES_MAX} bytes"
        );
        anyhow::ensure!(self.keys > 0, "the key space must hold at least one key");
        anyhow::ensure!(self.read_percent <= 100, "read percent must be at most 100");
        Ok(())
    }
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Operations that succeeded inside the measured window.
    pub operations: u64,
    /// Operations that failed (any status) inside the measured window.
    pub errors: u64,
    /// Operations completed over the whole run, warm-up and errors
    /// included (what the servers' CPU time was spent on).
    pub operations_total: u64,
    /// Length of the measured window actually run.
    pub measured_seconds: f64,
    /// `operations / measured_seconds`.
    pub operations_per_second: f64,
    /// Latency of the successful operations.
    pub latency: LatencySummary,
    /// The first error seen, if any, to tell a person what went wrong.
    pub first_error: Option<String>,
}

/// Shared state of one run's client tasks.
struct RunClock {
    start: Instant,
    measure_from: Instant,
    deadline: Instant,
    issued: AtomicU64,
    completed: AtomicU64,
    operations_max: u64,
}

struct ClientOutcome {
    latency: LatencyRecorder,
    errors: u64,
    first_error: Option<String>,
    last_completion: Instant,
}

/// Runs `workload` against the leader at `address`, showing a progress bar
/// labelled `label` on stderr.
pub async fn run(
    system: System,
    address: &str,
    workload: &Workload,
    label: &str,
) -> anyhow::Result<RunResult> {
    workload.validate()?;
    let mut channels = Vec::with_capacity(workload.connections);
    for _ in 0..workload.connections {
        channels.push(connect(address).await?);
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(workload.warmup_seconds);
    let clock = Arc::new(RunClock {
        start,
        measure_from,
        deadline: measure_from + Duration::from_secs_f64(workload.duration_seconds),
        issued: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        operations_max: workload.operations_max,
    });
    let progress = progress_bar(workload, label);
    let reporter = tokio::spawn(report_progress(clock.clone(), progress.clone()));
    let mut tasks = Vec::with_capacity(workload.clients);
    for client_index in 0..workload.clients {
        let target = Target::new(system, channels[client_index % channels.len()].clone());
        let workload = workload.clone();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(target, &workload, client_index as u64, &clock).await
        }));
    }
    let mut latency = LatencyRecorder::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut last_completion = measure_from;
    for task in tasks {
        let outcome = task.await?;
        latency.merge(&outcome.latency);
        errors += outcome.errors;
        first_error = first_error.or(outcome.first_error);
        last_completion = last_completion.max(outcome.last_completion);
    }
    reporter.abort();
    progress.finish_and_clear();
    // Ends at the deadline, or earlier when the operation cap stopped the
    // run before it.
    let measured_seconds = last_completion
        .min(clock.deadline)
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let summary = latency.summary();
    let operations_per_second = if measured_seconds > 0.0 {
        summary.count as f64 / measured_seconds
    } else {
        0.0
    };
    Ok(RunResult {
        operations: summary.count,
        errors,
        operations_total: clock.completed.load(Ordering::Relaxed),
        measured_seconds,
        operations_per_second,
        latency: summary,
        first_error,
    })
}

async fn client_loop(
    mut target: Target,
    workload: &Workload,
    client_index: u64,
    clock: &RunClock,
) -> ClientOutcome {
    let mut random = SplitMix64::new(workload.seed.wrapping_add(client_index));
    let value = vec![b'v'; workload.value_bytes];
    let mut outcome = ClientOutcome {
        latency: LatencyRecorder::new(),
        errors: 0,
        first_error: None,
        last_completion: clock.start,
    };
    loop {
        if Instant::now() >= clock.deadline
            || clock.issued.fetch_add(1, Ordering::Relaxed) >= clock.operations_max
        {
            return outcome;
        }
        let key = format!("key-{:08}", random.below(workload.keys)).into_bytes();
        let is_read = random.below(100) < u64::from(workload.read_percent);
        let sent = Instant::now();
        let result = if is_read {
            target.get(key, workload.read_mode).await
        } else {
            target.put(key, value.clone()).await
        };
        let completed = Instant::now();
        clock.completed.fetch_add(1, Ordering::Relaxed);
        if completed < clock.measure_from || completed > clock.deadline {
            continue;
        }
        outcome.last_completion = completed;
        match result {
            Ok(()) => outcome
                .latency
                .record(completed.duration_since(sent).as_micros() as u64),
            Err(status) => {
                outcome.errors += 1;
                if outcome.first_error.is_none() {
                    outcome.first_error =
                        Some(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
    }
}

fn progress_bar(workload: &Workload, label: &str) -> ProgressBar {
    let total_tenths = ((workload.warmup_seconds + workload.duration_seconds) * 10.0).ceil() as u64;
    let progress = ProgressBar::new(total_tenths);
    progress.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {elapsed:>4} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    progress.set_prefix(label.to_string());
    progress
}

async fn report_progress(clock: Arc<RunClock>, progress: ProgressBar) {
    let mut previous_completed = 0;
    let mut previous_time = Instant::now();
    loop {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let now = Instant::now();
        let completed = clock.completed.load(Ordering::Relaxed);
        let rate = (completed - previous_completed) as f64
            / now.duration_since(previous_time).as_secs_f64();
        (previous_completed, previous_time) = (completed, now);
        let phase = if now < clock.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        progress.set_position((now.duration_since(clock.start).as_secs_f64() * 10.0) as u64);
        progress.set_message(format!("{phase}, {rate:.0} ops/s, {completed} done"));
    }
}

/// A small, fast, seeded generator (Steele, Lea and Flood's SplitMix64):
/// key choice needs speed and reproducibility, not cryptographic quality.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in `0..bound` (bias below 2^-40 for bounds under 2^24).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            clients: 64,
            connections: default_connections(64),
            duration_seconds: 20.0,
            warmup_seconds: 3.0,
            operations_max: 1_000_000,
            value_bytes: 100,
            keys: 10_000,
            read_percent: 0,
            read_mode: ReadMode::Linearizable,
            seed: 1,
        }
    }

    #[test]
    fn default_connections_are_one_per_client_up_to_sixteen() {
        assert_eq!(default_connections(1), 1);
        assert_eq!(default_connections(16), 16);
        assert_eq!(default_connections(256), 16);
    }

    #[test]
    fn bounds_are_checked() {
        workload().validate().unwrap();
        let too_many_connections = Workload {
            clients: 4,
            connections: 5,
            ..workload()
        };
        assert!(too_many_connections.validate().is_err());
        let no_duration = Workload {
            duration_seconds: 0.0,
            ..workload()
        };
        assert!(no_duration.validate().is_err());
        let over_all = Workload {
            read_percent: 101,
            ..workload()
        };
        assert!(over_all.validate().is_err());
    }

    #[test]
    fn keys_are_uniform_and_reproducible() {
        let mut first = SplitMix64::new(7);
        let mut second = SplitMix64::new(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            let value = first.below(10);
            assert_eq!(value, second.below(10));
            counts[value as usize] += 1;
        }
        assert!(
            counts.iter().all(|count| (9_000..11_000).contains(count)),
            "{counts:?}"
        );
    }
}
