//! `raftgres.v1.Kv`: the built-in key-value API over the KV state machine.

use std::sync::{Arc, LazyLock};

use prost::Message as _;
use raftgres_proto::v1 as wire;
use tokio::sync::mpsc;
use tokio_postgres::types::Type;
use tonic::{Request, Response, Status};

use super::{database_error, Shared};
use crate::core::LogIndex;
use crate::pipeline::check_read_covered;
use crate::server::driver::Event;
use crate::server::error::ServiceError;
use crate::server::kv::{decode_kv_command, with_range_end};
use crate::server::state_machine::StateMachine;

/// A key's row and the applied index, in one statement (one snapshot).
const SELECT_GET: &str = "SELECT applied.applied_index, kv.key, kv.value, kv.mod_index
     FROM raftgres_applied AS applied
     LEFT JOIN raftgres_kv AS kv ON kv.key = $1";

/// The rows from `$1` on, below `$2` when it is not NULL, at most `$3`,
/// with the applied index, in one statement (one snapshot). Sent as text
/// (planned for each read) when `$2` is NULL: a plan made once for every
/// call cannot drop the NULL test, and would scan the table from `$1` on.
const SELECT_PREFIX: &str = "SELECT applied.applied_index, kv.key, kv.value, kv.mod_index
     FROM raftgres_applied AS applied
     LEFT JOIN LATERAL (
         SELECT key, value, mod_index FROM raftgres_kv
         WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2)
         ORDER BY key LIMIT $3
     ) AS kv ON true
     ORDER BY kv.key";

/// [`SELECT_PREFIX`] for a prefix with an upper bound (`key < $2`, see
/// [`with_range_end`]), prepared once per connection.
static SELECT_PREFIX_BOUNDED: LazyLock<String> =
    LazyLock::new(|| with_range_end(SELECT_PREFIX, true));

/// `raftgres.v1.Kv`.
pub(crate) struct KvService<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S: StateMachine> KvService<S> {
    /// Checks, proposes and awaits one KV write; refusals are counted and
    /// turned into statuses here.
    async fn write(
        &self,
        operation: wire::kv_command::Operation,
        session: Option<&wire::Session>,
    ) -> Result<(LogIndex, wire::KvResult), Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.write.inc();
        let write = async {
            let command = wire::KvCommand {
                operation: Some(operation),
            }
            .encode_to_vec();
            let operation = decode_kv_command(&command).map_err(ServiceError::InvalidArgument)?;
            shared.check_key(operation.raftgres_key().unwrap_or_default())?;
            let applied = shared.submit(command, session).await?;
            let result = wire::KvResult::decode(applied.response.as_slice()).map_err(|error| {
                ServiceError::Unavailable(format!("undecodable state machine response: {error}"))
            })?;
            Ok((applied.index, result))
        };
        write.await.map_err(|error| shared.refused(error))
    }

    async fn get(&self, request: wire::GetRequest) -> Result<wire::GetResponse, ServiceError> {
        let shared = &self.shared;
        shared.check_key(&request.key)?;
        let read_index = shared.read_barrier(request.mode).await?;
        let client = shared.reads.client().await?;
        let client = client.prepared();
        // One statement, one snapshot: the rows and the applied index they
        // are at.
        let rows = client
            .query_prepared(SELECT_GET, &[Type::BYTEA], &[&request.key])
            .await
            .map_err(database_error)?;
        let kv = covered_pairs(&rows, read_index, &shared.events)?.pop();
        Ok(wire::GetResponse {
            kv,
            read_index: read_index.0,
        })
    }

    async fn range(
        &self,
        request: wire::RangeRequest,
    ) -> Result<wire::RangeResponse, ServiceError> {
        let shared = &self.shared;
        let limit_max = shared.config.limits.range_limit_max;
        let limit = if request.limit == 0 {
            limit_max
        } else {
            request.limit.min(limit_max)
        };
        let read_index = shared.read_barrier(request.mode).await?;
        let client = shared.reads.client().await?;
        let client = client.prepared();
        let upper = prefix_upper_bound(&request.prefix);
        let rows_max = i64::from(limit) + 1;
        let rows = if upper.is_some() {
            client
                .query_prepared(
                    &SELECT_PREFIX_BOUNDED,
                    &[Type::BYTEA, Type::BYTEA, Type::INT8],
                    &[&request.prefix, &upper, &rows_max],
                )
                .await
        } else {
            // Every key from the prefix on: planned for this read (see
            // `SELECT_PREFIX`).
            client
                .query_typed(
                    SELECT_PREFIX,
                    &[
                        (&request.prefix, Type::BYTEA),
                        (&upper, Type::BYTEA),
                        (&rows_max, Type::INT8),
                    ],
                )
                .await
        }
        .map_err(database_error)?;
        let mut kvs = covered_pairs(&rows, read_index, &shared.events)?;
        let more = kvs.len() > limit as usize;
        kvs.truncate(limit as usize);
        Ok(wire::RangeResponse {
            kvs,
            more,
            read_index: read_index.0,
        })
    }
}

