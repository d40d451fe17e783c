//! The client commands: `kv`, `status`, `transfer-leader`, `wait`. They
//! find the leader through `raftgres::client::Client` and print plain text.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use raftgres::client::{
    self, Client, ClientOptions, ClientTls, NodeStatus, ReadMode, Role, StatusResponse,
};

use crate::{table, Outcome};

/// Where the cluster is and how long to try.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// gRPC addresses of one or more nodes; the leader is found from any.
    /// Default: the addresses `raftgres dev up` wrote to .dev/endpoints
    /// (or DIR/endpoints with RAFTGRES_DEV_DIR), else 127.0.0.1:7001-7003.
    #[arg(
        long,
        global = true,
        env = "RAFTGRES_ENDPOINTS",
        value_delimiter = ',',
        value_name = "ADDR[,ADDR...]"
    )]
    pub endpoints: Vec<String>,
    /// Give up after this many seconds of retrying (leader changes,
    /// unreachable nodes).
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
    /// Talk TLS, trusting nodes whose certificates chain to this CA (PEM).
    #[arg(long, global = true, env = "RAFTGRES_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for clusters that require one.
    #[arg(
        long,
        global = true,
        env = "RAFTGRES_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        global = true,
        env = "RAFTGRES_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name the nodes' certificates must carry when it is not the host
    /// dialled, e.g. raftgres-node-1.
    #[arg(
        long,
        global = true,
        env = "RAFTGRES_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl ConnectionArgs {
    /// A client of the nodes these flags name, retrying for `--timeout`.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let tls = match &self.tls_ca {
            Some(ca) => {
                let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
                let mut tls = ClientTls::from_files(ca, identity)?;
                tls.domain_name = self.tls_server_name.clone();
                Some(tls)
            }
            None if self.tls_cert.is_some() => {
                anyhow::bail!("--tls-cert needs --tls-ca (the CA the nodes' certificates chain to)")
            }
            None => None,
        };
        let options = ClientOptions {
            retry_duration_max: Duration::from_secs(self.timeout),
            tls,
            ..ClientOptions::default()
        };
        Client::with_options(self.resolved_endpoints(), options).context("invalid --endpoints")
    }

    /// `--endpoints`, else the dev cluster's endpoints file, else the
    /// ports a dev cluster used to prefer.
    pub fn resolved_endpoints(&self) -> Vec<String> {
        if !self.endpoints.is_empty() {
            return self.endpoints.clone();
        }
        let dir = std::env::var_os("RAFTGRES_DEV_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".dev"));
        let from_file = std::fs::read_to_string(dir.join("endpoints"))
            .map(|text| endpoints_from_text(&text))
            .unwrap_or_default();
        if from_file.is_empty() {
            DEFAULT_ENDPOINTS
                .iter()
                .map(|address| address.to_string())
                .collect()
        } else {
            from_file
        }
    }
}

/// Where a client looks when given no endpoints and finding no dev cluster.
const DEFAULT_ENDPOINTS: [&str; 3] = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"];

/// The addresses of an endpoints file (comma- or line-separated).
fn endpoints_from_text(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_string)
        .collect()
}

/// `--mode` of reads.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Mode {
    /// The leader confirms it still leads with a quorum first.
    #[default]
    Linearizable,
    /// The leader answers from its lease (no quorum round).
    Lease,
    /// Any node answers from what it has applied, possibly behind.
    Stale,
}

