//! Shaping a range's answer from the rows it found, as etcd does: the
//! revision filters, the sort, the limit, keys only, count only.

use super::{
    KeyValue, KvError, RangeRequest, RangeResponse, Revision, Revisions, SortOrder, SortTarget,
};

/// The revision a read of `requested` is served at, given the store's
/// `revisions`: the current one for 0 or less; refused below the
/// compaction point and beyond the current revision.
pub fn check_read_revision(requested: Revision, revisions: Revisions) -> Result<Revision, KvError> {
    if requested <= 0 {
        return Ok(revisions.current);
    }
    if requested > revisions.current {
        return Err(KvError::FutureRevision);
    }
    if requested < revisions.compacted {
        return Err(KvError::Compacted);
    }
    Ok(requested)
}

/// The answer to `request` from `kvs`, the rows of its range at its
/// revision in key order (all of them, or the first `limit + 1` when the
/// request sorts by key ascending without revision filters), and `count`,
/// how many keys the range holds. The revision filters drop rows after the
/// count, then the sort and the limit apply. `header_revision` is left 0
/// for the caller.
pub fn shape_range(mut kvs: Vec<KeyValue>, count: i64, request: &RangeRequest) -> RangeResponse {
    if request.count_only {
        return RangeResponse {
            kvs: Vec::new(),
            more: false,
            count,
            header_revision: 0,
        };
    }
    let bound = |value: Revision, min: Revision, max: Revision| {
        (min == 0 || value >= min) && (max == 0 || value <= max)
    };
    kvs.retain(|kv| {
        bound(
            kv.mod_revision,
            request.min_mod_revision,
            request.max_mod_revision,
        ) && bound(
            kv.create_revision,
            request.min_create_revision,
            request.max_create_revision,
        )
    });
    let order = match (request.sort_order, request.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    if order != SortOrder::None {
        // Stable, so that rows equal in the target stay in key order.
        kvs.sort_by(|left, right| {
            let ordering = match request.sort_target {
                SortTarget::Key => left.key.cmp(&right.key),
                SortTarget::Version => left.version.cmp(&right.version),
                SortTarget::Create => left.create_revision.cmp(&right.create_revision),
                SortTarget::Mod => left.mod_revision.cmp(&right.mod_revision),
                SortTarget::Value => left.value.cmp(&right.value),
            };
            if order == SortOrder::Descend {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    let mut more = false;
    if request.limit > 0 && kvs.len() > request.limit as usize {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        kvs,
        more,
        count,
        header_revision: 0,
    }
}

/// How many rows of a range [`shape_range`] needs, in key order: `Some(n)`
/// when the first `n` are enough (the limit plus one, to tell whether more
/// follow; none for a count), `None` when it needs them all.
pub fn rows_needed(request: &RangeRequest) -> Option<i64> {
    if request.count_only {
        return Some(0);
    }
    let key_order = matches!(
        (request.sort_order, request.sort_target),
        (SortOrder::None | SortOrder::Ascend, SortTarget::Key)
    );
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    (request.limit > 0 && key_order && !filtered).then(|| request.limit.saturating_add(1))
}
