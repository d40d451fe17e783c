//! The systems under test behind one interface: a `Target` is a gRPC
//! connection to a cluster's leader that can put a key and read it back,
//! through raftgres' `raftgres.v1.Kv` or etcd's `etcdserverpb.KV`.
//!
//! A `System` is a cluster and the API it is driven through: raftgres
//! through `raftgres.v1.Kv`, raftgres through the etcd API its nodes also
//! serve (docs/ETCD.md), and etcd itself. The last two send the very same
//! requests, so they differ only in the server behind them.
//!
//! All are driven the same way: raw tonic clients on connections opened
//! to the leader (found once, before the run), no retries, no leader
//! following, so that no client library adds work another does not.

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

/// Which system a target talks to: a cluster and the API it is driven
/// through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// raftgres through its own `raftgres.v1.Kv`.
    Raftgres,
    /// raftgres through etcd's `etcdserverpb.KV`, which its nodes serve on
    /// the same client port (the same requests as sent to etcd).
    RaftgresEtcdApi,
    /// etcd through its `etcdserverpb.KV`.
    Etcd,
}

/// The cluster behind a system: where its leader is found and whose
/// processes and metrics are watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cluster {
    /// raftgres nodes (and their Postgres instances).
    Raftgres,
    /// etcd members.
    Etcd,
}

/// The gRPC API a system is driven through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `raftgres.v1.Kv`: `Put`, `Get`.
    RaftgresV1,
    /// `etcdserverpb.KV`: `Put`, `Range`.
    EtcdV3,
}

impl System {
    /// Name as on the command line and in the reports (JSON, CSV,
    /// Markdown): "raftgres", "raftgres-etcd-api", "etcd".
    pub fn name(self) -> &'static str {
        match self {
            System::Raftgres => "raftgres",
            System::RaftgresEtcdApi => "raftgres-etcd-api",
            System::Etcd => "etcd",
        }
    }

    /// The cluster that serves this system.
    pub fn cluster(self) -> Cluster {
        match self {
            System::Raftgres | System::RaftgresEtcdApi => Cluster::Raftgres,
            System::Etcd => Cluster::Etcd,
        }
    }

    /// The API this system is driven through.
    pub fn api(self) -> Api {
        match self {
            System::Raftgres => Api::RaftgresV1,
            System::RaftgresEtcdApi | System::Etcd => Api::EtcdV3,
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
    /// raftgres `READ_MODE_LEASE`. etcd's API has no lease reads; its
    /// closest cheap read is `serializable` (the member's local state
    /// without a quorum round), which is what this maps to on the leader,
    /// etcd's or raftgres' through its etcd API alike.
    Lease,
}

/// One client's handle on a system (cheap to clone; clones share the
/// connection).
#[derive(Clone, Debug)]
pub enum Target {
    /// `raftgres.v1.Kv` on a raftgres leader.
    RaftgresV1(raftgres_v1::kv_client::KvClient<Channel>),
    /// `etcdserverpb.KV` on an etcd leader or a raftgres leader.
    EtcdV3(etcd_v3::kv_client::KvClient<Channel>),
}

impl Target {
    /// A target on `channel`, speaking `system`'s API.
    pub fn new(system: System, channel: Channel) -> Target {
        match system.api() {
            Api::RaftgresV1 => Target::RaftgresV1(raftgres_v1::kv_client::KvClient::new(channel)),
            Api::EtcdV3 => Target::EtcdV3(etcd_v3::kv_client::KvClient::new(channel)),
        }
    }

    /// Writes `value` under `key`; returns once the system acknowledged
    /// (committed and applied).
    pub async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), tonic::Status> {
        match self {
            Target::RaftgresV1(client) => {
                let request = raftgres_v1::PutRequest {
                    key,
                    value,
                    session: None,
                };
                client.put(with_deadline(request)).await.map(drop)
            }
            Target::EtcdV3(client) => {
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
            Target::RaftgresV1(client) => {
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
            Target::EtcdV3(client) => {
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
/// raftgres' leader is asked for through `raftgres.v1.Cluster` whichever
/// API the load then goes through.
pub async fn find_leader(system: System, addresses: &[String]) -> anyhow::Result<String> {
    match system.cluster() {
        Cluster::Raftgres => find_raftgres_leader(addresses).await,
        Cluster::Etcd => find_etcd_leader(addresses).await,
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

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn every_system_has_one_name_on_the_command_line_and_in_the_reports() {
        for system in System::value_variants() {
            let name = system.name();
            assert_eq!(System::from_str(name, false), Ok(*system));
            assert_eq!(
                system
                    .to_possible_value()
                    .map(|value| value.get_name().to_string()),
                Some(name.to_string())
            );
            assert_eq!(serde_json::to_value(system).unwrap(), name);
        }
        assert_eq!(
            System::from_str("raftgres-etcd-api", false),
            Ok(System::RaftgresEtcdApi)
        );
    }

    #[test]
    fn raftgres_through_the_etcd_api_sends_etcd_requests_to_the_raftgres_cluster() {
        assert_eq!(System::RaftgresEtcdApi.cluster(), Cluster::Raftgres);
        assert_eq!(System::RaftgresEtcdApi.api(), Api::EtcdV3);
        assert_eq!(System::Raftgres.cluster(), Cluster::Raftgres);
        assert_eq!(System::Raftgres.api(), Api::RaftgresV1);
        assert_eq!(System::Etcd.cluster(), Cluster::Etcd);
        assert_eq!(System::Etcd.api(), Api::EtcdV3);
    }
}
