//! Auto-compaction: the KV store keeps every version of every key until a
//! compaction, in memory, so without one it grows with every write (and so
//! does every snapshot). Like etcd's revision-mode auto-compaction, the
//! leader proposes a compaction through the log once the history is a
//! quarter longer than the retention: a client can still read at any of the
//! last `retain` revisions (and a few more); older reads get "required
//! revision has been compacted", as from etcd. Checked twice a second, so
//! the history stays within about `1.25 × retain` plus half a second of
//! writes.
//!
//! A time floor comes on top, like etcd's periodic mode: nothing younger
//! than `retain_for` is compacted, however many revisions it holds, so that
//! a watcher that reconnects within that time resumes from its last
//! revision instead of being told it was compacted (the default, 75 s,
//! covers a client that reconnects after a minute). The cost is memory:
//! under a write load of W writes/s of V-byte values the history holds
//! about `retain_for × W` versions of `V + ~100` bytes each (at 10,000
//! puts/s of 256 bytes, about 270 MB for 75 s); with little load the
//! revision retention decides. The leader remembers the revision it saw at
//! each check for `retain_for`, a few hundred samples.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use ferrite_node::Metrics;
use ferrite_state::{CompactRequest, Op, Principal, RangeRequest, Reply};

use crate::context::Context;

const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Runs for as long as the node: `retain == 0` keeps all history.
pub async fn run(ctx: Context, retain: u64, retain_for: Duration) {
    let Ok(retain) = i64::try_from(retain) else {
        return;
    };
    if retain == 0 {
        return;
    }
    // (when, revision) at each check within the last `retain_for`.
    let mut seen: VecDeque<(tokio::time::Instant, i64)> = VecDeque::new();
    // The revision this member last compacted at, as leader; a new leader
    // starts from 0 and its first compaction may be refused as already done.
    let mut compacted = 0i64;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Metrics::get(&ctx.metrics().is_leader) == 0 {
            continue;
        }
        let Some(revision) = current_revision(&ctx).await else {
            continue;
        };
        let now = tokio::time::Instant::now();
        seen.push_back((now, revision));
        // The newest revision seen at least `retain_for` ago: the floor.
        let mut oldest = None;
        while let Some(&sample) = seen.front() {
            if now.duration_since(sample.0) < retain_for {
                break;
            }
            oldest = Some(sample);
            seen.pop_front();
        }
        if let Some(sample) = oldest {
            seen.push_front(sample);
        }
        let floor = oldest.map_or(0, |(_, rev)| rev);
        let Some(target) = due(
            revision.min(floor.saturating_add(retain)),
            compacted,
            retain,
        ) else {
            continue;
        };
        let op = Op::Compact(CompactRequest {
            revision: target,
            physical: false,
        });
        match ctx.write(op, None, &Principal::System).await {
            Ok(Reply::Compact(_)) => {
                tracing::debug!(revision = target, "auto-compacted the KV history");
                compacted = target;
            }
            // Already compacted there (by a client or an earlier leader).
            Ok(Reply::Error(e)) => {
                tracing::debug!(revision = target, "auto-compaction refused: {e}");
                compacted = target;
            }
            Ok(other) => tracing::warn!("auto-compaction: unexpected reply {other:?}"),
            Err(e) => tracing::debug!("auto-compaction not proposed: {e}"),
        }
    }
}

/// The revision to compact at, if the history since the last compaction is
/// at least `1.25 × retain` revisions long.
fn due(revision: i64, compacted: i64, retain: i64) -> Option<i64> {
    let target = revision.saturating_sub(retain);
    (target.saturating_sub(compacted) >= (retain / 4).max(1)).then_some(target)
}

/// The store's revision, read locally (the leader's own state is current
/// enough to decide when to compact).
async fn current_revision(ctx: &Context) -> Option<i64> {
    let req = RangeRequest {
        key: Bytes::from_static(b"\0"),
        count_only: true,
        serializable: true,
        ..RangeRequest::default()
    };
    match ctx.read(Op::Range(req), &Principal::System, true).await {
        Ok(Reply::Range(r)) => Some(r.revision),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn compacts_once_history_is_a_quarter_longer_than_the_retention() {
        assert_eq!(due(12_499, 0, 10_000), None);
        assert_eq!(due(12_500, 0, 10_000), Some(2_500));
        assert_eq!(due(14_999, 2_500, 10_000), None);
        assert_eq!(due(16_000, 2_500, 10_000), Some(6_000));
        assert_eq!(due(5, 0, 1), Some(4));
        assert_eq!(due(5, 4, 1), None);
    }
}
