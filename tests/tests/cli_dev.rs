//! The `raftgres dev` and `raftgres member` commands a tester scripts
//! against.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raftgres_devcluster::cluster::find_raftgres_binary;
use raftgres_tests::{bounded, fresh_dir, TestCluster};

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
    // Another process takes node 2's metrics port while it is down:
    // `dev start-node` moves the endpoint rather than fail to start it.
    let mut metrics_port_holder = None;
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
            let config = raftgres::server::NodeConfig::from_file(&dir.join("node-2.toml")).unwrap();
            let metrics = config.metrics_addr.expect("a dev node serves metrics");
            metrics_port_holder = Some((metrics, hold_port(metrics)));
        }
    }
    let (held, _holder) = metrics_port_holder.expect("node 2 was stopped");
    let config = raftgres::server::NodeConfig::from_file(&dir.join("node-2.toml")).unwrap();
    assert_ne!(
        config.metrics_addr,
        Some(held),
        "node 2's metrics endpoint moved off the taken port"
    );
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

/// Runs `raftgres member ARGUMENTS --endpoints ...` against `cluster`;
/// returns whether it succeeded, its standard output, and both outputs.
fn member(cluster: &TestCluster, arguments: &[&str]) -> (bool, String, String) {
    let endpoints = cluster.addresses().join(",");
    let mut all = vec!["member"];
    all.extend_from_slice(arguments);
    all.extend_from_slice(&["--endpoints", &endpoints, "--timeout", "60"]);
    tokio::task::block_in_place(|| raftgres(&all, cluster.dir()))
}

/// Proves that `member list` shows every member with its role (the leader
/// marked) and whether the membership is committed, as a table and as
/// JSON; that `member add ID ADDRESS` adds a node started with `--join`,
/// waits for it and promotes it; that `member remove` removes it; and that
/// a refused change exits 2 with the node's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_added_and_removed_from_the_command_line() {
    let mut cluster = TestCluster::start("cli-member").await;
    let leader = cluster.wait_leader().await;
    // A leader just elected may not have heard from every node yet, nor
    // made its own first entry durable (seen under load): the match
    // indexes start at 0 and rise once it has.
    let started = Instant::now();
    let table = loop {
        let (ok, table, output) = member(&cluster, &["list"]);
        assert!(ok, "member list failed: {output}");
        let all_matched = table.lines().skip(1).take(3).all(|line| {
            line.split_whitespace()
                .last()
                .and_then(|index| index.parse::<u64>().ok())
                .is_some_and(|index| index > 0)
        });
        if all_matched || started.elapsed() > Duration::from_secs(10) {
            break table;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["ID", "ADDRESS", "ROLE", "MATCH", "INDEX"],
        "{table}"
    );
    for id in 1..=3u64 {
        let row = &rows[id as usize];
        let role = if id == leader {
            "voter (leader)"
        } else {
            "voter"
        };
        assert_eq!(row[0], id.to_string(), "{table}");
        assert_eq!(row[1], cluster.peer_address(id), "{table}");
        assert_eq!(row[2..row.len() - 1].join(" "), role, "{table}");
        let match_index: u64 = row[row.len() - 1].parse().expect("a match index");
        assert!(
            match_index > 0,
            "the leader knows what node {id} holds: {table}"
        );
    }
    assert!(
        table.contains(&format!("leader: node {leader}\n")),
        "{table}"
    );
    assert!(
        table.contains(": committed; voters 1, 2, 3; learners none\n"),
        "{table}"
    );
    let (ok, json, output) = member(&cluster, &["list", "--json"]);
    assert!(ok, "member list --json failed: {output}");
    for expected in [
        format!("\"leader_id\": {leader}"),
        "\"committed\": true, \"joint\": false, \"voters\": [1, 2, 3], \"voters_outgoing\": [], \"learners\": []".to_string(),
        format!("{{\"id\": 2, \"address\": \"{}\", \"role\": \"voter\"", cluster.peer_address(2)),
    ] {
        assert!(json.contains(&expected), "{expected:?} not in {json}");
    }

    // `member add` first, then the node: it waits for the node, which asks
    // the cluster whether it was added.
    let id = cluster.prepare_node().await.expect("prepare node 4");
    let address = cluster.peer_address(id).to_string();
    let binary = find_raftgres_binary().expect("the raftgres binary");
    let add = Command::new(binary)
        .args(["member", "add", &id.to_string(), &address])
        .args([
            "--endpoints",
            &cluster.addresses().join(","),
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running raftgres member add");
    cluster.start_node(id).expect("start node 4");
    let output = bounded(
        "member add",
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || add.wait_with_output()),
    )
    .await
    .expect("the waiting task")
    .expect("member add's output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "member add failed: {stdout}{stderr}"
    );
    for expected in [
        format!("added node {id} as a learner at index "),
        format!("promoted node {id} at index "),
        "committed: voters 1, 2, 3, 4; learners none".to_string(),
    ] {
        assert!(
            stdout.contains(&expected),
            "{expected:?} not in {stdout}{stderr}"
        );
    }
    assert!(stderr.contains(&format!("node {id} caught up")), "{stderr}");
    let (ok, table, output) = member(&cluster, &["list"]);
    assert!(ok, "{output}");
    assert!(
        table.contains("voters 1, 2, 3, 4; learners none"),
        "{table}"
    );

    let (ok, _, output) = member(&cluster, &["promote", "9"]);
    assert!(!ok, "promoting a stranger must fail: {output}");
    assert!(output.contains("node 9 is not a learner"), "{output}");
    let (ok, stdout, output) = member(&cluster, &["remove", &id.to_string()]);
    assert!(ok, "member remove failed: {output}");
    assert!(
        stdout.contains(&format!("removed node {id} at index ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("committed: voters 1, 2, 3; learners none"),
        "{stdout}"
    );
    cluster.forget_node(id).await.expect("forget node 4");
    cluster.wait_leader().await;
}

/// Takes `address` for this test: the stopped node's socket may take a
/// moment to close. `None` when another process keeps it for 10 s (it is
/// taken either way, which is what the test needs).
fn hold_port(address: std::net::SocketAddr) -> Option<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(address) {
            Ok(listener) => return Some(listener),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                if std::time::Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(error) => panic!("binding {address}: {error}"),
        }
    }
}
