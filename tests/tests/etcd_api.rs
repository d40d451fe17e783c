//! raftgres serves etcd's v3 API as etcd does: the same `etcdctl` (3.4)
//! commands, run against a raftgres cluster and against a real etcd,
//! print the same answers, failures included, once what must differ
//! between two clusters is normalized away (`raftgres_tests::etcd`).
//! A fresh store is at revision 1 on both sides and revisions are
//! compared as printed.
//!
//! etcdctl talks to all three raftgres nodes, as a client of an etcd
//! cluster does (its balancer spreads requests over them), except for
//! `endpoint status`, which asks the leader alone. Each test starts a
//! fresh cluster and a fresh etcd. Needs `etcd` and `etcdctl`
//! (scripts/ensure-deps.sh).

use raftgres_tests::etcd::{Compared, Comparison, EtcdMember, Etcdctl};
use raftgres_tests::TestCluster;
use std::time::Duration;

/// A fresh raftgres cluster and a fresh etcd, with etcdctl for both.
struct Sides {
    /// etcdctl against every raftgres node, and against etcd.
    all: Comparison,
    /// etcdctl against the raftgres leader alone, and against etcd.
    leader: Comparison,
    /// The raftgres cluster's number of members.
    members: usize,
    /// etcdctl against every raftgres node (for what only raftgres runs).
    raftgres: Etcdctl,
    _etcd: EtcdMember,
    cluster: TestCluster,
}

async fn start(name: &str) -> Sides {
    let (mut cluster, etcd) = tokio::join!(TestCluster::start(name), EtcdMember::start(name));
    let leader = cluster.wait_leader().await;
    let all = Comparison::new(etcd.etcdctl(), Etcdctl::new(cluster.addresses()));
    let leader = Comparison::new(etcd.etcdctl(), Etcdctl::new([cluster.node_address(leader)]));
    Sides {
        all,
        leader,
        members: cluster.node_ids().len(),
        raftgres: Etcdctl::new(cluster.addresses()),
        _etcd: etcd,
        cluster,
    }
}

/// The non-interactive input of `etcdctl txn`: compares, a blank line,
/// the success requests, a blank line, the failure requests, a blank line.
fn txn_script(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
    [compares, success, failure]
        .iter()
        .map(|lines| lines.iter().map(|line| format!("{line}\n")).collect())
        .collect::<Vec<String>>()
        .join("\n")
        + "\n"
}

