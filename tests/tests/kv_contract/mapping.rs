//! The one mapping between the model's encoding (`u64` keys, values and
//! client ids, `VALUE_ABSENT` for no value) and the product's (bytes, text
//! session names, `KvCommand` and `KvResult`).

use prost::Message as _;
use raftgres_proto::v1 as wire;
use raftgres_sim::kv::{Command, CommandOutput, VALUE_ABSENT};

/// Key `k` is the bytes `key-{k}`.
pub(crate) fn key_bytes(key: u64) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

/// Value `v` is its decimal text; `VALUE_ABSENT` is `None`: no row.
pub(crate) fn value_bytes(value: u64) -> Option<Vec<u8>> {
    (value != VALUE_ABSENT).then(|| value.to_string().into_bytes())
}

/// Client `c` is the session `client-{c}`; client 0 is no session (the
/// empty name).
pub(crate) fn session_name(client_id: u64) -> String {
    if client_id == 0 {
        String::new()
    } else {
        format!("client-{client_id}")
    }
}

/// The product's encoded `KvCommand` for the model's `command`. A probe
/// has none: it is carried as a blank entry.
pub(crate) fn product_command(command: Command) -> Vec<u8> {
    use wire::kv_command::Operation;
    let written = |value: u64| value_bytes(value).expect("the workload never writes VALUE_ABSENT");
    let operation = match command {
        Command::Put {
            key,
            value,
            lease: 0,
        } => Operation::Put(wire::KvPut {
            key: key_bytes(key),
            value: written(value),
        }),
        Command::CompareAndSwap { key, expected, new } => {
            Operation::CompareAndSwap(wire::KvCompareAndSwap {
                key: key_bytes(key),
                expected: value_bytes(expected),
                value: Some(written(new)),
            })
        }
        Command::Probe => unreachable!("a probe is carried as a blank entry"),
        Command::Compact { .. }
        | Command::LeaseGrant { .. }
        | Command::LeaseRevoke { .. }
        | Command::Put { .. } => {
            unreachable!("the sequences draw no compaction and no lease (etcd_contract does)")
        }
    };
    wire::KvCommand {
        operation: Some(operation),
    }
    .encode_to_vec()
}

/// A command's answer, in the terms of the product's `KvResult`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) succeeded: bool,
    /// The value the command found (decimal text), `None` for no row.
    pub(crate) previous: Option<String>,
}

impl Answer {
    /// The model's output (`Done`: succeeded; `Swapped(swapped)`:
    /// succeeded if it swapped), with the value the model held for the key
    /// just before the command, since the model does not answer it.
    pub(crate) fn of_model(output: CommandOutput, previous: u64) -> Answer {
        let succeeded = match output {
            CommandOutput::Done => true,
            CommandOutput::Swapped(swapped) => swapped,
            CommandOutput::Compaction(_)
            | CommandOutput::LeaseGrant(_)
            | CommandOutput::LeaseRevoke(_)
            | CommandOutput::LeaseNotFound => {
                unreachable!("the sequences draw no compaction and no lease")
            }
        };
        Answer {
            succeeded,
            previous: value_bytes(previous).map(text),
        }
    }

    /// The product's response bytes (an encoded `KvResult`).
    pub(crate) fn of_product(response: &[u8]) -> Answer {
        let result = wire::KvResult::decode(response).expect("the product answers a KvResult");
        Answer {
            succeeded: result.succeeded,
            previous: result.previous.map(text),
        }
    }
}

/// Bytes the test wrote as text, as text.
pub(crate) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("the test writes text")
}