/// Rows selected as `applied_index, key, value, mod_index` from
/// `raftgres_applied` joined with the `raftgres_kv` rows read (NULL key-value
/// columns when none matched): the pairs, once the applied index is known
/// to cover `read_index` (see `check_read_covered`); when it does not, the
/// driver is told so through `events`.
fn covered_pairs(
    rows: &[tokio_postgres::Row],
    read_index: LogIndex,
    events: &mpsc::Sender<Event>,
) -> Result<Vec<wire::KeyValue>, ServiceError> {
    let stored_applied = rows
        .first()
        .map(|row| LogIndex(row.get::<_, i64>(0) as u64))
        .ok_or_else(|| ServiceError::Unavailable("raftgres_applied has no row".into()))?;
    check_read_covered(read_index, stored_applied).map_err(|behind| {
        // The driver has the lost applies replayed, even on an idle
        // cluster; a full queue drops the report (the next read repeats it).
        let _ = events.try_send(Event::StateMachineBehind { stored_applied });
        ServiceError::Unavailable(behind.to_string())
    })?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let key: Option<Vec<u8>> = row.get(1);
            Some(wire::KeyValue {
                key: key?,
                value: row.get(2),
                mod_index: row.get::<_, i64>(3) as u64,
            })
        })
        .collect())
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none (an empty prefix or all 0xFF bytes).
pub(crate) fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

#[tonic::async_trait]
impl<S: StateMachine> wire::kv_server::Kv for KvService<S> {
    async fn put(
        &self,
        request: Request<wire::PutRequest>,
    ) -> Result<Response<wire::PutResponse>, Status> {
        let request = request.into_inner();
        let operation = wire::kv_command::Operation::Put(wire::KvPut {
            key: request.key,
            value: request.value,
        });
        let (index, result) = self.write(operation, request.session.as_ref()).await?;
        Ok(Response::new(wire::PutResponse {
            index: index.0,
            previous: result.previous,
        }))
    }

    async fn get(
        &self,
        request: Request<wire::GetRequest>,
    ) -> Result<Response<wire::GetResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.read.inc();
        let response = KvService::get(self, request.into_inner())
            .await
            .map_err(|error| shared.refused(error))?;
        Ok(Response::new(response))
    }

    async fn delete(
        &self,
        request: Request<wire::DeleteRequest>,
    ) -> Result<Response<wire::DeleteResponse>, Status> {
        let request = request.into_inner();
        let operation = wire::kv_command::Operation::Delete(wire::KvDelete { key: request.key });
        let (index, result) = self.write(operation, request.session.as_ref()).await?;
        Ok(Response::new(wire::DeleteResponse {
            index: index.0,
            deleted: result.previous.is_some(),
        }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<wire::CompareAndSwapRequest>,
    ) -> Result<Response<wire::CompareAndSwapResponse>, Status> {
        let request = request.into_inner();
        let operation = wire::kv_command::Operation::CompareAndSwap(wire::KvCompareAndSwap {
            key: request.key,
            expected: request.expected,
            value: request.value,
        });
        let (index, result) = self.write(operation, request.session.as_ref()).await?;
        Ok(Response::new(wire::CompareAndSwapResponse {
            index: index.0,
            succeeded: result.succeeded,
            current: result.previous,
        }))
    }

    async fn range(
        &self,
        request: Request<wire::RangeRequest>,
    ) -> Result<Response<wire::RangeResponse>, Status> {
        let shared = &self.shared;
        shared.metrics.client_requests.read.inc();
        let response = KvService::range(self, request.into_inner())
            .await
            .map_err(|error| shared.refused(error))?;
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_upper_bounds() {
        assert_eq!(prefix_upper_bound(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_upper_bound(&[b'a', 0xFF]), Some(b"b".to_vec()));
        assert_eq!(prefix_upper_bound(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_upper_bound(b""), None);
    }
}
