//! Finding and healing damaged batches.
//!
//! The scrubber reads every segment of every partition in the background, at
//! `log.scrub.bytes.per.second`, and checks each batch's length, offsets and CRC-32C, so
//! damage in closed segments (which start-up trusts) and in a cleanly closed active
//! segment is found without a client reading it first. A damaged log goes offline on this
//! broker: nothing is served from it or appended to it (see `PartitionLog::mark_damaged`).
//!
//! The healer (on the ISR upkeep tick) then acts in a cluster: a damaged leader asks the
//! controller to move its leadership to another in-sync replica (it drops itself from the
//! ISR); a damaged follower waits until it is out of the ISR, so it can never be elected
//! while damaged, then discards the damaged range and everything after it, and fetches it
//! again from the leader. Kafka does neither; its replicas serve what they hold.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::state::{Broker, Partition};

/// How often the scrubber wakes; each wake reads a tenth of the second's budget.
const TICK: Duration = Duration::from_millis(100);

/// Where the scrubber is: the partitions left in this pass, and the position in the
/// current one (segment index, byte position, offset expected there).
#[derive(Default)]
struct Cursor {
    queue: Vec<Arc<Partition>>,
    current: Option<(Arc<Partition>, usize, u64, i64)>,
}

/// Runs until `stop`: passes over every partition, then waits `log.scrub.interval.ms`.
pub async fn run(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let rate = broker.config.settings().log_scrub_bytes_per_second.max(0) as u64;
    if rate == 0 {
        return;
    }
    let pause = Duration::from_millis(broker.config.settings().log_scrub_interval_ms.max(0) as u64);
    let budget = (rate / 10).max(64 * 1024);
    let mut cursor = Cursor::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => return,
        }
        let b = broker.clone();
        let taken = std::mem::take(&mut cursor);
        let Ok((next, pass_done)) = crate::blocking::offload(move || step(&b, taken, budget)).await
        else {
            return;
        };
        cursor = next;
        if pass_done {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// Verifies up to `budget` bytes. Returns the cursor and whether a pass ended.
fn step(broker: &Broker, mut cursor: Cursor, budget: u64) -> (Cursor, bool) {
    let mut left = budget;
    while left > 0 {
        let (partition, seg, pos, expected) = match cursor.current.take() {
            Some(c) => c,
            None => {
                if cursor.queue.is_empty() {
                    cursor.queue = broker.partitions.all();
                    cursor.queue.reverse();
                    if cursor.queue.is_empty() {
                        return (cursor, true);
                    }
                }
                let Some(p) = cursor.queue.pop() else {
                    return (cursor, true);
                };
                (p, 0, 0, 0)
            }
        };
        let targets = partition.log().scrub_targets();
        let Some((base, _, path, mut size)) = targets.get(seg).cloned() else {
            // This partition is done (or offline).
            if cursor.queue.is_empty() {
                return (cursor, true);
            }
            continue;
        };
        // The active segment's last `log.cache.window.bytes` were just written and are
        // where tailing consumers read: not read here (the next pass does), so that the
        // scrubber neither races the writer nor pulls pages back into the cache that the
        // window just dropped.
        if seg + 1 == targets.len() {
            let window = partition.settings().cache_window_bytes;
            size = size.saturating_sub(window);
            if pos >= size {
                cursor.current = Some((partition, seg + 1, 0, expected));
                continue;
            }
        }
        // A handle of its own, with readahead off: the disk's readahead (8 MiB here) would
        // pull far more of the file into the page cache than the scrubber reads and drops.
        let Some(file) = open_for_scrub(&path) else {
            // Deleted or replaced meanwhile: looked at again next pass.
            cursor.current = Some((partition, seg + 1, 0, expected));
            continue;
        };
        // Compaction leaves gaps between segments: each starts at its own base.
        let expected = if pos == 0 { base } else { expected };
        let checked = gregor_storage::segment::verify_batches(
            file.as_ref(),
            pos,
            size,
            expected,
            left,
            1 << 20,
        );
        match checked {
            Ok(Ok((reached, next_offset))) => {
                // What the scrubber read is not what consumers asked for: its pages leave
                // the cache again (clean pages; a consumer that wants them reads them).
                crate::state::drop_cached(file.as_ref(), &path, pos, reached);
                left = left.saturating_sub((reached - pos).max(1));
                cursor.current = Some(if reached >= size {
                    (partition, seg + 1, 0, next_offset)
                } else {
                    (partition, seg, reached, next_offset)
                });
            }
            Ok(Err((at, offset, _))) => {
                let found = partition.log().confirm_damage(&path, at, offset);
                if let Some(d) = found {
                    crate::metrics::damaged_batch();
                    tracing::error!(topic = %partition.topic, partition = partition.index, damage = %d, "the scrubber found a damaged batch");
                }
                // Next partition either way: a cut segment is looked at again next pass.
                left = left.saturating_sub(1);
            }
            Err(e) => {
                // The segment may have been deleted or cut meanwhile; look again next pass.
                tracing::debug!(path = %path.display(), error = %e, "scrub read failed");
                left = left.saturating_sub(1);
            }
        }
    }
    (cursor, false)
}

/// Opens a segment for reading with readahead off (`POSIX_FADV_RANDOM`).
fn open_for_scrub(path: &std::path::Path) -> Option<Arc<dyn gregor_storage::DiskFile>> {
    use gregor_storage::Disk;
    let file = gregor_storage::OsDisk.open_transient(path, false).ok()?;
    if let Some(f) = file.fd() {
        let _ = rustix::fs::fadvise(&*f, 0, None, rustix::fs::Advice::Random);
    }
    Some(file)
}

/// One healer round: see the module comment. Called with the ISR upkeep.
pub fn heal(broker: &Broker, node: &Arc<gregor_cluster::ClusterNode>) {
    for partition in broker.partitions.all() {
        let damaged = partition.log().damage().cloned();
        let Some(damage) = damaged else {
            continue;
        };
        let (leader, epoch, isr, pending) = {
            let r = partition.replica();
            (
                r.leader,
                r.leader_epoch,
                r.isr.clone(),
                r.isr_change_pending,
            )
        };
        if leader == partition.node_id {
            let others: Vec<i32> = isr
                .iter()
                .copied()
                .filter(|&b| b != partition.node_id)
                .collect();
            if others.is_empty() || pending {
                continue;
            }
            partition.replica().isr_change_pending = true;
            tracing::warn!(topic = %partition.topic, partition = partition.index, isr = ?others, "damaged leader: asking the controller to move the leadership to another in-sync replica");
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(e) = node
                    .alter_isr(partition.topic_id, partition.index, epoch, others)
                    .await
                {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "leadership move for a damaged replica refused");
                }
                partition.replica().isr_change_pending = false;
            });
        } else if leader >= 0 && !isr.contains(&partition.node_id) {
            let repaired = partition.log().repair_damage();
            match repaired {
                Ok(_) => {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, damaged_from = damage.first_offset, "damaged follower out of the ISR: refetching from the leader");
                    partition.replica().needs_truncation = true;
                }
                Err(e) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "could not discard the damaged range")
                }
            }
        }
    }
}
