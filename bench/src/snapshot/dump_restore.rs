//! The baseline: `pg_dump -Fc -t raftgres_kv` of the leader's database
//! piped straight into `pg_restore` into a fresh database on the
//! follower's Postgres (same machine, same Postgres binaries), the way an
//! operator would copy the table by hand; once with pg_dump's default
//! compression and once with `--compress 0` (raftgres sends chunks
//! uncompressed). Each program runs under
//! `/usr/bin/time`, which reports its wall, CPU and peak resident memory
//! (`%M`, the kernel's maximum RSS). The restored rows are checked against
//! the leader's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use raftgres_devcluster::postgres::{self, PgInstance};

use super::rows::{self, RowSummary, WalActivity};

/// The database the baseline restores into, dropped and created afresh.
const RESTORE_DATABASE: &str = "snapshot_bench_restore";
/// GNU time, for the peak RSS of each program.
const TIME_PROGRAM: &str = "/usr/bin/time";
/// Marks GNU time's report in a program's stderr: elapsed s, user s,
/// system s, peak RSS KiB.
const TIME_MARKER: &str = "raftgres-bench-time";

/// One program of the pipe, as GNU time saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProgramFigures {
    /// Its wall time.
    pub seconds: f64,
    /// User plus system CPU.
    pub cpu_seconds: f64,
    /// Peak resident set.
    pub rss_kib_peak: u64,
}

/// A Postgres server of the cluster, as the baseline reaches it.
#[derive(Clone, Debug)]
pub struct Server {
    host: String,
    port: u16,
    data_dir: PathBuf,
}

impl Server {
    /// The server `instance` runs.
    pub fn of(instance: &PgInstance) -> Server {
        Server {
            host: instance.host().to_string(),
            port: instance.port(),
            data_dir: instance.data_dir().to_path_buf(),
        }
    }

    fn conninfo_for(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.host, self.port
        )
    }
}

/// How pg_dump compresses its archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// pg_dump's default for the custom format (gzip).
    #[default]
    Default,
    /// `--compress 0`.
    Off,
}

impl Compression {
    /// How a table names it.
    pub fn label(self) -> &'static str {
        match self {
            Compression::Default => "pg_dump \\| pg_restore",
            Compression::Off => "pg_dump --compress 0 \\| pg_restore",
        }
    }
}

/// What the baseline measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct DumpRestoreFigures {
    /// The archive's compression.
    pub compression: Compression,
    /// From starting both programs to both having exited.
    pub seconds: f64,
    /// `pg_dump`.
    pub dump: ProgramFigures,
    /// `pg_restore`.
    pub restore: ProgramFigures,
    /// CPU of the source's Postgres during the pipe.
    pub source_postgres_cpu_seconds: f64,
    /// CPU of the target's Postgres during the pipe.
    pub target_postgres_cpu_seconds: f64,
    /// WAL the target's Postgres wrote during the pipe.
    pub target_wal: WalActivity,
}

/// Dumps `raftgres_kv` from `source`'s `postgres` database into a fresh
/// database on `target`; checks the restored rows against `expected`.
pub async fn run(
    source: &Server,
    target: &Server,
    expected: &RowSummary,
    compression: Compression,
) -> anyhow::Result<DumpRestoreFigures> {
    anyhow::ensure!(
        Path::new(TIME_PROGRAM).is_file(),
        "{TIME_PROGRAM} is missing (Debian package `time`); it measures pg_dump's and pg_restore's peak memory"
    );
    let bin_dir = postgres::find_bin_dir().context("no Postgres binaries (pg_dump, pg_restore)")?;
    recreate_database(target).await?;
    let ticks = crate::process_stats::clock_ticks_per_second();
    let postgres_cpu = |server: &Server| {
        crate::process_stats::postgres_cpu_seconds(&server.data_dir, ticks).unwrap_or(0.0)
    };
    let cpu_before = (postgres_cpu(source), postgres_cpu(target));
    let wal_before = rows::wal_activity(&target.conninfo_for("postgres")).await?;
    let mut dump = dump_command(&bin_dir, source);
    if compression == Compression::Off {
        dump.args(["--compress", "0"]);
    }
    let restore = restore_command(&bin_dir, target);
    let started = Instant::now();
    let (dump, restore) = tokio::task::spawn_blocking(move || pipe(dump, restore))
        .await
        .context("the pg_dump | pg_restore thread panicked")??;
    let seconds = started.elapsed().as_secs_f64();
    let target_wal = rows::wal_activity(&target.conninfo_for("postgres")).await? - wal_before;
    let figures = DumpRestoreFigures {
        compression,
        target_wal,
        seconds,
        dump,
        restore,
        source_postgres_cpu_seconds: postgres_cpu(source) - cpu_before.0,
        target_postgres_cpu_seconds: postgres_cpu(target) - cpu_before.1,
    };
    let restored = rows::summarise(&target.conninfo_for(RESTORE_DATABASE)).await?;
    anyhow::ensure!(
        restored.same_rows(expected),
        "pg_restore's rows differ from the leader's: leader {expected:?}, restored {restored:?}"
    );
    eprintln!(
        "snapshot bench: {} took {seconds:.1} s; restored rows equal the leader's",
        compression.label().replace('\\', "")
    );
    Ok(figures)
}