/// Asserts that etcd took the success branch (`success`) or the failure
/// branch of a compared `txn`, so that the comparison covers what the
/// test says it covers.
fn assert_branch(compared: &Compared, success: bool) {
    let output = &compared.etcd;
    let succeeded = if output.stdout.starts_with('{') {
        output.stdout.contains(r#""succeeded":true"#)
    } else {
        output.stdout.starts_with("SUCCESS")
    };
    assert_eq!(succeeded, success, "etcd took the other branch: {output}");
}

const SORT_TARGETS: [&str; 5] = ["KEY", "MODIFY", "CREATE", "VERSION", "VALUE"];

/// Proves that puts (plain and --prev-kv) and gets (one key, a range, a
/// prefix, --from-key, --limit, every --sort-by and --order, --keys-only,
/// --print-value-only, an older --rev, JSON) answer as etcd does, and that
/// a future revision is refused as etcd refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_gets_answer_as_etcd_does() {
    let sides = start("etcd-put-get").await;
    let both = &sides.all;
    // A fresh store: revision 1 and nothing in it.
    let fresh = both.succeeds(&["get", "k1", "-w", "json"]).await;
    assert!(
        fresh.etcd.stdout.contains(r#""revision":1,"#),
        "{}",
        fresh.etcd
    );

    // Revisions 2 to 8. The values are chosen so that every sort target
    // orders k1, k2, k3 differently from the others.
    both.succeeds(&["put", "k1", "zulu"]).await;
    both.succeeds(&["put", "k2", "alpha"]).await;
    both.succeeds(&["put", "k3", "mike"]).await;
    both.succeeds(&["put", "k1", "yankee", "--prev-kv"]).await;
    both.succeeds(&["put", "k2", "bravo", "-w", "json"]).await;
    both.succeeds(&["put", "k2", "charlie", "--prev-kv", "-w", "json"])
        .await;
    // --prev-kv of a key that did not exist prints no previous pair.
    both.succeeds(&["put", "new", "first", "--prev-kv", "-w", "json"])
        .await;

    both.succeeds(&["get", "k1"]).await;
    both.succeeds(&["get", "k1", "-w", "json"]).await;
    both.succeeds(&["get", "k1", "--print-value-only"]).await;
    both.succeeds(&["get", "missing"]).await;
    both.succeeds(&["get", "missing", "-w", "json"]).await;
    both.succeeds(&["get", "k1", "k3"]).await;
    both.succeeds(&["get", "k", "--prefix"]).await;
    both.succeeds(&["get", "k", "--prefix", "-w", "json"]).await;
    both.succeeds(&["get", "k2", "--from-key"]).await;
    both.succeeds(&["get", "k", "--prefix", "--limit=2"]).await;
    // The JSON answer of a limited range says there is more, and counts
    // every key in the range (etcdctl 3.4 has no --count-only; 3.5 added
    // it).
    both.succeeds(&["get", "k", "--prefix", "--limit=2", "-w", "json"])
        .await;
    both.succeeds(&["get", "k", "--prefix", "--keys-only"])
        .await;
    both.succeeds(&["get", "k", "--prefix", "--keys-only", "-w", "json"])
        .await;
    for target in SORT_TARGETS {
        for order in ["ASCEND", "DESCEND"] {
            let sort_by = format!("--sort-by={target}");
            let order = format!("--order={order}");
            both.succeeds(&["get", "k", "--prefix", &sort_by, &order])
                .await;
        }
    }
    both.succeeds(&["get", "k", "--prefix", "--order=DESCEND"])
        .await;
    both.succeeds(&[
        "get",
        "k",
        "--prefix",
        "--sort-by=VERSION",
        "--order=DESCEND",
        "--limit=1",
        "-w",
        "json",
    ])
    .await;

    // Older revisions: k1 as first written, k2 before it existed, and the
    // three keys as they were at revision 4.
    both.succeeds(&["get", "k1", "--rev=2"]).await;
    both.succeeds(&["get", "k2", "--rev=2"]).await;
    both.succeeds(&["get", "k", "--prefix", "--rev=4", "-w", "json"])
        .await;
    both.succeeds(&["get", "k", "--from-key", "--rev=7", "--keys-only"])
        .await;
    both.fails(
        &["get", "k1", "--rev=9"],
        "required revision is a future revision",
    )
    .await;
}

/// Proves that deletes (one key, a range, a prefix, --from-key, --prev-kv,
/// a missing key, JSON) answer as etcd does, that deleting nothing
/// changes no revision, and that history before a delete stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_answer_as_etcd_does() {
    let sides = start("etcd-delete").await;
    let both = &sides.all;
    // Revisions 2 to 6.
    both.succeeds(&["put", "d1", "a"]).await;
    both.succeeds(&["put", "d2", "b"]).await;
    both.succeeds(&["put", "d3", "c"]).await;
    both.succeeds(&["put", "e1", "x"]).await;
    both.succeeds(&["put", "d2", "b2"]).await;

    // Deleting nothing prints 0 and leaves the store at revision 6.
    both.succeeds(&["del", "missing"]).await;
    both.succeeds(&["del", "missing", "-w", "json"]).await;
    both.succeeds(&["del", "missing", "--prev-kv"]).await;
    // Revisions 7 to 9.
    both.succeeds(&["del", "d1"]).await;
    both.succeeds(&["del", "d2", "--prev-kv"]).await;
    both.succeeds(&["del", "d", "--prefix", "--prev-kv", "-w", "json"])
        .await;
    both.succeeds(&["del", "d", "--prefix"]).await;

    // A key written again after its delete starts a new life: new create
    // revision, version 1 (revision 10).
    both.succeeds(&["put", "d1", "again", "-w", "json"]).await;
    both.succeeds(&["get", "d1", "-w", "json"]).await;
    // History before the deletes.
    both.succeeds(&["get", "d", "--prefix", "--rev=6", "-w", "json"])
        .await;
    both.succeeds(&["get", "d2", "--rev=8"]).await;

    // A range [e1, zz) holds e1 only (revision 11); --from-key takes the
    // rest, d1 (revision 12).
    both.succeeds(&["del", "e1", "zz", "--prev-kv"]).await;
    both.succeeds(&["del", "a", "--from-key", "--prev-kv", "-w", "json"])
        .await;
    both.succeeds(&["get", "", "--from-key", "-w", "json"])
        .await;
}

