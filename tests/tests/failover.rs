//! Crashes, pauses and restarts of node processes: leader failover, a
//! client moving off a stopped leader, a crashed node catching up, and a
//! whole cluster coming back on its data.

use std::time::{Duration, Instant};

use prost::Message as _;
use raftgres::client::{Client, ClientError, ClientOptions, ReadMode, Role};
use raftgres_proto::v1::kv_command::Operation;
use raftgres_proto::v1::{KvCommand, KvPut, RangeRequest};
use raftgres_tests::nemesis::{pause_process, signal};
use raftgres_tests::{
    assert_present, bounded, kv_client, read_prefix, BackgroundWriter, TestCluster,
};

/// Writes `count` keys `prefix{i}` = `value-{i}` one after another and
/// asserts each is acknowledged; returns the highest log index.
async fn write_keys(client: &Client, prefix: &str, count: usize) -> u64 {
    let mut index = 0;
    for i in 0..count {
        let put = client
            .put(format!("{prefix}{i:04}"), format!("value-{i}"))
            .await
            .unwrap_or_else(|error| panic!("write {prefix}{i:04} was not acknowledged: {error}"));
        index = index.max(put.index);
    }
    index
}

/// Proves that after kill -9 of the leader the survivors elect a new
/// leader within a few election timeouts, and that every write
/// acknowledged before, during and after the failover is still there with
/// its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_a_new_one_and_keeps_acknowledged_writes() {
    let mut cluster = TestCluster::start("leader-kill").await;
    let client = cluster.client();
    write_keys(&client, "before/", 50).await;

    let writer = BackgroundWriter::start(
        client.clone(),
        "during/",
        300,
        Duration::from_secs(40),
        Duration::from_millis(20),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let old_leader = cluster.wait_leader().await;
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| cluster.kill_node(old_leader)).expect("kill the leader");
    let new_leader = cluster.wait_for_leader_change(old_leader).await;
    let failover = killed_at.elapsed();
    println!("new leader {new_leader} elected {failover:?} after kill -9 of leader {old_leader}");
    // Election timeouts are 10-20 ticks of 50 ms: a new leader needs about
    // 1-2 s; 10 s leaves room for a loaded machine.
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );

    write_keys(&client, "after/", 5).await;
    // The background writer, too, must get writes through the new leader.
    writer.wait_for_writes(3, "after the failover").await;
    let outcome = writer.finish().await;
    println!(
        "writer: {} acknowledged, {} failed: {:?}",
        outcome.acknowledged.len(),
        outcome.failed.len(),
        outcome.failed
    );

    let before: Vec<usize> = (0..50).collect();
    assert_present(&read_prefix(&client, "before/").await, "before/", &before);
    let during = read_prefix(&client, "during/").await;
    assert_present(&during, "during/", &outcome.acknowledged);
    assert_present(
        &read_prefix(&client, "after/").await,
        "after/",
        &[0, 1, 2, 3, 4],
    );
    // Nothing appears that was never written.
    for key in during.keys() {
        let i: usize = key["during/".len()..].parse().expect("a written key");
        assert!(
            outcome.acknowledged.contains(&i) || outcome.failed.iter().any(|(f, _)| *f == i),
            "{key} was never written"
        );
    }
}

/// Sends SIGCONT to a stopped node when dropped, so that a failing test
/// does not leave it stopped behind the cluster's shutdown.
struct ResumeOnDrop(u32);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        let _ = signal(self.0, "CONT");
    }
}