impl From<Mode> for ReadMode {
    fn from(mode: Mode) -> ReadMode {
        match mode {
            Mode::Linearizable => ReadMode::Linearizable,
            Mode::Lease => ReadMode::Lease,
            Mode::Stale => ReadMode::Stale,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Set KEY to VALUE; prints the log index (and the previous value).
    Put { key: String, value: String },
    /// Print the value of KEY (exit status 1 when it does not exist).
    Get {
        key: String,
        #[arg(long, value_enum, default_value_t = Mode::Linearizable)]
        mode: Mode,
    },
    /// Delete KEY.
    #[command(alias = "delete")]
    Del { key: String },
    /// Compare and swap: set (or delete) KEY only if its value is as
    /// expected (exit status 1 when it is not).
    #[command(group(ArgGroup::new("condition").required(true).args(["expected", "absent"])))]
    #[command(group(ArgGroup::new("change").required(true).args(["value", "delete"])))]
    Cas {
        key: String,
        /// The value KEY must have.
        #[arg(long)]
        expected: Option<String>,
        /// KEY must not exist.
        #[arg(long)]
        absent: bool,
        /// The new value.
        #[arg(long)]
        value: Option<String>,
        /// Delete KEY instead.
        #[arg(long)]
        delete: bool,
    },
    /// List pairs whose key starts with PREFIX (all pairs without one), in
    /// key order, one `KEY<TAB>VALUE` per line.
    Range {
        prefix: Option<String>,
        /// At most this many pairs (0: the server's limit).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = Mode::Linearizable)]
        mode: Mode,
    },
}

#[derive(Debug, Subcommand)]
pub enum WaitCommand {
    /// Wait until every reachable node names the same leader and it says it
    /// leads; print its id.
    Leader,
    /// Wait until node ID has applied everything the leader has committed.
    CaughtUp { id: u64 },
}

pub async fn run_kv(command: KvCommand, connection: &ConnectionArgs) -> anyhow::Result<Outcome> {
    let client = connection.client()?;
    match command {
        KvCommand::Put { key, value } => {
            let response = client.put(key, value).await?;
            match response.previous {
                Some(previous) => {
                    println!("OK index={} previous={}", response.index, text(&previous))
                }
                None => println!("OK index={}", response.index),
            }
            Ok(Outcome::Success)
        }
        KvCommand::Get { key, mode } => match client.get(key.as_str(), mode.into()).await? {
            Some(value) => {
                println!("{}", text(&value));
                Ok(Outcome::Success)
            }
            None => {
                eprintln!("key {key:?} not found");
                Ok(Outcome::Negative)
            }
        },
        KvCommand::Del { key } => {
            let response = client.delete(key.as_str()).await?;
            let what = if response.deleted {
                "deleted"
            } else {
                "not found"
            };
            println!("{what} index={}", response.index);
            Ok(Outcome::Success)
        }
        KvCommand::Cas {
            key,
            expected,
            absent: _,
            value,
            delete: _,
        } => {
            let response = client
                .compare_and_swap(
                    key,
                    expected.map(String::into_bytes),
                    value.map(String::into_bytes),
                )
                .await?;
            if response.succeeded {
                println!("swapped index={}", response.index);
                return Ok(Outcome::Success);
            }
            match response.current {
                Some(current) => println!("not swapped: the value is {}", text(&current)),
                None => println!("not swapped: the key does not exist"),
            }
            Ok(Outcome::Negative)
        }
        KvCommand::Range {
            prefix,
            limit,
            mode,
        } => {
            let response = client
                .range(prefix.unwrap_or_default(), limit, mode.into())
                .await?;
            for pair in &response.kvs {
                println!("{}\t{}", text(&pair.key), text(&pair.value));
            }
            if response.more {
                eprintln!("(more pairs match; raise --limit)");
            }
            Ok(Outcome::Success)
        }
    }
}

pub async fn run_status(connection: &ConnectionArgs, json: bool) -> anyhow::Result<Outcome> {
    let statuses = connection.client()?.cluster_status().await;
    if json {
        println!("{}", status_json(&statuses));
    } else {
        print!("{}", status_table(&statuses));
    }
    if statuses.iter().all(|node| node.status.is_err()) {
        anyhow::bail!(
            "no node answered (endpoints: {})",
            connection.resolved_endpoints().join(",")
        );
    }
    Ok(Outcome::Success)
}

/// The statuses as a JSON array, one object per address asked: either the
/// node's answer or `{"address", "error"}`.
fn status_json(statuses: &[NodeStatus]) -> String {
    let string = raftgres_devcluster::cluster::json_string;
    let nodes: Vec<String> = statuses
        .iter()
        .map(|node| match &node.status {
            Ok(status) => {
                let membership = status.membership.clone().unwrap_or_default();
                let ids = |ids: &[u64]| {
                    let listed: Vec<String> = ids.iter().map(u64::to_string).collect();
                    format!("[{}]", listed.join(", "))
                };
                format!(
                    "{{\"address\": {}, \"node_id\": {}, \"role\": {}, \"term\": {}, \"leader_id\": {}, \"commit_index\": {}, \"applied_index\": {}, \"last_log_index\": {}, \"storage_healthy\": {}, \"voters\": {}, \"voters_outgoing\": {}, \"learners\": {}}}",
                    string(&node.address),
                    status.node_id,
                    string(role_name(status.role)),
                    status.term,
                    status.leader_id,
                    status.commit_index,
                    status.applied_index,
                    status.last_log_index,
                    status.storage_healthy,
                    ids(&membership.voters),
                    ids(&membership.voters_outgoing),
                    ids(&membership.learners)
                )
            }
            Err(error) => format!(
                "{{\"address\": {}, \"error\": {}}}",
                string(&node.address),
                string(&short_error(error))
            ),
        })
        .collect();
    format!("[{}]", nodes.join(", "))
}

pub async fn run_transfer_leader(
    target_id: u64,
    connection: &ConnectionArgs,
) -> anyhow::Result<Outcome> {
    let response = connection.client()?.transfer_leadership(target_id).await?;
    println!(
        "node {} leads in term {}",
        response.leader_id, response.term
    );
    Ok(Outcome::Success)
}

pub async fn run_wait(
    command: WaitCommand,
    connection: &ConnectionArgs,
) -> anyhow::Result<Outcome> {
    let client = connection.client()?;
    let deadline = Instant::now() + Duration::from_secs(connection.timeout);
    loop {
        let statuses = client.cluster_status().await;
        let answered: Vec<&StatusResponse> = statuses
            .iter()
            .filter_map(|node| node.status.as_ref().ok())
            .collect();
        let leader = client::agreed_leader(answered.iter().copied());
        let done = match (&command, leader) {
            (WaitCommand::Leader, Some(leader)) => Some(leader.to_string()),
            (WaitCommand::CaughtUp { id }, Some(leader)) => caught_up(&answered, *id, leader),
            (_, None) => None,
        };
        if let Some(line) = done {
            println!("{line}");
            return Ok(Outcome::Success);
        }
        if Instant::now() >= deadline {
            eprint!("{}", status_table(&statuses));
            anyhow::bail!(
                "timed out after {}s waiting for {}",
                connection.timeout,
                describe(&command)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn describe(command: &WaitCommand) -> String {
    match command {
        WaitCommand::Leader => "a leader".to_string(),
        WaitCommand::CaughtUp { id } => format!("node {id} to catch up with the leader"),
    }
}

/// A line saying node `id` caught up, once its applied index reaches the
/// leader's commit index.
fn caught_up(answered: &[&StatusResponse], id: u64, leader: u64) -> Option<String> {
    let commit_index = answered
        .iter()
        .find(|status| status.node_id == leader)?
        .commit_index;
    let node = answered.iter().find(|status| status.node_id == id)?;
    (node.applied_index >= commit_index).then(|| {
        format!("node {id} caught up: applied index {} of leader {leader}'s commit index {commit_index}", node.applied_index)
    })
}

/// One row per node, then one line per node that did not answer saying
/// why (kept out of the table so that columns stay narrow).
fn status_table(statuses: &[NodeStatus]) -> String {
    let mut errors = String::new();
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|node| match &node.status {
            Ok(status) => vec![
                status.node_id.to_string(),
                node.address.clone(),
                role_name(status.role).to_string(),
                status.term.to_string(),
                if status.leader_id == 0 {
                    "-".to_string()
                } else {
                    status.leader_id.to_string()
                },
                status.commit_index.to_string(),
                status.applied_index.to_string(),
                status.last_log_index.to_string(),
            ],
            Err(error) => {
                errors.push_str(&format!("{}: {}\n", node.address, short_error(error)));
                vec![
                    "?".to_string(),
                    node.address.clone(),
                    "unreachable".to_string(),
                ]
            }
        })
        .collect();
    let headers = [
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LAST INDEX",
    ];
    table::render(&headers, &rows) + &errors
}

fn short_error(error: &client::ClientError) -> String {
    match error {
        client::ClientError::Rejected { code, message, .. } => format!("{code:?}: {message}"),
        other => other.to_string(),
    }
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Leader) => "leader",
        Ok(Role::Follower) => "follower",
        Ok(Role::Candidate) => "candidate",
        Ok(Role::PreCandidate) => "pre-candidate",
        Ok(Role::Unspecified) | Err(_) => "unknown",
    }
}

/// Bytes as text; invalid UTF-8 is shown with replacement characters.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node_id: u64, role: Role, commit_index: u64, applied_index: u64) -> StatusResponse {
        StatusResponse {
            node_id,
            role: role as i32,
            leader_id: 1,
            commit_index,
            applied_index,
            ..StatusResponse::default()
        }
    }

    #[test]
    fn a_node_has_caught_up_when_it_applied_the_leaders_commit() {
        let leader = status(1, Role::Leader, 10, 10);
        let behind = status(2, Role::Follower, 10, 7);
        assert_eq!(caught_up(&[&leader, &behind], 2, 1), None);
        let level = status(2, Role::Follower, 10, 10);
        assert!(caught_up(&[&leader, &level], 2, 1)
            .unwrap()
            .contains("applied index 10"));
        assert_eq!(
            caught_up(&[&leader], 3, 1),
            None,
            "a node that did not answer has not caught up"
        );
    }

    #[test]
    fn unreachable_nodes_appear_in_the_status_table() {
        let statuses = vec![
            NodeStatus {
                address: "127.0.0.1:7001".into(),
                status: Ok(status(1, Role::Leader, 5, 5)),
            },
            NodeStatus {
                address: "127.0.0.1:7002".into(),
                status: Err(client::ClientError::Rejected {
                    address: "127.0.0.1:7002".into(),
                    code: tonic::Code::Unavailable,
                    message: "tcp connect error".into(),
                }),
            },
        ];
        let table = status_table(&statuses);
        assert!(table.contains("1   127.0.0.1:7001  leader "), "{table}");
        assert!(
            table.contains("?   127.0.0.1:7002  unreachable\n"),
            "{table}"
        );
        assert!(
            table.ends_with("127.0.0.1:7002: Unavailable: tcp connect error\n"),
            "{table}"
        );
    }
}