/// Proves that `etcdctl txn` answers as etcd does: compares on value,
/// version, create revision and mod revision (=, !=, <, >), the success
/// branch (several puts and a delete, one revision for all) and the
/// failure branch, a read-only and a compare-free transaction, a compare
/// on a missing key, the JSON answer, and the refusal of a transaction
/// that writes one key twice; then the keys are as etcd has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_answer_as_etcd_does() {
    let sides = start("etcd-txn").await;
    let both = &sides.all;
    // Revisions 2 to 4: t1 created at 2; t2 created at 3, version 2 at 4.
    both.succeeds(&["put", "t1", "v1"]).await;
    both.succeeds(&["put", "t2", "v2"]).await;
    both.succeeds(&["put", "t2", "v2b"]).await;

    // Every compare holds: the success branch, at revision 5.
    let success = txn_script(
        &[
            r#"value("t1") = "v1""#,
            r#"version("t2") = "2""#,
            r#"create("t1") = "2""#,
            r#"mod("t2") = "4""#,
        ],
        &["put t3 v3", "put t1 v1b", "del t2", "get t1"],
        &["put failed yes"],
    );
    assert_branch(&both.txn_succeeds(&[], &success).await, true);
    both.succeeds(&["get", "t", "--prefix", "-w", "json"]).await;

    // A compare fails: the failure branch, at revision 6.
    let failure = txn_script(
        &[r#"value("t1") = "v1""#, r#"version("t3") > "0""#],
        &["put never 1"],
        &["put t4 v4", "get t3"],
    );
    assert_branch(&both.txn_succeeds(&[], &failure).await, false);

    // The other operators, a deleted key's version 0, JSON (revision 7).
    let operators = txn_script(
        &[
            r#"version("t2") = "0""#,
            r#"mod("t3") < "6""#,
            r#"create("t1") != "0""#,
            r#"value("t4") > "v3""#,
        ],
        &["put t5 v5", "get t --prefix --keys-only"],
        &["put t6 v6"],
    );
    assert_branch(&both.txn_succeeds(&["-w", "json"], &operators).await, true);
    let failed = txn_script(
        &[r#"mod("t1") = "3""#],
        &["put t6 v6"],
        &["del t3 --prev-kv", "get t1"],
    );
    assert_branch(&both.txn_succeeds(&["-w", "json"], &failed).await, false);

    // Read-only transactions change no revision; a value compare on a
    // missing key fails.
    let read_only = txn_script(&[r#"mod("t4") > "0""#], &["get t4"], &[]);
    assert_branch(&both.txn_succeeds(&["-w", "json"], &read_only).await, true);
    let missing = txn_script(
        &[r#"value("missing") = "x""#],
        &["put never 2"],
        &["get t --prefix --keys-only"],
    );
    assert_branch(&both.txn_succeeds(&[], &missing).await, false);
    // No compare: the success branch.
    let unconditional = txn_script(&[], &["put t7 v7", "put t8 v8"], &[]);
    assert_branch(
        &both.txn_succeeds(&["-w", "json"], &unconditional).await,
        true,
    );

    let duplicate = txn_script(&[], &["put d 1", "put d 2"], &[]);
    let refused = both.same_with_stdin(&["txn"], &duplicate).await;
    refused.failed_with("duplicate key given in txn request");

    both.succeeds(&["get", "", "--from-key", "-w", "json"])
        .await;
    both.succeeds(&["get", "t", "--prefix", "--rev=6", "-w", "json"])
        .await;
}

/// Proves that compaction answers as etcd does: after `compaction N`, a
/// read at a revision below N fails as on etcd ("required revision has
/// been compacted"), reads at N and above work, compacting again at or
/// below N or beyond the current revision fails the same way, and
/// compaction takes no revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_refuses_old_revisions_as_etcd_does() {
    let sides = start("etcd-compaction").await;
    let both = &sides.all;
    // Revisions 2 to 7.
    both.succeeds(&["put", "c", "a"]).await;
    both.succeeds(&["put", "c", "b"]).await;
    both.succeeds(&["put", "c", "c"]).await;
    both.succeeds(&["put", "d", "x"]).await;
    both.succeeds(&["del", "d"]).await;
    both.succeeds(&["put", "c", "d"]).await;

    both.succeeds(&["compaction", "4"]).await;
    for compacted in ["--rev=2", "--rev=3"] {
        both.fails(
            &["get", "c", compacted],
            "required revision has been compacted",
        )
        .await;
    }
    both.fails(
        &["get", "c", "--rev=3", "-w", "json"],
        "required revision has been compacted",
    )
    .await;
    both.succeeds(&["get", "c", "--rev=4"]).await;
    both.succeeds(&["get", "c", "--rev=5", "-w", "json"]).await;
    both.succeeds(&["get", "d", "--rev=5"]).await;
    both.succeeds(&["get", "d", "--rev=6"]).await;
    both.fails(
        &["get", "c", "--rev=8"],
        "required revision is a future revision",
    )
    .await;

    both.fails(&["compaction", "4"], "required revision has been compacted")
        .await;
    both.fails(&["compaction", "3"], "required revision has been compacted")
        .await;
    both.fails(
        &["compaction", "100"],
        "required revision is a future revision",
    )
    .await;
    both.succeeds(&["compaction", "7", "--physical"]).await;
    both.fails(
        &["get", "c", "--rev=6"],
        "required revision has been compacted",
    )
    .await;
    // Still revision 7, and the next write takes revision 8.
    both.succeeds(&["get", "c", "-w", "json"]).await;
    both.succeeds(&["put", "c", "e", "-w", "json"]).await;
    both.succeeds(&["get", "c", "--rev=7", "-w", "json"]).await;
}

/// Proves that `endpoint status` on the leader and `member list` answer in
/// etcd's shape: the same columns and fields, the leader saying it leads,
/// no learner, and the store's revision. Member lists are compared per
/// member row, because the single etcd lists one member and raftgres
/// every node of its cluster (ids, names and URLs normalized away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_status_and_member_list_answer_as_etcd_does() {
    let sides = start("etcd-cluster").await;
    // Revision 2, so that the status shows a store that was written.
    sides.all.succeeds(&["put", "a", "1"]).await;

    for format in ["simple", "table", "json", "fields"] {
        let status = sides
            .leader
            .succeeds(&["endpoint", "status", "-w", format])
            .await;
        if format == "simple" {
            assert!(
                status.etcd.stdout.contains(", true, false, "),
                "the etcd member should lead and not be a learner: {}",
                status.etcd
            );
        }
    }
    for format in ["simple", "table", "json", "fields"] {
        sides
            .all
            .same_per_member(&["member", "list", "-w", format], sides.members)
            .await;
    }
}

/// Proves that watches answer as etcd's: a prefix watch from a past
/// revision with --prev-kv, served by whichever node etcdctl picks,
/// replays the history and then follows new puts, deletes and a
/// transaction's changes, in revision order, with each change's previous
/// version; and a watch from a compacted revision is canceled as etcd
/// cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_answer_as_etcd_does() {
    let mut sides = start("etcd-watch").await;
    let both = &sides.all;
    both.succeeds(&["put", "w1", "a"]).await;
    both.succeeds(&["put", "w2", "b"]).await;
    both.succeeds(&["put", "x", "c"]).await;
    let args = ["watch", "w", "--prefix", "--rev=2", "--prev-kv"];
    let watches = both.spawn(&args, Duration::from_secs(60));
    // The two puts replayed: PUT, key, value each.
    for watch in &watches {
        let lines = watch.wait_for_lines(6, Duration::from_secs(20)).await;
        assert_eq!(lines.len(), 6, "the history was not replayed: {lines:?}");
    }
    both.succeeds(&["put", "w1", "c"]).await;
    both.succeeds(&["del", "w2"]).await;
    both.succeeds(&["put", "y", "not watched"]).await;
    let script = txn_script(&[], &["put w3 t", "del w1"], &[]);
    both.txn_succeeds(&[], &script).await;
    // A change with a previous version prints five lines (kind, previous
    // key and value, key and value), one without three.
    let expected = 6 + 5 + 5 + 3 + 5;
    for watch in &watches {
        let lines = watch
            .wait_for_lines(expected, Duration::from_secs(20))
            .await;
        assert_eq!(lines.len(), expected, "changes missing: {lines:?}");
    }
    both.same_background(&args, watches).await;

    both.succeeds(&["compaction", "6"]).await;
    // A watch is served from the tables of the node etcdctl picks, and a
    // follower learns of a commit up to a tick after the leader answered
    // (docs/STORAGE.md, rule 6): wait until every node applied the
    // compaction, as etcd's one member has when it answers.
    for id in sides.cluster.node_ids() {
        sides.cluster.wait_caught_up(id).await;
    }
    both.fails(
        &["watch", "w", "--prefix", "--rev=2"],
        "required revision has been compacted",
    )
    .await;
}

/// The lease id etcdctl printed for a grant ("lease ID granted with ...").
fn granted_lease(output: &raftgres_tests::etcd::EtcdctlOutput) -> String {
    assert!(output.success(), "the grant failed: {output}");
    let words: Vec<&str> = output.stdout.split_whitespace().collect();
    assert_eq!(words.get(2), Some(&"granted"), "{output}");
    words[1].to_string()
}

/// Proves that leases work as etcd users rely on: refusals for leases that
/// do not exist answer as etcd's; a granted lease holds its keys while a
/// keep-alive (sent through whichever node etcdctl picks) runs, and once
/// it stops the leader revokes the lease through the log within its TTL
/// plus an election timeout, deleting its keys (a watch sees the delete);
/// an explicit revoke deletes them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_hold_keys_until_they_expire_or_are_revoked() {
    let sides = start("etcd-lease").await;
    let both = &sides.all;
    both.fails(&["lease", "revoke", "1234"], "requested lease not found")
        .await;
    both.succeeds(&["lease", "timetolive", "1234"]).await;
    both.fails(
        &["put", "k", "v", "--lease=1234"],
        "requested lease not found",
    )
    .await;

    let raftgres = &sides.raftgres;
    let lease = granted_lease(&raftgres.run(&["lease", "grant", "3"]).await);
    let put = raftgres
        .run(&["put", "held", "v", &format!("--lease={lease}")])
        .await;
    assert!(put.success(), "{put}");
    let alive = raftgres
        .run(&["lease", "timetolive", &lease, "--keys"])
        .await;
    assert!(
        alive.stdout.contains("granted with TTL(3s)") && alive.stdout.contains("[held]"),
        "{alive}"
    );
    let watch = raftgres.spawn(&["watch", "held"], Duration::from_secs(60));
    let keep_alive = raftgres.spawn(&["lease", "keep-alive", &lease], Duration::from_secs(60));
    // Twice the TTL: the keep-alives hold the key.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = raftgres.run(&["get", "held", "--print-value-only"]).await;
    assert_eq!(
        still.stdout.trim(),
        "v",
        "the key expired under a keep-alive: {still}"
    );
    let kept = keep_alive.stop().await;
    assert!(kept.stdout.contains("keepalived with TTL(3)"), "{kept}");
    // The TTL, an election timeout of extension and the lessor's tick
    // are well inside this.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let read = raftgres.run(&["get", "held", "--print-value-only"]).await;
        if read.success() && read.stdout.trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key outlived its lease by far: {read}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // DELETE, the key, and the (empty) value.
    let deleted = watch.wait_for_lines(3, Duration::from_secs(10)).await;
    assert_eq!(deleted, ["DELETE", "held", ""], "the watch saw no delete");
    let expired = raftgres.run(&["lease", "timetolive", &lease]).await;
    assert!(expired.stdout.contains("already expired"), "{expired}");

    let lease = granted_lease(&raftgres.run(&["lease", "grant", "600"]).await);
    for key in ["a", "b"] {
        let put = raftgres
            .run(&["put", key, "v", &format!("--lease={lease}")])
            .await;
        assert!(put.success(), "{put}");
    }
    let revoked = raftgres.run(&["lease", "revoke", &lease]).await;
    assert!(revoked.stdout.contains("revoked"), "{revoked}");
    let gone = raftgres.run(&["get", "a", "c", "-w", "json"]).await;
    assert!(
        !gone.stdout.contains("\"kvs\""),
        "keys outlived their revoked lease: {gone}"
    );
    let listed = raftgres.run(&["lease", "list"]).await;
    assert!(listed.stdout.starts_with("found 0 leases"), "{listed}");
}

