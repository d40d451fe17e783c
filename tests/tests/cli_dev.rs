//! The `raftgres dev` commands a tester scripts against.

use std::process::Command;
use std::time::{Duration, Instant};

use raftgres_devcluster::cluster::find_raftgres_binary;
use raftgres_tests::fresh_dir;

/// Runs `raftgres` with `arguments`; returns whether it succeeded, its
/// standard output, and both outputs together (for failure messages).
fn raftgres(arguments: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let binary = find_raftgres_binary().expect("the raftgres binary");
    let output = Command::new(binary)
        .args(arguments)
        .env("RAFTGRES_DEV_DIR", dir)
        .env_remove("RAFTGRES_ENDPOINTS")
        .output()
        .expect("running raftgres");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let both = stdout.clone() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), stdout, both)
}

/// Waits (bounded) until `raftgres status --json` names `expected` nodes
/// answering, each with applied index at least `applied`.
fn wait_for_status(dir: &std::path::Path, expected: usize, applied: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, text, _) = raftgres(&["status", "--json", "--timeout", "2"], dir);
        let answering = text.matches("\"node_id\"").count();
        let caught_up = text
            .split("\"applied_index\": ")
            .skip(1)
            .filter_map(|rest| rest.split(',').next()?.trim().parse::<u64>().ok())
            .filter(|index| *index >= applied)
            .count();
        if answering == expected && caught_up == expected {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {expected} nodes at {applied}: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Proves that `dev up --detach` exits once the cluster has a leader and
/// prints its nodes as JSON (and writes DIR/cluster.json), that the client
/// commands find the cluster through DIR/endpoints, that `dev stop-node`,
/// `dev start-node`, `dev pg stop --crash`, `dev pg stop --immediate` and
/// `dev pg start` act on one node, and that `dev down` stops everything.
#[test]
fn a_detached_dev_cluster_is_driven_node_by_node() {
    let dir = fresh_dir("cli-dev");
    let dir_text = dir.display().to_string();
    let (up, json, output) = raftgres(&["dev", "up", "--detach", "--dir", &dir_text], &dir);
    let cleanup = |dir: &std::path::Path| {
        raftgres(&["dev", "down", "--dir", &dir.display().to_string()], dir)
    };
    if !up {
        cleanup(&dir);
        panic!("dev up --detach failed: {output}");
    }
    assert!(json.contains("\"leader\": "), "{json}");
    assert_eq!(json.matches("\"pid\": ").count(), 3, "{json}");
    let written = std::fs::read_to_string(dir.join("cluster.json")).unwrap();
    assert_eq!(written.trim(), json.trim());
    wait_for_status(&dir, 3, 1);
    let steps: [&[&str]; 7] = [
        &["dev", "stop-node", "--kill", "--dir", &dir_text, "2"],
        &["dev", "pg", "stop", "--crash", "--dir", &dir_text, "3"],
        &["dev", "pg", "start", "--dir", &dir_text, "3"],
        &["dev", "pg", "stop", "--immediate", "--dir", &dir_text, "3"],
        &["dev", "pg", "start", "--dir", &dir_text, "3"],
        &["dev", "start-node", "--dir", &dir_text, "2"],
        &["kv", "put", "key", "value"],
    ];
    for step in steps {
        let (ok, _, text) = raftgres(step, &dir);
        if !ok {
            cleanup(&dir);
            panic!("raftgres {step:?} failed: {text}");
        }
        if step[1] == "stop-node" {
            assert!(
                !dir.join("node-2.pid").exists(),
                "a killed node's pid file is removed"
            );
        }
    }
    let status = wait_for_status(&dir, 3, 2);
    assert_eq!(
        status
            .matches("\"voters\": [1, 2, 3], \"voters_outgoing\": [], \"learners\": []")
            .count(),
        3,
        "every node reports the bootstrap membership: {status}"
    );
    let (down, text, _) = cleanup(&dir);
    assert!(down, "{text}");
    assert_eq!(text.matches("stopped").count(), 6, "{text}\n{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