/// Proves that clients whose cached leader is stopped (SIGSTOP: its
/// connections stay open, nothing is answered or refused) learn of the new
/// leader from the other nodes and leave the stopped one long before their
/// 30 s attempt timeout: a compare-and-swap carrying a session and a
/// linearizable read are both answered by the new leader, the swap is
/// applied exactly once (its answer says it swapped), and a write without a
/// session is reported as outcome unknown instead of being sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leave_a_stopped_leader_for_the_new_one_before_their_attempt_times_out() {
    let mut cluster = TestCluster::start("leader-pause").await;
    let (old_leader, _) = cluster.leader_status().await;
    let request_timeout = Duration::from_secs(30);
    let options = ClientOptions {
        request_timeout,
        retry_duration_max: Duration::from_secs(60),
        ..ClientOptions::default()
    };
    let client = || Client::with_options(cluster.addresses(), options.clone()).unwrap();
    let (writer, reader, unsessioned) = (client(), client(), client());
    // Every client caches the leader before it stops (a write, since a
    // linearizable read may be served by the follower first asked).
    for client in [&writer, &reader, &unsessioned] {
        client.put("pause/warm", "w").await.unwrap();
    }
    let old_address = cluster.node_address(old_leader).to_string();
    for client in [&writer, &reader, &unsessioned] {
        assert_eq!(
            client.cached_leader().as_deref(),
            Some(old_address.as_str())
        );
    }

    let pid = cluster.pid(old_leader).expect("the leader runs");
    tokio::task::block_in_place(|| pause_process(pid)).expect("SIGSTOP the leader");
    let resume = ResumeOnDrop(pid);
    let stopped_at = Instant::now();
    // Half the attempt timeout: an answer within it proves that the attempt
    // at the stopped leader was abandoned, not waited out.
    let limit = request_timeout / 2;
    let swap = async {
        let swapped = writer
            .compare_and_swap("pause/key", None, Some(b"after-pause".to_vec()))
            .await;
        (swapped, stopped_at.elapsed())
    };
    let read = async {
        let value = reader.get("pause/key", ReadMode::Linearizable).await;
        (value, stopped_at.elapsed())
    };
    let without_session = async {
        let command = KvCommand {
            operation: Some(Operation::Put(KvPut {
                key: b"pause/unsessioned".to_vec(),
                value: b"maybe".to_vec(),
            })),
        };
        let submitted = unsessioned.submit(command.encode_to_vec(), "", 0).await;
        (submitted, stopped_at.elapsed())
    };
    let ((swapped, swap_took), (value, read_took), (submitted, submit_took)) =
        bounded("calls while the leader is stopped", limit, async {
            tokio::join!(swap, read, without_session)
        })
        .await;
    println!(
        "leader {old_leader} stopped: swap answered after {swap_took:?}, read after \
         {read_took:?}, the write without a session ended after {submit_took:?}"
    );

    let swapped = swapped.unwrap_or_else(|error| panic!("the swap failed: {error}"));
    assert!(swapped.succeeded, "the swap was applied twice: {swapped:?}");
    let value = value.unwrap_or_else(|error| panic!("the read failed: {error}"));
    assert!(
        value.is_none() || value.as_deref() == Some(&b"after-pause"[..]),
        "{value:?}"
    );
    match submitted {
        Err(ClientError::OutcomeUnknown { address, .. }) => {
            assert_eq!(address, old_address, "only the stopped leader was tried")
        }
        other => panic!("a write without a session must end unknown: {other:?}"),
    }

    // The answers came from a new leader that the other nodes agree on.
    let mut named = Vec::new();
    for id in cluster.others(old_leader) {
        named.push(cluster.status(id).await.unwrap().leader_id);
    }
    let new_leader = named[0];
    assert!(
        new_leader != old_leader && named.iter().all(|id| *id == new_leader),
        "the running nodes name {named:?} (old leader {old_leader})"
    );
    // The clients follow a leader that answered them: the new one, unless
    // the loaded machine let a second election happen since (seen once
    // while a mutation run shared the two cores), which names another
    // running node. Never the stopped one.
    let running: Vec<String> = cluster
        .others(old_leader)
        .into_iter()
        .map(|id| cluster.node_address(id).to_string())
        .collect();
    for (who, cached) in [
        ("the writer", writer.cached_leader()),
        ("the reader", reader.cached_leader()),
    ] {
        let cached = cached.unwrap_or_else(|| panic!("{who} caches no leader"));
        assert!(
            running.contains(&cached),
            "{who} caches {cached}, not a running node ({running:?}; the stopped leader is {old_address})"
        );
    }
    let read_again = reader
        .get("pause/key", ReadMode::Linearizable)
        .await
        .unwrap();
    assert_eq!(read_again.as_deref(), Some(&b"after-pause"[..]));

    // Once it resumes, the old leader follows and holds the swap once.
    drop(resume);
    let commit = cluster.wait_caught_up(old_leader).await;
    assert!(commit >= swapped.index);
    let again = writer
        .compare_and_swap("pause/key", None, Some(b"again".to_vec()))
        .await
        .unwrap();
    assert!(!again.succeeded, "the key must exist: {again:?}");
    cluster.assert_no_node_exited();
}