/// The value of the leader `etcdctl elect -l` (observation mode, which
/// keeps running) names first.
async fn leader_named(raftgres: &Etcdctl, election: &str) -> String {
    let observer = raftgres.spawn(&["elect", "-l", election], Duration::from_secs(20));
    let lines = observer.wait_for_lines(2, Duration::from_secs(10)).await;
    observer.stop().await;
    lines.get(1).cloned().unwrap_or_default()
}

/// Proves that etcdctl's own lock and election (client-side recipes over
/// KV, Watch and Lease) work against raftgres: a second `lock` runs its
/// command only after the first holder is gone, and a second `elect`
/// candidate wins only after the first is gone, `elect -l` naming the
/// leader each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect_hand_over_when_the_holder_goes() {
    let sides = start("etcd-lock-elect").await;
    let raftgres = &sides.raftgres;
    let hold = Duration::from_secs(60);

    let first = raftgres.spawn(&["lock", "jobs"], hold);
    let held = first.wait_for_lines(1, Duration::from_secs(10)).await;
    assert!(
        held.first().is_some_and(|key| key.starts_with("jobs/")),
        "{held:?}"
    );
    let second = raftgres.spawn(&["lock", "jobs", "echo", "second holds it"], hold);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        second.lines().is_empty(),
        "two holders: {:?}",
        second.lines()
    );
    // Ctrl-C: etcdctl revokes its session's lease, which releases the lock.
    first.interrupt(Duration::from_secs(10)).await;
    let got = second.wait_for_lines(2, Duration::from_secs(15)).await;
    assert_eq!(
        got.last().map(String::as_str),
        Some("second holds it"),
        "{got:?}"
    );

    let alice = raftgres.spawn(&["elect", "scheduler", "alice"], hold);
    let won = alice.wait_for_lines(2, Duration::from_secs(10)).await;
    assert_eq!(won.get(1).map(String::as_str), Some("alice"), "{won:?}");
    let bob = raftgres.spawn(&["elect", "scheduler", "bob"], hold);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(bob.lines().is_empty(), "two leaders: {:?}", bob.lines());
    assert_eq!(leader_named(raftgres, "scheduler").await, "alice");
    alice.interrupt(Duration::from_secs(10)).await;
    let won = bob.wait_for_lines(2, Duration::from_secs(15)).await;
    assert_eq!(won.get(1).map(String::as_str), Some("bob"), "{won:?}");
    assert_eq!(leader_named(raftgres, "scheduler").await, "bob");
}

