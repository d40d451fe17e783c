//! `raftgres member`: the cluster's members as the leader knows them, and
//! changes to them one at a time (add a learner, promote it, remove a
//! member), through `raftgres::client::Client`.
//!
//! Every change waits, after the leader answered, until the membership it
//! led to is committed and no longer joint (a change of voters passes
//! through a joint membership, which the leader leaves by itself), so that
//! the next command of a script is not refused because a change is still
//! in flight. Results go to stdout, progress to stderr.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use raftgres::client::{
    Client, ClientError, Code, Member, MemberChangeResponse, MemberListResponse, MemberRole,
    Membership,
};

use crate::client::ConnectionArgs;
use crate::{table, Outcome};

/// A learner this close to the leader's last log index counts as caught
/// up: a promotion is refused only while a learner is more than one append
/// message behind (`raft.entries_per_message_max`, 512 by default), and
/// this stays below any sensible setting of it. Promotion is retried if
/// the leader still finds the learner behind.
const CATCH_UP_ENTRIES_MAX: u64 = 64;
/// How often the leader's member list is read while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Least time between two progress lines while a learner catches up.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members as the leader knows them.
    ///
    /// One row per member (id, peer address, role, how far it has
    /// replicated), then which node leads and whether the membership is
    /// committed or joint.
    List {
        /// Print JSON (one object) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a node as a learner, then promote it once it has caught up.
    ///
    /// Adds node ID, whose peer API listens at ADDRESS, as a learner; then,
    /// unless --learner, waits until it has caught up with the leader's log
    /// and promotes it to voter (--timeout bounds the wait). Start the node
    /// with `raftgres serve --join`, before or after.
    Add {
        /// The new node's id (not a member now).
        id: u64,
        /// Its peer API's address, `host:port`.
        address: String,
        /// Only add it as a learner; promote it later with `raftgres member
        /// promote ID`.
        #[arg(long)]
        learner: bool,
    },
    /// Make a learner a voter.
    ///
    /// Refused while the learner is behind the leader's log (retried until
    /// --timeout).
    Promote {
        /// The learner to promote.
        id: u64,
    },
    /// Remove a voter or a learner.
    ///
    /// Not the last voter. A removed leader steps down and the others elect
    /// one; stop the removed node's process afterwards.
    Remove {
        /// The member to remove.
        id: u64,
    },
}

pub async fn run_member(
    command: MemberCommand,
    connection: &ConnectionArgs,
) -> anyhow::Result<Outcome> {
    let client = connection.client()?;
    let timeout = Duration::from_secs(connection.timeout);
    match command {
        MemberCommand::List { json } => {
            let listing = client
                .member_list()
                .await
                .context("reading the member list from the leader")?;
            if json {
                println!("{}", listing_json(&listing));
            } else {
                print!("{}", listing_table(&listing));
            }
        }
        MemberCommand::Add {
            id,
            address,
            learner,
        } => add(&client, id, &address, learner, timeout).await?,
        MemberCommand::Promote { id } => {
            let response = client
                .member_promote(id)
                .await
                .with_context(|| format!("promoting node {id}"))?;
            report_change(&format!("promoted node {id}"), &response);
            settle(&client, timeout).await?;
        }
        MemberCommand::Remove { id } => {
            let response = client
                .member_remove(id)
                .await
                .with_context(|| format!("removing node {id}"))?;
            report_change(&format!("removed node {id}"), &response);
            settle(&client, timeout).await?;
            println!("stop node {id}'s process: it is no longer a member");
        }
    }
    Ok(Outcome::Success)
}

/// `member add`: the learner, then (unless `learner_only`) the wait for it
/// to catch up and its promotion.
async fn add(
    client: &Client,
    id: u64,
    address: &str,
    learner_only: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    match client.member_add(id, address).await {
        Ok(response) => report_change(&format!("added node {id} as a learner"), &response),
        Err(error) => match already_added(client, &error, id, address).await {
            Some(MemberRole::Voter) => {
                println!("node {id} at {address} is already a voter; nothing to do");
                return Ok(());
            }
            Some(role) => {
                let role = role_name(role as i32);
                eprintln!("node {id} at {address} is already a member ({role}); continuing");
            }
            None => return Err(error).with_context(|| format!("adding node {id}")),
        },
    }
    if learner_only {
        println!(
            "start node {id} with `raftgres serve --join` if it is not running; promote it with \
             `raftgres member promote {id}` once it has caught up"
        );
        return Ok(());
    }
    eprintln!(
        "waiting for node {id} to catch up with the leader's log (start it with `raftgres serve \
         --join` if it is not running)"
    );
    loop {
        wait_caught_up(client, id, deadline).await?;
        match client.member_promote(id).await {
            Ok(response) => {
                report_change(&format!("promoted node {id}"), &response);
                break;
            }
            Err(error) if learner_behind(&error) && Instant::now() < deadline => {
                eprintln!("the leader still finds node {id} behind; waiting");
            }
            Err(error) => return Err(error).with_context(|| format!("promoting node {id}")),
        }
    }
    settle(client, deadline.saturating_duration_since(Instant::now())).await
}

