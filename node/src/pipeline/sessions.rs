//! Session expiry at log positions every replica agrees on.
//!
//! A client session (its latest sequence and response) is forgotten once it
//! has not been used for `session_expiry_entries` log entries. Whether a
//! retry is applied as new or answered as a repeat depends on whether its
//! session still exists, so every replica must forget a session right after
//! the same entry, whatever its apply batches look like. Expiry therefore
//! runs right after every entry whose index is a multiple of
//! [`SESSION_EXPIRY_STRIDE`], and forgets the sessions last used before
//! that index minus `session_expiry_entries`; an apply batch is split at
//! those entries.

use std::ops::RangeInclusive;

use crate::core::LogIndex;

/// Sessions expire after every entry whose index is a multiple of this.
/// Often enough that a session outlives its expiry by at most this many
/// entries, rarely enough that the extra statement costs nothing.
pub const SESSION_EXPIRY_STRIDE: u64 = 1024;

/// Consecutive entries applied together, and the expiry due right after
/// the last of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplySegment {
    /// The entries' indexes.
    pub indexes: RangeInclusive<u64>,
    /// When the last entry is an expiry point: forget the sessions whose
    /// last use is below this index.
    pub expire_before: Option<LogIndex>,
}

/// Splits the entries `first..=last` at expiry points every `stride`
/// entries: [`SESSION_EXPIRY_STRIDE`] in the node; the simulator uses
/// short strides so that short runs cross many of them. Invariant:
/// `stride` is non-zero.
pub fn apply_segments(
    first: LogIndex,
    last: LogIndex,
    stride: u64,
    expiry_entries: u64,
) -> Vec<ApplySegment> {
    assert!(stride > 0, "the session expiry stride must be non-zero");
    let mut segments = Vec::new();
    let mut start = first.0;
    while start <= last.0 {
        let next_point = start.div_ceil(stride).max(1) * stride;
        let end = next_point.min(last.0);
        let expire_before =
            (end == next_point).then(|| LogIndex(next_point.saturating_sub(expiry_entries)));
        segments.push(ApplySegment {
            indexes: start..=end,
            expire_before,
        });
        start = end + 1;
    }
    segments
}

/// Planted bug (issue 9, item 3): the batch `first..=last` as one segment,
/// expiring only when it crosses an expiry point, with the cutoff taken
/// from its last index. Replicas whose batches differ expire different
/// sessions.
#[cfg(feature = "planted-bugs")]
pub fn apply_segments_at_batch_end(
    first: LogIndex,
    last: LogIndex,
    stride: u64,
    expiry_entries: u64,
) -> Vec<ApplySegment> {
    if first > last {
        return Vec::new();
    }
    let crosses = first.0.div_ceil(stride).max(1) * stride <= last.0;
    vec![ApplySegment {
        indexes: first.0..=last.0,
        expire_before: crosses.then(|| LogIndex(last.0.saturating_sub(expiry_entries))),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expiry points a sequence of batches meets, in order.
    fn expiries(batches: &[(u64, u64)]) -> Vec<(u64, LogIndex)> {
        batches
            .iter()
            .flat_map(|(first, last)| {
                apply_segments(
                    LogIndex(*first),
                    LogIndex(*last),
                    SESSION_EXPIRY_STRIDE,
                    100,
                )
            })
            .filter_map(|segment| Some((*segment.indexes.end(), segment.expire_before?)))
            .collect()
    }

    #[test]
    fn every_batching_expires_after_the_same_entries() {
        let one_batch = expiries(&[(1, 5000)]);
        let small_batches: Vec<(u64, u64)> = (0..500).map(|k| (k * 10 + 1, k * 10 + 10)).collect();
        let uneven = expiries(&[(1, 1023), (1024, 1025), (1026, 3000), (3001, 5000)]);
        assert_eq!(one_batch, expiries(&small_batches));
        assert_eq!(one_batch, uneven);
        assert_eq!(
            one_batch,
            vec![
                (1024, LogIndex(924)),
                (2048, LogIndex(1948)),
                (3072, LogIndex(2972)),
                (4096, LogIndex(3996)),
            ]
        );
    }

    #[test]
    fn segments_cover_the_batch_in_order() {
        let segments = apply_segments(LogIndex(1000), LogIndex(2100), SESSION_EXPIRY_STRIDE, 5000);
        assert_eq!(
            segments,
            vec![
                ApplySegment {
                    indexes: 1000..=1024,
                    expire_before: Some(LogIndex(0)),
                },
                ApplySegment {
                    indexes: 1025..=2048,
                    expire_before: Some(LogIndex(0)),
                },
                ApplySegment {
                    indexes: 2049..=2100,
                    expire_before: None,
                },
            ]
        );
        assert_eq!(
            apply_segments(LogIndex(7), LogIndex(6), SESSION_EXPIRY_STRIDE, 10),
            Vec::new()
        );
    }
}