/// Proves that lease commands answer as etcd's, once lease ids (random on
/// both sides) and the seconds a lease has left are normalized: a grant, a
/// put attached to the lease, time-to-live with its keys, a single
/// keep-alive, the lease list, a revoke that deletes the attached key, the
/// time-to-live of the revoked lease; and `lock` running a command while
/// it holds the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_commands_answer_as_etcd_does() {
    let sides = start("etcd-lease-compare").await;
    let both = &sides.all;
    let granted = both.succeeds(&["lease", "grant", "60"]).await;
    let leases = [
        granted_lease(&granted.etcd),
        granted_lease(&granted.raftgres),
    ];
    let attach = leases.clone().map(|lease| format!("--lease={lease}"));
    both.same_each(
        &["put", "held", "v", &attach[0]],
        &["put", "held", "v", &attach[1]],
    )
    .await
    .succeeded();
    for question in [
        &["lease", "timetolive", "ID", "--keys"][..],
        &["lease", "keep-alive", "--once", "ID"][..],
    ] {
        let ask = |lease: &str| -> Vec<String> {
            question
                .iter()
                .map(|word| {
                    if *word == "ID" {
                        lease.to_string()
                    } else {
                        word.to_string()
                    }
                })
                .collect()
        };
        let (etcd_args, raftgres_args) = (ask(&leases[0]), ask(&leases[1]));
        let etcd_args: Vec<&str> = etcd_args.iter().map(String::as_str).collect();
        let raftgres_args: Vec<&str> = raftgres_args.iter().map(String::as_str).collect();
        both.same_each(&etcd_args, &raftgres_args).await.succeeded();
    }
    both.succeeds(&["lease", "list"]).await;
    both.same_each(
        &["lease", "revoke", &leases[0]],
        &["lease", "revoke", &leases[1]],
    )
    .await
    .succeeded();
    both.succeeds(&["get", "held", "-w", "json"]).await;
    both.same_each(
        &["lease", "timetolive", &leases[0]],
        &["lease", "timetolive", &leases[1]],
    )
    .await
    .succeeded();
    both.succeeds(&["lock", "jobs", "echo", "held while locked"])
        .await;
}
