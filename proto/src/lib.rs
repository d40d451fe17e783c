//! The raftgres wire contract: messages and services of package
//! `raftgres.v1`, generated from `proto/raftgres/v1/*.proto`.
//!
//! - `peer.proto`: the Raft messages nodes exchange (`Peer` service).
//! - `client.proto`: `Submit` of opaque commands to the state machine.
//! - `kv.proto`: the built-in key-value service.
//! - `cluster.proto`: status and leadership transfer.
//! - `log.proto`: the payload of log entries and the KV command encoding.
//!
//! This crate holds no logic beyond what prost and tonic generate.
#![forbid(unsafe_code)]
#![allow(missing_docs)]

/// Package `raftgres.v1`.
pub mod v1 {
    tonic::include_proto!("raftgres.v1");
}

/// Metadata key of a `FAILED_PRECONDITION` (not the leader) naming the
/// leader's node id, when known. Part of the contract of `client.proto`.
pub const LEADER_ID_KEY: &str = "raftgres-leader-id";
/// Metadata key of a `FAILED_PRECONDITION` naming the leader's client
/// address, when known.
pub const LEADER_ADDRESS_KEY: &str = "raftgres-leader-addr";

/// The encoded `FileDescriptorSet` of every raftgres proto, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("raftgres_descriptor");