/// A leader applies a lone client's write ahead of its commit, in a
/// transaction it commits only once the write is committed (docs/STORAGE.md,
/// rule 6). Proves that when both followers stop before the write commits,
/// the leader's applier holds that apply uncommitted (a transaction with
/// writes, none of them visible), the write is never answered as applied,
/// and once the leader steps down the apply is rolled back; after the
/// followers resume, the old leader applies what the cluster commits and
/// every node holds the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_rolls_back_what_it_applied_ahead() {
    let mut cluster = TestCluster::start("ahead-rolled-back").await;
    let (leader, _) = cluster.leader_status().await;
    let options = ClientOptions {
        request_timeout: Duration::from_secs(2),
        retry_duration_max: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    let client = Client::with_options(vec![cluster.node_address(leader).to_string()], options)
        .expect("a client of the leader");
    client.put("ahead/warm", "w").await.expect("a write");
    let conninfo = raftgres::server::NodeConfig::from_file(&cluster.config_path(leader))
        .expect("the leader's config")
        .postgres;
    let (database, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .expect("the leader's Postgres");
    tokio::spawn(connection);
    let applier_xid = || async {
        database
            .query_one(
                "SELECT backend_xid::text FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("raftgres-node-{leader}-apply")],
            )
            .await
            .expect("the applier's session")
            .get::<_, Option<String>>(0)
    };
    let stored = |key: &'static str| {
        let database = &database;
        async move {
            database
                .query_opt(
                    "SELECT value FROM raftgres_kv WHERE key = $1",
                    &[&key.as_bytes()],
                )
                .await
                .expect("read the leader's rows")
                .map(|row| row.get::<_, Vec<u8>>(0))
        }
    };

    let mut resumes = Vec::new();
    for follower in cluster.others(leader) {
        let pid = cluster.pid(follower).expect("the follower runs");
        tokio::task::block_in_place(|| pause_process(pid)).expect("SIGSTOP a follower");
        resumes.push(ResumeOnDrop(pid));
    }
    let put = tokio::spawn({
        let client = client.clone();
        async move { client.put("ahead/cut-off", "uncommitted").await }
    });
    // The apply runs ahead: its transaction wrote (it has an xid) and
    // waits, uncommitted.
    let started = Instant::now();
    while applier_xid().await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the leader's applier never applied the write ahead"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stored("ahead/cut-off").await,
        None,
        "visible before its commit"
    );
    let answer = put.await.expect("the write's task");
    assert!(
        answer.is_err(),
        "a write no follower holds was answered: {answer:?}"
    );
    cluster
        .wait_for_status(leader, "to step down without its followers", |status| {
            status.role != Role::Leader as i32
        })
        .await;
    // Abandoned: rolled back, and nothing of it committed.
    let started = Instant::now();
    while applier_xid().await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the old leader's applier still holds the apply after stepping down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stored("ahead/cut-off").await,
        None,
        "committed without its commit"
    );

    drop(resumes);
    let written = cluster
        .client()
        .put("ahead/after", "a")
        .await
        .expect("a write once the followers are back");
    let commit = cluster.wait_caught_up(leader).await;
    assert!(commit >= written.index);
    assert_eq!(stored("ahead/after").await.as_deref(), Some(&b"a"[..]));
    // The cut-off write may still have committed (a follower may have
    // taken it from its socket on waking); every node agrees either way.
    let mut seen = Vec::new();
    for id in [1, 2, 3] {
        cluster.wait_caught_up(id).await;
        let mut reads = kv_client(cluster.node_address(id)).await;
        let found = reads
            .range(RangeRequest {
                prefix: b"ahead/".to_vec(),
                limit: 10,
                mode: ReadMode::Stale as i32,
            })
            .await
            .expect("a stale read")
            .into_inner()
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect::<Vec<_>>();
        seen.push(found);
    }
    assert!(
        seen.iter().all(|keys| *keys == seen[0]),
        "the nodes differ: {seen:?}"
    );
    cluster.assert_no_node_exited();
}

