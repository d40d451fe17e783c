//! The two systems under test behind one interface: a `Target` is a gRPC
//! connection to a cluster's leader that can put a key and read it back,
//! through raftgres' `raftgres.v1.Kv` or etcd's `etcdserverpb.KV`.
//!
//! Both are driven the same way: raw tonic clients on connections opened
//! to the leader (found once, before the run), no retries, no leader
//! following, so that neither client library adds work the other does not.

use std::time::Duration;

use anyhow::Context;
use raftgres_proto::v1 as raftgres_v1;
use tonic::transport::{Channel, Endpoint};

/// etcd's v3 API (`etcdserverpb`), from the proto crate.
pub use raftgres_proto::etcdserverpb as etcd_v3;

/// How long connecting to a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one benchmark request; a slower one counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which system a target talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// raftgres' `raftgres.v1.Kv`.
    Raftgres,
    /// etcd's `etcdserverpb.KV`.
    Etcd,
}

impl System {
    /// Lowercase name, as in the reports.
    pub fn name(self) -> &'static str {
        match self {
            System::Raftgres => "raftgres",
            System::Etcd => "etcd",
        }
    }
}

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// A quorum confirms leadership before the answer: raftgres
    /// `READ_MODE_LINEARIZABLE`, etcd's default Range.
    Linearizable,
    /// raftgres `READ_MODE_LEASE`. etcd has no lease reads; its closest
    /// cheap read is `serializable` (the member's local state without a
    /// quorum round), which is what this maps to on the etcd leader.
    Lease,
}

/// One client's handle on a system (cheap to clone; clones share the
/// connection).
#[derive(Clone, Debug)]
pub enum Target {
    /// A raftgres leader.
    Raftgres(raftgres_v1::kv_client::KvClient<Channel>),
    /// An etcd leader.
    Etcd(etcd_v3::kv_client::KvClient<Channel>),
}

impl Target {
    /// A target on `channel`.
    pub fn new(system: System, channel: Channel) -> Target {
        match system {
            System::Raftgres => Target::Raftgres(raftgres_v1::kv_client::KvClient::new(channel)),
            System::Etcd => Target::Etcd(etcd_v3::kv_client::KvClient::new(channel)),
        }
    }

    /// Writes `value` under `key`; returns once the system acknowledged
    /// (committed and applied).
    pub async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), tonic::Status> {
        match self {
            Target::Raftgres(client) => {
                let request = raftgres_v1::PutRequest {
                    key,
                    value,
                    session: None,
                };
                client.put(with_deadline(request)).await.map(drop)
            }
            Target::Etcd(client) => {
                let request = etcd_v3::PutRequest {
                    key,
                    value,
                    ..Default::default()
                };
                client.put(with_deadline(request)).await.map(drop)
            }
        }
    }

    /// Reads `key` in `mode`.
    pub async fn get(&mut self, key: Vec<u8>, mode: ReadMode) -> Result<(), tonic::Status> {
        match self {
            Target::Raftgres(client) => {
                let mode = match mode {
                    ReadMode::Linearizable => raftgres_v1::ReadMode::Linearizable,
                    ReadMode::Lease => raftgres_v1::ReadMode::Lease,
                };
                let request = raftgres_v1::GetRequest {
                    key,
                    mode: mode as i32,
                };
                client.get(with_deadline(request)).await.map(drop)
            }
            Target::Etcd(client) => {
                let request = etcd_v3::RangeRequest {
                    key,
                    serializable: mode == ReadMode::Lease,
                    ..Default::default()
                };
                client.range(with_deadline(request)).await.map(drop)
            }
        }
    }
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(REQUEST_TIMEOUT);
    request
}

/// Opens one HTTP/2 connection to `address` (`host:port`).
pub async fn connect(address: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{address}"))
        .with_context(|| format!("bad address {address}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {address}"))
}

/// The address of the member every answering member names as leader.
pub async fn find_leader(system: System, addresses: &[String]) -> anyhow::Result<String> {
    match system {
        System::Raftgres => find_raftgres_leader(addresses).await,
        System::Etcd => find_etcd_leader(addresses).await,
    }
}

async fn find_raftgres_leader(addresses: &[String]) -> anyhow::Result<String> {
    for address in addresses {
        let Ok(channel) = connect(address).await else {
            continue;
        };
        let mut client = raftgres_v1::cluster_client::ClusterClient::new(channel);
        let Ok(status) = client
            .status(with_deadline(raftgres_v1::StatusRequest {}))
            .await
        else {
            continue;
        };
        let status = status.into_inner();
        if status.role == raftgres_v1::Role::Leader as i32 {
            return Ok(address.clone());
        }
        if status.leader_id != 0 && !status.leader_address.is_empty() {
            return Ok(status.leader_address);
        }
    }
    anyhow::bail!("no raftgres node among {addresses:?} knows a leader")
}

async fn find_etcd_leader(addresses: &[String]) -> anyhow::Result<String> {
    for address in addresses {
        let Ok(channel) = connect(address).await else {
            continue;
        };
        let mut client = etcd_v3::maintenance_client::MaintenanceClient::new(channel);
        let Ok(status) = client
            .status(with_deadline(etcd_v3::StatusRequest {}))
            .await
        else {
            continue;
        };
        let status = status.into_inner();
        let member_id = status.header.map(|header| header.member_id).unwrap_or(0);
        if status.leader != 0 && status.leader == member_id {
            return Ok(address.clone());
        }
    }
    anyhow::bail!("no etcd member among {addresses:?} is the leader")
}
