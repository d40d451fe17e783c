//! Membership changes as the nemesis makes them: the steps of the
//! documented flows (docs/OPERATIONS.md, "Changing membership") against a
//! running [`TestCluster`], each bounded in time and returning an error
//! instead of panicking, so that a step the faults around it defeat is
//! reported and the campaign goes on.
//!
//! ```text
//!   add a voter:   prepare + member add (learner) ─► caught up ─► promote ─► settled
//!   remove a node: member remove ─► settled without it ─► stop it, drop its data
//!   replace:       kill -9 the node ─► add a learner ─ (hold) ─► promote ─► remove the dead one
//! ```
//!
//! [`reconcile`] brings the cluster back to a settled membership of the
//! wanted size whose members are exactly the nodes the test cluster runs,
//! whatever a defeated step left behind; the campaign's final checks
//! then compare exactly the members.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use raftgres::client::{Client, ClientOptions, MemberListResponse};
use tonic::Code;

use crate::{settled_voters, TestCluster, CATCH_UP_ENTRIES_MAX, POLL_INTERVAL};

/// Upper bound of one step of a change (the new node's catch-up, a change
/// committing, the membership settling).
pub const MEMBER_STEP_MAX: Duration = Duration::from_secs(30);
/// Rounds of [`reconcile`] before it gives up.
const RECONCILE_ROUNDS_MAX: usize = 6;

/// A client for membership changes: each call retried within the step
/// bound, single requests short enough that a paused node does not hold
/// a step for long.
fn member_client(cluster: &TestCluster) -> Result<Client, String> {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(5),
        retry_duration_max: MEMBER_STEP_MAX,
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    Client::with_options(cluster.addresses(), options).map_err(|error| error.to_string())
}