/// Proves that a crashed node (here the leader, which may hold entries the
/// others never saw) restarts on its own data, catches up with everything
/// committed while it was down, and serves it from its own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_and_catches_up() {
    let mut cluster = TestCluster::start("restart-catch-up").await;
    let client = cluster.client();
    write_keys(&client, "early/", 10).await;

    let killed = cluster.wait_leader().await;
    tokio::task::block_in_place(|| cluster.kill_node(killed)).expect("kill the leader");
    let new_leader = cluster.wait_for_leader_change(killed).await;
    let last_index = write_keys(&client, "while-down/", 40).await;

    // Another process took the node's metrics port while it was down (a
    // test running beside this one did once): the node restarts on a new
    // metrics port instead of refusing to start.
    let metrics_before = cluster.metrics_address(killed).to_string();
    let squatter = std::net::TcpListener::bind(&metrics_before).expect("take the metrics port");
    cluster.start_node(killed).expect("restart the killed node");
    assert_ne!(cluster.metrics_address(killed), metrics_before);
    let commit = cluster.wait_caught_up(killed).await;
    drop(squatter);
    assert!(commit >= last_index);
    let status = cluster
        .wait_for_status(killed, "back as a follower of the new leader", |status| {
            status.role == Role::Follower as i32 && status.leader_id == new_leader
        })
        .await;
    assert!(status.applied_index >= last_index, "{status:?}");

    // A stale read is served from the node's own applied state: it proves
    // the entries reached its Postgres, not only the leader's.
    let mut kv = kv_client(cluster.node_address(killed)).await;
    let range = kv
        .range(RangeRequest {
            prefix: b"while-down/".to_vec(),
            limit: 1000,
            mode: ReadMode::Stale as i32,
        })
        .await
        .expect("stale range on the restarted node")
        .into_inner();
    let values: Vec<String> = range
        .kvs
        .iter()
        .map(|pair| String::from_utf8_lossy(&pair.value).into_owned())
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("value-{i}")).collect();
    assert_eq!(values, expected);
    cluster.assert_no_node_exited();
}

/// Proves that stopping every node (gracefully, and then by kill -9) and
/// starting the whole cluster again on the same databases keeps every
/// acknowledged write and lets the cluster take new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_restart_keeps_the_data() {
    let mut cluster = TestCluster::start("full-restart").await;
    let (_, before) = cluster.leader_status().await;
    let client = cluster.client();
    let first_index = write_keys(&client, "first/", 30).await;

    // Graceful stop of every node and Postgres, then a fresh start.
    cluster.restart_all().await;
    let client = cluster.client();
    let first: Vec<usize> = (0..30).collect();
    assert_present(&read_prefix(&client, "first/").await, "first/", &first);
    let second_index = write_keys(&client, "second/", 10).await;
    assert!(second_index > first_index);

    // A crash of every node at once, then a start on the same data.
    for id in cluster.node_ids() {
        tokio::task::block_in_place(|| cluster.kill_node(id)).expect("kill a node");
    }
    cluster.restart_all().await;
    let client = cluster.client();
    assert_present(&read_prefix(&client, "first/").await, "first/", &first);
    let second: Vec<usize> = (0..10).collect();
    assert_present(&read_prefix(&client, "second/").await, "second/", &second);
    let (_, after) = cluster.leader_status().await;
    assert!(after.term > before.term, "{after:?} after {before:?}");
    assert!(after.commit_index >= second_index);
    for id in cluster.node_ids() {
        cluster.wait_caught_up(id).await;
    }
    write_keys(&client, "third/", 3).await;
}
