//! CPU time and peak memory of processes, read from `/proc`: the node
//! processes, their Postgres servers (postmaster and every backend) and
//! the etcd members.

use std::fs;
use std::path::Path;

use serde::Serialize;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProcessSample {
    /// User plus system CPU time so far.
    pub cpu_seconds: f64,
    /// Peak resident set size so far (`VmHWM`), in kibibytes.
    pub rss_kib_peak: u64,
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`,
/// 100 on every Linux this runs on when getconf is missing).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/PID/stat` after the parenthesised command name, which
/// may itself hold spaces and parentheses.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// (utime + stime, cutime + cstime, parent pid) in clock ticks, from the
/// text of `/proc/PID/stat`.
pub fn parse_stat(stat: &str) -> Option<(u64, u64, u32)> {
    let fields = stat_fields(stat)?;
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let number = |index: usize| fields.get(index)?.parse::<u64>().ok();
    let parent = fields.get(1)?.parse().ok()?;
    Some((number(11)? + number(12)?, number(13)? + number(14)?, parent))
}

/// `VmHWM` in kibibytes from the text of `/proc/PID/status`.
pub fn parse_rss_kib_peak(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads one process; `None` when it is gone.
pub fn sample(pid: u32, ticks_per_second: f64) -> Option<ProcessSample> {
    let (own_ticks, _, _) = parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let rss_kib_peak =
        parse_rss_kib_peak(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)?;
    Some(ProcessSample {
        cpu_seconds: own_ticks as f64 / ticks_per_second,
        rss_kib_peak,
    })
}

/// CPU time of a Postgres server: the postmaster (whose pid is the first
/// line of `postmaster.pid` in `data_dir`), the children it has reaped,
/// and every live child (backends, WAL writer, checkpointer...). Backends
/// that exit between two readings are counted through the postmaster's
/// reaped-children time.
pub fn postgres_cpu_seconds(data_dir: &Path, ticks_per_second: f64) -> Option<f64> {
    let pid_file = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
    let (own, reaped, _) =
        parse_stat(&fs::read_to_string(format!("/proc/{postmaster}/stat")).ok()?)?;
    let mut ticks = own + reaped;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((child_ticks, _, parent)) = parse_stat(&stat) {
            if parent == postmaster {
                ticks += child_ticks;
            }
        }
    }
    Some(ticks as f64 / ticks_per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_lines_are_parsed() {
        let stat = "4242 (raft (gres) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 9 0 100 1000 200";
        assert_eq!(parse_stat(stat), Some((300, 10, 1)));
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_rss_kib_peak(status), Some(51_234));
        assert_eq!(parse_rss_kib_peak("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let ticks = clock_ticks_per_second();
        assert!(ticks >= 1.0);
        let own = sample(std::process::id(), ticks).unwrap();
        assert!(own.rss_kib_peak > 0);
        assert!(sample(u32::MAX, ticks).is_none());
    }
}