/// The leader's member list once `accept` holds, within [`MEMBER_STEP_MAX`].
async fn wait_for_listing(
    cluster: &TestCluster,
    what: &str,
    accept: impl Fn(&MemberListResponse) -> bool,
) -> Result<MemberListResponse, String> {
    let client = member_client(cluster)?;
    let deadline = Instant::now() + MEMBER_STEP_MAX;
    loop {
        let last = client.member_list().await;
        if let Ok(listing) = &last {
            if accept(listing) {
                return Ok(listing.clone());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no {what} within {MEMBER_STEP_MAX:?}; last member list: {last:?}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Every member of `listing` (voters of both halves of a joint
/// membership, and learners).
pub fn members_of(listing: &MemberListResponse) -> BTreeSet<u64> {
    let membership = listing.membership.clone().unwrap_or_default();
    membership
        .voters
        .iter()
        .chain(&membership.voters_outgoing)
        .chain(&membership.learners)
        .copied()
        .collect()
}

/// Adds a fresh, empty node as a learner and starts it; returns its id.
pub async fn add_learner(cluster: &mut TestCluster) -> Result<u64, String> {
    let id = cluster
        .add_node()
        .await
        .map_err(|error| error.to_string())?;
    wait_for_listing(
        cluster,
        &format!("node {id} listed as a learner"),
        |listing| {
            let membership = listing.membership.clone().unwrap_or_default();
            membership.learners.contains(&id)
        },
    )
    .await?;
    Ok(id)
}

/// Promotes learner `id` once the leader finds it within
/// [`CATCH_UP_ENTRIES_MAX`] of its log, and waits until the membership
/// settles with it as a voter.
pub async fn promote_when_caught_up(cluster: &TestCluster, id: u64) -> Result<(), String> {
    wait_for_listing(cluster, &format!("node {id} caught up"), |listing| {
        let match_index = |member_id: u64| {
            let member = listing.members.iter().find(|member| member.id == member_id);
            member.map_or(0, |member| member.match_index)
        };
        let (learner, leader) = (match_index(id), match_index(listing.leader_id));
        learner > 0 && learner + CATCH_UP_ENTRIES_MAX >= leader
    })
    .await?;
    let client = member_client(cluster)?;
    let deadline = Instant::now() + MEMBER_STEP_MAX;
    loop {
        match client.member_promote(id).await {
            Ok(_) => break,
            // Still behind, or another change in flight.
            Err(error) if error.code() == Some(Code::Unavailable) && Instant::now() < deadline => {
                tokio::time::sleep(POLL_INTERVAL).await
            }
            Err(error) => return Err(format!("promoting node {id}: {error}")),
        }
    }
    wait_for_listing(
        cluster,
        &format!("settled membership with voter {id}"),
        |listing| settled_voters(listing).is_some_and(|voters| voters.contains(&id)),
    )
    .await
    .map(|_| ())
}

/// Adds a fresh node and makes it a voter; returns its id.
pub async fn add_voter(cluster: &mut TestCluster) -> Result<u64, String> {
    let id = add_learner(cluster).await?;
    promote_when_caught_up(cluster, id).await?;
    Ok(id)
}

/// Removes member `id` (the leader steps down once the change commits),
/// waits until the membership settles without it, then stops the node
/// and its Postgres and deletes its data: it is gone for good (its log
/// stays, for the artifacts).
pub async fn remove(cluster: &mut TestCluster, id: u64) -> Result<(), String> {
    let client = member_client(cluster)?;
    client
        .member_remove(id)
        .await
        .map_err(|error| format!("removing node {id}: {error}"))?;
    wait_for_listing(
        cluster,
        &format!("settled membership without node {id}"),
        |listing| settled_voters(listing).is_some_and(|voters| !voters.contains(&id)),
    )
    .await?;
    forget(cluster, id).await
}

/// Stops node `id` and its Postgres, drops it from the test cluster and
/// deletes its Postgres data (ids are never used again: its config stays).
async fn forget(cluster: &mut TestCluster, id: u64) -> Result<(), String> {
    let data = cluster.layout().postgres_dir(id);
    cluster
        .forget_node(id)
        .await
        .map_err(|error| format!("stopping removed node {id}: {error}"))?;
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(data)).await;
    Ok(())
}

/// Brings the cluster to a settled membership of `voters_wanted` voters
/// and no learner whose members are exactly the nodes the test cluster
/// knows, all running: nodes the membership does not list are forgotten,
/// members that do not run are started again (a node killed for a
/// replacement that did not go through), learners are promoted (or
/// removed when they exited), voters the test cluster does not know are
/// removed, and voters are added or removed (never the leader) until
/// there are `voters_wanted`. Called only when no fault is in place.
/// Returns what it did.
pub async fn reconcile(
    cluster: &mut TestCluster,
    voters_wanted: usize,
) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    // Voters first: a learner that exited is not started again, it is
    // removed below (a node that exits while joining would only exit
    // again). With no leader to list the members, every node is started:
    // a voter that does not run may be what the quorum lacks.
    let listing = member_client(cluster)?.member_list().await.ok();
    for id in cluster.node_ids() {
        let voter = listing.as_ref().is_none_or(|listing| {
            let membership = listing.membership.clone().unwrap_or_default();
            membership.voters.contains(&id) || membership.voters_outgoing.contains(&id)
        });
        if voter && !cluster.is_running(id) {
            cluster.reap_exited();
            cluster.start_node(id).map_err(|error| error.to_string())?;
            done.push(format!("started node {id}, which did not run"));
        }
    }
    for _ in 0..RECONCILE_ROUNDS_MAX {
        let listing = wait_for_listing(cluster, "settled membership", |listing| {
            let membership = listing.membership.clone().unwrap_or_default();
            listing.committed && membership.voters_outgoing.is_empty()
        })
        .await?;
        let members = members_of(&listing);
        let known: BTreeSet<u64> = cluster.node_ids().into_iter().collect();
        let membership = listing.membership.clone().unwrap_or_default();
        if let Some(stranger) = known.difference(&members).next().copied() {
            forget(cluster, stranger).await?;
            done.push(format!("forgot node {stranger}, not a member"));
        } else if let Some(learner) = membership.learners.first().copied() {
            if cluster.is_running(learner) {
                promote_when_caught_up(cluster, learner).await?;
                done.push(format!("promoted learner {learner}"));
            } else {
                remove(cluster, learner).await?;
                done.push(format!("removed learner {learner}, not running"));
            }
        } else if let Some(unknown) = members.difference(&known).next().copied() {
            member_client(cluster)?
                .member_remove(unknown)
                .await
                .map_err(|error| format!("removing unknown member {unknown}: {error}"))?;
            done.push(format!(
                "removed member {unknown}, not a node of the test cluster"
            ));
        } else if membership.voters.len() < voters_wanted {
            let id = add_voter(cluster).await?;
            done.push(format!("added voter {id}"));
        } else if membership.voters.len() > voters_wanted {
            let victim = membership
                .voters
                .iter()
                .copied()
                .find(|voter| *voter != listing.leader_id)
                .ok_or("no voter but the leader to remove")?;
            remove(cluster, victim).await?;
            done.push(format!("removed voter {victim}"));
        } else {
            return Ok(done);
        }
    }
    Err(format!(
        "the membership did not settle in {RECONCILE_ROUNDS_MAX} rounds ({})",
        done.join("; ")
    ))
}
