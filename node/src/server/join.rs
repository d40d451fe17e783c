//! `serve --join`: a node that has no membership yet asks the nodes its
//! configuration lists whether the cluster added it, and refuses to start
//! if none says so. Without that check a node never added would wait for
//! a leader forever, unheard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgres_proto::v1 as wire;

use super::config::NodeConfig;
use super::convert;
use super::tls::TlsMaterial;
use super::transport::{self, PeerConnectSettings};
use crate::core::{Membership, NodeId};

/// How long the nodes asked may go on answering "not a member" before the
/// node gives up: an add just made may take a moment to reach a follower.
const NOT_ADDED_PATIENCE: Duration = Duration::from_secs(5);
/// How long the node waits for any answer at all.
const UNANSWERED_PATIENCE: Duration = Duration::from_secs(30);
/// Pause between rounds of asking.
const ROUND_PAUSE: Duration = Duration::from_millis(500);
/// Longest one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Returns once a node of the cluster lists this node as a member (a
/// learner, usually); fails with what the cluster said otherwise.
pub(super) async fn wait_until_added(
    config: &NodeConfig,
    tls: Option<&Arc<TlsMaterial>>,
) -> anyhow::Result<()> {
    let me = NodeId(config.node_id);
    let settings = PeerConnectSettings::of(config, tls.cloned());
    let started = Instant::now();
    let mut first_refusal: Option<Instant> = None;
    let mut last_refusal: Option<(u64, Membership)> = None;
    let mut last_failure = String::new();
    loop {
        for peer in config.peers.iter().filter(|peer| peer.id != me.0) {
            match ask(config, &settings, NodeId(peer.id), &peer.address).await {
                Ok(membership) if membership.contains(me) => {
                    tracing::info!(asked = peer.id, %membership, "the cluster added this node; joining");
                    return Ok(());
                }
                Ok(membership) => {
                    first_refusal.get_or_insert_with(Instant::now);
                    last_refusal = Some((peer.id, membership));
                }
                Err(error) => {
                    last_failure = format!("node {} at {}: {error}", peer.id, peer.address)
                }
            }
        }
        if let (Some(since), Some((asked, membership))) = (first_refusal, &last_refusal) {
            if since.elapsed() >= NOT_ADDED_PATIENCE {
                anyhow::bail!(
                    "node {me} is not a member of cluster {:?} (node {asked} knows the membership {membership}): \
                     add it first, on the cluster, with `raftgres member add {me} ADDRESS --learner`, \
                     then start it with --join again",
                    config.cluster_id
                );
            }
        }
        if first_refusal.is_none() && started.elapsed() >= UNANSWERED_PATIENCE {
            anyhow::bail!(
                "no node of cluster {:?} answered whether it added node {me} within {UNANSWERED_PATIENCE:?}; last failure: {last_failure}",
                config.cluster_id
            );
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

/// The membership node `peer` knows.
async fn ask(
    config: &NodeConfig,
    settings: &PeerConnectSettings,
    peer: NodeId,
    address: &str,
) -> anyhow::Result<Membership> {
    let request = wire::JoinRequest {
        header: Some(wire::PeerHeader {
            cluster_id: config.cluster_id.clone(),
            from: config.node_id,
            to: peer.0,
        }),
    };
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let mut client = transport::connect(peer, address, settings).await?;
        anyhow::Ok(client.join(request).await?.into_inner())
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {ANSWER_TIMEOUT:?}"))??;
    Ok(convert::membership_from_wire(
        answer.membership.unwrap_or_default(),
    ))
}