/// When `error` refused an add because node `id` is already a member at
/// `address`, its role; `None` for any other failure (or another address).
async fn already_added(
    client: &Client,
    error: &ClientError,
    id: u64,
    address: &str,
) -> Option<MemberRole> {
    if error.code() != Some(Code::InvalidArgument) {
        return None;
    }
    let listing = client.member_list().await.ok()?;
    let member = listing.members.iter().find(|member| member.id == id)?;
    (member.address == address.trim()).then(|| member.role())
}

/// Whether `error` is the leader refusing a promotion because the learner
/// is behind its log.
fn learner_behind(error: &ClientError) -> bool {
    error.code() == Some(Code::Unavailable) && error.to_string().contains("behind the leader")
}

/// How far a learner is from the leader's log, as a member list shows it.
#[derive(Debug, PartialEq, Eq)]
enum CatchUp {
    /// Within [`CATCH_UP_ENTRIES_MAX`] of the leader's last index, and
    /// heard from: a match index of 0 means the leader has no word from it
    /// yet (it may not even run), however short the log.
    CaughtUp { match_index: u64, leader_index: u64 },
    /// Further behind, or not heard from yet.
    Behind { match_index: u64, leader_index: u64 },
    /// It votes already (promoted by someone else).
    Voter,
}

/// Where learner `id` stands in `listing` (the leader's); an error when
/// it is no member or leaves.
fn catch_up(listing: &MemberListResponse, id: u64) -> anyhow::Result<CatchUp> {
    let member = listing
        .members
        .iter()
        .find(|member| member.id == id)
        .with_context(|| format!("node {id} is no longer a member (removed meanwhile?)"))?;
    match member.role() {
        MemberRole::Voter => return Ok(CatchUp::Voter),
        MemberRole::Learner => {}
        MemberRole::OutgoingVoter | MemberRole::Unspecified => {
            anyhow::bail!("node {id} is being removed; it will not be promoted")
        }
    }
    // The leader's own match index is its last durable index.
    let leader_index = listing
        .members
        .iter()
        .find(|member| member.id == listing.leader_id)
        .map_or(0, |leader| leader.match_index)
        .max(member.match_index);
    let match_index = member.match_index;
    let heard_from = match_index > 0;
    Ok(
        if heard_from && leader_index - match_index <= CATCH_UP_ENTRIES_MAX {
            CatchUp::CaughtUp {
                match_index,
                leader_index,
            }
        } else {
            CatchUp::Behind {
                match_index,
                leader_index,
            }
        },
    )
}