async fn recreate_database(target: &Server) -> anyhow::Result<()> {
    let (client, connection) =
        tokio_postgres::connect(&target.conninfo_for("postgres"), tokio_postgres::NoTls)
            .await
            .context("connecting to the restore target")?;
    tokio::spawn(connection);
    // One statement a call: neither may run inside a transaction block,
    // which a multi-statement query is.
    for statement in [
        format!("DROP DATABASE IF EXISTS {RESTORE_DATABASE}"),
        format!("CREATE DATABASE {RESTORE_DATABASE}"),
    ] {
        client
            .batch_execute(&statement)
            .await
            .with_context(|| format!("{statement} on the restore target"))?;
    }
    Ok(())
}

/// `program` with its arguments, under GNU time.
fn timed(bin_dir: &Path, program: &str) -> Command {
    let mut command = Command::new(TIME_PROGRAM);
    command
        .arg("-f")
        .arg(format!("{TIME_MARKER} %e %U %S %M"))
        .arg(bin_dir.join(program));
    command
}

fn dump_command(bin_dir: &Path, source: &Server) -> Command {
    let mut command = timed(bin_dir, "pg_dump");
    command
        .args(["--host", &source.host])
        .args(["--port", &source.port.to_string()])
        .args(["--username", "postgres", "--format", "custom"])
        .args(["--table", "raftgres_kv", "postgres"]);
    command
}

fn restore_command(bin_dir: &Path, target: &Server) -> Command {
    let mut command = timed(bin_dir, "pg_restore");
    command
        .args(["--host", &target.host])
        .args(["--port", &target.port.to_string()])
        .args(["--username", "postgres", "--no-owner", "--exit-on-error"])
        .args(["--dbname", RESTORE_DATABASE]);
    command
}

/// Runs `dump | restore`; both must succeed.
fn pipe(
    mut dump: Command,
    mut restore: Command,
) -> anyhow::Result<(ProgramFigures, ProgramFigures)> {
    let mut dumping = dump
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pg_dump")?;
    let archive = dumping.stdout.take().expect("piped above");
    let restoring = restore
        .stdin(Stdio::from(archive))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pg_restore")?;
    let restored = restoring
        .wait_with_output()
        .context("waiting for pg_restore")?;
    let dumped = dumping.wait_with_output().context("waiting for pg_dump")?;
    let figures = |name: &str, output: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::ensure!(
            output.status.success(),
            "{name} failed ({}): {stderr}",
            output.status
        );
        parse_time_report(&stderr)
            .with_context(|| format!("no time report in {name}'s output: {stderr}"))
    };
    Ok((
        figures("pg_dump", &dumped)?,
        figures("pg_restore", &restored)?,
    ))
}

/// GNU time's line (see [`TIME_MARKER`]) in a program's stderr.
fn parse_time_report(stderr: &str) -> Option<ProgramFigures> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(TIME_MARKER))?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [elapsed, user, system, rss_kib] = fields.as_slice() else {
        return None;
    };
    Some(ProgramFigures {
        seconds: *elapsed,
        cpu_seconds: user + system,
        rss_kib_peak: *rss_kib as u64,
    })
}

/// Where the Postgres binaries are, for the report.
pub fn bin_dir() -> Option<PathBuf> {
    postgres::find_bin_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_time_reports_are_parsed_from_the_last_marked_line() {
        let stderr = "pg_dump: warning\nraftgres-bench-time 12.50 3.25 0.75 10240\n";
        assert_eq!(
            parse_time_report(stderr),
            Some(ProgramFigures {
                seconds: 12.5,
                cpu_seconds: 4.0,
                rss_kib_peak: 10_240,
            })
        );
        assert_eq!(
            parse_time_report("Command exited with non-zero status 1\n"),
            None
        );
    }
}