/// Reads the leader's member list until learner `id` has caught up,
/// printing its progress; fails at `deadline`.
async fn wait_caught_up(client: &Client, id: u64, deadline: Instant) -> anyhow::Result<()> {
    let mut printed_at: Option<Instant> = None;
    // Bounded: every turn sleeps, and the loop ends at `deadline`.
    loop {
        let listing = client
            .member_list()
            .await
            .context("reading the member list from the leader")?;
        let (match_index, leader_index) = match catch_up(&listing, id)? {
            CatchUp::Voter => return Ok(()),
            CatchUp::CaughtUp {
                match_index,
                leader_index,
            } => {
                eprintln!("node {id} caught up: match index {match_index} of {leader_index}");
                return Ok(());
            }
            CatchUp::Behind {
                match_index,
                leader_index,
            } => (match_index, leader_index),
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "node {id} did not catch up in time: match index {match_index} of the leader's \
                 {leader_index}. It stays a learner: check that it runs (`raftgres serve --join`), \
                 then promote it with `raftgres member promote {id}` (raise --timeout to wait \
                 longer)"
            );
        }
        if printed_at.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL) {
            eprintln!("node {id}: match index {match_index} of {leader_index}");
            printed_at = Some(Instant::now());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits (at most `timeout`, and at least one look) until the leader's
/// membership is committed and not joint; prints it.
async fn settle(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    // Bounded: every turn sleeps, and the loop ends at `deadline`.
    loop {
        let listing = client
            .member_list()
            .await
            .context("reading the member list from the leader")?;
        let membership = listing.membership.clone().unwrap_or_default();
        let joint = !membership.voters_outgoing.is_empty();
        if listing.committed && !joint {
            println!(
                "membership of index {} committed: {}",
                listing.membership_index,
                describe_membership(&membership)
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the membership of index {} was not settled in time ({}{}); the leader finishes \
                 the change by itself: see `raftgres member list`",
                listing.membership_index,
                if joint { "joint, " } else { "" },
                if listing.committed {
                    "committed"
                } else {
                    "not committed"
                }
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One line for the leader's answer to a change.
fn report_change(what: &str, response: &MemberChangeResponse) {
    let membership = response.membership.clone().unwrap_or_default();
    println!(
        "{what} at index {}: {}",
        response.index,
        describe_membership(&membership)
    );
}

/// `voters 1, 2, 3; learners 4`, or while joint `voters 1, 2, 3 -> 1, 2,
/// 4; learners none`.
fn describe_membership(membership: &Membership) -> String {
    let ids = |ids: &[u64]| {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        let listed: Vec<String> = sorted.iter().map(u64::to_string).collect();
        if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        }
    };
    let voters = if membership.voters_outgoing.is_empty() {
        ids(&membership.voters)
    } else {
        format!(
            "{} -> {}",
            ids(&membership.voters_outgoing),
            ids(&membership.voters)
        )
    };
    format!("voters {voters}; learners {}", ids(&membership.learners))
}

/// The member list as a table, then one line on the leader and one on
/// the membership.
fn listing_table(listing: &MemberListResponse) -> String {
    let rows: Vec<Vec<String>> = members_by_id(listing)
        .into_iter()
        .map(|member| {
            let mut role = role_name(member.role).to_string();
            if member.id == listing.leader_id {
                role.push_str(" (leader)");
            }
            vec![
                member.id.to_string(),
                if member.address.is_empty() {
                    "-".to_string()
                } else {
                    member.address.clone()
                },
                role,
                member.match_index.to_string(),
            ]
        })
        .collect();
    let membership = listing.membership.clone().unwrap_or_default();
    let state = match (listing.committed, membership.voters_outgoing.is_empty()) {
        (true, true) => "committed",
        (false, true) => "not committed yet",
        (true, false) => "joint (a change of voters in flight), committed",
        (false, false) => "joint (a change of voters in flight), not committed yet",
    };
    let leader = match listing.leader_id {
        0 => "no leader known".to_string(),
        id => format!("leader: node {id}"),
    };
    format!(
        "{}{leader}\nmembership of index {}: {state}; {}\n",
        table::render(&["ID", "ADDRESS", "ROLE", "MATCH INDEX"], &rows),
        listing.membership_index,
        describe_membership(&membership)
    )
}

/// The member list as one JSON object: `{"leader_id", "membership_index",
/// "committed", "joint", "voters", "voters_outgoing", "learners",
/// "members": [{"id", "address", "role", "match_index"}]}`; `leader_id` is
/// 0 when no leader is known.
fn listing_json(listing: &MemberListResponse) -> String {
    let string = raftgres_devcluster::cluster::json_string;
    let ids = |ids: &[u64]| {
        let listed: Vec<String> = ids.iter().map(u64::to_string).collect();
        format!("[{}]", listed.join(", "))
    };
    let membership = listing.membership.clone().unwrap_or_default();
    let members: Vec<String> = members_by_id(listing)
        .into_iter()
        .map(|member| {
            format!(
                "{{\"id\": {}, \"address\": {}, \"role\": {}, \"match_index\": {}}}",
                member.id,
                string(&member.address),
                string(role_name(member.role)),
                member.match_index
            )
        })
        .collect();
    format!(
        "{{\"leader_id\": {}, \"membership_index\": {}, \"committed\": {}, \"joint\": {}, \"voters\": {}, \"voters_outgoing\": {}, \"learners\": {}, \"members\": [{}]}}",
        listing.leader_id,
        listing.membership_index,
        listing.committed,
        !membership.voters_outgoing.is_empty(),
        ids(&membership.voters),
        ids(&membership.voters_outgoing),
        ids(&membership.learners),
        members.join(", ")
    )
}

fn members_by_id(listing: &MemberListResponse) -> Vec<&Member> {
    let mut members: Vec<&Member> = listing.members.iter().collect();
    members.sort_by_key(|member| member.id);
    members
}

fn role_name(role: i32) -> &'static str {
    match MemberRole::try_from(role) {
        Ok(MemberRole::Voter) => "voter",
        Ok(MemberRole::Learner) => "learner",
        Ok(MemberRole::OutgoingVoter) => "outgoing-voter",
        Ok(MemberRole::Unspecified) | Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, role: MemberRole, match_index: u64) -> Member {
        Member {
            id,
            address: format!("127.0.0.1:700{id}"),
            role: role as i32,
            match_index,
        }
    }

    fn listing(
        members: Vec<Member>,
        membership: Membership,
        committed: bool,
    ) -> MemberListResponse {
        MemberListResponse {
            members,
            membership: Some(membership),
            membership_index: 57,
            committed,
            leader_id: 1,
        }
    }

    fn membership(voters: &[u64], outgoing: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: voters.to_vec(),
            voters_outgoing: outgoing.to_vec(),
            learners: learners.to_vec(),
            addresses: Default::default(),
        }
    }

    #[test]
    fn the_table_marks_the_leader_and_says_whether_the_membership_is_settled() {
        let members = vec![
            member(2, MemberRole::Voter, 120),
            member(1, MemberRole::Voter, 121),
            member(4, MemberRole::Learner, 80),
        ];
        let text = listing_table(&listing(members, membership(&[1, 2], &[], &[4]), true));
        assert_eq!(
            text,
            "ID  ADDRESS         ROLE            MATCH INDEX\n\
             1   127.0.0.1:7001  voter (leader)  121\n\
             2   127.0.0.1:7002  voter           120\n\
             4   127.0.0.1:7004  learner         80\n\
             leader: node 1\n\
             membership of index 57: committed; voters 1, 2; learners 4\n"
        );
        let joint = listing(
            vec![
                member(1, MemberRole::Voter, 9),
                member(3, MemberRole::OutgoingVoter, 9),
            ],
            membership(&[1, 2], &[1, 2, 3], &[]),
            false,
        );
        let text = listing_table(&joint);
        assert!(
            text.contains("3   127.0.0.1:7003  outgoing-voter  9\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "joint (a change of voters in flight), not committed yet; voters 1, 2, 3 -> 1, 2; \
                 learners none\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_json_names_every_member_and_the_membership() {
        let members = vec![
            member(1, MemberRole::Voter, 5),
            member(4, MemberRole::Learner, 3),
        ];
        let json = listing_json(&listing(members, membership(&[1], &[], &[4]), true));
        assert_eq!(
            json,
            "{\"leader_id\": 1, \"membership_index\": 57, \"committed\": true, \"joint\": false, \
             \"voters\": [1], \"voters_outgoing\": [], \"learners\": [4], \"members\": [\
             {\"id\": 1, \"address\": \"127.0.0.1:7001\", \"role\": \"voter\", \"match_index\": 5}, \
             {\"id\": 4, \"address\": \"127.0.0.1:7004\", \"role\": \"learner\", \"match_index\": 3}]}"
        );
    }

    #[test]
    fn a_learner_has_caught_up_once_within_a_few_entries_of_the_leader() {
        let at = |learner_index: u64| {
            let members = vec![
                member(1, MemberRole::Voter, 1000),
                member(4, MemberRole::Learner, learner_index),
            ];
            catch_up(&listing(members, membership(&[1], &[], &[4]), true), 4).unwrap()
        };
        assert_eq!(
            at(10),
            CatchUp::Behind {
                match_index: 10,
                leader_index: 1000
            }
        );
        // Never heard from: not caught up, even when the log is short.
        let silent = listing(
            vec![
                member(1, MemberRole::Voter, 3),
                member(4, MemberRole::Learner, 0),
            ],
            membership(&[1], &[], &[4]),
            true,
        );
        assert_eq!(
            catch_up(&silent, 4).unwrap(),
            CatchUp::Behind {
                match_index: 0,
                leader_index: 3
            }
        );
        assert_eq!(
            at(1000 - CATCH_UP_ENTRIES_MAX),
            CatchUp::CaughtUp {
                match_index: 1000 - CATCH_UP_ENTRIES_MAX,
                leader_index: 1000
            }
        );
        let promoted = listing(
            vec![
                member(1, MemberRole::Voter, 9),
                member(4, MemberRole::Voter, 9),
            ],
            membership(&[1, 4], &[1], &[]),
            false,
        );
        assert_eq!(catch_up(&promoted, 4).unwrap(), CatchUp::Voter);
        let removed = listing(
            vec![member(1, MemberRole::Voter, 9)],
            membership(&[1], &[], &[]),
            true,
        );
        let error = catch_up(&removed, 4).unwrap_err().to_string();
        assert!(error.contains("no longer a member"), "{error}");
    }

    #[test]
    fn a_promotion_refused_for_a_learner_behind_is_told_apart() {
        let refused = |code, message: &str| ClientError::GaveUp {
            attempts: 3,
            elapsed: Duration::from_secs(1),
            addresses_tried: vec!["n1:1".into()],
            last_address: "n1:1".into(),
            last_code: code,
            last_message: message.into(),
            outcome_unknown: false,
        };
        let behind = "unavailable: learner 4 is 900 entries behind the leader; retry once it has \
                      caught up";
        assert!(learner_behind(&refused(Code::Unavailable, behind)));
        assert!(!learner_behind(&refused(
            Code::Unavailable,
            "a membership change is in progress; retry when it has committed"
        )));
    }
}
